//! Decision curve analysis (Vickers & Elkin 2006): net benefit of treating patients whose
//! predicted probability reaches a threshold probability pt, against treat-all and treat-none.
//!
//! Conventions (R `dcurves::dca`, python `dcurves`): a patient is treated iff p ≥ pt;
//! net benefit = TP/n − FP/n · pt/(1 − pt); treat-all = prevalence − (1 − prevalence)·pt/(1 − pt);
//! treat-none = 0. Default thresholds 0.01, 0.02, …, 0.99 (computed as k/100).
//!
//! From a count table a cell is treated as a whole (its mean probability against pt), so the
//! curve is exact at every pt that does not fall strictly inside a cell holding several distinct
//! probabilities; with the default 1000-bin grid and unmerged bins the default thresholds are
//! bin edges, so the curve is exact there.

use serde::{Deserialize, Serialize};

use super::error::MetricsError;
use super::table::RankedCells;

/// One point of the decision curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DcaPoint {
    /// Threshold probability pt.
    pub threshold: f64,
    /// Net benefit of the model.
    pub net_benefit: f64,
    /// Net benefit of treating everyone.
    pub treat_all: f64,
    /// Net benefit of treating no one (always 0).
    pub treat_none: f64,
}

/// 0.01, 0.02, …, 0.99.
pub fn default_thresholds() -> Vec<f64> {
    (1..=99).map(|k| k as f64 / 100.0).collect()
}

/// The decision curve at the given thresholds (each in (0, 1)).
pub fn decision_curve(rc: &RankedCells, thresholds: &[f64]) -> Result<Vec<DcaPoint>, MetricsError> {
    if rc.n() == 0 {
        return Err(MetricsError::TooFew {
            what: "decision curve",
            class: "patients",
            needed: 1,
            got: 0,
        });
    }
    let n = rc.n() as f64;
    let prev = rc.n_pos as f64 / n;
    let mut out = Vec::with_capacity(thresholds.len());
    for &pt in thresholds {
        if !(pt > 0.0 && pt < 1.0) {
            return Err(MetricsError::BadOption {
                name: "dca_thresholds",
                value: pt.to_string(),
                reason: "threshold probabilities must lie strictly between 0 and 1",
            });
        }
        let (mut tp, mut fp) = (0u64, 0u64);
        for c in rc.cells.iter().rev() {
            if c.score < pt {
                break;
            }
            tp += c.pos.n;
            fp += c.neg.n;
        }
        let w = pt / (1.0 - pt);
        out.push(DcaPoint {
            threshold: pt,
            net_benefit: tp as f64 / n - fp as f64 / n * w,
            treat_all: prev - (1.0 - prev) * w,
            treat_none: 0.0,
        });
    }
    Ok(out)
}
