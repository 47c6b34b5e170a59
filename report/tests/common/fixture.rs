//! The fixture study for the report tests and the `fixture` example: a small synthetic 7-site
//! cohort run through the real computations (federated Table 1 in process, federated LASSO
//! with bootstrap selection, count-table metrics with bootstrap CIs and the two-round paired
//! DeLong, survival count tables with KM / log-rank / Cox), so every number in the report comes
//! from the crates that produce it in a study, not from hand-typed values.
//!
//! Simplifications (it is a fixture): the ML probabilities are the LASSO's in-sample
//! predictions at λ.min, the clinical model is a logistic regression on Ki-67 fitted on the
//! pooled rows, and per-site traffic counts the JSON size of the metrics / survival messages
//! built here (Table 1 and LASSO traffic are not counted).

#![allow(dead_code)]

use std::collections::BTreeMap;

use federation::SiteId;
use federation::engine::{StudyOutput, StudyStatus};
use federation::local::run_local;
use federation::policy::SitePolicy;
use federation::study::StudySpec;
use federation::table::SiteTable;
use models::lasso::{BootstrapConfig, BootstrapLambda, LassoConfig, run_lasso};
use models::logistic::{LogisticOptions, logistic_pooled};
use models::sampling::{SiteData, assign_stratified_folds};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use report::{
    LassoReport, NamedSeed, Part, Setting, SiteContribution, StudyReport, StudySettings,
    SurvivalAnalysis, SurvivalPart,
};
use stats::metrics::{
    self, BootstrapOptions, MergeRule, MetricOptions, PooledScoreTable, ScoreGrid, SiteScoreTable,
};
use stats::report::{
    ComparisonReport, CoxReport, KmCurveReport, MetricsSource, ModelReport, Report,
};
use stats::survival::{
    self, CoxTies, GroupTable, KmCi, NewtonOptions, SiteSurvivalTable, TimeResolution,
    TwoGroupTable,
};

const SEED: u64 = 20_240_611;
const SITES: usize = 7;
const PER_SITE: usize = 40;
const MIN_COUNT: u64 = 5;
const BOOT_B: usize = 300;
const LASSO_BOOT: u32 = 40;

/// Radiomics-like feature names (long, as real ones are); the first three carry the signal.
pub const FEATURES: [&str; 14] = [
    "original_glszm_SmallAreaLowGrayLevelEmphasis",
    "original_firstorder_Entropy",
    "original_shape_Sphericity",
    "original_glcm_Contrast",
    "original_glcm_Correlation",
    "original_glrlm_RunLengthNonUniformity",
    "original_ngtdm_Busyness",
    "original_firstorder_Kurtosis",
    "original_firstorder_Skewness",
    "original_shape_SurfaceVolumeRatio",
    "original_gldm_DependenceEntropy",
    "original_glcm_Idmn",
    "original_firstorder_90Percentile",
    "original_shape_Maximum3DDiameter",
];

/// One synthetic patient.
#[derive(Debug, Clone)]
pub struct Patient {
    pub site: usize,
    pub x: Vec<f64>,
    pub age: f64,
    pub sex: &'static str,
    pub ecog: u8,
    pub ki67: f64,
    pub response: bool,
    pub pfs: f64,
    pub progressed: bool,
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    // Box-Muller: rand_distr is not a dependency of this crate.
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// The cohort (deterministic).
pub fn cohort() -> Vec<Patient> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let mut out = Vec::new();
    for site in 0..SITES {
        let batch: f64 = 0.3 * normal(&mut rng);
        for _ in 0..PER_SITE {
            let latent = normal(&mut rng);
            let x: Vec<f64> = (0..FEATURES.len())
                .map(|j| {
                    let load = match j {
                        0 => 0.9,
                        1 => -0.7,
                        2 => 0.5,
                        3 => 0.3,
                        _ => 0.0,
                    };
                    load * latent + 0.6 * normal(&mut rng) + batch
                })
                .collect();
            let ki67 = (12.0 + 6.0 * normal(&mut rng) - 2.0 * latent).clamp(1.0, 60.0);
            let lin = -0.2 + 1.6 * latent - 0.04 * (ki67 - 12.0);
            let response = rng.r#gen::<f64>() < sigmoid(lin);
            let hazard = 0.07 * (-0.9 * f64::from(u8::from(response)) - 0.3 * latent).exp();
            let t_event = -rng.gen_range(f64::EPSILON..1.0f64).ln() / hazard;
            let t_cens = rng.gen_range(8.0..36.0);
            let pfs = (t_event.min(t_cens) * 10.0).round().max(1.0) / 10.0;
            out.push(Patient {
                site,
                x,
                age: (62.0 + 10.0 * normal(&mut rng)).round().clamp(25.0, 90.0),
                sex: if rng.gen_bool(0.45) { "F" } else { "M" },
                ecog: if rng.gen_bool(0.55) {
                    0
                } else if rng.gen_bool(0.8) {
                    1
                } else {
                    2
                },
                ki67: (ki67 * 10.0).round() / 10.0,
                response,
                pfs,
                progressed: t_event <= t_cens,
            });
        }
    }
    out
}

