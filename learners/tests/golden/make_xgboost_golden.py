"""Golden predictions of XGBoost's exact greedy booster for learners/src/gbm.rs.

Run (any machine with PyPI access):
    python -m venv /tmp/xgb && /tmp/xgb/bin/pip install xgboost numpy
    /tmp/xgb/bin/python learners/tests/golden/make_xgboost_golden.py

Writes xgboost_exact.json beside this file. Features are rounded to 3 decimals and stored as the
float32 values XGBoost sees (XGBoost keeps features in f32), so both sides read the same numbers.
Test rows are offset by 0.00025 so that no test value sits on a split midpoint (midpoints of
3-decimal values are multiples of 0.0005), where f32 and f64 midpoints could disagree.
No subsampling, so no random numbers are involved: the trees are fully determined.
"""
import json
import os

import numpy as np
import xgboost as xgb

rng = np.random.default_rng(20261128)


def make(n, offset):
    x = rng.normal(size=(n, 5))
    x = np.round(x, 3) + offset
    x = x.astype(np.float32)
    score = x[:, 0] * x[:, 1] + np.sin(2.0 * x[:, 2]) + 0.5 * x[:, 3] + 0.5 * rng.normal(size=n)
    y = (score > 0).astype(np.float64)
    return x, y


x_train, y_train = make(60, 0.0)
x_test, _ = make(40, 0.00025)

configs = [
    dict(n_rounds=20, eta=0.3, max_depth=3, min_child_weight=1.0, reg_lambda=1.0, gamma=0.0),
    dict(n_rounds=50, eta=0.1, max_depth=2, min_child_weight=0.5, reg_lambda=2.0, gamma=0.5),
    dict(n_rounds=30, eta=0.2, max_depth=4, min_child_weight=2.0, reg_lambda=0.5, gamma=1.0),
    dict(n_rounds=8, eta=0.5, max_depth=5, min_child_weight=0.0, reg_lambda=0.1, gamma=0.0),
]

base_score = float(y_train.mean())
out = dict(
    xgboost_version=xgb.__version__,
    x_train=[[float(v) for v in row] for row in x_train],
    y_train=[int(v) for v in y_train],
    x_test=[[float(v) for v in row] for row in x_test],
    base_score=base_score,
    cases=[],
)
dtrain = xgb.DMatrix(x_train, label=y_train)
dtest = xgb.DMatrix(x_test)
for c in configs:
    params = dict(
        objective="binary:logistic",
        tree_method="exact",
        eta=c["eta"],
        max_depth=c["max_depth"],
        min_child_weight=c["min_child_weight"],
        reg_lambda=c["reg_lambda"],
        reg_alpha=0.0,
        gamma=c["gamma"],
        subsample=1.0,
        colsample_bytree=1.0,
        base_score=base_score,
        nthread=1,
        seed=0,
    )
    b = xgb.train(params, dtrain, num_boost_round=c["n_rounds"])
    leaves = sum(d.count("leaf=") for d in b.get_dump())
    out["cases"].append(
        dict(
            params=c,
            n_leaves=leaves,
            train_margin=[float(v) for v in b.predict(dtrain, output_margin=True)],
            test_margin=[float(v) for v in b.predict(dtest, output_margin=True)],
            test_prob=[float(v) for v in b.predict(dtest)],
        )
    )

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "xgboost_exact.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", path, "xgboost", xgb.__version__)
