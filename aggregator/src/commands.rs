//! The one-shot commands behind `aggregator simulate …`: build the study from the flags, run it
//! over loopback mTLS, write the outputs. `main.rs` only parses and reports.

use crate::simulate::{PooledTable, SimOptions, Simulation};
use anyhow::{Context, bail};
use federation::StudyId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::harmonize::site_rows;
use federation::study::{AnalysisSpec, HarmonizeMode, HarmonizeSpec, StudySpec, Table1Spec};
use federation::table::SiteTable;
use federation::task::BatchSource;
use std::path::Path;

/// The study's clinical and outcome columns: never treated as radiomics features by default.
pub const CLINICAL_COLUMNS: [&str; 11] = [
    "age",
    "sex",
    "ecog",
    "grade",
    "ki67",
    "months_dx_to_tx",
    "met_pattern",
    "prior_surgery",
    "response",
    "pfs_months",
    "pfs_event",
];

fn write_output(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn require_columns(table: &PooledTable, path: &Path, columns: &[&String]) -> anyhow::Result<()> {
    for c in columns {
        if table.column(c).is_none() {
            bail!(
                "{}: column {c:?} is missing; the table has: {}",
                path.display(),
                table.header.join(", ")
            );
        }
    }
    Ok(())
}

/// Runs `spec` over one simulated agent per site and returns the finished state.
async fn run(
    table: &PooledTable,
    spec: StudySpec,
    opts: &SimOptions,
) -> anyhow::Result<StudyState> {
    Ok(run_with_rounds(table, spec, opts).await?.0)
}

/// [`run`], also returning the completed rounds (for the report's traffic table).
async fn run_with_rounds(
    table: &PooledTable,
    spec: StudySpec,
    opts: &SimOptions,
) -> anyhow::Result<(StudyState, Vec<federation::engine::RoundRecord>)> {
    spec.validate()?;
    let sim = Simulation::start(table, &spec, opts).await?;
    eprintln!(
        "simulating {} sites over loopback mTLS (aggregator on {})",
        sim.sites.len(),
        sim.server.addr
    );
    let id = spec.id.to_string();
    let state = sim.run_study(spec, opts.timeout).await;
    let rounds = sim.server.coordinator.rounds(&id);
    sim.shutdown().await;
    let state = state?;
    if state.status != StudyStatus::Completed {
        bail!("the study did not complete: {}", state.status.describe());
    }
    Ok((state, rounds?))
}

/// Arguments of `simulate table1`.
pub struct Table1Args<'a> {
    pub table: &'a Path,
    pub site_column: &'a str,
    pub label_column: &'a str,
    pub id_column: &'a str,
    pub variables: Vec<String>,
    pub categorical: Option<Vec<String>>,
    pub min_count: u64,
    pub out: &'a Path,
}

/// `aggregator simulate table1`.
pub async fn simulate_table1(a: Table1Args<'_>) -> anyhow::Result<()> {
    let pooled = PooledTable::read(a.table, a.site_column)?;
    let label = a.label_column.to_string();
    let id = a.id_column.to_string();
    require_columns(
        &pooled,
        a.table,
        &a.variables.iter().chain([&label, &id]).collect::<Vec<_>>(),
    )?;
    let categorical = a
        .categorical
        .unwrap_or_else(|| pooled.guess_categorical(&a.variables, 5));
    let spec = StudySpec {
        id: StudyId::new("table1")?,
        title: format!("Table 1 of {}", a.table.display()),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: false,
            label_column: label.clone(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: a.variables,
            categorical,
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    };
    let opts = SimOptions {
        min_count: a.min_count,
        id_column: id,
        label_column: label,
        ..SimOptions::default()
    };
    let state = run(&pooled, spec, &opts).await?;
    let Some(StudyOutput::Table1(t)) = &state.output else {
        bail!("the study produced no table");
    };
    let csv = t.to_csv();
    write_output(a.out, csv.as_bytes())?;
    let json = a.out.with_extension("json");
    write_output(&json, serde_json::to_string_pretty(t)?.as_bytes())?;
    print!("{csv}");
    eprintln!(
        "wrote {} and {} ({} rounds)",
        a.out.display(),
        json.display(),
        state.round
    );
    Ok(())
}

/// Arguments of `simulate harmonize`.
pub struct HarmonizeArgs<'a> {
    pub table: &'a Path,
    pub site_column: &'a str,
    pub id_column: &'a str,
    pub batch_column: Option<String>,
    pub covariates: Vec<String>,
    pub categorical: Option<Vec<String>>,
    pub features: Option<Vec<String>>,
    pub features_after: Option<String>,
    pub mode: HarmonizeMode,
    pub min_count: u64,
    pub out: &'a Path,
}

