//! The `aggregator` command on bad input: each mistake is one error line saying what and where,
//! a non-zero exit code, and no state or output written. Plus the happy path of `simulate`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn aggregator(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aggregator"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn cohort() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/examples/cohort_example.csv")
}

/// Exit code 1 and a single `error:` line containing `needle`.
fn fails_with(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{:?} does not mention {needle:?}",
        lines[0]
    );
}

const TLS: &str = "[tls]\nca_cert = \"ca.pem\"\ncert = \"agg.pem\"\nkey = \"agg.key\"\n";

#[test]
fn serve_refuses_bad_configs_without_creating_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(
        &aggregator(&["serve", "--config", "nope.toml"], d),
        "cannot read nope.toml",
    );

    let cfg = format!(
        "listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nenrolled_sites = [\"S01\"]\n{TLS}"
    );
    std::fs::write(d.join("a.toml"), &cfg).unwrap();
    std::fs::write(d.join("ca.pem"), "").unwrap();
    fails_with(
        &aggregator(&["serve", "--config", "a.toml"], d),
        "tls.cert points at",
    );

    // An unreadable key: the error names the file; nothing is created.
    let pki = tempfile::tempdir().unwrap();
    let mut ca = certs::Ca::init(&pki.path().join("ca"), "t", 5).unwrap();
    let kit = pki.path().join("agg");
    ca.write_aggregator_kit(&kit, &["localhost".into()], &[], certs::Validity::days(1))
        .unwrap();
    std::fs::copy(kit.join("ca.pem"), d.join("ca.pem")).unwrap();
    std::fs::copy(kit.join("aggregator.pem"), d.join("agg.pem")).unwrap();
    std::fs::write(
        d.join("agg.key"),
        "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    fails_with(&aggregator(&["serve", "--config", "a.toml"], d), "agg.key");
    assert!(!d.join("state").exists(), "state was written on bad input");

    std::fs::write(d.join("a.toml"), cfg.replace("[\"S01\"]", "[\"../x\"]")).unwrap();
    fails_with(
        &aggregator(&["serve", "--config", "a.toml"], d),
        "enrolled_sites",
    );
}

#[test]
fn simulate_refuses_bad_tables_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cohort = cohort();
    let table = cohort.to_str().unwrap();
    let base = ["simulate", "table1", "--table", table, "--out", "t1.csv"];

    let args = [&base[..], &["--variables", "age,bmi"]].concat();
    fails_with(
        &aggregator(&args, d),
        "column \"bmi\" is missing; the table has: patient_id, site",
    );

    let args = [
        &base[..],
        &["--variables", "age", "--label-column", "outcome"],
    ]
    .concat();
    fails_with(&aggregator(&args, d), "column \"outcome\" is missing");

    let args = [
        &base[..],
        &["--variables", "age", "--site-column", "centre"],
    ]
    .concat();
    fails_with(&aggregator(&args, d), "site column \"centre\" is missing");

    // A non-numeric value in one site's continuous column: the study fails naming the site and
    // the column, but not the patient or the value (those stay in that site's log).
    let text = std::fs::read_to_string(&cohort).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let header: Vec<&str> = lines[0].split(',').collect();
    let age = header.iter().position(|h| *h == "age").unwrap();
    let mut cells: Vec<String> = lines[1].split(',').map(String::from).collect();
    let (patient, site) = (cells[0].clone(), cells[1].clone());
    cells[age] = "fifty".into();
    lines[1] = cells.join(",");
    std::fs::write(d.join("bad.csv"), lines.join("\n")).unwrap();
    let out = aggregator(
        &[
            "simulate",
            "table1",
            "--table",
            "bad.csv",
            "--variables",
            "age,sex",
            "--out",
            "t1.csv",
        ],
        d,
    );
    fails_with(
        &out,
        &format!(
            "site {site} could not answer round 1: column \"age\" holds a value that is not a number"
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let error_line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        !error_line.contains(&patient) && !error_line.contains("fifty"),
        "{error_line}"
    );
    assert!(
        !d.join("t1.csv").exists(),
        "output written for a failed study"
    );
}

