//! Simulation mode: one machine, a real aggregator and one real site agent per site value of a
//! pooled CSV, all over loopback mutual TLS with a fresh PKI in a temporary directory.
//!
//! This is how a statistician tries a federated analysis on data they already hold, and how the
//! end-to-end tests compare the federated result with the pooled one.

use crate::config::AggregatorConfig;
use crate::server::Server;
use anyhow::{Context, bail};
use certs::{Ca, Validity};
use federation::engine::StudyState;
use federation::study::StudySpec;
use federation::{SiteId, StudyHash};
use site_agent::{Agent, AgentOptions, SiteConfig};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A pooled CSV split by its site column.
#[derive(Debug, Clone)]
pub struct PooledTable {
    pub header: Vec<String>,
    pub by_site: BTreeMap<SiteId, Vec<Vec<String>>>,
    /// For each row of the file, in file order: its site and its index within that site.
    pub order: Vec<(SiteId, usize)>,
}

impl PooledTable {
    /// Reads `path` and splits it by `site_column`. Errors name the file, line and column.
    pub fn read(path: &Path, site_column: &str) -> anyhow::Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .trim(csv::Trim::All)
            .from_path(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let header: Vec<String> = reader
            .headers()
            .with_context(|| format!("{}: no header row", path.display()))?
            .iter()
            .map(str::to_string)
            .collect();
        let Some(site_idx) = header.iter().position(|h| h == site_column) else {
            bail!(
                "{}: site column {site_column:?} is missing; the table has: {}",
                path.display(),
                header.join(", ")
            );
        };
        let mut by_site: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
        let mut order = Vec::new();
        for (i, rec) in reader.records().enumerate() {
            let rec = rec.with_context(|| format!("{}: bad CSV record", path.display()))?;
            let row: Vec<String> = rec.iter().map(str::to_string).collect();
            let site = SiteId::new(row[site_idx].clone())
                .with_context(|| format!("{} data row {}: site column", path.display(), i + 1))?;
            let rows = by_site.entry(site.clone()).or_default();
            order.push((site, rows.len()));
            rows.push(row);
        }
        if by_site.is_empty() {
            bail!("{}: the table has no rows", path.display());
        }
        Ok(Self {
            header,
            by_site,
            order,
        })
    }

    /// A column's values over every site (in site order), as text.
    pub fn column(&self, name: &str) -> Option<Vec<&str>> {
        let i = self.header.iter().position(|h| h == name)?;
        Some(
            self.by_site
                .values()
                .flat_map(|rows| rows.iter().map(move |r| r[i].as_str()))
                .collect(),
        )
    }

    /// Columns to summarise as categorical: those with no numeric value at all (text levels) and
    /// numeric ones with at most `max_levels` distinct values (flags, grades). A column mixing
    /// numbers and text is left continuous, so the sites report the stray text as an error
    /// instead of the column silently turning into categories.
    pub fn guess_categorical(&self, names: &[String], max_levels: usize) -> Vec<String> {
        names
            .iter()
            .filter(|n| {
                let Some(col) = self.column(n) else {
                    return false;
                };
                let present: Vec<&str> = col
                    .into_iter()
                    .filter(|v| !federation::table::is_missing(v))
                    .collect();
                let numeric = present.iter().filter(|v| v.parse::<f64>().is_ok()).count();
                let distinct: std::collections::BTreeSet<&str> = present.iter().copied().collect();
                numeric == 0 || (numeric == present.len() && distinct.len() <= max_levels)
            })
            .cloned()
            .collect()
    }
}

/// Knobs of a simulation.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Every simulated site's policy `min_count`.
    pub min_count: u64,
    /// Every simulated site's `max_params_per_row` (`None`: the policy default).
    pub max_params_per_row: Option<f64>,
    /// Every simulated site's `share_models` (relay its fitted base models to the others).
    pub share_models: bool,
    /// Every simulated site's `release_predictions` (send rows instead of count tables).
    pub release_predictions: bool,
    pub id_column: String,
    pub label_column: String,
    pub round_deadline: Duration,
    pub agent: AgentOptions,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            min_count: 5,
            max_params_per_row: None,
            share_models: false,
            release_predictions: false,
            id_column: "patient_id".into(),
            label_column: "response".into(),
            round_deadline: Duration::from_secs(60),
            agent: AgentOptions {
                poll_wait: Duration::from_millis(500),
                heartbeat: Duration::from_secs(2),
                backoff_initial: Duration::from_millis(50),
                backoff_max: Duration::from_secs(1),
                task_delay: Duration::ZERO,
            },
            timeout: Duration::from_secs(600),
        }
    }
}

type RunningAgent = (
    JoinHandle<Result<(), site_agent::AgentError>>,
    watch::Sender<bool>,
);

/// A running simulated consortium.
pub struct Simulation {
    pub dir: tempfile::TempDir,
    pub server: Server,
    pub sites: Vec<SiteId>,
    /// Running agents in start order; `None` once stopped.
    agents: Vec<Option<RunningAgent>>,
}

fn write_csv(path: &Path, header: &[String], rows: &[Vec<String>]) -> anyhow::Result<()> {
    let mut w = csv::Writer::from_path(path)?;
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}

