//! A site agent killed mid-round (issue #8 item 1): one site runs as its own agent process (this
//! executable's `site-agent run`, the same `site_agent` code as the `site-agent` binary), is
//! SIGKILLed while it holds a task, and is started again on the same kit (state directory,
//! audit log). The study completes with the in-process reference result, every round counted
//! once, and the site's audit chain intact.

mod common;

use aggregator::simulate::{PooledTable, SimOptions, Simulation};
use federation::engine::StudyStatus;
use federation::study::{AnalysisSpec, StudySpec, Table1Spec};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn spec() -> StudySpec {
    StudySpec {
        id: federation::StudyId::new("table1").unwrap(),
        title: String::new(),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: false,
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: ["age", "sex", "ki67", "months_dx_to_tx"]
                .map(String::from)
                .to_vec(),
            categorical: vec!["sex".into()],
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    }
}

/// A site-agent process, killed when the test ends however it ends.
struct AgentProcess(Child);

impl AgentProcess {
    fn spawn(site_toml: &Path, task_delay_ms: u64, log: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .args(["site-agent", "run", "--config"])
            .arg(site_toml)
            .arg("--task-delay-ms")
            .arg(task_delay_ms.to_string())
            // The agent says (at debug level) when it takes a task: that is when to kill it.
            .env("RUST_LOG", "info,site_agent=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Self(child)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rounds for which the agent's log says it took the task, in log order.
fn rounds_received(log: &Path) -> Vec<u32> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("study table1 round ")?;
            let (round, tail) = rest.split_once(':')?;
            tail.contains("task received").then(|| round.parse().ok())?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_agent_killed_while_holding_a_task_restarts_and_the_result_is_unchanged() {
    let table = PooledTable::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv"),
        "site",
    )
    .unwrap();
    let spec = spec();
    let mut opts = SimOptions {
        min_count: 1,
        // The restart is quick; a pause would be a different test (dropout.rs).
        round_deadline: Duration::from_secs(300),
        ..SimOptions::default()
    };
    opts.agent.backoff_max = Duration::from_millis(300);
    let mut sim = Simulation::start(&table, &spec, &opts).await.unwrap();
    // S02 leaves the in-process agents and runs as a process; its answers take 2 s, a window
    // in which it has taken a task and not yet answered it.
    let s02 = sim.sites.iter().position(|s| s.as_str() == "S02").unwrap();
    sim.stop_agent(s02).await;
    let kit = sim.kit(&sim.sites[s02]);
    let log = sim.dir.path().join("s02-agent.log");
    let mut agent = AgentProcess::spawn(&kit.join("site.toml"), 2000, &log);

    let coordinator = sim.server.coordinator.clone();
    coordinator.submit(spec.clone()).unwrap();

    // Kill it as soon as it holds a task of round 2 or later.
    let t0 = Instant::now();
    let held = loop {
        if let Some(&r) = rounds_received(&log).iter().rev().find(|&&r| r >= 2) {
            break r;
        }
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "the agent process exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "S02 never took a task of round 2; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    agent.0.kill().unwrap(); // SIGKILL: nothing of the agent's shutdown runs
    let exit = agent.0.wait().unwrap();
    assert!(!exit.success(), "the agent was not killed: {exit}");
    // It died holding the task: the aggregator has no answer from S02 for that round.
    let st = coordinator.study("table1").unwrap();
    assert_eq!(st.round, held, "the round moved on without S02");
    assert!(
        !st.received.keys().any(|s| s.as_str() == "S02"),
        "S02 answered round {held} before it was killed; lengthen its delay"
    );
    assert!(!st.status.is_finished());
    let audited_before = site_agent::audit::verify(&kit.join("audit.jsonl")).unwrap();
    assert!(
        audited_before.iter().all(|e| e.round < held),
        "S02 logged an answer to round {held} before the kill"
    );

    // Restart on the same kit: same state directory, same audit log.
    drop(agent);
    let agent = AgentProcess::spawn(&kit.join("site.toml"), 0, &log);
    let state = sim
        .wait_finished("table1", Duration::from_secs(180))
        .await
        .unwrap();
    assert_eq!(
        state.status,
        StudyStatus::Completed,
        "{}",
        state.status.describe()
    );
    let rounds = coordinator.rounds("table1").unwrap();
    // Read the agent's log and audit before the simulation's folder goes away.
    drop(agent);
    let received = rounds_received(&log);
    let audited = site_agent::audit::verify(&kit.join("audit.jsonl")).unwrap();
    sim.shutdown().await;

    // No round lost or double-counted at the aggregator.
    assert_eq!(
        rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
        (1..=state.round).collect::<Vec<_>>()
    );
    for r in &rounds {
        assert!(r.bytes.keys().eq(state.sites.iter()), "round {}", r.round);
        // The results themselves only where the store has not pruned them.
        assert!(
            r.results.is_empty() || r.results.keys().eq(state.sites.iter()),
            "round {}",
            r.round
        );
    }
    // The restarted agent took the held round again and answered each round exactly once;
    // the kill left its audit chain intact.
    assert_eq!(
        received.iter().filter(|&&r| r == held).count(),
        2,
        "round {held} should be taken before and after the kill: {received:?}"
    );
    assert_eq!(
        audited.iter().map(|e| e.round).collect::<Vec<_>>(),
        (1..=state.round).collect::<Vec<_>>(),
        "S02's audit log"
    );

    // The undisturbed reference.
    let reference = common::reference(&table, &spec);
    assert_eq!(state.output, reference.output);
    assert_eq!(state.round, reference.round);
}
