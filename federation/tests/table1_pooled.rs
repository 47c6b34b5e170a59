//! Federated Table 1 (engine + site halves, in process, no network) against the pooled golden
//! values that `tests/golden/gen_table1.py` computed with scipy on the same rows.

use federation::SiteId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;
use federation::table1::{Table1Output, VariableResult};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn site_tables() -> BTreeMap<SiteId, SiteTable> {
    let path = repo().join("../shared/examples/cohort_example.csv");
    let mut r = csv::Reader::from_path(&path).expect("cohort example");
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let site_col = header.iter().position(|h| h == "site").unwrap();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[site_col].clone()).unwrap())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(s, rows)| {
            let t = SiteTable::new(header.clone(), rows)
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s, t)
        })
        .collect()
}

/// The documented example study (`examples/table1-study.toml`).
fn spec() -> StudySpec {
    let text = std::fs::read_to_string(repo().join("examples/table1-study.toml")).unwrap();
    StudySpec::from_toml(&text).unwrap()
}

/// Runs the study in process, every site answering through the agent's gate with `policy`
/// (which allows this study).
fn run(spec: StudySpec, tables: &BTreeMap<SiteId, SiteTable>, policy: &SitePolicy) -> StudyState {
    let policy = SitePolicy {
        allowed_studies: vec![spec.hash().0],
        ..policy.clone()
    };
    let sites = tables
        .iter()
        .map(|(s, t)| (s.clone(), (t.clone(), policy.clone())))
        .collect();
    run_local(spec, &sites, 100).unwrap()
}

fn output(state: &StudyState) -> &Table1Output {
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    match state.output.as_ref().unwrap() {
        StudyOutput::Table1(t) => t,
        other => panic!("not a Table 1: {other:?}"),
    }
}

fn golden() -> Value {
    let text =
        std::fs::read_to_string(repo().join("tests/golden/table1_cohort_example.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol * b.abs().max(1.0),
        "{what}: federated {a} vs pooled {b}"
    );
}

#[test]
fn federated_table1_equals_pooled_scipy_values() {
    let tables = site_tables();
    let policy = SitePolicy {
        min_count: 1,
        ..SitePolicy::default()
    };
    let state = run(spec(), &tables, &policy);
    let out = output(&state);
    let g = golden();
    assert_eq!(out.n, [Some(102), Some(51), Some(51)]);
    assert!(out.notes.is_empty(), "{:?}", out.notes);
    for v in &out.variables {
        match v {
            VariableResult::Continuous {
                variable,
                stats,
                t_test,
                mann_whitney,
                resolution,
                ..
            } => {
                let gv = &g["continuous"][variable];
                for (i, key) in ["overall", "group_a", "group_b"].into_iter().enumerate() {
                    let s = stats[i].as_ref().unwrap();
                    assert_eq!(s.n, gv[key]["n"].as_u64().unwrap());
                    close(
                        s.mean,
                        gv[key]["mean"].as_f64().unwrap(),
                        1e-10,
                        &format!("{variable} {key} mean"),
                    );
                    close(
                        s.sd,
                        gv[key]["sd"].as_f64().unwrap(),
                        1e-10,
                        &format!("{variable} {key} sd"),
                    );
                    let q = s.quartiles.unwrap();
                    let res = resolution.unwrap();
                    for (j, qk) in ["q1", "median", "q3"].into_iter().enumerate() {
                        let want = gv[key][qk].as_f64().unwrap();
                        assert!(
                            (q[j] - want).abs() <= res.max(1e-12),
                            "{variable} {key} {qk}: {} vs {want} (resolution {res})",
                            q[j]
                        );
                    }
                }
                let t = t_test.as_ref().unwrap();
                close(
                    t.statistic,
                    gv["student_t"]["statistic"].as_f64().unwrap(),
                    1e-10,
                    "t",
                );
                close(
                    t.p_value,
                    gv["student_t"]["p_value"].as_f64().unwrap(),
                    1e-8,
                    "t p",
                );
                let mw = mann_whitney.as_ref().unwrap();
                close(
                    mw.statistic,
                    gv["mann_whitney"]["u"].as_f64().unwrap(),
                    1e-12,
                    &format!("{variable} W"),
                );
                close(
                    mw.p_value,
                    gv["mann_whitney"]["p_value"].as_f64().unwrap(),
                    1e-8,
                    &format!("{variable} MW p"),
                );
            }
            VariableResult::Categorical {
                variable,
                levels,
                chi_square,
                ..
            } => {
                let gv = &g["categorical"][variable];
                let names: Vec<&str> = gv["levels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l.as_str().unwrap())
                    .collect();
                assert_eq!(
                    levels.iter().map(|l| l.level.as_str()).collect::<Vec<_>>(),
                    names
                );
                for (i, l) in levels.iter().enumerate() {
                    assert_eq!(l.counts[1], gv["counts_a"][i].as_u64());
                    assert_eq!(l.counts[2], gv["counts_b"][i].as_u64());
                }
                let c = chi_square.as_ref().unwrap();
                close(
                    c.statistic,
                    gv["chi_square"]["statistic"].as_f64().unwrap(),
                    1e-10,
                    "chi2",
                );
                close(
                    c.p_value,
                    gv["chi_square"]["p_value"].as_f64().unwrap(),
                    1e-8,
                    "chi2 p",
                );
            }
        }
    }
}

#[test]
fn min_count_suppresses_instead_of_lying() {
    let tables = site_tables();
    let policy = SitePolicy {
        min_count: 5,
        ..SitePolicy::default()
    };
    let state = run(spec(), &tables, &policy);
    let out = output(&state);
    // Every site has ≥ 5 patients per group here, so sizes and moments are released...
    assert_eq!(out.n, [Some(102), Some(51), Some(51)]);
    let g = golden();
    for v in &out.variables {
        match v {
            VariableResult::Continuous {
                variable,
                stats,
                t_test,
                ..
            } => {
                let s = stats[0].as_ref().unwrap();
                close(
                    s.mean,
                    g["continuous"][variable]["overall"]["mean"]
                        .as_f64()
                        .unwrap(),
                    1e-10,
                    "mean",
                );
                close(
                    t_test.as_ref().unwrap().p_value,
                    g["continuous"][variable]["student_t"]["p_value"]
                        .as_f64()
                        .unwrap(),
                    1e-8,
                    "t p",
                );
            }
            // ...but small level counts are not: such cells show as suppressed, never as a
            // smaller pooled number.
            VariableResult::Categorical {
                variable,
                levels,
                chi_square,
                suppressed_by,
                ..
            } => {
                let gv = &g["categorical"][variable];
                for (i, l) in levels.iter().enumerate() {
                    if let Some(c) = l.counts[1] {
                        assert_eq!(Some(c), gv["counts_a"][i].as_u64(), "{variable}");
                    }
                }
                if levels.iter().any(|l| l.counts.iter().any(Option::is_none)) {
                    assert!(chi_square.is_none() && !suppressed_by.is_empty());
                }
            }
        }
    }
    let csv = out.to_csv();
    assert!(csv.contains("suppressed"), "{csv}");
}
