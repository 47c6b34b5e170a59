//! `aggregator bench …`: timed runs of federated steps over loopback mTLS on synthetic data of
//! a chosen size, against the pooled reference on the same rows. Numbers go to BENCHMARKS.md.

use crate::simulate::{PooledTable, SimOptions, Simulation};
use anyhow::bail;
use federation::engine::{StudyOutput, StudyStatus};
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec};
use federation::{SiteId, StudyId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A synthetic multi-site table: `patient_id, site, response, age, f001…`, with a per-site
/// location/scale batch effect on every feature and a response signal on the first five.
pub fn synthetic_table(sites: usize, patients: usize, features: usize, seed: u64) -> PooledTable {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut header = vec![
        "patient_id".to_string(),
        "site".into(),
        "response".into(),
        "age".into(),
    ];
    header.extend((1..=features).map(|j| format!("f{j:03}")));
    let normal = Normal::new(0.0f64, 1.0).expect("valid normal");
    let site_ids: Vec<SiteId> = (1..=sites)
        .map(|s| SiteId::new(format!("S{s:02}")).expect("valid id"))
        .collect();
    let effects: Vec<Vec<(f64, f64)>> = (0..sites)
        .map(|_| {
            (0..features)
                .map(|_| {
                    (
                        normal.sample(&mut rng) * 0.8,
                        (0.3 * normal.sample(&mut rng)).exp(),
                    )
                })
                .collect()
        })
        .collect();
    let mut by_site: BTreeMap<SiteId, Vec<Vec<String>>> = BTreeMap::new();
    let mut order = Vec::with_capacity(patients);
    for i in 0..patients {
        // Uneven site sizes: site s gets weight s + sites/2 + 1 (largest ≈ 3× smallest).
        let s = {
            let w = |k: usize| k + sites / 2 + 1;
            let total: usize = (0..sites).map(w).sum();
            let mut u = rng.gen_range(0..total);
            let mut k = 0;
            while u >= w(k) {
                u -= w(k);
                k += 1;
            }
            k
        };
        let y: bool = rng.gen_bool(0.5);
        let mut row = vec![
            format!("P{i:06}"),
            site_ids[s].to_string(),
            (y as u8).to_string(),
            rng.gen_range(30..85).to_string(),
        ];
        for (j, &(shift, scale)) in effects[s].iter().enumerate() {
            let signal = if j < 5 && y { 0.6 } else { 0.0 };
            row.push(format!(
                "{}",
                (normal.sample(&mut rng) + signal) * scale + shift
            ));
        }
        let rows = by_site.entry(site_ids[s].clone()).or_default();
        order.push((site_ids[s].clone(), rows.len()));
        rows.push(row);
    }
    PooledTable {
        header,
        by_site,
        order,
    }
}

/// One benchmark result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchResult {
    pub what: String,
    pub sites: usize,
    pub patients: usize,
    pub features: usize,
    /// Setup (PKI, server, agents) — not part of the step's time.
    pub setup_s: f64,
    /// From submitting the study to its completion, over loopback mTLS.
    pub federated_s: f64,
    /// CPU time (user + system, all threads: aggregator and every agent) of this process over
    /// the same span; `None` where the OS does not report it. On a shared machine the wall time
    /// depends on the load, this much less.
    pub federated_cpu_s: Option<f64>,
    pub rounds: u32,
    /// Largest bytes any site sent in any round, and the total over all rounds of the site that
    /// sent most.
    pub max_bytes_per_site_round: u64,
    pub max_bytes_per_site_total: u64,
    /// The pooled reference computation on the same rows in this process.
    pub pooled_s: f64,
    /// Its CPU time (it runs on one thread).
    pub pooled_cpu_s: Option<f64>,
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of 1/100 s, the value of `getconf CLK_TCK` on Linux builds).
pub fn process_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn cpu_since(start: Option<f64>) -> Option<f64> {
    Some(process_cpu_s()? - start?)
}

