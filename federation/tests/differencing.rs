//! The differencing guard at the site's gate (`federation::differencing`, issue #8 item 4): two
//! aggregates of one study over patient sets that differ by 1..min_count−1 patients are refused
//! with a message naming the policy; the released sets survive the site memory's persistence;
//! other studies and sets that differ by a whole fold pass.

use federation::differencing::PatientSet;
use federation::policy::SitePolicy;
use federation::site::{SiteMemory, answer_with_memory};
use federation::study::{AnalysisSpec, HarmonizeSpec, LassoSpec, StudySpec, Table1Spec};
use federation::table::SiteTable;
use federation::task::{
    BatchSource, ComBatTask, LassoTask, ResultBody, Table1SummaryTask, Task, TaskBody,
};
use federation::{StudyId, lasso};
use models::lasso::{FitRequest, RequestKind};
use models::sampling::{FoldRef, WeightSpec};

/// `n` patients P000.. with age, a 0/1 response and a feature.
fn table(n: usize, skip: &[usize]) -> SiteTable {
    let rows = (0..n)
        .filter(|i| !skip.contains(i))
        .map(|i| {
            vec![
                format!("P{i:03}"),
                (40 + i).to_string(),
                (i % 2).to_string(),
                format!("{}", (i as f64 * 0.37).sin()),
            ]
        })
        .collect();
    SiteTable::new(
        ["patient_id", "age", "response", "x"]
            .map(String::from)
            .to_vec(),
        rows,
    )
    .unwrap()
    .with_id_column("patient_id")
    .unwrap()
}

