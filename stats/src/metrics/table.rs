//! The score count-table protocol: the site half (bin a site's own predicted probabilities on the
//! study's shared grid, merge small cells at the site) and the aggregator half (pool the sites'
//! tables and rank the pooled cells for the metrics).
//!
//! # What a site releases
//!
//! The grid splits [0, 1] into `n_bins` equal bins; bin `k` holds `p` with
//! `floor(p·n_bins) == k` (the last bin also holds `p == 1`). Per released cell the site sends
//! the positives and negatives counts, and the cell's `Σp` and `Σ(p − y)²` over all its patients
//! ([`ScoreTableCell`], DESIGN §4.8). Sums are per cell, not per label, so every released number
//! describes the whole cell (≥ `min_count` patients) even when one label is rare in it.
//!
//! # Small cells are merged at the site, never dropped
//!
//! The site partitions its occupied bins, in ascending order, into contiguous runs such that
//! every run is releasable under its [`MergeRule`]: by default ([`MergeRule::CellTotal`]) each
//! released cell holds 0 or ≥ `min_count` patients (the rule); the stricter
//! [`MergeRule::EachCount`] also requires each label count to be 0 or ≥ `min_count` (no
//! "2 responders in this cell"). Among all such partitions it picks the one with the
//! fewest (positive, negative) pairs sharing a run (those are the pairs the aggregator cannot
//! order), then the one with the most runs (dynamic programming, O(K²) in the occupied bins). A
//! greedy left-to-right merge was tried first and lost far more AUC resolution on 15-patient
//! sites. If even one cell with every patient is invalid (a label total below `min_count`), the
//! site cannot take part ([`MetricsError::SiteTooSmall`]).
//!
//! Measured on the study's shape (7 sites, ~15 patients each, 2-decimal probabilities; see
//! `tests/metrics_golden.rs`), `EachCount` with `min_count = 5` leaves about one cell per site
//! and the count-table AUC collapses towards 0.5; `CellTotal` keeps 3 cells per site. Sites that
//! need `EachCount` should use `release_predictions` or accept that the count path is
//! uninformative at that size.
//!
//! A run that is a single bin is released as that bin. A run that spans several bins is released
//! with an extent reaching halfway into the empty gaps on either side (the first run reaches
//! bin 0, the last run the top bin), so the extremes of the run are not revealed to bin
//! precision. **Resolution lost**: inside a merged cell the aggregator knows only the per-label
//! counts and sums, so every patient of the cell is ranked at the cell's mean probability
//! ([`RankedCells`]); pairs of patients in the same cell, or in cells of different sites whose
//! extents overlap, are no longer ordered. [`PooledScoreTable::auc_resolution_bound`] turns
//! this into a bound on the AUC error that the aggregator computes from the released tables
//! alone.
//!
//! # Pooling
//!
//! Cells with identical extents (in particular the same single bin) are summed over sites (in the
//! order the tables are given, which must be `SiteId` order for bit-for-bit repeatability); they
//! are one tie group. Every pooled cell is scored by its mean probability `(Σp₊ + Σp₋)/n`, the
//! cells are sorted by that score and cells with equal scores form one tie group.

use serde::{Deserialize, Serialize};

use super::error::MetricsError;

/// The study's shared score grid: `n_bins` equal bins on [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreGrid {
    n_bins: u32,
}

impl Default for ScoreGrid {
    /// 1000 bins (resolution 0.001), the protocol default.
    fn default() -> Self {
        ScoreGrid { n_bins: 1000 }
    }
}

impl ScoreGrid {
    /// A grid of `n_bins` equal bins (at least 1).
    pub fn new(n_bins: u32) -> Result<ScoreGrid, MetricsError> {
        if n_bins == 0 {
            return Err(MetricsError::BadOption {
                name: "score_bins",
                value: "0".into(),
                reason: "the score grid needs at least one bin (default 1000)",
            });
        }
        Ok(ScoreGrid { n_bins })
    }

    /// Number of bins.
    pub fn n_bins(&self) -> u32 {
        self.n_bins
    }

    /// Bin of probability `p` (which must be in [0, 1]): `min(floor(p·n), n − 1)`. Monotone in
    /// `p`, so bin order never contradicts score order.
    pub fn bin_of(&self, p: f64) -> u32 {
        let k = (p * self.n_bins as f64).floor();
        if k <= 0.0 {
            0
        } else {
            (k as u32).min(self.n_bins - 1)
        }
    }

