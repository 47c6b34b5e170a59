//! `aggregator demo`: the whole federated study on a laptop. A synthetic seven-hospital CT
//! cohort, a fresh PKI, this aggregator on loopback, and one separate site-agent **process** per
//! hospital: each site extracts its own features from its images, then the consortium runs
//! Table 1, a full-cohort LASSO (for the figures) and the nested-CV pipeline study over mutual
//! TLS, and the aggregator writes `report.html`, `metrics.json` and the figures.
//!
//! The site processes are this executable's hidden `site-agent` subcommand, which runs the same
//! `site_agent` library as the `site-agent` binary (so `cargo run -p aggregator -- demo` needs
//! nothing else built, and the two sides are always the same release): every hospital is its
//! own OS process holding its own data, key, audit log and local state.

use crate::config::AggregatorConfig;
use crate::reporting::{ReportInputs, study_report};
use crate::server::Server;
use anyhow::{Context, bail};
use certs::{Ca, Validity};
use federation::StudyId;
use federation::engine::{StudyOutput, StudyState, StudyStatus};
use federation::pipeline::spec::{CategoricalColumn, ClinicalSpec, CvSpec};
use federation::pipeline::{PipelineOutput, PipelineSpec};
use federation::study::{AnalysisSpec, LassoSpec, StudySpec, Table1Spec};
use federation::{SiteId, StudyHash};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The study's 56 candidate features, as its pyradiomics export named them; the demo maps them
/// to the registry's IBSI features that the sites extract (`radiomics::registry`).
pub const STUDY_PYRADIOMICS_FEATURES: [&str; 55] = [
    "shape_VoxelVolume",
    "shape_MeshVolume",
    "shape_SurfaceArea",
    "shape_SurfaceVolumeRatio",
    "shape_Sphericity",
    "shape_Maximum3DDiameter",
    "shape_Maximum2DDiameterSlice",
    "shape_Maximum2DDiameterColumn",
    "shape_Maximum2DDiameterRow",
    "shape_MajorAxisLength",
    "shape_MinorAxisLength",
    "shape_LeastAxisLength",
    "shape_Elongation",
    "shape_Flatness",
    "firstorder_Mean",
    "firstorder_Median",
    "firstorder_RootMeanSquared",
    "firstorder_10Percentile",
    "firstorder_90Percentile",
    "firstorder_Minimum",
    "firstorder_Maximum",
    "firstorder_Range",
    "firstorder_InterquartileRange",
    "firstorder_MeanAbsoluteDeviation",
    "firstorder_RobustMeanAbsoluteDeviation",
    "firstorder_Variance",
    "firstorder_Skewness",
    "firstorder_Kurtosis",
    "firstorder_Entropy",
    "firstorder_Uniformity",
    "firstorder_Energy",
    "firstorder_TotalEnergy",
    "glcm_Autocorrelation",
    "glcm_Contrast",
    "glcm_Correlation",
    "glcm_ClusterShade",
    "glcm_ClusterProminence",
    "glcm_DifferenceEntropy",
    "glcm_JointEnergy",
    "glcm_JointEntropy",
    "glcm_Idm",
    "glcm_Idmn",
    "glcm_Imc1",
    "glcm_Homogeneity",
    "glrlm_ShortRunEmphasis",
    "glrlm_LongRunEmphasis",
    "glrlm_GrayLevelNonUniformity",
    "glrlm_RunLengthNonUniformity",
    "glrlm_RunPercentage",
    "glrlm_RunEntropy",
    "glszm_SmallAreaEmphasis",
    "glszm_LargeAreaEmphasis",
    "glszm_ZonePercentage",
    "glszm_ZoneEntropy",
    "glszm_SizeZoneNonUniformity",
];

/// The clinical variables of the cohort table.
const TABLE1_VARIABLES: [&str; 8] = [
    "age",
    "sex",
    "ecog",
    "grade",
    "ki67",
    "months_dx_to_tx",
    "met_pattern",
    "prior_surgery",
];

