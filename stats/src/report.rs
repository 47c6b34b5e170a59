//! The statistician's report data model: every pooled metric with its CI and every curve as
//! plot-ready points, serialisable with serde (JSON/CSV writers and figures live in the
//! aggregator). Non-finite numbers (an undefined PPV, an unreached median, the ROC curve's +∞
//! threshold) are `None`, so the JSON round-trips.

use serde::{Deserialize, Serialize};

use crate::metrics::{
    BootstrapCis, CalibrationBin, Confusion, DcaPoint, HosmerLemeshow, MetricSet, PairedDelong,
    PercentileCi,
};
use crate::survival::{CoxFit, KaplanMeier, KmCi, LogRank};

/// Schema version of [`Report`]; bump on incompatible changes.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

fn fin(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// A point estimate with an optional interval and how it was obtained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate (None if undefined).
    pub value: Option<f64>,
    /// CI lower limit.
    pub ci_lower: Option<f64>,
    /// CI upper limit.
    pub ci_upper: Option<f64>,
    /// How the CI was computed (e.g. "DeLong", "stratified bootstrap percentile (type 7)").
    pub ci_method: Option<String>,
}

impl Estimate {
    /// A bare estimate.
    pub fn point(v: f64) -> Estimate {
        Estimate {
            value: fin(v),
            ci_lower: None,
            ci_upper: None,
            ci_method: None,
        }
    }

    /// An estimate with a bootstrap percentile interval.
    pub fn with_bootstrap(v: f64, ci: Option<&PercentileCi>, b: usize) -> Estimate {
        match ci {
            Some(c) => Estimate {
                value: fin(v),
                ci_lower: fin(c.lower),
                ci_upper: fin(c.upper),
                ci_method: Some(format!(
                    "stratified bootstrap, B = {b} ({} defined), percentile (R type 7)",
                    c.defined
                )),
            },
            None => Estimate::point(v),
        }
    }
}

/// Where the numbers came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricsSource {
    /// Pooled count tables on a shared grid.
    CountTables {
        /// Score grid bins.
        score_bins: u32,
        /// Largest min_count among the sites.
        max_min_count: u64,
    },
    /// Per-patient predictions released under `release_predictions = true`.
    Exact,
}

/// A ROC point ready for plotting (`threshold` None for the +∞ start).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocCurvePoint {
    /// Threshold (positive iff p ≥ threshold).
    pub threshold: Option<f64>,
    /// 1 − specificity.
    pub fpr: f64,
    /// Sensitivity.
    pub tpr: f64,
}

/// All metrics of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    /// Model name (e.g. "stacking ML", "clinical").
    pub name: String,
    /// Responders.
    pub n_pos: u64,
    /// Non-responders.
    pub n_neg: u64,
    /// AUC with DeLong CI.
    pub auc: Estimate,
    /// AUC with bootstrap CI.
    pub auc_bootstrap: Option<Estimate>,
    /// Bound on the AUC error from count-table resolution (0 when exact).
    pub auc_resolution_bound: Option<f64>,
    /// Youden cut-off (positive iff p ≥ cutoff).
    pub cutoff: f64,
    /// Youden's J at the cut-off.
    pub youden_j: f64,
    /// Confusion matrix at the cut-off.
    pub confusion: Confusion,
    /// Accuracy (bootstrap CI at the fixed cut-off).
    pub accuracy: Estimate,
    /// Sensitivity.
    pub sensitivity: Estimate,
    /// Specificity.
    pub specificity: Estimate,
    /// PPV.
    pub ppv: Estimate,
    /// NPV.
    pub npv: Estimate,
    /// F1.
    pub f1: Estimate,
    /// Brier score.
    pub brier: Estimate,
    /// Hosmer-Lemeshow test.
    pub hosmer_lemeshow: HosmerLemeshow,
    /// ROC curve.
    pub roc: Vec<RocCurvePoint>,
    /// Calibration groups (mean predicted vs observed).
    pub calibration: Vec<CalibrationBin>,
    /// Decision curve.
    pub decision_curve: Vec<DcaPoint>,
}

impl ModelReport {
    /// Assembles a model's report from its point metrics and (optionally) bootstrap CIs.
    pub fn new(name: &str, m: &MetricSet, boot: Option<&BootstrapCis>) -> ModelReport {
        let b = boot.map(|b| b.options.replicates).unwrap_or(0);
        let e = |v: f64, f: fn(&BootstrapCis) -> &PercentileCi| {
            Estimate::with_bootstrap(v, boot.map(f), b)
        };
        ModelReport {
            name: name.to_string(),
            n_pos: m.n_pos,
            n_neg: m.n_neg,
            auc: Estimate {
                value: fin(m.auc.auc),
                ci_lower: fin(m.auc.ci_lower),
                ci_upper: fin(m.auc.ci_upper),
                ci_method: Some(format!(
                    "DeLong, AUC ± z·SE clipped to [0, 1], level {}",
                    m.auc.conf_level
                )),
            },
            auc_bootstrap: boot.map(|bc| Estimate::with_bootstrap(m.auc.auc, Some(&bc.auc), b)),
            auc_resolution_bound: fin(m.auc_resolution_bound),
            cutoff: m.youden.threshold,
            youden_j: m.youden.j,
            confusion: m.confusion,
            accuracy: e(m.accuracy, |c| &c.accuracy),
            sensitivity: e(m.sensitivity, |c| &c.sensitivity),
            specificity: e(m.specificity, |c| &c.specificity),
            ppv: e(m.ppv, |c| &c.ppv),
            npv: e(m.npv, |c| &c.npv),
            f1: e(m.f1, |c| &c.f1),
            brier: e(m.brier, |c| &c.brier),
            hosmer_lemeshow: m.calibration.hosmer_lemeshow,
            roc: m
                .roc
                .iter()
                .map(|p| RocCurvePoint {
                    threshold: fin(p.threshold),
                    fpr: p.fpr,
                    tpr: p.tpr,
                })
                .collect(),
            calibration: m.calibration.bins.clone(),
            decision_curve: m.decision_curve.clone(),
        }
    }
}

