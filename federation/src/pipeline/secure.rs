//! Secure aggregation of the pipeline study's meta-model rounds, score count tables and metrics
//! follow-up (`secure_aggregation = true` in a pipeline study): how their answers are packed
//! into masked fixed-point vectors ([`crate::secure::SumShape::PipelineFit`],
//! [`crate::secure::SumShape::PipelineScores`], [`crate::secure::SumShape::PipelineFollowUp`]),
//! unpacked from the sum, and what the site computes for the masked metrics rounds.
//!
//! # ComBat and z-score rounds
//!
//! ComBat's cross-products (round 1: n, constant-in-batch flags, W'W, W'Y) and residual sums
//! (round 2: n, Σ(y − WB)² per feature), and the z-score moments, are sums over rows: each
//! masked round carries **one vector per site covering every outer fit of the batch**
//! ([`crate::secure::SumShape::PipelineComBat`], [`crate::secure::SumShape::PipelineMoments`],
//! built by [`combat_shape`]). A ComBat fit's parts come from the standalone study's packer of
//! its shape ([`crate::secure::SumShape::ComBatCrossProducts`] /
//! [`crate::secure::SumShape::ComBatResiduals`], `SumShape::pack_combat` into one
//! `crate::lasso::secure::CountsAndWide`, the same packing as the standalone study's); their
//! counts travel as counts (F = 0), their reals in the LASSO's wide three-limb format
//! (`crate::lasso::secure::wide_limbs`: 2^−56 per site, |x| ≤ 2^95) rather than a 24-bit one,
//! whose range (|x| ≤ 2^39 / n_sites) the cohort's energy features exceed (residual sums ~2e19)
//! and whose resolution would cost small-valued features (residual sums ~1e−3) four digits. The
//! z-score moments travel as raw power sums (n, Σx, Σx² per feature: Chan's merge of (mean, M2)
//! is not a sum), the aggregator recovers mean = Σx/n and M2 = Σx² − Σx·mean.
//!
//! **Precision** (cohort example, `federation/tests/secure_pipeline_combat.rs`): the decoded
//! ComBat sums equal the exact sums of the sites' f64 values to 2^−56 per site, so the fitted
//! regression, pooled variance and EB estimates differ from the plain run's by f64's order of
//! additions only (≤ 1e−14 relative), harmonised values by ≤ 1e−14 of the feature's SD. The
//! z-score's variance carries f64's cancellation in Σx² − (Σx)²/n, ≈ 4·2^−53·(1 + mean²/var)
//! relative (3.4e−13 at mean/SD 39; measured SDs within 1.6e−13), where the plain (mean, M2)
//! merge is exact to ~1e−16. The LASSO selects the same features.
//!
//! **Not sums, plain**: round 0 (the batch labels present per fit: names, no counts) and
//! round 3 (each batch's empirical-Bayes location and scale, computed at the one site holding
//! the batch — `models::combat::site_estimate` refuses a batch whose rows are not all there —
//! and appended to the model as they are, not summed). As in the standalone study, ComBat's
//! model is per batch: the summed W'W/W'Y's batch block and round 3 still give each batch's
//! (by default each site's) row count, mean and variance per feature. SECURITY.md states what
//! the masking hides beyond that.
//!
//! **Dropout**: a site missing a masked ComBat or z-score round is left out and the batch's
//! ComBat restarts from round 1 over the survivors' designs (`PipelineDriver::drop_sites`).
//!
//! # Meta-model + clinical rounds
//!
//! The MLP's loss and gradient sums and the clinical IRLS sums (Σv, log-likelihood, score,
//! information matrix) are sums over rows, so the sum over sites is all the aggregator's L-BFGS
//! and Newton steps use: under the pseudo-site [`crate::secure::MASKED_SUM_SITE`] the
//! unchanged drivers see one "site" holding every row. Reals travel with
//! [`crate::secure::PIPELINE_FRAC_BITS`] = 32 fractional bits: each decoded sum is within
//! `n_sites · 2^−33` (≈ 1.2e−10 per site) of the exact f64 sum, row counts are exact. A clinical
//! fit the site's parameters-per-row guard refuses cannot be masked: the site fails the round
//! with the refusal's message (naming the rule and the fix), as the plain path fails the study.
//!
//! # Score count tables: sum first, then merge
//!
//! In the plain path each site merges its own bins until every released cell holds
//! `min_count` patients; the cells' extents then differ from site to site and depend on the
//! site's data. Such tables cannot be added in a fixed layout, and merging at each site before
//! summing would lose resolution for nothing. Under secure aggregation each site therefore
//! packs **every bin unmerged** (positives, negatives, Σp, Σ(p − y)² per bin of the study's
//! grid; an empty bin is zeros), masked; the aggregator opens only the sum and merges **the
//! pooled table** with the same optimal rule (`SiteScoreTable::from_bins`, `CellTotal`) to
//! `analysis.metrics.secure_min_count` (default 5) patients per cell. A site whose own
//! `min_count` is larger refuses the round. The unmerged per-bin values never leave a site in
//! the clear: the single gate's per-site count check does not apply to them (they are not
//! released), the sum over at least 3 sites is.
//!
//! **What the aggregator learns** from a masked score round: the pooled per-bin counts and
//! sums over all sites (including pooled bins of fewer than `secure_min_count` patients, which
//! it holds in memory only to merge them: the study output, the round log's records of later
//! rounds and the report carry only the merged pooled table), the number of unscored patients
//! in all, and how many sites withheld each model's scores (not which). It no longer learns
//! any site's own table. The metrics are then those of one pooled table: finer than the plain
//! path's (cells are merged once, over all patients, instead of at every site), so the AUC is
//! closer to the per-patient AUC; with every `min_count` = 1 both paths give the same table.
//!
//! # Metrics follow-up round: per bin, summed, merged on the sum
//!
//! The follow-up ([`FollowUpShape`], `SumShape::PipelineFollowUp`) sends every site one task:
//! the pooled clinical cells' DeLong placement values and the pooled ML cells' "predicted high"
//! flags, each spread over the bins the cell covers, and a shared time grid
//! (`super::metrics::SECURE_TIME_BINS` points of `TIME_GRID_STEP`). Each site packs
//! ([`site_masked_metrics`], `super::metrics::follow_up_by_bin`), unmerged: per bin of the score
//! grid Σ V₁₀ᴮ over its positives and Σ V₀₁ᴮ over its negatives (32 fractional bits), and per
//! grouping, group and grid point the event and censoring counts plus the patients beyond the
//! horizon (integers), and three "withheld" flags. The aggregator opens the sum and, while
//! decoding, merges the cross sums to the pooled ML cells and the survival counts to
//! `secure_min_count` (the same merge a site applies to its own grid table), so nothing finer
//! than the merged pooled tables outlives the decoding. It learns the pooled per-bin sums and
//! per-point counts, the number of patients beyond the horizon and how many sites withheld each
//! part, never one site's. The site-stratified Cox model, which needs each site's own table, is
//! not computed under secure aggregation (a note in the report). Measured precision
//! (`tests/secure_pipeline_metrics.rs`): counts exact, the opened cross sums within
//! 1.5e−10 of the plain sums, the paired test's SE within 5e−12 of the per-patient DeLong's.

