//! The aggregator crashed at every persisted transition (issue #8 item 1): for each name in
//! `aggregator::failpoint::POINTS` the real `aggregator serve` binary runs a short Table 1 study
//! with `FEDRAD_FAILPOINT=<name>:<k>` and aborts there (as a SIGKILL or a power cut would stop
//! it: no destructor, nothing flushed); it is started again without the variable on the same
//! state directory, and the study completes with exactly the in-process reference result, each
//! round recorded once with one result per site. `restore.replayed` fires while starting up, so
//! that case first kills a plain server mid-study and then crashes the restart itself;
//! `retire.durable` fires after the study finished (its results are durable by then), so that
//! case checks that the restarted server holds it as a summary and still serves it.

mod common;

use aggregator::simulate::PooledTable;
use common::{Consortium, check_results, wait_until};
use federation::engine::StudyState;
use federation::study::{AnalysisSpec, StudySpec, Table1Spec};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

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

const STUDY_TOML: &str = "id = \"table1\"\n[analysis]\nkind = \"table1\"\nlabel_column = \"response\"\nvariables = [\"age\", \"sex\", \"ki67\", \"months_dx_to_tx\"]\ncategorical = [\"sex\"]\n";

fn table() -> PooledTable {
    PooledTable::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv"),
        "site",
    )
    .unwrap()
}

/// The undisturbed run: every site in process, no network, no crash.
fn reference() -> StudyState {
    common::reference(&table(), &spec())
}

/// The consortium of the example cohort, every site allowing the Table 1 study, 60 ms of work
/// per task.
fn consortium(snapshot_interval_secs: f64) -> Consortium {
    Consortium::new(
        &table(),
        &format!("min_count = 1\nallowed_studies = [\"{}\"]\n", spec().hash()),
        snapshot_interval_secs,
        Duration::from_millis(60),
    )
}

/// Crashes `aggregator serve` at the `k`-th hit of `point` during the study, then restarts it.
/// `replays`: the restart must replay stored rounds (the crash came after some rounds were
/// durable and the last snapshot is older).
fn crash_at(point: &str, k: u32, snapshot_interval_secs: f64, replays: bool) {
    assert!(
        aggregator::failpoint::POINTS.contains(&point),
        "{point} is not a failure point"
    );
    let reference = reference();
    // k counts hits of a point that fires at most once per round (results: once per site per
    // round); the study must have rounds left after the crash.
    assert!(
        reference.round > 3,
        "the study is too short ({} rounds) to crash mid-study",
        reference.round
    );
    let c = consortium(snapshot_interval_secs);
    let mut server = c.serve(Some(format!("{point}:{k}")));
    c.wait_listening(&mut server);
    c.submit(STUDY_TOML);
    let exit = server.wait_exit(Duration::from_secs(180));
    assert!(!exit.success(), "{point}: exited normally ({exit})");
    let log = c.log();
    assert!(
        log.contains(&format!("FEDRAD_FAILPOINT: crashing at {point} (hit {k})")),
        "{point}: not stopped by the failure point ({exit}); log:\n{log}"
    );
    assert!(
        !c.results("table1").join("study.json").exists(),
        "{point}: the study finished before the crash"
    );
    let crashed_log_len = log.len();
    c.restart_and_check(&reference, point);
    // The study file is filed as accepted, even when the crash came between registering the
    // study and filing the note (the restart sees the file again).
    let inbox = c.state.join("inbox");
    assert!(
        inbox.join("accepted/table1.toml").exists() && !inbox.join("rejected/table1.toml").exists(),
        "{point}: the submitted study is not filed as accepted: {:?}",
        std::fs::read_to_string(inbox.join("rejected/table1.result"))
    );
    let restart_log = c.log()[crashed_log_len..].to_string();
    if replays {
        assert!(
            restart_log.contains("replayed"),
            "{point}: the restart replayed no stored round:\n{restart_log}"
        );
    }
}

// Snapshots only at submit and finish: the restart replays every stored round since.
const RARE_SNAPSHOTS: f64 = 3600.0;
// A snapshot after every round, so the snapshot points fire mid-study.
const EVERY_ROUND: f64 = 0.0;

