#!/usr/bin/env python3
"""Golden reference values for fedrad's Table 1 statistics (the `stats` crate checks against them).

Run from the repository root (CI never runs this; it reads the committed JSON):

    pip install numpy scipy pandas        # if missing
    python3 tests/golden/gen_table1.py

Reads  ../shared/examples/cohort_example.csv  (relative to the repo root) and writes
  tests/golden/table1_cohort_example.json  -- Table 1 by response group (1 = responders = group A,
                                              0 = non-responders = group B), with the input columns
  tests/golden/stats_small_cases.json      -- small hand cases (ties, unequal n, zero rows)

Conventions (the same ones the Rust code names):
  sd                  sample SD, ddof = 1
  q1 / median / q3    numpy.quantile(method="linear") = R type 7
  student_t           scipy.stats.ttest_ind(a, b, equal_var=True)   (R t.test var.equal=TRUE)
  welch_t             scipy.stats.ttest_ind(a, b, equal_var=False)  (R t.test default)
  mann_whitney        scipy.stats.mannwhitneyu(x=a, y=b, alternative="two-sided",
                      method="asymptotic", use_continuity=True); u = U of x
                      (R wilcox.test(x, y, exact=FALSE, correct=TRUE) W)
  chi_square          scipy.stats.chi2_contingency(table, correction=False)
                      (R chisq.test(correct=FALSE))
Floats are written with Python's repr (shortest round-trip), i.e. full precision.
"""

import hashlib
import json
import math
import os
import sys
from fractions import Fraction

import numpy as np
import pandas as pd
import scipy
import scipy.stats as st

CSV = os.path.join("..", "shared", "examples", "cohort_example.csv")
OUT_DIR = os.path.join("tests", "golden")
CONTINUOUS = ["age", "ki67", "months_dx_to_tx", "max_diameter_mm"]
CATEGORICAL = ["sex", "ecog", "grade", "met_pattern", "prior_surgery"]
GROUP_A, GROUP_B = 1, 0  # responders vs non-responders


def f(x):
    """numpy scalar -> Python float (json writes repr, full precision)."""
    return float(x)


def describe(v):
    v = np.asarray(v, dtype=float)
    q = np.quantile(v, [0.25, 0.5, 0.75], method="linear")
    return {
        "n": int(v.size),
        "mean": f(np.mean(v)),
        "sd": f(np.std(v, ddof=1)),
        "q1": f(q[0]),
        "median": f(q[1]),
        "q3": f(q[2]),
    }


def two_group_tests(a, b):
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    s = st.ttest_ind(a, b, equal_var=True)
    w = st.ttest_ind(a, b, equal_var=False)
    m = st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
    return {
        "student_t": {"statistic": f(s.statistic), "df": f(s.df), "p_value": f(s.pvalue)},
        "welch_t": {"statistic": f(w.statistic), "df": f(w.df), "p_value": f(w.pvalue)},
        "mann_whitney": {"u": f(m.statistic), "p_value": f(m.pvalue)},
    }


def exact_student_t(a, b):
    """Pooled-variance t in exact rational arithmetic on the given doubles (one final sqrt)."""
    A = [Fraction(float(x)) for x in a]
    B = [Fraction(float(x)) for x in b]
    ma, mb = sum(A) / len(A), sum(B) / len(B)
    m2 = sum((x - ma) ** 2 for x in A) + sum((x - mb) ** 2 for x in B)
    se2 = m2 / (len(A) + len(B) - 2) * (Fraction(1, len(A)) + Fraction(1, len(B)))
    return float(ma - mb) / math.sqrt(float(se2))


def chi_square(table):
    """Pearson chi-square without Yates; all-zero rows/columns dropped first (scipy refuses
    zero expected counts, R would give NaN; fedrad drops them, so the golden does the same)."""
    t = np.asarray(table, dtype=float)
    t = t[t.sum(axis=1) > 0][:, t.sum(axis=0) > 0]
    r = st.chi2_contingency(t, correction=False)
    return {"statistic": f(r.statistic), "df": f(r.dof), "p_value": f(r.pvalue)}


def table1():
    if not os.path.exists(CSV):
        sys.exit(f"{CSV} not found: run this from the repository root (shared/ beside it)")
    # Read as text and convert with Python's float(), which rounds correctly, so the values equal
    # what any correct parser (Rust's) reads from the CSV.
    d = pd.read_csv(CSV, dtype=str, keep_default_na=False)
    for c in CONTINUOUS:
        d[c] = d[c].map(float)
    d["response"] = d["response"].map(int)
    with open(CSV, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    a = d[d["response"] == GROUP_A]
    b = d[d["response"] == GROUP_B]
    out = {
        "source": "../shared/examples/cohort_example.csv",
        "source_sha256": digest,
        "generator": "python3 tests/golden/gen_table1.py (run from the repo root)",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__},
        "group_variable": "response",
        "group_a": GROUP_A,
        "group_b": GROUP_B,
        "data": {
            "site": d["site"].astype(str).tolist(),
            "response": d["response"].astype(int).tolist(),
            **{c: [f(x) for x in d[c]] for c in CONTINUOUS},
            **{c: d[c].astype(str).tolist() for c in CATEGORICAL},
        },
        "continuous": {},
        "categorical": {},
    }
    for c in CONTINUOUS:
        out["continuous"][c] = {
            "group_a": describe(a[c]),
            "group_b": describe(b[c]),
            "overall": describe(d[c]),
            **two_group_tests(a[c], b[c]),
        }
    for c in CATEGORICAL:
        levels = sorted(d[c].astype(str).unique().tolist())
        ca = [int((a[c].astype(str) == lv).sum()) for lv in levels]
        cb = [int((b[c].astype(str) == lv).sum()) for lv in levels]
        out["categorical"][c] = {
            "levels": levels,
            "counts_a": ca,
            "counts_b": cb,
            # rows = levels, columns = (group a, group b)
            "chi_square": chi_square([[x, y] for x, y in zip(ca, cb)]),
        }
    return out


