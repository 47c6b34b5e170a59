"""Generates logistic_golden.json: statsmodels Logit (Newton) fits for fedrad's federated IRLS.

Run from the repository root:  python3 models/tests/golden/gen_logistic.py
Needs: pip install statsmodels numpy pandas. CI never runs this; the JSON is committed.

Cases
- "synthetic": n = 150, 4 covariates (one binary), outcome drawn from a logistic model.
- "cohort_clinical": ../shared/examples/cohort_example.csv, response ~ ki67 + ecog +
  months_dx_to_tx + grade (one-hot, reference G1) + met_pattern (one-hot, reference = first
  sorted level), i.e. the clinical comparator model of the study.
Fitted with Logit(y, add_constant(X)).fit(method="newton", tol=1e-14, maxiter=200).
"""
import json
import os

import numpy as np
import pandas as pd
import statsmodels
import statsmodels.api as sm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def fit(x, y, name, names):
    res = sm.Logit(y, sm.add_constant(x, has_constant="add")).fit(method="newton", tol=1e-14, maxiter=200, disp=0)
    return {
        "name": name,
        "columns": names,
        "x": np.asarray(x).tolist(),
        "y": np.asarray(y, dtype=float).tolist(),
        "coef": np.asarray(res.params).tolist(),
        "se": np.asarray(res.bse).tolist(),
        "z": np.asarray(res.tvalues).tolist(),
        "p_value": np.asarray(res.pvalues).tolist(),
        "loglik": float(res.llf),
        "iterations": int(res.mle_retvals["iterations"]),
    }


def main():
    rng = np.random.default_rng(77)
    n = 150
    x = np.column_stack([
        rng.normal(50, 10, n),
        rng.normal(0, 1, n),
        rng.integers(0, 2, n).astype(float),
        rng.exponential(2.0, n),
    ])
    eta = -2.0 + 0.04 * x[:, 0] + 0.8 * x[:, 1] - 0.7 * x[:, 2] + 0.2 * x[:, 3]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    cases = [fit(x, y, "synthetic", ["age", "z", "flag", "expo"])]

    d = pd.read_csv(os.path.join(ROOT, "..", "shared", "examples", "cohort_example.csv"))
    cols = {"ki67": d["ki67"], "ecog": d["ecog"], "months_dx_to_tx": d["months_dx_to_tx"]}
    for var in ["grade", "met_pattern"]:
        levels = sorted(d[var].astype(str).unique())
        for l in levels[1:]:
            cols[f"{var}={l}"] = (d[var].astype(str) == l).astype(float)
    X = pd.DataFrame(cols)
    cases.append(fit(X.to_numpy(dtype=float), d["response"].to_numpy(dtype=float), "cohort_clinical", list(X.columns)))
    meta = {"generator": "models/tests/golden/gen_logistic.py", "statsmodels": statsmodels.__version__, "numpy": np.__version__}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "logistic_golden.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f)


if __name__ == "__main__":
    main()
