//! `site-agent`: the hospital-side command. Thin: parse, build, run, exit code.

use clap::{Parser, Subcommand};
use site_agent::{Agent, AgentOptions, SiteConfig};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "site-agent",
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol v4)"),
    about = "fedrad site agent: keeps patient data inside the hospital and answers the consortium's federated studies with policy-checked aggregates",
    after_help = "Exit codes: 0 success, 1 error (the message says what to fix), 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Connect to the aggregator (outbound only) and answer tasks until stopped.
    #[command(after_help = "Example:\n  site-agent run --config kits/S01/site.toml")]
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Check site.toml, the policy, the data table, the image manifest and the studies, listing
    /// every problem at once; sends nothing.
    Validate(site_agent::validate::ValidateArgs),
    /// Extract IBSI radiomics features from an image + mask, or from a whole cohort manifest.
    Extract(site_agent::extract::ExtractArgs),
    /// Benchmarks of the extraction pipeline (timings and peak memory for BENCHMARKS.md).
    #[command(
        after_help = "Example:\n  site-agent bench extract cohort --ibsi ../shared/ibsi --lesions 100 --threads 2"
    )]
    Bench(site_agent::bench::BenchArgs),
    /// Convert a LIFEx or pyradiomics feature export to the IBSI patient table of `extract`.
    ImportFeatures(site_agent::import::ImportArgs),
    /// Print the audit log of everything this site sent.
    #[command(after_help = "Example:\n  site-agent audit --log kits/S01/audit.jsonl --verify")]
    Audit {
        #[arg(long)]
        log: PathBuf,
        /// Only check the hash chain and report.
        #[arg(long)]
        verify: bool,
    },
    /// Generate a synthetic multi-centre CT cohort (images, lesion masks, manifests, clinical tables).
    Synth(synth::SynthArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// `validate` found problems (already listed on stdout).
#[derive(Debug, thiserror::Error)]
#[error("{0} problem(s) found; each is listed above with its fix")]
struct ValidationFailed(usize);

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = SiteConfig::load(&config)?;
            let agent = Agent::new(cfg, AgentOptions::default())?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(agent.run(async {
                let _ = tokio::signal::ctrl_c().await;
            }))?;
            Ok(())
        }
        Command::Validate(args) => {
            let report = site_agent::validate::validate(&args);
            print!("{}", report.render());
            if report.is_ok() {
                Ok(())
            } else {
                Err(ValidationFailed(report.problems.len()).into())
            }
        }
        Command::Extract(args) => Ok(site_agent::extract::run(&args)?),
        Command::Bench(args) => site_agent::bench::run(&args),
        Command::ImportFeatures(args) => Ok(site_agent::import::run(&args)?),
        Command::Audit { log, verify } => {
            let entries = site_agent::audit::verify(&log)?;
            if verify {
                println!("ok: {} entries, hash chain intact", entries.len());
            } else {
                print!("{}", site_agent::audit::render(&entries));
            }
            Ok(())
        }
        Command::Synth(args) => synth::cli_run(args),
    }
}
