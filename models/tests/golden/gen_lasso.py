"""Generates lasso_golden.json: outside references for fedrad's federated LASSO logistic.

Run from the repository root:  python3 models/tests/golden/gen_lasso.py
Needs: pip install python-glmnet (wraps glmnet's Fortran) scikit-learn numpy pandas.
CI never runs this; the JSON is committed.

For each case (rows, 0/1 outcome, fold id per row, site per row):
- glmnet: LogitNet(alpha=1, n_lambda=100, min_lambda_ratio=1e-4 (n >= p), standardize=True,
  tol=1e-12, n_splits=0): the full path (lambda, intercept, coefficients on the original scale,
  i.e. glmnet's own stopping rule decides the path length);
- cv.glmnet by hand: one glmnet fit per fold on the training rows with the full path's lambda,
  held-out deviance -2[y log p + (1-y) log(1-p)] with p clamped to [1e-5, 1-1e-5]; cvm =
  fold-size-weighted mean of fold means, cvsd = sqrt(weighted var / (K-1)), lambda.min = largest
  lambda attaining min cvm, lambda.1se = largest lambda with cvm <= cvm_min + cvsd_min;
- scikit-learn: LogisticRegression(l1_ratio=1 (pure L1), solver='saga', C=1/(n*lambda), tol=1e-10,
  max_iter=10**6) on X standardised with the 1/n SD, at three lambdas of the path; its objective
  (1/n)sum[log(1+e^eta) - y eta] + lambda*||beta||_1 is reported with its coefficients mapped back
  to the original scale.
"""
import json
import os

import glmnet
import numpy as np
import pandas as pd
import sklearn
from sklearn.linear_model import LogisticRegression

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def objective(X, y, b0, b, lam):
    eta = b0 + X @ b
    loss = np.mean(np.logaddexp(0, eta) - y * eta)
    sd = X.std(axis=0)  # ddof 0
    return float(loss + lam * np.sum(np.abs(b * sd)))


def glmnet_path(X, y, lam=None):
    kw = dict(alpha=1, n_lambda=100, min_lambda_ratio=1e-4 if X.shape[0] >= X.shape[1] else 1e-2,
              standardize=True, fit_intercept=True, tol=1e-12, n_splits=0, max_iter=10**6)
    if lam is not None:
        kw["lambda_path"] = lam
    m = glmnet.LogitNet(**kw).fit(X, y)
    return np.asarray(m.lambda_path_), np.asarray(m.intercept_path_)[0], np.asarray(m.coef_path_)[0]


def dev(y, p):
    p = np.clip(p, 1e-5, 1 - 1e-5)
    return -2 * (y * np.log(p) + (1 - y) * np.log(1 - p))


def case(name, X, y, folds, sites):
    lam, a0, coef = glmnet_path(X, y)
    K = int(folds.max()) + 1
    fold_means, fold_w = [], []
    for k in range(K):
        tr, te = folds != k, folds == k
        lk, a0k, ck = glmnet_path(X[tr], y[tr], lam)
        assert len(lk) == len(lam)
        eta = a0k[None, :] + X[te] @ ck
        p = 1 / (1 + np.exp(-eta))
        fold_means.append(dev(y[te][:, None], p).mean(axis=0))
        fold_w.append(te.sum())
    fm = np.array(fold_means)
    w = np.array(fold_w, dtype=float)
    cvm = (w[:, None] * fm).sum(0) / w.sum()
    cvsd = np.sqrt((w[:, None] * (fm - cvm) ** 2).sum(0) / w.sum() / (K - 1))
    imin = int(np.where(cvm <= cvm.min())[0][0])
    i1se = int(np.where(cvm <= cvm[imin] + cvsd[imin])[0][0])

    mu, sd = X.mean(0), X.std(0)
    Z = (X - mu) / sd
    n = X.shape[0]
    sk = []
    for idx in sorted({imin, len(lam) // 3, min(len(lam) - 1, imin + 10)}):
        l = float(lam[idx])
        m = LogisticRegression(l1_ratio=1.0, solver="saga", C=1.0 / (n * l), tol=1e-10, max_iter=10**6,
                               fit_intercept=True).fit(Z, y)
        b = m.coef_[0] / sd
        b0 = float(m.intercept_[0] - np.sum(m.coef_[0] * mu / sd))
        sk.append({"index": idx, "lambda": l, "beta0": b0, "beta": b.tolist(),
                   "objective": objective(X, y, b0, b, l),
                   "glmnet_objective": objective(X, y, a0[idx], coef[:, idx], l)})
    return {
        "name": name, "x": X.tolist(), "y": y.tolist(), "folds": folds.tolist(), "sites": sites.tolist(),
        "glmnet": {"lambda": lam.tolist(), "a0": a0.tolist(), "beta": coef.T.tolist()},
        "cv": {"cvm": cvm.tolist(), "cvsd": cvsd.tolist(), "index_min": imin, "index_1se": i1se},
        "sklearn": sk,
    }


def folds_for(y, sites, K, seed):
    rng = np.random.default_rng(seed)
    f = np.zeros(len(y), dtype=int)
    nxt = 0
    for s in np.unique(sites):
        for c in (0, 1):
            idx = np.where((sites == s) & (y == c))[0]
            rng.shuffle(idx)
            for i in idx:
                f[i] = nxt % K
                nxt += 1
    return f


def main():
    rng = np.random.default_rng(4)
    n, p = 90, 8
    X = rng.normal(size=(n, p)) * np.array([1, 2, 0.5, 10, 1, 3, 1, 0.1]) + np.array([0, 5, -2, 100, 0, 0, 1, 0])
    X[:, 4] = X[:, 0] * 0.8 + rng.normal(size=n) * 0.6  # correlated pair
    eta = 0.9 * (X[:, 0]) - 0.3 * (X[:, 1] - 5) + 0.08 * (X[:, 3] - 100)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float)
    sites = np.arange(n) % 3
    cases = [case("synthetic", X, y, folds_for(y, sites, 5, 1), sites)]

    d = pd.read_csv(os.path.join(ROOT, "..", "shared", "examples", "cohort_example.csv"))
    F = d.iloc[:, d.columns.get_loc("max_diameter_mm"):].to_numpy(dtype=float)
    yc = d["response"].to_numpy(dtype=float)
    sc = d["site"].str[1:].astype(int).to_numpy()
    cases.append(case("cohort", F, yc, folds_for(yc, sc, 5, 2), sc))
    meta = {"generator": "models/tests/golden/gen_lasso.py", "python-glmnet": glmnet.__version__ if hasattr(glmnet, "__version__") else "2.6.1",
            "scikit-learn": sklearn.__version__, "numpy": np.__version__}
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "lasso_golden.json"), "w") as f:
        json.dump({"meta": meta, "cases": cases}, f)


if __name__ == "__main__":
    main()
