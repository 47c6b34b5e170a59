//! Shared fixtures of the pipeline tests: the 7-site example cohort, a small pipeline study and
//! a policy that lets it run.
#![allow(dead_code)]

use federation::SiteId;
use federation::engine::{StudyOutput, StudyStatus};
use federation::local::run_local;
use federation::pipeline::PipelineOutput;
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;
use std::collections::BTreeMap;
use std::path::PathBuf;

pub fn cohort() -> BTreeMap<SiteId, SiteTable> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let mut rows: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    for rec in r.records() {
        let row: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rows.entry(SiteId::new(row[1].clone()).unwrap())
            .or_default()
            .push(row);
    }
    rows.into_iter()
        .map(|(s, rows)| (s, SiteTable::new(header.clone(), rows).unwrap()))
        .collect()
}

/// How many values of a masked vector, decoded segment by segment as if it were plain, fall
/// within 1e-3 (relative, absolute below 1) of the site's plain encoding, and how many values
/// there are: a masked vector must leave almost none near.
pub fn near_plain(decoded: &[Vec<f64>], plain: &[Vec<f64>]) -> (usize, usize) {
    let (mut near, mut total) = (0usize, 0usize);
    for (d, p) in decoded.iter().zip(plain) {
        for (x, y) in d.iter().zip(p) {
            total += 1;
            if (x - y).abs() < 1e-3 * y.abs().max(1.0) {
                near += 1;
            }
        }
    }
    (near, total)
}

/// Adds one site's plain encoding (segments of values) to the running total.
pub fn add_parts(total: Option<Vec<Vec<f64>>>, parts: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    match total {
        None => parts,
        Some(acc) => acc
            .iter()
            .zip(&parts)
            .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x + y).collect())
            .collect(),
    }
}

/// [`cohort`] with each table's `patient_id` column marked as the id (never a value).
pub fn cohort_with_ids() -> BTreeMap<SiteId, SiteTable> {
    cohort()
        .into_iter()
        .map(|(s, t)| (s, t.with_id_column("patient_id").unwrap()))
        .collect()
}

pub fn spec_toml(repeats: u32) -> String {
    let header = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv"),
    )
    .unwrap();
    let features: Vec<String> = header
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|c| c.starts_with("original_"))
        .map(|c| format!("{c:?}"))
        .collect();
    format!(
        r#"
id = "pipeline-test"
[analysis]
kind = "pipeline"
label_column = "response"
features = [{}]
[analysis.cv]
seed = 11
repeats = {repeats}
outer_folds = 5
inner_folds = 3
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 20
bootstrap = 4
top_k = 5
[analysis.learners]
min_train_rows = 8
[analysis.learners.search.budget]
svm = 2
forest = 2
gbm = 2
[analysis.learners.search.forest]
n_trees = {{ kind = "fixed", value = 20.0 }}
[analysis.learners.search.gbm]
n_rounds = {{ kind = "int_uniform", low = 10, high = 30 }}
[analysis.meta]
hidden = [4]
alpha = 0.01
[analysis.clinical]
numeric = ["ki67", "months_dx_to_tx"]
categorical = [{{ column = "grade", levels = ["G1", "G2"] }}, {{ column = "met_pattern", levels = ["single", "multifocal", "diffuse"] }}]
"#,
        features.join(", ")
    )
}

pub fn policy(release: bool) -> SitePolicy {
    SitePolicy {
        allow_all_studies: true,
        share_models: true,
        release_predictions: release,
        // 56 candidate features on ~10 training rows per site: the consortium relaxes the
        // parameters-per-row guard for this study (see ARCHITECTURE.md, disclosure guard).
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

/// The policy of the secure Table 1 / ComBat / LASSO tests: any study, counts down to 1, and
/// the parameters-per-row guard off (the cohort's sites are small).
pub fn open_policy() -> SitePolicy {
    SitePolicy {
        min_count: 1,
        allow_all_studies: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

/// Runs the study text over the tables (every site in process) and returns its output.
pub fn run(spec_text: &str, tables: BTreeMap<SiteId, SiteTable>, release: bool) -> PipelineOutput {
    let spec = StudySpec::from_toml(spec_text).unwrap();
    let tables: BTreeMap<_, _> = tables
        .into_iter()
        .map(|(s, t)| (s, (t, policy(release))))
        .collect();
    let state = run_local(spec, &tables, 100_000).unwrap();
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    match state.output {
        Some(StudyOutput::Pipeline(o)) => *o,
        other => panic!("unexpected output {other:?}"),
    }
}