/// The default feature columns: every numeric column that is not the id, the site, the batch,
/// a covariate, or one of the study's clinical/outcome columns.
pub fn default_features(table: &PooledTable, excluded: &[&str]) -> Vec<String> {
    table
        .header
        .iter()
        .filter(|h| !excluded.contains(&h.as_str()) && !CLINICAL_COLUMNS.contains(&h.as_str()))
        .filter(|h| {
            table.column(h).is_some_and(|col| {
                col.iter()
                    .filter(|v| !federation::table::is_missing(v))
                    .all(|v| v.parse::<f64>().is_ok())
            })
        })
        .cloned()
        .collect()
}

/// `aggregator simulate harmonize`: distributed ComBat, then the same table with the feature
/// columns harmonised (same rows in the same order, same columns).
pub async fn simulate_harmonize(a: HarmonizeArgs<'_>) -> anyhow::Result<()> {
    let pooled = PooledTable::read(a.table, a.site_column)?;
    let mut excluded: Vec<&str> = vec![a.id_column, a.site_column];
    if let Some(b) = &a.batch_column {
        excluded.push(b);
    }
    excluded.extend(a.covariates.iter().map(String::as_str));
    let features = match (a.features, a.features_after) {
        (Some(f), _) => f,
        (None, Some(after)) => {
            let Some(i) = pooled.header.iter().position(|h| *h == after) else {
                bail!(
                    "--features-after: column {after:?} is not in {}",
                    a.table.display()
                );
            };
            pooled.header[i + 1..].to_vec()
        }
        (None, None) => default_features(&pooled, &excluded),
    };
    if features.is_empty() {
        bail!("no feature columns to harmonise; name them with --features");
    }
    let mut needed: Vec<&String> = features.iter().chain(&a.covariates).collect();
    if let Some(b) = &a.batch_column {
        needed.push(b);
    }
    require_columns(&pooled, a.table, &needed)?;
    let categorical = a
        .categorical
        .unwrap_or_else(|| pooled.guess_categorical(&a.covariates, 5));
    let spec = HarmonizeSpec {
        secure_aggregation: false,
        features,
        batch_column: a.batch_column,
        covariates: a.covariates,
        categorical,
        mode: a.mode,
        on_masked_dropout: Default::default(),
    };
    let study = StudySpec {
        id: StudyId::new("harmonize")?,
        title: format!("ComBat of {}", a.table.display()),
        analysis: AnalysisSpec::Harmonize(spec.clone()),
    };
    let opts = SimOptions {
        min_count: a.min_count,
        id_column: a.id_column.to_string(),
        ..SimOptions::default()
    };
    let state = run(&pooled, study, &opts).await?;
    let Some(StudyOutput::Harmonize(h)) = &state.output else {
        bail!("the study produced no ComBat model");
    };
    // Apply the frozen model site by site (the simulation holds every row), then write the rows
    // back in file order.
    let mut harmonised = std::collections::BTreeMap::new();
    for (site, rows) in &pooled.by_site {
        let t = SiteTable::new(pooled.header.clone(), rows.clone())?;
        let batch = match &spec.batch_column {
            Some(c) => BatchSource::Column(c.clone()),
            None => BatchSource::Label(site.to_string()),
        };
        let r = site_rows(&t, &spec, &batch)?;
        harmonised.insert(site.clone(), h.model.apply(&r.view())?);
    }
    let cols: Vec<usize> = spec
        .features
        .iter()
        .map(|f| {
            pooled
                .header
                .iter()
                .position(|h| h == f)
                .expect("checked above")
        })
        .collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&pooled.header)?;
    for (site, i) in &pooled.order {
        let mut row = pooled.by_site[site][*i].clone();
        let x = &harmonised[site];
        for (j, &c) in cols.iter().enumerate() {
            row[c] = x[[*i, j]].to_string();
        }
        w.write_record(&row)?;
    }
    write_output(a.out, &w.into_inner()?)?;
    let model = a.out.with_extension("model.json");
    write_output(&model, serde_json::to_string_pretty(h)?.as_bytes())?;
    eprintln!(
        "harmonised {} features over {} rows; wrote {} and {} ({} rounds)",
        spec.features.len(),
        pooled.order.len(),
        a.out.display(),
        model.display(),
        state.round
    );
    Ok(())
}