fn site_name(s: usize) -> String {
    format!("S{:02}", s + 1)
}

fn by_site(c: &[Patient]) -> Vec<Vec<&Patient>> {
    (0..SITES)
        .map(|s| c.iter().filter(|p| p.site == s).collect())
        .collect()
}

/// Federated Table 1, run in process through the agents' gate.
pub fn table1(c: &[Patient]) -> Part<federation::table1::Table1Output> {
    let spec = StudySpec::from_toml(
        r#"
id = "report-fixture-table1"
title = "Baseline characteristics by response"
[analysis]
kind = "table1"
label_column = "response"
positive_label = "1"
negative_label = "0"
variables = ["age", "sex", "ecog", "ki67"]
categorical = ["sex", "ecog"]
resolution = 1e-9
depth_per_round = 4
"#,
    )
    .expect("fixture Table 1 spec");
    let policy = SitePolicy {
        allowed_studies: vec![spec.hash().0],
        min_count: MIN_COUNT,
        ..SitePolicy::default()
    };
    let header: Vec<String> = ["patient_id", "age", "sex", "ecog", "ki67", "response"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut tables = BTreeMap::new();
    for (s, pts) in by_site(c).into_iter().enumerate() {
        let rows: Vec<Vec<String>> = pts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                vec![
                    format!("{}-{i:03}", site_name(s)),
                    p.age.to_string(),
                    p.sex.to_string(),
                    p.ecog.to_string(),
                    p.ki67.to_string(),
                    u8::from(p.response).to_string(),
                ]
            })
            .collect();
        let t = SiteTable::new(header.clone(), rows)
            .and_then(|t| t.with_id_column("patient_id"))
            .expect("fixture site table");
        tables.insert(
            SiteId::new(site_name(s)).expect("site id"),
            (t, policy.clone()),
        );
    }
    match run_local(spec, &tables, 200) {
        Ok(state) if state.status == StudyStatus::Completed => match state.output {
            Some(StudyOutput::Table1(t)) => Part::Available(t),
            _ => Part::Unavailable {
                reason: "the Table 1 run produced no Table 1".into(),
            },
        },
        Ok(state) => Part::Unavailable {
            reason: format!("the Table 1 run ended as {:?}", state.status),
        },
        Err(e) => Part::Unavailable {
            reason: e.to_string(),
        },
    }
}

/// Federated LASSO with bootstrap selection frequencies.
pub fn lasso(c: &[Patient]) -> LassoReport {
    let sites: Vec<SiteData> = by_site(c)
        .into_iter()
        .enumerate()
        .map(|(s, pts)| {
            let p = FEATURES.len();
            let x = Array2::from_shape_vec(
                (pts.len(), p),
                pts.iter().flat_map(|q| q.x.iter().copied()).collect(),
            )
            .expect("feature matrix");
            let y: Vec<f64> = pts
                .iter()
                .map(|q| f64::from(u8::from(q.response)))
                .collect();
            let folds = assign_stratified_folds(&y, 5, SEED, s as u64 + 1);
            SiteData {
                site_id: s as u64 + 1,
                x,
                y,
                fold_schemes: vec![folds],
            }
        })
        .collect();
    let mut cfg = LassoConfig::new(FEATURES.len(), 5);
    cfg.bootstrap = Some(BootstrapConfig {
        replicates: LASSO_BOOT,
        seed: SEED,
        top_k: 5,
        lambda: BootstrapLambda::MainLambdaMin,
    });
    let result = run_lasso(&cfg, &sites, f64::INFINITY).expect("fixture LASSO");
    LassoReport {
        feature_names: FEATURES.iter().map(|s| s.to_string()).collect(),
        result,
    }
}

