//! `aggregator`: the consortium-side command. Thin: parse, build, run, exit code.

use aggregator::{AggregatorConfig, Server, commands};
use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use federation::study::{HarmonizeMode, StudySpec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "aggregator",
    version = concat!(env!("CARGO_PKG_VERSION"), " (protocol v4)"),
    about = "fedrad aggregator: drives federated studies across hospital site agents over mutual TLS",
    after_help = "Exit codes: 0 success, 1 error (the message says what to fix), 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the aggregator server.
    #[command(after_help = "Example:\n  aggregator serve --config aggregator.toml")]
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Submit a study (study.toml) to the aggregator using this state directory.
    #[command(
        after_help = "Example:\n  aggregator submit --state state study.toml\n\nThe study is checked, its hash printed (sites add it to allowed_studies), and it is\nqueued in <state>/inbox for the running server to pick up."
    )]
    Submit {
        #[arg(long)]
        state: PathBuf,
        study: PathBuf,
    },
    /// Show sites (connected, last seen, version) and studies (round, progress, status).
    #[command(after_help = "Example:\n  aggregator status --state state")]
    Status {
        #[arg(long)]
        state: PathBuf,
    },
    /// Print a finished study's results.
    #[command(after_help = "Example:\n  aggregator results --state state table1-demo")]
    Results {
        #[arg(long)]
        state: PathBuf,
        study: String,
    },
    /// The statistician's report (report.html, metrics.json, CSVs, figures) of a finished
    /// pipeline study, from the server's results folder.
    #[command(
        after_help = "Example:\n  aggregator report --state state surufatinib-response --table1 table1-demo --out report/\n\nReads <state>/results/<study>/ (written by the server when the study finished); sled is not\nopened, so the server may keep running."
    )]
    Report {
        #[arg(long)]
        state: PathBuf,
        /// The pipeline study's id.
        study: String,
        /// A finished Table 1 study to include as the cohort table.
        #[arg(long)]
        table1: Option<String>,
        /// A finished LASSO study to include (coefficient path, CV curve, selection frequencies).
        #[arg(long)]
        lasso: Option<String>,
        #[arg(long, default_value = "report")]
        out: PathBuf,
    },
    /// One-machine simulations: a real aggregator and one real agent per site over loopback mTLS.
    #[command(
        subcommand,
        after_help = "Example:\n  aggregator simulate study --table ../shared/examples/cohort_example.csv --study examples/study.toml --repeats 2 --folds 5 --out fedrad-study"
    )]
    Simulate(Simulate),
    /// Timed federated steps on synthetic data over loopback mTLS (numbers for BENCHMARKS.md).
    #[command(
        subcommand,
        after_help = "Example:\n  cargo run --release -p aggregator -- bench lasso --sites 50 --patients 10000 --features 56"
    )]
    Bench(Bench),
    /// The whole federated study on a synthetic 7-hospital cohort, on this machine: images →
    /// extraction at each site → Table 1 → ComBat → LASSO → stacking under nested CV → metrics
    /// and survival → report.html.
    #[command(
        after_help = "Example:\n  cargo run --release -p aggregator -- demo\n  aggregator demo --out fedrad-demo --repeats 100   # the published protocol (slow)\n\nEach hospital runs as its own site-agent process over mutual TLS on loopback. The output\nfolder holds report.html, metrics.json, CSVs and figures/; work/ holds the cohort, the PKI,\neach site's kit (data, audit log) and the aggregator's state."
    )]
    Demo {
        /// Output folder.
        #[arg(long, default_value = "fedrad-demo")]
        out: PathBuf,
        /// Repeats of the 5-fold nested cross-validation. The default 1 keeps the demo near a
        /// few minutes on 2 cores; the study used 100 (`--repeats 100`, hours here).
        #[arg(long, default_value_t = 1)]
        repeats: u32,
        #[arg(long, default_value_t = 7)]
        sites: usize,
        #[arg(long, default_value_t = 102)]
        patients: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Smoke test: small hyper-parameter searches, LASSO paths and bootstraps (the whole
        /// protocol in a fraction of the time; not the study's settings).
        #[arg(long)]
        quick: bool,
    },
    /// The site-agent commands the demo's site processes run (same code as `site-agent`).
    #[command(subcommand, hide = true)]
    SiteAgent(SiteAgentCommand),
}

