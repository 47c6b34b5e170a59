//! The `synth` command-line front end: arguments, help text, refusal to overwrite, bad input.

use clap::{CommandFactory, Parser};
use synth::{SynthArgs, cli_run};

#[derive(Parser)]
#[command(name = "site-agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    Synth(SynthArgs),
}

fn parse(args: &[&str]) -> SynthArgs {
    let Cmd::Synth(a) = Cli::try_parse_from(args).unwrap().cmd;
    a
}

#[test]
fn help_has_an_example_and_defaults_match_the_study() {
    let mut cmd = Cli::command();
    let help = cmd
        .find_subcommand_mut("synth")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(help.contains("site-agent synth --sites 7 --patients 102 --seed 42 --out"));
    assert!(help.contains("lesions.csv"));
    let a = parse(&["site-agent", "synth", "--out", "x"]);
    assert_eq!((a.sites, a.patients, a.seed, a.force), (7, 102, 1, false));
    assert!(
        Cli::try_parse_from(["site-agent", "synth"]).is_err(),
        "--out is required"
    );
}

#[test]
fn writes_a_cohort_and_refuses_a_non_empty_folder_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cohort");
    let out_s = out.to_str().unwrap();
    let args = parse(&[
        "site-agent",
        "synth",
        "--sites",
        "2",
        "--patients",
        "3",
        "--seed",
        "9",
        "--out",
        out_s,
    ]);
    cli_run(args.clone()).unwrap();
    for f in [
        "cohort.json",
        "S01/lesions.csv",
        "S01/clinical.csv",
        "S02/clinical.csv",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let before = std::fs::read(out.join("S01/clinical.csv")).unwrap();
    let e = cli_run(args.clone()).unwrap_err().to_string();
    assert!(e.contains("not empty") && e.contains("--force"), "{e}");
    let mut forced = args;
    forced.force = true;
    cli_run(forced).unwrap();
    assert_eq!(std::fs::read(out.join("S01/clinical.csv")).unwrap(), before);
}

#[test]
fn bad_sizes_are_rejected_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let out_s = out.to_str().unwrap();
    let e = cli_run(parse(&[
        "site-agent",
        "synth",
        "--sites",
        "5",
        "--patients",
        "3",
        "--out",
        out_s,
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("at least one patient per site"), "{e}");
    let e = cli_run(parse(&[
        "site-agent",
        "synth",
        "--sites",
        "0",
        "--out",
        out_s,
    ]))
    .unwrap_err()
    .to_string();
    assert!(e.contains("1 to 99 sites"), "{e}");
    assert!(!out.exists(), "nothing is written for bad input");
}