    /// Lower edge `k / n` of bin `k`.
    pub fn lower_edge(&self, k: u32) -> f64 {
        k as f64 / self.n_bins as f64
    }

    /// Upper edge `(k + 1) / n` of bin `k`.
    pub fn upper_edge(&self, k: u32) -> f64 {
        (k as f64 + 1.0) / self.n_bins as f64
    }
}

/// Count and sums of one label's patients in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LabelSums {
    /// Number of patients.
    pub n: u64,
    /// Σ p over them.
    pub sum_p: f64,
    /// Σ (p − y)² over them (y = 1 for positives, 0 for negatives): their Brier contribution.
    pub sum_sq_err: f64,
}

impl LabelSums {
    /// Adds one patient with probability `p` and label `y`.
    pub fn push(&mut self, p: f64, y: bool) {
        let e = p - if y { 1.0 } else { 0.0 };
        self.n += 1;
        self.sum_p += p;
        self.sum_sq_err += e * e;
    }

    /// Adds another set of sums.
    pub fn absorb(&mut self, o: &LabelSums) {
        self.n += o.n;
        self.sum_p += o.sum_p;
        self.sum_sq_err += o.sum_sq_err;
    }
}

/// One released cell: the bin range it covers, its label counts and its sums.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreTableCell {
    /// First bin covered.
    pub lo_bin: u32,
    /// Last bin covered (`>= lo_bin`).
    pub hi_bin: u32,
    /// Responders (label 1).
    pub n_pos: u64,
    /// Non-responders (label 0).
    pub n_neg: u64,
    /// Σ p over the cell's patients.
    pub sum_p: f64,
    /// Σ (p − y)² over the cell's patients (its Brier contribution).
    pub sum_sq_err: f64,
}

impl ScoreTableCell {
    fn empty(k: u32) -> ScoreTableCell {
        ScoreTableCell {
            lo_bin: k,
            hi_bin: k,
            n_pos: 0,
            n_neg: 0,
            sum_p: 0.0,
            sum_sq_err: 0.0,
        }
    }

    fn push(&mut self, p: f64, y: bool) {
        let e = p - if y { 1.0 } else { 0.0 };
        if y {
            self.n_pos += 1;
        } else {
            self.n_neg += 1;
        }
        self.sum_p += p;
        self.sum_sq_err += e * e;
    }

    fn add_sums(&mut self, o: &ScoreTableCell) {
        self.n_pos += o.n_pos;
        self.n_neg += o.n_neg;
        self.sum_p += o.sum_p;
        self.sum_sq_err += o.sum_sq_err;
    }

    /// Patients in the cell.
    pub fn n(&self) -> u64 {
        self.n_pos + self.n_neg
    }

    /// Mean probability of the cell's patients, the score it is ranked at.
    pub fn mean_p(&self) -> f64 {
        self.sum_p / self.n() as f64
    }

    /// Per-label sums for the metrics. Counts, Σp and Σ(p − y)² of the whole cell are kept
    /// exactly; the split of Σp between labels is taken as n₊·m and n₋·m (m = cell mean), and
    /// the within-cell spread v = Σp²/n − m² implied by that split is shared by both labels, so
    /// a positive carries v + (1 − m)² and a negative v + m² (these add back to the cell's exact
    /// Σ(p − y)²; if one comes out negative it is set to 0 and the other takes the whole sum). The split is exact for single-label cells and for cells of one distinct
    /// probability; it only affects the bootstrap's Brier replicates.
    pub fn label_sums(&self) -> (LabelSums, LabelSums) {
        let n = self.n() as f64;
        let m = self.mean_p();
        let (np, nn) = (self.n_pos as f64, self.n_neg as f64);
        if self.n_neg == 0 || self.n_pos == 0 {
            let s = LabelSums {
                n: self.n(),
                sum_p: self.sum_p,
                sum_sq_err: self.sum_sq_err,
            };
            let z = LabelSums::default();
            return if self.n_neg == 0 { (s, z) } else { (z, s) };
        }
        // Σp² = Σ(p−y)² + 2Σ₊p − n₊ with Σ₊p ≈ n₊m; v may come out negative when the labels are
        // well separated inside the cell. Each label's mean squared error is kept ≥ 0 while the
        // cell total stays exact.
        let sum_p2 = self.sum_sq_err + 2.0 * np * m - np;
        let v = sum_p2 / n - m * m;
        let (mut e_pos, mut e_neg) = (v + (1.0 - m) * (1.0 - m), v + m * m);
        if e_pos < 0.0 {
            e_pos = 0.0;
            e_neg = self.sum_sq_err / nn;
        } else if e_neg < 0.0 {
            e_neg = 0.0;
            e_pos = self.sum_sq_err / np;
        }
        (
            LabelSums {
                n: self.n_pos,
                sum_p: np * m,
                sum_sq_err: np * e_pos,
            },
            LabelSums {
                n: self.n_neg,
                sum_p: nn * m,
                sum_sq_err: nn * e_neg,
            },
        )
    }
}