/// What a demo site process runs when the `site-agent` binary is not next to this one.
#[derive(Subcommand)]
enum SiteAgentCommand {
    Run {
        #[arg(long)]
        config: PathBuf,
        /// Wait this long before answering each task: a slow site, for fault tests.
        #[arg(long, default_value_t = 0)]
        task_delay_ms: u64,
    },
    Extract(site_agent::extract::ExtractArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// The federated LASSO path + CV + bootstrap against the pooled reference.
    #[command(
        after_help = "Example:\n  cargo run --release -p aggregator -- bench lasso --sites 50 --patients 10000 --features 56 --nfolds 10 --bootstrap 100"
    )]
    Lasso {
        #[arg(long, default_value_t = 50)]
        sites: usize,
        #[arg(long, default_value_t = 10_000)]
        patients: usize,
        #[arg(long, default_value_t = 56)]
        features: usize,
        #[arg(long, default_value_t = 10)]
        nfolds: u32,
        #[arg(long, default_value_t = 100)]
        bootstrap: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Many sites and concurrent studies against one aggregator: wall time, round trips,
    /// memory (RSS), and every result checked against the in-process reference.
    #[command(
        after_help = "Example:\n  cargo run --release -p aggregator -- bench load --sites 50 --studies 3"
    )]
    Load {
        #[arg(long, default_value_t = 50)]
        sites: usize,
        /// Studies submitted at once (Table 1, ComBat and LASSO in turn).
        #[arg(long, default_value_t = 3)]
        studies: usize,
        /// Batches of concurrent studies run one after the other (RSS read after each).
        #[arg(long, default_value_t = 2)]
        waves: usize,
        #[arg(long, default_value_t = 5_000)]
        patients: usize,
        #[arg(long, default_value_t = 10)]
        features: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Distributed ComBat against the pooled reference.
    #[command(
        after_help = "Example:\n  cargo run --release -p aggregator -- bench combat --sites 50 --patients 10000 --features 56"
    )]
    Combat {
        #[arg(long, default_value_t = 50)]
        sites: usize,
        #[arg(long, default_value_t = 10_000)]
        patients: usize,
        #[arg(long, default_value_t = 56)]
        features: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum Simulate {
    /// Federated Table 1 (baseline characteristics by outcome group) from one pooled CSV.
    #[command(
        after_help = "Example:\n  aggregator simulate table1 --table ../shared/examples/cohort_example.csv \\\n    --site-column site --label-column response \\\n    --variables age,sex,ecog,grade,ki67,months_dx_to_tx,met_pattern,prior_surgery --out table1.csv"
    )]
    Table1 {
        #[arg(long)]
        table: PathBuf,
        #[arg(long, default_value = "site")]
        site_column: String,
        #[arg(long, default_value = "response")]
        label_column: String,
        #[arg(long, default_value = "patient_id")]
        id_column: String,
        /// Comma-separated variables, in output order.
        #[arg(long, value_delimiter = ',', required = true)]
        variables: Vec<String>,
        /// Variables to summarise as categorical. Default: non-numeric columns and columns with
        /// at most 5 distinct values.
        #[arg(long, value_delimiter = ',')]
        categorical: Option<Vec<String>>,
        /// Every simulated site's policy min_count.
        #[arg(long, default_value_t = 5)]
        min_count: u64,
        #[arg(long, default_value = "table1.csv")]
        out: PathBuf,
    },
    /// Federated LASSO-logistic (glmnet): λ path, CV, bootstrap selection frequencies.
    #[command(
        after_help = "Example:\n  aggregator simulate lasso --table ../shared/examples/cohort_example.csv --site-column site \\\n    --label-column response --nfolds 10 --bootstrap 100 --top-k 5 --max-params-per-row inf --out lasso.json\n\nOutput keys: lambda, objective, nzero, cvm, cvsd, lambda_min, lambda_1se,\ncoefficients_lambda_min (standardised scale), intercept_lambda_min, selection_frequency, top_k."
    )]
    Lasso(LassoCli),
    /// The whole published protocol (nested-CV pipeline study) from one pooled feature table.
    #[command(
        after_help = "Example:\n  aggregator simulate study --table ../shared/examples/cohort_example.csv \\\n    --study examples/study.toml --repeats 2 --folds 5 --seed 7 --max-params-per-row inf --out fedrad-study\n\nWrites into --out:\n  predictions.csv  patient_id,site,y,p_ml,p_clinical: each patient's mean outer-fold\n                   probability over the repeats (kept at the sites in a real deployment)\n  selection.csv    feature,frequency: fraction of outer fits with the feature in the LASSO top-k\n  timing.json      wall seconds and round trips per stage (ComBat, z-score, LASSO, base\n                   learners, relay, meta-fit, scoring, metrics) and in all\n  pipeline.json    settings, nested-CV summary (resolved features, dropped columns), metrics\n  report.html, metrics.json, curve CSVs and figures\nProgress (repeats, folds, stage, ETA) goes to stderr.\n\nA study file without analysis.features uses every column numeric at every site except the\nid, label, clinical, outcome and exclude_columns ones (resolved by the sites, names only)."
    )]
    Study {
        #[arg(long)]
        table: PathBuf,
        /// The study file (kind = "pipeline"), e.g. examples/study.toml.
        #[arg(long)]
        study: PathBuf,
        #[arg(long, default_value = "site")]
        site_column: String,
        #[arg(long, default_value = "patient_id")]
        id_column: String,
        /// Override the study's number of CV repeats (analysis.cv.repeats).
        #[arg(long)]
        repeats: Option<u32>,
        /// Override the study's number of outer CV folds (analysis.cv.outer_folds).
        #[arg(long)]
        folds: Option<u32>,
        /// Override the study's CV seed (analysis.cv.seed: folds, LASSO, learners, MLP).
        #[arg(long)]
        seed: Option<u64>,
        /// Every simulated site's policy min_count.
        #[arg(long, default_value_t = 5)]
        min_count: u64,
        /// Every simulated site's max_params_per_row (policy default 0.33; `inf` = guard off).
        #[arg(long)]
        max_params_per_row: Option<f64>,
        /// Sites keep their fitted base models home (default: they share them).
        #[arg(long)]
        keep_models_home: bool,
        /// Sites release per-patient mean probabilities (exact metrics) instead of count tables.
        #[arg(long)]
        release_predictions: bool,
        #[arg(long, default_value = "fedrad-study")]
        out: PathBuf,
    },
    /// Distributed ComBat: the same table with its feature columns harmonised.
    #[command(
        after_help = "Example:\n  aggregator simulate harmonize --table ../shared/examples/cohort_example.csv \\\n    --site-column site --covariates age,grade --out harmonized.csv\n\nWithout --features, every numeric column other than the id, site, batch, covariates and the\nstudy's clinical/outcome columns is a feature. The fitted model is written next to --out."
    )]
    Harmonize {
        #[arg(long)]
        table: PathBuf,
        #[arg(long, default_value = "site")]
        site_column: String,
        #[arg(long, default_value = "patient_id")]
        id_column: String,
        /// Batch column nested within sites (e.g. scanner); default: each site is a batch.
        #[arg(long)]
        batch_column: Option<String>,
        /// Covariates whose effects ComBat preserves.
        #[arg(long, value_delimiter = ',')]
        covariates: Option<Vec<String>>,
        /// Which covariates are categorical (default: non-numeric or at most 5 levels).
        #[arg(long, value_delimiter = ',')]
        categorical: Option<Vec<String>>,
        /// Feature columns to harmonise.
        #[arg(long, value_delimiter = ',', conflicts_with = "features_after")]
        features: Option<Vec<String>>,
        /// Every column after this one is a feature.
        #[arg(long)]
        features_after: Option<String>,
        #[arg(long, value_enum, default_value_t = Mode::Parametric)]
        mode: Mode,
        /// Every simulated site's policy min_count.
        #[arg(long, default_value_t = 5)]
        min_count: u64,
        #[arg(long, default_value = "harmonized.csv")]
        out: PathBuf,
    },
}

