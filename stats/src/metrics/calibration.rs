//! Brier score, the decile calibration curve and the Hosmer-Lemeshow test, from ranked tie
//! groups.
//!
//! Conventions:
//! - **Brier** = Σ(p − y)²/n (`sklearn.metrics.brier_score_loss`). From a count table it is
//!   exact: each cell carries its own Σ(p − y)².
//! - **Calibration groups** = R `ResourceSelection::hoslem.test(y, p, g = 10)`: breaks are the
//!   type-7 quantiles of p at 0, 1/g, …, 1, duplicates removed (`unique`), and patients are cut
//!   into `[b₀, b₁], (b₁, b₂], …` (`cut(include.lowest = TRUE)`). A group with no patient (possible
//!   with heavy ties) is left out of the curve and the statistic.
//! - **Hosmer-Lemeshow** Ĉ = Σ_groups [(O₁ − E₁)²/E₁ + (O₀ − E₀)²/E₀] with E₁ = Σp, E₀ = n − Σp,
//!   and **df = g − 2** with g the requested number of groups (as hoslem.test, even when ties
//!   merge breaks); p from the upper χ² tail.
//!
//! From a count table a whole cell (ranked at its mean probability) falls in one group, so the
//! groups equal the exact ones when no decile break falls inside a cell holding several distinct
//! probabilities; each group's Σp and counts are exact sums.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF};

use super::error::MetricsError;
use super::table::RankedCells;
use crate::quantile::type7_position;

/// Brier score Σ(p − y)²/n.
pub fn brier(rc: &RankedCells) -> Result<f64, MetricsError> {
    if rc.n() == 0 {
        return Err(MetricsError::TooFew {
            what: "Brier score",
            class: "patients",
            needed: 1,
            got: 0,
        });
    }
    let s: f64 = rc
        .cells
        .iter()
        .map(|c| c.pos.sum_sq_err + c.neg.sum_sq_err)
        .sum();
    Ok(s / rc.n() as f64)
}

/// One calibration group.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CalibrationBin {
    /// Lower break (inclusive for the first group, exclusive otherwise).
    pub lower: f64,
    /// Upper break (inclusive).
    pub upper: f64,
    /// Patients in the group.
    pub n: u64,
    /// Responders in the group (O₁).
    pub n_pos: u64,
    /// Mean predicted probability E₁/n.
    pub mean_predicted: f64,
    /// Observed response rate O₁/n.
    pub observed: f64,
}

/// Hosmer-Lemeshow goodness-of-fit result.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HosmerLemeshow {
    /// Ĉ statistic.
    pub statistic: f64,
    /// Degrees of freedom g − 2.
    pub df: f64,
    /// Upper-tail p-value.
    pub p_value: f64,
}

/// Calibration curve plus Hosmer-Lemeshow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Non-empty groups, ascending.
    pub bins: Vec<CalibrationBin>,
    /// The test.
    pub hosmer_lemeshow: HosmerLemeshow,
}

/// Value of the 0-based order statistic `k` of the ranked data.
fn order_stat(rc: &RankedCells, k: u64) -> f64 {
    let mut seen = 0u64;
    for c in &rc.cells {
        seen += c.pos.n + c.neg.n;
        if k < seen {
            return c.score;
        }
    }
    rc.cells.last().map(|c| c.score).unwrap_or(f64::NAN)
}

/// Type-7 quantile of the ranked scores (every patient counted).
pub(crate) fn quantile_of_cells(rc: &RankedCells, q: f64) -> f64 {
    let (k, g) = type7_position(rc.n(), q);
    let a = order_stat(rc, k);
    if g > 0.0 {
        let b = order_stat(rc, k + 1);
        // numpy's _lerp, as in crate::quantile.
        let d = b - a;
        if g >= 0.5 {
            b - d * (1.0 - g)
        } else {
            a + d * g
        }
    } else {
        a
    }
}

/// Decile (for `groups = 10`) calibration curve and the Hosmer-Lemeshow test.
pub fn calibration(rc: &RankedCells, groups: usize) -> Result<Calibration, MetricsError> {
    if groups < 3 {
        return Err(MetricsError::BadOption {
            name: "calibration_groups",
            value: groups.to_string(),
            reason: "Hosmer-Lemeshow needs at least 3 groups (df = g - 2); the default is 10",
        });
    }
    if rc.n() < 2 {
        return Err(MetricsError::TooFew {
            what: "calibration curve",
            class: "patients",
            needed: 2,
            got: rc.n(),
        });
    }
    let mut breaks: Vec<f64> = (0..=groups)
        .map(|j| quantile_of_cells(rc, j as f64 / groups as f64))
        .collect();
    breaks.dedup();
    let ng = breaks.len().saturating_sub(1).max(1);
    // (n, n_pos, Σp) per group.
    let mut acc = vec![(0u64, 0u64, 0.0f64); ng];
    for c in &rc.cells {
        // First group whose upper break is >= score (include.lowest puts the minimum in group 0).
        let g = breaks[1..]
            .iter()
            .position(|&b| c.score <= b)
            .unwrap_or(ng - 1);
        acc[g].0 += c.pos.n + c.neg.n;
        acc[g].1 += c.pos.n;
        acc[g].2 += c.pos.sum_p + c.neg.sum_p;
    }
    let mut bins = Vec::new();
    let mut stat = 0.0;
    for (g, &(n, np, sp)) in acc.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let e1 = sp;
        let e0 = n as f64 - sp;
        let o1 = np as f64;
        let o0 = (n - np) as f64;
        stat += (o1 - e1).powi(2) / e1 + (o0 - e0).powi(2) / e0;
        bins.push(CalibrationBin {
            lower: breaks[g],
            upper: *breaks.get(g + 1).unwrap_or(&breaks[g]),
            n,
            n_pos: np,
            mean_predicted: sp / n as f64,
            observed: o1 / n as f64,
        });
    }
    let df = groups as f64 - 2.0;
    let chi = ChiSquared::new(df).map_err(|e| MetricsError::Distribution {
        what: "chi-square",
        reason: e.to_string(),
    })?;
    Ok(Calibration {
        bins,
        hosmer_lemeshow: HosmerLemeshow {
            statistic: stat,
            df,
            p_value: chi.sf(stat),
        },
    })
}
