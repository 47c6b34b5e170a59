//! Conversions of the pipeline's metrics-stage messages (`federation::pipeline::metrics` ↔
//! `PipelineMetricsTask` / `PipelineMetricsResult`), strict like the rest of the edge: a missing
//! field, an unspecified enum, rows whose two lists differ in length or a grid of 0 bins is a
//! typed error naming the field, never a default standing in for data. The values themselves
//! (cell ordering, min_count) are checked again by the aggregator (`SiteScoreTable::validate`,
//! `SiteSurvivalTable::validate`), which turns a bad table into a note, not a failed study.

use crate::convert::ConvertError;
use crate::pb;
use federation::pipeline::metrics::{
    FollowUpResult, FollowUpTask, GroupRelease, MetricsResult, MetricsTask, ReleasedTimes,
    ScoreRelease, SurvivalRelease, SurvivalRequest,
};
use federation::pipeline::secure::{FollowUpShape, FollowUpSurvivalShape};
use stats::metrics::{CrossPlacementSums, MergeRule, ScoreGrid, ScoreTableCell, SiteScoreTable};
use stats::survival::{SiteSurvivalTable, SurvivalCell};

type Result<T> = std::result::Result<T, ConvertError>;

fn grid_from(field: &'static str, bins: u32) -> Result<ScoreGrid> {
    ScoreGrid::new(bins).map_err(|e| ConvertError::Invalid {
        field,
        reason: e.to_string(),
    })
}

fn rule_to(r: MergeRule) -> i32 {
    let rule = match r {
        MergeRule::CellTotal => pb::MetricsMergeRule::CellTotal,
        MergeRule::EachCount => pb::MetricsMergeRule::EachCount,
    };
    rule as i32
}

fn rule_from(field: &'static str, r: i32) -> Result<MergeRule> {
    match pb::MetricsMergeRule::try_from(r) {
        Ok(pb::MetricsMergeRule::CellTotal) => Ok(MergeRule::CellTotal),
        Ok(pb::MetricsMergeRule::EachCount) => Ok(MergeRule::EachCount),
        Ok(pb::MetricsMergeRule::Unspecified) => Err(ConvertError::Missing(field)),
        Err(_) => Err(ConvertError::Range {
            field,
            value: r as u64,
        }),
    }
}

// ---- tasks -----------------------------------------------------------------------------------

/// Encodes a metrics task.
pub fn task_to(t: &MetricsTask) -> pb::PipelineMetricsTask {
    use pb::pipeline_metrics_task::Round;
    pb::PipelineMetricsTask {
        round: Some(match t {
            MetricsTask::Scores { bins } => Round::Scores(pb::MetricsScoresTask { bins: *bins }),
            MetricsTask::FollowUp(f) => Round::FollowUp(pb::MetricsFollowUpTask {
                bins: f.bins,
                cross_placements: f
                    .cross_placements
                    .as_ref()
                    .map(|v| pb::MetricsPlacementList {
                        cells: v
                            .iter()
                            .map(|&(v10, v01)| pb::MetricsPlacement { v10, v01 })
                            .collect(),
                    }),
                survival: f.survival.as_ref().map(|s| pb::MetricsSurvivalRequest {
                    predicted_high: s
                        .predicted_high
                        .as_ref()
                        .map(|h| pb::MetricsCutoffFlags { high: h.clone() }),
                    time_step: s.time_step,
                }),
            }),
        }),
    }
}

/// Decodes a metrics task.
pub fn task_from(t: pb::PipelineMetricsTask) -> Result<MetricsTask> {
    use pb::pipeline_metrics_task::Round;
    Ok(
        match t
            .round
            .ok_or(ConvertError::Missing("PipelineMetricsTask.round"))?
        {
            Round::Scores(s) => {
                grid_from("MetricsScoresTask.bins", s.bins)?;
                MetricsTask::Scores { bins: s.bins }
            }
            Round::FollowUp(f) => {
                grid_from("MetricsFollowUpTask.bins", f.bins)?;
                MetricsTask::FollowUp(FollowUpTask {
                    bins: f.bins,
                    cross_placements: f
                        .cross_placements
                        .map(|l| l.cells.into_iter().map(|c| (c.v10, c.v01)).collect()),
                    survival: f
                        .survival
                        .map(|s| {
                            if !(s.time_step.is_finite() && s.time_step > 0.0) {
                                return Err(ConvertError::Invalid {
                                    field: "MetricsSurvivalRequest.time_step",
                                    reason: format!("{} is not a positive number", s.time_step),
                                });
                            }
                            Ok(SurvivalRequest {
                                predicted_high: s.predicted_high.map(|h| h.high),
                                time_step: s.time_step,
                            })
                        })
                        .transpose()?,
                })
            }
        },
    )
}