impl BenchResult {
    /// A BENCHMARKS.md table row; times are wall (CPU).
    pub fn markdown_row(&self) -> String {
        let cpu = |c: Option<f64>| c.map_or_else(String::new, |c| format!(" (CPU {c:.2} s)"));
        format!(
            "| {} | {} | {} | {} | {:.2} s{} | {} | {} B | {} B | {:.2} s{} |",
            self.what,
            self.sites,
            self.patients,
            self.features,
            self.federated_s,
            cpu(self.federated_cpu_s),
            self.rounds,
            self.max_bytes_per_site_round,
            self.max_bytes_per_site_total,
            self.pooled_s,
            cpu(self.pooled_cpu_s)
        )
    }
}

/// Runs `study` over simulated sites and measures it; `pooled_s` is left for the caller.
async fn timed_study(
    table: &PooledTable,
    study: StudySpec,
    what: String,
) -> anyhow::Result<(BenchResult, federation::engine::StudyState)> {
    let t0 = Instant::now();
    // A performance benchmark: the sites' parameters-per-row guard is off (57 LASSO parameters
    // exceed 0.33 × the smallest synthetic site); min_count stays at the default 5.
    let mut opts = SimOptions {
        min_count: 5,
        max_params_per_row: Some(f64::INFINITY),
        ..SimOptions::default()
    };
    opts.agent.poll_wait = Duration::from_secs(5);
    let sim = Simulation::start(table, &study, &opts).await?;
    let setup_s = t0.elapsed().as_secs_f64();
    let id = study.id.to_string();
    let (t1, c1) = (Instant::now(), process_cpu_s());
    let state = sim.run_study(study, Duration::from_secs(3600)).await;
    let federated_s = t1.elapsed().as_secs_f64();
    let federated_cpu_s = cpu_since(c1);
    let rounds = sim.server.coordinator.rounds(&id);
    sim.shutdown().await;
    let state = state?;
    if state.status != StudyStatus::Completed {
        bail!("benchmark study failed: {}", state.status.describe());
    }
    let (max_round, max_total) = traffic(&rounds?);
    let features = table.header.len() - 4;
    let result = BenchResult {
        what,
        sites: table.by_site.len(),
        patients: table.order.len(),
        features,
        setup_s,
        federated_s,
        federated_cpu_s,
        rounds: state.round,
        max_bytes_per_site_round: max_round,
        max_bytes_per_site_total: max_total,
        pooled_s: 0.0,
        pooled_cpu_s: None,
    };
    Ok((result, state))
}

fn traffic(rounds: &[federation::engine::RoundRecord]) -> (u64, u64) {
    let per_round = rounds
        .iter()
        .flat_map(|r| r.bytes.values().copied())
        .max()
        .unwrap_or(0);
    let mut totals: BTreeMap<&SiteId, u64> = BTreeMap::new();
    for r in rounds {
        for (s, b) in &r.bytes {
            *totals.entry(s).or_default() += b;
        }
    }
    (per_round, totals.values().copied().max().unwrap_or(0))
}

/// Distributed ComBat (parametric, batch = site, age as covariate) vs the pooled reference.
pub async fn bench_combat(
    sites: usize,
    patients: usize,
    features: usize,
    seed: u64,
) -> anyhow::Result<BenchResult> {
    let table = synthetic_table(sites, patients, features, seed);
    let spec = HarmonizeSpec {
        secure_aggregation: false,
        features: table.header[4..].to_vec(),
        batch_column: None,
        covariates: vec!["age".into()],
        categorical: vec![],
        mode: HarmonizeMode::Parametric,
        on_masked_dropout: Default::default(),
    };
    let study = StudySpec {
        id: StudyId::new("bench-combat")?,
        title: String::new(),
        analysis: AnalysisSpec::Harmonize(spec.clone()),
    };
    let (mut result, state) =
        timed_study(&table, study, "ComBat (parametric, 4 rounds)".into()).await?;
    let Some(StudyOutput::Harmonize(_)) = state.output else {
        bail!("no ComBat model");
    };
    // The pooled reference on the same rows.
    let (t, c) = (Instant::now(), process_cpu_s());
    let mut batch = Vec::new();
    let mut age = Vec::new();
    let mut x = Vec::new();
    for (site, rows) in &table.by_site {
        for r in rows {
            batch.push(site.to_string());
            age.push(r[3].parse::<f64>()?);
            x.extend(r[4..].iter().map(|v| v.parse::<f64>().unwrap_or(f64::NAN)));
        }
    }
    let x = ndarray::Array2::from_shape_vec((batch.len(), features), x)?;
    let covs = vec![models::combat::CovariateColumn::Continuous(age)];
    let rows = models::combat::ComBatRows {
        batch: &batch,
        covariates: &covs,
        features: x.view(),
    };
    let design = models::combat::DesignSpec::from_site_levels(
        &[("age".into(), false)],
        &[models::combat::site_levels(&batch, &covs)],
    )?;
    models::combat::combat_pooled(&design, &rows, &models::combat::ComBatOptions::default())?;
    result.pooled_s = t.elapsed().as_secs_f64();
    result.pooled_cpu_s = cpu_since(c);
    Ok(result)
}

