//! ROC curve, AUC with DeLong variance and CI, the Youden cut-off and the confusion matrix, all
//! computed from ranked tie groups ([`RankedCells`]) so the same code serves the pooled count
//! table and the exact per-patient data.
//!
//! Conventions (pROC / scikit-learn):
//! - **AUC** = Mann-Whitney U/(n₊n₋) with mid-ranks: a (positive, negative) pair scores 1 if the
//!   positive ranks higher, ½ if tied (same tie group). Equals `sklearn.metrics.roc_auc_score`
//!   and pROC's `auc`.
//! - **DeLong variance** from placement values (DeLong, DeLong & Clarke-Pearson 1988; pROC's
//!   `var(method = "delong")`): V₁₀ of a positive = share of negatives below it (+½ tied), V₀₁
//!   of a negative = share of positives above it (+½ tied); S₁₀, S₀₁ their sample variances
//!   (divisor n − 1); Var(AUC) = S₁₀/n₊ + S₀₁/n₋.
//! - **CI** = AUC ± z·SE, z = Φ⁻¹(1 − (1 − level)/2) (1.959964 for 95 %), clipped to [0, 1], as
//!   pROC's `ci.auc(method = "delong")` does.
//! - **Youden**: candidate thresholds are the distinct scores, a patient is positive iff
//!   score ≥ t; J = sensitivity + specificity − 1; ties in J go to the highest threshold.
//! - **ROC points**: one per distinct score t (descending), preceded by (0, 0) at t = +∞.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

use super::error::MetricsError;
use super::table::RankedCells;

/// Φ⁻¹(1 − (1 − level)/2): the two-sided normal quantile for a confidence level.
pub fn normal_quantile_two_sided(level: f64) -> Result<f64, MetricsError> {
    if !(level > 0.0 && level < 1.0) {
        return Err(MetricsError::BadOption {
            name: "conf_level",
            value: level.to_string(),
            reason: "must be strictly between 0 and 1 (e.g. 0.95)",
        });
    }
    let n = Normal::new(0.0, 1.0).map_err(|e| MetricsError::Distribution {
        what: "standard normal",
        reason: e.to_string(),
    })?;
    Ok(n.inverse_cdf(1.0 - (1.0 - level) / 2.0))
}

/// Two-sided normal p-value 2·Φ(−|z|).
pub(crate) fn normal_two_sided_p(z: f64) -> f64 {
    let n = Normal::new(0.0, 1.0).expect("standard normal");
    (2.0 * n.cdf(-z.abs())).min(1.0)
}

/// AUC with its DeLong variance and CI.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AucEstimate {
    /// Area under the ROC curve (Mann-Whitney, mid-ranks).
    pub auc: f64,
    /// DeLong variance (NaN with fewer than 2 positives or 2 negatives).
    pub variance: f64,
    /// √variance.
    pub se: f64,
    /// Lower CI limit, clipped at 0.
    pub ci_lower: f64,
    /// Upper CI limit, clipped at 1.
    pub ci_upper: f64,
    /// Confidence level of the CI.
    pub conf_level: f64,
}

/// Placement values per tie group: (V₁₀ for the group's positives, V₀₁ for its negatives).
pub(crate) fn placements(rc: &RankedCells) -> Vec<(f64, f64)> {
    let n1 = rc.n_pos as f64;
    let n0 = rc.n_neg as f64;
    let mut out = vec![(0.0, 0.0); rc.cells.len()];
    let mut neg_below = 0u64;
    for (i, c) in rc.cells.iter().enumerate() {
        out[i].0 = (neg_below as f64 + 0.5 * c.neg.n as f64) / n0;
        neg_below += c.neg.n;
    }
    let mut pos_above = 0u64;
    for (i, c) in rc.cells.iter().enumerate().rev() {
        out[i].1 = (pos_above as f64 + 0.5 * c.pos.n as f64) / n1;
        pos_above += c.pos.n;
    }
    out
}

/// Mann-Whitney AUC only (no variance), O(cells). Used by the bootstrap.
pub fn auc(rc: &RankedCells) -> Result<f64, MetricsError> {
    rc.need_both("AUC")?;
    let mut neg_below = 0u64;
    let mut num = 0.0f64;
    for c in &rc.cells {
        num += c.pos.n as f64 * (neg_below as f64 + 0.5 * c.neg.n as f64);
        neg_below += c.neg.n;
    }
    Ok(num / (rc.n_pos as f64 * rc.n_neg as f64))
}

