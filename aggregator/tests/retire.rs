//! Finished studies leave the aggregator's memory (issue #8, load): once a study's results
//! folder is durable the coordinator keeps only a summary, and everything that used the whole
//! state still works from disk — `study()` (the archived final snapshot), `status.json`, the
//! results folder, a retried push of the last round (acknowledged as a duplicate, a different
//! payload refused), a resubmitted study id (refused), and a restart (summaries only).

use aggregator::config::AggregatorConfig;
use aggregator::coordinator::{CoordError, Residency};
use aggregator::server::Server;
use aggregator::simulate::{SimOptions, write_site_kit};
use certs::{Ca, Validity};
use federation::engine::{Accepted, EngineError, StudyStatus};
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;
use federation::task::TaskResult;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(300), "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_studies_are_served_from_disk_before_and_after_a_restart() {
    let table = aggregator::bench::synthetic_table(3, 150, 4, 11);
    // Table 1 (its round log is kept for the report), ComBat and a small LASSO, twice over.
    let specs: Vec<StudySpec> = (0..2)
        .flat_map(|w| aggregator::bench::load_studies(&table, 3, w))
        .collect();
    let hashes: Vec<String> = specs.iter().map(|s| s.hash().0).collect();
    let policy_toml = format!(
        "min_count = 5\nmax_params_per_row = inf\nallowed_studies = [{}]\n",
        hashes
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut ca = Ca::init(&root.join("ca"), "test CA", 30).unwrap();
    let agg = root.join("aggregator");
    ca.write_aggregator_kit(
        &agg,
        &["localhost".into()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Validity::days(2),
    )
    .unwrap();
    let mut cfg = AggregatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: agg.join("state"),
        enrolled_sites: table.by_site.keys().cloned().collect(),
        round_deadline_ms: 300_000,
        snapshot_interval_ms: aggregator::coordinator::DEFAULT_SNAPSHOT_INTERVAL_MS,
        tls: protocol::tls::ServerTlsFiles {
            ca_cert: agg.join("ca.pem"),
            cert: agg.join("aggregator.pem"),
            key: agg.join("aggregator.key"),
            crl: Some(ca.crl_path()),
        },
    };
    let server = Server::start(&cfg).await.unwrap();
    let url = format!("https://localhost:{}", server.addr.port());
    let mut opts = SimOptions::default();
    opts.agent.poll_wait = Duration::from_secs(2);
    let mut stops = Vec::new();
    for (site, rows) in &table.by_site {
        let kit = write_site_kit(
            &mut ca,
            &root.join("kits"),
            site,
            &table.header,
            rows,
            &url,
            &policy_toml,
            &opts,
        )
        .unwrap();
        let agent = site_agent::Agent::new(
            site_agent::SiteConfig::load(&kit.join("site.toml")).unwrap(),
            opts.agent.clone(),
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(agent.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        stops.push((handle, tx));
    }

    let coordinator = server.coordinator.clone();
    for spec in &specs {
        coordinator.submit(spec.clone()).unwrap();
    }
    let all_retired = Residency {
        running: 0,
        finished_in_memory: 0,
        retired: specs.len(),
    };
    wait_for("every study retired", || {
        coordinator.residency() == all_retired
    })
    .await;
    for (handle, tx) in stops {
        let _ = tx.send(true);
        let _ = handle.await;
    }

    // The references: every site in process, same rows and policy.
    let policy = SitePolicy {
        min_count: 5,
        max_params_per_row: f64::INFINITY,
        allowed_studies: hashes.clone(),
        ..SitePolicy::default()
    };
    let sites: BTreeMap<_, _> = table
        .by_site
        .iter()
        .map(|(s, rows)| {
            let t = SiteTable::new(table.header.clone(), rows.clone())
                .unwrap()
                .with_id_column("patient_id")
                .unwrap();
            (s.clone(), (t, policy.clone()))
        })
        .collect();
    let references: Vec<_> = specs
        .iter()
        .map(|spec| federation::local::run_local(spec.clone(), &sites, 100_000).unwrap())
        .collect();

    // Retired: the whole state comes back from the archive, equal to the reference's output.
    let check_states = |c: &aggregator::coordinator::Coordinator, when: &str| {
        for (spec, reference) in specs.iter().zip(&references) {
            let id = spec.id.as_str();
            let state = c
                .study(id)
                .unwrap_or_else(|| panic!("{when}: no state for {id}"));
            assert_eq!(state.status, StudyStatus::Completed, "{when}: {id}");
            assert_eq!(state.round, reference.round, "{when}: {id}");
            assert_eq!(state.output, reference.output, "{when}: {id}");
            assert_eq!(
                c.study_status(id),
                Some((StudyStatus::Completed, reference.round))
            );
            assert_eq!(c.study_hash(id), Some(spec.hash()));
            let results = aggregator::results::results_dir(&cfg.state_dir, id);
            let output: federation::engine::StudyOutput = serde_json::from_str(
                &std::fs::read_to_string(results.join("output.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(Some(output), reference.output, "{when}: {id} output.json");
        }
    };
    check_states(&coordinator, "retired");
    let status_before = coordinator.status().studies;
    assert_eq!(status_before.len(), specs.len());
    assert!(status_before.iter().all(|s| s.finished && !s.failed));

    // A retried push of Table 1's last round (its log is kept): a duplicate; another payload for
    // the same key is refused; the study is not resubmittable.
    let t1 = &specs[0];
    let rounds = coordinator.rounds(t1.id.as_str()).unwrap();
    let last = rounds.last().unwrap();
    let (site, body) = last.results.iter().next().unwrap();
    let retry = TaskResult {
        study_id: t1.id.clone(),
        round: last.round,
        body: body.clone(),
    };
    assert_eq!(
        coordinator.push(site, retry.clone(), 10).unwrap(),
        Accepted::Duplicate
    );
    let other = last.results.iter().nth(1).unwrap().1.clone();
    let conflict = coordinator.push(
        site,
        TaskResult {
            body: other,
            ..retry
        },
        10,
    );
    assert!(
        matches!(
            conflict,
            Err(CoordError::Engine(EngineError::Conflict { .. }))
        ),
        "{conflict:?}"
    );
    assert!(matches!(
        coordinator.submit(t1.clone()),
        Err(CoordError::Duplicate(_))
    ));
    assert!(coordinator.pull(site).unwrap().is_none());
    assert_eq!(coordinator.residency(), all_retired);

    // A restart loads summaries only, and serves everything as before.
    drop(coordinator);
    server.shutdown().await;
    cfg.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = Server::start(&cfg).await.unwrap();
    let coordinator = server.coordinator.clone();
    assert_eq!(coordinator.residency(), all_retired);
    assert_eq!(coordinator.status().studies, status_before);
    check_states(&coordinator, "after the restart");
    drop(coordinator);
    server.shutdown().await;
}
