#!/usr/bin/env python3
"""Golden values for stats::metrics and stats::survival (run from the repo root:
`python3 stats/tests/golden/gen_metrics.py`; CI never runs Python, the JSON is committed).

Outside references:
- scikit-learn: roc_auc_score, roc_curve(drop_intermediate=False), confusion_matrix,
  accuracy/recall/precision/f1, brier_score_loss.
- DeLong: the fast DeLong algorithm of Sun & Xu (2014) in numpy, as widely circulated
  (compute_midrank / fastDeLong below), for the AUC variance and the paired covariance.
- Hosmer-Lemeshow per R ResourceSelection::hoslem.test (numpy type-7 quantile breaks, unique,
  pandas cut(include_lowest=True), df = g - 2) and decision curves per dcurves (p >= pt) are
  written out here from their definitions.
- lifelines: KaplanMeierFitter (survival, exponential-Greenwood CI, median and its CI),
  logrank_test, CoxPHFitter (Efron), with and without strata.
- statsmodels: PHReg with ties='efron' and ties='breslow', with and without strata.

Tested versions: numpy 2.4, scipy 1.17, scikit-learn 1.9, lifelines 0.30.3, statsmodels 0.15,
pandas 2.3.
"""

import json
import os

import numpy as np
import pandas as pd
from scipy import stats
from sklearn import metrics as skm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics_golden.json")


# ---------------------------------------------------------------- fast DeLong (Sun & Xu 2014)
def compute_midrank(x):
    J = np.argsort(x, kind="mergesort")
    Z = x[J]
    N = len(x)
    T = np.zeros(N, dtype=float)
    i = 0
    while i < N:
        j = i
        while j < N and Z[j] == Z[i]:
            j += 1
        T[i:j] = 0.5 * (i + j - 1)
        i = j
    T2 = np.empty(N, dtype=float)
    T2[J] = T + 1
    return T2


def fast_delong(predictions_sorted_transposed, label_1_count):
    m = label_1_count
    n = predictions_sorted_transposed.shape[1] - m
    positive_examples = predictions_sorted_transposed[:, :m]
    negative_examples = predictions_sorted_transposed[:, m:]
    k = predictions_sorted_transposed.shape[0]
    tx = np.empty([k, m])
    ty = np.empty([k, n])
    tz = np.empty([k, m + n])
    for r in range(k):
        tx[r, :] = compute_midrank(positive_examples[r, :])
        ty[r, :] = compute_midrank(negative_examples[r, :])
        tz[r, :] = compute_midrank(predictions_sorted_transposed[r, :])
    aucs = tz[:, :m].sum(axis=1) / m / n - float(m + 1.0) / 2.0 / n
    v01 = (tz[:, :m] - tx[:, :]) / n
    v10 = 1.0 - (tz[:, m:] - ty[:, :]) / m
    sx = np.atleast_2d(np.cov(v01))
    sy = np.atleast_2d(np.cov(v10))
    return aucs, sx / m + sy / n


def delong(y, scores):
    """scores: list of score arrays. Returns (aucs, covariance)."""
    order = np.argsort(-y.astype(int), kind="mergesort")  # positives first
    m = int(y.sum())
    preds = np.vstack([np.asarray(s)[order] for s in scores])
    return fast_delong(preds, m)


# ---------------------------------------------------------------- classification references
def youden(y, p):
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    n1, n0 = int(y.sum()), int(len(y) - y.sum())
    tp = np.rint(tpr * n1).astype(np.int64)
    fp = np.rint(fpr * n0).astype(np.int64)
    jnum = tp * n0 - fp * n1  # exact integer J * n1 * n0
    jnum[0] = np.iinfo(np.int64).min  # the +inf threshold is not a candidate
    k = int(np.argmax(jnum))  # first max = highest threshold (thresholds descend)
    return float(thr[k])


def hoslem(y, p, g=10):
    qq = np.unique(np.quantile(p, np.linspace(0, 1, g + 1)))
    cut = pd.cut(p, bins=qq, include_lowest=True, right=True)
    df = pd.DataFrame({"y": y, "p": p, "g": cut})
    rows = []
    chisq = 0.0
    for _, grp in df.groupby("g", observed=True):
        n = len(grp)
        if n == 0:
            continue
        o1 = float(grp["y"].sum())
        e1 = float(grp["p"].sum())
        o0, e0 = n - o1, n - e1
        chisq += (o1 - e1) ** 2 / e1 + (o0 - e0) ** 2 / e0
        rows.append({"n": n, "n_pos": int(o1), "mean_predicted": e1 / n, "observed": o1 / n})
    return {
        "breaks": qq.tolist(),
        "groups": rows,
        "statistic": chisq,
        "df": g - 2,
        "p_value": float(stats.chi2.sf(chisq, g - 2)),
    }


