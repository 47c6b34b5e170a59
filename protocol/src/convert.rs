//! Conversions between protobuf messages and `federation` domain types.
//!
//! Decoding is strict: a missing field, a wrong-length group array or an invalid id is a typed
//! error naming the field, never a default value silently standing in for data.

use crate::convert_combat as cc;
use crate::convert_lasso as cl;
use crate::convert_pipeline as cp;
use crate::convert_secure as cs;
use crate::pb;
use federation::ids::{IdError, StudyHash, StudyId};
use federation::task::{
    CategoricalSummary, ContinuousSummary, GROUPS, GroupMoments, HistogramAnswer, HistogramRequest,
    HistogramResult, HistogramTask, LevelCounts, Node, NodeRequest, Released, ResultBody,
    SiteFailure, Table1SummaryResult, Table1SummaryTask, Task, TaskBody, TaskResult,
};

/// A protobuf message that cannot become a domain value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("message field {0} is missing")]
    Missing(&'static str),
    #[error("message field {field} has {got} entries, expected {expected}")]
    Length {
        field: &'static str,
        got: usize,
        expected: usize,
    },
    #[error("message field {field}: {value} is out of range")]
    Range { field: &'static str, value: u64 },
    #[error("message field {field} is malformed: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A domain value this build has no message for (the sender must not send it).
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// Values as `N`-byte little-endian numbers, each by `to` (one `bytes` field: decoded with one
/// copy, not one call per value as a packed repeated field is).
fn to_le<const N: usize>(v: &[f64], to: impl Fn(f64) -> [u8; N]) -> Vec<u8> {
    let mut out = vec![0u8; N * v.len()];
    for (o, &x) in out.chunks_exact_mut(N).zip(v) {
        o.copy_from_slice(&to(x));
    }
    out
}

/// The inverse of [`to_le`]; a length that is not a multiple of `N` is malformed.
fn from_le<const N: usize>(
    field: &'static str,
    what: &str,
    b: &[u8],
    from: impl Fn([u8; N]) -> f64,
) -> Result<Vec<f64>, ConvertError> {
    if !b.len().is_multiple_of(N) {
        return Err(ConvertError::Invalid {
            field,
            reason: format!(
                "{} bytes is not a whole number of {N}-byte {what} values",
                b.len()
            ),
        });
    }
    Ok(b.chunks_exact(N)
        .map(|c| from(c.try_into().expect("a chunk of N bytes")))
        .collect())
}

/// Values as little-endian binary64, exactly.
pub(crate) fn f64_le(v: &[f64]) -> Vec<u8> {
    to_le(v, f64::to_le_bytes)
}

/// The inverse of [`f64_le`].
pub(crate) fn from_f64_le(field: &'static str, b: &[u8]) -> Result<Vec<f64>, ConvertError> {
    from_le(field, "double-precision", b, f64::from_le_bytes)
}

/// Values as little-endian binary32, each rounded to single precision (the sites' Hessians
/// already are).
pub(crate) fn f32_le(v: &[f64]) -> Vec<u8> {
    to_le(v, |x| (x as f32).to_le_bytes())
}

/// The inverse of [`f32_le`].
pub(crate) fn from_f32_le(field: &'static str, b: &[u8]) -> Result<Vec<f64>, ConvertError> {
    from_le(field, "single-precision", b, |c| {
        f64::from(f32::from_le_bytes(c))
    })
}

fn groups<T, U>(
    field: &'static str,
    v: Vec<T>,
    f: impl Fn(T) -> Result<U, ConvertError>,
) -> Result<[U; GROUPS], ConvertError> {
    let got = v.len();
    let items: Vec<U> = v.into_iter().map(f).collect::<Result<_, _>>()?;
    items.try_into().map_err(|_| ConvertError::Length {
        field,
        got,
        expected: GROUPS,
    })
}

fn count_from(field: &'static str, c: pb::Count) -> Result<Released<u64>, ConvertError> {
    match c.value {
        Some(pb::count::Value::Count(v)) => Ok(Released::Value(v)),
        Some(pb::count::Value::Suppressed(_)) => Ok(Released::Suppressed),
        None => Err(ConvertError::Missing(field)),
    }
}

fn count_to(c: &Released<u64>) -> pb::Count {
    pb::Count {
        value: Some(match c {
            Released::Value(v) => pb::count::Value::Count(*v),
            Released::Suppressed => pb::count::Value::Suppressed(true),
        }),
    }
}

fn small(field: &'static str, v: u32) -> Result<u8, ConvertError> {
    u8::try_from(v).map_err(|_| ConvertError::Range {
        field,
        value: v as u64,
    })
}

fn node_from(n: Option<pb::TreeNode>, field: &'static str) -> Result<Node, ConvertError> {
    let n = n.ok_or(ConvertError::Missing(field))?;
    let depth = u8::try_from(n.depth).map_err(|_| ConvertError::Range {
        field,
        value: n.depth as u64,
    })?;
    Ok(Node {
        depth,
        index: n.index,
    })
}

fn node_to(n: &Node) -> pb::TreeNode {
    pb::TreeNode {
        depth: n.depth as u32,
        index: n.index,
    }
}

// ---- tasks ---------------------------------------------------------------------------------

impl TryFrom<pb::Task> for Task {
    type Error = ConvertError;
    fn try_from(t: pb::Task) -> Result<Self, ConvertError> {
        let body = match t.body.ok_or(ConvertError::Missing("Task.body"))? {
            pb::task::Body::Table1Summary(s) => TaskBody::Table1Summary(Table1SummaryTask {
                continuous: s.continuous,
                categorical: s.categorical,
            }),
            pb::task::Body::CombatLevels(t) => TaskBody::ComBatLevels(cc::task_from(t)?),
            pb::task::Body::CombatCrossProducts(t) => {
                TaskBody::ComBatCrossProducts(cc::task_from(t)?)
            }
            pb::task::Body::CombatResiduals(t) => TaskBody::ComBatResiduals(cc::task_from(t)?),
            pb::task::Body::CombatEstimate(t) => TaskBody::ComBatEstimate(cc::task_from(t)?),
            pb::task::Body::LassoSums(t) => TaskBody::LassoSums(cl::task_from(t)?),
            pb::task::Body::Pipeline(p) => TaskBody::Pipeline(cp::task_from(p)?),
            pb::task::Body::Table1Levels(s) => TaskBody::Table1Levels(Table1SummaryTask {
                continuous: s.continuous,
                categorical: s.categorical,
            }),
            pb::task::Body::SecureKeys(k) => TaskBody::SecureKeys(cs::keys_task_from(k)?),
            pb::task::Body::Masked(m) => TaskBody::Masked(cs::masked_task_from(m)?),
            pb::task::Body::Histogram(h) => TaskBody::Histogram(HistogramTask {
                variables: h
                    .variables
                    .into_iter()
                    .map(|r| {
                        Ok(HistogramRequest {
                            variable: r.variable,
                            root_lo: r.root_lo,
                            root_hi: r.root_hi,
                            requests: r
                                .requests
                                .into_iter()
                                .map(|q| {
                                    Ok(NodeRequest {
                                        group: small("NodeRequest.group", q.group)?,
                                        node: node_from(q.node, "NodeRequest.node")?,
                                        extra_depth: small(
                                            "NodeRequest.extra_depth",
                                            q.extra_depth,
                                        )?,
                                    })
                                })
                                .collect::<Result<_, ConvertError>>()?,
                        })
                    })
                    .collect::<Result<_, ConvertError>>()?,
            }),
        };
        Ok(Task {
            study_id: StudyId::new(t.study_id)?,
            study_hash: StudyHash(t.study_hash),
            study_spec_json: t.study_spec_json,
            round: t.round,
            body,
        })
    }
}

impl From<&Task> for pb::Task {
    fn from(t: &Task) -> Self {
        let body = match &t.body {
            TaskBody::Table1Summary(s) => pb::task::Body::Table1Summary(pb::Table1SummaryTask {
                continuous: s.continuous.clone(),
                categorical: s.categorical.clone(),
            }),
            TaskBody::ComBatLevels(t) => pb::task::Body::CombatLevels(cc::task_to(t)),
            TaskBody::ComBatCrossProducts(t) => pb::task::Body::CombatCrossProducts(cc::task_to(t)),
            TaskBody::ComBatResiduals(t) => pb::task::Body::CombatResiduals(cc::task_to(t)),
            TaskBody::ComBatEstimate(t) => pb::task::Body::CombatEstimate(cc::task_to(t)),
            TaskBody::LassoSums(t) => pb::task::Body::LassoSums(cl::task_to(t)),
            TaskBody::Table1Levels(s) => pb::task::Body::Table1Levels(pb::Table1SummaryTask {
                continuous: s.continuous.clone(),
                categorical: s.categorical.clone(),
            }),
            // As for the pipeline below: an inner request without a message (the drivers never
            // build one) goes out without it, and the site refuses the task naming the field.
            TaskBody::SecureKeys(k) => {
                pb::task::Body::SecureKeys(cs::keys_task_to(k).unwrap_or_else(|e| {
                    tracing::error!("cannot encode the key round's inner request: {e}");
                    pb::SecureKeysTask { inner: None }
                }))
            }
            TaskBody::Masked(m) => {
                pb::task::Body::Masked(cs::masked_task_to(m).unwrap_or_else(|e| {
                    tracing::error!("cannot encode the masked round's request: {e}");
                    pb::MaskedTask {
                        inner: None,
                        ..Default::default()
                    }
                }))
            }
            // `From` cannot fail. A stage that cannot be encoded (a value out of its message's
            // range) goes out without a stage, which the site refuses as
            // `PipelineTask.stage is missing`; the reason is logged here, at the sender.
            TaskBody::Pipeline(p) => pb::task::Body::Pipeline(cp::task_to(p).unwrap_or_else(|e| {
                tracing::error!("cannot encode the pipeline task for site {}: {e}", p.site);
                pb::PipelineTask {
                    site: p.site.clone(),
                    batch: p.batch,
                    stage: None,
                    features: vec![],
                }
            })),
            TaskBody::Histogram(h) => pb::task::Body::Histogram(pb::HistogramTask {
                variables: h
                    .variables
                    .iter()
                    .map(|r| pb::HistogramRequest {
                        variable: r.variable.clone(),
                        root_lo: r.root_lo,
                        root_hi: r.root_hi,
                        requests: r
                            .requests
                            .iter()
                            .map(|q| pb::NodeRequest {
                                group: q.group as u32,
                                node: Some(node_to(&q.node)),
                                extra_depth: q.extra_depth as u32,
                            })
                            .collect(),
                    })
                    .collect(),
            }),
        };
        pb::Task {
            study_id: t.study_id.to_string(),
            study_hash: t.study_hash.0.clone(),
            study_spec_json: t.study_spec_json.clone(),
            round: t.round,
            body: Some(body),
        }
    }
}

// ---- results -------------------------------------------------------------------------------

impl TryFrom<pb::TaskResult> for TaskResult {
    type Error = ConvertError;
    fn try_from(r: pb::TaskResult) -> Result<Self, ConvertError> {
        let body = match r.body.ok_or(ConvertError::Missing("TaskResult.body"))? {
            pb::task_result::Body::Table1Summary(s) => ResultBody::Table1Summary(summary_from(s)?),
            pb::task_result::Body::Histogram(h) => ResultBody::Histogram(HistogramResult {
                variables: h
                    .variables
                    .into_iter()
                    .map(|a| {
                        Ok(HistogramAnswer {
                            variable: a.variable,
                            groups: groups("HistogramAnswer.groups", a.groups, |g| {
                                g.nodes
                                    .into_iter()
                                    .map(|nc| Ok((node_from(nc.node, "NodeCount.node")?, nc.count)))
                                    .collect()
                            })?,
                        })
                    })
                    .collect::<Result<_, ConvertError>>()?,
            }),
            pb::task_result::Body::Failure(f) => {
                ResultBody::Failure(SiteFailure { message: f.message })
            }
            pb::task_result::Body::CombatLevels(l) => ResultBody::ComBatLevels(cc::levels_from(l)),
            pb::task_result::Body::CombatCrossProducts(c) => {
                ResultBody::ComBatCrossProducts(cc::cross_from(c))
            }
            pb::task_result::Body::CombatResiduals(r) => {
                ResultBody::ComBatResiduals(cc::residuals_from(r))
            }
            pb::task_result::Body::CombatEstimates(e) => {
                ResultBody::ComBatEstimates(cc::estimates_from(e))
            }
            pb::task_result::Body::LassoSums(s) => ResultBody::LassoSums(cl::sums_from(s)?),
            pb::task_result::Body::Pipeline(p) => ResultBody::Pipeline(cp::result_from(p)?),
            pb::task_result::Body::Table1Levels(l) => {
                ResultBody::Table1Levels(cs::table1_levels_from(l))
            }
            pb::task_result::Body::SecureKey(k) => ResultBody::SecureKey(cs::key_result_from(k)?),
            pb::task_result::Body::Masked(v) => ResultBody::Masked(cs::masked_from(v)?),
        };
        Ok(TaskResult {
            study_id: StudyId::new(r.study_id)?,
            round: r.round,
            body,
        })
    }
}

fn summary_from(s: pb::Table1SummaryResult) -> Result<Table1SummaryResult, ConvertError> {
    Ok(Table1SummaryResult {
        group_n: groups("Table1SummaryResult.group_n", s.group_n, |c| {
            count_from("Table1SummaryResult.group_n", c)
        })?,
        label_missing: count_from(
            "Table1SummaryResult.label_missing",
            s.label_missing
                .ok_or(ConvertError::Missing("Table1SummaryResult.label_missing"))?,
        )?,
        continuous: s
            .continuous
            .into_iter()
            .map(|c| {
                Ok(ContinuousSummary {
                    variable: c.variable,
                    groups: groups("ContinuousSummary.groups", c.groups, |g| match g.value {
                        Some(pb::released_moments::Value::Moments(m)) => {
                            Ok(Released::Value(GroupMoments {
                                n: m.n,
                                mean: m.mean,
                                m2: m.m2,
                            }))
                        }
                        Some(pb::released_moments::Value::Suppressed(_)) => {
                            Ok(Released::Suppressed)
                        }
                        None => Err(ConvertError::Missing("ContinuousSummary.groups.value")),
                    })?,
                    missing: groups("ContinuousSummary.missing", c.missing, |m| {
                        count_from("ContinuousSummary.missing", m)
                    })?,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        categorical: s
            .categorical
            .into_iter()
            .map(|c| {
                Ok(CategoricalSummary {
                    variable: c.variable,
                    levels: c
                        .levels
                        .into_iter()
                        .map(|l| {
                            Ok(LevelCounts {
                                level: l.level,
                                counts: groups("LevelCounts.counts", l.counts, |x| {
                                    count_from("LevelCounts.counts", x)
                                })?,
                            })
                        })
                        .collect::<Result<_, ConvertError>>()?,
                    missing: groups("CategoricalSummary.missing", c.missing, |m| {
                        count_from("CategoricalSummary.missing", m)
                    })?,
                })
            })
            .collect::<Result<_, ConvertError>>()?,
    })
}

impl From<&TaskResult> for pb::TaskResult {
    fn from(r: &TaskResult) -> Self {
        result_to_pb(&r.study_id, r.round, &r.body)
    }
}

/// A result's message from its parts, borrowed: the aggregator's round log encodes the bodies
/// it holds without first copying each into a [`TaskResult`].
pub fn result_to_pb(
    study_id: &federation::StudyId,
    round: u32,
    body: &ResultBody,
) -> pb::TaskResult {
    let body = match body {
        ResultBody::Table1Summary(s) => {
            pb::task_result::Body::Table1Summary(pb::Table1SummaryResult {
                group_n: s.group_n.iter().map(count_to).collect(),
                label_missing: Some(count_to(&s.label_missing)),
                continuous: s
                    .continuous
                    .iter()
                    .map(|c| pb::ContinuousSummary {
                        variable: c.variable.clone(),
                        groups: c
                            .groups
                            .iter()
                            .map(|g| pb::ReleasedMoments {
                                value: Some(match g {
                                    Released::Value(m) => {
                                        pb::released_moments::Value::Moments(pb::Moments {
                                            n: m.n,
                                            mean: m.mean,
                                            m2: m.m2,
                                        })
                                    }
                                    Released::Suppressed => {
                                        pb::released_moments::Value::Suppressed(true)
                                    }
                                }),
                            })
                            .collect(),
                        missing: c.missing.iter().map(count_to).collect(),
                    })
                    .collect(),
                categorical: s
                    .categorical
                    .iter()
                    .map(|c| pb::CategoricalSummary {
                        variable: c.variable.clone(),
                        levels: c
                            .levels
                            .iter()
                            .map(|l| pb::LevelCounts {
                                level: l.level.clone(),
                                counts: l.counts.iter().map(count_to).collect(),
                            })
                            .collect(),
                        missing: c.missing.iter().map(count_to).collect(),
                    })
                    .collect(),
            })
        }
        ResultBody::Histogram(h) => pb::task_result::Body::Histogram(pb::HistogramResult {
            variables: h
                .variables
                .iter()
                .map(|a| pb::HistogramAnswer {
                    variable: a.variable.clone(),
                    groups: a
                        .groups
                        .iter()
                        .map(|g| pb::GroupNodes {
                            nodes: g
                                .iter()
                                .map(|(n, c)| pb::NodeCount {
                                    node: Some(node_to(n)),
                                    count: *c,
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
        }),
        ResultBody::Failure(f) => pb::task_result::Body::Failure(pb::SiteFailure {
            message: f.message.clone(),
        }),
        ResultBody::ComBatLevels(l) => pb::task_result::Body::CombatLevels(cc::levels_to(l)),
        ResultBody::ComBatCrossProducts(c) => {
            pb::task_result::Body::CombatCrossProducts(cc::cross_to(c))
        }
        ResultBody::ComBatResiduals(r) => {
            pb::task_result::Body::CombatResiduals(cc::residuals_to(r))
        }
        ResultBody::ComBatEstimates(e) => {
            pb::task_result::Body::CombatEstimates(cc::estimates_to(e))
        }
        ResultBody::LassoSums(s) => pb::task_result::Body::LassoSums(cl::sums_to(s)),
        ResultBody::Table1Levels(l) => pb::task_result::Body::Table1Levels(cs::table1_levels_to(l)),
        ResultBody::SecureKey(k) => match cs::key_result_to(k) {
            Ok(m) => pb::task_result::Body::SecureKey(m),
            Err(e) => pb::task_result::Body::Failure(pb::SiteFailure {
                message: format!("this site cannot send its key-round answer: {e}"),
            }),
        },
        ResultBody::Masked(v) => pb::task_result::Body::Masked(cs::masked_to(v)),
        // `From` cannot fail. An answer that cannot be encoded (a value out of its message's
        // range) goes out as the site's failure naming the reason, so the study
        // stops with it; nothing of the answer leaves the site.
        ResultBody::Pipeline(r) => match cp::result_to(r) {
            Ok(m) => pb::task_result::Body::Pipeline(m),
            Err(e) => pb::task_result::Body::Failure(pb::SiteFailure {
                message: format!("this site cannot send its {} answer: {e}", r.name()),
            }),
        },
    };
    pb::TaskResult {
        study_id: study_id.to_string(),
        round,
        body: Some(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn sample_task() -> Task {
        Task {
            study_id: StudyId::new("t1").unwrap(),
            study_hash: StudyHash("ab".into()),
            study_spec_json: "{}".into(),
            round: 3,
            body: TaskBody::Histogram(HistogramTask {
                variables: vec![HistogramRequest {
                    variable: "age".into(),
                    root_lo: -1.5,
                    root_hi: 99.25,
                    requests: vec![
                        NodeRequest {
                            group: 0,
                            node: Node { depth: 0, index: 0 },
                            extra_depth: 4,
                        },
                        NodeRequest {
                            group: 1,
                            node: Node {
                                depth: 7,
                                index: 101,
                            },
                            extra_depth: 2,
                        },
                    ],
                }],
            }),
        }
    }

    fn sample_results() -> Vec<TaskResult> {
        let id = StudyId::new("t1").unwrap();
        vec![
            TaskResult {
                study_id: id.clone(),
                round: 1,
                body: ResultBody::Table1Summary(Table1SummaryResult {
                    group_n: [Released::Value(7), Released::Suppressed],
                    label_missing: Released::Value(0),
                    continuous: vec![ContinuousSummary {
                        variable: "age".into(),
                        groups: [
                            Released::Value(GroupMoments {
                                n: 7,
                                mean: 51.5,
                                m2: 12.25,
                            }),
                            Released::Suppressed,
                        ],
                        missing: [Released::Value(0), Released::Suppressed],
                    }],
                    categorical: vec![CategoricalSummary {
                        variable: "sex".into(),
                        levels: vec![LevelCounts {
                            level: "F".into(),
                            counts: [Released::Value(5), Released::Value(0)],
                        }],
                        missing: [Released::Value(0), Released::Value(0)],
                    }],
                }),
            },
            TaskResult {
                study_id: id.clone(),
                round: 2,
                body: ResultBody::Histogram(HistogramResult {
                    variables: vec![HistogramAnswer {
                        variable: "age".into(),
                        groups: [vec![(Node { depth: 4, index: 3 }, 6)], vec![]],
                    }],
                }),
            },
            TaskResult {
                study_id: id,
                round: 2,
                body: ResultBody::Failure(SiteFailure {
                    message: "column age is missing".into(),
                }),
            },
        ]
    }

    fn combat_fit() -> models::combat::ComBatFit {
        use models::combat::{CovariateKind, CovariateSpec, DesignSpec};
        models::combat::ComBatFit {
            spec: DesignSpec {
                batches: vec!["S01".into(), "S02".into()],
                covariates: vec![
                    CovariateSpec {
                        name: "age".into(),
                        kind: CovariateKind::Continuous,
                    },
                    CovariateSpec {
                        name: "grade".into(),
                        kind: CovariateKind::Categorical {
                            levels: vec!["G1".into(), "G2".into()],
                        },
                    },
                ],
            },
            beta: ndarray::Array2::from_shape_vec(
                (4, 2),
                vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 0.1],
            )
            .unwrap(),
            grand_mean: vec![0.5, -1.25],
            batch_n: vec![7, 9],
            n: 16,
            unadjusted: vec![false, true],
        }
    }

    #[test]
    fn combat_messages_round_trip_through_bytes() {
        use federation::task::{BatchSource, ComBatTask};
        let global = models::combat::ComBatGlobal {
            fit: combat_fit(),
            var_pooled: vec![2.0, 3.5],
        };
        let task = Task {
            body: TaskBody::ComBatEstimate(ComBatTask {
                batch: BatchSource::Column("scanner".into()),
                design: Some(combat_fit().spec),
                fit: Some(combat_fit()),
                global: Some(global),
                options: Some(models::combat::ComBatOptions::default()),
            }),
            ..sample_task()
        };
        let bytes = pb::Task::from(&task).encode_to_vec();
        assert_eq!(
            Task::try_from(pb::Task::decode(bytes.as_slice()).unwrap()).unwrap(),
            task
        );

        let id = StudyId::new("h").unwrap();
        let bodies = vec![
            ResultBody::ComBatLevels(models::combat::SiteLevels {
                batches: vec!["S01".into()],
                levels: vec![vec![], vec!["G1".into()]],
            }),
            ResultBody::ComBatCrossProducts(models::combat::ComBatCrossProducts {
                n: 12,
                wtw: vec![12.0, 0.0, 600.5],
                wty: vec![1.0, 2.0],
                constant_in_batch: vec![false],
            }),
            ResultBody::ComBatResiduals(models::combat::ComBatResiduals {
                n: 12,
                rss: vec![3.25],
            }),
            ResultBody::ComBatEstimates(vec![models::combat::BatchAdjustment {
                batch: "S01".into(),
                n: 12,
                gamma_hat: vec![0.1],
                delta_hat: vec![1.1],
                gamma_bar: 0.1,
                tau2: 0.01,
                a_prior: Some(3.0),
                b_prior: None,
                gamma_star: vec![0.09],
                delta_star: vec![1.05],
                iterations: 4,
            }]),
        ];
        for body in bodies {
            let r = TaskResult {
                study_id: id.clone(),
                round: 2,
                body,
            };
            let bytes = pb::TaskResult::from(&r).encode_to_vec();
            assert_eq!(
                TaskResult::try_from(pb::TaskResult::decode(bytes.as_slice()).unwrap()).unwrap(),
                r
            );
        }

        // A matrix whose data disagrees with its shape is refused, naming the field.
        let mut t = pb::Task::from(&task);
        if let Some(pb::task::Body::CombatEstimate(c)) = &mut t.body {
            c.fit.as_mut().unwrap().beta.as_mut().unwrap().data.pop();
        }
        assert_eq!(
            Task::try_from(t).unwrap_err(),
            ConvertError::Length {
                field: "ComBatFit.beta",
                got: 7,
                expected: 8
            }
        );
    }

    #[test]
    fn tasks_round_trip_through_bytes() {
        let t = sample_task();
        let bytes = pb::Task::from(&t).encode_to_vec();
        let back = Task::try_from(pb::Task::decode(bytes.as_slice()).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn results_round_trip_through_bytes() {
        for r in sample_results() {
            let bytes = pb::TaskResult::from(&r).encode_to_vec();
            let back =
                TaskResult::try_from(pb::TaskResult::decode(bytes.as_slice()).unwrap()).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        let mut t = pb::Task::from(&sample_task());
        t.body = None;
        assert_eq!(
            Task::try_from(t).unwrap_err(),
            ConvertError::Missing("Task.body")
        );

        let mut r = pb::TaskResult::from(&sample_results()[0]);
        if let Some(pb::task_result::Body::Table1Summary(s)) = &mut r.body {
            s.group_n.pop();
        }
        assert_eq!(
            TaskResult::try_from(r).unwrap_err(),
            ConvertError::Length {
                field: "Table1SummaryResult.group_n",
                got: 1,
                expected: 2
            }
        );

        let mut r = pb::TaskResult::from(&sample_results()[0]);
        r.study_id = "../etc".into();
        assert!(matches!(TaskResult::try_from(r), Err(ConvertError::Id(_))));

        let mut t = pb::Task::from(&sample_task());
        if let Some(pb::task::Body::Histogram(h)) = &mut t.body {
            h.variables[0].requests[0].extra_depth = 300;
        }
        assert!(matches!(Task::try_from(t), Err(ConvertError::Range { .. })));
    }
}