/// `aggregator demo` options.
#[derive(Debug, Clone)]
pub struct DemoArgs {
    pub out: PathBuf,
    pub repeats: u32,
    pub sites: usize,
    pub patients: usize,
    pub seed: u64,
    /// Smoke-test settings: small searches, LASSO paths and bootstraps (the protocol's shape,
    /// not its statistical strength).
    pub quick: bool,
}

/// What the demo measured, for its closing summary and tests.
#[derive(Debug)]
pub struct DemoSummary {
    pub report_html: PathBuf,
    pub pipeline: PipelineOutput,
    pub stage_seconds: Vec<(String, f64)>,
}

/// The registry tags of the study's candidate features that `extract` writes (in its column
/// order); errors name any that the registry cannot map.
pub fn demo_feature_tags(extracted_header: &[String]) -> anyhow::Result<Vec<String>> {
    let mut tags = Vec::new();
    for name in STUDY_PYRADIOMICS_FEATURES {
        let entry = radiomics::registry::by_pyradiomics(name).map_err(anyhow::Error::msg)?;
        let Some(tag) = entry.tag else { continue };
        // Texture features exist in several aggregations; the study's pyradiomics defaults are
        // the 3D features averaged over directions (`_3D_avg`) and the 3D zone matrices.
        let candidates = [
            tag.to_string(),
            format!("{tag}_3D_avg"),
            format!("{tag}_3D"),
        ];
        if let Some(c) = candidates.iter().find(|c| extracted_header.contains(c))
            && !tags.contains(c)
        {
            tags.push(c.clone());
        }
    }
    if tags.len() < 10 {
        bail!(
            "only {} of the study's features were extracted; check the extraction settings",
            tags.len()
        );
    }
    Ok(tags)
}

/// How to start a site-agent process: this executable's hidden `site-agent` subcommand, which
/// runs the `site_agent` library. Not a `site-agent` binary found next to us: that one may come
/// from an older build and speak different messages.
fn agent_command() -> anyhow::Result<Command> {
    let me = std::env::current_exe().context("cannot locate this executable")?;
    let mut c = Command::new(me);
    c.arg("site-agent");
    Ok(c)
}

/// Kills the site processes when dropped (also on error paths).
struct Agents(Vec<(String, Child)>);

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("valid template")
        .progress_chars("=> ")
}

/// Reads a CSV into (header, rows).
fn read_csv(path: &Path) -> anyhow::Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("cannot read {}", path.display()))?;
    let header = r.headers()?.iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| Ok(rec?.iter().map(String::from).collect()))
        .collect::<anyhow::Result<_>>()?;
    Ok((header, rows))
}

/// The site's analysis table: its clinical table joined with its extracted features on
/// `patient_id` (what a site admin does once with their own tools before enrolling).
fn join_site_table(clinical: &Path, features: &Path, out: &Path) -> anyhow::Result<Vec<String>> {
    let (ch, crows) = read_csv(clinical)?;
    let (fh, frows) = read_csv(features)?;
    let fid = fh
        .iter()
        .position(|h| h == "patient_id")
        .context("features without patient_id")?;
    let cid = ch
        .iter()
        .position(|h| h == "patient_id")
        .context("clinical without patient_id")?;
    let by_id: BTreeMap<&str, &Vec<String>> = frows.iter().map(|r| (r[fid].as_str(), r)).collect();
    let mut w = csv::Writer::from_path(out)?;
    let mut header = ch.clone();
    header.extend(
        fh.iter()
            .enumerate()
            .filter(|(i, _)| *i != fid)
            .map(|(_, h)| h.clone()),
    );
    w.write_record(&header)?;
    for r in &crows {
        let Some(f) = by_id.get(r[cid].as_str()) else {
            // No lesion could be extracted for this patient: the site leaves the row out.
            continue;
        };
        let mut row = r.clone();
        row.extend(
            f.iter()
                .enumerate()
                .filter(|(i, _)| *i != fid)
                .map(|(_, v)| v.clone()),
        );
        w.write_record(&row)?;
    }
    w.flush()?;
    Ok(fh)
}