def dca(y, p, thresholds):
    n = len(y)
    prev = y.mean()
    out = []
    for pt in thresholds:
        treat = p >= pt
        tp = float(np.sum(treat & (y == 1)))
        fp = float(np.sum(treat & (y == 0)))
        w = pt / (1 - pt)
        out.append({"threshold": pt, "net_benefit": tp / n - fp / n * w, "treat_all": prev - (1 - prev) * w})
    return out


def classification_case(name, y, p, p_clin, site):
    y = np.asarray(y, dtype=int)
    p = np.asarray(p, dtype=float)
    aucs, cov = delong(y, [p])
    var = float(cov[0, 0])
    z = stats.norm.ppf(0.975)
    auc = float(skm.roc_auc_score(y, p))
    assert abs(auc - aucs[0]) < 1e-12
    fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
    t = youden(y, p)
    pred = (p >= t).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    paired_aucs, pcov = delong(y, [p, p_clin])
    d = paired_aucs[0] - paired_aucs[1]
    se_d = float(np.sqrt(pcov[0, 0] + pcov[1, 1] - 2 * pcov[0, 1]))
    zstat = d / se_d
    return {
        "name": name,
        "data": {"y": y.tolist(), "p": p.tolist(), "p_clinical": list(map(float, p_clin)), "site": list(map(int, site))},
        "auc": auc,
        "auc_var_delong": var,
        "auc_ci": [max(0.0, auc - z * np.sqrt(var)), min(1.0, auc + z * np.sqrt(var))],
        "roc": {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": [None if np.isinf(x) else float(x) for x in thr]},
        "youden_threshold": t,
        "confusion": {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)},
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(skm.recall_score(y, pred)),
        "specificity": float(tn / (tn + fp)),
        "ppv": float(skm.precision_score(y, pred)),
        "npv": float(tn / (tn + fn)),
        "f1": float(skm.f1_score(y, pred)),
        "brier": float(skm.brier_score_loss(y, p)),
        "hosmer_lemeshow": hoslem(y, p),
        "dca": dca(y, p, [k / 100 for k in range(1, 100)]),
        "paired": {
            "auc_a": float(paired_aucs[0]),
            "auc_b": float(paired_aucs[1]),
            "var_a": float(pcov[0, 0]),
            "var_b": float(pcov[1, 1]),
            "covariance": float(pcov[0, 1]),
            "z": float(zstat),
            "p_value": float(2 * stats.norm.sf(abs(zstat))),
        },
    }


def make_classification(rng, n_pos, n_neg, decimals):
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(n_neg, dtype=int)]
    rng.shuffle(y)
    latent = rng.normal(size=len(y))
    z_ml = 1.3 * (y - 0.5) + latent
    z_cl = 0.5 * (y - 0.5) + 0.6 * latent + rng.normal(size=len(y))
    p = 1 / (1 + np.exp(-z_ml))
    pc = 1 / (1 + np.exp(-z_cl))
    if decimals is not None:
        p = np.round(p, decimals)
        pc = np.round(pc, decimals)
    site = rng.integers(0, 7, size=len(y))
    return y, p, pc, site


# ---------------------------------------------------------------- survival references
def km_case(T, E):
    from lifelines import KaplanMeierFitter
    from lifelines.utils import median_survival_times

    kmf = KaplanMeierFitter().fit(T, E)
    sf = kmf.survival_function_
    ci = kmf.confidence_interval_
    times = [float(t) for t in sf.index]
    mci = median_survival_times(ci)

    def fin(x):
        x = float(x)
        return None if not np.isfinite(x) else x

    return {
        "times": times,
        "survival": sf.iloc[:, 0].tolist(),
        "ci_lower": ci.iloc[:, 0].tolist(),
        "ci_upper": ci.iloc[:, 1].tolist(),
        "median": fin(kmf.median_survival_time_),
        "median_ci_lower": fin(mci.iloc[0, 0]),
        "median_ci_upper": fin(mci.iloc[0, 1]),
    }


