//! Paired comparison of two models' AUCs on the same patients (ML vs clinical): DeLong's test for
//! correlated ROC curves, from a joint count table or per patient.
//!
//! The DeLong covariance of two AUCs needs each patient's placement value under **both** models,
//! so two separate 1-D tables are not enough. Two federated designs are offered.
//!
//! # Recommended: two rounds over the 1-D tables ([`paired_delong_from_tables`])
//!
//! A patient's placement value under model B depends only on the pooled cell its B probability
//! fell in. Round 1: the aggregator sends each site the placement values (V₁₀, V₀₁) of the
//! pooled cells behind the site's released B cells ([`PooledScoreTable::site_placements`]).
//! Round 2 (SITE HALF, [`site_cross_placements`]): for each of its released **A** cells the site
//! returns Σ V₁₀ᴮ over the cell's positives and Σ V₀₁ᴮ over its negatives — sums over a released
//! cell, nothing finer than the A table already revealed. AGGREGATOR HALF: with V^A known per A
//! cell, Σᵢ V^A(i)V^B(i) = Σ_cells V^A(c)·Σ_{i∈c} V^B(i), which gives the covariance exactly.
//! The result is the exact paired DeLong test **of the binned data** that the two 1-D tables
//! describe: its AUCs and variances are the reported count-path ones, and with no two distinct
//! probabilities sharing a cell it equals the per-patient test.
//!
//! # Alternative (not recommended): one round over a joint grid ([`SiteJointTable`])
//!
//! Measured on the study's shape (`tests/metrics_golden.rs`): exact with `min_count = 1` on a
//! fine grid, but with G = 10 and `min_count` 3–5 the second model's AUC drifted by 0.08–0.18
//! and the test's z from 2.9 to 0.0, because merged runs mix that model's scores along a grid
//! row. Kept for deployments that cannot afford the second round.
//!
//! Each site bins its patients on a coarse G×G grid of
//! (model A bin, model B bin) (default G = 10, i.e. 100 cells instead of 10⁶) and releases, per
//! label, the count, and per cell the sums of both probabilities. Small cells are merged at the
//! site with the same [`MergeRule`] and optimal partition as the 1-D table (fewest mixed pairs),
//! walking the grid in
//! serpentine order (row by row of model-A bins, alternating direction along model-B bins) so a
//! run stays spatially connected.
//!
//! # The approximation
//!
//! (joint grid) Every patient of a (pooled) joint cell is placed at the cell's mean probability under each
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
use super::roc::{auc_delong, normal_quantile_two_sided, normal_two_sided_p};
use super::table::{
    Counted, MergeRule, check_lengths, check_probability, merge_runs_optimal, releasable,
};
use super::table::{PooledScoreTable, SiteScoreTable};

/// One released joint cell: a run of serpentine positions, its label counts and the sums of
/// both models' probabilities over the cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct JointCell {
    /// First serpentine position covered.
    pub first: u32,
    /// Last serpentine position covered.
    pub last: u32,
    /// Positives.
    pub n_pos: u64,
    /// Negatives.
    pub n_neg: u64,
    /// Σ probability under model A.
    pub sum_a: f64,
    /// Σ probability under model B.
    pub sum_b: f64,
}

impl JointCell {
    fn add_sums(&mut self, o: &JointCell) {
        self.n_pos += o.n_pos;
        self.n_neg += o.n_neg;
        self.sum_a += o.sum_a;
        self.sum_b += o.sum_b;
    }
}