/// Which released counts must be 0 or ≥ `min_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum MergeRule {
    /// Each released cell holds 0 or ≥ min_count patients (label counts may be smaller).
    #[default]
    CellTotal,
    /// Additionally each label count (or events / censored count) is 0 or ≥ min_count.
    EachCount,
}

/// Anything with a positive and a negative count that can absorb a neighbour: the unit the
/// site-side merge works on (1-D score cells here, joint cells in [`super::paired`]).
pub(crate) trait Counted: Clone {
    fn counts(&self) -> (u64, u64);
    fn absorb(&mut self, other: &Self);
}

impl Counted for ScoreTableCell {
    fn counts(&self) -> (u64, u64) {
        (self.n_pos, self.n_neg)
    }
    fn absorb(&mut self, o: &Self) {
        self.add_sums(o);
        self.lo_bin = self.lo_bin.min(o.lo_bin);
        self.hi_bin = self.hi_bin.max(o.hi_bin);
    }
}

/// True when a cell with these two counts may be released under `rule` (and is not empty).
pub(crate) fn releasable(pos: u64, neg: u64, min_count: u64, rule: MergeRule) -> bool {
    let ok = |c: u64| c == 0 || c >= min_count;
    pos + neg > 0
        && match rule {
            MergeRule::CellTotal => pos + neg >= min_count,
            MergeRule::EachCount => ok(pos) && ok(neg),
        }
}

/// Merges consecutive occupied cells (given in the merge order, each tagged with its position)
/// into runs whose label counts are each 0 or `>= min_count`. Returns (first position, last
/// position, merged cell) per run. See the module docs for the rule.
pub(crate) fn merge_runs<T: Counted>(
    cells: &[(u32, T)],
    min_count: u64,
    rule: MergeRule,
) -> Result<Vec<(u32, u32, T)>, MetricsError> {
    let mut runs: Vec<(u32, u32, T)> = Vec::new();
    let mut cur: Option<(u32, u32, T)> = None;
    for (pos, c) in cells {
        match cur.as_mut() {
            None => cur = Some((*pos, *pos, c.clone())),
            Some(r) => {
                r.1 = *pos;
                r.2.absorb(c);
            }
        }
        let (p, n) = cur.as_ref().map(|r| r.2.counts()).unwrap_or((0, 0));
        if releasable(p, n, min_count, rule) {
            runs.extend(cur.take());
        }
    }
    if let Some(mut tail) = cur {
        // Fold the short tail back into earlier runs until it is releasable.
        loop {
            let (p, n) = tail.2.counts();
            if releasable(p, n, min_count, rule) {
                runs.push(tail);
                break;
            }
            match runs.pop() {
                Some(mut prev) => {
                    prev.1 = tail.1;
                    prev.2.absorb(&tail.2);
                    tail = prev;
                }
                None => {
                    return Err(MetricsError::SiteTooSmall {
                        positives: p,
                        negatives: n,
                        min_count,
                    });
                }
            }
        }
    }
    Ok(runs)
}