/// Arguments of `simulate lasso`.
pub struct LassoArgs<'a> {
    pub table: &'a Path,
    pub site_column: &'a str,
    pub id_column: &'a str,
    pub label_column: &'a str,
    pub features: Option<Vec<String>>,
    pub nfolds: u32,
    pub foldid_column: Option<String>,
    pub nlambda: usize,
    pub bootstrap: u32,
    pub top_k: usize,
    pub seed: u64,
    pub min_count: u64,
    /// Sites' `max_params_per_row` (their disclosure guard); `None` keeps the policy default.
    pub max_params_per_row: Option<f64>,
    pub out: &'a Path,
}

/// The `simulate lasso` JSON: the path, the CV curve and the bootstrap selection.
pub fn lasso_json(out: &federation::lasso::LassoOutput) -> serde_json::Value {
    use serde_json::{Map, Value, json};
    let cv = &out.result.cv;
    let path = &cv.path;
    let objective: Vec<f64> = path
        .lambdas
        .iter()
        .enumerate()
        .map(|(k, lam)| {
            let deviance = (1.0 - path.dev_ratio[k]) * path.null_deviance;
            let l1: f64 = path.beta[k].iter().map(|b| b.abs()).sum();
            deviance / (2.0 * path.sum_w) + lam * l1
        })
        .collect();
    let named = |values: &[f64]| -> Value {
        Value::Object(
            out.features
                .iter()
                .zip(values)
                .map(|(f, v)| (f.clone(), json!(v)))
                .collect::<Map<_, _>>(),
        )
    };
    let (frequency, top_k) = match &out.result.bootstrap {
        Some(b) => (
            named(&b.frequency),
            json!(
                b.top_k
                    .iter()
                    .map(|&j| out.features[j].clone())
                    .collect::<Vec<_>>()
            ),
        ),
        None => (Value::Null, Value::Null),
    };
    json!({
        "features": out.features,
        "lambda": path.lambdas,
        "objective": objective,
        "nzero": path.nzero,
        "dev_ratio": path.dev_ratio,
        "cvm": cv.cvm,
        "cvsd": cv.cvsd,
        "lambda_min": cv.lambda_min,
        "lambda_1se": cv.lambda_1se,
        "coefficients_lambda_min": named(&path.beta[cv.index_min]),
        "intercept_lambda_min": path.beta0[cv.index_min],
        "coefficients_lambda_min_original": named(&path.beta_original[cv.index_min]),
        "intercept_lambda_min_original": path.beta0_original[cv.index_min],
        "selection_frequency": frequency,
        "top_k": top_k,
        "rounds": out.result.rounds,
        "fit_requests": out.result.fit_requests,
    })
}

/// `aggregator simulate lasso`.
pub async fn simulate_lasso(a: LassoArgs<'_>) -> anyhow::Result<()> {
    let pooled = PooledTable::read(a.table, a.site_column)?;
    let mut excluded = vec![a.id_column, a.site_column, a.label_column];
    if let Some(c) = &a.foldid_column {
        excluded.push(c);
    }
    let features = a
        .features
        .unwrap_or_else(|| default_features(&pooled, &excluded));
    if features.is_empty() {
        bail!("no feature columns; name them with --features");
    }
    let label = a.label_column.to_string();
    let mut needed: Vec<&String> = features.iter().chain([&label]).collect();
    if let Some(c) = &a.foldid_column {
        needed.push(c);
    }
    require_columns(&pooled, a.table, &needed)?;
    let spec = federation::study::LassoSpec {
        label_column: label.clone(),
        positive_label: "1".into(),
        negative_label: "0".into(),
        features,
        nfolds: a.nfolds,
        foldid_column: a.foldid_column,
        nlambda: a.nlambda,
        bootstrap: a.bootstrap,
        top_k: a.top_k,
        seed: a.seed,
        secure_aggregation: false,
        on_masked_dropout: Default::default(),
    };
    let study = StudySpec {
        id: StudyId::new("lasso")?,
        title: format!("LASSO of {}", a.table.display()),
        analysis: AnalysisSpec::Lasso(spec),
    };
    let opts = SimOptions {
        min_count: a.min_count,
        max_params_per_row: a.max_params_per_row,
        id_column: a.id_column.to_string(),
        label_column: label,
        ..SimOptions::default()
    };
    let state = run(&pooled, study, &opts).await?;
    let Some(StudyOutput::Lasso(l)) = &state.output else {
        bail!("the study produced no LASSO result");
    };
    let json = lasso_json(l);
    write_output(a.out, serde_json::to_string_pretty(&json)?.as_bytes())?;
    eprintln!(
        "LASSO over {} sites: λ.min = {:.6}, top {:?}; {} round trips; wrote {}",
        pooled.by_site.len(),
        l.result.cv.lambda_min,
        json["top_k"],
        state.round,
        a.out.display()
    );
    Ok(())
}