/// Per-patient probabilities of the two models: (ML, clinical).
pub fn predictions(c: &[Patient], l: &LassoReport) -> (Vec<f64>, Vec<f64>) {
    let cv = &l.result.cv;
    let k = cv.index_min;
    let b0 = cv.path.beta0_original[k];
    let b = &cv.path.beta_original[k];
    let ml: Vec<f64> = c
        .iter()
        .map(|p| sigmoid(b0 + p.x.iter().zip(b).map(|(x, w)| x * w).sum::<f64>()))
        .collect();
    let xk = Array2::from_shape_vec((c.len(), 1), c.iter().map(|p| p.ki67).collect())
        .expect("ki67 column");
    let y: Vec<f64> = c.iter().map(|p| f64::from(u8::from(p.response))).collect();
    let fit = logistic_pooled(xk.view(), &y, None, LogisticOptions::default())
        .expect("clinical logistic fit");
    let clin: Vec<f64> = c
        .iter()
        .map(|p| sigmoid(fit.coef[0] + fit.coef[1] * p.ki67))
        .collect();
    (ml, clin)
}

struct Traffic {
    messages: u64,
    bytes: u64,
    suppressed: u64,
}

fn json_len<T: serde::Serialize>(t: &T) -> u64 {
    serde_json::to_vec(t).map_or(0, |v| v.len() as u64)
}

fn occupied_bins(grid: ScoreGrid, p: &[f64]) -> u64 {
    let mut b: Vec<u32> = p.iter().map(|&x| grid.bin_of(x)).collect();
    b.sort_unstable();
    b.dedup();
    b.len() as u64
}

/// Survival of one grouping from the sites' count tables: KM per group, log-rank, pooled and
/// site-stratified Cox. `groups[s][i]` is patient i of site s's group (0/1).
fn survival_from_sites(
    sites: &[Vec<&Patient>],
    groups: &[Vec<usize>],
    labels: [&str; 2],
    grouping: &str,
    traffic: &mut [Traffic],
) -> Part<SurvivalAnalysis> {
    let grid: Vec<f64> = (1..=40).map(f64::from).collect();
    let mut tables = Vec::new();
    for (s, pts) in sites.iter().enumerate() {
        let times: Vec<f64> = pts.iter().map(|p| p.pfs).collect();
        let ev: Vec<bool> = pts.iter().map(|p| p.progressed).collect();
        let t = match SiteSurvivalTable::build(
            &times,
            &ev,
            &groups[s],
            2,
            &TimeResolution::Grid(grid.clone()),
            MIN_COUNT,
            MergeRule::CellTotal,
        ) {
            Ok(t) => t,
            Err(e) => {
                return Part::Unavailable {
                    reason: format!("site {}: {e}", site_name(s)),
                };
            }
        };
        // Cells the site coarsened away: distinct (group, grid time) cells with a patient
        // minus the cells it released.
        let mut cells: Vec<(usize, u64)> = times
            .iter()
            .zip(&groups[s])
            .map(|(t, g)| {
                let k = grid.iter().position(|x| x >= t).unwrap_or(grid.len());
                (*g, k as u64)
            })
            .collect();
        cells.sort_unstable();
        cells.dedup();
        let released: usize = t.groups.iter().map(Vec::len).sum();
        traffic[s].suppressed += (cells.len() as u64).saturating_sub(released as u64);
        traffic[s].messages += 1;
        traffic[s].bytes += json_len(&t);
        tables.push(t);
    }
    let pooled = match survival::pool_survival(&tables) {
        Ok(g) => g,
        Err(e) => {
            return Part::Unavailable {
                reason: e.to_string(),
            };
        }
    };
    let empty = GroupTable { rows: Vec::new() };
    let g0 = pooled.first().unwrap_or(&empty);
    let g1 = pooled.get(1).unwrap_or(&empty);
    let curves: Vec<KmCurveReport> = [(g0, labels[0]), (g1, labels[1])]
        .into_iter()
        .filter_map(|(g, l)| {
            survival::kaplan_meier(g, KmCi::LogLog, 0.95)
                .ok()
                .map(|km| KmCurveReport::new(l, &km))
        })
        .collect();
    let two = TwoGroupTable::align(g0, g1);
    let site_two: Vec<TwoGroupTable> = tables
        .iter()
        .filter_map(|t| survival::pool_survival(std::slice::from_ref(t)).ok())
        .map(|g| TwoGroupTable::align(&g[0], &g[1]))
        .collect();
    let opts = NewtonOptions::default();
    let cox = match (
        survival::fit_cox_binary_pooled(&two, CoxTies::Efron, &opts),
        survival::fit_cox_binary_stratified(&site_two, CoxTies::Efron, &opts),
    ) {
        (Ok(a), Ok(b)) => Part::Available(vec![
            CoxReport::new("pooled", &a),
            CoxReport::new("site-stratified", &b),
        ]),
        (Err(e), _) | (_, Err(e)) => Part::Unavailable {
            reason: e.to_string(),
        },
    };
    Part::Available(SurvivalAnalysis {
        grouping: grouping.into(),
        endpoint: "progression-free survival, months".into(),
        time_resolution: format!(
            "monthly grid (1–40 months), cells below min_count = {MIN_COUNT} merged at the sites"
        ),
        curves,
        log_rank: Part::from_result(survival::log_rank(&two)),
        cox,
    })
}

