//! Stratified bootstrap CIs by multinomial resampling of the pooled count table.
//!
//! Conventions (DESIGN §7; pROC `ci.auc(method = "bootstrap", stratified = TRUE)` for the
//! resampling scheme):
//! - **Stratified**: each replicate draws n₊ cases and n₋ controls with replacement, separately.
//!   Drawing n₊ patients with replacement from cells holding n₊(c) positives is a multinomial
//!   draw of size n₊ with probabilities n₊(c)/n₊; it is sampled as a chain of conditional
//!   binomials (cell c gets Binomial(remaining, n₊(c)/remaining count)). On per-distinct-score
//!   cells ([`RankedCells::from_patients`]) this is exactly the per-patient bootstrap
//!   distribution; on merged cells every resampled patient of a cell carries the cell's mean
//!   squared error.
//! - **Percentile CI** with R type-7 quantiles at (1 − level)/2 and 1 − (1 − level)/2 of the
//!   replicates where the metric is defined (PPV/NPV/F1 can be undefined in a replicate; the
//!   count of defined replicates is reported).
//! - **Confusion metrics** at the full-sample Youden threshold, held fixed (not re-optimised per
//!   replicate, which would bias them upwards).
//! - **Deterministic**: ChaCha8 seeded with `seed`; the same table, threshold, B and seed give
//!   bit-identical CIs on every platform with IEEE f64.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution};
use serde::{Deserialize, Serialize};

use super::error::MetricsError;
use super::table::RankedCells;
use crate::quantile::quantile_type7;

/// Bootstrap settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    /// Number of replicates B (default 2000).
    pub replicates: usize,
    /// RNG seed (the study's seed).
    pub seed: u64,
    /// Confidence level (default 0.95).
    pub conf_level: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            replicates: 2000,
            seed: 20_240_101,
            conf_level: 0.95,
        }
    }
}

/// A percentile interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PercentileCi {
    /// Lower limit (type-7 quantile at (1 − level)/2); NaN if no replicate was defined.
    pub lower: f64,
    /// Upper limit.
    pub upper: f64,
    /// Replicates in which the metric was defined.
    pub defined: usize,
}

/// The metrics evaluated on one replicate.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ReplicateMetrics {
    /// AUC.
    pub auc: f64,
    /// Accuracy at the fixed threshold.
    pub accuracy: f64,
    /// Sensitivity at the fixed threshold.
    pub sensitivity: f64,
    /// Specificity at the fixed threshold.
    pub specificity: f64,
    /// PPV at the fixed threshold.
    pub ppv: f64,
    /// NPV at the fixed threshold.
    pub npv: f64,
    /// F1 at the fixed threshold.
    pub f1: f64,
    /// Brier score.
    pub brier: f64,
}

/// Percentile CIs of every bootstrapped metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCis {
    /// AUC.
    pub auc: PercentileCi,
    /// Accuracy.
    pub accuracy: PercentileCi,
    /// Sensitivity.
    pub sensitivity: PercentileCi,
    /// Specificity.
    pub specificity: PercentileCi,
    /// PPV.
    pub ppv: PercentileCi,
    /// NPV.
    pub npv: PercentileCi,
    /// F1.
    pub f1: PercentileCi,
    /// Brier score.
    pub brier: PercentileCi,
    /// The fixed threshold the confusion metrics used.
    pub threshold: f64,
    /// The settings.
    pub options: BootstrapOptions,
}

fn percentile(mut v: Vec<f64>, level: f64) -> Result<PercentileCi, MetricsError> {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return Ok(PercentileCi {
            lower: f64::NAN,
            upper: f64::NAN,
            defined: 0,
        });
    }
    v.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0;
    let q = |p: f64| {
        quantile_type7(&v, p).map_err(|e| MetricsError::BadOption {
            name: "conf_level",
            value: level.to_string(),
            reason: if matches!(e, crate::StatsError::BadProbability { .. }) {
                "must be strictly between 0 and 1"
            } else {
                "bootstrap quantile failed"
            },
        })
    };
    Ok(PercentileCi {
        lower: q(a)?,
        upper: q(1.0 - a)?,
        defined: v.len(),
    })
}

impl BootstrapCis {
    /// Percentile CIs from replicate values.
    pub fn from_replicates(
        reps: &[ReplicateMetrics],
        threshold: f64,
        options: BootstrapOptions,
    ) -> Result<BootstrapCis, MetricsError> {
        let l = options.conf_level;
        let col = |f: fn(&ReplicateMetrics) -> f64| reps.iter().map(f).collect::<Vec<f64>>();
        Ok(BootstrapCis {
            auc: percentile(col(|r| r.auc), l)?,
            accuracy: percentile(col(|r| r.accuracy), l)?,
            sensitivity: percentile(col(|r| r.sensitivity), l)?,
            specificity: percentile(col(|r| r.specificity), l)?,
            ppv: percentile(col(|r| r.ppv), l)?,
            npv: percentile(col(|r| r.npv), l)?,
            f1: percentile(col(|r| r.f1), l)?,
            brier: percentile(col(|r| r.brier), l)?,
            threshold,
            options,
        })
    }
}