use super::messages::{PipelineTask, StageResult, StageTask};
use super::metrics::{
    FollowUpResult, GroupRelease, MaskedFollowUpFacts, MetricsDriver, MetricsInputs, MetricsResult,
    MetricsTask, ReleasedTimes, ScoreRelease, SurvivalRelease,
};
use super::site::{PipelineError, SitePipelineState, site_inputs_cached};
use super::spec::PipelineSpec;
use crate::policy::SitePolicy;
use crate::secure::{PIPELINE_FRAC_BITS, REAL_FRAC_BITS, SecureError, SumShape};
use crate::table::SiteTable;
use crate::task::ResultBody;
use learners::mlp::LossGradSum;
use models::linalg::packed_len;
use models::logistic::{LogisticReply, LogisticSums};
use secagg::{FixedPoint, Layout};
use serde::{Deserialize, Serialize};
use stats::metrics::{CrossPlacementSums, MergeRule, ScoreGrid, ScoreTableCell, SiteScoreTable};
use stats::survival::{SiteSurvivalTable, TimeResolution};

fn real32() -> FixedPoint {
    FixedPoint::new(PIPELINE_FRAC_BITS).expect("a valid number of fractional bits")
}

fn real24() -> FixedPoint {
    FixedPoint::new(REAL_FRAC_BITS).expect("a valid number of fractional bits")
}

/// Whether a pipeline stage's request has a masked form (and, in a secure study, is sent only
/// masked).
pub fn has_masked_form(stage: &StageTask) -> bool {
    matches!(
        stage,
        StageTask::Fit { .. }
            | StageTask::Metrics(MetricsTask::Scores { .. } | MetricsTask::FollowUp(_))
            // The LASSO stage's sums (`crate::lasso::secure`).
            | StageTask::Lasso { .. }
            // ComBat's cross-products and residuals and the z-score moments (`combat_shape`);
            // ComBat's levels (names) and per-batch estimates (a batch lives at one site) are
            // not sums and stay plain.
            | StageTask::ComBat { round: 1 | 2, .. }
            | StageTask::Moments { .. }
    )
}

/// The shape of a meta-model + clinical round for these requests.
pub fn fit_shape(stage: &StageTask, spec: &PipelineSpec) -> Option<SumShape> {
    let StageTask::Fit { mlp, clinical } = stage else {
        return None;
    };
    let mlp_weights = mlp.first().map_or(0, |r| r.weights.len());
    let clinical_params = clinical.first().map_or(0, |(_, b)| b.len());
    Some(SumShape::PipelineFit {
        mlp_fits: mlp.iter().map(|r| r.fit).collect(),
        mlp_weights,
        clinical_fits: clinical
            .iter()
            .map(|(f, _)| (*f, super::site::fit_index(spec, *f)))
            .collect(),
        clinical_params,
    })
}

/// The shape of the masked score round.
pub fn scores_shape(spec: &PipelineSpec) -> SumShape {
    SumShape::PipelineScores {
        bins: spec.metrics.bins,
        clinical: spec.clinical.is_some(),
        min_count: spec.metrics.pooled_min_count(),
    }
}

/// The shape of the masked follow-up round (`SumShape::PipelineFollowUp`). Every field is a
/// pooled quantity or a constant of the study: the grid, the pooled stacked-model cells (known
/// from the opened score round), the shared time grid and the pooled merge's minimum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpShape {
    /// Bins of the score grid.
    pub bins: u32,
    /// The pooled stacked-model cells (first bin, last bin), ascending, to which the per-bin
    /// cross-placement sums are merged on the sum; empty = the round has no paired part.
    pub ml_cells: Vec<(u32, u32)>,
    /// The survival part, if any.
    pub survival: Option<FollowUpSurvivalShape>,
    /// The pooled survival tables are merged until every released count reaches this
    /// (`analysis.metrics.secure_min_count`); a site whose `min_count` is larger refuses.
    pub min_count: u64,
}