/// Arguments of `simulate lasso` (kept apart from the enum so the variant stays readable).
#[derive(clap::Args)]
struct LassoCli {
    #[arg(long)]
    table: PathBuf,
    #[arg(long, default_value = "site")]
    site_column: String,
    #[arg(long, default_value = "patient_id")]
    id_column: String,
    #[arg(long, default_value = "response")]
    label_column: String,
    /// Candidate features (default: every numeric column other than the id, site, label,
    /// fold-id and the study's clinical/outcome columns).
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    #[arg(long, default_value_t = 10)]
    nfolds: u32,
    /// Fold ids (1..=nfolds) from this column instead of a stratified draw at each site.
    #[arg(long)]
    foldid_column: Option<String>,
    #[arg(long, default_value_t = 100)]
    nlambda: usize,
    /// Bootstrap replicates for selection frequencies (0 = none).
    #[arg(long, default_value_t = 100)]
    bootstrap: u32,
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Every simulated site's policy min_count.
    #[arg(long, default_value_t = 5)]
    min_count: u64,
    /// Every simulated site's max_params_per_row (policy default 0.33; `inf` = guard off).
    #[arg(long)]
    max_params_per_row: Option<f64>,
    #[arg(long, default_value = "lasso.json")]
    out: PathBuf,
}

