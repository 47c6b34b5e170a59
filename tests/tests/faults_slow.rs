//! A slow site (issue #8 item 1): one agent takes far longer than the others over every task.
//! The study waits for it while the round is within its deadline — no pause, no study going
//! ahead without it — and ends with the undisturbed result.

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::engine::StudyStatus;
use fedrad_tests::{assert_rounds_counted_once, cohort_example, reference_state, table1_spec};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_site_is_waited_for_without_a_pause_and_changes_nothing() {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let spec = table1_spec();
    let opts = SimOptions {
        min_count: 1,
        // Far above the slow site's delay per round, so waiting for it is within the rules.
        round_deadline: Duration::from_secs(60),
        ..SimOptions::default()
    };
    let mut sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    let slow = sim.sites.iter().position(|s| s.as_str() == "S02").unwrap();
    sim.stop_agent(slow).await;
    let delay = Duration::from_millis(1200);
    let mut slow_opts = opts.agent.clone();
    slow_opts.task_delay = delay;
    let kit = sim.kit(&sim.sites[slow]).join("site.toml");
    sim.start_agent(&kit, slow_opts).unwrap();

    let coordinator = sim.server.coordinator.clone();
    let t0 = Instant::now();
    coordinator.submit(spec.clone()).unwrap();
    // Sample the study until it ends: never paused, and seen waiting on S02 alone.
    let mut waited_on_s02 = 0u32;
    let state = loop {
        let st = coordinator.study("table1").unwrap();
        assert!(
            !matches!(st.status, StudyStatus::Paused { .. }),
            "paused while the slow site was within the deadline: {}",
            st.status.describe()
        );
        if st.status.is_finished() {
            break st;
        }
        if st.missing().iter().map(|s| s.as_str()).eq(["S02"]) {
            waited_on_s02 += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "the study did not finish: {}",
            st.status.describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = t0.elapsed();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    assert!(waited_on_s02 > 0, "never saw a round waiting on S02 alone");
    // A lower bound only (a loaded machine can only make it slower): S02 sat on every round.
    assert!(
        elapsed >= delay * state.round,
        "{} rounds in {elapsed:?}: the slow site was not slow",
        state.round
    );
    let rounds = coordinator.rounds("table1").unwrap();
    sim.shutdown().await;
    assert_rounds_counted_once(&rounds, state.round, &state.sites);
    let reference = reference_state(&table, &spec, 1);
    assert_eq!(state.output, reference.output);
}
