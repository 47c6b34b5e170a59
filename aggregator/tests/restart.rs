//! Crash safety of the real `aggregator` binary: SIGKILL it in the middle of a study, start it
//! again on the same state directory, and the study resumes and finishes with exactly the result
//! of an undisturbed (in-process reference) run. Agents reconnect by themselves.

use aggregator::simulate::{PooledTable, SimOptions, write_site_kit};
use certs::{Ca, Validity};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::{AnalysisSpec, StudySpec, Table1Spec};
use federation::table::SiteTable;
use site_agent::{Agent, AgentOptions, SiteConfig};
use std::net::{IpAddr, Ipv4Addr};
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_aggregator(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn status(state: &Path) -> serde_json::Value {
    std::fs::read_to_string(state.join("status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

fn study_round(state: &Path) -> Option<(u64, bool)> {
    let s = status(state);
    let st = s["studies"].as_array()?.first()?.clone();
    Some((st["round"].as_u64()?, st["finished"].as_bool()?))
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigkill_mid_study_then_restart_gives_the_undisturbed_result() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let table = PooledTable::read(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv"),
        "site",
    )
    .unwrap();
    let spec = spec();
    let hash = spec.hash();

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
            "listen = \"127.0.0.1:{port}\"\nstate_dir = \"state\"\nenrolled_sites = [{}]\nround_deadline_secs = 120\n[tls]\nca_cert = \"ca.pem\"\ncert = \"aggregator.pem\"\nkey = \"aggregator.key\"\ncrl = \"{}\"\n",
            sites.join(", "),
            ca.crl_path().display()
        ),
    )
    .unwrap();
    let state = agg.join("state");
    let log = root.join("aggregator.log");
    let mut child = spawn_aggregator(&config, &log);
    wait_until(
        "the aggregator's first status.json",
        Duration::from_secs(60),
        || state.join("status.json").exists(),
    );

    // Agents in this process, slowed down so the kill lands mid-study.
    let opts = SimOptions::default();
    let url = format!("https://localhost:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let policy = format!("min_count = 1\nallowed_studies = [\"{hash}\"]\n");
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
            &opts,
        )
        .unwrap();
        let agent = Agent::new(
            SiteConfig::load(&kit.join("site.toml")).unwrap(),
            AgentOptions {
                poll_wait: Duration::from_millis(300),
                heartbeat: Duration::from_secs(1),
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_millis(300),
                task_delay: Duration::from_millis(120),
            },
        )
        .unwrap();
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        rt.spawn(agent.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        stops.push(tx);
    }

    // Submit through the CLI, as a statistician would.
    let study_file = root.join("study.toml");
    std::fs::write(&study_file, toml_of(&spec)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(["submit", "--state"])
        .arg(&state)
        .arg(&study_file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&hash.0));

    wait_until("round 3", Duration::from_secs(120), || {
        study_round(&state).is_some_and(|(r, _)| r >= 3)
    });
    let (killed_at, finished) = study_round(&state).unwrap();
    assert!(
        !finished,
        "the study finished before the kill; slow the agents down"
    );
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();

    let mut child = spawn_aggregator(&config, &log);
    wait_until(
        "the restarted study to finish",
        Duration::from_secs(180),
        || {
            study_round(&state).is_some_and(|(_, f)| f)
                && state.join("results/table1/table1.json").exists()
        },
    );
    let (final_round, _) = study_round(&state).unwrap();
    assert!(final_round > killed_at);

    // What the statistician sees.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let state_arg = state.to_str().unwrap();
    let status = cli(&["status", "--state", state_arg]);
    assert!(
        status.contains("table1") && status.contains("completed"),
        "{status}"
    );
    assert!(
        status.contains("S01") && status.contains("connected"),
        "{status}"
    );
    let results = cli(&["results", "--state", state_arg, "table1"]);
    assert!(
        results.starts_with("variable,level,overall,group_1,group_0"),
        "{results}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    for s in stops {
        let _ = s.send(true);
    }

    // The reference: the same study, every site in process, no network, no crash.
    let site_policy = SitePolicy {
        min_count: 1,
        allowed_studies: vec![hash.0.clone()],
        ..SitePolicy::default()
    };
    let tables = table
        .by_site
        .iter()
        .map(|(s, rows)| {
            let t = SiteTable::new(table.header.clone(), rows.clone()).unwrap();
            (s.clone(), (t, site_policy.clone()))
        })
        .collect();
    let reference = run_local(spec, &tables, 100).unwrap();
    let Some(federation::engine::StudyOutput::Table1(expected)) = reference.output else {
        panic!()
    };
    let got: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(state.join("results/table1/table1.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        got,
        serde_json::to_value(&expected).unwrap(),
        "restarted run differs from the reference"
    );
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("aggregator listening"), "{log}");
}

fn toml_of(spec: &StudySpec) -> String {
    let AnalysisSpec::Table1(t) = &spec.analysis else {
        panic!("a table1 spec")
    };
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "id = \"{}\"\n[analysis]\nkind = \"table1\"\nlabel_column = \"{}\"\nvariables = [{}]\ncategorical = [{}]\n",
        spec.id,
        t.label_column,
        list(&t.variables),
        list(&t.categorical)
    )
}