/// The federated LASSO (full path, `nfolds`-fold CV, `bootstrap` replicates at λ.min) vs the
/// pooled solver on the same rows.
pub async fn bench_lasso(
    sites: usize,
    patients: usize,
    features: usize,
    nfolds: u32,
    bootstrap: u32,
    seed: u64,
) -> anyhow::Result<BenchResult> {
    let table = synthetic_table(sites, patients, features, seed);
    let spec = federation::study::LassoSpec {
        label_column: "response".into(),
        positive_label: "1".into(),
        negative_label: "0".into(),
        features: table.header[4..].to_vec(),
        nfolds,
        foldid_column: None,
        nlambda: 100,
        bootstrap,
        top_k: 5,
        seed,
        secure_aggregation: false,
        on_masked_dropout: Default::default(),
    };
    let study = StudySpec {
        id: StudyId::new("bench-lasso")?,
        title: String::new(),
        analysis: AnalysisSpec::Lasso(spec.clone()),
    };
    let what = format!("LASSO path + {nfolds}-fold CV + {bootstrap} bootstrap");
    let (mut result, state) = timed_study(&table, study, what).await?;
    let Some(StudyOutput::Lasso(_)) = state.output else {
        bail!("no LASSO result");
    };
    let (t, c) = (Instant::now(), process_cpu_s());
    let mut data = Vec::new();
    for (site, rows) in &table.by_site {
        let t = federation::table::SiteTable::new(table.header.clone(), rows.clone())?;
        data.push(federation::lasso::site_data(
            &t,
            &spec,
            federation::lasso::site_key(site),
        )?);
    }
    let pooled = models::lasso::PooledData::from_sites(&data);
    models::lasso::lasso_pooled(&federation::lasso::config(&spec), &pooled)?;
    result.pooled_s = t.elapsed().as_secs_f64();
    result.pooled_cpu_s = cpu_since(c);
    Ok(result)
}

/// One study of the load benchmark.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadStudy {
    pub id: String,
    pub kind: String,
    pub rounds: u32,
    /// Results the aggregator took for this study (one per site per round, from the round
    /// records' byte counts, which are kept when the results themselves are pruned).
    pub round_trips: u64,
    /// Bytes all sites sent for this study.
    pub bytes: u64,
    /// Output identical to the in-process reference on the same rows.
    pub matches_reference: bool,
}

