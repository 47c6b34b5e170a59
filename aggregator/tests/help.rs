//! Release hygiene of the `aggregator` binary: `--version` names the protocol, every subcommand's
//! `--help` (the `simulate` and `bench` groups and each of theirs too) carries an example, the
//! exit codes are documented.

#[path = "../../site-agent/tests/common/help_walk.rs"]
mod help_walk;

#[test]
fn every_subcommand_has_an_example_and_the_version_names_the_protocol() {
    let checked = help_walk::check_all(
        std::path::Path::new(env!("CARGO_BIN_EXE_aggregator")),
        "aggregator",
        protocol::PROTOCOL_VERSION,
    );
    for c in [
        "serve",
        "submit",
        "status",
        "results",
        "report",
        "demo",
        "simulate study",
        "bench lasso",
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
        std::path::Path::new(env!("CARGO_BIN_EXE_aggregator")),
        "aggregator",
    );
    assert!(n >= 6, "only {n} README lines checked");
}