// ---- results ---------------------------------------------------------------------------------

fn score_table_to(t: &SiteScoreTable) -> pb::MetricsScoreTable {
    pb::MetricsScoreTable {
        bins: t.grid.n_bins(),
        min_count: t.min_count,
        rule: rule_to(t.rule),
        cells: t
            .cells
            .iter()
            .map(|c| pb::MetricsScoreCell {
                lo_bin: c.lo_bin,
                hi_bin: c.hi_bin,
                n_pos: c.n_pos,
                n_neg: c.n_neg,
                sum_p: c.sum_p,
                sum_sq_err: c.sum_sq_err,
            })
            .collect(),
    }
}

fn score_table_from(t: pb::MetricsScoreTable) -> Result<SiteScoreTable> {
    Ok(SiteScoreTable {
        grid: grid_from("MetricsScoreTable.bins", t.bins)?,
        min_count: t.min_count,
        rule: rule_from("MetricsScoreTable.rule", t.rule)?,
        cells: t
            .cells
            .into_iter()
            .map(|c| ScoreTableCell {
                lo_bin: c.lo_bin,
                hi_bin: c.hi_bin,
                n_pos: c.n_pos,
                n_neg: c.n_neg,
                sum_p: c.sum_p,
                sum_sq_err: c.sum_sq_err,
            })
            .collect(),
    })
}

fn score_release_to(r: &ScoreRelease) -> pb::MetricsScoreRelease {
    use pb::metrics_score_release::Release;
    pb::MetricsScoreRelease {
        release: Some(match r {
            ScoreRelease::Table(t) => Release::Table(score_table_to(t)),
            ScoreRelease::Rows { probs, labels } => Release::Rows(pb::MetricsScoreRows {
                probs: probs.clone(),
                labels: labels.clone(),
            }),
            ScoreRelease::Withheld { reason } => Release::Withheld(reason.clone()),
        }),
    }
}

fn score_release_from(
    r: Option<pb::MetricsScoreRelease>,
    field: &'static str,
) -> Result<ScoreRelease> {
    use pb::metrics_score_release::Release;
    let r = r.ok_or(ConvertError::Missing(field))?;
    Ok(
        match r
            .release
            .ok_or(ConvertError::Missing("MetricsScoreRelease.release"))?
        {
            Release::Table(t) => ScoreRelease::Table(score_table_from(t)?),
            Release::Rows(rows) => {
                if rows.labels.len() != rows.probs.len() {
                    return Err(ConvertError::Length {
                        field: "MetricsScoreRows.labels",
                        got: rows.labels.len(),
                        expected: rows.probs.len(),
                    });
                }
                ScoreRelease::Rows {
                    probs: rows.probs,
                    labels: rows.labels,
                }
            }
            Release::Withheld(reason) => ScoreRelease::Withheld { reason },
        },
    )
}

fn group_release_to(g: &GroupRelease) -> pb::MetricsGroupRelease {
    use pb::metrics_group_release::Release;
    use pb::metrics_survival_table::Times;
    pb::MetricsGroupRelease {
        release: Some(match g {
            GroupRelease::Table { table, times } => Release::Table(pb::MetricsSurvivalTable {
                min_count: table.min_count,
                rule: rule_to(table.rule),
                groups: table
                    .groups
                    .iter()
                    .map(|cells| pb::MetricsSurvivalGroup {
                        cells: cells
                            .iter()
                            .map(|c| pb::MetricsSurvivalCell {
                                time: c.time,
                                events: c.events,
                                censored: c.censored,
                            })
                            .collect(),
                    })
                    .collect(),
                times: Some(match times {
                    ReleasedTimes::Exact => Times::Exact(true),
                    ReleasedTimes::Grid { step } => Times::GridStep(*step),
                }),
            }),
            GroupRelease::Withheld { reason } => Release::Withheld(reason.clone()),
        }),
    }
}