/// The full fixture report.
pub fn fixture_report() -> StudyReport {
    let c = cohort();
    let sites = by_site(&c);
    let l = lasso(&c);
    let (ml, clin) = predictions(&c, &l);
    let grid = ScoreGrid::default();
    let rule = MergeRule::CellTotal;
    let mut traffic: Vec<Traffic> = (0..SITES)
        .map(|_| Traffic {
            messages: 0,
            bytes: 0,
            suppressed: 0,
        })
        .collect();
    // Per-site slices of the two models' probabilities.
    let mut offs = 0;
    let mut site_p: Vec<(Vec<f64>, Vec<f64>, Vec<bool>)> = Vec::new();
    for pts in &sites {
        let n = pts.len();
        site_p.push((
            ml[offs..offs + n].to_vec(),
            clin[offs..offs + n].to_vec(),
            pts.iter().map(|p| p.response).collect(),
        ));
        offs += n;
    }
    let ta: Vec<SiteScoreTable> = site_p
        .iter()
        .map(|(a, _, y)| SiteScoreTable::build(grid, a, y, MIN_COUNT, rule).expect("ML table"))
        .collect();
    let tb: Vec<SiteScoreTable> = site_p
        .iter()
        .map(|(_, b, y)| SiteScoreTable::build(grid, b, y, MIN_COUNT, rule).expect("clin table"))
        .collect();
    for (s, (a, b)) in ta.iter().zip(&tb).enumerate() {
        traffic[s].messages += 2;
        traffic[s].bytes += json_len(a) + json_len(b);
        traffic[s].suppressed += occupied_bins(grid, &site_p[s].0) - a.cells.len() as u64;
        traffic[s].suppressed += occupied_bins(grid, &site_p[s].1) - b.cells.len() as u64;
    }
    let pa = PooledScoreTable::pool(&ta).expect("pool ML");
    let pb = PooledScoreTable::pool(&tb).expect("pool clinical");
    let opts = MetricOptions::default();
    let ma = metrics::evaluate_pooled(&pa, &opts).expect("ML metrics");
    let mb = metrics::evaluate_pooled(&pb, &opts).expect("clinical metrics");
    let boot = BootstrapOptions {
        replicates: BOOT_B,
        seed: SEED,
        conf_level: 0.95,
    };
    let ba = metrics::bootstrap_cis(&pa.ranked(), ma.youden.threshold, &boot).expect("boot ML");
    let bb = metrics::bootstrap_cis(&pb.ranked(), mb.youden.threshold, &boot).expect("boot clin");
    // Paired DeLong, round 2: each site returns its cross-placement sums.
    let replies: Vec<Vec<metrics::CrossPlacementSums>> = site_p
        .iter()
        .zip(ta.iter().zip(&tb))
        .enumerate()
        .map(|(s, ((a, b, y), (t_a, t_b)))| {
            let vb = pb.site_placements(t_b);
            let r = metrics::site_cross_placements(t_a, t_b, a, b, y, &vb).expect("placements");
            traffic[s].messages += 1;
            traffic[s].bytes += json_len(&r);
            r
        })
        .collect();
    let pairs: Vec<_> = ta
        .iter()
        .zip(&replies)
        .map(|(t, r)| (t, r.as_slice()))
        .collect();
    let paired = metrics::paired_delong_from_tables(&pa, &pb, &pairs, 0.95).expect("paired");
    let mut rep = Report::new(MetricsSource::CountTables {
        score_bins: grid.n_bins(),
        max_min_count: MIN_COUNT,
    });
    rep.models
        .push(ModelReport::new("LASSO radiomics", &ma, Some(&ba)));
    rep.models
        .push(ModelReport::new("clinical (Ki-67)", &mb, Some(&bb)));
    rep.comparisons.push(ComparisonReport {
        model_a: "LASSO radiomics".into(),
        model_b: "clinical (Ki-67)".into(),
        delong: paired,
        source: "two-round placement sums over the 1-D count tables".into(),
    });
    // Survival by predicted group: the aggregator tells each site which cells are "high".
    let pred_groups: Vec<Vec<usize>> = site_p
        .iter()
        .zip(&ta)
        .map(|((a, _, _), t)| {
            let high = pa.site_cell_is_high(t, ma.youden.threshold);
            a.iter()
                .map(|&p| usize::from(t.cell_index(p).is_some_and(|i| high[i])))
                .collect()
        })
        .collect();
    let obs_groups: Vec<Vec<usize>> = sites
        .iter()
        .map(|pts| pts.iter().map(|p| usize::from(p.response)).collect())
        .collect();
    let predicted = survival_from_sites(
        &sites,
        &pred_groups,
        ["predicted low", "predicted high"],
        "predicted group (LASSO radiomics at the Youden cut-off)",
        &mut traffic,
    );
    let observed = survival_from_sites(
        &sites,
        &obs_groups,
        ["non-responders", "responders"],
        "observed best overall response",
        &mut traffic,
    );
    let site_rows: Vec<SiteContribution> = sites
        .iter()
        .enumerate()
        .map(|(s, pts)| SiteContribution {
            site: site_name(s),
            n: Some(pts.len() as u64),
            messages_sent: traffic[s].messages,
            bytes_sent: traffic[s].bytes,
            suppressed_cells: traffic[s].suppressed,
            note: None,
        })
        .collect();
    let mut r = StudyReport::new(StudySettings {
        study_id: "report-fixture".into(),
        title: "Fixture study: radiomics response model (synthetic 7-site cohort)".into(),
        spec_hash: "fixture-not-a-real-spec".into(),
        seeds: vec![
            NamedSeed {
                name: "cohort".into(),
                seed: SEED,
            },
            NamedSeed {
                name: "folds and LASSO bootstrap".into(),
                seed: SEED,
            },
            NamedSeed {
                name: "metrics bootstrap".into(),
                seed: SEED,
            },
        ],
        cv_scheme: "5-fold CV, folds stratified by response within each site".into(),
        policy: vec![
            Setting::new("min_count", MIN_COUNT),
            Setting::new("release_predictions", false),
            Setting::new(
                "merge rule",
                "cell total (each released cell ≥ min_count patients)",
            ),
        ],
        other: vec![
            Setting::new("score grid", format!("{} bins", grid.n_bins())),
            Setting::new("metrics bootstrap B", BOOT_B),
            Setting::new("LASSO bootstrap B", LASSO_BOOT),
        ],
        generated_at: None,
    });
    r.table1 = table1(&c);
    r.lasso = Part::Available(l);
    r.metrics = Part::Available(rep);
    r.survival = SurvivalPart {
        predicted,
        observed,
    };
    r.sites = Part::Available(site_rows);
    r.notes.push(
        "Synthetic fixture: ML probabilities are in-sample LASSO predictions at λ.min; the \
         clinical comparator is a logistic regression on Ki-67."
            .into(),
    );
    r
}

/// A study that stopped before survival: the survival parts carry a reason produced by the
/// stats crate itself (a log-rank test on a table without events), the LASSO part is omitted.
pub fn partial_report() -> StudyReport {
    let mut r = fixture_report();
    let no_events =
        GroupTable::from_patients(&[3.0, 5.0, 8.0], &[false, false, false]).expect("times");
    let two = TwoGroupTable::align(&no_events, &no_events);
    let reason = survival::log_rank(&two)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_else(|| "unexpectedly computable".into());
    r.survival = SurvivalPart {
        predicted: Part::Unavailable { reason },
        observed: Part::Omitted,
    };
    r.lasso = Part::Omitted;
    if let Part::Available(m) = &mut r.metrics {
        m.survival.clear();
    }
    r
}