/// Issues a site kit and fills it for simulation: the site's rows as `data.csv`, the given
/// `policy.toml` text, and a `site.toml` pointing at `url`. Returns the kit folder.
#[allow(clippy::too_many_arguments)]
pub fn write_site_kit(
    ca: &mut Ca,
    kits: &Path,
    site: &SiteId,
    header: &[String],
    rows: &[Vec<String>],
    url: &str,
    policy_toml: &str,
    opts: &SimOptions,
) -> anyhow::Result<PathBuf> {
    let kit = ca.write_site_kit(site.as_str(), kits, url, Validity::days(2))?;
    write_csv(&kit.join("data.csv"), header, rows)?;
    std::fs::write(kit.join("policy.toml"), policy_toml)?;
    std::fs::write(
        kit.join("site.toml"),
        format!(
            "aggregator_url = \"{url}\"\naggregator_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"site.pem\"\nkey = \"site.key\"\npolicy = \"policy.toml\"\ndata_table = \"data.csv\"\nid_column = \"{}\"\nlabel_column = \"{}\"\naudit_log = \"audit.jsonl\"\n",
            opts.id_column, opts.label_column
        ),
    )?;
    Ok(kit)
}

impl Simulation {
    /// Creates the PKI, starts the aggregator, writes one kit + data table per site (with a
    /// policy allowing exactly `study`), and starts one agent per site.
    pub async fn start(
        table: &PooledTable,
        study: &StudySpec,
        opts: &SimOptions,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let root = dir.path();
        let mut ca = Ca::init(&root.join("ca"), "fedrad simulation CA", 30)?;
        let agg_dir = root.join("aggregator");
        ca.write_aggregator_kit(
            &agg_dir,
            &["localhost".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            Validity::days(2),
        )?;
        let sites: Vec<SiteId> = table.by_site.keys().cloned().collect();
        let cfg = AggregatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: agg_dir.join("state"),
            enrolled_sites: sites.clone(),
            round_deadline_ms: opts.round_deadline.as_millis() as u64,
            snapshot_interval_ms: crate::coordinator::DEFAULT_SNAPSHOT_INTERVAL_MS,
            tls: protocol::tls::ServerTlsFiles {
                ca_cert: agg_dir.join("ca.pem"),
                cert: agg_dir.join("aggregator.pem"),
                key: agg_dir.join("aggregator.key"),
                crl: Some(ca.crl_path()),
            },
        };
        let server = Server::start(&cfg).await?;
        let url = format!("https://localhost:{}", server.addr.port());
        let hash: StudyHash = study.hash();
        let mut sim = Simulation {
            dir,
            server,
            sites: sites.clone(),
            agents: Vec::new(),
        };
        for (site, rows) in &table.by_site {
            let kit = write_site_kit(
                &mut ca,
                &sim.dir.path().join("kits"),
                site,
                &table.header,
                rows,
                &url,
                &format!(
                    "min_count = {}\nallow_all_studies = false\nallowed_studies = [\"{hash}\"]\nshare_models = {}\nrelease_predictions = {}\n{}",
                    opts.min_count,
                    opts.share_models,
                    opts.release_predictions,
                    opts.max_params_per_row
                        .map(|r| format!("max_params_per_row = {r:?}\n"))
                        .unwrap_or_default()
                ),
                opts,
            )?;
            sim.start_agent(&kit.join("site.toml"), opts.agent.clone())?;
        }
        Ok(sim)
    }

    /// The kit folder of a site.
    pub fn kit(&self, site: &SiteId) -> PathBuf {
        self.dir.path().join("kits").join(site.as_str())
    }

    /// Starts (or restarts) the agent whose `site.toml` is at `config`.
    pub fn start_agent(&mut self, config: &Path, options: AgentOptions) -> anyhow::Result<usize> {
        let cfg = SiteConfig::load(config)?;
        let agent = Agent::new(cfg, options)?;
        let (tx, mut rx) = watch::channel(false);
        let handle = tokio::spawn(agent.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        self.agents.push(Some((handle, tx)));
        Ok(self.agents.len() - 1)
    }

    /// Stops one agent (by start order), as if its site went offline.
    pub async fn stop_agent(&mut self, index: usize) {
        if let Some((handle, tx)) = self.agents.get_mut(index).and_then(Option::take) {
            let _ = tx.send(true);
            let _ = handle.await;
        }
    }

    /// Submits the study and waits until it finishes (or `timeout`).
    pub async fn run_study(
        &self,
        study: StudySpec,
        timeout: Duration,
    ) -> anyhow::Result<StudyState> {
        let id = study.id.clone();
        self.server.coordinator.submit(study)?;
        self.wait_finished(id.as_str(), timeout).await
    }

    /// Waits for a study to finish.
    pub async fn wait_finished(&self, id: &str, timeout: Duration) -> anyhow::Result<StudyState> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.server.coordinator.changed.notified();
            if let Some((status, _)) = self.server.coordinator.study_status(id)
                && status.is_finished()
                && let Some(s) = self.server.coordinator.study(id)
            {
                return Ok(s);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let status = self
                    .server
                    .coordinator
                    .study_status(id)
                    .map_or("unknown".into(), |(s, _)| s.describe());
                bail!("study {id} did not finish within {timeout:?} (status: {status})");
            }
        }
    }

    /// Stops every agent and the aggregator.
    pub async fn shutdown(self) {
        for (handle, tx) in self.agents.into_iter().flatten() {
            let _ = tx.send(true);
            let _ = handle.await;
        }
        self.server.shutdown().await;
    }
}