fn group_release_from(g: pb::MetricsGroupRelease) -> Result<GroupRelease> {
    use pb::metrics_group_release::Release;
    use pb::metrics_survival_table::Times;
    Ok(
        match g
            .release
            .ok_or(ConvertError::Missing("MetricsGroupRelease.release"))?
        {
            Release::Table(t) => {
                let times = match t
                    .times
                    .ok_or(ConvertError::Missing("MetricsSurvivalTable.times"))?
                {
                    Times::Exact(true) => ReleasedTimes::Exact,
                    Times::Exact(false) => {
                        return Err(ConvertError::Invalid {
                            field: "MetricsSurvivalTable.exact",
                            reason: "false; a grid table sets grid_step instead".into(),
                        });
                    }
                    Times::GridStep(step) if step.is_finite() && step > 0.0 => {
                        ReleasedTimes::Grid { step }
                    }
                    Times::GridStep(step) => {
                        return Err(ConvertError::Invalid {
                            field: "MetricsSurvivalTable.grid_step",
                            reason: format!("{step} is not a positive number"),
                        });
                    }
                };
                GroupRelease::Table {
                    table: SiteSurvivalTable {
                        min_count: t.min_count,
                        rule: rule_from("MetricsSurvivalTable.rule", t.rule)?,
                        groups: t
                            .groups
                            .into_iter()
                            .map(|g| {
                                g.cells
                                    .into_iter()
                                    .map(|c| SurvivalCell {
                                        time: c.time,
                                        events: c.events,
                                        censored: c.censored,
                                    })
                                    .collect()
                            })
                            .collect(),
                    },
                    times,
                }
            }
            Release::Withheld(reason) => GroupRelease::Withheld { reason },
        },
    )
}

/// Encodes a site's metrics answer.
pub fn result_to(r: &MetricsResult) -> pb::PipelineMetricsResult {
    use pb::pipeline_metrics_result::Round;
    pb::PipelineMetricsResult {
        round: Some(match r {
            MetricsResult::Scores {
                ml,
                clinical,
                unscored,
            } => Round::Scores(pb::MetricsScores {
                ml: Some(score_release_to(ml)),
                clinical: clinical.as_ref().map(score_release_to),
                unscored: *unscored,
            }),
            MetricsResult::FollowUp(f) => Round::FollowUp(pb::MetricsFollowUp {
                cross_placements: f.cross_placements.as_ref().map(|v| {
                    pb::MetricsCrossPlacementList {
                        cells: v
                            .iter()
                            .map(|c| pb::MetricsCrossPlacement {
                                sum_v10_pos: c.sum_v10_pos,
                                sum_v01_neg: c.sum_v01_neg,
                            })
                            .collect(),
                    }
                }),
                survival: f.survival.as_ref().map(|s| pb::MetricsSurvivalRelease {
                    by_predicted: s.by_predicted.as_ref().map(group_release_to),
                    by_response: Some(group_release_to(&s.by_response)),
                }),
            }),
        }),
    }
}

/// Decodes a site's metrics answer.
pub fn result_from(r: pb::PipelineMetricsResult) -> Result<MetricsResult> {
    use pb::pipeline_metrics_result::Round;
    Ok(
        match r
            .round
            .ok_or(ConvertError::Missing("PipelineMetricsResult.round"))?
        {
            Round::Scores(s) => MetricsResult::Scores {
                ml: score_release_from(s.ml, "MetricsScores.ml")?,
                clinical: s
                    .clinical
                    .map(|c| score_release_from(Some(c), "MetricsScores.clinical"))
                    .transpose()?,
                unscored: s.unscored,
            },
            Round::FollowUp(f) => MetricsResult::FollowUp(FollowUpResult {
                cross_placements: f.cross_placements.map(|l| {
                    l.cells
                        .into_iter()
                        .map(|c| CrossPlacementSums {
                            sum_v10_pos: c.sum_v10_pos,
                            sum_v01_neg: c.sum_v01_neg,
                        })
                        .collect()
                }),
                survival: f
                    .survival
                    .map(|s| {
                        Ok::<_, ConvertError>(SurvivalRelease {
                            by_predicted: s.by_predicted.map(group_release_from).transpose()?,
                            by_response: group_release_from(s.by_response.ok_or(
                                ConvertError::Missing("MetricsSurvivalRelease.by_response"),
                            )?)?,
                        })
                    })
                    .transpose()?,
                // Only the aggregator's decoded sum of a masked round carries it; never a site.
                masked_sum: None,
            }),
        },
    )
}