/// `aggregator bench load`: many sites, several studies at once, one aggregator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    pub sites: usize,
    pub concurrent_studies: usize,
    /// Batches of concurrent studies run one after the other (RSS is read after each, to see
    /// whether memory grows from one batch to the next).
    pub waves: usize,
    pub patients: usize,
    pub features: usize,
    /// PKI, server and agents.
    pub setup_s: f64,
    /// Each wave: from submitting its studies to the last one finishing.
    pub wave_s: Vec<f64>,
    /// CPU time of this process (aggregator and every agent) over all waves.
    pub cpu_s: Option<f64>,
    pub round_trips: u64,
    /// Resident set (KiB) after setup, before any study.
    pub rss_start_kib: Option<u64>,
    /// Resident set (KiB) after each wave (once its studies are retired from memory), before
    /// the reference runs.
    pub rss_after_wave_kib: Vec<Option<u64>>,
    /// How the coordinator held its studies after each wave, once the wave's results folders
    /// were written: bounded memory means `running` and `finished_in_memory` stay 0 while
    /// `retired` grows by the wave's size.
    pub residency_after_wave: Vec<crate::coordinator::Residency>,
    /// Total size (bytes) of the simulated sites' study memories (`study-memory.json`: pipeline
    /// state, the differencing guard's released patient sets per study, secure-aggregation
    /// sessions) after each wave. They live in this process too, and grow with every study a
    /// site answers (the guard keeps each study's sets: a site does not learn that a study
    /// ended), so they show up in the RSS readings without being aggregator memory.
    pub site_memory_bytes_after_wave: Vec<u64>,
    /// Peak resident set (VmHWM, KiB) over the federated part (read before the references run).
    pub peak_rss_kib: Option<u64>,
    pub studies: Vec<LoadStudy>,
    pub all_match_reference: bool,
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`); `None` off Linux.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// The load benchmark's studies: Table 1, ComBat and a small LASSO in turn (ids suffixed by
/// wave and index so every study is distinct), over `table`'s `age` and feature columns.
pub fn load_studies(table: &PooledTable, per_wave: usize, wave: usize) -> Vec<StudySpec> {
    let features: Vec<String> = table.header[4..].to_vec();
    (0..per_wave)
        .map(|i| {
            let (name, analysis) = match i % 3 {
                0 => (
                    "table1",
                    AnalysisSpec::Table1(federation::study::Table1Spec {
                        secure_aggregation: false,
                        label_column: "response".into(),
                        positive_label: "1".into(),
                        negative_label: "0".into(),
                        variables: std::iter::once("age".to_string())
                            .chain(features.iter().take(3).cloned())
                            .collect(),
                        categorical: vec![],
                        resolution: 1e-6,
                        depth_per_round: 4,
                        on_masked_dropout: Default::default(),
                    }),
                ),
                1 => (
                    "combat",
                    AnalysisSpec::Harmonize(HarmonizeSpec {
                        secure_aggregation: false,
                        features: features.clone(),
                        batch_column: None,
                        covariates: vec!["age".into()],
                        categorical: vec![],
                        mode: HarmonizeMode::Parametric,
                        on_masked_dropout: Default::default(),
                    }),
                ),
                _ => (
                    "lasso",
                    AnalysisSpec::Lasso(federation::study::LassoSpec {
                        label_column: "response".into(),
                        positive_label: "1".into(),
                        negative_label: "0".into(),
                        features: features.clone(),
                        nfolds: 3,
                        foldid_column: None,
                        nlambda: 20,
                        bootstrap: 2,
                        top_k: 3,
                        seed: 7,
                        secure_aggregation: false,
                        on_masked_dropout: Default::default(),
                    }),
                ),
            };
            StudySpec {
                id: StudyId::new(format!("load-w{}-{}-{name}", wave + 1, i + 1))
                    .expect("valid study id"),
                title: String::new(),
                analysis,
            }
        })
        .collect()
}

/// `sites` simulated sites (one agent each, in this process) and one aggregator over loopback
/// mTLS; `per_wave` studies submitted at once, `waves` times over. Every study's output is
/// compared with the in-process reference (`run_local`) on the same rows and policy.
pub async fn bench_load(
    sites: usize,
    per_wave: usize,
    waves: usize,
    patients: usize,
    features: usize,
    seed: u64,
) -> anyhow::Result<LoadResult> {
    use crate::config::AggregatorConfig;
    use crate::server::Server;
    use certs::{Ca, Validity};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    if sites == 0 || per_wave == 0 || waves == 0 || patients < 20 * sites || features < 1 {
        bail!(
            "bench load: need ≥ 1 site, study and wave, ≥ 1 feature and at least 20 patients per site"
        );
    }
    let table = synthetic_table(sites, patients, features, seed);
    let specs: Vec<Vec<StudySpec>> = (0..waves)
        .map(|w| load_studies(&table, per_wave, w))
        .collect();
    // Benchmark policy: min_count 5, the parameters-per-row guard off (as in the other
    // benchmarks), every study of the run allowed.
    let min_count = 5;
    let hashes: Vec<String> = specs.iter().flatten().map(|s| s.hash().0).collect();
    let policy_toml = format!(
        "min_count = {min_count}\nmax_params_per_row = inf\nallowed_studies = [{}]\n",
        hashes
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let t0 = Instant::now();
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let mut ca = Ca::init(&root.join("ca"), "fedrad load CA", 30)?;
    let agg_dir = root.join("aggregator");
    ca.write_aggregator_kit(
        &agg_dir,
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Validity::days(2),
    )?;
    let cfg = AggregatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: agg_dir.join("state"),
        enrolled_sites: table.by_site.keys().cloned().collect(),
        round_deadline_ms: 600_000,
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
    let mut opts = SimOptions::default();
    opts.agent.poll_wait = Duration::from_secs(5);
    let mut agents = Vec::new();
    for (site, rows) in &table.by_site {
        let kit = crate::simulate::write_site_kit(
            &mut ca,
            &root.join("kits"),
            site,
            &table.header,
            rows,
            &url,
            &policy_toml,
            &opts,
        )?;
        let agent = site_agent::Agent::new(
            site_agent::SiteConfig::load(&kit.join("site.toml"))?,
            opts.agent.clone(),
        )?;
        let (tx, mut rx) = tokio::sync::watch::channel(false);
        let handle = tokio::spawn(agent.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        agents.push((handle, tx));
    }
    let setup_s = t0.elapsed().as_secs_f64();
    let rss_start_kib = proc_status_kib("VmRSS");
    let coordinator = server.coordinator.clone();

    let c0 = process_cpu_s();
    let mut wave_s = Vec::new();
    let mut rss_after_wave_kib = Vec::new();
    let mut residency_after_wave = Vec::new();
    let mut site_memory_bytes_after_wave = Vec::new();
    let mut finished = Vec::new();
    let mut failure = None;
    'waves: for wave in &specs {
        let t = Instant::now();
        for spec in wave {
            coordinator.submit(spec.clone())?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        loop {
            let notified = coordinator.changed.notified();
            let done: Vec<_> = wave
                .iter()
                .filter_map(|s| coordinator.study_status(s.id.as_str()))
                .filter(|(st, _)| st.is_finished())
                .collect();
            if done.len() == wave.len() {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                failure = Some("a wave did not finish within an hour".to_string());
                break 'waves;
            }
        }
        wave_s.push(t.elapsed().as_secs_f64());
        // The server's housekeeping (every 200 ms) writes each finished study's results folder
        // and then retires the study from memory; wait for that before reading the memory.
        let retired_by = tokio::time::Instant::now() + Duration::from_secs(60);
        while coordinator.residency().finished_in_memory > 0
            && tokio::time::Instant::now() < retired_by
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        residency_after_wave.push(coordinator.residency());
        site_memory_bytes_after_wave.push(files_named(&root.join("kits"), "study-memory.json"));
        rss_after_wave_kib.push(proc_status_kib("VmRSS"));
        for spec in wave {
            // Only what the report needs is kept, so the benchmark's own bookkeeping does not
            // show up as aggregator memory in the next wave's reading. A retired study's state
            // is read back from the store's archive (and dropped again here).
            let id = spec.id.to_string();
            let state = coordinator
                .study(&id)
                .ok_or_else(|| anyhow::anyhow!("study {id} vanished"))?;
            let rounds = coordinator.rounds(&id)?;
            let round_trips = rounds.iter().map(|r| r.bytes.len() as u64).sum();
            let bytes = rounds.iter().flat_map(|r| r.bytes.values()).sum();
            finished.push((
                spec.clone(),
                state.status,
                state.round,
                state.output,
                round_trips,
                bytes,
            ));
        }
    }
    let cpu_s = cpu_since(c0);
    let peak_rss_kib = proc_status_kib("VmHWM");
    for (handle, tx) in agents {
        let _ = tx.send(true);
        let _ = handle.await;
    }
    server.shutdown().await;
    if let Some(f) = failure {
        bail!(f);
    }

    // The references, after the memory readings so they do not count.
    let mut studies = Vec::new();
    for (spec, status, rounds, output, round_trips, bytes) in finished {
        if status != StudyStatus::Completed {
            bail!("study {} failed: {}", spec.id, status.describe());
        }
        let reference = federation::local::run_local(
            spec.clone(),
            &reference_sites(&table, min_count, &hashes)?,
            100_000,
        )?;
        studies.push(LoadStudy {
            id: spec.id.to_string(),
            kind: spec.analysis.kind().to_string(),
            rounds,
            round_trips,
            bytes,
            matches_reference: reference.status == StudyStatus::Completed
                && reference.output == output,
        });
    }
    Ok(LoadResult {
        sites,
        concurrent_studies: per_wave,
        waves,
        patients,
        features,
        setup_s,
        wave_s,
        cpu_s,
        round_trips: studies.iter().map(|s| s.round_trips).sum(),
        rss_start_kib,
        rss_after_wave_kib,
        residency_after_wave,
        site_memory_bytes_after_wave,
        peak_rss_kib,
        all_match_reference: studies.iter().all(|s| s.matches_reference),
        studies,
    })
}

/// Total size of the files called `name` under `dir` (recursively; unreadable entries count 0).
fn files_named(dir: &std::path::Path, name: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => files_named(&path, name),
                Ok(_) if e.file_name() == name => e.metadata().map_or(0, |m| m.len()),
                _ => 0,
            }
        })
        .sum()
}

/// Every site's rows and the benchmark's policy, for the in-process reference.
fn reference_sites(
    table: &PooledTable,
    min_count: u64,
    hashes: &[String],
) -> anyhow::Result<BTreeMap<SiteId, (federation::table::SiteTable, federation::policy::SitePolicy)>>
{
    let policy = federation::policy::SitePolicy {
        min_count,
        max_params_per_row: f64::INFINITY,
        allowed_studies: hashes.to_vec(),
        ..federation::policy::SitePolicy::default()
    };
    table
        .by_site
        .iter()
        .map(|(s, rows)| {
            let t = federation::table::SiteTable::new(table.header.clone(), rows.clone())?
                .with_id_column("patient_id")?;
            Ok((s.clone(), (t, policy.clone())))
        })
        .collect()
}

impl LoadResult {
    /// Human-readable summary for the terminal and BENCHMARKS.md.
    pub fn summary(&self) -> String {
        let mib =
            |k: Option<u64>| k.map_or("?".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0));
        let mut out = format!(
            "{} sites, {} concurrent studies × {} wave(s), {} patients, {} features\nsetup {:.1} s; waves {}; CPU {}\nround trips {}; RSS start {}, after each wave [{}], peak (VmHWM) {}\nstudies held whole / as summaries after each wave: [{}]; sites' study memories (JSON) [{}]\n",
            self.sites,
            self.concurrent_studies,
            self.waves,
            self.patients,
            self.features,
            self.setup_s,
            self.wave_s
                .iter()
                .map(|s| format!("{s:.1} s"))
                .collect::<Vec<_>>()
                .join(", "),
            self.cpu_s.map_or("?".into(), |c| format!("{c:.1} s")),
            self.round_trips,
            mib(self.rss_start_kib),
            self.rss_after_wave_kib
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", "),
            mib(self.peak_rss_kib),
            self.residency_after_wave
                .iter()
                .map(|r| format!("{}/{}", r.running + r.finished_in_memory, r.retired))
                .collect::<Vec<_>>()
                .join(", "),
            self.site_memory_bytes_after_wave
                .iter()
                .map(|b| format!("{:.1} MiB", *b as f64 / 1_048_576.0))
                .collect::<Vec<_>>()
                .join(", "),
        );
        for s in &self.studies {
            out += &format!(
                "  {:<24} {:<10} {:>4} rounds {:>6} round trips {:>10} B  {}\n",
                s.id,
                s.kind,
                s.rounds,
                s.round_trips,
                s.bytes,
                if s.matches_reference {
                    "= reference"
                } else {
                    "DIFFERS from the reference"
                }
            );
        }
        out
    }
}