/// The survival part of [`FollowUpShape`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpSurvivalShape {
    /// Step of the shared time grid.
    pub time_step: f64,
    /// Points of the grid (the last is the horizon; `super::metrics::SECURE_TIME_BINS`).
    pub time_bins: u32,
    /// Whether the survival by predicted group is asked (there is an ML cut-off).
    pub by_predicted: bool,
}

impl FollowUpShape {
    fn groupings(&self) -> usize {
        self.survival
            .as_ref()
            .map_or(0, |s| 1 + usize::from(s.by_predicted))
    }
    fn paired(&self) -> bool {
        !self.ml_cells.is_empty()
    }
}

/// The shape of the masked metrics round the driver asks next: the score round, or the
/// follow-up round whose shape the metrics driver built from the opened score round.
pub fn metrics_shape(spec: &PipelineSpec, metrics: Option<&MetricsDriver>) -> SumShape {
    match metrics.and_then(MetricsDriver::follow_up_shape) {
        Some(s) => SumShape::PipelineFollowUp(s.clone()),
        None => scores_shape(spec),
    }
}

fn models(clinical: bool) -> usize {
    1 + usize::from(clinical)
}

/// Segment layout of a pipeline shape (see [`SumShape`]).
pub(crate) fn layout(shape: &SumShape) -> Layout {
    match shape {
        SumShape::PipelineFit {
            mlp_fits,
            mlp_weights,
            clinical_fits,
            clinical_params,
        } => Layout::new()
            .with(
                "row counts",
                mlp_fits.len() + clinical_fits.len(),
                FixedPoint::integer(),
            )
            .with(
                "MLP loss and gradient sums",
                mlp_fits.len() * (1 + mlp_weights),
                real32(),
            )
            .with(
                "clinical IRLS sums",
                clinical_fits.len() * (2 + clinical_params + packed_len(*clinical_params)),
                real32(),
            ),
        SumShape::PipelineScores { bins, clinical, .. } => {
            let per = 2 * models(*clinical) * *bins as usize;
            Layout::new()
                .with(
                    "unscored and withheld flags",
                    1 + models(*clinical),
                    FixedPoint::integer(),
                )
                .with("bin counts", per, FixedPoint::integer())
                .with("bin sums", per, real24())
        }
        SumShape::PipelineFollowUp(f) => {
            let per_group = f
                .survival
                .as_ref()
                .map_or(0, |s| 2 * s.time_bins as usize + 1);
            Layout::new()
                .with("withheld flags", 3, FixedPoint::integer())
                .with(
                    "event, censoring and beyond-horizon counts",
                    f.groupings() * 2 * per_group,
                    FixedPoint::integer(),
                )
                .with(
                    "cross-placement sums per bin",
                    if f.paired() { 2 * f.bins as usize } else { 0 },
                    real32(),
                )
        }
        _ => unreachable!("only pipeline shapes are laid out here"),
    }
}

fn shape_err(m: String) -> SecureError {
    SecureError::Shape(m)
}

/// Site side: the parts of a pipeline answer in layout order.
pub(crate) fn encode(shape: &SumShape, result: &ResultBody) -> Result<Vec<Vec<f64>>, SecureError> {
    match (shape, result) {
        (
            SumShape::PipelineFit {
                mlp_fits,
                mlp_weights,
                clinical_fits,
                clinical_params,
            },
            ResultBody::Pipeline(StageResult::Fit { mlp, clinical }),
        ) => {
            if mlp.len() != mlp_fits.len() || clinical.len() != clinical_fits.len() {
                return Err(shape_err(format!(
                    "{} MLP and {} clinical fits for {} and {}",
                    mlp.len(),
                    clinical.len(),
                    mlp_fits.len(),
                    clinical_fits.len()
                )));
            }
            let mut counts = Vec::with_capacity(mlp.len() + clinical.len());
            let mut mlp_sums = Vec::with_capacity(mlp.len() * (1 + mlp_weights));
            for ((fit, s), want) in mlp.iter().zip(mlp_fits) {
                if fit != want || s.grad_sum.len() != *mlp_weights {
                    return Err(shape_err(format!(
                        "MLP sums of fit (repeat {}, fold {}) with {} gradient values where the round asks for fit (repeat {}, fold {}) with {mlp_weights}",
                        fit.repeat,
                        fit.fold,
                        s.grad_sum.len(),
                        want.repeat,
                        want.fold
                    )));
                }
                counts.push(s.n as f64);
                mlp_sums.push(s.loss_sum);
                mlp_sums.extend_from_slice(&s.grad_sum);
            }
            let p = *clinical_params;
            let mut clin_sums = Vec::with_capacity(clinical.len() * (2 + p + packed_len(p)));
            for ((fit, reply), (want, id)) in clinical.iter().zip(clinical_fits) {
                let s = match reply {
                    LogisticReply::Sums(s) => s,
                    LogisticReply::Refused(x) => {
                        return Err(SecureError::Refused(format!(
                            "this site refused the clinical model of fit (repeat {}, fold {}): {} parameters for {} rows exceeds its max_params_per_row = {}; use fewer clinical columns or ask the site to relax its policy",
                            fit.repeat, fit.fold, x.params, x.rows, x.max_params_per_row
                        )));
                    }
                };
                if fit != want
                    || s.fit_id != *id
                    || s.score.len() != p
                    || s.info.len() != packed_len(p)
                {
                    return Err(shape_err(format!(
                        "clinical sums of fit (repeat {}, fold {}) do not match the round's fit (repeat {}, fold {}) with {p} parameters",
                        fit.repeat, fit.fold, want.repeat, want.fold
                    )));
                }
                counts.push(s.rows as f64);
                clin_sums.push(s.sum_w);
                clin_sums.push(s.loglik);
                clin_sums.extend_from_slice(&s.score);
                clin_sums.extend_from_slice(&s.info);
            }
            Ok(vec![counts, mlp_sums, clin_sums])
        }
        (
            SumShape::PipelineScores {
                bins,
                clinical,
                min_count: _,
            },
            ResultBody::Pipeline(StageResult::Metrics(MetricsResult::Scores {
                ml,
                clinical: clin,
                unscored,
            })),
        ) => {
            if clin.is_some() != *clinical {
                return Err(shape_err(
                    "the answer and the round disagree on the clinical comparator".into(),
                ));
            }
            let n = *bins as usize;
            let mut flags = vec![f64::from(*unscored)];
            let mut counts = Vec::with_capacity(2 * n * models(*clinical));
            let mut sums = Vec::with_capacity(2 * n * models(*clinical));
            for release in std::iter::once(ml).chain(clin) {
                let (mut pos, mut neg) = (vec![0.0; n], vec![0.0; n]);
                let (mut sp, mut se) = (vec![0.0; n], vec![0.0; n]);
                match release {
                    ScoreRelease::Table(t) => {
                        if t.grid.n_bins() != *bins {
                            return Err(shape_err(format!(
                                "a {}-bin table for a {bins}-bin round",
                                t.grid.n_bins()
                            )));
                        }
                        for c in &t.cells {
                            if c.lo_bin != c.hi_bin {
                                return Err(shape_err(
                                    "a merged cell in a masked score round (bins travel unmerged)"
                                        .into(),
                                ));
                            }
                            let k = c.lo_bin as usize;
                            pos[k] += c.n_pos as f64;
                            neg[k] += c.n_neg as f64;
                            sp[k] += c.sum_p;
                            se[k] += c.sum_sq_err;
                        }
                        flags.push(0.0);
                    }
                    ScoreRelease::Withheld { .. } => flags.push(1.0),
                    ScoreRelease::Rows { .. } => {
                        return Err(shape_err("per-patient rows in a masked score round".into()));
                    }
                }
                counts.extend(pos);
                counts.extend(neg);
                sums.extend(sp);
                sums.extend(se);
            }
            Ok(vec![flags, counts, sums])
        }
        (
            SumShape::PipelineFollowUp(f),
            ResultBody::Pipeline(StageResult::Metrics(MetricsResult::FollowUp(r))),
        ) => encode_follow_up(f, r),
        (_, other) => Err(shape_err(format!("a {} answer", other.kind()))),
    }
}

