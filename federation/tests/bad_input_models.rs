//! Bad input to the harmonisation and LASSO studies: each ends with a clear, single reason (or a
//! documented handling), never a panic or a half-written result.

use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, LassoSpec, StudySpec};
use federation::table::SiteTable;
use federation::{SiteId, StudyId};
use std::collections::BTreeMap;

/// Three sites of 12 rows: id, response, age, scanner, f1, f2, f3.
fn sites(edit: impl Fn(usize, usize, &mut Vec<String>)) -> BTreeMap<SiteId, SiteTable> {
    let header: Vec<String> = ["patient_id", "response", "age", "flag", "f1", "f2", "f3"]
        .map(String::from)
        .to_vec();
    (0..3)
        .map(|s| {
            let rows = (0..12)
                .map(|i| {
                    let x = (s * 12 + i) as f64;
                    let mut r = vec![
                        format!("P{s}{i:02}"),
                        (i % 2).to_string(),
                        (40.0 + (x * 7.0) % 30.0).to_string(),
                        s.to_string(),
                        (x.sin() * 3.0 + s as f64).to_string(),
                        ((x * 0.7).cos() * 2.0 - s as f64 * 0.5).to_string(),
                        ((x * 1.3).sin() + (i % 2) as f64 * 0.8).to_string(),
                    ];
                    edit(s, i, &mut r);
                    r
                })
                .collect();
            (
                SiteId::new(format!("S0{}", s + 1)).unwrap(),
                SiteTable::new(header.clone(), rows).unwrap(),
            )
        })
        .collect()
}

fn run(analysis: AnalysisSpec, tables: BTreeMap<SiteId, SiteTable>) -> StudyState {
    let spec = StudySpec {
        id: StudyId::new("t").unwrap(),
        title: String::new(),
        analysis,
    };
    let policy = SitePolicy {
        min_count: 3,
        max_params_per_row: f64::INFINITY,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    };
    let sites = tables
        .into_iter()
        .map(|(s, t)| (s, (t, policy.clone())))
        .collect();
    run_local(spec, &sites, 500).unwrap()
}

fn combat(covariates: &[&str]) -> AnalysisSpec {
    AnalysisSpec::Harmonize(HarmonizeSpec {
        secure_aggregation: false,
        features: vec!["f1".into(), "f2".into(), "f3".into()],
        batch_column: None,
        covariates: covariates.iter().map(|c| c.to_string()).collect(),
        categorical: vec![],
        mode: HarmonizeMode::Parametric,
        on_masked_dropout: Default::default(),
    })
}

fn failed(state: &StudyState) -> String {
    match &state.status {
        StudyStatus::Failed { reason } => reason.clone(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn a_missing_feature_value_names_the_column_not_the_patient() {
    let state = run(
        combat(&["age"]),
        sites(|s, i, r| {
            if s == 1 && i == 4 {
                r[5] = "NA".into()
            }
        }),
    );
    let reason = failed(&state);
    assert!(
        reason.contains("S02") && reason.contains("\"f2\"") && reason.contains("missing"),
        "{reason}"
    );
    assert!(!reason.contains("P104"), "{reason}");
    assert!(state.output.is_none());
}

#[test]
fn a_design_collinear_with_the_batch_is_reported_as_singular() {
    // `flag` equals the site index: it is a linear combination of the batch indicators.
    let state = run(combat(&["flag"]), sites(|_, _, _| {}));
    let reason = failed(&state);
    assert!(reason.contains("W'W"), "{reason}");
}

#[test]
fn a_feature_constant_within_a_batch_is_left_unadjusted_as_sva_does() {
    let state = run(
        combat(&["age"]),
        sites(|s, _, r| {
            if s == 2 {
                r[4] = "1.5".into()
            }
        }),
    );
    let Some(StudyOutput::Harmonize(h)) = &state.output else {
        panic!("{:?}", state.status)
    };
    assert_eq!(h.model.global.fit.unadjusted, vec![true, false, false]);
}

fn lasso() -> AnalysisSpec {
    AnalysisSpec::Lasso(LassoSpec {
        label_column: "response".into(),
        positive_label: "1".into(),
        negative_label: "0".into(),
        features: vec!["f1".into(), "f2".into(), "f3".into()],
        nfolds: 3,
        foldid_column: None,
        nlambda: 20,
        bootstrap: 4,
        top_k: 2,
        seed: 3,
        secure_aggregation: false,
        on_masked_dropout: Default::default(),
    })
}

#[test]
fn a_site_with_one_class_still_contributes_to_the_lasso() {
    // Site S03's rows are all non-responders: its sums are still valid for the pooled fit.
    let state = run(
        lasso(),
        sites(|s, _, r| {
            if s == 2 {
                r[1] = "0".into()
            }
        }),
    );
    assert!(
        matches!(state.output, Some(StudyOutput::Lasso(_))),
        "{:?}",
        state.status
    );
}

#[test]
fn a_label_that_is_neither_class_is_refused_without_the_value() {
    let state = run(
        lasso(),
        sites(|s, i, r| {
            if s == 0 && i == 3 {
                r[1] = "yes".into()
            }
        }),
    );
    let reason = failed(&state);
    assert!(
        reason.contains("S01") && reason.contains("\"response\""),
        "{reason}"
    );
    assert!(!reason.contains("yes"), "{reason}");
}