def cox_lifelines(df, cols, strata=None):
    from lifelines import CoxPHFitter

    # lifelines' default stopping rules (r_precision 1e-9 on the log-likelihood, Newton decrement
    # < 1e-7) leave beta ~1e-8 from the optimum; tightened here so that lifelines and
    # statsmodels agree to ~1e-15 and the 1e-8 comparison tests the Rust code, not the stopping
    # rule. (lifelines may warn that it hit max_steps: it is at the optimum to round-off.)
    cph = CoxPHFitter()
    cph.fit(df[["T", "E"] + cols + ([strata] if strata else [])], "T", "E", strata=[strata] if strata else None,
            fit_options={"precision": 1e-18, "r_precision": 1e-18, "max_steps": 60})
    return {
        "beta": cph.params_.tolist(),
        "se": cph.standard_errors_.tolist(),
        "p_value": cph.summary["p"].tolist(),
        "hr_ci_lower": cph.summary["exp(coef) lower 95%"].tolist(),
        "hr_ci_upper": cph.summary["exp(coef) upper 95%"].tolist(),
        "loglik": float(cph.log_likelihood_),
    }


def cox_statsmodels(df, cols, ties, strata=None):
    from statsmodels.duration.hazard_regression import PHReg

    mod = PHReg(df["T"].values, df[cols].values, status=df["E"].values, ties=ties,
                strata=df[strata].values if strata else None)
    res = mod.fit(method="newton", tol=1e-14, maxiter=200)
    return {
        "beta": np.asarray(res.params).tolist(),
        "se": np.asarray(res.bse).tolist(),
        "p_value": np.asarray(res.pvalues).tolist(),
        "loglik": float(res.llf),
    }


def survival_case(rng, n, decimals):
    group = rng.integers(0, 2, size=n)
    site = rng.integers(0, 7, size=n)
    age = np.round(rng.normal(60, 10, size=n), 1)
    hazard = 0.08 * np.exp(-0.55 * group + 0.02 * (age - 60))
    t_ev = rng.exponential(1 / hazard)
    t_c = rng.uniform(6, 40, size=n)
    T = np.minimum(t_ev, t_c)
    E = (t_ev <= t_c).astype(int)
    if decimals is not None:
        T = np.round(T, decimals)
    T = np.maximum(T, 0.1)  # no zero times (lifelines would add them to the t=0 row)
    from lifelines.statistics import logrank_test

    df = pd.DataFrame({"T": T, "E": E, "group": group, "site": site, "age": age})
    lr = logrank_test(T[group == 0], T[group == 1], E[group == 0], E[group == 1])
    return {
        "data": {"T": T.tolist(), "E": E.tolist(), "group": group.tolist(), "site": site.tolist(), "age": age.tolist()},
        "km": [km_case(T[group == g], E[group == g]) for g in (0, 1)],
        "logrank": {"statistic": float(lr.test_statistic), "p_value": float(lr.p_value)},
        "cox_lifelines": cox_lifelines(df, ["group"]),
        "cox_lifelines_strata": cox_lifelines(df, ["group"], "site"),
        "cox_lifelines_strata_2cov": cox_lifelines(df, ["group", "age"], "site"),
        "cox_statsmodels_efron": cox_statsmodels(df, ["group"], "efron"),
        "cox_statsmodels_breslow": cox_statsmodels(df, ["group"], "breslow"),
        "cox_statsmodels_efron_strata": cox_statsmodels(df, ["group"], "efron", "site"),
        "cox_statsmodels_breslow_strata": cox_statsmodels(df, ["group"], "breslow", "site"),
        "cox_statsmodels_efron_strata_2cov": cox_statsmodels(df, ["group", "age"], "efron", "site"),
    }


def main():
    rng = np.random.default_rng(20261128)
    cases = []
    # The study's shape: 102 patients, 51 responders, probabilities to 2 decimals (heavy ties).
    y, p, pc, site = make_classification(rng, 51, 51, 2)
    cases.append(classification_case("cohort102_ties", y, p, pc, site))
    # A larger unbalanced cohort with continuous probabilities (almost no ties).
    y, p, pc, site = make_classification(rng, 130, 270, None)
    cases.append(classification_case("cohort400_continuous", y, p, pc, site))
    surv = [
        dict(name="pfs102_ties", **survival_case(rng, 102, 0)),
        dict(name="pfs300_halfmonths", **survival_case(rng, 300, 1)),
    ]
    doc = {"classification": cases, "survival": surv}
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