/// One step of a KM curve ready for plotting.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KmStep {
    /// Time.
    pub time: f64,
    /// S(t).
    pub survival: f64,
    /// Lower band.
    pub ci_lower: Option<f64>,
    /// Upper band.
    pub ci_upper: Option<f64>,
    /// At risk just before t.
    pub at_risk: u64,
    /// Events at t.
    pub events: u64,
    /// Censorings at t (plot as ticks).
    pub censored: u64,
}

/// A KM curve of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KmCurveReport {
    /// Group label (e.g. "predicted high").
    pub label: String,
    /// Patients.
    pub n: u64,
    /// Events.
    pub events: u64,
    /// Median with CI (None = not reached).
    pub median: Estimate,
    /// Steps (S = 1 before the first).
    pub steps: Vec<KmStep>,
    /// CI transform.
    pub ci_method: KmCi,
}

impl KmCurveReport {
    /// From a fitted KM curve.
    pub fn new(label: &str, km: &KaplanMeier) -> KmCurveReport {
        KmCurveReport {
            label: label.to_string(),
            n: km.n,
            events: km.events,
            median: Estimate {
                value: km.median,
                ci_lower: km.median_ci_lower,
                ci_upper: km.median_ci_upper,
                ci_method: Some(format!(
                    "{:?} transform, level {}",
                    km.ci_method, km.conf_level
                )),
            },
            steps: km
                .points
                .iter()
                .map(|p| KmStep {
                    time: p.time,
                    survival: p.survival,
                    ci_lower: fin(p.ci_lower),
                    ci_upper: fin(p.ci_upper),
                    at_risk: p.at_risk,
                    events: p.events,
                    censored: p.censored,
                })
                .collect(),
            ci_method: km.ci_method,
        }
    }
}

/// Cox HR of group 1 vs group 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoxReport {
    /// "pooled" (unstratified) or "site-stratified".
    pub model: String,
    /// Hazard ratio with Wald CI.
    pub hazard_ratio: Estimate,
    /// Wald p-value.
    pub p_value: f64,
    /// Ties method.
    pub ties: String,
}

impl CoxReport {
    /// From a fitted one-covariate Cox model.
    pub fn new(model: &str, fit: &CoxFit) -> CoxReport {
        let c = fit.coefficients[0];
        CoxReport {
            model: model.to_string(),
            hazard_ratio: Estimate {
                value: fin(c.hazard_ratio),
                ci_lower: fin(c.hr_ci_lower),
                ci_upper: fin(c.hr_ci_upper),
                ci_method: Some(format!("Wald, level {}", fit.conf_level)),
            },
            p_value: c.p_value,
            ties: format!("{:?}", fit.ties),
        }
    }
}

/// Survival by one grouping (predicted group, or observed response).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalReport {
    /// What defines the groups (e.g. "predicted group at the Youden cut-off").
    pub grouping: String,
    /// Endpoint (e.g. "progression-free survival, months").
    pub endpoint: String,
    /// KM curves, group 0 then group 1.
    pub curves: Vec<KmCurveReport>,
    /// Log-rank test.
    pub log_rank: LogRank,
    /// Cox HRs (pooled and/or site-stratified).
    pub cox: Vec<CoxReport>,
    /// Time resolution released by the sites (e.g. "exact" or "grid of 1 month, merged").
    pub time_resolution: String,
}

/// The paired AUC comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// Model A name.
    pub model_a: String,
    /// Model B name.
    pub model_b: String,
    /// The DeLong test.
    pub delong: PairedDelong,
    /// "joint count table (G×G grid)" or "exact".
    pub source: String,
}

/// The whole metrics report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Where the numbers came from.
    pub source: MetricsSource,
    /// One entry per model (ML first, then comparators).
    pub models: Vec<ModelReport>,
    /// Paired comparisons.
    pub comparisons: Vec<ComparisonReport>,
    /// Survival analyses.
    pub survival: Vec<SurvivalReport>,
    /// Free-text notes (approximations, sites that sat out, …).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for a source.
    pub fn new(source: MetricsSource) -> Report {
        Report {
            schema_version: REPORT_SCHEMA_VERSION,
            source,
            models: Vec::new(),
            comparisons: Vec::new(),
            survival: Vec::new(),
            notes: Vec::new(),
        }
    }
}
