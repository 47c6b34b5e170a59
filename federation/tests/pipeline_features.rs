//! A pipeline study that omits `analysis.features` resolves them from the sites' column names
//! in a first round: every column numeric and complete at every site, minus the label, batch,
//! clinical, survival and `exclude_columns` columns. Shown here on the shared example cohort
//! (whole and with renamed, extra, missing and broken radiomics columns): the resolved study
//! gives exactly the output of the same study with the features listed, a column missing or
//! broken at one site is dropped and reported with the site and the reason, and a site refuses
//! a feature list that names a column the study excludes.

mod common;

use federation::SiteId;
use federation::engine::{StudyOutput, StudyStatus};
use federation::local::run_local;
use federation::pipeline::driver::{ColumnProblem, resolve_features};
use federation::pipeline::messages::ColumnReport;
use federation::pipeline::{PipelineOutput, PipelineSpec, PipelineTask, StageTask};
use federation::study::{AnalysisSpec, StudySpec};
use federation::table::SiteTable;
use std::collections::BTreeMap;

/// The radiomics columns the reduced cohort keeps (a cheap LASSO), in table order.
const KEPT: [&str; 8] = [
    "original_shape_VoxelVolume",
    "original_shape_Sphericity",
    "original_firstorder_Mean",
    "original_firstorder_Entropy",
    "original_glcm_Contrast",
    "original_glcm_Idm",
    "original_glrlm_RunEntropy",
    "original_glszm_ZoneEntropy",
];

/// The clinical columns of the study that are neither the comparator's nor outcomes.
const EXCLUDE: &str =
    r#"exclude_columns = ["site", "age", "sex", "ecog", "prior_surgery", "max_diameter_mm"]"#;

/// A study with smoke settings: `features` is either a TOML line or empty (resolved).
fn study(features: &str) -> String {
    format!(
        r#"
id = "features-test"
[analysis]
kind = "pipeline"
label_column = "response"
{features}
[analysis.cv]
seed = 3
repeats = 1
outer_folds = 5
inner_folds = 3
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 10
bootstrap = 3
top_k = 3
[analysis.learners]
min_train_rows = 8
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.learners.search.forest]
n_trees = {{ kind = "fixed", value = 5.0 }}
[analysis.learners.search.gbm]
n_rounds = {{ kind = "int_uniform", low = 5, high = 8 }}
[analysis.meta]
hidden = [3]
alpha = 0.01
[analysis.clinical]
numeric = ["ki67", "months_dx_to_tx"]
categorical = [{{ column = "grade", levels = ["G1", "G2"] }}, {{ column = "met_pattern", levels = ["single", "multifocal", "diffuse"] }}]
[analysis.metrics]
bootstrap = 20
time_column = "pfs_months"
event_column = "pfs_event"
"#
    )
}

/// Applies `edit(site, header, rows)` to every site's table.
fn edited(
    tables: BTreeMap<SiteId, SiteTable>,
    edit: impl Fn(&str, &mut Vec<String>, &mut Vec<Vec<String>>),
) -> BTreeMap<SiteId, SiteTable> {
    tables
        .into_iter()
        .map(|(site, t)| {
            let mut header = t.header().to_vec();
            let mut rows: Vec<Vec<String>> = (0..t.n_rows())
                .map(|i| {
                    header
                        .iter()
                        .map(|h| t.text_column(h).unwrap()[i].unwrap_or_default().to_string())
                        .collect()
                })
                .collect();
            edit(site.as_str(), &mut header, &mut rows);
            (site, SiteTable::new(header, rows).unwrap())
        })
        .collect()
}

/// Keeps the clinical columns and [`KEPT`] only.
fn reduced() -> BTreeMap<SiteId, SiteTable> {
    edited(common::cohort(), |_, header, rows| {
        let keep: Vec<usize> = (0..header.len())
            .filter(|&j| !header[j].starts_with("original_") || KEPT.contains(&&*header[j]))
            .collect();
        *header = keep.iter().map(|&j| header[j].clone()).collect();
        for r in rows.iter_mut() {
            *r = keep.iter().map(|&j| r[j].clone()).collect();
        }
    })
}