/// Shrinks a pipeline study to a smoke test (`demo --quick`).
fn quicken(p: &mut PipelineSpec) {
    use learners::search::Range;
    p.cv.inner_folds = 3;
    p.lasso.nfolds = 5;
    p.lasso.nlambda = 30;
    p.lasso.bootstrap = 10;
    let s = &mut p.learners.search;
    s.budget.svm = 2;
    s.budget.forest = 2;
    s.budget.gbm = 2;
    s.forest.n_trees = Range::Fixed { value: 25.0 };
    s.gbm.n_rounds = Range::IntUniform { low: 10, high: 40 };
    p.meta.hidden = vec![8];
    p.meta.alpha = 1e-2;
    p.metrics.bootstrap = 200;
}

/// The pipeline study of the demo: the published protocol with `repeats` repeats.
pub fn pipeline_spec(features: Vec<String>, repeats: u32, seed: u64, quick: bool) -> StudySpec {
    let mut spec = PipelineSpec {
        label_column: "response".into(),
        positive_label: "1".into(),
        negative_label: "0".into(),
        features,
        exclude_columns: vec![],
        batch_column: None,
        secure_aggregation: false,
        on_masked_dropout: Default::default(),
        combat_mode: Default::default(),
        cv: CvSpec {
            seed,
            repeats,
            repeats_per_batch: repeats.min(10),
            ..CvSpec::default()
        },
        lasso: Default::default(),
        learners: Default::default(),
        meta: Default::default(),
        clinical: Some(ClinicalSpec {
            numeric: vec!["ki67".into(), "months_dx_to_tx".into()],
            categorical: vec![
                CategoricalColumn {
                    column: "grade".into(),
                    levels: vec!["G1".into(), "G2".into()],
                },
                CategoricalColumn {
                    column: "ecog".into(),
                    levels: vec!["0".into(), "1".into()],
                },
                CategoricalColumn {
                    column: "met_pattern".into(),
                    levels: vec!["single".into(), "multifocal".into(), "diffuse".into()],
                },
            ],
        }),
        metrics: federation::pipeline::spec::MetricsSpec {
            time_column: Some("pfs_months".into()),
            event_column: Some("pfs_event".into()),
            ..Default::default()
        },
    };
    if quick {
        quicken(&mut spec);
    }
    StudySpec {
        id: StudyId::new("pipeline").expect("valid id"),
        title: "Federated radiomics response prediction".into(),
        analysis: AnalysisSpec::Pipeline(Box::new(spec)),
    }
}

fn table1_spec() -> StudySpec {
    StudySpec {
        id: StudyId::new("table1").expect("valid id"),
        title: "Baseline characteristics by response".into(),
        analysis: AnalysisSpec::Table1(Table1Spec {
            secure_aggregation: false,
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            variables: TABLE1_VARIABLES.map(String::from).to_vec(),
            categorical: ["sex", "ecog", "grade", "met_pattern", "prior_surgery"]
                .map(String::from)
                .to_vec(),
            resolution: 1e-9,
            depth_per_round: 4,
            on_masked_dropout: Default::default(),
        }),
    }
}

fn lasso_spec(features: Vec<String>, seed: u64, quick: bool) -> StudySpec {
    StudySpec {
        id: StudyId::new("lasso").expect("valid id"),
        title: "LASSO feature selection on the whole cohort".into(),
        analysis: AnalysisSpec::Lasso(LassoSpec {
            label_column: "response".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            features,
            nfolds: 10,
            foldid_column: None,
            nlambda: if quick { 30 } else { 100 },
            bootstrap: if quick { 20 } else { 100 },
            top_k: 5,
            seed,
            secure_aggregation: false,
            on_masked_dropout: Default::default(),
        }),
    }
}

