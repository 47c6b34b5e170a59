//! Federated classification metrics (DESIGN §4 step 8): ROC/AUC with DeLong and bootstrap CIs,
//! the Youden cut-off with confusion-matrix metrics, Brier, calibration (Hosmer-Lemeshow),
//! decision curves, and the paired DeLong comparison of two models.
//!
//! Every metric has three forms:
//! - **SITE HALF** — [`SiteScoreTable::build`] (1-D table for one model) and
//!   [`SiteJointTable::build`] (joint table for the paired comparison): a site's own
//!   probabilities and labels in, a count table out, small cells merged at the site so that no
//!   released count is in `1..min_count`.
//! - **AGGREGATOR HALF** — [`PooledScoreTable::pool`] / [`pool_joint`] sum the tables, then
//!   [`evaluate`], [`bootstrap_cis`] and [`paired_delong`] compute the metrics on the ranked
//!   tie groups ([`RankedCells`]).
//! - **EXACT** — [`exact`]: per-patient reference implementations (used when
//!   `release_predictions = true`, and as the test oracle). [`RankedCells::from_patients`] feeds
//!   the aggregator code with one tie group per distinct probability, which is also exact.
//!
//! Count path vs exact: with no two distinct probabilities sharing a released cell (e.g.
//! `min_count = 1` on the 1000-bin grid with no two patients in a bin) the count path equals the
//! exact path to round-off. Otherwise patients in a cell are ranked at the cell's mean
//! probability; [`PooledScoreTable::auc_resolution_bound`] bounds the AUC error, Brier stays
//! exact, and the cut-off is chosen among cell scores.

pub mod bootstrap;
pub mod calibration;
pub mod dca;
pub mod error;
pub mod exact;
pub mod paired;
pub mod roc;
pub mod table;

use serde::{Deserialize, Serialize};

pub use bootstrap::{
    BootstrapCis, BootstrapOptions, PercentileCi, ReplicateMetrics, bootstrap_cis,
    bootstrap_replicates,
};
pub use calibration::{Calibration, CalibrationBin, HosmerLemeshow, brier, calibration};
pub use dca::{DcaPoint, decision_curve, default_thresholds};
pub use error::MetricsError;
pub use paired::{
    CrossPlacementSums, JointCell, PairedCell, PairedDelong, SiteJointTable,
    paired_cells_from_patients, paired_delong, paired_delong_from_tables, pool_joint,
    site_cross_placements,
};
pub use roc::{
    AucEstimate, Confusion, RocPoint, YoudenCutoff, auc, auc_delong, confusion_at,
    normal_quantile_two_sided, roc_curve, youden,
};
pub use table::{
    LabelSums, MergeRule, PooledScoreTable, RankedCells, ScoreCell, ScoreGrid, ScoreTableCell,
    SiteScoreTable,
};

/// Settings of the point metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricOptions {
    /// Confidence level of DeLong CIs (default 0.95).
    pub conf_level: f64,
    /// Calibration / Hosmer-Lemeshow groups g (default 10).
    pub calibration_groups: usize,
    /// Decision-curve thresholds (default 0.01..=0.99 by 0.01).
    pub dca_thresholds: Vec<f64>,
}

impl Default for MetricOptions {
    fn default() -> Self {
        MetricOptions {
            conf_level: 0.95,
            calibration_groups: 10,
            dca_thresholds: default_thresholds(),
        }
    }
}

/// Every point metric of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSet {
    /// Positives.
    pub n_pos: u64,
    /// Negatives.
    pub n_neg: u64,
    /// AUC with DeLong CI.
    pub auc: AucEstimate,
    /// ROC curve points.
    pub roc: Vec<RocPoint>,
    /// Youden cut-off.
    pub youden: YoudenCutoff,
    /// Confusion matrix at the cut-off.
    pub confusion: Confusion,
    /// Accuracy at the cut-off.
    pub accuracy: f64,
    /// Sensitivity at the cut-off.
    pub sensitivity: f64,
    /// Specificity at the cut-off.
    pub specificity: f64,
    /// PPV at the cut-off.
    pub ppv: f64,
    /// NPV at the cut-off.
    pub npv: f64,
    /// F1 at the cut-off.
    pub f1: f64,
    /// Brier score.
    pub brier: f64,
    /// Calibration groups and Hosmer-Lemeshow.
    pub calibration: Calibration,
    /// Decision curve.
    pub decision_curve: Vec<DcaPoint>,
    /// Bound on |AUC − exact AUC| from the count-table resolution (0 for exact data).
    pub auc_resolution_bound: f64,
}

/// All point metrics from ranked tie groups (pooled table or per-patient cells).
/// `auc_resolution_bound` is left at 0; [`evaluate_pooled`] fills it in.
pub fn evaluate(rc: &RankedCells, options: &MetricOptions) -> Result<MetricSet, MetricsError> {
    let youden = youden(rc)?;
    let cm = confusion_at(rc, youden.threshold);
    Ok(MetricSet {
        n_pos: rc.n_pos,
        n_neg: rc.n_neg,
        auc: auc_delong(rc, options.conf_level)?,
        roc: roc_curve(rc)?,
        youden,
        confusion: cm,
        accuracy: cm.accuracy(),
        sensitivity: cm.sensitivity(),
        specificity: cm.specificity(),
        ppv: cm.ppv(),
        npv: cm.npv(),
        f1: cm.f1(),
        brier: brier(rc)?,
        calibration: calibration(rc, options.calibration_groups)?,
        decision_curve: decision_curve(rc, &options.dca_thresholds)?,
        auc_resolution_bound: 0.0,
    })
}

/// AGGREGATOR: all point metrics from a pooled count table, with the AUC resolution bound.
pub fn evaluate_pooled(
    table: &PooledScoreTable,
    options: &MetricOptions,
) -> Result<MetricSet, MetricsError> {
    let mut m = evaluate(&table.ranked(), options)?;
    m.auc_resolution_bound = table.auc_resolution_bound();
    Ok(m)
}
