//! The `site-agent` command on bad input: one error line saying what and where, exit code 1,
//! nothing sent and nothing written.

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_site-agent"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

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

fn kit(dir: &Path, data: &str) {
    let mut ca = certs::Ca::init(&dir.join("ca"), "t", 5).unwrap();
    let kit = ca
        .write_site_kit("S01", dir, "https://localhost:1", certs::Validity::days(1))
        .unwrap();
    std::fs::write(kit.join("policy.toml"), "min_count = 5\n").unwrap();
    std::fs::create_dir_all(kit.join("data")).unwrap();
    std::fs::write(kit.join("data/cohort.csv"), data).unwrap();
}

/// `validate` lists its problems on stdout and ends with one error line and exit code 1.
fn validate_fails_with(out: &Output, needle: &str) {
    fails_with(out, "problem(s) found");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(needle),
        "{stdout:?} does not mention {needle:?}"
    );
}

#[test]
fn validate_reports_table_problems() {
    let dir = tempfile::tempdir().unwrap();
    kit(
        dir.path(),
        "patient_id,age,response\nP1,50,1\nP2,51,0\nP3,52,0\nP4,53,1\nP5,54,0\n",
    );
    let kit = dir.path().join("S01");
    let out = agent(&["validate", "--config", "site.toml"], &kit);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("5 patients"), "{stdout}");
    assert!(stdout.contains("nothing was sent"), "{stdout}");

    std::fs::write(kit.join("data/cohort.csv"), "patient_id,age\nP1,50\n").unwrap();
    validate_fails_with(
        &agent(&["validate", "--config", "site.toml"], &kit),
        "column \"response\" is missing",
    );

    std::fs::write(
        kit.join("data/cohort.csv"),
        "patient_id,age,response\nP1,50,1\nP2,51,0,9\n",
    )
    .unwrap();
    validate_fails_with(
        &agent(&["validate", "--config", "site.toml"], &kit),
        "line 3: 4 cells but the header has 3",
    );

    std::fs::remove_file(kit.join("data/cohort.csv")).unwrap();
    validate_fails_with(
        &agent(&["validate", "--config", "site.toml"], &kit),
        "field data_table: points at",
    );
    validate_fails_with(
        &agent(&["validate", "--config", "nope.toml"], &kit),
        "nope.toml: cannot be read",
    );
}

#[test]
fn run_refuses_an_unreadable_key_before_sending_anything() {
    let dir = tempfile::tempdir().unwrap();
    kit(dir.path(), "patient_id,age,response\nP1,50,1\n");
    let kit = dir.path().join("S01");
    std::fs::write(kit.join("site.key"), "garbage").unwrap();
    fails_with(&agent(&["run", "--config", "site.toml"], &kit), "site.key");
    assert!(
        std::fs::read_to_string(kit.join("audit.jsonl"))
            .unwrap_or_default()
            .is_empty(),
        "something was logged as sent"
    );
}

#[test]
fn audit_verify_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut a = site_agent::audit::AuditLog::open(&log).unwrap();
    a.append("t1", 1, "histogram", "histogram", "3 nodes".into(), b"x")
        .unwrap();
    a.append("t1", 2, "histogram", "histogram", "4 nodes".into(), b"y")
        .unwrap();
    let out = agent(&["audit", "--log", "audit.jsonl", "--verify"], dir.path());
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 entries, hash chain intact"));
    let out = agent(&["audit", "--log", "audit.jsonl"], dir.path());
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 nodes"));
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replace("3 nodes", "9 nodes");
    std::fs::write(&log, text).unwrap();
    fails_with(
        &agent(&["audit", "--log", "audit.jsonl", "--verify"], dir.path()),
        "line 1",
    );
}