/// Like [`merge_runs`] (same validity rule, same contiguity) but chooses the partition of the
/// occupied cells that **minimises the number of mixed (positive, negative) pairs inside a
/// released cell** — the pairs whose order the aggregator loses, i.e. the same-cell term of
/// [`PooledScoreTable::auc_resolution_bound`] — and, among those, releases the most cells.
/// Dynamic programming over prefix counts, O(K²) for K occupied cells (K ≤ n_bins).
pub(crate) fn merge_runs_optimal<T: Counted>(
    cells: &[(u32, T)],
    min_count: u64,
    rule: MergeRule,
) -> Result<Vec<(u32, u32, T)>, MetricsError> {
    let k = cells.len();
    if k == 0 {
        return Ok(Vec::new());
    }
    let mut pp = vec![0u64; k + 1];
    let mut pn = vec![0u64; k + 1];
    for (i, (_, c)) in cells.iter().enumerate() {
        let (p, n) = c.counts();
        pp[i + 1] = pp[i] + p;
        pn[i + 1] = pn[i] + n;
    }
    // best[j] = (mixed pairs, −cells) of the best valid partition of the first j cells.
    let mut best: Vec<Option<(u128, i64)>> = vec![None; k + 1];
    let mut from = vec![0usize; k + 1];
    best[0] = Some((0, 0));
    for j in 1..=k {
        for i in 0..j {
            let Some((cost, neg_cells)) = best[i] else {
                continue;
            };
            let (p, n) = (pp[j] - pp[i], pn[j] - pn[i]);
            if !releasable(p, n, min_count, rule) {
                continue;
            }
            let cand = (cost + p as u128 * n as u128, neg_cells - 1);
            if best[j].is_none_or(|b| cand < b) {
                best[j] = Some(cand);
                from[j] = i;
            }
        }
    }
    if best[k].is_none() {
        return Err(MetricsError::SiteTooSmall {
            positives: pp[k],
            negatives: pn[k],
            min_count,
        });
    }
    let mut bounds = Vec::new();
    let mut j = k;
    while j > 0 {
        bounds.push((from[j], j));
        j = from[j];
    }
    bounds.reverse();
    Ok(bounds
        .into_iter()
        .map(|(i, j)| {
            let mut c = cells[i].1.clone();
            for (_, o) in &cells[i + 1..j] {
                c.absorb(o);
            }
            (cells[i].0, cells[j - 1].0, c)
        })
        .collect())
}

pub(crate) fn check_probability(index: usize, p: f64) -> Result<(), MetricsError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(MetricsError::BadProbability { index, value: p });
    }
    Ok(())
}

pub(crate) fn check_lengths(
    what: &'static str,
    a_name: &'static str,
    a: usize,
    b_name: &'static str,
    b: usize,
) -> Result<(), MetricsError> {
    if a != b {
        return Err(MetricsError::LengthMismatch {
            what,
            a_name,
            a,
            b_name,
            b,
        });
    }
    Ok(())
}

/// SITE HALF: one site's released score table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteScoreTable {
    /// The shared grid the table was binned on.
    pub grid: ScoreGrid,
    /// The site's min_count when the table was built.
    pub min_count: u64,
    /// The merge rule used.
    pub rule: MergeRule,
    /// Released cells, ascending and disjoint.
    pub cells: Vec<ScoreTableCell>,
}

impl SiteScoreTable {
    /// Bins the site's own patients (`probs[i]` = mean outer-fold probability, `labels[i]` =
    /// response) and merges cells so that each released label count is 0 or `>= min_count`.
    /// `min_count <= 1` releases every occupied bin as is.
    pub fn build(
        grid: ScoreGrid,
        probs: &[f64],
        labels: &[bool],
        min_count: u64,
        rule: MergeRule,
    ) -> Result<SiteScoreTable, MetricsError> {
        check_lengths(
            "SiteScoreTable::build",
            "probs",
            probs.len(),
            "labels",
            labels.len(),
        )?;
        let mut bins: std::collections::BTreeMap<u32, ScoreTableCell> = Default::default();
        for (i, (&p, &y)) in probs.iter().zip(labels).enumerate() {
            check_probability(i, p)?;
            let k = grid.bin_of(p);
            bins.entry(k)
                .or_insert_with(|| ScoreTableCell::empty(k))
                .push(p, y);
        }
        Self::merge_bins(grid, bins.into_iter().collect(), min_count, rule)
    }

