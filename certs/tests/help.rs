//! Release hygiene of the `certs` binary: `--version` names the protocol release (read from
//! `federation::PROTOCOL_VERSION`'s definition, which certs does not link), every subcommand's
//! `--help` carries an example, the exit codes are documented.

#[path = "../../site-agent/tests/common/help_walk.rs"]
mod help_walk;

/// `pub const PROTOCOL_VERSION: u32 = N;` in federation/src/lib.rs.
fn protocol_version() -> u32 {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../federation/src/lib.rs");
    let text = std::fs::read_to_string(&src).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("const PROTOCOL_VERSION: u32 ="))
        .expect("federation defines PROTOCOL_VERSION");
    line.split('=')
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches(';')
        .parse()
        .unwrap()
}

#[test]
fn every_subcommand_has_an_example_and_the_version_names_the_protocol() {
    let checked = help_walk::check_all(
        std::path::Path::new(env!("CARGO_BIN_EXE_certs")),
        "certs",
        protocol_version(),
    );
    for c in [
        "init",
        "issue-aggregator",
        "issue-site",
        "renew",
        "revoke",
        "inspect",
        "list",
        "crl",
    ] {
        assert!(
            checked.iter().any(|x| x == c),
            "{c} not walked: {checked:?}"
        );
    }
}

#[test]
fn readme_commands_exist_with_their_flags() {
    let n = help_walk::check_readme(std::path::Path::new(env!("CARGO_BIN_EXE_certs")), "certs");
    assert!(n >= 4, "only {n} README lines checked");
}
