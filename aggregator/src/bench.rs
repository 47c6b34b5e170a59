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
        features: table.header[4..].to_vec(),
        batch_column: None,
        covariates: vec!["age".into()],
        categorical: vec![],
        mode: HarmonizeMode::Parametric,
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