    /// The same table from per-bin cells instead of patients: `bins` holds one cell per occupied
    /// bin (`lo_bin == hi_bin`, ascending, non-empty), e.g. a sum of several sites' unmerged
    /// bins (`federation::secure`, where the merge happens on the sum over sites). Merged exactly
    /// as [`SiteScoreTable::build`] merges a site's own bins.
    pub fn from_bins(
        grid: ScoreGrid,
        bins: Vec<ScoreTableCell>,
        min_count: u64,
        rule: MergeRule,
    ) -> Result<SiteScoreTable, MetricsError> {
        for (i, c) in bins.iter().enumerate() {
            if c.lo_bin != c.hi_bin
                || c.hi_bin >= grid.n_bins()
                || c.n() == 0
                || (i > 0 && c.lo_bin <= bins[i - 1].hi_bin)
            {
                return Err(MetricsError::BadCell {
                    index: i,
                    reason: "per-bin cells must each cover one bin of the grid, hold a patient and ascend".into(),
                });
            }
        }
        Self::merge_bins(
            grid,
            bins.into_iter().map(|c| (c.lo_bin, c)).collect(),
            min_count,
            rule,
        )
    }

    fn merge_bins(
        grid: ScoreGrid,
        occupied: Vec<(u32, ScoreTableCell)>,
        min_count: u64,
        rule: MergeRule,
    ) -> Result<SiteScoreTable, MetricsError> {
        let runs = merge_runs_optimal(&occupied, min_count, rule)?;
        // Extents: single-bin runs stay tight; merged runs reach halfway into the gaps.
        let mut cells: Vec<ScoreTableCell> = runs.iter().map(|r| r.2).collect();
        let last = grid.n_bins() - 1;
        for i in 0..cells.len() {
            if runs[i].0 == runs[i].1 {
                continue;
            }
            let lo = if i == 0 {
                0
            } else {
                let a = runs[i - 1].1;
                let b = runs[i].0;
                (a + b) / 2 + 1
            };
            let hi = if i + 1 == cells.len() {
                last
            } else {
                let a = runs[i].1;
                let b = runs[i + 1].0;
                (a + b) / 2
            };
            cells[i].lo_bin = lo.min(runs[i].0);
            cells[i].hi_bin = hi.max(runs[i].1);
        }
        Ok(SiteScoreTable {
            grid,
            min_count,
            rule,
            cells,
        })
    }

    /// Index of the released cell that holds probability `p` (the site uses it to put its own
    /// patients in the predicted group the aggregator chose for that cell).
    pub fn cell_index(&self, p: f64) -> Option<usize> {
        let k = self.grid.bin_of(p);
        self.cells
            .iter()
            .position(|c| c.lo_bin <= k && k <= c.hi_bin)
    }

    /// Aggregator-side validation of a received table: well-formed, ascending, disjoint, finite,
    /// and releasable under `rule` with `min_count` (the values the aggregator expects for the
    /// site, not the ones in the message).
    pub fn validate(&self, min_count: u64, rule: MergeRule) -> Result<(), MetricsError> {
        for (i, c) in self.cells.iter().enumerate() {
            if c.lo_bin > c.hi_bin || c.hi_bin >= self.grid.n_bins() {
                return Err(MetricsError::BadCell {
                    index: i,
                    reason: format!(
                        "bins {}..={} do not fit a {}-bin grid",
                        c.lo_bin,
                        c.hi_bin,
                        self.grid.n_bins()
                    ),
                });
            }
            if i > 0 && c.lo_bin <= self.cells[i - 1].hi_bin {
                return Err(MetricsError::BadCell {
                    index: i,
                    reason: "cells overlap or are not ascending".into(),
                });
            }
            if !(c.sum_p.is_finite() && c.sum_sq_err.is_finite()) {
                return Err(MetricsError::BadCell {
                    index: i,
                    reason: "non-finite sum".into(),
                });
            }
            if c.n() == 0 {
                return Err(MetricsError::BadCell {
                    index: i,
                    reason: "empty cell (empty bins are not released)".into(),
                });
            }
            if !releasable(c.n_pos, c.n_neg, min_count, rule) {
                let bad = [c.n(), c.n_pos, c.n_neg]
                    .into_iter()
                    .find(|&x| x > 0 && x < min_count)
                    .unwrap_or(0);
                return Err(MetricsError::DisclosureViolation {
                    index: i,
                    count: bad,
                    max_bad: min_count.saturating_sub(1),
                });
            }
        }
        Ok(())
    }
}

