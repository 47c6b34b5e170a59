//! Release hygiene of the `site-agent` binary: `--version` names the protocol, every subcommand's
//! `--help` carries an example, the exit codes are documented.

#[path = "common/help_walk.rs"]
mod help_walk;

#[test]
fn every_subcommand_has_an_example_and_the_version_names_the_protocol() {
    let checked = help_walk::check_all(
        std::path::Path::new(env!("CARGO_BIN_EXE_site-agent")),
        "site-agent",
        protocol::PROTOCOL_VERSION,
    );
    for c in [
        "run",
        "validate",
        "extract",
        "import-features",
        "audit",
        "synth",
        "bench",
    ] {
        assert!(
            checked.iter().any(|x| x == c),
            "{c} not walked: {checked:?}"
        );
    }
}

#[test]
fn readme_commands_exist_with_their_flags() {
    let n = help_walk::check_readme(
        std::path::Path::new(env!("CARGO_BIN_EXE_site-agent")),
        "site-agent",
    );
    assert!(n >= 4, "only {n} README lines checked");
}
