//! Paired comparison of two models' AUCs on the same patients (ML vs clinical): DeLong's test for
//! correlated ROC curves, from a joint count table or per patient.
//!
//! # Why a joint table
//!
//! The DeLong covariance of two AUCs needs each patient's placement value under **both** models,
//! so two separate 1-D tables are not enough. Each site bins its patients on a coarse G×G grid of
//! (model A bin, model B bin) (default G = 10, i.e. 100 cells instead of 10⁶) and releases, per
//! label, the count and the sums of both probabilities. Small cells are merged at the site with
//! the same rule as the 1-D table (each label count 0 or ≥ `min_count`), walking the grid in
//! serpentine order (row by row of model-A bins, alternating direction along model-B bins) so a
//! run stays spatially connected.
//!
//! # The approximation
//!
//! Every patient of a (pooled) joint cell is placed at the cell's mean probability under each
//! model; placement values and the covariance are then computed exactly on those
//! representatives ([`paired_delong`]). The result is exact when every joint cell holds patients
//! with one distinct pair of probabilities (e.g. `min_count = 1` and a fine grid); otherwise AUCs
//! lose the order inside cells (the bound of [`super::PooledScoreTable::auc_resolution_bound`]
//! applies per model), and the test statistic moves accordingly. The tests compare against the
//! exact per-patient DeLong on simulated data and report the difference.
//!
//! Convention: pROC `roc.test(method = "delong", paired = TRUE)`: z = (A₁ − A₂)/√(V₁ + V₂ − 2C),
//! two-sided p = 2Φ(−|z|), with V and C from placement-value sample (co)variances (divisor
//! n − 1).

use serde::{Deserialize, Serialize};

use super::error::MetricsError;
use super::roc::{normal_quantile_two_sided, normal_two_sided_p};
use super::table::{Counted, check_lengths, check_probability, merge_runs, releasable};

/// Per-label sums of a joint cell.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct JointSums {
    /// Patients.
    pub n: u64,
    /// Σ probability under model A.
    pub sum_a: f64,
    /// Σ probability under model B.
    pub sum_b: f64,
}

impl JointSums {
    fn absorb(&mut self, o: &JointSums) {
        self.n += o.n;
        self.sum_a += o.sum_a;
        self.sum_b += o.sum_b;
    }
}

/// One released joint cell: a run of serpentine positions and its per-label sums.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JointCell {
    /// First serpentine position covered.
    pub first: u32,
    /// Last serpentine position covered.
    pub last: u32,
    /// Positives.
    pub pos: JointSums,
    /// Negatives.
    pub neg: JointSums,
}

impl Counted for JointCell {
    fn counts(&self) -> (u64, u64) {
        (self.pos.n, self.neg.n)
    }
    fn absorb(&mut self, o: &Self) {
        self.pos.absorb(&o.pos);
        self.neg.absorb(&o.neg);
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
    }
}

/// SITE HALF: a site's joint (model A × model B) table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteJointTable {
    /// Bins per axis G.
    pub bins_per_axis: u32,
    /// min_count used.
    pub min_count: u64,
    /// Released cells, ascending serpentine runs.
    pub cells: Vec<JointCell>,
}

/// Serpentine position of grid cell (a, b) on a G×G grid.
fn serpentine(a: u32, b: u32, g: u32) -> u32 {
    a * g + if a.is_multiple_of(2) { b } else { g - 1 - b }
}