/// AGGREGATOR HALF: the sites' tables pooled; cells with identical extents summed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PooledScoreTable {
    /// The shared grid.
    pub grid: ScoreGrid,
    /// Pooled cells sorted by (lo_bin, hi_bin).
    pub cells: Vec<ScoreTableCell>,
}

impl PooledScoreTable {
    /// Pools site tables given in `SiteId` order.
    pub fn pool(sites: &[SiteScoreTable]) -> Result<PooledScoreTable, MetricsError> {
        let grid = sites.first().map(|s| s.grid).unwrap_or_default();
        let mut map: std::collections::BTreeMap<(u32, u32), ScoreTableCell> = Default::default();
        for s in sites {
            if s.grid != grid {
                return Err(MetricsError::GridMismatch {
                    what: "PooledScoreTable::pool",
                    a: grid.n_bins(),
                    b: s.grid.n_bins(),
                });
            }
            for c in &s.cells {
                map.entry((c.lo_bin, c.hi_bin))
                    .and_modify(|e| e.add_sums(c))
                    .or_insert(*c);
            }
        }
        Ok(PooledScoreTable {
            grid,
            cells: map.into_values().collect(),
        })
    }

    /// Total positives and negatives.
    pub fn totals(&self) -> (u64, u64) {
        self.cells
            .iter()
            .fold((0, 0), |(p, n), c| (p + c.n_pos, n + c.n_neg))
    }

    /// Upper bound on |AUC(table) − AUC(per-patient)|, from the table alone.
    ///
    /// A (positive, negative) pair is ordered the same way by the table and by the exact scores
    /// whenever the two patients sit in cells with disjoint extents (bins are monotone in p and a
    /// cell's mean lies inside its extent). Pairs in the same cell are scored ½ by the table and
    /// somewhere in [0, 1] exactly: error ≤ ½ each. Pairs in different cells with overlapping
    /// extents: error ≤ 1 each. Bound = (½·Σ_c n₊(c)n₋(c) + Σ_{c≠d overlapping} n₊(c)n₋(d)) /
    /// (n₊n₋). It is 0 when no cell holds both labels and no two cells overlap — e.g.
    /// `min_count = 1` and no two patients in one bin.
    pub fn auc_resolution_bound(&self) -> f64 {
        let (np, nn) = self.totals();
        if np == 0 || nn == 0 {
            return f64::NAN;
        }
        let mut same = 0.0f64;
        let mut cross = 0.0f64;
        // Cells are sorted by lo_bin: for cell a, later cells overlapping a start at <= hi_a.
        for (i, a) in self.cells.iter().enumerate() {
            // A single-bin cell whose patients share one probability cannot misorder.
            same += 0.5 * a.n_pos as f64 * a.n_neg as f64;
            for b in &self.cells[i + 1..] {
                if b.lo_bin > a.hi_bin {
                    // Cells sorted by (lo, hi): a later cell can still overlap if a is wide,
                    // but once lo_b > hi_a no later b (lo ascending) overlaps a.
                    break;
                }
                cross += a.n_pos as f64 * b.n_neg as f64 + b.n_pos as f64 * a.n_neg as f64;
            }
        }
        (same + cross) / (np as f64 * nn as f64)
    }

    /// The ranked tie groups the metrics are computed on.
    pub fn ranked(&self) -> RankedCells {
        RankedCells::from_cells(self.cells.iter().map(|c| {
            let (pos, neg) = c.label_sums();
            ScoreCell {
                score: c.mean_p(),
                pos,
                neg,
            }
        }))
    }

    /// DeLong placement values (V₁₀ for a positive, V₀₁ for a negative) of the pooled cell behind
    /// each released cell of `site`. Round 1 of the paired comparison: the aggregator sends these
    /// for model B's table to the site (see [`super::paired::site_cross_placements`]).
    pub fn site_placements(&self, site: &SiteScoreTable) -> Vec<(f64, f64)> {
        let rc = self.ranked();
        let pl = super::roc::placements(&rc);
        site.cells
            .iter()
            .map(|c| {
                let score = self
                    .cells
                    .iter()
                    .find(|p| p.lo_bin == c.lo_bin && p.hi_bin == c.hi_bin)
                    .map(|p| p.mean_p())
                    .unwrap_or(c.mean_p());
                let i = rc
                    .cells
                    .binary_search_by(|x| x.score.total_cmp(&score))
                    .unwrap_or_else(|i| i.min(rc.cells.len().saturating_sub(1)));
                pl.get(i).copied().unwrap_or((f64::NAN, f64::NAN))
            })
            .collect()
    }