fn check_options(o: &BootstrapOptions) -> Result<(), MetricsError> {
    if o.replicates < 2 {
        return Err(MetricsError::BadOption {
            name: "bootstrap_replicates",
            value: o.replicates.to_string(),
            reason: "needs at least 2 replicates (default 2000)",
        });
    }
    if !(o.conf_level > 0.0 && o.conf_level < 1.0) {
        return Err(MetricsError::BadOption {
            name: "conf_level",
            value: o.conf_level.to_string(),
            reason: "must be strictly between 0 and 1 (e.g. 0.95)",
        });
    }
    Ok(())
}

/// Draws a multinomial of size `total` over `weights` (integer counts summing to `total`) into
/// `out`, by conditional binomials.
fn multinomial(rng: &mut ChaCha8Rng, weights: &[u64], total: u64, out: &mut [u64]) {
    let mut left_n = total;
    let mut left_w = total;
    for (o, &w) in out.iter_mut().zip(weights) {
        if w == 0 || left_n == 0 {
            *o = 0;
            left_w -= w;
            continue;
        }
        if w == left_w {
            *o = left_n;
            left_n = 0;
            left_w = 0;
            continue;
        }
        let k = Binomial::new(left_n, w as f64 / left_w as f64)
            .expect("probability in [0, 1]")
            .sample(rng);
        *o = k;
        left_n -= k;
        left_w -= w;
    }
}

/// Metrics of one resampled table (cells in ascending score order).
pub(crate) fn replicate_metrics(
    pos: &[u64],
    neg: &[u64],
    mse_pos: &[f64],
    mse_neg: &[f64],
    above: &[bool],
) -> ReplicateMetrics {
    let (mut n1, mut n0) = (0u64, 0u64);
    let mut auc_num = 0.0f64;
    let mut sq = 0.0f64;
    let (mut tp, mut fp) = (0u64, 0u64);
    for i in 0..pos.len() {
        let (p, n) = (pos[i], neg[i]);
        auc_num += p as f64 * (n0 as f64 + 0.5 * n as f64);
        n1 += p;
        n0 += n;
        sq += p as f64 * mse_pos[i] + n as f64 * mse_neg[i];
        if above[i] {
            tp += p;
            fp += n;
        }
    }
    let cm = super::roc::Confusion {
        tp,
        fp,
        tn: n0 - fp,
        fn_: n1 - tp,
    };
    ReplicateMetrics {
        auc: auc_num / (n1 as f64 * n0 as f64),
        accuracy: cm.accuracy(),
        sensitivity: cm.sensitivity(),
        specificity: cm.specificity(),
        ppv: cm.ppv(),
        npv: cm.npv(),
        f1: cm.f1(),
        brier: sq / (n1 + n0) as f64,
    }
}

/// The replicate metrics of a stratified multinomial bootstrap of `rc`, confusion metrics at
/// the fixed `threshold` (positive iff score ≥ threshold).
pub fn bootstrap_replicates(
    rc: &RankedCells,
    threshold: f64,
    options: &BootstrapOptions,
) -> Result<Vec<ReplicateMetrics>, MetricsError> {
    check_options(options)?;
    rc.need_both("bootstrap")?;
    let k = rc.cells.len();
    let wp: Vec<u64> = rc.cells.iter().map(|c| c.pos.n).collect();
    let wn: Vec<u64> = rc.cells.iter().map(|c| c.neg.n).collect();
    let mse = |s: &super::table::LabelSums| {
        if s.n == 0 {
            0.0
        } else {
            s.sum_sq_err / s.n as f64
        }
    };
    let mp: Vec<f64> = rc.cells.iter().map(|c| mse(&c.pos)).collect();
    let mn: Vec<f64> = rc.cells.iter().map(|c| mse(&c.neg)).collect();
    let above: Vec<bool> = rc.cells.iter().map(|c| c.score >= threshold).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (mut bp, mut bn) = (vec![0u64; k], vec![0u64; k]);
    let mut reps = Vec::with_capacity(options.replicates);
    for _ in 0..options.replicates {
        multinomial(&mut rng, &wp, rc.n_pos, &mut bp);
        multinomial(&mut rng, &wn, rc.n_neg, &mut bn);
        reps.push(replicate_metrics(&bp, &bn, &mp, &mn, &above));
    }
    Ok(reps)
}

/// Stratified multinomial bootstrap percentile CIs of AUC, Brier and the confusion metrics at
/// the fixed `threshold`.
pub fn bootstrap_cis(
    rc: &RankedCells,
    threshold: f64,
    options: &BootstrapOptions,
) -> Result<BootstrapCis, MetricsError> {
    let reps = bootstrap_replicates(rc, threshold, options)?;
    BootstrapCis::from_replicates(&reps, threshold, *options)
}