impl SiteJointTable {
    /// Bins the site's patients on the G×G grid and merges small cells (see the module docs).
    pub fn build(
        bins_per_axis: u32,
        probs_a: &[f64],
        probs_b: &[f64],
        labels: &[bool],
        min_count: u64,
    ) -> Result<SiteJointTable, MetricsError> {
        check_lengths(
            "SiteJointTable::build",
            "probs_a",
            probs_a.len(),
            "labels",
            labels.len(),
        )?;
        check_lengths(
            "SiteJointTable::build",
            "probs_b",
            probs_b.len(),
            "labels",
            labels.len(),
        )?;
        let grid = super::table::ScoreGrid::new(bins_per_axis)?;
        let mut map: std::collections::BTreeMap<u32, JointCell> = Default::default();
        for i in 0..labels.len() {
            check_probability(i, probs_a[i])?;
            check_probability(i, probs_b[i])?;
            let s = serpentine(
                grid.bin_of(probs_a[i]),
                grid.bin_of(probs_b[i]),
                bins_per_axis,
            );
            let c = map.entry(s).or_insert(JointCell {
                first: s,
                last: s,
                pos: JointSums::default(),
                neg: JointSums::default(),
            });
            let t = if labels[i] { &mut c.pos } else { &mut c.neg };
            t.n += 1;
            t.sum_a += probs_a[i];
            t.sum_b += probs_b[i];
        }
        let occupied: Vec<(u32, JointCell)> = map.into_iter().collect();
        let runs = merge_runs(&occupied, min_count)?;
        Ok(SiteJointTable {
            bins_per_axis,
            min_count,
            cells: runs.into_iter().map(|r| r.2).collect(),
        })
    }

    /// True when no released label count is in `1..min_count`.
    pub fn is_releasable(&self, min_count: u64) -> bool {
        self.cells
            .iter()
            .all(|c| releasable(c.pos.n, c.neg.n, min_count))
    }
}

/// A tie cell of the paired data: every patient in it has scores (a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedCell {
    /// Score under model A.
    pub score_a: f64,
    /// Score under model B.
    pub score_b: f64,
    /// Positives.
    pub n_pos: u64,
    /// Negatives.
    pub n_neg: u64,
}

/// AGGREGATOR HALF: pools joint tables (in `SiteId` order), summing cells with identical runs,
/// and returns one [`PairedCell`] per pooled cell at its mean probabilities.
pub fn pool_joint(sites: &[SiteJointTable]) -> Result<Vec<PairedCell>, MetricsError> {
    let g = sites.first().map(|s| s.bins_per_axis).unwrap_or(10);
    let mut map: std::collections::BTreeMap<(u32, u32), JointCell> = Default::default();
    for s in sites {
        if s.bins_per_axis != g {
            return Err(MetricsError::GridMismatch {
                what: "pool_joint",
                a: g,
                b: s.bins_per_axis,
            });
        }
        for c in &s.cells {
            map.entry((c.first, c.last))
                .and_modify(|e| {
                    e.pos.absorb(&c.pos);
                    e.neg.absorb(&c.neg);
                })
                .or_insert(*c);
        }
    }
    Ok(map
        .into_values()
        .map(|c| {
            let n = (c.pos.n + c.neg.n) as f64;
            PairedCell {
                score_a: (c.pos.sum_a + c.neg.sum_a) / n,
                score_b: (c.pos.sum_b + c.neg.sum_b) / n,
                n_pos: c.pos.n,
                n_neg: c.neg.n,
            }
        })
        .collect())
}

/// Per-patient paired cells (exact): one cell per patient.
pub fn paired_cells_from_patients(
    probs_a: &[f64],
    probs_b: &[f64],
    labels: &[bool],
) -> Result<Vec<PairedCell>, MetricsError> {
    check_lengths(
        "paired cells",
        "probs_a",
        probs_a.len(),
        "labels",
        labels.len(),
    )?;
    check_lengths(
        "paired cells",
        "probs_b",
        probs_b.len(),
        "labels",
        labels.len(),
    )?;
    Ok((0..labels.len())
        .map(|i| PairedCell {
            score_a: probs_a[i],
            score_b: probs_b[i],
            n_pos: labels[i] as u64,
            n_neg: (!labels[i]) as u64,
        })
        .collect())
}

/// Result of the paired DeLong test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDelong {
    /// AUC of model A.
    pub auc_a: f64,
    /// AUC of model B.
    pub auc_b: f64,
    /// DeLong variance of AUC A.
    pub var_a: f64,
    /// DeLong variance of AUC B.
    pub var_b: f64,
    /// DeLong covariance.
    pub covariance: f64,
    /// A − B.
    pub difference: f64,
    /// SE of A − B.
    pub se_difference: f64,
    /// CI of the difference (normal), lower.
    pub ci_lower: f64,
    /// CI of the difference, upper.
    pub ci_upper: f64,
    /// z statistic.
    pub z: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Placement values under one model: (V₁₀, V₀₁) per cell.
