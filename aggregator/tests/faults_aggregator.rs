//! The aggregator crashed at every persisted transition (issue #8 item 1): for each name in
//! `aggregator::failpoint::POINTS` the real `aggregator serve` binary runs a short Table 1 study
//! with `FEDRAD_FAILPOINT=<name>:<k>` and aborts there (as a SIGKILL or a power cut would stop
//! it: no destructor, nothing flushed); it is started again without the variable on the same
//! state directory, and the study completes with exactly the in-process reference result, each
//! round recorded once with one result per site. `restore.replayed` fires while starting up, so
//! that case first kills a plain server mid-study and then crashes the restart itself.

mod common;

use aggregator::simulate::{PooledTable, SimOptions, write_site_kit};
use certs::{Ca, Validity};
use federation::engine::StudyState;
use federation::study::{AnalysisSpec, StudySpec, Table1Spec};
use site_agent::{Agent, AgentOptions, SiteConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An aggregator process, killed when the test ends however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Waits for the process to end by itself (a failure point) and returns how it ended.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                t0.elapsed() < timeout,
                "the aggregator did not stop at its failure point"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A consortium on disk: CA, aggregator kit and config, and every site's agent running in
/// this process (they reconnect by themselves whenever the aggregator comes back).
struct Consortium {
    dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    log: PathBuf,
    _rt: tokio::runtime::Runtime,
    stops: Vec<tokio::sync::watch::Sender<bool>>,
}

impl Drop for Consortium {
    fn drop(&mut self) {
        for s in &self.stops {
            let _ = s.send(true);
        }
    }
}

impl Consortium {
    /// `snapshot_interval_secs`: 0 writes the whole state after every round; a large value
    /// leaves it to the submit and the finish, so a restart replays every round in between.
    fn new(snapshot_interval_secs: f64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let table = table();
        let mut ca = Ca::init(&root.join("ca"), "test CA", 30).unwrap();
        let agg = root.join("aggregator");
        ca.write_aggregator_kit(
            &agg,
            &["localhost".into()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Validity::days(2),
        )
        .unwrap();
        let port = free_port();
        let sites: Vec<String> = table.by_site.keys().map(|s| format!("\"{s}\"")).collect();
        let config = agg.join("aggregator.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\nenrolled_sites = [{}]\nround_deadline_secs = 300\nsnapshot_interval_secs = {snapshot_interval_secs:?}\n[tls]\nca_cert = \"ca.pem\"\ncert = \"aggregator.pem\"\nkey = \"aggregator.key\"\ncrl = \"{}\"\n",
                sites.join(", "),
                ca.crl_path().display()
            ),
        )
        .unwrap();
        let url = format!("https://localhost:{port}");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let policy = format!("min_count = 1\nallowed_studies = [\"{}\"]\n", spec().hash());
        let mut stops = Vec::new();
        for (site, rows) in &table.by_site {
            let kit = write_site_kit(
                &mut ca,
                &root.join("kits"),
                site,
                &table.header,
                rows,
                &url,
                &policy,
                &SimOptions::default(),
            )
            .unwrap();
            let agent = Agent::new(
                SiteConfig::load(&kit.join("site.toml")).unwrap(),
                AgentOptions {
                    poll_wait: Duration::from_millis(300),
                    heartbeat: Duration::from_secs(1),
                    backoff_initial: Duration::from_millis(50),
                    backoff_max: Duration::from_millis(300),
                    // Some work per round, so a study spans several snapshot intervals of a
                    // loaded machine rather than finishing in a blink.
                    task_delay: Duration::from_millis(60),
                },
            )
            .unwrap();
            let (tx, mut rx) = tokio::sync::watch::channel(false);
            rt.spawn(agent.run(async move {
                let _ = rx.wait_for(|s| *s).await;
            }));
            stops.push(tx);
        }
        Self {
            config,
            state: agg.join("state"),
            log: root.join("aggregator.log"),
            dir,
            _rt: rt,
            stops,
        }
    }

    fn serve(&self, failpoint: Option<String>) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aggregator"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env_remove("FEDRAD_FAILPOINT")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(f) = failpoint {
            cmd.env("FEDRAD_FAILPOINT", f);
        }
        Server(cmd.spawn().unwrap())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_listening(&self, server: &mut Server) {
        let t0 = Instant::now();
        while !self.state.join("status.json").exists() {
            if let Some(status) = server.0.try_wait().unwrap() {
                panic!(
                    "the aggregator exited ({status}) before serving:\n{}",
                    self.log()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "no status.json; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Submits the study through the CLI, as a statistician would.
    fn submit(&self) {
        let file = self.dir.path().join("study.toml");
        std::fs::write(&file, STUDY_TOML).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .args(["submit", "--state"])
            .arg(&self.state)
            .arg(&file)
            .env_remove("FEDRAD_FAILPOINT")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn results(&self) -> PathBuf {
        self.state.join("results/table1")
    }

    fn status_round(&self) -> Option<(u64, bool)> {
        let text = std::fs::read_to_string(self.state.join("status.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let st = v["studies"].as_array()?.first()?.clone();
        Some((st["round"].as_u64()?, st["finished"].as_bool()?))
    }

    /// Restarts without a failure point; the study finishes with the reference result.
    fn restart_and_check(&self, reference: &StudyState, what: &str) {
        let mut server = self.serve(None);
        self.wait_listening(&mut server);
        wait_until(
            &format!("{what}: the restarted study to finish"),
            Duration::from_secs(240),
            || self.results().join("study.json").exists(),
        );
        drop(server);
        check_results(&self.results(), reference, what);
    }
}

/// The results folder holds the reference output, and every round 1..=last exactly once with
/// one result per site (`traffic.csv` is the aggregator's record of who answered what).
fn check_results(dir: &Path, reference: &StudyState, what: &str) {
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("study.json")).unwrap()).unwrap();
    assert_eq!(
        summary["status"].as_str(),
        Some("completed"),
        "{what}: {summary}"
    );
    assert_eq!(
        summary["rounds"].as_u64(),
        Some(u64::from(reference.round)),
        "{what}"
    );
    let got: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("output.json")).unwrap()).unwrap();
    assert_eq!(
        got,
        serde_json::to_value(reference.output.as_ref().unwrap()).unwrap(),
        "{what}: the restarted run differs from the reference"
    );
    let traffic = std::fs::read_to_string(dir.join("traffic.csv")).unwrap();
    let mut seen: Vec<(u32, String)> = traffic
        .lines()
        .skip(1)
        .map(|l| {
            let mut f = l.split(',');
            (
                f.next().unwrap().parse().unwrap(),
                f.next().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let expected: Vec<(u32, String)> = (1..=reference.round)
        .flat_map(|r| reference.sites.iter().map(move |s| (r, s.to_string())))
        .collect();
    assert_eq!(
        seen, expected,
        "{what}: rounds lost or double-counted:\n{traffic}"
    );
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
    let c = Consortium::new(snapshot_interval_secs);
    let mut server = c.serve(Some(format!("{point}:{k}")));
    c.wait_listening(&mut server);
    c.submit();
    let exit = server.wait_exit(Duration::from_secs(180));
    assert!(!exit.success(), "{point}: exited normally ({exit})");
    let log = c.log();
    assert!(
        log.contains(&format!("FEDRAD_FAILPOINT: crashing at {point} (hit {k})")),
        "{point}: not stopped by the failure point ({exit}); log:\n{log}"
    );
    assert!(
        !c.results().join("study.json").exists(),
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
    let c = Consortium::new(RARE_SNAPSHOTS);
    // A plain server, SIGKILLed mid-study with several rounds stored since the last snapshot.
    let mut server = c.serve(None);
    c.wait_listening(&mut server);
    c.submit();
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