/// ComBat's empirical-Bayes variant.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Parametric,
    Nonparametric,
    MeanOnly,
}

impl From<Mode> for HarmonizeMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Parametric => HarmonizeMode::Parametric,
            Mode::Nonparametric => HarmonizeMode::Nonparametric,
            Mode::MeanOnly => HarmonizeMode::MeanOnly,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life; one-shot commands only say what went wrong (RUST_LOG overrides).
    let default = match cli.command {
        Command::Serve { .. } => "info,sled=warn,h2=warn,tower=warn",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config } => {
            let cfg = AggregatorConfig::load(&config)?;
            runtime()?.block_on(async {
                let server = Server::start(&cfg).await?;
                tokio::signal::ctrl_c().await?;
                tracing::info!("shutting down");
                server.shutdown().await;
                anyhow::Ok(())
            })
        }
        Command::Report {
            state,
            study,
            table1,
            lasso,
            out,
        } => {
            let path = commands::report_from_results(
                &state,
                &study,
                table1.as_deref(),
                lasso.as_deref(),
                &out,
            )?;
            println!("report: {}", path.display());
            Ok(())
        }
        Command::Demo {
            out,
            repeats,
            sites,
            patients,
            seed,
            quick,
        } => {
            if repeats == 0 || sites == 0 || patients < 5 * sites {
                bail!("demo: need --repeats ≥ 1, --sites ≥ 1 and at least 5 patients per site");
            }
            runtime()?
                .block_on(aggregator::demo::run_demo(aggregator::demo::DemoArgs {
                    out,
                    repeats,
                    sites,
                    patients,
                    seed,
                    quick,
                }))
                .map(|_| ())
        }
        Command::SiteAgent(SiteAgentCommand::Extract(args)) => Ok(site_agent::extract::run(&args)?),
        Command::SiteAgent(SiteAgentCommand::Run {
            config,
            task_delay_ms,
        }) => {
            let cfg = site_agent::SiteConfig::load(&config)?;
            let options = site_agent::AgentOptions {
                task_delay: std::time::Duration::from_millis(task_delay_ms),
                ..site_agent::AgentOptions::default()
            };
            let agent = site_agent::Agent::new(cfg, options)?;
            runtime()?.block_on(async {
                agent
                    .run(async {
                        let _ = tokio::signal::ctrl_c().await;
                    })
                    .await
            })?;
            Ok(())
        }
        Command::Simulate(Simulate::Study {
            table,
            study,
            site_column,
            id_column,
            repeats,
            folds,
            seed,
            min_count,
            max_params_per_row,
            keep_models_home,
            release_predictions,
            out,
        }) => runtime()?
            .block_on(commands::simulate_study(commands::StudyArgs {
                table: &table,
                study: &study,
                site_column: &site_column,
                id_column: &id_column,
                cv: commands::CvOverrides {
                    repeats,
                    folds,
                    seed,
                },
                min_count,
                max_params_per_row,
                share_models: !keep_models_home,
                release_predictions,
                out: &out,
            }))
            .map(|_| ()),
        Command::Simulate(Simulate::Lasso(l)) => {
            runtime()?.block_on(commands::simulate_lasso(commands::LassoArgs {
                table: &l.table,
                site_column: &l.site_column,
                id_column: &l.id_column,
                label_column: &l.label_column,
                features: l.features,
                nfolds: l.nfolds,
                foldid_column: l.foldid_column,
                nlambda: l.nlambda,
                bootstrap: l.bootstrap,
                top_k: l.top_k,
                seed: l.seed,
                min_count: l.min_count,
                max_params_per_row: l.max_params_per_row,
                out: &l.out,
            }))
        }
        Command::Bench(Bench::Lasso {
            sites,
            patients,
            features,
            nfolds,
            bootstrap,
            seed,
        }) => {
            let r = runtime()?.block_on(aggregator::bench::bench_lasso(
                sites, patients, features, nfolds, bootstrap, seed,
            ))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("{}", r.markdown_row());
            Ok(())
        }
        Command::Bench(Bench::Combat {
            sites,
            patients,
            features,
            seed,
        }) => {
            let r = runtime()?.block_on(aggregator::bench::bench_combat(
                sites, patients, features, seed,
            ))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            println!("{}", r.markdown_row());
            Ok(())
        }
        Command::Bench(Bench::Load {
            sites,
            studies,
            waves,
            patients,
            features,
            seed,
        }) => {
            let r = runtime()?.block_on(aggregator::bench::bench_load(
                sites, studies, waves, patients, features, seed,
            ))?;
            println!("{}", serde_json::to_string_pretty(&r)?);
            print!("{}", r.summary());
            if !r.all_match_reference {
                bail!("a federated result differs from the in-process reference");
            }
            Ok(())
        }
        Command::Submit { state, study } => submit(&state, &study),
        Command::Status { state } => status(&state),
        Command::Results { state, study } => results(&state, &study),
        Command::Simulate(Simulate::Table1 {
            table,
            site_column,
            label_column,
            id_column,
            variables,
            categorical,
            min_count,
            out,
        }) => runtime()?.block_on(commands::simulate_table1(commands::Table1Args {
            table: &table,
            site_column: &site_column,
            label_column: &label_column,
            id_column: &id_column,
            variables,
            categorical,
            min_count,
            out: &out,
        })),
        Command::Simulate(Simulate::Harmonize {
            table,
            site_column,
            id_column,
            batch_column,
            covariates,
            categorical,
            features,
            features_after,
            mode,
            min_count,
            out,
        }) => runtime()?.block_on(commands::simulate_harmonize(commands::HarmonizeArgs {
            table: &table,
            site_column: &site_column,
            id_column: &id_column,
            batch_column,
            covariates: covariates.unwrap_or_default(),
            categorical,
            features,
            features_after,
            mode: mode.into(),
            min_count,
            out: &out,
        })),
    }
}

