"""Generates combat_golden.json: neuroCombat 0.2.12 outputs for fedrad's ComBat tests.

Run from the repository root:  python3 models/tests/golden/gen_combat.py
Needs: pip install neuroCombat==0.2.12 numpy pandas. CI never runs this; the JSON is committed.

Cases
- "synthetic": 4 batches (sizes 12, 9, 15, 10), covariates sex (categorical M/F) and age
  (integers: neuroCombat casts continuous covariates to float32, so they must be exactly
  representable), 10 features with batch location/scale effects. Fitted on the training rows
  (every row except every 5th), then the frozen estimates are applied by hand (numpy, formula of
  DESIGN §7 with the held-out rows' own covariates) to the held-out rows.
- "cohort": ../shared/examples/cohort_example.csv, site as batch, no covariates, the 56 feature
  columns from max_diameter_mm on.
Each case is run parametric, non-parametric and mean-only (parametric), eb=True.
Features are passed as float64 numpy arrays (a DataFrame would be cast to float32).
"""
import json
import os
import sys

import numpy as np
import pandas as pd
from neuroCombat import neuroCombat

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def synthetic():
    rng = np.random.default_rng(20240607)
    sizes = [12, 9, 15, 10]
    labels = ["A", "B", "C", "D"]
    batch = np.concatenate([[l] * s for l, s in zip(labels, sizes)])
    n = len(batch)
    p = 10
    sex = rng.choice(["F", "M"], size=n)
    age = rng.integers(35, 80, size=n).astype(float)
    base = rng.normal(0, 1, size=(n, p)) * np.linspace(1, 5, p) + np.linspace(-3, 40, p)
    loc = rng.normal(0, 1.5, size=(len(labels), p))
    scale = rng.uniform(0.6, 1.8, size=(len(labels), p))
    y = base.copy()
    for b, l in enumerate(labels):
        idx = batch == l
        y[idx] = y[idx] * scale[b] + loc[b]
    y += 0.05 * (age[:, None] - 55) * np.linspace(0.5, 2, p)[None, :]
    y += (sex == "M")[:, None] * np.linspace(1, -1, p)[None, :]
    return batch, {"sex": sex, "age": age}, y


def run(features, batch, covs, cat, cont, mode, mean_only):
    covars = pd.DataFrame({"batch": batch, **covs})
    out = neuroCombat(
        dat=np.asarray(features, dtype=np.float64).T.copy(),
        covars=covars,
        batch_col="batch",
        categorical_cols=cat,
        continuous_cols=cont,
        eb=True,
        parametric=(mode == "parametric"),
        mean_only=mean_only,
    )
    est = out["estimates"]
    info = out["info"]
    design = info["design"]
    nb = info["n_batch"]
    # beta by the same formula neuroCombat uses (it does not return B)
    Y = np.asarray(features, dtype=np.float64).T
    B = np.linalg.inv(design.T @ design) @ design.T @ Y.T
    res = {
        "mode": mode,
        "mean_only": mean_only,
        "batches": [str(b) for b in est["batches"]],
        "data": out["data"].T.tolist(),
        "grand_mean": est["stand.mean"][:, 0].tolist(),
        "var_pooled": np.ravel(est["var.pooled"]).tolist(),
        "beta": B.tolist(),
        "gamma_hat": np.asarray(est["gamma_hat"]).tolist(),
        "delta_hat": np.asarray(est["delta_hat"], dtype=float).tolist(),
        "gamma_bar": np.asarray(est["gamma_bar"]).tolist(),
        "t2": np.asarray(est["t2"]).tolist(),
        "gamma_star": np.asarray(est["gamma.star"], dtype=float).tolist(),
        "delta_star": np.asarray(est["delta.star"], dtype=float).tolist(),
    }
    if est["a_prior"] is not None:
        res["a_prior"] = [float(a) for a in est["a_prior"]]
        res["b_prior"] = [float(b) for b in est["b_prior"]]
    return res, B, est, nb


def apply_by_hand(features, batch, covs, cat, cont, B, est, nb, train_cat_levels):
    """Frozen-parameter application to new rows (DESIGN §7): training grand mean, pooled
    variance, covariate betas (with the new rows' covariates) and the batch's gamma*/delta*."""
    n = features.shape[0]
    cols = []
    for c in cat:
        levels = train_cat_levels[c]
        for l in levels[1:]:
            cols.append((np.asarray(covs[c]) == l).astype(float))
    for c in cont:
        cols.append(np.asarray(covs[c], dtype=float))
    cov_design = np.column_stack(cols) if cols else np.zeros((n, 0))
    grand = est["stand.mean"][:, 0]
    mod = cov_design @ B[nb:, :]
    vp = np.ravel(est["var.pooled"])
    batches = [str(b) for b in est["batches"]]
    gs = np.asarray(est["gamma.star"], dtype=float)
    ds = np.asarray(est["delta.star"], dtype=float)
    out = np.empty_like(features)
    for i in range(n):
        b = batches.index(batch[i])
        s = (features[i] - grand - mod[i]) / np.sqrt(vp)
        out[i] = (s - gs[b]) / np.sqrt(ds[b]) * np.sqrt(vp) + grand + mod[i]
    return out


def main():
    cases = []
    batch, covs, y = synthetic()
    n = len(batch)
    test = np.arange(n) % 5 == 4
    train = ~test
    cat, cont = ["sex"], ["age"]
    case = {
        "name": "synthetic",
        "batch": batch.tolist(),
        "covariates": [
            {"name": "sex", "kind": "categorical", "values": covs["sex"].tolist()},
            {"name": "age", "kind": "continuous", "values": covs["age"].tolist()},
        ],
        "features": y.tolist(),
        "train_rows": np.where(train)[0].tolist(),
        "test_rows": np.where(test)[0].tolist(),
        "variants": [],
    }
    tr_covs = {k: v[train] for k, v in covs.items()}
    for mode, mean_only in [("parametric", False), ("nonparametric", False), ("parametric", True)]:
        res, B, est, nb = run(y[train], batch[train], tr_covs, cat, cont, mode, mean_only)
        te_covs = {k: v[test] for k, v in covs.items()}
        levels = {"sex": sorted(set(tr_covs["sex"]))}
        res["applied_test"] = apply_by_hand(y[test], batch[test], te_covs, cat, cont, B, est, nb, levels).tolist()
        case["variants"].append(res)
    cases.append(case)

    csv = os.path.join(ROOT, "..", "shared", "examples", "cohort_example.csv")
    d = pd.read_csv(csv)
    feats = d.iloc[:, d.columns.get_loc("max_diameter_mm"):]
    fy = feats.to_numpy(dtype=np.float64)
    fb = d["site"].astype(str).to_numpy()
    case = {
        "name": "cohort",
        "feature_names": list(feats.columns),
        "batch": fb.tolist(),
        "covariates": [],
        "features": fy.tolist(),
        "train_rows": list(range(len(fb))),
        "test_rows": [],
        "variants": [],
    }
    for mode, mean_only in [("parametric", False), ("nonparametric", False), ("parametric", True)]:
        res, _, _, _ = run(fy, fb, {}, [], [], mode, mean_only)
        case["variants"].append(res)
    cases.append(case)

    meta = {
        "generator": "models/tests/golden/gen_combat.py",
        "neuroCombat": "0.2.12",
        "numpy": np.__version__,
        "pandas": pd.__version__,
    }
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "combat_golden.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f)
    print("wrote", path, file=sys.stderr)


if __name__ == "__main__":
    main()