#[test]
fn crash_after_the_submission_is_durable() {
    crash_at("submit.persisted", 1, RARE_SNAPSHOTS, false);
}

#[test]
fn crash_after_a_result_is_accepted_in_memory() {
    // 7 sites: the 17th accepted result is the third of round 3.
    crash_at("result.accepted", 17, RARE_SNAPSHOTS, true);
}

#[test]
fn crash_after_a_round_is_written_before_its_flush() {
    crash_at("round.written", 3, RARE_SNAPSHOTS, true);
}

#[test]
fn crash_after_a_round_is_durable() {
    crash_at("round.durable", 3, RARE_SNAPSHOTS, true);
}

#[test]
fn crash_after_a_snapshot_is_written_before_its_flush() {
    crash_at("snapshot.written", 3, EVERY_ROUND, false);
}

#[test]
fn crash_after_a_snapshot_is_durable() {
    crash_at("snapshot.durable", 3, EVERY_ROUND, false);
}

#[test]
fn crash_while_restoring_after_a_kill() {
    let point = "restore.replayed";
    assert!(aggregator::failpoint::POINTS.contains(&point));
    let reference = reference();
    let c = consortium(RARE_SNAPSHOTS);
    // A plain server, SIGKILLed mid-study with several rounds stored since the last snapshot.
    let mut server = c.serve(None);
    c.wait_listening(&mut server);
    c.submit(STUDY_TOML);
    // Round 3: two rounds stored since the submit's snapshot, and margin before the end.
    wait_until("round 3", Duration::from_secs(120), || {
        c.status_round().is_some_and(|(r, _)| r >= 3)
    });
    let (killed_at, finished) = c.status_round().unwrap();
    assert!(!finished && u64::from(reference.round) > killed_at);
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    // The restart crashes right after replaying those rounds, before serving.
    let mut server = c.serve(Some(format!("{point}:1")));
    let exit = server.wait_exit(Duration::from_secs(60));
    assert!(!exit.success(), "{exit}");
    let log = c.log();
    assert!(
        log.contains(&format!("FEDRAD_FAILPOINT: crashing at {point} (hit 1)")),
        "{log}"
    );
    assert!(log.contains("replayed"), "nothing was replayed:\n{log}");
    c.restart_and_check(&reference, point);
}

#[test]
fn crash_after_a_finished_study_is_retired() {
    let point = "retire.durable";
    assert!(aggregator::failpoint::POINTS.contains(&point));
    let reference = reference();
    let c = consortium(RARE_SNAPSHOTS);
    let mut server = c.serve(Some(format!("{point}:1")));
    c.wait_listening(&mut server);
    c.submit(STUDY_TOML);
    let exit = server.wait_exit(Duration::from_secs(180));
    assert!(!exit.success(), "{exit}");
    let log = c.log();
    assert!(
        log.contains(&format!("FEDRAD_FAILPOINT: crashing at {point} (hit 1)")),
        "{log}"
    );
    // The results folder was written and synced before the retirement.
    check_results(&c.results("table1"), &reference, point);
    let crashed_log_len = log.len();
    let started_ms = aggregator::coordinator::now_ms();
    let server = c.serve(None);
    wait_until(
        "the restarted server's status.json",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(c.state.join("status.json"))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["updated_ms"].as_u64())
                .is_some_and(|t| t >= started_ms)
        },
    );
    let restart_log = c.log()[crashed_log_len..].to_string();
    assert!(
        restart_log.contains("loaded 0 studies whole and 1 finished studies as summaries"),
        "the retired study was not loaded as a summary:\n{restart_log}"
    );
    assert_eq!(c.status_round(), Some((u64::from(reference.round), true)));
    let out = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(["results", "--state"])
        .arg(&c.state)
        .arg("table1")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        std::fs::read_to_string(c.results("table1").join("table1.csv")).unwrap()
    );
    drop(server);
    check_results(&c.results("table1"), &reference, point);
}

/// Every point in `POINTS` has a test above: a new point without one fails here.
#[test]
fn every_failure_point_is_covered() {
    let source = include_str!("faults_aggregator.rs");
    for point in aggregator::failpoint::POINTS {
        assert!(
            source.contains(&format!("\"{point}\"")),
            "failure point {point} has no crash test in faults_aggregator.rs"
        );
    }
}