fn run(spec_text: &str, tables: &BTreeMap<SiteId, SiteTable>) -> Result<PipelineOutput, String> {
    let spec = StudySpec::from_toml(spec_text).unwrap();
    let tables: BTreeMap<_, _> = tables
        .iter()
        .map(|(s, t)| (s.clone(), (t.clone(), common::policy(false))))
        .collect();
    let state = run_local(spec, &tables, 100_000).unwrap();
    match (state.status, state.output) {
        (StudyStatus::Completed, Some(StudyOutput::Pipeline(o))) => Ok(*o),
        (StudyStatus::Failed { reason }, _) => Err(reason),
        (s, o) => panic!("{s:?} / {o:?}"),
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn resolved_features_give_the_output_of_the_listed_ones() {
    let tables = reduced();
    let listed = run(&study(&format!("features = [{}]", quoted(&KEPT))), &tables).unwrap();
    let resolved = run(&study(EXCLUDE), &tables).unwrap();
    assert_eq!(listed.cv.columns, None, "a listed study resolves nothing");
    let r = resolved
        .cv
        .columns
        .as_ref()
        .expect("the resolution is recorded");
    assert_eq!(r.features, KEPT, "table order, clinical columns left out");
    assert!(r.dropped.is_empty(), "{:?}", r.dropped);
    for c in [
        "response",
        "ki67",
        "months_dx_to_tx",
        "grade",
        "met_pattern",
        "pfs_months",
        "pfs_event",
        "site",
        "age",
        "sex",
        "ecog",
        "prior_surgery",
        "max_diameter_mm",
    ] {
        assert!(r.excluded.iter().any(|e| e == c), "{c} not excluded: {r:?}");
    }
    // Same folds, same features in the same order: every fit and every metric the same bits.
    assert_eq!(resolved.spec.features, KEPT);
    assert_eq!(resolved.cv.features, listed.cv.features);
    assert_eq!(resolved.cv.per_fit, listed.cv.per_fit);
    assert_eq!(resolved.cv.selected_count, listed.cv.selected_count);
    assert_eq!(resolved.metrics, listed.metrics);
    assert_eq!(resolved.cv.rounds.get("feature columns"), Some(&1));
    assert_eq!(listed.cv.rounds.get("feature columns"), None);
}

#[test]
fn renamed_extra_missing_and_broken_columns_are_resolved_per_site() {
    // Every site: one radiomics column renamed, one extra wavelet column. S01 lacks the GLCM
    // contrast, S02 has an unreadable entropy cell, S03 a missing run-entropy cell.
    let tables = edited(reduced(), |site, header, rows| {
        let j = header
            .iter()
            .position(|h| h == "original_shape_Sphericity")
            .unwrap();
        header[j] = "shape_sphericity_v2".into();
        let mean = header
            .iter()
            .position(|h| h == "original_firstorder_Mean")
            .unwrap();
        header.push("wavelet_LLH_firstorder_Mean".into());
        for (i, r) in rows.iter_mut().enumerate() {
            let v: f64 = r[mean].parse().unwrap();
            r.push(format!("{:.6}", 0.5 * v + (i % 7) as f64));
        }
        let col = |name: &str| header.iter().position(|h| h == name).unwrap();
        match site {
            "S01" => {
                let c = col("original_glcm_Contrast");
                header.remove(c);
                for r in rows.iter_mut() {
                    r.remove(c);
                }
            }
            "S02" => {
                let c = col("original_firstorder_Entropy");
                rows[3][c] = "n/a (unreadable)".into();
            }
            "S03" => {
                let c = col("original_glrlm_RunEntropy");
                rows[0][c] = "NA".into();
            }
            _ => {}
        }
    });
    let out = run(&study(EXCLUDE), &tables).unwrap();
    let r = out.cv.columns.as_ref().unwrap();
    assert_eq!(
        r.features,
        [
            "original_shape_VoxelVolume",
            "shape_sphericity_v2",
            "original_firstorder_Mean",
            "original_glcm_Idm",
            "original_glszm_ZoneEntropy",
            "wavelet_LLH_firstorder_Mean",
        ]
    );
    assert_eq!(out.cv.features, r.features);
    assert_eq!(out.cv.selected_count.len(), 6);
    type Why<'a> = (&'a [(String, ColumnProblem)], String);
    let dropped: BTreeMap<&str, Why> = r
        .dropped
        .iter()
        .map(|d| (d.column.as_str(), (d.sites.as_slice(), d.reason())))
        .collect();
    assert_eq!(dropped.len(), 3, "{dropped:?}");
    assert_eq!(
        dropped["original_glcm_Contrast"].0,
        [("S01".to_string(), ColumnProblem::Missing)]
    );
    assert_eq!(dropped["original_glcm_Contrast"].1, "missing at S01");
    assert_eq!(
        dropped["original_firstorder_Entropy"].0,
        [("S02".to_string(), ColumnProblem::NotNumeric)]
    );
    assert_eq!(
        dropped["original_glrlm_RunEntropy"].0,
        [("S03".to_string(), ColumnProblem::MissingValues)]
    );
    assert_eq!(out.cv.fits, 5);
}

#[test]
fn too_few_resolved_columns_stop_the_study_with_the_reason() {
    // Only three radiomics columns, and one of them missing at S05: 2 left for top_k = 3.
    let tables = edited(reduced(), |site, header, rows| {
        let keep: Vec<usize> = (0..header.len())
            .filter(|&j| {
                let h = &header[j];
                !h.starts_with("original_")
                    || (KEPT[..3].contains(&h.as_str())
                        && !(site == "S05" && h == "original_firstorder_Mean"))
            })
            .collect();
        *header = keep.iter().map(|&j| header[j].clone()).collect();
        for r in rows.iter_mut() {
            *r = keep.iter().map(|&j| r[j].clone()).collect();
        }
    });
    let err = run(&study(EXCLUDE), &tables).unwrap_err();
    assert!(
        err.contains("top_k = 3 but only 2 columns")
            && err.contains("original_firstorder_Mean (missing at S05)"),
        "{err}"
    );
}

fn report(numeric: &[&str], incomplete: &[&str], text: &[&str]) -> ColumnReport {
    let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
    ColumnReport {
        numeric: v(numeric),
        incomplete: v(incomplete),
        text: v(text),
    }
}

fn pipeline_spec(text: &str) -> PipelineSpec {
    match StudySpec::from_toml(text).unwrap().analysis {
        AnalysisSpec::Pipeline(p) => *p,
        other => panic!("{other:?}"),
    }
}

#[test]
fn resolution_rules() {
    let spec = pipeline_spec(&study(r#"exclude_columns = ["age", "not_in_any_table"]"#));
    let (a, b) = (SiteId::new("A").unwrap(), SiteId::new("B").unwrap());
    let ra = report(
        &["response", "age", "f2", "f1", "ki67", "f3", "g1", "g2"],
        &["f4"],
        &["sex", "grade"],
    );
    let rb = report(
        &["f1", "response", "f2", "age", "f4", "ki67", "g1"],
        &[],
        &["f3", "sex"],
    );
    let r = resolve_features(&spec, &[(&a, &ra), (&b, &rb)]).unwrap();
    // The first site's order; numeric and complete at both; clinical/excluded out.
    assert_eq!(r.features, ["f2", "f1", "g1"]);
    let reasons: Vec<(String, String)> = r
        .dropped
        .iter()
        .map(|d| (d.column.clone(), d.reason()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("f3".to_string(), "not numeric at B".to_string()),
            ("g2".into(), "missing at B".into()),
            ("f4".into(), "has missing values at A".into()),
        ]
    );
    assert_eq!(r.excluded, ["response", "age", "ki67", "grade"]);
    // Text-only columns are neither features nor dropped.
    assert!(!reasons.iter().any(|(c, _)| c == "sex"));
    // Nothing left.
    let err = resolve_features(&spec, &[(&a, &report(&["ki67"], &[], &[]))]).unwrap_err();
    assert!(
        err.contains("no column is numeric and complete at every site"),
        "{err}"
    );
}

#[test]
fn a_study_file_cannot_both_list_features_and_exclude_columns() {
    let err = StudySpec::from_toml(&study(&format!(
        "features = [\"f1\", \"f2\", \"f3\"]\n{EXCLUDE}"
    )))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("exclude_columns applies only when analysis.features is omitted"),
        "{err}"
    );
}

#[test]
fn a_site_refuses_a_feature_list_naming_an_excluded_column() {
    let spec = pipeline_spec(&study(EXCLUDE));
    let tables = reduced();
    let (site, table) = tables.iter().next().unwrap();
    let policy = common::policy(false);
    let task = |features: &[&str]| PipelineTask {
        site: site.to_string(),
        batch: 0,
        features: features.iter().map(|s| s.to_string()).collect(),
        stage: StageTask::ComBat {
            round: 0,
            fits: vec![],
        },
    };
    for bad in ["ki67", "response", "age", "pfs_months"] {
        let mut state = Default::default();
        let err = federation::pipeline::site_answer(
            table,
            &spec,
            &task(&["original_glcm_Idm", bad]),
            2,
            &policy,
            &mut state,
        )
        .unwrap_err();
        assert!(err.public_message().contains("excludes"), "{bad}: {err}");
    }
    // No list at all after the columns round: refused too.
    let err = federation::pipeline::site_answer(
        table,
        &spec,
        &task(&[]),
        2,
        &policy,
        &mut Default::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("skipped the column round"),
        "{err}"
    );
    // A listed study refuses a list of the aggregator's own.
    let listed = pipeline_spec(&study(&format!("features = [{}]", quoted(&KEPT))));
    let err = federation::pipeline::site_answer(
        table,
        &listed,
        &task(&["original_glcm_Idm"]),
        2,
        &policy,
        &mut Default::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("lists its features"), "{err}");
}

/// What `aggregator status` and `simulate study` show while the study runs: the column round,
/// then per round the repeats and folds in progress, the outer fits done and the stage with its
/// round; the estimated fraction done never goes back and reaches the metrics stage below 1.
#[test]
fn progress_names_repeat_folds_stage_and_only_moves_forward() {
    use federation::site::{SiteMemory, answer_with_memory};
    let spec =
        StudySpec::from_toml(&study(EXCLUDE).replace("repeats = 1\n", "repeats = 2\n")).unwrap();
    let tables = reduced();
    let policy = common::policy(false);
    let mut state =
        federation::engine::StudyState::new(spec, tables.keys().cloned().collect(), 0, u64::MAX)
            .unwrap();
    let mut memories: BTreeMap<SiteId, SiteMemory> = BTreeMap::new();
    let mut seen: Vec<(String, f64)> = Vec::new();
    while !state.status.is_finished() {
        seen.push(
            state
                .stage_progress()
                .expect("a pipeline study reports progress"),
        );
        for (site, table) in &tables {
            let task = state.task_for(site).unwrap();
            let memory = memories.entry(site.clone()).or_default();
            let answer = answer_with_memory(&task, table, &policy, memory).result;
            state.accept(site, answer, 0, 0).unwrap();
        }
    }
    assert_eq!(state.status, StudyStatus::Completed, "{:?}", state.status);
    assert!(
        seen[0].0.contains("resolving the feature columns"),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[0].1, 0.0);
    assert_eq!(
        seen[1].0,
        "repeat 1 of 2, folds 1–5 (batch 1/2); 0 of 10 outer fits done; ComBat round 1/4"
    );
    for want in [
        "repeat 1 of 2, folds 1–5 (batch 1/2); 0 of 10 outer fits done; LASSO + bootstrap round 3",
        "repeat 1 of 2, folds 1–5 (batch 1/2); 0 of 10 outer fits done; base learners round 1",
        "repeat 2 of 2, folds 1–5 (batch 2/2); 5 of 10 outer fits done; meta-model + clinical round 2",
        "pooled metrics (10 of 10 outer fits done)",
    ] {
        assert!(
            seen.iter().any(|(s, _)| s == want),
            "never shown: {want}\n{seen:#?}"
        );
    }
    for w in seen.windows(2) {
        assert!(w[1].1 >= w[0].1, "the fraction went back: {w:?}");
    }
    let last = seen.last().unwrap();
    assert!(last.1 <= 1.0 && last.1 >= 0.99, "{last:?}");
    // Half-way: the second batch's first round is at exactly half of the outer fits.
    let half = seen
        .iter()
        .find(|(s, _)| s.starts_with("repeat 2 of 2") && s.ends_with("ComBat round 1/4"))
        .unwrap();
    assert_eq!(half.1, 0.5);
}
