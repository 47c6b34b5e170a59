//! Checks the stats crate against scipy/numpy golden values (tests/golden/*.json, made by
//! `python3 tests/golden/gen_table1.py` from the repo root), both pooled and through the
//! federated tree protocol on the example cohort's real site split.

mod common;

use common::{assert_close, floats, num, run_federated, sorted};
use serde_json::Value;
use stats::{
    Moments, chi_square_independence, mann_whitney_from_tied_cells, mann_whitney_pooled,
    quantile_type7, student_t_test, welch_t_test,
};

const TABLE1: &str = include_str!("../../tests/golden/table1_cohort_example.json");
const SMALL: &str = include_str!("../../tests/golden/stats_small_cases.json");

/// Tolerances from the brief: means/SDs/statistics relative 1e-10, p-values absolute 1e-8.
const TOL_VALUE: f64 = 1e-10;
const TOL_P: f64 = 1e-8;

fn assert_p(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= TOL_P,
        "{what}: p {got:.17e} vs {want:.17e}"
    );
}

struct Cohort {
    site: Vec<String>,
    response: Vec<i64>,
    data: Value,
}

fn cohort(doc: &Value) -> Cohort {
    let d = &doc["data"];
    Cohort {
        site: d["site"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
        response: d["response"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect(),
        data: d.clone(),
    }
}

/// Values of `var` for response `r`.
fn group_values(c: &Cohort, var: &str, r: i64) -> Vec<f64> {
    floats(&c.data[var])
        .into_iter()
        .zip(&c.response)
        .filter(|(_, resp)| **resp == r)
        .map(|(x, _)| x)
        .collect()
}

fn check_describe(what: &str, values: &[f64], want: &Value) {
    let m = Moments::from_values(values);
    assert_eq!(m.n, want["n"].as_u64().unwrap(), "{what} n");
    assert_close(
        &format!("{what} mean"),
        m.mean,
        num(&want["mean"]),
        TOL_VALUE,
    );
    assert_close(
        &format!("{what} sd"),
        m.sd_sample().unwrap(),
        num(&want["sd"]),
        TOL_VALUE,
    );
    let s = sorted(values);
    for (key, p) in [("q1", 0.25), ("median", 0.5), ("q3", 0.75)] {
        assert_close(
            &format!("{what} {key}"),
            quantile_type7(&s, p).unwrap(),
            num(&want[key]),
            TOL_VALUE,
        );
    }
}

#[test]
fn table1_pooled_matches_scipy() {
    let doc: Value = serde_json::from_str(TABLE1).unwrap();
    let c = cohort(&doc);
    let (ga, gb) = (
        doc["group_a"].as_i64().unwrap(),
        doc["group_b"].as_i64().unwrap(),
    );
    let cont = doc["continuous"].as_object().unwrap();
    assert_eq!(cont.len(), 4);
    for (var, want) in cont {
        let a = group_values(&c, var, ga);
        let b = group_values(&c, var, gb);
        let all = floats(&c.data[var.as_str()]);
        check_describe(&format!("{var} group a"), &a, &want["group_a"]);
        check_describe(&format!("{var} group b"), &b, &want["group_b"]);
        check_describe(&format!("{var} overall"), &all, &want["overall"]);

        let (ma, mb) = (Moments::from_values(&a), Moments::from_values(&b));
        for (name, r) in [
            ("student_t", student_t_test(&ma, &mb).unwrap()),
            ("welch_t", welch_t_test(&ma, &mb).unwrap()),
        ] {
            let w = &want[name];
            assert_close(
                &format!("{var} {name} t"),
                r.statistic,
                num(&w["statistic"]),
                TOL_VALUE,
            );
            assert_close(
                &format!("{var} {name} df"),
                r.df.unwrap(),
                num(&w["df"]),
                TOL_VALUE,
            );
            assert_p(&format!("{var} {name}"), r.p_value, num(&w["p_value"]));
        }
        let mw = mann_whitney_pooled(&a, &b).unwrap();
        assert_eq!(mw.w, num(&want["mann_whitney"]["u"]), "{var} U");
        assert_p(
            &format!("{var} mann-whitney"),
            mw.p_value,
            num(&want["mann_whitney"]["p_value"]),
        );
    }

    let cat = doc["categorical"].as_object().unwrap();
    assert_eq!(cat.len(), 5);
    for (var, want) in cat {
        let levels: Vec<&str> = want["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        let col: Vec<&str> = c.data[var.as_str()]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        // Counts per level per group, from the rows (exact).
        let count = |lv: &str, r: i64| -> u64 {
            col.iter()
                .zip(&c.response)
                .filter(|(x, resp)| **x == lv && **resp == r)
                .count() as u64
        };
        let table: Vec<Vec<u64>> = levels
            .iter()
            .map(|lv| vec![count(lv, ga), count(lv, gb)])
            .collect();
        let want_a: Vec<u64> = want["counts_a"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        let want_b: Vec<u64> = want["counts_b"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(
            table.iter().map(|r| r[0]).collect::<Vec<_>>(),
            want_a,
            "{var}"
        );
        assert_eq!(
            table.iter().map(|r| r[1]).collect::<Vec<_>>(),
            want_b,
            "{var}"
        );
        let r = chi_square_independence(&table).unwrap();
        let w = &want["chi_square"];
        assert_close(
            &format!("{var} chi2"),
            r.statistic,
            num(&w["statistic"]),
            TOL_VALUE,
        );
        assert_eq!(r.df.unwrap(), num(&w["df"]), "{var} df");
        assert_p(&format!("{var} chi2"), r.p_value, num(&w["p_value"]));
    }
}

/// Federated Table 1 on the cohort's own 7-site split: site moments merged in site order give
/// the pooled mean/SD and t-tests; the tree protocol with min_count 1 gives the exact
/// Mann-Whitney and the quartiles within the reported resolution.
#[test]
fn table1_federated_matches_scipy() {
    let doc: Value = serde_json::from_str(TABLE1).unwrap();
    let c = cohort(&doc);
    let (ga, gb) = (
        doc["group_a"].as_i64().unwrap(),
        doc["group_b"].as_i64().unwrap(),
    );
    let mut site_ids: Vec<&String> = c.site.iter().collect();
    site_ids.sort();
    site_ids.dedup();
    assert_eq!(site_ids.len(), 7);
    for (var, want) in doc["continuous"].as_object().unwrap() {
        let col = floats(&c.data[var.as_str()]);
        // sites[s][g]: g = 0 is group a (responders), g = 1 group b.
        let sites: Vec<Vec<Vec<f64>>> = site_ids
            .iter()
            .map(|sid| {
                [ga, gb]
                    .iter()
                    .map(|&r| {
                        col.iter()
                            .zip(c.site.iter().zip(&c.response))
                            .filter(|(_, (s, resp))| s == sid && **resp == r)
                            .map(|(x, _)| *x)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let merged: Vec<Moments> = (0..2)
            .map(|g| {
                Moments::merge_all(
                    &sites
                        .iter()
                        .map(|s| Moments::from_values(&s[g]))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        for (g, key) in [(0, "group_a"), (1, "group_b")] {
            assert_close(
                &format!("{var} {key} federated mean"),
                merged[g].mean,
                num(&want[key]["mean"]),
                TOL_VALUE,
            );
            assert_close(
                &format!("{var} {key} federated sd"),
                merged[g].sd_sample().unwrap(),
                num(&want[key]["sd"]),
                TOL_VALUE,
            );
        }
        let t = student_t_test(&merged[0], &merged[1]).unwrap();
        assert_p(
            &format!("{var} federated t"),
            t.p_value,
            num(&want["student_t"]["p_value"]),
        );

        let run = run_federated(&sites, 2, 1, 4, 1e-9).unwrap();
        let mw = run.state.mann_whitney(0, 1).unwrap();
        assert_eq!(mw.test.w, num(&want["mann_whitney"]["u"]), "{var} U");
        assert_p(
            &format!("{var} federated MW"),
            mw.test.p_value,
            num(&want["mann_whitney"]["p_value"]),
        );
        assert!(mw.resolution <= 1e-9 * run.root.width());
        for (groups, key) in [
            (&[0usize][..], "group_a"),
            (&[1], "group_b"),
            (&[0, 1], "overall"),
        ] {
            for (q, p) in [("q1", 0.25), ("median", 0.5), ("q3", 0.75)] {
                let e = run.state.quantile(groups, p).unwrap();
                let exact = num(&want[key][q]);
                assert!(
                    (e.value - exact).abs() <= e.resolution() + 1e-12 * exact.abs(),
                    "{var} {key} {q}: {} vs {exact} (resolution {})",
                    e.value,
                    e.resolution()
                );
                assert!(e.resolution() <= 1e-9 * run.root.width());
            }
        }
        // With min_count > 1 most of these small sites cannot split even the root, so results
        // are coarse; they must still bracket the truth.
        for min_count in [2, 5] {
            let coarse = run_federated(&sites, 2, min_count, 4, 1e-9).unwrap();
            let mw = coarse.state.mann_whitney(0, 1).unwrap();
            let u = num(&want["mann_whitney"]["u"]);
            assert!(
                mw.w_min <= u && u <= mw.w_max,
                "{var} min_count {min_count}"
            );
            for (groups, key) in [
                (&[0usize][..], "group_a"),
                (&[1], "group_b"),
                (&[0, 1], "overall"),
            ] {
                for (q, p) in [("q1", 0.25), ("median", 0.5), ("q3", 0.75)] {
                    let b = coarse.state.quantile(groups, p).unwrap();
                    let exact = num(&want[key][q]);
                    assert!(b.lower <= exact + 1e-12 && exact <= b.upper + 1e-12);
                }
            }
        }
        println!(
            "{var}: root [{:.4}, {:.4}], {} rounds, {} site cells, {} blocked",
            run.root.lo(),
            run.root.hi(),
            run.rounds,
            run.state.masses().len(),
            run.blocked
        );
    }
}

#[test]
fn small_cases_match_scipy() {
    let doc: Value = serde_json::from_str(SMALL).unwrap();
    for case in doc["two_sample"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let a = floats(&case["a"]);
        let b = floats(&case["b"]);
        // Per-case tolerance: 1e-10, looser only for the ill-conditioned mean-1e6 case.
        let tol = num(&case["tolerance"]);
        let (ma, mb) = (Moments::from_values(&a), Moments::from_values(&b));
        assert_close(&format!("{name} mean"), ma.mean, num(&case["a_mean"]), tol);
        assert_close(
            &format!("{name} var pop"),
            ma.var_population().unwrap(),
            num(&case["a_var_population"]),
            tol,
        );
        match ma.var_sample() {
            Some(v) => assert_close(&format!("{name} var"), v, num(&case["a_var_sample"]), tol),
            None => assert!(case["a_var_sample"].is_null()),
        }
        let s = student_t_test(&ma, &mb).unwrap();
        assert_close(
            &format!("{name} t"),
            s.statistic,
            num(&case["student_t"]["statistic"]),
            tol,
        );
        // Against exact rational arithmetic we are within 1e-9 even in the ill-conditioned case.
        assert_close(
            &format!("{name} exact t"),
            s.statistic,
            num(&case["exact_student_t"]),
            1e-9,
        );
        assert_p(name, s.p_value, num(&case["student_t"]["p_value"]));
        match welch_t_test(&ma, &mb) {
            Ok(w) => {
                let want = &case["welch_t"];
                assert_close(
                    &format!("{name} welch t"),
                    w.statistic,
                    num(&want["statistic"]),
                    tol,
                );
                assert_close(
                    &format!("{name} welch df"),
                    w.df.unwrap(),
                    num(&want["df"]),
                    tol,
                );
                assert_p(name, w.p_value, num(&want["p_value"]));
            }
            Err(_) => assert!(case["welch_t"].is_null(), "{name}: welch refused"),
        }
        let mw = mann_whitney_pooled(&a, &b).unwrap();
        assert_eq!(mw.w, num(&case["mann_whitney"]["u"]), "{name} U");
        assert_p(name, mw.p_value, num(&case["mann_whitney"]["p_value"]));
        // Swapping the groups mirrors W and keeps p.
        let sw = mann_whitney_pooled(&b, &a).unwrap();
        assert_eq!(sw.w, (a.len() * b.len()) as f64 - mw.w);
        assert!((sw.p_value - mw.p_value).abs() < 1e-15);
    }
    for case in doc["chi_square"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let table: Vec<Vec<u64>> = case["table"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap())
                    .collect()
            })
            .collect();
        let r = chi_square_independence(&table).unwrap();
        let w = &case["result"];
        assert_close(name, r.statistic, num(&w["statistic"]), TOL_VALUE);
        assert_eq!(r.df.unwrap(), num(&w["df"]), "{name}");
        assert_p(name, r.p_value, num(&w["p_value"]));
    }
    for case in doc["quantiles"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let x = floats(&case["sorted"]);
        for (p, want) in floats(&case["probs"]).iter().zip(floats(&case["values"])) {
            assert_close(
                &format!("{name} p={p}"),
                quantile_type7(&x, *p).unwrap(),
                want,
                TOL_VALUE,
            );
        }
    }
}

/// Mann-Whitney from explicit tie cells equals the raw-value version on the golden cases.
#[test]
fn tie_cells_equal_raw_values() {
    // Cells for a = [1,2,2,3,3,3,7], b = [2,3,4,4,5]: values 1,2,3,4,5,7.
    let cells = [(1, 0), (2, 1), (3, 1), (0, 2), (0, 1), (1, 0)];
    let raw = mann_whitney_pooled(
        &[1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 7.0],
        &[2.0, 3.0, 4.0, 4.0, 5.0],
    )
    .unwrap();
    assert_eq!(mann_whitney_from_tied_cells(&cells).unwrap(), raw);
}