/// Site side of the masked follow-up round: the per-bin answer of
/// `super::metrics::follow_up_by_bin` in layout order.
fn encode_follow_up(f: &FollowUpShape, r: &FollowUpResult) -> Result<Vec<Vec<f64>>, SecureError> {
    if r.masked_sum.is_some() {
        return Err(shape_err(
            "a decoded sum in place of a site's answer".into(),
        ));
    }
    let mut flags = vec![0.0; 3];
    let mut counts = Vec::new();
    if let Some(ss) = &f.survival {
        let s = r
            .survival
            .as_ref()
            .ok_or_else(|| shape_err("no survival part for a round that asks one".into()))?;
        let groupings: Vec<(usize, Option<&GroupRelease>)> = if ss.by_predicted {
            vec![(1, s.by_predicted.as_ref()), (2, Some(&s.by_response))]
        } else {
            vec![(2, Some(&s.by_response))]
        };
        let k = ss.time_bins as usize;
        let points = super::metrics::masked_time_grid(ss.time_step, ss.time_bins);
        for (flag, release) in groupings {
            let mut part = vec![0.0; 2 * (2 * k + 1)];
            match release {
                Some(GroupRelease::Table { table, .. }) if table.groups.len() == 2 => {
                    for (g, cells) in table.groups.iter().enumerate() {
                        let base = g * (2 * k + 1);
                        for c in cells {
                            // The cell's time must be one of the shared grid's points.
                            let j = points.partition_point(|&x| x < c.time);
                            if points.get(j) != Some(&c.time) {
                                return Err(shape_err(format!(
                                    "a survival time {} off the shared grid of step {}",
                                    c.time, ss.time_step
                                )));
                            }
                            if j == k {
                                part[base + 2 * k] += (c.events + c.censored) as f64;
                            } else {
                                part[base + j] += c.events as f64;
                                part[base + k + j] += c.censored as f64;
                            }
                        }
                    }
                }
                Some(GroupRelease::Withheld { .. }) => flags[flag] = 1.0,
                Some(GroupRelease::Table { .. }) => {
                    return Err(shape_err("a survival table without two groups".into()));
                }
                None => {
                    return Err(shape_err(
                        "no survival by predicted group for a round that asks it".into(),
                    ));
                }
            }
            counts.extend(part);
        }
    }
    let mut sums = Vec::new();
    if f.paired() {
        let n = f.bins as usize;
        let (mut s10, mut s01) = (vec![0.0; n], vec![0.0; n]);
        match &r.cross_placements {
            Some(c) if c.len() == n => {
                for (k, x) in c.iter().enumerate() {
                    s10[k] = x.sum_v10_pos;
                    s01[k] = x.sum_v01_neg;
                }
            }
            Some(c) => {
                return Err(shape_err(format!(
                    "{} cross-placement sums for a {n}-bin round",
                    c.len()
                )));
            }
            None => flags[0] = 1.0,
        }
        sums.extend(s10);
        sums.extend(s01);
    }
    Ok(vec![flags, counts, sums])
}