/// AUC, DeLong variance and the pROC-style CI at `conf_level`.
pub fn auc_delong(rc: &RankedCells, conf_level: f64) -> Result<AucEstimate, MetricsError> {
    rc.need_both("AUC")?;
    let z = normal_quantile_two_sided(conf_level)?;
    let pl = placements(rc);
    let n1 = rc.n_pos as f64;
    let n0 = rc.n_neg as f64;
    let a: f64 = rc
        .cells
        .iter()
        .zip(&pl)
        .map(|(c, v)| c.pos.n as f64 * v.0)
        .sum::<f64>()
        / n1;
    let variance = if rc.n_pos >= 2 && rc.n_neg >= 2 {
        let s10: f64 = rc
            .cells
            .iter()
            .zip(&pl)
            .map(|(c, v)| c.pos.n as f64 * (v.0 - a).powi(2))
            .sum::<f64>()
            / (n1 - 1.0);
        let s01: f64 = rc
            .cells
            .iter()
            .zip(&pl)
            .map(|(c, v)| c.neg.n as f64 * (v.1 - a).powi(2))
            .sum::<f64>()
            / (n0 - 1.0);
        s10 / n1 + s01 / n0
    } else {
        f64::NAN
    };
    let se = variance.sqrt();
    Ok(AucEstimate {
        auc: a,
        variance,
        se,
        ci_lower: (a - z * se).max(0.0),
        ci_upper: (a + z * se).min(1.0),
        conf_level,
    })
}

/// One point of the ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// Threshold: positive iff score ≥ threshold (+∞ for the first point, serialised as null).
    pub threshold: f64,
    /// False positive rate = 1 − specificity.
    pub fpr: f64,
    /// True positive rate = sensitivity.
    pub tpr: f64,
}

/// ROC curve: (0, 0) at +∞, then one point per distinct score, descending, ending at (1, 1).
pub fn roc_curve(rc: &RankedCells) -> Result<Vec<RocPoint>, MetricsError> {
    rc.need_both("ROC curve")?;
    let n1 = rc.n_pos as f64;
    let n0 = rc.n_neg as f64;
    let mut out = Vec::with_capacity(rc.cells.len() + 1);
    out.push(RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    });
    let (mut tp, mut fp) = (0u64, 0u64);
    for c in rc.cells.iter().rev() {
        tp += c.pos.n;
        fp += c.neg.n;
        out.push(RocPoint {
            threshold: c.score,
            fpr: fp as f64 / n0,
            tpr: tp as f64 / n1,
        });
    }
    Ok(out)
}

/// The Youden-optimal cut-off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct YoudenCutoff {
    /// Threshold t: positive iff score ≥ t.
    pub threshold: f64,
    /// Youden's J = sensitivity + specificity − 1 at t.
    pub j: f64,
    /// Sensitivity at t.
    pub sensitivity: f64,
    /// Specificity at t.
    pub specificity: f64,
}

/// Youden cut-off over the distinct scores; ties in J go to the highest threshold.
pub fn youden(rc: &RankedCells) -> Result<YoudenCutoff, MetricsError> {
    rc.need_both("Youden cut-off")?;
    let n1 = rc.n_pos as f64;
    let n0 = rc.n_neg as f64;
    // Best (J numerator, tp, fp, threshold); J·n₊n₋ = tp·n₋ − fp·n₊ is an exact integer, so ties
    // are detected without round-off.
    let mut best: Option<(i128, u64, u64, f64)> = None;
    let (mut tp, mut fp) = (0u64, 0u64);
    // Descending thresholds: a later (lower) threshold replaces the best only if strictly better.
    for c in rc.cells.iter().rev() {
        tp += c.pos.n;
        fp += c.neg.n;
        let j_num = tp as i128 * rc.n_neg as i128 - fp as i128 * rc.n_pos as i128;
        if best.is_none_or(|b| j_num > b.0) {
            best = Some((j_num, tp, fp, c.score));
        }
    }
    let (_, tp, fp, threshold) = best.expect("at least one cell");
    let sensitivity = tp as f64 / n1;
    let specificity = (rc.n_neg - fp) as f64 / n0;
    Ok(YoudenCutoff {
        threshold,
        j: sensitivity + specificity - 1.0,
        sensitivity,
        specificity,
    })
}

/// Confusion matrix at a threshold (positive iff score ≥ threshold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Confusion {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// True negatives.
    pub tn: u64,
    /// False negatives.
    pub fn_: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a as f64 / b as f64
    }
}

impl Confusion {
    /// (TP + TN)/n.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }
    /// TP/(TP + FN) (NaN without positives).
    pub fn sensitivity(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }
    /// TN/(TN + FP) (NaN without negatives).
    pub fn specificity(&self) -> f64 {
        ratio(self.tn, self.tn + self.fp)
    }
    /// TP/(TP + FP) (NaN when nobody is predicted positive).
    pub fn ppv(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }
    /// TN/(TN + FN) (NaN when nobody is predicted negative).
    pub fn npv(&self) -> f64 {
        ratio(self.tn, self.tn + self.fn_)
    }
    /// F1 = 2TP/(2TP + FP + FN) (NaN when TP + FP + FN = 0).
    pub fn f1(&self) -> f64 {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// Confusion matrix of the ranked data at `threshold`.
pub fn confusion_at(rc: &RankedCells, threshold: f64) -> Confusion {
    let mut m = Confusion::default();
    for c in &rc.cells {
        if c.score >= threshold {
            m.tp += c.pos.n;
            m.fp += c.neg.n;
        } else {
            m.fn_ += c.pos.n;
            m.tn += c.neg.n;
        }
    }
    m
}