/// Arguments of `simulate study`.
pub struct StudyArgs<'a> {
    pub table: &'a Path,
    pub study: &'a Path,
    pub site_column: &'a str,
    pub id_column: &'a str,
    /// Overrides of the study file's `analysis.cv` (repeats, outer folds, seed).
    pub cv: CvOverrides,
    pub min_count: u64,
    pub max_params_per_row: Option<f64>,
    pub share_models: bool,
    pub release_predictions: bool,
    pub out: &'a Path,
}

/// Command-line overrides of a pipeline study file's cross-validation (`None`: the file's).
#[derive(Debug, Clone, Copy, Default)]
pub struct CvOverrides {
    /// `analysis.cv.repeats` (also caps `repeats_per_batch`).
    pub repeats: Option<u32>,
    /// `analysis.cv.outer_folds`.
    pub folds: Option<u32>,
    /// `analysis.cv.seed` (folds, LASSO, learners, MLP; not the metrics bootstrap's).
    pub seed: Option<u64>,
}

/// Loads a pipeline study file, applying the command-line overrides; the result is validated
/// (e.g. `--folds 1` is refused with the study's own message).
pub fn load_pipeline_study(path: &Path, o: CvOverrides) -> anyhow::Result<StudySpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut spec = StudySpec::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    let AnalysisSpec::Pipeline(p) = &mut spec.analysis else {
        bail!(
            "{}: kind = {:?}; `simulate study` runs kind = \"pipeline\" studies",
            path.display(),
            spec.analysis.kind()
        );
    };
    if let Some(r) = o.repeats {
        p.cv.repeats = r;
        p.cv.repeats_per_batch = p.cv.repeats_per_batch.min(r);
    }
    if let Some(k) = o.folds {
        p.cv.outer_folds = k;
    }
    if let Some(s) = o.seed {
        p.cv.seed = s;
    }
    spec.validate()
        .with_context(|| format!("{} with the command-line overrides", path.display()))?;
    Ok(spec)
}