def small_cases():
    """Hand-made cases for unit tests: ties, unequal n, single values, zero rows/columns."""
    pairs = [
        ("ties_unequal_n", [1, 2, 2, 3, 3, 3, 7], [2, 3, 4, 4, 5]),
        ("a_larger_no_ties", [10.5, 11.25, 12.0, 13.5], [1.0, 2.0, 3.0, 4.5, 5.0, 6.0, 7.0]),
        ("centred_w", [1, 3], [2, 3]),
        ("heavy_ties", [0, 0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]),
        ("negative_and_decimals", [-1.5, -0.25, 0.1, 0.2, 0.30000000000000004],
         [-2.0, -1.5, 0.1, 0.7]),
        ("single_in_a", [4.0], [1.0, 2.0, 6.0]),
        ("shifted_large_mean", [1e6 + 0.1, 1e6 + 0.2, 1e6 + 0.4],
         [1e6 + 0.3, 1e6 + 0.5, 1e6 + 0.9, 1e6 + 0.6]),
    ]
    # Means near 1e6 carry ~1e-10 relative round-off into the mean difference in any f64 code
    # (scipy's own t is ~3e-10 off the exact value here), so that case gets a looser tolerance;
    # "exact_student_t" (rational arithmetic on the same f64 inputs) shows who is closer.
    tolerance = {"shifted_large_mean": 1e-8}
    cases = {"two_sample": [], "chi_square": [], "quantiles": []}
    for name, a, b in pairs:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
        entry = {
            "name": name,
            "tolerance": tolerance.get(name, 1e-10),
            "exact_student_t": exact_student_t(a, b),
            "a": [f(x) for x in a],
            "b": [f(x) for x in b],
            "a_mean": f(np.mean(a)),
            "a_var_sample": f(np.var(a, ddof=1)) if a.size > 1 else None,
            "a_var_population": f(np.var(a, ddof=0)),
        }
        s = st.ttest_ind(a, b, equal_var=True)
        entry["student_t"] = {"statistic": f(s.statistic), "df": f(s.df), "p_value": f(s.pvalue)}
        if a.size > 1 and b.size > 1:
            w = st.ttest_ind(a, b, equal_var=False)
            entry["welch_t"] = {"statistic": f(w.statistic), "df": f(w.df), "p_value": f(w.pvalue)}
        else:
            entry["welch_t"] = None
        m = st.mannwhitneyu(a, b, alternative="two-sided", method="asymptotic", use_continuity=True)
        entry["mann_whitney"] = {"u": f(m.statistic), "p_value": f(m.pvalue)}
        cases["two_sample"].append(entry)
    tables = [
        ("2x2", [[12, 5], [3, 9]]),
        ("3x2", [[10, 4], [6, 6], [2, 9]]),
        ("2x3_unequal", [[1, 7, 20], [8, 2, 11]]),
        ("zero_row_and_column", [[5, 0, 3], [0, 0, 0], [2, 0, 9], [4, 0, 4]]),
        ("large_counts", [[1200, 800], [950, 1050]]),
    ]
    for name, t in tables:
        cases["chi_square"].append({"name": name, "table": t, "result": chi_square(t)})
    qdata = [
        ("n1", [3.5]),
        ("n2", [1.0, 2.0]),
        ("ties", [1, 1, 2, 2, 2, 3, 9, 9]),
        ("odd", [0.1, 0.7, 0.2, 5.0, 3.3, 2.2, 1.1]),
    ]
    probs = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    for name, x in qdata:
        x = np.sort(np.asarray(x, dtype=float))
        cases["quantiles"].append({
            "name": name,
            "sorted": [f(v) for v in x],
            "probs": probs,
            "values": [f(v) for v in np.quantile(x, probs, method="linear")],
        })
    cases["versions"] = {"numpy": np.__version__, "scipy": scipy.__version__}
    cases["generator"] = "python3 tests/golden/gen_table1.py (run from the repo root)"
    return cases


def write(name, obj):
    path = os.path.join(OUT_DIR, name)
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, allow_nan=False)
        fh.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    write("table1_cohort_example.json", table1())
    write("stats_small_cases.json", small_cases())