    /// For each released cell of `site` (a table that went into this pool), whether its pooled
    /// cell is classified positive ("high") at `threshold`: pooled-cell score >= threshold. The
    /// aggregator sends this vector to the site, which puts each patient in the group of the
    /// cell [`SiteScoreTable::cell_index`] finds, so the survival groups are exactly the
    /// partition whose confusion matrix was reported.
    pub fn site_cell_is_high(&self, site: &SiteScoreTable, threshold: f64) -> Vec<bool> {
        site.cells
            .iter()
            .map(|c| {
                self.cells
                    .iter()
                    .find(|p| p.lo_bin == c.lo_bin && p.hi_bin == c.hi_bin)
                    .map(|p| p.mean_p() >= threshold)
                    .unwrap_or(c.mean_p() >= threshold)
            })
            .collect()
    }
}

/// One tie group: every patient in it is ranked at `score`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoreCell {
    /// The score the group is ranked at (a probability, or a cell's mean probability).
    pub score: f64,
    /// Positives' sums.
    pub pos: LabelSums,
    /// Negatives' sums.
    pub neg: LabelSums,
}

/// Tie groups sorted by ascending score, equal scores merged: the common input of every metric.
/// Built from a pooled count table ([`PooledScoreTable::ranked`]) or from per-patient
/// probabilities ([`RankedCells::from_patients`], one group per distinct probability, which
/// makes every metric exact).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedCells {
    /// Ascending by score, scores distinct.
    pub cells: Vec<ScoreCell>,
    /// Total positives.
    pub n_pos: u64,
    /// Total negatives.
    pub n_neg: u64,
}

impl RankedCells {
    /// Sorts cells by score (f64 total order) and merges equal scores.
    pub fn from_cells<I: IntoIterator<Item = ScoreCell>>(cells: I) -> RankedCells {
        let mut v: Vec<ScoreCell> = cells
            .into_iter()
            .filter(|c| c.pos.n + c.neg.n > 0)
            .collect();
        v.sort_by(|a, b| a.score.total_cmp(&b.score));
        let mut out: Vec<ScoreCell> = Vec::with_capacity(v.len());
        for c in v {
            match out.last_mut() {
                Some(l) if l.score == c.score => {
                    l.pos.absorb(&c.pos);
                    l.neg.absorb(&c.neg);
                }
                _ => out.push(c),
            }
        }
        let n_pos = out.iter().map(|c| c.pos.n).sum();
        let n_neg = out.iter().map(|c| c.neg.n).sum();
        RankedCells {
            cells: out,
            n_pos,
            n_neg,
        }
    }

    /// One tie group per distinct probability: the exact per-patient data.
    pub fn from_patients(probs: &[f64], labels: &[bool]) -> Result<RankedCells, MetricsError> {
        check_lengths(
            "RankedCells::from_patients",
            "probs",
            probs.len(),
            "labels",
            labels.len(),
        )?;
        let mut cells = Vec::with_capacity(probs.len());
        for (i, (&p, &y)) in probs.iter().zip(labels).enumerate() {
            check_probability(i, p)?;
            let mut c = ScoreCell {
                score: p,
                pos: LabelSums::default(),
                neg: LabelSums::default(),
            };
            if y {
                c.pos.push(p, true);
            } else {
                c.neg.push(p, false);
            }
            cells.push(c);
        }
        Ok(RankedCells::from_cells(cells))
    }

    /// Total patients.
    pub fn n(&self) -> u64 {
        self.n_pos + self.n_neg
    }

    pub(crate) fn need_both(&self, what: &'static str) -> Result<(), MetricsError> {
        if self.n_pos == 0 {
            return Err(MetricsError::TooFew {
                what,
                class: "positives",
                needed: 1,
                got: 0,
            });
        }
        if self.n_neg == 0 {
            return Err(MetricsError::TooFew {
                what,
                class: "negatives",
                needed: 1,
                got: 0,
            });
        }
        Ok(())
    }
}
