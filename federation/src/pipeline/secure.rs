//! Secure aggregation of the pipeline study's meta-model rounds and score count tables
//! (`secure_aggregation = true` in a pipeline study): how their answers are packed into masked
//! fixed-point vectors ([`crate::secure::SumShape::PipelineFit`],
//! [`crate::secure::SumShape::PipelineScores`]), unpacked from the sum, and what the site
//! computes for the masked score round.
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
//! Not covered: the metrics' follow-up round (the paired DeLong cross placements and the
//! survival tables) is built from each site's own released cells, which the masked path does
//! not have; under secure aggregation it is not run, and the report says so in its notes.

use super::messages::{PipelineTask, StageResult, StageTask};
use super::metrics::{MetricsInputs, MetricsResult, MetricsTask, ScoreRelease};
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
use stats::metrics::{MergeRule, ScoreGrid, ScoreTableCell, SiteScoreTable};

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
            | StageTask::Metrics(MetricsTask::Scores { .. })
            // The LASSO stage's sums (`crate::lasso::secure`).
            | StageTask::Lasso { .. }
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
        (_, other) => Err(shape_err(format!("a {} answer", other.kind()))),
    }
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