/// Aggregator side of the masked follow-up round: the pooled answer from the opened sum. The
/// cross-placement sums are merged to the pooled stacked-model cells and each survival table
/// to `min_count` right here, so nothing finer than the merged pooled tables outlives the
/// decoding (as for the score round).
fn decode_follow_up(f: &FollowUpShape, parts: &[Vec<f64>]) -> Result<ResultBody, SecureError> {
    let count = |x: f64| x.max(0.0).round() as u64;
    let [flags, counts, sums] = parts else {
        return Err(shape_err("three segments expected".into()));
    };
    let cross_placements = if f.paired() && count(flags[0]) == 0 {
        let n = f.bins as usize;
        let (s10, s01) = (&sums[..n], &sums[n..]);
        Some(
            f.ml_cells
                .iter()
                .map(|&(lo, hi)| {
                    let r = lo as usize..=(hi as usize).min(n - 1);
                    CrossPlacementSums {
                        sum_v10_pos: s10[r.clone()].iter().sum(),
                        sum_v01_neg: s01[r].iter().sum(),
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    let mut beyond_horizon = 0;
    let mut horizon = f64::NAN;
    let survival = match &f.survival {
        None => None,
        Some(ss) => {
            let k = ss.time_bins as usize;
            if k == 0 {
                return Err(shape_err("a shared time grid without points".into()));
            }
            let points = super::metrics::masked_time_grid(ss.time_step, ss.time_bins);
            horizon = points[k - 1];
            let grid = TimeResolution::Grid(points[..k].to_vec());
            let mut releases = Vec::new();
            for (i, flag) in (if ss.by_predicted { vec![1, 2] } else { vec![2] })
                .into_iter()
                .enumerate()
            {
                let part = &counts[i * 2 * (2 * k + 1)..(i + 1) * 2 * (2 * k + 1)];
                // The pooled patients at their grid points (a time beyond the horizon censored
                // at it), merged exactly as a site merges its own grid table
                // (`SiteSurvivalTable::build`), to the round's `min_count`.
                let (mut times, mut events, mut groups) = (Vec::new(), Vec::new(), Vec::new());
                let mut beyond = 0;
                for g in 0..2 {
                    let base = g * (2 * k + 1);
                    for j in 0..k {
                        let censored = count(part[base + k + j])
                            + if j == k - 1 {
                                count(part[base + 2 * k])
                            } else {
                                0
                            };
                        for (n, e) in [(count(part[base + j]), true), (censored, false)] {
                            for _ in 0..n {
                                times.push(points[j]);
                                events.push(e);
                                groups.push(g);
                            }
                        }
                    }
                    beyond += count(part[base + 2 * k]);
                }
                if flag == 2 {
                    beyond_horizon = beyond;
                }
                let withheld = count(flags[flag]);
                releases.push(if times.is_empty() {
                    GroupRelease::Withheld {
                        reason: if withheld > 0 {
                            format!("all {withheld} sites withheld their survival counts")
                        } else {
                            "no patient has survival data".into()
                        },
                    }
                } else {
                    match SiteSurvivalTable::build(
                        &times,
                        &events,
                        &groups,
                        2,
                        &grid,
                        f.min_count,
                        MergeRule::CellTotal,
                    ) {
                        Ok(table) => GroupRelease::Table {
                            table,
                            times: ReleasedTimes::Grid { step: ss.time_step },
                        },
                        Err(_) => GroupRelease::Withheld {
                            reason: format!(
                                "the pooled survival table cannot form counts of at least {}",
                                f.min_count
                            ),
                        },
                    }
                });
            }
            let by_response = releases.pop().expect("the grouping by response");
            Some(SurvivalRelease {
                by_predicted: releases.pop(),
                by_response,
            })
        }
    };
    Ok(ResultBody::Pipeline(StageResult::Metrics(
        MetricsResult::FollowUp(FollowUpResult {
            cross_placements,
            survival,
            masked_sum: Some(MaskedFollowUpFacts {
                paired_withheld: if f.paired() { count(flags[0]) } else { 0 },
                survival_withheld: [count(flags[1]), count(flags[2])],
                beyond_horizon,
                horizon,
                min_count: f.min_count,
            }),
        }),
    )))
}

/// Aggregator side: the pooled answer from the decoded sum (parts in layout order).
pub(crate) fn decode(shape: &SumShape, parts: &[Vec<f64>]) -> Result<ResultBody, SecureError> {
    let count = |x: f64| x.max(0.0).round() as u64;
    match shape {
        SumShape::PipelineFit {
            mlp_fits,
            mlp_weights,
            clinical_fits,
            clinical_params,
        } => {
            let [counts, mlp_sums, clin_sums] = parts else {
                return Err(shape_err("three segments expected".into()));
            };
            let mut mlp = Vec::with_capacity(mlp_fits.len());
            for (i, fit) in mlp_fits.iter().enumerate() {
                let s = &mlp_sums[i * (1 + mlp_weights)..(i + 1) * (1 + mlp_weights)];
                mlp.push((
                    *fit,
                    LossGradSum {
                        loss_sum: s[0],
                        grad_sum: s[1..].to_vec(),
                        n: count(counts[i]),
                    },
                ));
            }
            let p = *clinical_params;
            let per = 2 + p + packed_len(p);
            let mut clinical = Vec::with_capacity(clinical_fits.len());
            for (i, (fit, id)) in clinical_fits.iter().enumerate() {
                let s = &clin_sums[i * per..(i + 1) * per];
                clinical.push((
                    *fit,
                    LogisticReply::Sums(LogisticSums {
                        fit_id: *id,
                        rows: count(counts[mlp_fits.len() + i]) as usize,
                        sum_w: s[0],
                        loglik: s[1],
                        score: s[2..2 + p].to_vec(),
                        info: s[2 + p..].to_vec(),
                    }),
                ));
            }
            Ok(ResultBody::Pipeline(StageResult::Fit { mlp, clinical }))
        }
        SumShape::PipelineScores {
            bins,
            clinical,
            min_count,
        } => {
            let [flags, counts, sums] = parts else {
                return Err(shape_err("three segments expected".into()));
            };
            let grid = ScoreGrid::new(*bins).map_err(|e| shape_err(e.to_string()))?;
            let n = *bins as usize;
            let mut releases = Vec::with_capacity(models(*clinical));
            for m in 0..models(*clinical) {
                let (pos, neg) = (&counts[2 * m * n..], &counts[(2 * m + 1) * n..]);
                let (sp, se) = (&sums[2 * m * n..], &sums[(2 * m + 1) * n..]);
                let cells: Vec<ScoreTableCell> = (0..n)
                    .filter(|&k| count(pos[k]) + count(neg[k]) > 0)
                    .map(|k| ScoreTableCell {
                        lo_bin: k as u32,
                        hi_bin: k as u32,
                        n_pos: count(pos[k]),
                        n_neg: count(neg[k]),
                        sum_p: sp[k],
                        sum_sq_err: se[k].max(0.0),
                    })
                    .collect();
                let withheld = count(flags[1 + m]);
                releases.push(if cells.is_empty() {
                    ScoreRelease::Withheld {
                        reason: if withheld > 0 {
                            format!("all {withheld} sites withheld these scores")
                        } else {
                            "no patient has a score".into()
                        },
                    }
                } else {
                    match SiteScoreTable::from_bins(grid, cells, *min_count, MergeRule::CellTotal) {
                        Ok(t) => ScoreRelease::Table(t),
                        Err(_) => ScoreRelease::Withheld {
                            reason: format!(
                                "the pooled count table cannot form cells of at least {min_count} patients"
                            ),
                        },
                    }
                });
            }
            let clinical_release = if *clinical { releases.pop() } else { None };
            Ok(ResultBody::Pipeline(StageResult::Metrics(
                MetricsResult::Scores {
                    ml: releases.pop().expect("the stacked model's release"),
                    clinical: clinical_release,
                    unscored: count(flags[0]) as u32,
                },
            )))
        }
        SumShape::PipelineFollowUp(f) => decode_follow_up(f, parts),
        _ => unreachable!("only pipeline shapes are decoded here"),
    }
}

/// Site half of the masked score round: the site's per-bin tables, **unmerged** (min_count 1),
/// to be masked and summed (never released as they are). Refuses when the round would merge
/// the pooled tables to fewer patients per cell than this site's `min_count`, and under the
/// same conditions as every pipeline round (fewer patients than `min_count`).
pub fn site_binned_scores(
    table: &SiteTable,
    spec: &PipelineSpec,
    task: &PipelineTask,
    policy: &SitePolicy,
    state: &SitePipelineState,
    shape: &SumShape,
) -> Result<StageResult, PipelineError> {
    let protocol = |m: String| PipelineError::Protocol(m);
    let StageTask::Metrics(MetricsTask::Scores { bins }) = &task.stage else {
        return Err(protocol(format!(
            "a masked score round carries a {} request",
            task.stage.name()
        )));
    };
    let SumShape::PipelineScores {
        bins: shape_bins,
        min_count,
        ..
    } = shape
    else {
        return Err(protocol(
            "a score request with another round's shape".into(),
        ));
    };
    if shape_bins != bins {
        return Err(protocol(format!(
            "the round's shape has {shape_bins} bins and its request {bins}"
        )));
    }
    if *min_count < policy.min_count {
        return Err(PipelineError::Disclosure(format!(
            "the study merges the pooled score tables to cells of at least {min_count} patients, fewer than this site's min_count {}; raise analysis.metrics.secure_min_count to at least {} or ask the site to lower its min_count",
            policy.min_count, policy.min_count
        )));
    }
    let inputs = site_inputs_cached(table, spec, &task.site)?;
    let n = inputs.labels.len();
    if n > 0 && (n as u64) < policy.min_count {
        return Err(PipelineError::Disclosure(format!(
            "this site has {n} patients, fewer than its min_count; it cannot take part"
        )));
    }
    let grid = ScoreGrid::new(*bins).map_err(|e| protocol(e.to_string()))?;
    let (labels, ml, clinical, unscored) =
        super::metrics::analysis_scores(&MetricsInputs::from_state(&inputs, state));
    let binned = |probs: &[f64], name: &str| {
        if !super::metrics::valid_probabilities(probs) {
            return ScoreRelease::Withheld {
                reason: format!("the {name}'s probabilities are not all in [0, 1] at a site"),
            };
        }
        match SiteScoreTable::build(grid, probs, &labels, 1, MergeRule::CellTotal) {
            Ok(t) => ScoreRelease::Table(t),
            Err(_) => ScoreRelease::Withheld {
                reason: format!("the {name}'s count table cannot be built at a site"),
            },
        }
    };
    Ok(StageResult::Metrics(MetricsResult::Scores {
        ml: binned(&ml, "stacked model"),
        clinical: clinical.as_deref().map(|c| binned(c, "clinical model")),
        unscored,
    }))
}

/// Site half of a masked metrics round: [`site_binned_scores`] for the score round, the
/// per-bin follow-up answer (`super::metrics::follow_up_by_bin`) for the follow-up round. Both
/// are packed unmerged and masked, never released as they are; both refuse when the study
/// merges the pooled tables below this site's `min_count`, or the site has fewer patients than
/// its `min_count`.
pub fn site_masked_metrics(
    table: &SiteTable,
    spec: &PipelineSpec,
    task: &PipelineTask,
    policy: &SitePolicy,
    state: &SitePipelineState,
    shape: &SumShape,
) -> Result<StageResult, PipelineError> {
    let protocol = |m: String| PipelineError::Protocol(m);
    let SumShape::PipelineFollowUp(f) = shape else {
        return site_binned_scores(table, spec, task, policy, state, shape);
    };
    let StageTask::Metrics(MetricsTask::FollowUp(req)) = &task.stage else {
        return Err(protocol(format!(
            "a masked follow-up round carries a {} request",
            task.stage.name()
        )));
    };
    if f.min_count < policy.min_count && f.survival.is_some() {
        return Err(PipelineError::Disclosure(format!(
            "the study merges the pooled survival tables to counts of at least {}, fewer than this site's min_count {}; raise analysis.metrics.secure_min_count to at least {} or ask the site to lower its min_count",
            f.min_count, policy.min_count, policy.min_count
        )));
    }
    let inputs = site_inputs_cached(table, spec, &task.site)?;
    let n = inputs.labels.len();
    if n > 0 && (n as u64) < policy.min_count {
        return Err(PipelineError::Disclosure(format!(
            "this site has {n} patients, fewer than its min_count; it cannot take part"
        )));
    }
    super::metrics::follow_up_by_bin(&MetricsInputs::from_state(&inputs, state), req, f)
        .map(|r| StageResult::Metrics(MetricsResult::FollowUp(r)))
}

// --- ComBat and z-score rounds ---

/// Whether a pipeline request asks for statistics the aggregator sums over sites (in whatever
/// form they travel): ComBat's cross-products and residuals, the z-score moments, the LASSO,
/// meta-model and metrics rounds. The others are names (columns, ComBat levels), per-batch
/// values (ComBat estimates: a batch lives at one site), or requests whose answers are not
/// summed statistics (base-learner training, the model relay, scoring acknowledgements).
pub fn is_summed(stage: &StageTask) -> bool {
    matches!(
        stage,
        StageTask::ComBat { round: 1 | 2, .. }
            | StageTask::Moments { .. }
            | StageTask::Lasso { .. }
            | StageTask::Fit { .. }
            | StageTask::Metrics(_)
    )
}

/// A summed request that travels in the clear even in a secure study (no masked form yet): a
/// site whose policy has `require_secure_aggregation` refuses it (`crate::site`).
pub fn is_unmasked_sum(stage: &StageTask) -> bool {
    is_summed(stage) && !has_masked_form(stage)
}

/// The shape of a masked ComBat round (1: cross-products, 2: residuals) or z-score round over
/// `features` features, `None` for any other request.
pub fn combat_shape(stage: &StageTask, features: usize) -> Option<SumShape> {
    match stage {
        StageTask::ComBat { round: 1, fits } => Some(SumShape::PipelineComBat {
            fits: fits
                .iter()
                .map(|f| {
                    let columns = f.design.as_ref().map_or(0, |d| d.n_columns());
                    (f.fit, SumShape::ComBatCrossProducts { columns, features })
                })
                .collect(),
        }),
        StageTask::ComBat { round: 2, fits } => Some(SumShape::PipelineComBat {
            fits: fits
                .iter()
                .map(|f| (f.fit, SumShape::ComBatResiduals { features }))
                .collect(),
        }),
        StageTask::Moments { models } => Some(SumShape::PipelineMoments {
            features,
            fits: models.iter().map(|(f, _)| *f).collect(),
        }),
        _ => None,
    }
}

/// (count values, wide values) of a ComBat or z-score shape.
fn combat_lens(shape: &SumShape) -> (usize, usize) {
    match shape {
        SumShape::PipelineComBat { fits } => {
            let (mut counts, mut wide) = (0, 0);
            for (_, inner) in fits {
                let (c, w) = inner.combat_lens().unwrap_or_default();
                counts += c;
                wide += w;
            }
            (counts, wide)
        }
        SumShape::PipelineMoments { features, fits } => (fits.len(), 2 * features * fits.len()),
        _ => (0, 0),
    }
}

/// Segment layout of [`SumShape::PipelineComBat`] and [`SumShape::PipelineMoments`]: the counts
/// (F = 0), then the wide values' high, middle and low limbs — the standalone ComBat rounds'
/// packing (`crate::lasso::secure::counts_and_wide_layout`), over every fit of the batch.
pub(crate) fn combat_layout(shape: &SumShape) -> Layout {
    let (counts, wide) = combat_lens(shape);
    crate::lasso::secure::counts_and_wide_layout(counts, wide)
}

fn fit_name(fit: &learners::FitId) -> String {
    format!("fit (repeat {}, fold {})", fit.repeat, fit.fold)
}

/// Site side: the parts of a masked ComBat or z-score answer in layout order. Each ComBat fit
/// is pushed by the standalone packer of its shape ([`SumShape::pack_combat`], which checks the
/// sizes): its counts to the counts, its reals to the wide values.
pub(crate) fn combat_encode(
    shape: &SumShape,
    result: &ResultBody,
) -> Result<Vec<Vec<f64>>, SecureError> {
    let mut packer = crate::lasso::secure::CountsAndWide::default();
    match (shape, result) {
        (SumShape::PipelineComBat { fits }, ResultBody::Pipeline(r)) => {
            let answers: Vec<(learners::FitId, ResultBody)> = match r {
                StageResult::ComBatCrossProducts(v) => v
                    .iter()
                    .map(|(f, c)| (*f, ResultBody::ComBatCrossProducts(c.clone())))
                    .collect(),
                StageResult::ComBatResiduals(v) => v
                    .iter()
                    .map(|(f, c)| (*f, ResultBody::ComBatResiduals(c.clone())))
                    .collect(),
                other => {
                    return Err(shape_err(format!(
                        "a {} answer to a masked ComBat round",
                        other.name()
                    )));
                }
            };
            if answers.len() != fits.len() {
                return Err(shape_err(format!(
                    "ComBat sums of {} fits for {}",
                    answers.len(),
                    fits.len()
                )));
            }
            for ((want, inner), (got, body)) in fits.iter().zip(&answers) {
                if want != got {
                    return Err(shape_err(format!(
                        "ComBat sums of {} where the round asks for {}",
                        fit_name(got),
                        fit_name(want)
                    )));
                }
                if !matches!(
                    inner,
                    SumShape::ComBatCrossProducts { .. } | SumShape::ComBatResiduals { .. }
                ) {
                    return Err(shape_err(
                        "a masked pipeline ComBat round whose fit shape is not a ComBat one".into(),
                    ));
                }
                let which = format!("the ComBat round of {}", fit_name(want));
                inner.pack_combat(body, &mut packer, &which)?;
            }
        }
        (
            SumShape::PipelineMoments { features, fits },
            ResultBody::Pipeline(StageResult::Moments(v)),
        ) => {
            if v.len() != fits.len() {
                return Err(shape_err(format!(
                    "z-score moments of {} fits for {}",
                    v.len(),
                    fits.len()
                )));
            }
            for (want, (got, moments)) in fits.iter().zip(v) {
                let n = moments.first().map_or(0, |m| m.n);
                if want != got || moments.len() != *features || moments.iter().any(|m| m.n != n) {
                    return Err(shape_err(format!(
                        "the z-score moments of {} do not match the round's {} with {features} features",
                        fit_name(got),
                        fit_name(want)
                    )));
                }
                packer.count(n as f64);
                let which = format!("the z-score moments of {}", fit_name(want));
                let nf = n as f64;
                for m in moments {
                    // Σx and Σx² from the site's (n, mean, M2): Chan's merge of (mean, M2) is
                    // not a sum, the power sums are (as in the LASSO's moments round).
                    packer.wide(nf * m.mean, &which)?;
                    packer.wide(m.m2 + nf * m.mean * m.mean, &which)?;
                }
            }
        }
        (_, other) => {
            return Err(shape_err(format!(
                "a {} answer to a masked ComBat or z-score round",
                other.kind()
            )));
        }
    }
    Ok(packer.into_parts())
}

/// Aggregator side: the pooled ComBat or z-score answer from the decoded sum (parts in layout
/// order), each ComBat fit read back by its standalone shape's unpacker
/// ([`SumShape::unpack_combat`]).
pub(crate) fn combat_decode(
    shape: &SumShape,
    parts: &[Vec<f64>],
) -> Result<ResultBody, SecureError> {
    let (n_counts, n_wide) = combat_lens(shape);
    let (counts, wide) = crate::lasso::secure::counts_and_wide_values(parts, n_counts, n_wide)?;
    match shape {
        SumShape::PipelineComBat { fits } => {
            let (mut c, mut w) = (&counts[..], &wide[..]);
            let mut xps = Vec::new();
            let mut rss = Vec::new();
            for (fit, inner) in fits {
                let (nc, nw) = inner.combat_lens().ok_or_else(|| {
                    shape_err(
                        "a masked pipeline ComBat round whose fit shape is not a ComBat one".into(),
                    )
                })?;
                let ((fit_c, rest_c), (fit_w, rest_w)) = (c.split_at(nc), w.split_at(nw));
                (c, w) = (rest_c, rest_w);
                match inner.unpack_combat(fit_c, fit_w)? {
                    ResultBody::ComBatCrossProducts(x) => xps.push((*fit, x)),
                    ResultBody::ComBatResiduals(r) => rss.push((*fit, r)),
                    other => {
                        return Err(shape_err(format!(
                            "a {} fit in a masked ComBat round",
                            other.kind()
                        )));
                    }
                }
            }
            let stage = match (xps.is_empty(), rss.is_empty()) {
                (_, true) => StageResult::ComBatCrossProducts(xps),
                (true, false) => StageResult::ComBatResiduals(rss),
                (false, false) => {
                    return Err(shape_err(
                        "a masked ComBat round mixing cross-products and residuals".into(),
                    ));
                }
            };
            Ok(ResultBody::Pipeline(stage))
        }
        SumShape::PipelineMoments { features, fits } => {
            let p = *features;
            let out = fits
                .iter()
                .enumerate()
                .map(|(i, fit)| {
                    let n = counts[i].max(0.0).round() as u64;
                    let nf = n as f64;
                    let moments = (0..p)
                        .map(|j| {
                            let (s1, s2) = (wide[2 * (i * p + j)], wide[2 * (i * p + j) + 1]);
                            let mean = if n == 0 { 0.0 } else { s1 / nf };
                            // M2 = Σx² − n·mean² (≥ 0; cancellation may leave a tiny negative).
                            let m2 = if n <= 1 {
                                0.0
                            } else {
                                (s2 - s1 * mean).max(0.0)
                            };
                            stats::Moments { n, mean, m2 }
                        })
                        .collect();
                    (*fit, moments)
                })
                .collect();
            Ok(ResultBody::Pipeline(StageResult::Moments(out)))
        }
        _ => Err(shape_err("not a pipeline ComBat or z-score shape".into())),
    }
}
