//! The EXACT per-patient reference: every classification metric computed directly from the
//! patients' probabilities and labels, written independently of the tie-group code (pairwise
//! loops, explicit sorting) so it can serve as the oracle for the count-table path in tests,
//! and as the aggregator's path when a site's policy sets `release_predictions = true`.
//!
//! Conventions are those of the count path (see [`super::roc`], [`super::calibration`](mod@super::calibration),
//! [`super::dca`], [`super::bootstrap`]); the brute-force AUC/DeLong loops cost O(n₊·n₋), fine
//! for cohorts of thousands.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::bootstrap::{BootstrapCis, BootstrapOptions, ReplicateMetrics};
use super::calibration::{Calibration, CalibrationBin, HosmerLemeshow};
use super::dca::DcaPoint;
use super::error::MetricsError;
use super::paired::PairedDelong;
use super::roc::{AucEstimate, Confusion, RocPoint, YoudenCutoff, normal_quantile_two_sided};
use super::table::{check_lengths, check_probability};
use super::{MetricOptions, MetricSet};
use crate::quantile::quantile_type7;

fn check(probs: &[f64], labels: &[bool]) -> Result<(usize, usize), MetricsError> {
    check_lengths(
        "exact metrics",
        "probs",
        probs.len(),
        "labels",
        labels.len(),
    )?;
    for (i, &p) in probs.iter().enumerate() {
        check_probability(i, p)?;
    }
    let n1 = labels.iter().filter(|&&y| y).count();
    Ok((n1, labels.len() - n1))
}

fn need_both(what: &'static str, n1: usize, n0: usize) -> Result<(), MetricsError> {
    for (class, got) in [("positives", n1), ("negatives", n0)] {
        if got == 0 {
            return Err(MetricsError::TooFew {
                what,
                class,
                needed: 1,
                got: 0,
            });
        }
    }
    Ok(())
}

fn psi(x: f64, y: f64) -> f64 {
    if x > y {
        1.0
    } else if x == y {
        0.5
    } else {
        0.0
    }
}

/// Placement values by pairwise comparison: (V₁₀ per positive, V₀₁ per negative).
fn placements(probs: &[f64], labels: &[bool]) -> (Vec<f64>, Vec<f64>) {
    let pos: Vec<f64> = probs
        .iter()
        .zip(labels)
        .filter(|t| *t.1)
        .map(|t| *t.0)
        .collect();
    let neg: Vec<f64> = probs
        .iter()
        .zip(labels)
        .filter(|t| !*t.1)
        .map(|t| *t.0)
        .collect();
    let v10 = pos
        .iter()
        .map(|&x| neg.iter().map(|&y| psi(x, y)).sum::<f64>() / neg.len() as f64)
        .collect();
    let v01 = neg
        .iter()
        .map(|&y| pos.iter().map(|&x| psi(x, y)).sum::<f64>() / pos.len() as f64)
        .collect();
    (v10, v01)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn var1(v: &[f64], m: f64) -> f64 {
    v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() as f64 - 1.0)
}