fn submit(state: &Path, study: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(study)
        .with_context(|| format!("cannot read {}", study.display()))?;
    let spec = StudySpec::from_toml(&text).with_context(|| study.display().to_string())?;
    let inbox = aggregator::server::inbox_dir(state);
    if !state.exists() {
        bail!(
            "state directory {} does not exist; start `aggregator serve` with it first",
            state.display()
        );
    }
    std::fs::create_dir_all(&inbox)?;
    let name = format!("{}.toml", spec.id);
    if inbox.join("accepted").join(&name).exists() {
        bail!("study {} was already submitted; choose another id", spec.id);
    }
    let tmp = inbox.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, inbox.join(&name))?;
    println!("study {} queued; hash {}", spec.id, spec.hash());
    println!("sites must list this hash in allowed_studies (policy.toml) to take part");
    Ok(())
}

fn status(state: &Path) -> anyhow::Result<()> {
    let path = aggregator::server::status_path(state);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (has `aggregator serve` run with this state directory?)",
            path.display()
        )
    })?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    let updated = report["updated_ms"].as_u64().unwrap_or(0);
    let age = aggregator::coordinator::now_ms().saturating_sub(updated);
    if age > 10_000 {
        println!(
            "note: the aggregator has not updated its status for {}s (is it running?)",
            age / 1000
        );
    }
    println!("sites:");
    for s in report["sites"].as_array().into_iter().flatten() {
        let seen = s["last_seen_ms"].as_u64().map_or("never".to_string(), |t| {
            format!("{}s ago", updated.saturating_sub(t) / 1000)
        });
        println!(
            "  {:<12} {:<12} last seen {:<12} agent {}{}",
            s["site"].as_str().unwrap_or("?"),
            if s["connected"].as_bool() == Some(true) {
                "connected"
            } else {
                "offline"
            },
            seen,
            s["agent_version"]
                .as_str()
                .filter(|v| !v.is_empty())
                .unwrap_or("-"),
            if s["enrolled"].as_bool() == Some(true) {
                ""
            } else {
                " (not enrolled)"
            }
        );
    }
    println!("studies:");
    for s in report["studies"].as_array().into_iter().flatten() {
        println!(
            "  {:<16} {:<8} round {:>3} ({}/{} sites answered)  {}",
            s["id"].as_str().unwrap_or("?"),
            s["kind"].as_str().unwrap_or("?"),
            s["round"],
            s["answered"],
            s["sites"],
            s["status"].as_str().unwrap_or("?")
        );
        if let Some(stage) = s["stage"].as_str() {
            // Where the study is (repeats, folds, outer fits done, stage), then the estimated
            // fraction done with the elapsed time and the ETA the server computed.
            println!("  {:<16} {stage}", "");
            let done = s["fraction_done"].as_f64().unwrap_or(0.0);
            let timing = &report["timing"][s["id"].as_str().unwrap_or("")];
            let mut line = format!("{:.0} % done", done * 100.0);
            if let Some(e) = timing["elapsed_seconds"].as_f64() {
                line.push_str(&format!(", {} elapsed", aggregator::timing::human(e)));
            }
            if s["finished"].as_bool() != Some(true) {
                match timing["eta_seconds"].as_f64() {
                    Some(eta) => {
                        line.push_str(&format!(", ETA {}", aggregator::timing::human(eta)))
                    }
                    None => line.push_str(", ETA not known yet"),
                }
            }
            println!("  {:<16} {line}", "");
        }
    }
    Ok(())
}

fn results(state: &Path, study: &str) -> anyhow::Result<()> {
    let dir = aggregator::results::results_dir(state, study);
    let summary = dir.join("study.json");
    if !summary.exists() {
        bail!(
            "no results for study {study:?} in {} (not finished yet? see `aggregator status`)",
            state.display()
        );
    }
    let csv = dir.join("table1.csv");
    if csv.exists() {
        print!("{}", std::fs::read_to_string(&csv)?);
    } else {
        print!("{}", std::fs::read_to_string(&summary)?);
    }
    Ok(())
}