fn table1_spec(id: &str) -> StudySpec {
    StudySpec {
        id: StudyId::new(id).unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: false,
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: vec!["age".into()],
            categorical: vec![],
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn task(spec: &StudySpec, round: u32, body: TaskBody) -> Task {
    Task {
        study_id: spec.id.clone(),
        study_hash: spec.hash(),
        study_spec_json: spec.canonical_json(),
        round,
        body,
    }
}

fn summary() -> TaskBody {
    TaskBody::Table1Summary(Table1SummaryTask {
        continuous: vec!["age".into()],
        categorical: vec![],
    })
}

fn policy(min_count: u64) -> SitePolicy {
    SitePolicy {
        min_count,
        allow_all_studies: true,
        max_params_per_row: f64::INFINITY,
        ..SitePolicy::default()
    }
}

fn refusal(body: &ResultBody) -> Option<&str> {
    match body {
        ResultBody::Failure(f) => Some(&f.message),
        _ => None,
    }
}

#[test]
fn an_aggregate_over_the_rows_minus_one_patient_is_refused_and_the_refusal_names_the_policy() {
    let spec = table1_spec("t1");
    let policy = policy(5);
    let mut memory = SiteMemory::default();
    let full = table(20, &[]);
    let a = answer_with_memory(&task(&spec, 1, summary()), &full, &policy, &mut memory);
    assert!(refusal(&a.result.body).is_none(), "{:?}", a.result.body);
    assert!(memory.take_dirty(), "a new released set must be persisted");
    // The same rows again (a later round, a retry): answered, nothing new to persist.
    let again = answer_with_memory(&task(&spec, 1, summary()), &full, &policy, &mut memory);
    assert_eq!(again.result, a.result);
    assert!(!memory.take_dirty());

    // The table lost one patient (say the agent restarted on an edited table): refused.
    let minus_one = table(20, &[7]);
    let r = answer_with_memory(&task(&spec, 2, summary()), &minus_one, &policy, &mut memory);
    let msg = refusal(&r.result.body).expect("the guard must refuse");
    assert!(
        msg.contains("differencing guard") && msg.contains("min_count = 5"),
        "{msg}"
    );
    assert!(msg.contains("1 patient(s) different"), "{msg}");
    // No patient id or value is named in what leaves the site.
    assert!(!msg.contains("P007") && !msg.contains("47"), "{msg}");
    // Any request kind over that set is refused, not only the one first asked.
    let h = answer_with_memory(
        &task(
            &spec,
            2,
            TaskBody::Histogram(federation::task::HistogramTask { variables: vec![] }),
        ),
        &minus_one,
        &policy,
        &mut memory,
    );
    assert!(refusal(&h.result.body).is_some_and(|m| m.contains("differencing guard")));
    // A patient added is the same risk.
    let plus_one = table(21, &[]);
    let r = answer_with_memory(&task(&spec, 2, summary()), &plus_one, &policy, &mut memory);
    assert!(refusal(&r.result.body).is_some_and(|m| m.contains("differencing guard")));

    // A difference of min_count patients or more is not a differencing risk under the policy.
    let minus_five = table(20, &[0, 3, 6, 9, 12]);
    let r = answer_with_memory(
        &task(&spec, 2, summary()),
        &minus_five,
        &policy,
        &mut memory,
    );
    assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
}

#[test]
fn released_sets_survive_the_site_memory_on_disk_and_are_kept_per_study() {
    let policy = policy(5);
    let spec = table1_spec("t1");
    let mut memory = SiteMemory::default();
    let a = answer_with_memory(
        &task(&spec, 1, summary()),
        &table(20, &[]),
        &policy,
        &mut memory,
    );
    assert!(refusal(&a.result.body).is_none());
    // The agent persists the memory as JSON and reads it back after a restart.
    let json = serde_json::to_string(&memory).unwrap();
    assert!(
        !json.contains("P00"),
        "the ledger keeps keys, not patient ids"
    );
    let mut restored: SiteMemory = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, memory);
    let r = answer_with_memory(
        &task(&spec, 2, summary()),
        &table(20, &[4]),
        &policy,
        &mut restored,
    );
    assert!(refusal(&r.result.body).is_some_and(|m| m.contains("differencing guard")));
    // An older memory file (before the guard existed) still loads, with empty ledgers.
    let old: SiteMemory = serde_json::from_str(r#"{"studies":{}}"#).unwrap();
    assert!(old.released.is_empty());

    // Another study has its own ledger (the site admin approved each study's hash).
    let other = table1_spec("t2");
    let r = answer_with_memory(
        &task(&other, 1, summary()),
        &table(20, &[4]),
        &policy,
        &mut restored,
    );
    assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
    // A refused request records nothing: the full table is still the only set of study 1.
    let r = answer_with_memory(
        &task(&spec, 3, summary()),
        &table(20, &[]),
        &policy,
        &mut restored,
    );
    assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
}

#[test]
fn min_count_one_turns_the_guard_off() {
    let policy = policy(1);
    let spec = table1_spec("t1");
    let mut memory = SiteMemory::default();
    for skip in [vec![], vec![3], vec![3, 4]] {
        let r = answer_with_memory(
            &task(&spec, 1, summary()),
            &table(20, &skip),
            &policy,
            &mut memory,
        );
        assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
    }
}

#[test]
fn combat_rounds_over_the_same_rows_pass_and_a_changed_table_is_refused() {
    let spec = StudySpec {
        id: StudyId::new("h").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(HarmonizeSpec {
            secure_aggregation: false,
            features: vec!["x".into()],
            batch_column: None,
            covariates: vec!["age".into()],
            categorical: vec![],
            mode: Default::default(),
            on_masked_dropout: Default::default(),
        }),
    };
    let combat = TaskBody::ComBatLevels(ComBatTask {
        batch: BatchSource::Label("s1".into()),
        design: None,
        fit: None,
        global: None,
        options: None,
    });
    let policy = policy(5);
    let mut memory = SiteMemory::default();
    for round in 1..=3 {
        let r = answer_with_memory(
            &task(&spec, round, combat.clone()),
            &table(20, &[]),
            &policy,
            &mut memory,
        );
        assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
    }
    let r = answer_with_memory(
        &task(&spec, 4, combat),
        &table(20, &[19]),
        &policy,
        &mut memory,
    );
    assert!(refusal(&r.result.body).is_some_and(|m| m.contains("differencing guard")));
}

/// LASSO fits over different *outer* populations (the rows an outer fold leaves in) are
/// compared: two outer folds differ by two folds and pass; an outer training set against all
/// rows differs by one fold, refused when the fold is smaller than min_count. Inner CV folds
/// and bootstrap replicates are resamplings within one population and are not compared.
#[test]
fn lasso_outer_populations_are_guarded_inner_folds_and_bootstraps_are_not() {
    let spec = LassoSpec {
        label_column: "response".into(),
        positive_label: "1".into(),
        negative_label: "0".into(),
        features: vec!["x".into()],
        nfolds: 3,
        foldid_column: None,
        nlambda: 10,
        bootstrap: 0,
        top_k: 1,
        seed: 3,
        secure_aggregation: false,
        on_masked_dropout: Default::default(),
    };
    let study = StudySpec {
        id: StudyId::new("l").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Lasso(spec.clone()),
    };
    let t = table(12, &[]);
    let key = 99;
    let fit = |fit_id, weights| FitRequest {
        fit_id,
        weights,
        kind: RequestKind::Moments,
    };
    let outer = |fold| Some(FoldRef { scheme: 0, fold });
    let body = |requests| {
        TaskBody::LassoSums(LassoTask {
            site_key: key,
            requests,
        })
    };
    let policy = policy(5);
    let mut memory = SiteMemory::default();
    // Inner folds and a bootstrap replicate within all rows: one population, answered.
    let r = answer_with_memory(
        &task(
            &study,
            1,
            body(vec![
                fit(0, WeightSpec::default()),
                fit(
                    1,
                    WeightSpec {
                        exclude: outer(0),
                        ..WeightSpec::default()
                    },
                ),
                fit(
                    2,
                    WeightSpec {
                        bootstrap: Some((3, 1)),
                        ..WeightSpec::default()
                    },
                ),
            ]),
        ),
        &t,
        &policy,
        &mut memory,
    );
    assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
    // The fold sizes of this site: 12 rows in 3 folds of 4 (< min_count 5).
    let data = lasso::site_data(&t, &spec, key).unwrap();
    assert!(data.fold_schemes[0].iter().filter(|&&f| f == 0).count() < 5);
    // An outer training set (all rows but fold 0) against all rows: 4 patients apart, refused.
    let r = answer_with_memory(
        &task(
            &study,
            2,
            body(vec![fit(
                0,
                WeightSpec {
                    outer: outer(0),
                    ..WeightSpec::default()
                },
            )]),
        ),
        &t,
        &policy,
        &mut memory,
    );
    assert!(
        refusal(&r.result.body).is_some_and(|m| m.contains("4 patient(s) different")),
        "{:?}",
        r.result.body
    );
    // In a fresh study, two outer training sets (8 patients apart) pass together.
    let mut fresh = SiteMemory::default();
    let r = answer_with_memory(
        &task(
            &study,
            1,
            body(vec![
                fit(
                    0,
                    WeightSpec {
                        outer: outer(0),
                        ..WeightSpec::default()
                    },
                ),
                fit(
                    1,
                    WeightSpec {
                        outer: outer(1),
                        ..WeightSpec::default()
                    },
                ),
            ]),
        ),
        &t,
        &policy,
        &mut fresh,
    );
    assert!(refusal(&r.result.body).is_none(), "{:?}", r.result.body);
    assert_eq!(fresh.released.values().next().unwrap().len(), 2);
}

#[test]
fn patient_sets_are_keyed_by_patient_id_not_row_order() {
    let t = table(10, &[]);
    let mut rows: Vec<Vec<String>> = (0..10)
        .rev()
        .map(|i| vec![format!("P{i:03}"), "1".into(), "0".into(), "0".into()])
        .collect();
    rows.rotate_left(2);
    let shuffled = SiteTable::new(
        ["patient_id", "age", "response", "x"]
            .map(String::from)
            .to_vec(),
        rows,
    )
    .unwrap()
    .with_id_column("patient_id")
    .unwrap();
    assert_eq!(PatientSet::all_rows(&t), PatientSet::all_rows(&shuffled));
}
