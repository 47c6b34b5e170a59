//! Dropout in a masked round over loopback mutual TLS (a real aggregator, one real agent per
//! site): a secure pipeline study with `on_masked_dropout = "continue_without_site"` on 4 sites;
//! one agent is stopped during the masked meta-model rounds. Past the round deadline the
//! aggregator leaves that site out, restarts the round without it under a fresh round id and the
//! 3 survivors finish the study; the site is named in the state, the output and the report, the
//! restarted agent gets no more work, and every round is recorded once with one result per
//! remaining site.

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::SiteId;
use federation::engine::{StudyOutput, StudyStatus};
use federation::study::StudySpec;
use federation::task::TaskBody;
use fedrad_tests::cohort_example;
use std::time::Duration;

fn spec() -> StudySpec {
    StudySpec::from_toml(
        r#"
id = "secure-pipeline"
[analysis]
kind = "pipeline"
secure_aggregation = true
on_masked_dropout = "continue_without_site"
label_column = "response"
features = ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Sphericity", "original_firstorder_Entropy", "original_glszm_ZoneEntropy", "original_shape_Elongation"]
[analysis.cv]
seed = 3
repeats = 1
outer_folds = 3
inner_folds = 3
repeats_per_batch = 1
[analysis.lasso]
nfolds = 3
nlambda = 12
bootstrap = 3
top_k = 3
[analysis.learners]
min_train_rows = 8
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.learners.search.forest]
n_trees = { kind = "fixed", value = 5.0 }
[analysis.learners.search.gbm]
n_rounds = { kind = "int_uniform", low = 5, high = 8 }
[analysis.meta]
hidden = [3]
alpha = 0.01
[analysis.clinical]
numeric = ["ki67"]
[analysis.metrics]
secure_min_count = 5
"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_stopped_in_a_masked_round_is_left_out_and_the_survivors_finish() {
    let mut table = PooledTable::read(&cohort_example(), "site").unwrap();
    // Four sites: the smallest set from which one can drop and leave secure aggregation's 3.
    let keep: Vec<SiteId> = table.by_site.keys().take(4).cloned().collect();
    table.by_site.retain(|s, _| keep.contains(s));
    table.order.retain(|(s, _)| keep.contains(s));
    let spec = spec();
    let mut opts = SimOptions {
        min_count: 5,
        max_params_per_row: Some(f64::INFINITY),
        share_models: true,
        // Long enough for the plain rounds' training in a debug build to finish without
        // pausing for long; a pause in a plain round resumes by itself when the answers come.
        round_deadline: Duration::from_secs(3),
        ..SimOptions::default()
    };
    opts.agent.poll_wait = Duration::from_millis(100);
    let mut sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    let coordinator = sim.server.coordinator.clone();
    coordinator.submit(spec.clone()).unwrap();
    let victim = keep[2].clone();
    let index = sim.sites.iter().position(|s| *s == victim).unwrap();

    // Wait for the first masked meta-model round, then take the victim offline: it may still
    // answer the round in hand, but not the following masked rounds (the MLP needs many).
    let mut masked_round = None;
    for _ in 0..12_000 {
        let st = coordinator.study("secure-pipeline").unwrap();
        assert!(!st.status.is_finished(), "{}", st.status.describe());
        if st.tasks.values().any(|t| {
            matches!(t, TaskBody::Masked(m) if matches!(m.shape, federation::secure::SumShape::PipelineFit { .. }))
        }) {
            masked_round = Some(st.round);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let masked_round = masked_round.expect("no masked meta-model round within 4 minutes");
    sim.stop_agent(index).await;

    let state = sim
        .wait_finished("secure-pipeline", Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    assert_eq!(state.dropped.len(), 1, "{:?}", state.dropped);
    let d = &state.dropped[0];
    assert_eq!(d.site, victim);
    assert!(
        d.round >= masked_round,
        "dropped at {} before {masked_round}",
        d.round
    );
    assert!(!state.sites.contains(&victim));
    let Some(StudyOutput::Pipeline(out)) = &state.output else {
        panic!("a pipeline output")
    };
    let entry = out
        .cv
        .sites
        .iter()
        .find(|s| s.site == victim.as_str())
        .unwrap();
    assert!(entry.dropped.is_some(), "{entry:?}");
    assert!(
        out.metrics
            .notes
            .iter()
            .any(|n| n.contains(&format!("site {victim} was left out"))),
        "{:?}",
        out.metrics.notes
    );
    assert_eq!(out.metrics.models.len(), 2, "{:?}", out.metrics.notes);

    // The victim's agent comes back: it gets no task of this study and nothing changes.
    let kit = sim.kit(&victim).join("site.toml");
    sim.start_agent(&kit, opts.agent.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = coordinator.study("secure-pipeline").unwrap();
    assert_eq!(after.output, state.output);
    assert!(after.task_for(&victim).is_none());

    // Every recorded round (the bulky results are pruned, their kinds kept): one result per
    // site taking part then; none from the victim after it was dropped, and the abandoned
    // round number never recorded.
    let rounds = coordinator.rounds("secure-pipeline").unwrap_or_default();
    eprintln!("{} rounds recorded; dropped at {}", rounds.len(), d.round);
    for r in &rounds {
        if r.round > d.round {
            assert!(!r.kinds.contains_key(&victim), "round {}", r.round);
            assert_eq!(r.kinds.len(), 3, "round {}", r.round);
        } else {
            assert_eq!(r.kinds.len(), 4, "round {}", r.round);
        }
        assert_ne!(r.round, d.round, "the abandoned attempt was recorded");
    }
    sim.shutdown().await;
}