/// AUC with DeLong variance and CI, per patient.
pub fn auc_delong(
    probs: &[f64],
    labels: &[bool],
    conf_level: f64,
) -> Result<AucEstimate, MetricsError> {
    let (n1, n0) = check(probs, labels)?;
    need_both("AUC", n1, n0)?;
    let z = normal_quantile_two_sided(conf_level)?;
    let (v10, v01) = placements(probs, labels);
    let a = mean(&v10);
    let variance = if n1 >= 2 && n0 >= 2 {
        var1(&v10, a) / n1 as f64 + var1(&v01, a) / n0 as f64
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

/// Confusion matrix at `threshold` (positive iff p ≥ threshold).
pub fn confusion(probs: &[f64], labels: &[bool], threshold: f64) -> Confusion {
    let mut m = Confusion::default();
    for (&p, &y) in probs.iter().zip(labels) {
        match (p >= threshold, y) {
            (true, true) => m.tp += 1,
            (true, false) => m.fp += 1,
            (false, true) => m.fn_ += 1,
            (false, false) => m.tn += 1,
        }
    }
    m
}

fn distinct_desc(probs: &[f64]) -> Vec<f64> {
    let mut t = probs.to_vec();
    t.sort_by(|a, b| b.total_cmp(a));
    t.dedup();
    t
}

/// ROC points: (0, 0) at +∞, then each distinct probability descending.
pub fn roc_curve(probs: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>, MetricsError> {
    let (n1, n0) = check(probs, labels)?;
    need_both("ROC curve", n1, n0)?;
    let mut out = vec![RocPoint {
        threshold: f64::INFINITY,
        fpr: 0.0,
        tpr: 0.0,
    }];
    for t in distinct_desc(probs) {
        let m = confusion(probs, labels, t);
        out.push(RocPoint {
            threshold: t,
            fpr: m.fp as f64 / n0 as f64,
            tpr: m.tp as f64 / n1 as f64,
        });
    }
    Ok(out)
}

/// Youden cut-off over the distinct probabilities, ties to the highest threshold.
pub fn youden(probs: &[f64], labels: &[bool]) -> Result<YoudenCutoff, MetricsError> {
    let (n1, n0) = check(probs, labels)?;
    need_both("Youden cut-off", n1, n0)?;
    let mut best: Option<(i128, f64, Confusion)> = None;
    for t in distinct_desc(probs) {
        let m = confusion(probs, labels, t);
        // J·n₊n₋ as an exact integer: tp·n₋ − fp·n₊.
        let j = m.tp as i128 * n0 as i128 - m.fp as i128 * n1 as i128;
        if best.as_ref().is_none_or(|b| j > b.0) {
            best = Some((j, t, m));
        }
    }
    let (_, t, m) = best.expect("non-empty");
    Ok(YoudenCutoff {
        threshold: t,
        j: m.sensitivity() + m.specificity() - 1.0,
        sensitivity: m.sensitivity(),
        specificity: m.specificity(),
    })
}

/// Brier score.
pub fn brier(probs: &[f64], labels: &[bool]) -> Result<f64, MetricsError> {
    check(probs, labels)?;
    if probs.is_empty() {
        return Err(MetricsError::TooFew {
            what: "Brier score",
            class: "patients",
            needed: 1,
            got: 0,
        });
    }
    Ok(probs
        .iter()
        .zip(labels)
        .map(|(&p, &y)| (p - y as u8 as f64).powi(2))
        .sum::<f64>()
        / probs.len() as f64)
}

/// Calibration groups and Hosmer-Lemeshow, per patient (hoslem.test conventions).
pub fn calibration(
    probs: &[f64],
    labels: &[bool],
    groups: usize,
) -> Result<Calibration, MetricsError> {
    check(probs, labels)?;
    if groups < 3 || probs.len() < 2 {
        // Same errors as the count path.
        let rc = super::table::RankedCells::from_patients(probs, labels)?;
        return super::calibration::calibration(&rc, groups);
    }
    let mut sorted = probs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut breaks = Vec::new();
    for j in 0..=groups {
        breaks.push(
            quantile_type7(&sorted, j as f64 / groups as f64).map_err(|_| {
                MetricsError::BadOption {
                    name: "calibration_groups",
                    value: groups.to_string(),
                    reason: "quantile failed",
                }
            })?,
        );
    }
    breaks.dedup();
    let ng = breaks.len().saturating_sub(1).max(1);
    let mut bins = Vec::new();
    let mut stat = 0.0;
    for g in 0..ng {
        let lo = breaks[g];
        let hi = *breaks.get(g + 1).unwrap_or(&lo);
        let members: Vec<usize> = (0..probs.len())
            .filter(|&i| {
                let p = probs[i];
                (p <= hi || g == ng - 1) && (p > lo || g == 0)
            })
            .collect();
        if members.is_empty() {
            continue;
        }
        let n = members.len() as u64;
        let o1 = members.iter().filter(|&&i| labels[i]).count() as u64;
        let e1: f64 = members.iter().map(|&i| probs[i]).sum();
        let e0 = n as f64 - e1;
        stat += (o1 as f64 - e1).powi(2) / e1 + ((n - o1) as f64 - e0).powi(2) / e0;
        bins.push(CalibrationBin {
            lower: lo,
            upper: hi,
            n,
            n_pos: o1,
            mean_predicted: e1 / n as f64,
            observed: o1 as f64 / n as f64,
        });
    }
    let df = groups as f64 - 2.0;
    use statrs::distribution::{ChiSquared, ContinuousCDF};
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

/// Decision curve per patient.
pub fn decision_curve(
    probs: &[f64],
    labels: &[bool],
    thresholds: &[f64],
) -> Result<Vec<DcaPoint>, MetricsError> {
    let (n1, _) = check(probs, labels)?;
    let rc = super::table::RankedCells::from_patients(probs, labels)?;
    // Validate thresholds/emptiness with the shared checks, then recompute per patient.
    super::dca::decision_curve(&rc, thresholds)?;
    let n = probs.len() as f64;
    let prev = n1 as f64 / n;
    Ok(thresholds
        .iter()
        .map(|&pt| {
            let m = confusion(probs, labels, pt);
            let w = pt / (1.0 - pt);
            DcaPoint {
                threshold: pt,
                net_benefit: m.tp as f64 / n - m.fp as f64 / n * w,
                treat_all: prev - (1.0 - prev) * w,
                treat_none: 0.0,
            }
        })
        .collect())
}

/// All point metrics per patient (the Youden cut-off is chosen on these data).
pub fn evaluate(
    probs: &[f64],
    labels: &[bool],
    options: &MetricOptions,
) -> Result<MetricSet, MetricsError> {
    let (n1, n0) = check(probs, labels)?;
    let youden = youden(probs, labels)?;
    let cm = confusion(probs, labels, youden.threshold);
    Ok(MetricSet {
        n_pos: n1 as u64,
        n_neg: n0 as u64,
        auc: auc_delong(probs, labels, options.conf_level)?,
        roc: roc_curve(probs, labels)?,
        youden,
        confusion: cm,
        accuracy: cm.accuracy(),
        sensitivity: cm.sensitivity(),
        specificity: cm.specificity(),
        ppv: cm.ppv(),
        npv: cm.npv(),
        f1: cm.f1(),
        brier: brier(probs, labels)?,
        calibration: calibration(probs, labels, options.calibration_groups)?,
        decision_curve: decision_curve(probs, labels, &options.dca_thresholds)?,
        auc_resolution_bound: 0.0,
    })
}

/// AUC by mid-ranks (sort-based, O(n log n)), used per bootstrap replicate.
fn auc_midrank(probs: &[f64], labels: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..probs.len()).collect();
    idx.sort_by(|&a, &b| probs[a].total_cmp(&probs[b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j < idx.len() && probs[idx[j]] == probs[idx[i]] {
            j += 1;
        }
        let mid = (i + j + 1) as f64 / 2.0; // mean of 1-based ranks i+1..=j
        rank_sum_pos += mid * idx[i..j].iter().filter(|&&k| labels[k]).count() as f64;
        i = j;
    }
    let n1 = labels.iter().filter(|&&y| y).count() as f64;
    let n0 = labels.len() as f64 - n1;
    (rank_sum_pos - n1 * (n1 + 1.0) / 2.0) / (n1 * n0)
}

/// Per-patient stratified bootstrap (cases and controls resampled separately by index), confusion
/// metrics at the fixed `threshold`. Its random stream differs from the multinomial one of
/// [`super::bootstrap::bootstrap_cis`]; the distributions are identical.
pub fn bootstrap(
    probs: &[f64],
    labels: &[bool],
    threshold: f64,
    options: &BootstrapOptions,
) -> Result<BootstrapCis, MetricsError> {
    let (n1, n0) = check(probs, labels)?;
    need_both("bootstrap", n1, n0)?;
    if options.replicates < 2 {
        return Err(MetricsError::BadOption {
            name: "bootstrap_replicates",
            value: options.replicates.to_string(),
            reason: "needs at least 2 replicates (default 2000)",
        });
    }
    let pos: Vec<usize> = (0..labels.len()).filter(|&i| labels[i]).collect();
    let neg: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i]).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut reps = Vec::with_capacity(options.replicates);
    let (mut bp, mut bl) = (
        Vec::with_capacity(labels.len()),
        Vec::with_capacity(labels.len()),
    );
    for _ in 0..options.replicates {
        bp.clear();
        bl.clear();
        for _ in 0..n1 {
            bp.push(probs[pos[rng.gen_range(0..n1)]]);
            bl.push(true);
        }
        for _ in 0..n0 {
            bp.push(probs[neg[rng.gen_range(0..n0)]]);
            bl.push(false);
        }
        let m = confusion(&bp, &bl, threshold);
        reps.push(ReplicateMetrics {
            auc: auc_midrank(&bp, &bl),
            accuracy: m.accuracy(),
            sensitivity: m.sensitivity(),
            specificity: m.specificity(),
            ppv: m.ppv(),
            npv: m.npv(),
            f1: m.f1(),
            brier: brier(&bp, &bl)?,
        });
    }
    BootstrapCis::from_replicates(&reps, threshold, *options)
}

/// Paired DeLong test per patient, by pairwise placement values.
pub fn paired_delong(
    probs_a: &[f64],
    probs_b: &[f64],
    labels: &[bool],
    conf_level: f64,
) -> Result<PairedDelong, MetricsError> {
    let (n1, n0) = check(probs_a, labels)?;
    check(probs_b, labels)?;
    if n1 < 2 || n0 < 2 {
        return Err(MetricsError::TooFew {
            what: "paired DeLong test",
            class: if n1 < 2 { "positives" } else { "negatives" },
            needed: 2,
            got: n1.min(n0) as u64,
        });
    }
    let z_ci = normal_quantile_two_sided(conf_level)?;
    let (a10, a01) = placements(probs_a, labels);
    let (b10, b01) = placements(probs_b, labels);
    let (a, b) = (mean(&a10), mean(&b10));
    let cov = |x: &[f64], mx: f64, y: &[f64], my: f64| {
        x.iter()
            .zip(y)
            .map(|(u, v)| (u - mx) * (v - my))
            .sum::<f64>()
            / (x.len() as f64 - 1.0)
    };
    let (n1f, n0f) = (n1 as f64, n0 as f64);
    let var_a = cov(&a10, a, &a10, a) / n1f + cov(&a01, a, &a01, a) / n0f;
    let var_b = cov(&b10, b, &b10, b) / n1f + cov(&b01, b, &b01, b) / n0f;
    let c = cov(&a10, a, &b10, b) / n1f + cov(&a01, a, &b01, b) / n0f;
    Ok(PairedDelong::from_variances(a, b, var_a, var_b, c, z_ci))
}
