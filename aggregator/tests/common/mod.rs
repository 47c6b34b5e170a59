//! Shared by the aggregator's fault tests: the undisturbed in-process reference run, and a
//! consortium on disk whose real `aggregator serve` process a test can crash and restart while
//! the site agents (in the test's process) keep running.
#![allow(dead_code)]

use aggregator::simulate::{PooledTable, SimOptions, write_site_kit};
use certs::{Ca, Validity};
use federation::engine::{StudyState, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;
use site_agent::{Agent, AgentOptions, SiteConfig};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `spec` over every site of `table` in process (no network, no fault), each site with
/// `min_count = 1` and a policy allowing exactly this study; asserts it completed.
pub fn reference(table: &PooledTable, spec: &StudySpec) -> StudyState {
    reference_with(
        table,
        spec,
        SitePolicy {
            min_count: 1,
            allowed_studies: vec![spec.hash().0],
            ..SitePolicy::default()
        },
    )
}

/// [`reference`] with every site under `policy`.
pub fn reference_with(table: &PooledTable, spec: &StudySpec, policy: SitePolicy) -> StudyState {
    let tables = table
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
    let state = run_local(spec.clone(), &tables, 1000).unwrap();
    assert_eq!(state.status, StudyStatus::Completed);
    state
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An aggregator process, killed when the test ends however it ends.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Waits for the process to end by itself (a failure point) and returns how it ended.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
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
pub struct Consortium {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
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
    /// One agent per site of `table`, each with `policy_toml` as its `policy.toml` and
    /// `task_delay` of work per task (so a study spans several snapshot intervals of a loaded
    /// machine rather than finishing in a blink). `snapshot_interval_secs`: 0 writes the whole
    /// state after every round; a large value leaves it to the submit and the finish, so a
    /// restart replays every round in between.
    pub fn new(
        table: &PooledTable,
        policy_toml: &str,
        snapshot_interval_secs: f64,
        task_delay: Duration,
    ) -> Self {
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
        let mut stops = Vec::new();
        for (site, rows) in &table.by_site {
            let kit = write_site_kit(
                &mut ca,
                &root.join("kits"),
                site,
                &table.header,
                rows,
                &url,
                policy_toml,
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
                    task_delay,
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

    pub fn serve(&self, failpoint: Option<String>) -> Server {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_listening(&self, server: &mut Server) {
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
    pub fn submit(&self, study_toml: &str) {
        let file = self.dir.path().join("study.toml");
        std::fs::write(&file, study_toml).unwrap();
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

    /// The results folder of study `id`.
    pub fn results(&self, id: &str) -> PathBuf {
        aggregator::results::results_dir(&self.state, id)
    }

    pub fn status_round(&self) -> Option<(u64, bool)> {
        let text = std::fs::read_to_string(self.state.join("status.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let st = v["studies"].as_array()?.first()?.clone();
        Some((st["round"].as_u64()?, st["finished"].as_bool()?))
    }

    /// Restarts without a failure point; the study finishes with the reference result.
    pub fn restart_and_check(&self, reference: &StudyState, what: &str) {
        let results = self.results(reference.spec.id.as_str());
        let mut server = self.serve(None);
        self.wait_listening(&mut server);
        wait_until(
            &format!("{what}: the restarted study to finish"),
            Duration::from_secs(240),
            || results.join("study.json").exists(),
        );
        drop(server);
        check_results(&results, reference, what);
    }
}

/// The results folder holds the reference output, and every round 1..=last exactly once with
/// one result per site (`traffic.csv` is the aggregator's record of who answered what).
pub fn check_results(dir: &Path, reference: &StudyState, what: &str) {
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