fn placements_by(
    cells: &[PairedCell],
    key: fn(&PairedCell) -> f64,
    n1: f64,
    n0: f64,
) -> Vec<(f64, f64)> {
    let mut idx: Vec<usize> = (0..cells.len()).collect();
    idx.sort_by(|&i, &j| key(&cells[i]).total_cmp(&key(&cells[j])));
    let mut out = vec![(0.0, 0.0); cells.len()];
    // Walk tie groups of equal score.
    let total_pos: u64 = cells.iter().map(|c| c.n_pos).sum();
    let mut neg_below = 0u64;
    let mut pos_below = 0u64;
    let mut s = 0;
    while s < idx.len() {
        let mut e = s;
        let (mut gp, mut gn) = (0u64, 0u64);
        while e < idx.len() && key(&cells[idx[e]]) == key(&cells[idx[s]]) {
            gp += cells[idx[e]].n_pos;
            gn += cells[idx[e]].n_neg;
            e += 1;
        }
        let v10 = (neg_below as f64 + 0.5 * gn as f64) / n0;
        let pos_above = total_pos - pos_below - gp;
        let v01 = (pos_above as f64 + 0.5 * gp as f64) / n1;
        for &i in &idx[s..e] {
            out[i] = (v10, v01);
        }
        neg_below += gn;
        pos_below += gp;
        s = e;
    }
    out
}

/// DeLong test for two correlated AUCs on the same patients, from paired tie cells.
pub fn paired_delong(cells: &[PairedCell], conf_level: f64) -> Result<PairedDelong, MetricsError> {
    let z_ci = normal_quantile_two_sided(conf_level)?;
    let n1u: u64 = cells.iter().map(|c| c.n_pos).sum();
    let n0u: u64 = cells.iter().map(|c| c.n_neg).sum();
    for (what, got) in [("positives", n1u), ("negatives", n0u)] {
        if got < 2 {
            return Err(MetricsError::TooFew {
                what: "paired DeLong test",
                class: what,
                needed: 2,
                got,
            });
        }
    }
    let (n1, n0) = (n1u as f64, n0u as f64);
    let pa = placements_by(cells, |c| c.score_a, n1, n0);
    let pb = placements_by(cells, |c| c.score_b, n1, n0);
    let a = cells
        .iter()
        .zip(&pa)
        .map(|(c, v)| c.n_pos as f64 * v.0)
        .sum::<f64>()
        / n1;
    let b = cells
        .iter()
        .zip(&pb)
        .map(|(c, v)| c.n_pos as f64 * v.0)
        .sum::<f64>()
        / n1;
    let (mut s10, mut s01) = ([0.0f64; 3], [0.0f64; 3]);
    for ((c, va), vb) in cells.iter().zip(&pa).zip(&pb) {
        let (xa, xb) = (va.0 - a, vb.0 - b);
        let w = c.n_pos as f64;
        s10[0] += w * xa * xa;
        s10[1] += w * xb * xb;
        s10[2] += w * xa * xb;
        let (ya, yb) = (va.1 - a, vb.1 - b);
        let w = c.n_neg as f64;
        s01[0] += w * ya * ya;
        s01[1] += w * yb * yb;
        s01[2] += w * ya * yb;
    }
    let var = |k: usize| s10[k] / (n1 - 1.0) / n1 + s01[k] / (n0 - 1.0) / n0;
    let (var_a, var_b, cov) = (var(0), var(1), var(2));
    let d = a - b;
    let se = (var_a + var_b - 2.0 * cov).max(0.0).sqrt();
    let z = d / se;
    Ok(PairedDelong {
        auc_a: a,
        auc_b: b,
        var_a,
        var_b,
        covariance: cov,
        difference: d,
        se_difference: se,
        ci_lower: d - z_ci * se,
        ci_upper: d + z_ci * se,
        z,
        p_value: if se > 0.0 {
            normal_two_sided_p(z)
        } else {
            f64::NAN
        },
    })
}