/// `simulate study`: the whole nested-CV pipeline over loopback mTLS, with progress on stderr;
/// writes into `out`: `pipeline.json` (settings, CV summary, metrics), the report
/// (`report.html`, `metrics.json`, curves, figures), `predictions.csv`, `selection.csv` and
/// `timing.json`.
pub async fn simulate_study(
    a: StudyArgs<'_>,
) -> anyhow::Result<federation::pipeline::PipelineOutput> {
    let spec = load_pipeline_study(a.study, a.cv)?;
    let AnalysisSpec::Pipeline(p) = &spec.analysis else {
        unreachable!("checked by load_pipeline_study")
    };
    let p = (**p).clone();
    let pooled = PooledTable::read(a.table, a.site_column)?;
    // Listed features must exist; omitted ones are resolved by the sites' first round.
    let id_column = a.id_column.to_string();
    let mut needed: Vec<&String> = p
        .features
        .iter()
        .chain([&p.label_column, &id_column])
        .collect();
    if let Some(c) = &p.clinical {
        needed.extend(&c.numeric);
        needed.extend(c.categorical.iter().map(|c| &c.column));
    }
    needed.extend(p.metrics.time_column.iter().chain(&p.metrics.event_column));
    require_columns(&pooled, a.table, &needed)?;
    let opts = SimOptions {
        min_count: a.min_count,
        max_params_per_row: a.max_params_per_row,
        share_models: a.share_models,
        release_predictions: a.release_predictions,
        id_column: id_column.clone(),
        label_column: p.label_column.clone(),
        timeout: std::time::Duration::from_secs(24 * 3600),
        ..SimOptions::default()
    };
    let started = std::time::Instant::now();
    let sim = Simulation::start(&pooled, &spec, &opts).await?;
    let setup_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "simulating {} sites over loopback mTLS (aggregator on {}): {} repeats × {} outer folds",
        sim.sites.len(),
        sim.server.addr,
        p.cv.repeats,
        p.cv.outer_folds
    );
    let id = spec.id.to_string();
    let hash = spec.hash();
    let finished = match sim.server.coordinator.submit(spec) {
        Ok(_) => watch_study(&sim, &id, opts.timeout).await,
        Err(e) => Err(e.into()),
    };
    // Everything that needs the running simulation, before it is shut down (and its folder
    // with the sites' kits removed).
    let rounds = sim.server.coordinator.rounds(&id);
    let timing = sim.server.coordinator.timing(&id);
    let predictions = match &finished {
        Ok(s) if s.status == StudyStatus::Completed => {
            Some(site_predictions(&sim, &hash, &pooled, &p, &id_column))
        }
        _ => None,
    };
    sim.shutdown().await;
    let state = finished?;
    if state.status != StudyStatus::Completed {
        bail!("the study did not complete: {}", state.status.describe());
    }
    let (rounds, predictions) = (rounds?, predictions.expect("a completed study")?);
    let Some(StudyOutput::Pipeline(out)) = &state.output else {
        bail!("the study produced no pipeline result");
    };
    std::fs::create_dir_all(a.out).with_context(|| format!("cannot create {}", a.out.display()))?;
    write_output(
        &a.out.join("pipeline.json"),
        serde_json::to_string_pretty(&out)?.as_bytes(),
    )?;
    write_output(&a.out.join("predictions.csv"), predictions.as_bytes())?;
    write_output(&a.out.join("selection.csv"), selection_csv(out).as_bytes())?;
    let timing_json = serde_json::json!({
        "study": id,
        "sites": pooled.by_site.len(),
        "repeats": out.spec.cv.repeats,
        "outer_folds": out.spec.cv.outer_folds,
        "outer_fits": out.cv.fits,
        "setup_seconds": setup_seconds,
        "study_seconds": timing.as_ref().map(|t| t.total_seconds),
        "seconds_per_repeat": timing
            .as_ref()
            .map(|t| t.total_seconds / f64::from(out.spec.cv.repeats.max(1))),
        "round_trips": timing.as_ref().map(|t| t.rounds),
        "stages": timing.as_ref().map(|t| &t.stages),
        "note": "wall seconds per stage as the aggregator saw them: each round from the previous \
                 round's completion (or the submission) to its own, i.e. the sites' computation, \
                 the network and the aggregator's step together; setup = PKI, aggregator and agents",
    });
    write_output(
        &a.out.join("timing.json"),
        serde_json::to_string_pretty(&timing_json)?.as_bytes(),
    )?;
    let (traffic, site_n) = crate::reporting::traffic_from_rounds(&rounds);
    let report = crate::reporting::study_report(&crate::reporting::ReportInputs {
        pipeline: out,
        pipeline_hash: &state.hash.to_string(),
        table1: None,
        lasso: None,
        traffic,
        site_n,
        policy: sim_policy(&opts),
        generated_at: None,
    });
    // report.html, metrics.json (the whole report's data), CSVs and figures.
    report::write_report(&report, a.out)?;
    eprintln!(
        "pipeline over {} sites: {} outer fits in {:.1} s, {} round trips; wrote {}",
        pooled.by_site.len(),
        out.cv.fits,
        started.elapsed().as_secs_f64(),
        state.round,
        a.out.display()
    );
    Ok((**out).clone())
}

