//! Smoke tests of the `certs` binary: the full operator workflow, exit codes and error lines.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn certs(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_certs"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run certs binary")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let o = certs(cwd, args);
    assert!(
        o.status.success(),
        "certs {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Runs a command expected to fail with exit 1 and returns its single stderr line.
fn fails(cwd: &Path, args: &[&str]) -> String {
    let o = certs(cwd, args);
    assert_eq!(o.status.code(), Some(1), "certs {args:?}: {o:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn operator_workflow() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = ok(
        d,
        &[
            "init",
            "--dir",
            "ca",
            "--cn",
            "Test consortium",
            "--days",
            "1000",
        ],
    );
    assert!(out.contains("CN=Test consortium"), "{out}");
    let err = fails(d, &["init", "--dir", "ca"]);
    assert!(err.contains("--force"), "{err}");

    ok(
        d,
        &[
            "issue-aggregator",
            "--ca",
            "ca",
            "--out",
            "agg",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ],
    );
    assert!(d.join("agg/aggregator.key").is_file() && d.join("agg/crl.pem").is_file());
    ok(
        d,
        &[
            "issue-site",
            "--ca",
            "ca",
            "--site-id",
            "S01",
            "--out",
            "kits",
            "--days",
            "30",
        ],
    );
    // 365 days (default) fits in the CA's 1000 days: no note. 5000 days is capped, with a note.
    let o = certs(
        d,
        &[
            "issue-site",
            "--ca",
            "ca",
            "--site-id",
            "S02",
            "--out",
            "kits",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("capped"),
        "{o:?}"
    );
    let o = certs(
        d,
        &[
            "issue-site",
            "--ca",
            "ca",
            "--site-id",
            "S03",
            "--out",
            "kits",
            "--days",
            "5000",
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("note: validity capped"),
        "{o:?}"
    );
    assert!(d.join("kits/S01/site.toml").is_file());

    let info = ok(d, &["inspect", "kits/S01/site.pem", "--ca", "ca"]);
    assert!(info.contains("role:         site S01"), "{info}");
    assert!(info.contains("signed by CA: yes"), "{info}");
    assert!(info.contains("revoked:      no"), "{info}");
    let agg_info = ok(d, &["inspect", "agg/aggregator.pem"]);
    assert!(
        agg_info.contains("DNS:localhost, IP:127.0.0.1, URI:urn:fedrad:aggregator"),
        "{agg_info}"
    );

    // Renew with a new key: the old cert and key are kept as .old, the key stays 0600.
    let old_cert = fs::read_to_string(d.join("kits/S01/site.pem")).unwrap();
    let old_key = fs::read_to_string(d.join("kits/S01/site.key")).unwrap();
    let out = ok(
        d,
        &[
            "renew",
            "--ca",
            "ca",
            "--cert",
            "kits/S01/site.pem",
            "--new-key",
        ],
    );
    assert!(out.contains("->"), "{out}");
    assert_eq!(
        fs::read_to_string(d.join("kits/S01/site.pem.old")).unwrap(),
        old_cert
    );
    assert_eq!(
        fs::read_to_string(d.join("kits/S01/site.key.old")).unwrap(),
        old_key
    );
    assert_ne!(
        fs::read_to_string(d.join("kits/S01/site.key")).unwrap(),
        old_key
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for k in [
            "kits/S01/site.key",
            "kits/S01/site.key.old",
            "ca/ca.key",
            "agg/aggregator.key",
        ] {
            let m = fs::metadata(d.join(k)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o600, "{k}");
        }
    }
    let renewed = ok(d, &["inspect", "kits/S01/site.pem", "--ca", "ca"]);
    assert!(renewed.contains("site S01") && renewed.contains("revoked:      no"));

    let list = ok(d, &["list", "--ca", "ca"]);
    assert_eq!(
        list.lines().filter(|l| l.contains(" S01 ")).count(),
        2,
        "{list}"
    );
    assert!(list.contains("localhost,127.0.0.1"), "{list}");

    let out = ok(
        d,
        &[
            "revoke",
            "--ca",
            "ca",
            "--site-id",
            "S01",
            "--reason",
            "keyCompromise",
        ],
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("revoked ")).count(),
        2,
        "{out}"
    );
    let list = ok(d, &["list", "--ca", "ca"]);
    assert_eq!(
        list.lines()
            .filter(|l| l.contains("revoked (keyCompromise"))
            .count(),
        2,
        "{list}"
    );
    assert!(list.contains("CRL number 2"), "{list}");
    let info = ok(d, &["inspect", "kits/S01/site.pem.old", "--ca", "ca"]);
    assert!(info.contains("status:       REVOKED"), "{info}");

    // Revoke by cert file, then again (already revoked -> error).
    ok(d, &["revoke", "--ca", "ca", "--cert", "kits/S02/site.pem"]);
    let err = fails(d, &["revoke", "--ca", "ca", "--cert", "kits/S02/site.pem"]);
    assert!(err.contains("already revoked"), "{err}");

    let out = ok(d, &["crl", "--ca", "ca"]);
    assert!(out.contains("CRL number 4"), "{out}");
}

#[test]
fn errors_and_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    let err = fails(d, &["list", "--ca", "missing-ca"]);
    assert!(err.contains("missing-ca"), "{err}");

    ok(d, &["init", "--dir", "ca"]);
    let err = fails(
        d,
        &[
            "issue-site",
            "--ca",
            "ca",
            "--site-id",
            "../x",
            "--out",
            "kits",
        ],
    );
    assert!(err.contains("../x"), "{err}");
    assert!(!d.join("x").exists() && !d.join("kits/../x").exists());

    let err = fails(
        d,
        &[
            "issue-site",
            "--ca",
            "ca",
            "--site-id",
            "S01",
            "--out",
            "kits",
            "--aggregator-url",
            "localhost:7443",
        ],
    );
    assert!(err.contains("https://"), "{err}");

    let err = fails(d, &["inspect", "nope.pem"]);
    assert!(err.contains("nope.pem"), "{err}");

    fs::write(
        d.join("ca/ca.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = fails(d, &["list", "--ca", "ca"]);
    assert!(err.contains("ca/ca.key"), "{err}");

    // Usage errors exit with 2.
    for args in [
        &["revoke", "--ca", "ca"][..],
        &[
            "revoke", "--ca", "ca", "--serial", "ab", "--reason", "bogus",
        ][..],
        &["frobnicate"][..],
        &["issue-site", "--ca", "ca"][..],
    ] {
        assert_eq!(certs(d, args).status.code(), Some(2), "{args:?}");
    }

    // Every subcommand's help shows an example.
    for sub in [
        "init",
        "issue-aggregator",
        "issue-site",
        "renew",
        "revoke",
        "inspect",
        "list",
        "crl",
    ] {
        let help = ok(d, &[sub, "--help"]);
        assert!(help.contains("Example"), "{sub}: {help}");
        assert!(help.contains(&format!("certs {sub}")), "{sub}: {help}");
    }
}