// ---- the masked follow-up round's shape ----------------------------------------------------

/// Largest shared time grid a masked follow-up round may ask for (every site packs one count
/// per point, group and grouping).
pub const MAX_TIME_BINS: u32 = 100_000;

/// `SumShape::PipelineFollowUp` to the wire.
pub fn follow_up_shape_to(f: &FollowUpShape) -> pb::PipelineFollowUpShape {
    pb::PipelineFollowUpShape {
        bins: f.bins,
        ml_cells: f
            .ml_cells
            .iter()
            .map(|&(lo_bin, hi_bin)| pb::MetricsBinRange { lo_bin, hi_bin })
            .collect(),
        survival: f
            .survival
            .as_ref()
            .map(|s| pb::PipelineFollowUpSurvivalShape {
                time_step: s.time_step,
                time_bins: s.time_bins,
                by_predicted: s.by_predicted,
            }),
        min_count: f.min_count,
    }
}

/// `SumShape::PipelineFollowUp` from the wire: the cells must be ascending, disjoint runs of
/// the grid's bins, the time grid a positive step with 1..=[`MAX_TIME_BINS`] points.
pub fn follow_up_shape_from(f: pb::PipelineFollowUpShape) -> Result<federation::secure::SumShape> {
    grid_from("PipelineFollowUpShape.bins", f.bins)?;
    let mut next = 0u32;
    for c in &f.ml_cells {
        if c.lo_bin < next || c.hi_bin < c.lo_bin || c.hi_bin >= f.bins {
            return Err(ConvertError::Invalid {
                field: "PipelineFollowUpShape.ml_cells",
                reason: format!(
                    "cell {}..={} is not an ascending, disjoint run of the {}-bin grid",
                    c.lo_bin, c.hi_bin, f.bins
                ),
            });
        }
        next = c.hi_bin + 1;
    }
    let survival = match f.survival {
        None => None,
        Some(s) => {
            if !(s.time_step.is_finite() && s.time_step > 0.0) {
                return Err(ConvertError::Invalid {
                    field: "PipelineFollowUpSurvivalShape.time_step",
                    reason: format!("{} is not a positive number", s.time_step),
                });
            }
            if s.time_bins == 0 || s.time_bins > MAX_TIME_BINS {
                return Err(ConvertError::Invalid {
                    field: "PipelineFollowUpSurvivalShape.time_bins",
                    reason: format!("{} is not in 1..={MAX_TIME_BINS}", s.time_bins),
                });
            }
            Some(FollowUpSurvivalShape {
                time_step: s.time_step,
                time_bins: s.time_bins,
                by_predicted: s.by_predicted,
            })
        }
    };
    Ok(federation::secure::SumShape::PipelineFollowUp(
        FollowUpShape {
            bins: f.bins,
            ml_cells: f.ml_cells.iter().map(|c| (c.lo_bin, c.hi_bin)).collect(),
            survival,
            min_count: f.min_count,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn table(min_count: u64) -> SiteScoreTable {
        SiteScoreTable::build(
            ScoreGrid::new(1000).unwrap(),
            &[0.1, 0.12, 0.3, 0.31, 0.33, 0.7, 0.72, 0.9, 0.91, 0.95],
            &[
                false, false, true, false, false, true, true, false, true, true,
            ],
            min_count,
            MergeRule::CellTotal,
        )
        .unwrap()
    }

    fn survival(exact: bool) -> GroupRelease {
        let times = [1.5, 2.0, 2.0, 3.25, 7.0, 8.0, 9.5, 12.0, 12.0, 20.0];
        let events = [
            true, true, false, true, true, false, true, true, false, false,
        ];
        let groups = [0, 1, 0, 1, 0, 1, 0, 1, 0, 1];
        let (res, times_kind) = if exact {
            (stats::survival::TimeResolution::Exact, ReleasedTimes::Exact)
        } else {
            (
                stats::survival::TimeResolution::Grid((1..=20).map(f64::from).collect()),
                ReleasedTimes::Grid { step: 1.0 },
            )
        };
        let min_count = if exact { 1 } else { 2 };
        GroupRelease::Table {
            table: SiteSurvivalTable::build(
                &times,
                &events,
                &groups,
                2,
                &res,
                min_count,
                MergeRule::CellTotal,
            )
            .unwrap(),
            times: times_kind,
        }
    }

    /// Domain → protobuf → bytes → protobuf → domain.
    fn round_trip_task(t: &MetricsTask) -> MetricsTask {
        let bytes = task_to(t).encode_to_vec();
        task_from(pb::PipelineMetricsTask::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    fn round_trip_result(r: &MetricsResult) -> MetricsResult {
        let bytes = result_to(r).encode_to_vec();
        result_from(pb::PipelineMetricsResult::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    #[test]
    fn tasks_round_trip() {
        for t in [
            MetricsTask::Scores { bins: 1000 },
            MetricsTask::FollowUp(FollowUpTask {
                bins: 250,
                cross_placements: Some(vec![(0.25, 0.75), (0.5, 0.5), (1.0, 0.0)]),
                survival: Some(SurvivalRequest {
                    predicted_high: Some(vec![false, true, true]),
                    time_step: 1.0,
                }),
            }),
            // Empty lists stay distinguishable from absent ones.
            MetricsTask::FollowUp(FollowUpTask {
                bins: 1000,
                cross_placements: Some(vec![]),
                survival: Some(SurvivalRequest {
                    predicted_high: None,
                    time_step: 0.5,
                }),
            }),
            MetricsTask::FollowUp(FollowUpTask {
                bins: 1000,
                cross_placements: None,
                survival: None,
            }),
        ] {
            assert_eq!(round_trip_task(&t), t);
        }
    }

    #[test]
    fn results_round_trip() {
        for r in [
            MetricsResult::Scores {
                ml: ScoreRelease::Table(table(3)),
                clinical: Some(ScoreRelease::Table(table(1))),
                unscored: 2,
            },
            MetricsResult::Scores {
                ml: ScoreRelease::Rows {
                    probs: vec![0.1, 0.9, 1.0, 0.0],
                    labels: vec![false, true, true, false],
                },
                clinical: None,
                unscored: 0,
            },
            MetricsResult::Scores {
                ml: ScoreRelease::Withheld {
                    reason: "the stacked ML model's mean probability is not a number".into(),
                },
                clinical: Some(ScoreRelease::Rows {
                    probs: vec![],
                    labels: vec![],
                }),
                unscored: 1,
            },
            MetricsResult::FollowUp(FollowUpResult {
                cross_placements: Some(vec![
                    CrossPlacementSums {
                        sum_v10_pos: 1.25,
                        sum_v01_neg: 0.5,
                    },
                    CrossPlacementSums::default(),
                ]),
                survival: Some(SurvivalRelease {
                    by_predicted: Some(survival(true)),
                    by_response: survival(false),
                }),
                masked_sum: None,
            }),
            MetricsResult::FollowUp(FollowUpResult {
                masked_sum: None,
                cross_placements: None,
                survival: Some(SurvivalRelease {
                    by_predicted: None,
                    by_response: GroupRelease::Withheld {
                        reason: "column \"pfs_months\" holds a time ≤ 0".into(),
                    },
                }),
            }),
            MetricsResult::FollowUp(FollowUpResult {
                masked_sum: None,
                cross_placements: None,
                survival: None,
            }),
        ] {
            assert_eq!(round_trip_result(&r), r);
        }
    }

    #[test]
    fn follow_up_shapes_round_trip_and_bad_ones_are_refused() {
        use federation::secure::SumShape;
        let shape = FollowUpShape {
            bins: 1000,
            ml_cells: vec![(0, 3), (4, 4), (5, 999)],
            survival: Some(FollowUpSurvivalShape {
                time_step: 1.0,
                time_bins: 600,
                by_predicted: true,
            }),
            min_count: 5,
        };
        let bytes = follow_up_shape_to(&shape).encode_to_vec();
        let back =
            follow_up_shape_from(pb::PipelineFollowUpShape::decode(&bytes[..]).unwrap()).unwrap();
        assert_eq!(back, SumShape::PipelineFollowUp(shape.clone()));
        let no_parts = FollowUpShape {
            ml_cells: vec![],
            survival: None,
            ..shape.clone()
        };
        assert_eq!(
            follow_up_shape_from(follow_up_shape_to(&no_parts)).unwrap(),
            SumShape::PipelineFollowUp(no_parts)
        );
        let bad = |f: &dyn Fn(&mut pb::PipelineFollowUpShape)| {
            let mut p = follow_up_shape_to(&shape);
            f(&mut p);
            follow_up_shape_from(p).unwrap_err()
        };
        for (what, e) in [
            (
                "overlapping cells",
                bad(&|p| {
                    p.ml_cells[1] = pb::MetricsBinRange {
                        lo_bin: 3,
                        hi_bin: 4,
                    }
                }),
            ),
            (
                "a cell past the grid",
                bad(&|p| p.ml_cells[2].hi_bin = 1000),
            ),
            (
                "a reversed cell",
                bad(&|p| {
                    p.ml_cells[2] = pb::MetricsBinRange {
                        lo_bin: 9,
                        hi_bin: 8,
                    }
                }),
            ),
        ] {
            assert!(
                matches!(
                    e,
                    ConvertError::Invalid {
                        field: "PipelineFollowUpShape.ml_cells",
                        ..
                    }
                ),
                "{what}: {e:?}"
            );
        }
        assert!(matches!(
            bad(&|p| p.survival.as_mut().unwrap().time_step = 0.0),
            ConvertError::Invalid {
                field: "PipelineFollowUpSurvivalShape.time_step",
                ..
            }
        ));
        assert!(matches!(
            bad(&|p| p.survival.as_mut().unwrap().time_bins = MAX_TIME_BINS + 1),
            ConvertError::Invalid {
                field: "PipelineFollowUpSurvivalShape.time_bins",
                ..
            }
        ));
        assert!(matches!(
            bad(&|p| p.bins = 0),
            ConvertError::Invalid {
                field: "PipelineFollowUpShape.bins",
                ..
            }
        ));
    }

    #[test]
    fn malformed_messages_are_typed_errors() {
        assert_eq!(
            task_from(pb::PipelineMetricsTask { round: None }),
            Err(ConvertError::Missing("PipelineMetricsTask.round"))
        );
        assert!(matches!(
            task_from(task_to(&MetricsTask::Scores { bins: 0 })),
            Err(ConvertError::Invalid {
                field: "MetricsScoresTask.bins",
                ..
            })
        ));
        let mut bad_step = task_to(&MetricsTask::FollowUp(FollowUpTask {
            bins: 10,
            cross_placements: None,
            survival: Some(SurvivalRequest {
                predicted_high: None,
                time_step: 1.0,
            }),
        }));
        if let Some(pb::pipeline_metrics_task::Round::FollowUp(f)) = &mut bad_step.round {
            f.survival.as_mut().unwrap().time_step = f64::NAN;
        }
        assert!(matches!(
            task_from(bad_step),
            Err(ConvertError::Invalid {
                field: "MetricsSurvivalRequest.time_step",
                ..
            })
        ));
        // Rows whose lists differ in length.
        let mut m = result_to(&MetricsResult::Scores {
            ml: ScoreRelease::Rows {
                probs: vec![0.2, 0.4],
                labels: vec![true, false],
            },
            clinical: None,
            unscored: 0,
        });
        if let Some(pb::pipeline_metrics_result::Round::Scores(s)) = &mut m.round
            && let Some(pb::metrics_score_release::Release::Rows(r)) =
                &mut s.ml.as_mut().unwrap().release
        {
            r.labels.pop();
        }
        assert_eq!(
            result_from(m),
            Err(ConvertError::Length {
                field: "MetricsScoreRows.labels",
                got: 1,
                expected: 2
            })
        );
        // Missing ML release; unspecified merge rule; survival without by_response.
        assert_eq!(
            result_from(pb::PipelineMetricsResult {
                round: Some(pb::pipeline_metrics_result::Round::Scores(
                    pb::MetricsScores {
                        ml: None,
                        clinical: None,
                        unscored: 0
                    }
                ))
            }),
            Err(ConvertError::Missing("MetricsScores.ml"))
        );
        let mut t = score_table_to(&table(1));
        t.rule = 0;
        assert_eq!(
            score_table_from(t),
            Err(ConvertError::Missing("MetricsScoreTable.rule"))
        );
        assert_eq!(
            result_from(pb::PipelineMetricsResult {
                round: Some(pb::pipeline_metrics_result::Round::FollowUp(
                    pb::MetricsFollowUp {
                        cross_placements: None,
                        survival: Some(pb::MetricsSurvivalRelease {
                            by_predicted: None,
                            by_response: None
                        })
                    }
                ))
            }),
            Err(ConvertError::Missing("MetricsSurvivalRelease.by_response"))
        );
    }
}
