//! Stand-alone front end of `site-agent synth` (same arguments, same code path), for timing and for
//! generating a cohort without building the site agent.
//!
//! `cargo run --release -p synth --example generate -- --sites 7 --patients 102 --seed 42 --out DIR`

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "generate",
    about = "Generate the synthetic multi-centre CT cohort"
)]
struct Cli {
    #[command(flatten)]
    args: synth::SynthArgs,
}

fn main() -> anyhow::Result<()> {
    synth::cli_run(Cli::parse().args)
}