/// The sites' policy for the demo studies.
fn policy_toml(hashes: &[StudyHash]) -> String {
    format!(
        "# Written by `aggregator demo`: this site takes part in exactly these studies.\n\
         min_count = 5\n\
         allow_all_studies = false\n\
         allowed_studies = [{}]\n\
         # Relay fitted base models to the other sites (an RBF-SVM carries support vectors,\n\
         # i.e. training patients' feature vectors; see ARCHITECTURE.md). Set false to keep them home.\n\
         share_models = true\n\
         release_predictions = false\n\
         # The study's LASSO has 55 candidate features and ~11 training rows per site and fold:\n\
         # the demo consortium turns the parameters-per-row guard off for it.\n\
         max_params_per_row = inf\n",
        hashes
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

async fn wait_study(
    server: &Server,
    id: &str,
    bar: &ProgressBar,
    agents: &mut Agents,
) -> anyhow::Result<StudyState> {
    loop {
        for (site, child) in &mut agents.0 {
            if let Some(status) = child.try_wait()? {
                bail!("the agent of site {site} exited ({status}); see its agent.log");
            }
        }
        if let Some((status, round, stage)) = server.coordinator.study_progress(id) {
            match &stage {
                Some((s, f)) => {
                    bar.set_position((f * 1000.0) as u64);
                    bar.set_message(format!("round {round}: {s}"));
                }
                None => bar.set_message(format!("round {round}")),
            }
            match status {
                StudyStatus::Completed => break,
                StudyStatus::Failed { reason } => bail!("study {id} failed: {reason}"),
                StudyStatus::Paused { .. } => bar.set_message(status.describe()),
                StudyStatus::Running => {}
            }
        }
        let notified = server.coordinator.changed.notified();
        let _ = tokio::time::timeout(Duration::from_millis(500), notified).await;
    }
    server
        .coordinator
        .study(id)
        .with_context(|| format!("study {id} vanished"))
}

/// Runs the demo; prints progress to stderr and the summary to stdout.
pub async fn run_demo(a: DemoArgs) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    let mut stage_seconds = Vec::new();
    let mut lap = Instant::now();
    let mut mark = |name: &str, lap: &mut Instant| {
        stage_seconds.push((name.to_string(), lap.elapsed().as_secs_f64()));
        *lap = Instant::now();
    };
    let out = &a.out;
    let work = out.join("work");
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear the previous demo in {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    let multi = MultiProgress::new();

    // 1. The synthetic cohort: each hospital's images, masks and clinical table.
    let cohort = work.join("cohort");
    let bar = multi.add(ProgressBar::new_spinner());
    bar.set_message(format!(
        "generating the synthetic cohort ({} patients, {} sites)",
        a.patients, a.sites
    ));
    bar.enable_steady_tick(Duration::from_millis(120));
    let plan = synth::plan_cohort(&synth::CohortParams::new(a.sites, a.patients, a.seed))?;
    let written = synth::write_cohort(&plan, &cohort, &synth::WriteOptions { force: true })?;
    bar.finish_with_message(format!(
        "cohort: {} patients, {} lesions, {} sites ({:.0} MB of CT)",
        written.n_patients,
        written.n_lesions,
        written.n_sites,
        written.bytes as f64 / 1e6
    ));
    mark("synthetic cohort", &mut lap);
    let mut sites: Vec<SiteId> = Vec::new();
    for e in std::fs::read_dir(&cohort)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            sites.push(SiteId::new(e.file_name().to_string_lossy().to_string())?);
        }
    }
    sites.sort();

    // 2. A fresh PKI and the aggregator on loopback.
    let mut ca = Ca::init(&work.join("pki"), "fedrad demo consortium CA", 30)?;
    let agg_dir = work.join("aggregator");
    ca.write_aggregator_kit(
        &agg_dir,
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Validity::days(2),
    )?;
    let cfg = AggregatorConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: agg_dir.join("state"),
        enrolled_sites: sites.clone(),
        round_deadline_ms: 10 * 60 * 1000,
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

    // 3. At each hospital: its kit, then feature extraction from its own images (a process each).
    let kits = work.join("sites");
    let mut extractions = Vec::new();
    for site in &sites {
        let kit = ca.write_site_kit(site.as_str(), &kits, &url, Validity::days(2))?;
        let bar = multi.add(ProgressBar::new_spinner());
        bar.set_style(style("{spinner} {prefix:>4} {msg}"));
        bar.set_prefix(site.to_string());
        bar.set_message("extracting IBSI features from its CT images");
        bar.enable_steady_tick(Duration::from_millis(120));
        let child = agent_command()?
            .args(["extract", "--manifest"])
            .arg(cohort.join(site.as_str()).join("lesions.csv"))
            .arg("--out")
            .arg(kit.join("features.csv"))
            .args(["--threads", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(kit.join("extract.log"))?)
            .spawn()
            .context("cannot start the site's extraction")?;
        extractions.push((site.clone(), kit, child, bar));
    }
    let mut feature_header = Vec::new();
    for (site, kit, mut child, bar) in extractions {
        let status = tokio::task::spawn_blocking(move || child.wait()).await??;
        if !status.success() {
            bar.abandon_with_message("extraction failed");
            bail!(
                "site {site}: feature extraction failed; see {}",
                kit.join("extract.log").display()
            );
        }
        feature_header = join_site_table(
            &cohort.join(site.as_str()).join("clinical.csv"),
            &kit.join("features.csv"),
            &kit.join("data.csv"),
        )?;
        bar.finish_with_message("features extracted; data.csv ready (stays at the site)");
    }
    mark("feature extraction at the sites", &mut lap);
    let features = demo_feature_tags(&feature_header)?;

    // 4. The studies, their hashes in every site's policy, and one agent process per site.
    let studies = [
        table1_spec(),
        lasso_spec(features.clone(), a.seed, a.quick),
        pipeline_spec(features.clone(), a.repeats, a.seed, a.quick),
    ];
    let hashes: Vec<StudyHash> = studies.iter().map(StudySpec::hash).collect();
    let mut agents = Agents(Vec::new());
    for site in &sites {
        let kit = kits.join(site.as_str());
        std::fs::write(kit.join("policy.toml"), policy_toml(&hashes))?;
        std::fs::write(
            kit.join("site.toml"),
            format!(
                "aggregator_url = \"{url}\"\naggregator_name = \"localhost\"\nca_cert = \"ca.pem\"\ncert = \"site.pem\"\nkey = \"site.key\"\npolicy = \"policy.toml\"\ndata_table = \"data.csv\"\nid_column = \"patient_id\"\nlabel_column = \"response\"\naudit_log = \"audit.jsonl\"\nstate_dir = \"state\"\n"
            ),
        )?;
        let child = agent_command()?
            .args(["run", "--config"])
            .arg(kit.join("site.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(kit.join("agent.log"))?)
            .spawn()
            .with_context(|| format!("cannot start the agent of site {site}"))?;
        agents.0.push((site.to_string(), child));
    }

    let mut outputs = Vec::new();
    let mut table1_rounds = Vec::new();
    for spec in studies {
        let id = spec.id.to_string();
        let bar = multi.add(ProgressBar::new(1000));
        bar.set_style(style(
            "{prefix:>8} [{bar:30}] {elapsed_precise} (ETA {eta}) {msg}",
        ));
        bar.set_prefix(id.clone());
        bar.enable_steady_tick(Duration::from_millis(200));
        server.coordinator.submit(spec)?;
        let state = wait_study(&server, &id, &bar, &mut agents).await?;
        bar.set_position(1000);
        bar.finish_with_message(format!("done in {} rounds", state.round));
        mark(&format!("study {id}"), &mut lap);
        // Only Table 1's rounds are read back (its first round holds each site's released
        // patient count). Every other study's traffic comes from the `traffic.csv` the server
        // writes with its results: reading back the pipeline's few hundred rounds, with every
        // site's result bodies, cost as much as the server writing them.
        if matches!(state.spec.analysis, AnalysisSpec::Table1(_)) {
            table1_rounds.extend(server.coordinator.rounds(&id)?);
        }
        outputs.push(state);
    }
    drop(agents);
    // The server writes each finished study's results folder in its housekeeping loop; stopping
    // it before that happened would leave `work/aggregator/state/results/` incomplete.
    let results_written = |id: &str| {
        crate::results::results_dir(&server.state_dir, id)
            .join("study.json")
            .exists()
    };
    let waited = Instant::now();
    while !outputs.iter().all(|s| results_written(s.spec.id.as_str())) {
        if waited.elapsed() > Duration::from_secs(600) {
            bail!(
                "the aggregator did not write the studies' results under {} within 10 minutes",
                server.state_dir.join("results").display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state_dir = server.state_dir.clone();
    server.shutdown().await;
    mark("server: results folders", &mut lap);

    // 5. The report.
    let (mut table1, mut lasso, mut pipeline, mut pipeline_hash) = (None, None, None, None);
    for s in &outputs {
        match &s.output {
            Some(StudyOutput::Table1(t)) => table1 = Some(t),
            Some(StudyOutput::Lasso(l)) => lasso = Some(l),
            Some(StudyOutput::Pipeline(p)) => {
                pipeline = Some(p.as_ref());
                pipeline_hash = Some(s.hash.to_string());
            }
            _ => {}
        }
    }
    let pipeline = pipeline.context("the pipeline study produced no output")?;
    let (_, site_n) = crate::reporting::traffic_from_rounds(&table1_rounds);
    let mut traffic = BTreeMap::new();
    for s in &outputs {
        let path = crate::results::results_dir(&state_dir, s.spec.id.as_str()).join("traffic.csv");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        crate::reporting::add_traffic_csv(&text, &mut traffic);
    }
    let inputs = ReportInputs {
        pipeline,
        pipeline_hash: pipeline_hash.as_deref().unwrap_or_default(),
        table1,
        lasso,
        traffic,
        site_n,
        policy: vec![
            report::Setting::new("min_count", 5),
            report::Setting::new("share_models", true),
            report::Setting::new("release_predictions", false),
            report::Setting::new("max_params_per_row", "inf (guard off for this study)"),
        ],
        generated_at: None,
    };
    let report = study_report(&inputs);
    report::write_report(&report, out)?;
    mark("report", &mut lap);
    let summary = DemoSummary {
        report_html: out.join("report.html"),
        pipeline: pipeline.clone(),
        stage_seconds,
    };
    print_summary(&summary, started.elapsed().as_secs_f64());
    Ok(summary)
}

/// The closing summary: the study's Table 2 (ML vs clinical) and the PFS hazard ratios.
pub fn print_summary(s: &DemoSummary, total_seconds: f64) {
    let m = &s.pipeline.metrics;
    println!();
    println!(
        "Discrimination of the mean out-of-fold probability ({} outer fits):",
        s.pipeline.cv.fits
    );
    println!(
        "  {:<18} {:>22} {:>9} {:>12} {:>12} {:>7}",
        "model", "AUC (95% CI)", "accuracy", "sensitivity", "specificity", "F1"
    );
    let f = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.3}"));
    for model in &m.models {
        let auc = match (model.auc.value, model.auc.ci_lower, model.auc.ci_upper) {
            (Some(v), Some(l), Some(u)) => format!("{v:.3} ({l:.3}–{u:.3})"),
            (v, _, _) => f(v),
        };
        println!(
            "  {:<18} {:>22} {:>9} {:>12} {:>12} {:>7}",
            model.name,
            auc,
            f(model.accuracy.value),
            f(model.sensitivity.value),
            f(model.specificity.value),
            f(model.f1.value)
        );
    }
    for c in &m.comparisons {
        println!(
            "  paired DeLong {} vs {}: p = {}",
            c.model_a,
            c.model_b,
            f(Some(c.delong.p_value))
        );
    }
    for sv in &m.survival {
        for cox in &sv.cox {
            println!(
                "  PFS by {}: HR {} ({}–{}), p = {}, {}",
                sv.grouping,
                f(cox.hazard_ratio.value),
                f(cox.hazard_ratio.ci_lower),
                f(cox.hazard_ratio.ci_upper),
                f(Some(cox.p_value)),
                cox.model
            );
        }
    }
    for note in &m.notes {
        println!("  note: {note}");
    }
    println!();
    for (stage, secs) in &s.stage_seconds {
        println!("  {stage:<34} {secs:>7.1} s");
    }
    println!("  {:<34} {total_seconds:>7.1} s", "total");
    println!("report: {}", s.report_html.display());
}