#[test]
fn simulate_table1_writes_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = cohort();
    let out = aggregator(
        &[
            "simulate",
            "table1",
            "--table",
            cohort.to_str().unwrap(),
            "--variables",
            "age,sex,ecog,ki67",
            "--min-count",
            "1",
            "--out",
            "t1.csv",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = std::fs::read_to_string(dir.path().join("t1.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("variable,level,overall,group_1,group_0,test,statistic,p_value")
    );
    assert!(csv.contains("\nn,,102,51,51,"), "{csv}");
    assert!(
        csv.contains("age,mean ± SD,") && csv.contains("Student t"),
        "{csv}"
    );
    assert!(csv.contains("ecog,0,"), "ecog should be categorical: {csv}");
    assert!(dir.path().join("t1.json").exists());
}

#[test]
fn version_names_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let out = aggregator(&["--version"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("protocol v1"));
    let out = aggregator(&["simulate", "table1", "--help"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Example:"));
    let out = aggregator(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

/// A small pipeline study over the example cohort's 55 radiomics columns (smoke settings).
fn small_pipeline_study(dir: &Path) -> PathBuf {
    let header = std::fs::read_to_string(cohort()).unwrap();
    let features: Vec<String> = header
        .lines()
        .next()
        .unwrap()
        .split(',')
        .filter(|c| c.starts_with("original_"))
        .map(|c| format!("{c:?}"))
        .collect();
    let toml = format!(
        r#"id = "small-pipeline"
[analysis]
kind = "pipeline"
label_column = "response"
features = [{}]
[analysis.cv]
repeats = 1
inner_folds = 3
[analysis.lasso]
nfolds = 3
nlambda = 15
bootstrap = 4
[analysis.learners.search.budget]
svm = 1
forest = 1
gbm = 1
[analysis.meta]
hidden = [4]
[analysis.metrics]
bootstrap = 50
time_column = "pfs_months"
event_column = "pfs_event"
"#,
        features.join(", ")
    );
    let path = dir.join("small.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

#[test]
fn simulate_study_writes_the_report_and_report_rebuilds_it_from_results() {
    let dir = tempfile::tempdir().unwrap();
    let study = small_pipeline_study(dir.path());
    let out = aggregator(
        &[
            "simulate",
            "study",
            "--table",
            cohort().to_str().unwrap(),
            "--study",
            study.to_str().unwrap(),
            "--max-params-per-row",
            "inf",
            "--out",
            "sim",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sim = dir.path().join("sim");
    for f in ["report.html", "metrics.json", "pipeline.json", "roc_ml.csv"] {
        assert!(sim.join(f).exists(), "missing {f}");
    }
    // The server's results folder for a finished pipeline study, as `housekeeping` writes it.
    let results = dir.path().join("state/results/small-pipeline");
    std::fs::create_dir_all(&results).unwrap();
    let pipeline = std::fs::read_to_string(sim.join("pipeline.json")).unwrap();
    std::fs::write(
        results.join("output.json"),
        format!("{{\"Pipeline\":{pipeline}}}"),
    )
    .unwrap();
    std::fs::write(results.join("study.json"), "{\"hash\":\"abc\"}").unwrap();
    std::fs::write(
        results.join("traffic.csv"),
        "round,site,kind,bytes\n1,S01,pipeline,10\n",
    )
    .unwrap();
    let out = aggregator(
        &[
            "report",
            "--state",
            "state",
            "small-pipeline",
            "--out",
            "rep",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(dir.path().join("rep/report.html")).unwrap();
    assert!(html.contains("stacked ML model") && html.contains("S01"));
    // Not a pipeline study: one clear error line.
    std::fs::write(
        results.join("output.json"),
        "{\"Lasso\":{\"features\":[],\"result\":null}}",
    )
    .unwrap();
    let out = aggregator(
        &[
            "report",
            "--state",
            "state",
            "small-pipeline",
            "--out",
            "rep2",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
}
