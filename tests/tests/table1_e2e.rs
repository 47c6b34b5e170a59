//! The federated Table 1 over loopback mutual TLS (a real aggregator, one real agent per site)
//! equals the in-process reference run bit for bit, which in turn equals the pooled scipy values
//! (see federation/tests/table1_pooled.rs); every site's audit log verifies; and every result any
//! site sent, as stored by the aggregator, releases no count below the site's `min_count`.

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::engine::{StudyOutput, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::task::{ResultBody, TaskResult};
use fedrad_tests::{cohort_example, local_sites, repo_root, table1_spec};
use std::collections::BTreeSet;
use std::time::Duration;

async fn federated(
    min_count: u64,
) -> (
    federation::engine::StudyState,
    Vec<federation::engine::RoundRecord>,
) {
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let spec = table1_spec();
    let opts = SimOptions {
        min_count,
        ..SimOptions::default()
    };
    let sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    let state = sim.run_study(spec, Duration::from_secs(120)).await.unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    // Every site logged each message it sent, and the chain verifies.
    for site in &sim.sites {
        let entries = site_agent::audit::verify(&sim.kit(site).join("audit.jsonl")).unwrap();
        assert_eq!(
            entries.len() as u32,
            state.round,
            "site {site}: one audit line per round"
        );
    }
    let rounds = sim.server.coordinator.rounds("table1").unwrap();
    sim.shutdown().await;
    (state, rounds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federated_table1_over_mtls_equals_the_reference_run() {
    let (state, rounds) = federated(1).await;
    let table = PooledTable::read(&cohort_example(), "site").unwrap();
    let spec = table1_spec();
    let policy = SitePolicy {
        allowed_studies: vec![spec.hash().0],
        min_count: 1,
        ..SitePolicy::default()
    };
    let local = run_local(spec, &local_sites(&table, &policy), 100).unwrap();
    assert_eq!(
        state.output, local.output,
        "network run differs from the in-process run"
    );
    assert_eq!(
        rounds.len() as u32,
        state.round,
        "every round's inputs and outputs are stored"
    );

    // Spot-check against the pooled golden values too.
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/golden/table1_cohort_example.json"))
            .unwrap(),
    )
    .unwrap();
    let Some(StudyOutput::Table1(t)) = &state.output else {
        panic!()
    };
    let csv = t.to_csv();
    let p = golden["continuous"]["age"]["mann_whitney"]["p_value"]
        .as_f64()
        .unwrap();
    let row = csv.lines().find(|l| l.starts_with("age,median")).unwrap();
    let got: f64 = row.rsplit(',').next().unwrap().parse().unwrap();
    assert!((got - p).abs() < 1e-8, "{row} vs {p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_result_message_carries_only_aggregates_over_min_count() {
    let (state, rounds) = federated(5).await;
    let mut kinds = BTreeSet::new();
    for r in &rounds {
        for body in r.results.values() {
            kinds.insert(body.kind());
            let result = TaskResult {
                study_id: state.spec.id.clone(),
                round: r.round,
                body: body.clone(),
            };
            if let Some(min) = result.smallest_released_count() {
                assert!(min >= 5, "round {} released a count of {min}", r.round);
            }
            // Row-level data would show up as per-patient values: none of the result types has a
            // field for them, and histogram nodes are counts over ≥ min_count patients.
            if let ResultBody::Histogram(h) = body {
                for v in &h.variables {
                    for g in &v.groups {
                        assert!(g.iter().all(|(_, c)| *c >= 5));
                    }
                }
            }
        }
    }
    assert!(
        kinds.contains("table1_summary") && kinds.contains("histogram"),
        "{kinds:?}"
    );
}
