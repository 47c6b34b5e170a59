//! A site that disconnects mid-study: the round waits up to the deadline, then the study is
//! paused with a status naming the missing site; when the site returns, the study completes with
//! the same result as an undisturbed run.

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::engine::StudyStatus;
use federation::local::run_local;
use federation::policy::SitePolicy;
use fedrad_tests::{cohort_example, local_sites, table1_spec};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropout_pauses_naming_the_site_and_resumes_when_it_returns() {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let spec = table1_spec();
    let mut opts = SimOptions {
        min_count: 1,
        round_deadline: Duration::from_millis(800),
        ..SimOptions::default()
    };
    opts.agent.task_delay = Duration::from_millis(30);
    let mut sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    let coordinator = sim.server.coordinator.clone();
    coordinator.submit(spec.clone()).unwrap();

    // Wait for round 2, then take S03 offline.
    let s03 = sim.sites.iter().position(|s| s.as_str() == "S03").unwrap();
    for _ in 0..400 {
        if coordinator.study_status("table1").unwrap().1 >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sim.stop_agent(s03).await;

    // Past the deadline the study pauses and says who is missing — it does not hang silently.
    let mut paused = None;
    for _ in 0..300 {
        let st = coordinator.study("table1").unwrap();
        if let StudyStatus::Paused { missing, .. } = &st.status {
            paused = Some((missing.clone(), st.status.describe()));
            break;
        }
        assert!(
            !st.status.is_finished(),
            "finished without S03: {}",
            st.status.describe()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (missing, text) = paused.expect("the study never paused");
    assert_eq!(
        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["S03"]
    );
    assert!(text.contains("S03"), "{text}");
    let status = coordinator.status();
    let line = &status.studies[0].status;
    assert!(line.contains("paused") && line.contains("S03"), "{line}");

    // S03 comes back; the study resumes and completes.
    let kit = sim.kit(&sim.sites[s03]).join("site.toml");
    sim.start_agent(&kit, opts.agent.clone()).unwrap();
    let state = sim
        .wait_finished("table1", Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    sim.shutdown().await;

    let policy = SitePolicy {
        min_count: 1,
        allowed_studies: vec![spec.hash().0],
        ..SitePolicy::default()
    };
    let reference = run_local(spec, &local_sites(&table, &policy), 100).unwrap();
    assert_eq!(state.output, reference.output);
}