/// Waits for the study to finish, showing where it is: a progress bar on a terminal, otherwise
/// one line per stage change (repeats and folds in progress, outer fits done, stage, ETA).
async fn watch_study(
    sim: &Simulation,
    id: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<StudyState> {
    use std::io::IsTerminal;
    let coord = &sim.server.coordinator;
    let started = tokio::time::Instant::now();
    let deadline = started + timeout;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(1000);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    });
    let mut last_key = String::new();
    loop {
        let notified = coord.changed.notified();
        let Some((status, round, stage)) = coord.study_progress(id) else {
            bail!("study {id} vanished from the aggregator");
        };
        if status.is_finished() {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            return coord
                .study(id)
                .with_context(|| format!("study {id} vanished from the aggregator"));
        }
        if let Some((where_, fraction)) = &stage {
            let eta = coord.timing(id).and_then(|t| t.eta_seconds);
            let line = progress_line(round, where_, *fraction, eta);
            match &bar {
                Some(b) => {
                    b.set_position((fraction * 1000.0) as u64);
                    b.set_message(line);
                }
                None => {
                    let key = stage_key(where_);
                    if key != last_key {
                        eprintln!(
                            "[{:>7}] {line}",
                            crate::timing::human(started.elapsed().as_secs_f64())
                        );
                        last_key = key;
                    }
                }
            }
        }
        if let StudyStatus::Paused { .. } = status {
            let line = status.describe();
            match &bar {
                Some(b) => b.set_message(line),
                None if last_key != line => {
                    eprintln!("{line}");
                    last_key = line;
                }
                None => {}
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            bail!(
                "study {id} did not finish within {timeout:?} (status: {})",
                status.describe()
            );
        }
        // Woken by every result; at most a few updates a second are worth showing.
        let _ = tokio::time::timeout_at(deadline, notified).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// One progress line: round, where the study is (`PipelineDriver::progress`), fraction, ETA.
pub fn progress_line(round: u32, where_: &str, fraction: f64, eta: Option<f64>) -> String {
    format!(
        "round {round}: {where_} · {:.0} % · ETA {}",
        fraction * 100.0,
        eta.map_or("estimating".to_string(), crate::timing::human)
    )
}

/// The stage part of a progress description without its round counter, so that a line is
/// printed per stage, not per round (`…; LASSO + bootstrap round 40` → `… LASSO + bootstrap`,
/// with the batch in front).
fn stage_key(where_: &str) -> String {
    let (batch, stage) = where_.rsplit_once("; ").unwrap_or(("", where_));
    let batch = batch.split(';').next().unwrap_or("");
    let stage = stage.split(" round ").next().unwrap_or(stage);
    format!("{batch} {stage}")
}

/// `predictions.csv`: each patient of the input table (in its order) with its site, label and
/// mean outer-fold probabilities over the repeats (stacked model, clinical comparator), read
/// from the simulated sites' own study memory. In a real deployment these stay at the sites;
/// here the statistician holds every site's rows anyway. A probability is empty for a patient
/// never scored (its site got no meta-features; the metrics note says so) and for the
/// comparator when the study has none.
fn site_predictions(
    sim: &Simulation,
    hash: &federation::StudyHash,
    pooled: &PooledTable,
    p: &federation::pipeline::PipelineSpec,
    id_column: &str,
) -> anyhow::Result<String> {
    let col = |name: &str| {
        pooled
            .header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("column {name:?} is missing"))
    };
    let (id_i, label_i) = (col(id_column)?, col(&p.label_column)?);
    let mut means = std::collections::BTreeMap::new();
    for site in &sim.sites {
        let config = site_agent::SiteConfig::load(&sim.kit(site).join("site.toml"))?;
        let path = site_agent::agent::memory_path(&config);
        let bytes = std::fs::read(&path).with_context(|| {
            format!(
                "site {site}: cannot read its study memory {}",
                path.display()
            )
        })?;
        let memory: federation::site::SiteMemory = serde_json::from_slice(&bytes)
            .with_context(|| format!("site {site}: {} is unreadable", path.display()))?;
        let state = memory
            .studies
            .get(hash.0.as_str())
            .with_context(|| format!("site {site} kept no state for the study (hash {hash})"))?;
        let n = pooled.by_site[site].len();
        let of = |s: Option<&federation::pipeline::site::ScoreSums>| -> anyhow::Result<_> {
            let m = s.map_or_else(|| vec![None; n], |s| s.means());
            if m.len() != n {
                bail!(
                    "site {site} kept {} patients' probabilities for its {n} rows",
                    m.len()
                );
            }
            Ok(m)
        };
        means.insert(
            site.clone(),
            (of(state.ml.as_ref())?, of(state.clinical.as_ref())?),
        );
    }
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["patient_id", "site", "y", "p_ml", "p_clinical"])?;
    let fmt = |v: Option<f64>| v.map_or_else(String::new, |x| x.to_string());
    for (site, i) in &pooled.order {
        let row = &pooled.by_site[site][*i];
        let label = row[label_i].trim();
        let y = if label == p.positive_label {
            "1"
        } else if label == p.negative_label {
            "0"
        } else {
            bail!("patient {}: label {label:?} is neither label", row[id_i]);
        };
        let (ml, clinical) = &means[site];
        w.write_record([
            row[id_i].as_str(),
            site.as_str(),
            y,
            &fmt(ml[*i]),
            &fmt(clinical[*i]),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// `selection.csv`: per candidate feature, the fraction of outer fits in which it was among the
/// LASSO's bootstrap top-k, most often selected first (ties in feature order).
pub fn selection_csv(out: &federation::pipeline::PipelineOutput) -> String {
    let cv = &out.cv;
    let mut order: Vec<usize> = (0..cv.features.len()).collect();
    order.sort_by(|&a, &b| {
        cv.selected_count[b]
            .cmp(&cv.selected_count[a])
            .then(a.cmp(&b))
    });
    let mut text = String::from("feature,frequency\n");
    for j in order {
        let f = f64::from(cv.selected_count[j]) / f64::from(cv.fits.max(1));
        let name = &cv.features[j];
        // Quoted only when needed (a comma or quote in a column name).
        if name.contains([',', '"', '\n']) {
            text.push_str(&format!("\"{}\"", name.replace('"', "\"\"")));
        } else {
            text.push_str(name);
        }
        text.push_str(&format!(",{f}\n"));
    }
    text
}

fn sim_policy(o: &SimOptions) -> Vec<report::Setting> {
    vec![
        report::Setting::new("min_count", o.min_count),
        report::Setting::new("share_models", o.share_models),
        report::Setting::new("release_predictions", o.release_predictions),
        report::Setting::new(
            "max_params_per_row",
            o.max_params_per_row
                .map_or("0.33 (default)".to_string(), |r| r.to_string()),
        ),
    ]
}

/// `aggregator report`: the statistician's report of a finished pipeline study, from the
/// results folder the server wrote (`<state>/results/<study>/`), optionally with the cohort
/// table and full-cohort LASSO of two other finished studies. Returns the report's path.
pub fn report_from_results(
    state: &Path,
    study: &str,
    table1: Option<&str>,
    lasso: Option<&str>,
    out: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    let load = |id: &str| -> anyhow::Result<(StudyOutput, serde_json::Value, String)> {
        let dir = crate::results::results_dir(state, id);
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| {
                format!(
                    "no {name} for study {id:?} in {} (finished? see `aggregator status`)",
                    dir.display()
                )
            })
        };
        let output: StudyOutput = serde_json::from_str(&read("output.json")?)
            .with_context(|| format!("study {id:?}: output.json is unreadable"))?;
        let summary: serde_json::Value = serde_json::from_str(&read("study.json")?)?;
        Ok((output, summary, read("traffic.csv").unwrap_or_default()))
    };
    let (output, summary, traffic_text) = load(study)?;
    let StudyOutput::Pipeline(pipeline) = output else {
        bail!("study {study:?} is not a pipeline study; `report` needs kind = \"pipeline\"");
    };
    let mut traffic = std::collections::BTreeMap::new();
    crate::reporting::add_traffic_csv(&traffic_text, &mut traffic);
    let t1 = match table1 {
        Some(id) => match load(id)? {
            (StudyOutput::Table1(t), _, text) => {
                crate::reporting::add_traffic_csv(&text, &mut traffic);
                Some(t)
            }
            _ => bail!("study {id:?} is not a Table 1 study"),
        },
        None => None,
    };
    let l = match lasso {
        Some(id) => match load(id)? {
            (StudyOutput::Lasso(l), _, text) => {
                crate::reporting::add_traffic_csv(&text, &mut traffic);
                Some(l)
            }
            _ => bail!("study {id:?} is not a LASSO study"),
        },
        None => None,
    };
    let report = crate::reporting::study_report(&crate::reporting::ReportInputs {
        pipeline: &pipeline,
        pipeline_hash: summary["hash"].as_str().unwrap_or_default(),
        table1: t1.as_ref(),
        lasso: l.as_ref(),
        traffic,
        site_n: Default::default(),
        policy: vec![],
        generated_at: None,
    });
    report::write_report(&report, out)?;
    Ok(out.join("report.html"))
}