impl Counted for JointCell {
    fn counts(&self) -> (u64, u64) {
        (self.n_pos, self.n_neg)
    }
    fn absorb(&mut self, o: &Self) {
        self.add_sums(o);
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
    /// Merge rule used.
    pub rule: MergeRule,
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
        rule: MergeRule,
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
                n_pos: 0,
                n_neg: 0,
                sum_a: 0.0,
                sum_b: 0.0,
            });
            if labels[i] {
                c.n_pos += 1;
            } else {
                c.n_neg += 1;
            }
            c.sum_a += probs_a[i];
            c.sum_b += probs_b[i];
        }
        let occupied: Vec<(u32, JointCell)> = map.into_iter().collect();
        let runs = merge_runs_optimal(&occupied, min_count, rule)?;
        Ok(SiteJointTable {
            bins_per_axis,
            min_count,
            rule,
            cells: runs.into_iter().map(|r| r.2).collect(),
        })
    }

    /// True when every released cell is releasable under `rule` with `min_count`.
    pub fn is_releasable(&self, min_count: u64, rule: MergeRule) -> bool {
        self.cells
            .iter()
            .all(|c| releasable(c.n_pos, c.n_neg, min_count, rule))
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
                .and_modify(|e| e.add_sums(c))
                .or_insert(*c);
        }
    }
    Ok(map
        .into_values()
        .map(|c| {
            let n = (c.n_pos + c.n_neg) as f64;
            PairedCell {
                score_a: c.sum_a / n,
                score_b: c.sum_b / n,
                n_pos: c.n_pos,
                n_neg: c.n_neg,
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

impl PairedDelong {
    /// The test from the two AUCs, their DeLong variances and covariance: difference, its SE,
    /// the normal CI at multiplier `z_ci`, z and the two-sided p (NaN when the SE is 0).
    pub fn from_variances(a: f64, b: f64, var_a: f64, var_b: f64, cov: f64, z_ci: f64) -> Self {
        let d = a - b;
        let se = (var_a + var_b - 2.0 * cov).max(0.0).sqrt();
        let z = d / se;
        PairedDelong {
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
        }
    }
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
    Ok(PairedDelong::from_variances(a, b, var_a, var_b, cov, z_ci))
}

/// Round-2 reply of one site for one of its released model-A cells.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CrossPlacementSums {
    /// Σ V₁₀ᴮ over the cell's positives.
    pub sum_v10_pos: f64,
    /// Σ V₀₁ᴮ over the cell's negatives.
    pub sum_v01_neg: f64,
}

/// SITE HALF (round 2 of the paired comparison): per released cell of the site's model-A table,
/// the sums of the model-B placement values of its patients. `placements_b[j]` is what the
/// aggregator sent for the site's j-th released B cell.
pub fn site_cross_placements(
    table_a: &SiteScoreTable,
    table_b: &SiteScoreTable,
    probs_a: &[f64],
    probs_b: &[f64],
    labels: &[bool],
    placements_b: &[(f64, f64)],
) -> Result<Vec<CrossPlacementSums>, MetricsError> {
    check_lengths(
        "site_cross_placements",
        "probs_a",
        probs_a.len(),
        "labels",
        labels.len(),
    )?;
    check_lengths(
        "site_cross_placements",
        "probs_b",
        probs_b.len(),
        "labels",
        labels.len(),
    )?;
    check_lengths(
        "site_cross_placements",
        "placements_b",
        placements_b.len(),
        "table_b.cells",
        table_b.cells.len(),
    )?;
    let mut out = vec![CrossPlacementSums::default(); table_a.cells.len()];
    for i in 0..labels.len() {
        check_probability(i, probs_a[i])?;
        check_probability(i, probs_b[i])?;
        let ca = table_a.cell_index(probs_a[i]).ok_or_else(|| MetricsError::BadCell {
            index: i,
            reason: "patient's model-A probability is in no released cell; rebuild the A table from the same patients".into(),
        })?;
        let cb = table_b.cell_index(probs_b[i]).ok_or_else(|| MetricsError::BadCell {
            index: i,
            reason: "patient's model-B probability is in no released cell; rebuild the B table from the same patients".into(),
        })?;
        if labels[i] {
            out[ca].sum_v10_pos += placements_b[cb].0;
        } else {
            out[ca].sum_v01_neg += placements_b[cb].1;
        }
    }
    Ok(out)
}

/// AGGREGATOR HALF: paired DeLong test from the pooled 1-D tables of both models and every
/// site's round-2 reply. `sites[s]` = (site s's released model-A table, its reply), in
/// `SiteId` order; the A tables must be those pooled into `pooled_a`.
pub fn paired_delong_from_tables(
    pooled_a: &PooledScoreTable,
    pooled_b: &PooledScoreTable,
    sites: &[(&SiteScoreTable, &[CrossPlacementSums])],
    conf_level: f64,
) -> Result<PairedDelong, MetricsError> {
    let z_ci = normal_quantile_two_sided(conf_level)?;
    let ra = pooled_a.ranked();
    let rb = pooled_b.ranked();
    if (ra.n_pos, ra.n_neg) != (rb.n_pos, rb.n_neg) {
        return Err(MetricsError::BadOption {
            name: "paired tables",
            value: format!("{}+{} vs {}+{}", ra.n_pos, ra.n_neg, rb.n_pos, rb.n_neg),
            reason: "both models' tables must describe the same patients",
        });
    }
    for (class, got) in [("positives", ra.n_pos), ("negatives", ra.n_neg)] {
        if got < 2 {
            return Err(MetricsError::TooFew {
                what: "paired DeLong test",
                class,
                needed: 2,
                got,
            });
        }
    }
    let ea = auc_delong(&ra, conf_level)?;
    let eb = auc_delong(&rb, conf_level)?;
    let (n1, n0) = (ra.n_pos as f64, ra.n_neg as f64);
    let (mut cross10, mut cross01) = (0.0f64, 0.0f64);
    for (table, reply) in sites {
        check_lengths(
            "paired_delong_from_tables",
            "reply",
            reply.len(),
            "table_a.cells",
            table.cells.len(),
        )?;
        let va = pooled_a.site_placements(table);
        for (v, r) in va.iter().zip(reply.iter()) {
            cross10 += v.0 * r.sum_v10_pos;
            cross01 += v.1 * r.sum_v01_neg;
        }
    }
    let (a, b) = (ea.auc, eb.auc);
    let cov = (cross10 - n1 * a * b) / (n1 - 1.0) / n1 + (cross01 - n0 * a * b) / (n0 - 1.0) / n0;
    Ok(PairedDelong::from_variances(
        a,
        b,
        ea.variance,
        eb.variance,
        cov,
        z_ci,
    ))
}
