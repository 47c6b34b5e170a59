//! Conversions of the pipeline study's messages (`federation::pipeline` ↔ protobuf), strict like
//! the rest of the edge: a missing field, a wrong length, an out-of-range index or a malformed
//! model is a typed error naming the field, never a default standing in for data.
//!
//! The ComBat and LASSO parts reuse `convert_combat` / `convert_lasso` (a fit's LASSO requests
//! travel as the LASSO study's own `LassoTask`, its sums as `LassoSums`), so a change of those
//! messages reaches the pipeline without a second copy of their fields.
//!
//! The metrics stage's messages (`PipelineMetricsTask` / `PipelineMetricsResult`, field 20 of the
//! stage oneofs) have their own module, `convert_pipeline_metrics`; the four arms here delegate.
//! Encoding stays fallible (a value out of a message's range is an error, not a panic). See
//! `convert.rs` for what the infallible `From<&Task>` / `From<&TaskResult>` send in that case.
//!
//! Received models are checked before any site scores with them: every internal tree node's
//! feature index is below the model's `n_features` and its children come after it (the layout
//! `learners` builds), so a malformed tree can neither index out of bounds nor loop; an SVM's
//! support vectors have `n_features` columns.

use crate::convert::ConvertError;
use crate::convert_combat as cc;
use crate::convert_lasso as cl;
use crate::convert_pipeline_metrics as cpm;
use crate::pb;
use federation::pipeline::messages::{ColumnReport, FitComBat, TrainOutcome};
use federation::pipeline::{PipelineTask, StageResult, StageTask};
use federation::task::LassoTask;
use learners::driver::MlpRequest;
use learners::forest::{ForestModel, ForestParams, Node, Tree};
use learners::gbm::{GNode, GbmModel, GbmParams, RegTree};
use learners::mlp::LossGradSum;
use learners::site::SharedModel;
use learners::svm::SvmModel;
use learners::{FitId, TrainedModel};
use models::combat::ComBatModel;
use models::logistic::{LogisticReply, LogisticSums};
use models::sampling::Refusal;
use models::standardize::{Standardizer, VarianceConvention};
use stats::Moments;

/// A leaf's `feature` in `learners`' flat trees.
const LEAF: u32 = u32::MAX;

type Result<T> = std::result::Result<T, ConvertError>;

// ---- small pieces ----------------------------------------------------------------------------

fn fit_to(f: &FitId) -> Option<pb::FitId> {
    Some(pb::FitId {
        repeat: f.repeat,
        fold: f.fold,
    })
}

fn fit_from(f: Option<pb::FitId>, field: &'static str) -> Result<FitId> {
    let f = f.ok_or(ConvertError::Missing(field))?;
    Ok(FitId {
        repeat: f.repeat,
        fold: f.fold,
    })
}

/// Largest MLP weight count or clinical parameter count a masked round's shape may name (keeps
/// the layout's size arithmetic far from overflow; real studies have hundreds).
const MAX_SHAPE_WIDTH: u64 = 1 << 20;

/// `SumShape::PipelineFit` from the wire (`federation::pipeline::secure`).
pub(crate) fn fit_shape_from(f: pb::PipelineFitShape) -> Result<federation::secure::SumShape> {
    let width = |field: &'static str, v: u64| {
        if v > MAX_SHAPE_WIDTH {
            Err(ConvertError::Range { field, value: v })
        } else {
            Ok(v as usize)
        }
    };
    if f.clinical_fits.len() != f.clinical_fit_ids.len() {
        return Err(ConvertError::Invalid {
            field: "PipelineFitShape.clinical_fit_ids",
            reason: format!(
                "{} ids for {} clinical fits",
                f.clinical_fit_ids.len(),
                f.clinical_fits.len()
            ),
        });
    }
    Ok(federation::secure::SumShape::PipelineFit {
        mlp_fits: f
            .mlp_fits
            .into_iter()
            .map(|x| fit_from(Some(x), "PipelineFitShape.mlp_fits"))
            .collect::<Result<_>>()?,
        mlp_weights: width("PipelineFitShape.mlp_weights", f.mlp_weights)?,
        clinical_fits: f
            .clinical_fits
            .into_iter()
            .zip(f.clinical_fit_ids)
            .map(|(x, id)| Ok((fit_from(Some(x), "PipelineFitShape.clinical_fits")?, id)))
            .collect::<Result<_>>()?,
        clinical_params: width("PipelineFitShape.clinical_params", f.clinical_params)?,
    })
}

/// `SumShape::PipelineFit` to the wire (any other shape gives an empty message).
pub(crate) fn fit_shape_to(s: &federation::secure::SumShape) -> pb::PipelineFitShape {
    match s {
        federation::secure::SumShape::PipelineFit {
            mlp_fits,
            mlp_weights,
            clinical_fits,
            clinical_params,
        } => pb::PipelineFitShape {
            mlp_fits: mlp_fits.iter().filter_map(fit_to).collect(),
            mlp_weights: *mlp_weights as u64,
            clinical_fits: clinical_fits
                .iter()
                .filter_map(|(f, _)| fit_to(f))
                .collect(),
            clinical_fit_ids: clinical_fits.iter().map(|(_, id)| *id).collect(),
            clinical_params: *clinical_params as u64,
        },
        _ => pb::PipelineFitShape::default(),
    }
}

fn u32_of(field: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| ConvertError::Range {
        field,
        value: v as u64,
    })
}

fn usize_of(field: &'static str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| ConvertError::Range { field, value: v })
}

fn vectors_to<'a>(v: impl IntoIterator<Item = (&'a FitId, &'a Vec<f64>)>) -> Vec<pb::FitVector> {
    v.into_iter()
        .map(|(fit, values)| pb::FitVector {
            fit: fit_to(fit),
            values: crate::convert::f64_le(values),
        })
        .collect()
}

fn vectors_from(v: Vec<pb::FitVector>) -> Result<Vec<(FitId, Vec<f64>)>> {
    v.into_iter()
        .map(|x| {
            Ok((
                fit_from(x.fit, "FitVector.fit")?,
                crate::convert::from_f64_le("FitVector.values", &x.values)?,
            ))
        })
        .collect()
}

fn standardizer_to(s: &Standardizer) -> pb::Standardizer {
    use pb::standardizer::Convention;
    pb::Standardizer {
        n: s.n,
        mean: s.mean.clone(),
        sd: s.sd.clone(),
        convention: match s.convention {
            VarianceConvention::Population => Convention::Population,
            VarianceConvention::Sample => Convention::Sample,
        } as i32,
    }
}

fn standardizer_from(s: Option<pb::Standardizer>) -> Result<Standardizer> {
    use pb::standardizer::Convention;
    let s = s.ok_or(ConvertError::Missing("FitStandardizer.standardizer"))?;
    if s.sd.len() != s.mean.len() {
        return Err(ConvertError::Length {
            field: "Standardizer.sd",
            got: s.sd.len(),
            expected: s.mean.len(),
        });
    }
    let convention = match Convention::try_from(s.convention) {
        Ok(Convention::Population) => VarianceConvention::Population,
        Ok(Convention::Sample) => VarianceConvention::Sample,
        Ok(Convention::Unspecified) => {
            return Err(ConvertError::Missing("Standardizer.convention"));
        }
        Err(_) => {
            return Err(ConvertError::Range {
                field: "Standardizer.convention",
                value: s.convention as u32 as u64,
            });
        }
    };
    Ok(Standardizer {
        n: s.n,
        mean: s.mean,
        sd: s.sd,
        convention,
    })
}

fn combat_model_to(m: &ComBatModel) -> pb::ComBatModel {
    pb::ComBatModel {
        global: Some(cc::global_to(&m.global)),
        options: Some(cc::options_to(&m.options)),
        batches: Some(cc::estimates_to(&m.batches)),
    }
}

fn combat_model_from(m: Option<pb::ComBatModel>) -> Result<ComBatModel> {
    let m = m.ok_or(ConvertError::Missing("FitComBatModel.model"))?;
    Ok(ComBatModel {
        global: cc::global_from(
            m.global
                .ok_or(ConvertError::Missing("ComBatModel.global"))?,
        )?,
        options: cc::options_from(
            m.options
                .ok_or(ConvertError::Missing("ComBatModel.options"))?,
        )?,
        batches: cc::estimates_from(
            m.batches
                .ok_or(ConvertError::Missing("ComBatModel.batches"))?,
        ),
    })
}

fn refusal_to(r: &Refusal) -> pb::FitRefusal {
    pb::FitRefusal {
        fit_id: r.fit_id,
        params: r.params as u64,
        rows: r.rows as u64,
        max_params_per_row: r.max_params_per_row,
    }
}

fn refusal_from(r: pb::FitRefusal) -> Result<Refusal> {
    Ok(Refusal {
        fit_id: r.fit_id,
        params: usize_of("FitRefusal.params", r.params)?,
        rows: usize_of("FitRefusal.rows", r.rows)?,
        max_params_per_row: r.max_params_per_row,
    })
}

// ---- shared models ----------------------------------------------------------------------------

/// The columns of a flat tree, each with its field name for errors.
struct TreeColumns<'a> {
    feature: (&'static str, &'a [u32]),
    left: (&'static str, &'a [u32]),
    right: (&'static str, &'a [u32]),
    /// (field name, length) of the other columns, which must match `feature`'s length.
    others: &'a [(&'static str, usize)],
}

/// Checks a received flat tree: equal column lengths, at least a root, and every internal node's
/// feature below `n_features` with both children after it and inside the tree (`learners` builds
/// trees in pre-order, so this also rules out cycles).
fn check_tree(t: &TreeColumns<'_>, n_features: usize) -> Result<()> {
    let (feature_name, feature) = t.feature;
    let len = feature.len();
    let lengths = [(t.left.0, t.left.1.len()), (t.right.0, t.right.1.len())];
    for &(field, got) in lengths.iter().chain(t.others) {
        if got != len {
            return Err(ConvertError::Length {
                field,
                got,
                expected: len,
            });
        }
    }
    if len == 0 {
        return Err(ConvertError::Invalid {
            field: feature_name,
            reason: "a tree needs at least its root node".into(),
        });
    }
    for (i, &f) in feature.iter().enumerate() {
        if f == LEAF {
            continue;
        }
        if f as usize >= n_features {
            return Err(ConvertError::Invalid {
                field: feature_name,
                reason: format!("node {i} splits on feature {f}, the model has {n_features}"),
            });
        }
        for (field, children) in [t.left, t.right] {
            let child = children[i];
            let c = child as usize;
            if c <= i || c >= len {
                return Err(ConvertError::Invalid {
                    field,
                    reason: format!(
                        "node {i} points to node {child}; children must come after their parent \
                         inside the tree's {len} nodes"
                    ),
                });
            }
        }
    }
    Ok(())
}

fn forest_to(m: &ForestModel) -> pb::ForestModel {
    let p = &m.params;
    pb::ForestModel {
        params: Some(pb::ForestParams {
            n_trees: p.n_trees,
            max_depth: p.max_depth,
            max_features: p.max_features,
            min_samples_split: p.min_samples_split,
            min_samples_leaf: p.min_samples_leaf,
            bootstrap: p.bootstrap,
        }),
        n_features: m.n_features as u64,
        trees: m
            .trees
            .iter()
            .map(|t| pb::ForestTree {
                feature: t.nodes.iter().map(|n| n.feature).collect(),
                threshold: t.nodes.iter().map(|n| n.threshold).collect(),
                left: t.nodes.iter().map(|n| n.left).collect(),
                right: t.nodes.iter().map(|n| n.right).collect(),
                value: t.nodes.iter().map(|n| n.value).collect(),
            })
            .collect(),
    }
}

fn forest_from(m: pb::ForestModel) -> Result<ForestModel> {
    let p = m
        .params
        .ok_or(ConvertError::Missing("ForestModel.params"))?;
    let n_features = usize_of("ForestModel.n_features", m.n_features)?;
    let trees = m
        .trees
        .into_iter()
        .map(|t| {
            check_tree(
                &TreeColumns {
                    feature: ("ForestTree.feature", &t.feature),
                    left: ("ForestTree.left", &t.left),
                    right: ("ForestTree.right", &t.right),
                    others: &[
                        ("ForestTree.threshold", t.threshold.len()),
                        ("ForestTree.value", t.value.len()),
                    ],
                },
                n_features,
            )?;
            Ok(Tree {
                nodes: (0..t.feature.len())
                    .map(|i| Node {
                        feature: t.feature[i],
                        threshold: t.threshold[i],
                        left: t.left[i],
                        right: t.right[i],
                        value: t.value[i],
                    })
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(ForestModel {
        params: ForestParams {
            n_trees: p.n_trees,
            max_depth: p.max_depth,
            max_features: p.max_features,
            min_samples_split: p.min_samples_split,
            min_samples_leaf: p.min_samples_leaf,
            bootstrap: p.bootstrap,
        },
        n_features,
        trees,
    })
}

fn gbm_to(m: &GbmModel) -> pb::GbmModel {
    let p = &m.params;
    pb::GbmModel {
        params: Some(pb::GbmParams {
            n_rounds: p.n_rounds,
            eta: p.eta,
            max_depth: p.max_depth,
            min_child_weight: p.min_child_weight,
            subsample: p.subsample,
            colsample_bytree: p.colsample_bytree,
            lambda: p.lambda,
            gamma: p.gamma,
            base_score: p.base_score,
        }),
        n_features: m.n_features as u64,
        base_margin: m.base_margin,
        trees: m
            .trees
            .iter()
            .map(|t| pb::GbmTree {
                feature: t.nodes.iter().map(|n| n.feature).collect(),
                threshold: t.nodes.iter().map(|n| n.threshold).collect(),
                left: t.nodes.iter().map(|n| n.left).collect(),
                right: t.nodes.iter().map(|n| n.right).collect(),
                value: t.nodes.iter().map(|n| n.value).collect(),
                loss_chg: t.nodes.iter().map(|n| n.loss_chg).collect(),
                cover: t.nodes.iter().map(|n| n.cover).collect(),
            })
            .collect(),
    }
}

fn gbm_from(m: pb::GbmModel) -> Result<GbmModel> {
    let p = m.params.ok_or(ConvertError::Missing("GbmModel.params"))?;
    let n_features = usize_of("GbmModel.n_features", m.n_features)?;
    let trees = m
        .trees
        .into_iter()
        .map(|t| {
            check_tree(
                &TreeColumns {
                    feature: ("GbmTree.feature", &t.feature),
                    left: ("GbmTree.left", &t.left),
                    right: ("GbmTree.right", &t.right),
                    others: &[
                        ("GbmTree.threshold", t.threshold.len()),
                        ("GbmTree.value", t.value.len()),
                        ("GbmTree.loss_chg", t.loss_chg.len()),
                        ("GbmTree.cover", t.cover.len()),
                    ],
                },
                n_features,
            )?;
            Ok(RegTree {
                nodes: (0..t.feature.len())
                    .map(|i| GNode {
                        feature: t.feature[i],
                        threshold: t.threshold[i],
                        left: t.left[i],
                        right: t.right[i],
                        value: t.value[i],
                        loss_chg: t.loss_chg[i],
                        cover: t.cover[i],
                    })
                    .collect(),
            })
        })
        .collect::<Result<_>>()?;
    Ok(GbmModel {
        params: GbmParams {
            n_rounds: p.n_rounds,
            eta: p.eta,
            max_depth: p.max_depth,
            min_child_weight: p.min_child_weight,
            subsample: p.subsample,
            colsample_bytree: p.colsample_bytree,
            lambda: p.lambda,
            gamma: p.gamma,
            base_score: p.base_score,
        },
        n_features,
        base_margin: m.base_margin,
        trees,
    })
}

fn svm_to(m: &SvmModel) -> Result<pb::SvmModel> {
    // serde_json writes a non-finite f64 as `null`, which would only fail at the receiver.
    if !(m.platt_a.is_finite() && m.platt_b.is_finite()) {
        return Err(ConvertError::Invalid {
            field: "SvmModel.model_json",
            reason: "the Platt coefficients are not finite".into(),
        });
    }
    let model_json = serde_json::to_vec(m).map_err(|e| ConvertError::Invalid {
        field: "SvmModel.model_json",
        reason: e.to_string(),
    })?;
    Ok(pb::SvmModel { model_json })
}

/// The column count of the support vectors in an SVM's JSON (linfa's `SeparatingHyperplane`:
/// `WeightedCombination` holds the support vectors as an ndarray `{v, dim: [rows, cols], data}`,
/// `Linear` the weight vector `{v, dim: [cols], data}`).
fn svm_columns(v: &serde_json::Value) -> Option<u64> {
    let sep = v.get("svm")?.get("sep_hyperplane")?;
    if let Some(m) = sep.get("WeightedCombination") {
        m.get("dim")?.get(1)?.as_u64()
    } else {
        sep.get("Linear")?.get("dim")?.get(0)?.as_u64()
    }
}

fn svm_from(m: pb::SvmModel) -> Result<SvmModel> {
    let field = "SvmModel.model_json";
    let bad = |reason: String| ConvertError::Invalid { field, reason };
    let value: serde_json::Value =
        serde_json::from_slice(&m.model_json).map_err(|e| bad(e.to_string()))?;
    let cols = svm_columns(&value).ok_or_else(|| bad("no svm.sep_hyperplane".into()))?;
    let model: SvmModel = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if cols != model.n_features as u64 {
        return Err(bad(format!(
            "the support vectors have {cols} columns, the model declares {} features",
            model.n_features
        )));
    }
    Ok(model)
}

fn shared_to(s: &SharedModel) -> Result<pb::SharedModel> {
    let model = match &s.model {
        TrainedModel::Svm(m) => pb::trained_model::Model::Svm(svm_to(m)?),
        TrainedModel::Forest(m) => pb::trained_model::Model::Forest(forest_to(m)),
        TrainedModel::Gbm(m) => pb::trained_model::Model::Gbm(gbm_to(m)),
    };
    Ok(pb::SharedModel {
        site: s.site.clone(),
        n_train: s.n_train as u64,
        model: Some(pb::TrainedModel { model: Some(model) }),
    })
}

fn shared_from(s: pb::SharedModel) -> Result<SharedModel> {
    let model = match s
        .model
        .and_then(|m| m.model)
        .ok_or(ConvertError::Missing("SharedModel.model"))?
    {
        pb::trained_model::Model::Svm(m) => TrainedModel::Svm(svm_from(m)?),
        pb::trained_model::Model::Forest(m) => TrainedModel::Forest(forest_from(m)?),
        pb::trained_model::Model::Gbm(m) => TrainedModel::Gbm(gbm_from(m)?),
    };
    Ok(SharedModel {
        site: s.site,
        n_train: usize_of("SharedModel.n_train", s.n_train)?,
        model,
    })
}

fn shared_list_to(v: &[SharedModel]) -> Result<Vec<pb::SharedModel>> {
    v.iter().map(shared_to).collect()
}

fn shared_list_from(v: Vec<pb::SharedModel>) -> Result<Vec<SharedModel>> {
    v.into_iter().map(shared_from).collect()
}

// ---- tasks -----------------------------------------------------------------------------------

/// Encodes a pipeline task; the metrics stage gives [`ConvertError::Unsupported`].
pub fn task_to(t: &PipelineTask) -> Result<pb::PipelineTask> {
    use pb::pipeline_task::Stage;
    let stage = match &t.stage {
        StageTask::Columns => Stage::Columns(pb::PipelineColumnsTask {}),
        StageTask::ComBat { round, fits } => Stage::Combat(pb::PipelineComBatTask {
            round: u32::from(*round),
            fits: fits
                .iter()
                .map(|f| pb::FitComBat {
                    fit: fit_to(&f.fit),
                    design: f.design.as_ref().map(cc::design_to),
                    regression: f.regression.as_ref().map(cc::fit_to),
                    global: f.global.as_ref().map(cc::global_to),
                })
                .collect(),
        }),
        StageTask::Moments { models } => Stage::Moments(pb::PipelineMomentsTask {
            models: models
                .iter()
                .map(|(fit, m)| pb::FitComBatModel {
                    fit: fit_to(fit),
                    model: Some(combat_model_to(m)),
                })
                .collect(),
        }),
        StageTask::Lasso {
            standardizers,
            requests,
        } => Stage::Lasso(pb::PipelineLassoTask {
            standardizers: standardizers
                .iter()
                .map(|(fit, s)| pb::FitStandardizer {
                    fit: fit_to(fit),
                    standardizer: Some(standardizer_to(s)),
                })
                .collect(),
            requests: requests
                .iter()
                .map(|(fit, r)| pb::FitLassoRequests {
                    fit: fit_to(fit),
                    // The LASSO study's own message; the pipeline site derives its key itself.
                    requests: Some(cl::task_to(&LassoTask {
                        site_key: 0,
                        requests: r.clone(),
                    })),
                })
                .collect(),
        }),
        StageTask::Train { selected } => Stage::Train(pb::PipelineTrainTask {
            selected: selected
                .iter()
                .map(|(fit, f)| {
                    Ok(pb::FitSelection {
                        fit: fit_to(fit),
                        features: f
                            .iter()
                            .map(|&i| u32_of("FitSelection.features", i))
                            .collect::<Result<_>>()?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
        StageTask::Relay { models } => Stage::Relay(pb::PipelineRelayTask {
            models: models
                .iter()
                .map(|(fit, m)| {
                    Ok(pb::FitSharedModels {
                        fit: fit_to(fit),
                        models: shared_list_to(m)?,
                    })
                })
                .collect::<Result<_>>()?,
        }),
        StageTask::Fit { mlp, clinical } => Stage::Fit(pb::PipelineMetaFitTask {
            mlp: vectors_to(mlp.iter().map(|r| (&r.fit, &r.weights))),
            clinical: vectors_to(clinical.iter().map(|(f, v)| (f, v))),
        }),
        StageTask::Score { mlp, clinical } => Stage::Score(pb::PipelineScoreTask {
            mlp: vectors_to(mlp.iter().map(|(f, v)| (f, v))),
            clinical: vectors_to(clinical.iter().map(|(f, v)| (f, v))),
        }),
        StageTask::Metrics(m) => Stage::Metrics(cpm::task_to(m)),
    };
    Ok(pb::PipelineTask {
        site: t.site.clone(),
        batch: t.batch,
        stage: Some(stage),
        features: t.features.clone(),
    })
}

/// Decodes a pipeline task.
pub fn task_from(t: pb::PipelineTask) -> Result<PipelineTask> {
    use pb::pipeline_task::Stage;
    let stage = match t.stage.ok_or(ConvertError::Missing("PipelineTask.stage"))? {
        Stage::Columns(_) => StageTask::Columns,
        Stage::Combat(c) => {
            let round =
                u8::try_from(c.round)
                    .ok()
                    .filter(|&r| r <= 3)
                    .ok_or(ConvertError::Range {
                        field: "PipelineComBatTask.round",
                        value: u64::from(c.round),
                    })?;
            StageTask::ComBat {
                round,
                fits: c
                    .fits
                    .into_iter()
                    .map(|f| {
                        Ok(FitComBat {
                            fit: fit_from(f.fit, "FitComBat.fit")?,
                            design: f
                                .design
                                .map(|d| cc::design_from(Some(d), "FitComBat.design"))
                                .transpose()?,
                            regression: f
                                .regression
                                .map(|r| cc::fit_from(Some(r), "FitComBat.regression"))
                                .transpose()?,
                            global: f.global.map(cc::global_from).transpose()?,
                        })
                    })
                    .collect::<Result<_>>()?,
            }
        }
        Stage::Moments(m) => StageTask::Moments {
            models: m
                .models
                .into_iter()
                .map(|m| {
                    Ok((
                        fit_from(m.fit, "FitComBatModel.fit")?,
                        combat_model_from(m.model)?,
                    ))
                })
                .collect::<Result<_>>()?,
        },
        Stage::Lasso(l) => StageTask::Lasso {
            standardizers: l
                .standardizers
                .into_iter()
                .map(|s| {
                    Ok((
                        fit_from(s.fit, "FitStandardizer.fit")?,
                        standardizer_from(s.standardizer)?,
                    ))
                })
                .collect::<Result<_>>()?,
            requests: l
                .requests
                .into_iter()
                .map(|r| {
                    let fit = fit_from(r.fit, "FitLassoRequests.fit")?;
                    let task = cl::task_from(
                        r.requests
                            .ok_or(ConvertError::Missing("FitLassoRequests.requests"))?,
                    )?;
                    if task.site_key != 0 {
                        return Err(ConvertError::Range {
                            field: "FitLassoRequests.requests.site_key",
                            value: task.site_key,
                        });
                    }
                    Ok((fit, task.requests))
                })
                .collect::<Result<_>>()?,
        },
        Stage::Train(t) => StageTask::Train {
            selected: t
                .selected
                .into_iter()
                .map(|s| {
                    Ok((
                        fit_from(s.fit, "FitSelection.fit")?,
                        s.features.into_iter().map(|i| i as usize).collect(),
                    ))
                })
                .collect::<Result<_>>()?,
        },
        Stage::Relay(r) => StageTask::Relay {
            models: r
                .models
                .into_iter()
                .map(|m| {
                    Ok((
                        fit_from(m.fit, "FitSharedModels.fit")?,
                        shared_list_from(m.models)?,
                    ))
                })
                .collect::<Result<_>>()?,
        },
        Stage::Fit(f) => StageTask::Fit {
            mlp: vectors_from(f.mlp)?
                .into_iter()
                .map(|(fit, weights)| MlpRequest { fit, weights })
                .collect(),
            clinical: vectors_from(f.clinical)?,
        },
        Stage::Score(s) => StageTask::Score {
            mlp: vectors_from(s.mlp)?,
            clinical: vectors_from(s.clinical)?,
        },
        Stage::Metrics(m) => StageTask::Metrics(cpm::task_from(m)?),
    };
    Ok(PipelineTask {
        site: t.site,
        batch: t.batch,
        features: t.features,
        stage,
    })
}

// ---- results ---------------------------------------------------------------------------------

fn logistic_to(r: &LogisticReply) -> pb::fit_logistic_reply::Reply {
    use pb::fit_logistic_reply::Reply;
    match r {
        LogisticReply::Sums(s) => Reply::Sums(pb::LogisticSums {
            fit_id: s.fit_id,
            rows: s.rows as u64,
            sum_w: s.sum_w,
            loglik: s.loglik,
            score: s.score.clone(),
            info: s.info.clone(),
        }),
        LogisticReply::Refused(r) => Reply::Refused(refusal_to(r)),
    }
}

fn logistic_from(r: pb::FitLogisticReply) -> Result<(FitId, LogisticReply)> {
    use pb::fit_logistic_reply::Reply;
    let fit = fit_from(r.fit, "FitLogisticReply.fit")?;
    let reply = match r
        .reply
        .ok_or(ConvertError::Missing("FitLogisticReply.reply"))?
    {
        Reply::Sums(s) => {
            // The information matrix is the packed upper triangle of a (p+1)² matrix, where
            // p+1 is the score's length.
            let k = s.score.len();
            if s.info.len() != k * (k + 1) / 2 {
                return Err(ConvertError::Length {
                    field: "LogisticSums.info",
                    got: s.info.len(),
                    expected: k * (k + 1) / 2,
                });
            }
            LogisticReply::Sums(LogisticSums {
                fit_id: s.fit_id,
                rows: usize_of("LogisticSums.rows", s.rows)?,
                sum_w: s.sum_w,
                loglik: s.loglik,
                score: s.score,
                info: s.info,
            })
        }
        Reply::Refused(r) => LogisticReply::Refused(refusal_from(r)?),
    };
    Ok((fit, reply))
}

fn outcome_to(fit: &FitId, t: &TrainOutcome) -> Result<pb::FitTrainOutcome> {
    Ok(pb::FitTrainOutcome {
        fit: fit_to(fit),
        n_train: t.n_train,
        refused: t.refused.clone(),
        shared: shared_list_to(&t.shared)?,
    })
}

fn outcome_from(t: pb::FitTrainOutcome) -> Result<(FitId, TrainOutcome)> {
    Ok((
        fit_from(t.fit, "FitTrainOutcome.fit")?,
        TrainOutcome {
            n_train: t.n_train,
            refused: t.refused,
            shared: shared_list_from(t.shared)?,
        },
    ))
}

/// Encodes a site's pipeline answer; the metrics stage gives [`ConvertError::Unsupported`].
pub fn result_to(r: &StageResult) -> Result<pb::PipelineResult> {
    use pb::pipeline_result::Stage;
    let stage = match r {
        StageResult::Columns(c) => Stage::Columns(pb::PipelineColumns {
            numeric: c.numeric.clone(),
            incomplete: c.incomplete.clone(),
            text: c.text.clone(),
        }),
        StageResult::ComBatLevels(v) => Stage::CombatLevels(pb::PipelineComBatLevels {
            fits: v
                .iter()
                .map(|(fit, l)| pb::FitComBatLevels {
                    fit: fit_to(fit),
                    levels: Some(cc::levels_to(l)),
                })
                .collect(),
        }),
        StageResult::ComBatCrossProducts(v) => {
            Stage::CombatCrossProducts(pb::PipelineComBatCrossProducts {
                fits: v
                    .iter()
                    .map(|(fit, c)| pb::FitComBatCrossProducts {
                        fit: fit_to(fit),
                        cross_products: Some(cc::cross_to(c)),
                    })
                    .collect(),
            })
        }
        StageResult::ComBatResiduals(v) => Stage::CombatResiduals(pb::PipelineComBatResiduals {
            fits: v
                .iter()
                .map(|(fit, r)| pb::FitComBatResiduals {
                    fit: fit_to(fit),
                    residuals: Some(cc::residuals_to(r)),
                })
                .collect(),
        }),
        StageResult::ComBatEstimates(v) => Stage::CombatEstimates(pb::PipelineComBatEstimates {
            fits: v
                .iter()
                .map(|(fit, b)| pb::FitComBatEstimates {
                    fit: fit_to(fit),
                    estimates: Some(cc::estimates_to(b)),
                })
                .collect(),
        }),
        StageResult::Moments(v) => Stage::Moments(pb::PipelineMoments {
            fits: v
                .iter()
                .map(|(fit, m)| pb::FitMoments {
                    fit: fit_to(fit),
                    features: m
                        .iter()
                        .map(|m| pb::Moments {
                            n: m.n,
                            mean: m.mean,
                            m2: m.m2,
                        })
                        .collect(),
                })
                .collect(),
        }),
        StageResult::Lasso(v) => Stage::Lasso(pb::PipelineLassoSums {
            fits: v
                .iter()
                .map(|(fit, s)| pb::FitLassoSums {
                    fit: fit_to(fit),
                    sums: Some(cl::sums_to(s)),
                })
                .collect(),
        }),
        StageResult::Trained(v) => Stage::Trained(pb::PipelineTrained {
            fits: v
                .iter()
                .map(|(fit, t)| outcome_to(fit, t))
                .collect::<Result<_>>()?,
        }),
        StageResult::Relayed { fits, rows } => Stage::Relayed(pb::PipelineAck {
            fits: *fits,
            rows: *rows,
        }),
        StageResult::Fit { mlp, clinical } => Stage::Fit(pb::PipelineMetaFitSums {
            mlp: mlp
                .iter()
                .map(|(fit, s)| pb::FitMlpSums {
                    fit: fit_to(fit),
                    loss_sum: s.loss_sum,
                    grad_sum: crate::convert::f64_le(&s.grad_sum),
                    n: s.n,
                })
                .collect(),
            clinical: clinical
                .iter()
                .map(|(fit, r)| pb::FitLogisticReply {
                    fit: fit_to(fit),
                    reply: Some(logistic_to(r)),
                })
                .collect(),
        }),
        StageResult::Scored { fits, rows } => Stage::Scored(pb::PipelineAck {
            fits: *fits,
            rows: *rows,
        }),
        StageResult::Metrics(m) => Stage::Metrics(cpm::result_to(m)),
    };
    Ok(pb::PipelineResult { stage: Some(stage) })
}

/// Decodes a site's pipeline answer.
pub fn result_from(r: pb::PipelineResult) -> Result<StageResult> {
    use pb::pipeline_result::Stage;
    Ok(
        match r
            .stage
            .ok_or(ConvertError::Missing("PipelineResult.stage"))?
        {
            Stage::Columns(c) => StageResult::Columns(ColumnReport {
                numeric: c.numeric,
                incomplete: c.incomplete,
                text: c.text,
            }),
            Stage::CombatLevels(v) => StageResult::ComBatLevels(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitComBatLevels.fit")?,
                            cc::levels_from(
                                f.levels
                                    .ok_or(ConvertError::Missing("FitComBatLevels.levels"))?,
                            ),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::CombatCrossProducts(v) => StageResult::ComBatCrossProducts(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitComBatCrossProducts.fit")?,
                            cc::cross_from(f.cross_products.ok_or(ConvertError::Missing(
                                "FitComBatCrossProducts.cross_products",
                            ))?),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::CombatResiduals(v) => StageResult::ComBatResiduals(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitComBatResiduals.fit")?,
                            cc::residuals_from(
                                f.residuals
                                    .ok_or(ConvertError::Missing("FitComBatResiduals.residuals"))?,
                            ),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::CombatEstimates(v) => StageResult::ComBatEstimates(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitComBatEstimates.fit")?,
                            cc::estimates_from(
                                f.estimates
                                    .ok_or(ConvertError::Missing("FitComBatEstimates.estimates"))?,
                            ),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::Moments(v) => StageResult::Moments(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitMoments.fit")?,
                            f.features
                                .into_iter()
                                .map(|m| Moments {
                                    n: m.n,
                                    mean: m.mean,
                                    m2: m.m2,
                                })
                                .collect(),
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::Lasso(v) => StageResult::Lasso(
                v.fits
                    .into_iter()
                    .map(|f| {
                        Ok((
                            fit_from(f.fit, "FitLassoSums.fit")?,
                            cl::sums_from(
                                f.sums.ok_or(ConvertError::Missing("FitLassoSums.sums"))?,
                            )?,
                        ))
                    })
                    .collect::<Result<_>>()?,
            ),
            Stage::Trained(v) => StageResult::Trained(
                v.fits
                    .into_iter()
                    .map(outcome_from)
                    .collect::<Result<_>>()?,
            ),
            Stage::Relayed(a) => StageResult::Relayed {
                fits: a.fits,
                rows: a.rows,
            },
            Stage::Fit(f) => StageResult::Fit {
                mlp: f
                    .mlp
                    .into_iter()
                    .map(|s| {
                        Ok((
                            fit_from(s.fit, "FitMlpSums.fit")?,
                            LossGradSum {
                                loss_sum: s.loss_sum,
                                grad_sum: crate::convert::from_f64_le(
                                    "FitMlpSums.grad_sum",
                                    &s.grad_sum,
                                )?,
                                n: s.n,
                            },
                        ))
                    })
                    .collect::<Result<_>>()?,
                clinical: f
                    .clinical
                    .into_iter()
                    .map(logistic_from)
                    .collect::<Result<_>>()?,
            },
            Stage::Scored(a) => StageResult::Scored {
                fits: a.fits,
                rows: a.rows,
            },
            Stage::Metrics(m) => StageResult::Metrics(cpm::result_from(m)?),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::ConvertError;
    use federation::ids::{StudyHash, StudyId};
    use federation::pipeline::metrics::{MetricsResult, MetricsTask, ScoreRelease};
    use federation::task::{ResultBody, Task, TaskBody, TaskResult};
    use learners::svm::{PlattMode, SvmParams, fit_svm};
    use models::combat::{
        BatchAdjustment, ComBatCrossProducts, ComBatFit, ComBatGlobal, ComBatOptions,
        ComBatResiduals, CovariateKind, CovariateSpec, DesignSpec, EbMode, SiteLevels,
    };
    use models::lasso::{FitRequest, FitSums, IrlsSums, MomentSums, RequestKind};
    use models::sampling::{FoldRef, WeightSpec};
    use prost::Message;

    // Values whose bits a lossy path would change: not representable in decimal, extremes,
    // subnormals and a negative zero (which `==` cannot tell from +0, hence `same_bits`). −0.0
    // is only used in repeated fields: see `singular_negative_zero_arrives_as_positive_zero`.
    const A: f64 = 0.1 + 0.2;
    const TINY: f64 = 5e-324;
    const HUGE: f64 = f64::MAX;
    const NEG0: f64 = -0.0;

    fn fit(repeat: u32, fold: u32) -> FitId {
        FitId { repeat, fold }
    }

    /// `Debug` prints every f64 in its shortest round-trip form and keeps the sign of zero, so
    /// equal `Debug` output means bit-equal floats.
    fn same_bits<T: std::fmt::Debug + PartialEq>(a: &T, b: &T) {
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    fn design() -> DesignSpec {
        DesignSpec {
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
        }
    }

    fn combat_fit() -> ComBatFit {
        ComBatFit {
            spec: design(),
            beta: ndarray::Array2::from_shape_vec(
                (4, 2),
                vec![A, 2.0, -3.5, TINY, 5.0, NEG0, 7.0, 0.1],
            )
            .unwrap(),
            grand_mean: vec![0.5, -1.25e-7],
            batch_n: vec![7, 9],
            n: 16,
            unadjusted: vec![false, true],
        }
    }

    fn global() -> ComBatGlobal {
        ComBatGlobal {
            fit: combat_fit(),
            var_pooled: vec![2.0, A * 3.0],
        }
    }

    fn adjustment() -> BatchAdjustment {
        BatchAdjustment {
            batch: "S01".into(),
            n: 12,
            gamma_hat: vec![0.1, -A],
            delta_hat: vec![1.1, 0.9],
            gamma_bar: 0.1,
            tau2: 0.01,
            a_prior: Some(3.0),
            b_prior: None,
            gamma_star: vec![0.09, -0.29],
            delta_star: vec![1.05, 0.95],
            iterations: 4,
        }
    }

    fn forest() -> ForestModel {
        let node = |feature, threshold, left, right, value| Node {
            feature,
            threshold,
            left,
            right,
            value,
        };
        ForestModel {
            params: ForestParams {
                n_trees: 2,
                max_depth: Some(3),
                max_features: 0.5,
                min_samples_split: 2,
                min_samples_leaf: 1,
                bootstrap: true,
            },
            n_features: 3,
            trees: vec![
                Tree {
                    nodes: vec![
                        node(2, A, 1, 2, 0.4),
                        node(LEAF, 0.0, LEAF, LEAF, 1.0 / 3.0),
                        node(LEAF, 0.0, LEAF, LEAF, 0.75),
                    ],
                },
                Tree {
                    nodes: vec![node(LEAF, 0.0, LEAF, LEAF, 0.5)],
                },
            ],
        }
    }

    fn gbm() -> GbmModel {
        let node = |feature, threshold, left, right, value, loss_chg, cover| GNode {
            feature,
            threshold,
            left,
            right,
            value,
            loss_chg,
            cover,
        };
        GbmModel {
            params: GbmParams {
                base_score: Some(A),
                ..GbmParams::default()
            },
            n_features: 3,
            base_margin: -0.2,
            trees: vec![RegTree {
                nodes: vec![
                    node(0, -1.5, 1, 4, 0.01, 2.5, 3.0),
                    node(1, TINY, 2, 3, -0.02, 0.5, 1.25),
                    node(LEAF, 0.0, LEAF, LEAF, -0.03, 0.0, 0.5),
                    node(LEAF, 0.0, LEAF, LEAF, NEG0, 0.0, 0.75),
                    node(LEAF, 0.0, LEAF, LEAF, 0.3, 0.0, 1.75),
                ],
            }],
        }
    }

    fn svm() -> SvmModel {
        let mut x = ndarray::Array2::zeros((30, 3));
        let mut y = Vec::new();
        for i in 0..30 {
            let (a, b) = ((i as f64 * 0.7).sin() * 2.0, (i as f64 * 1.3).cos() * 2.0);
            x[[i, 0]] = a;
            x[[i, 1]] = b;
            x[[i, 2]] = a * b / 3.0;
            y.push(a * a + b * b < 2.0);
        }
        let p = SvmParams { c: 1.0, gamma: 0.5 };
        fit_svm(x.view(), &y, &p, PlattMode::InSample, 0).unwrap()
    }

    fn shared() -> Vec<SharedModel> {
        vec![
            SharedModel {
                site: "S02".into(),
                n_train: 30,
                model: TrainedModel::Svm(svm()),
            },
            SharedModel {
                site: "S02".into(),
                n_train: 30,
                model: TrainedModel::Forest(forest()),
            },
            SharedModel {
                site: "S03".into(),
                n_train: 17,
                model: TrainedModel::Gbm(gbm()),
            },
        ]
    }

    fn lasso_requests() -> Vec<FitRequest> {
        vec![
            FitRequest {
                fit_id: 7,
                weights: WeightSpec {
                    outer: Some(FoldRef { scheme: 1, fold: 2 }),
                    exclude: None,
                    bootstrap: Some((99, 3)),
                },
                kind: RequestKind::Irls {
                    mean: vec![A, NEG0],
                    sd: vec![1.5, TINY],
                    beta0: -0.25,
                    beta: vec![0.0, HUGE],
                    hessian: true,
                    cols: Some(vec![1]),
                    eval_only: false,
                    basis: Some(0),
                    send_basis: true,
                },
            },
            FitRequest {
                fit_id: 8,
                weights: WeightSpec::default(),
                kind: RequestKind::Moments,
            },
        ]
    }

    fn stage_tasks() -> Vec<StageTask> {
        vec![
            StageTask::ComBat {
                round: 3,
                fits: vec![
                    FitComBat {
                        fit: fit(0, 1),
                        design: Some(design()),
                        regression: Some(combat_fit()),
                        global: Some(global()),
                    },
                    FitComBat {
                        fit: fit(0, 2),
                        design: None,
                        regression: None,
                        global: None,
                    },
                ],
            },
            StageTask::Moments {
                models: vec![(
                    fit(4, 0),
                    ComBatModel {
                        global: global(),
                        options: ComBatOptions {
                            mode: EbMode::NonParametric,
                            mean_only: true,
                            tol: 1e-7,
                            max_iter: 77,
                        },
                        batches: vec![adjustment()],
                    },
                )],
            },
            StageTask::Lasso {
                standardizers: vec![(
                    fit(1, 3),
                    Standardizer {
                        n: 93,
                        mean: vec![A, -1e-300],
                        sd: vec![TINY, HUGE],
                        convention: VarianceConvention::Sample,
                    },
                )],
                requests: vec![(fit(1, 3), lasso_requests()), (fit(1, 4), vec![])],
            },
            StageTask::Lasso {
                standardizers: vec![],
                requests: vec![(fit(2, 0), lasso_requests())],
            },
            StageTask::Train {
                selected: vec![(fit(0, 0), vec![0, 5, 55]), (fit(0, 1), vec![])],
            },
            StageTask::Relay {
                models: vec![(fit(0, 0), shared()), (fit(0, 1), vec![])],
            },
            StageTask::Fit {
                mlp: vec![MlpRequest {
                    fit: fit(9, 4),
                    weights: vec![A, NEG0, -HUGE, TINY],
                }],
                clinical: vec![(fit(9, 4), vec![-0.5, A, 1e-17])],
            },
            StageTask::Score {
                mlp: vec![(fit(9, 3), vec![0.25, -A])],
                clinical: vec![(fit(9, 3), vec![2.0]), (fit(9, 4), vec![])],
            },
            StageTask::Columns,
        ]
    }

    fn stage_results() -> Vec<StageResult> {
        vec![
            StageResult::ComBatLevels(vec![(
                fit(0, 1),
                SiteLevels {
                    batches: vec!["S01".into()],
                    levels: vec![vec![], vec!["G1".into()]],
                },
            )]),
            StageResult::ComBatCrossProducts(vec![(
                fit(0, 1),
                ComBatCrossProducts {
                    n: 12,
                    wtw: vec![12.0, A, 600.5],
                    wty: vec![1.0, NEG0],
                    constant_in_batch: vec![false, true],
                },
            )]),
            StageResult::ComBatResiduals(vec![(
                fit(0, 1),
                ComBatResiduals {
                    n: 12,
                    rss: vec![3.25, TINY],
                },
            )]),
            StageResult::ComBatEstimates(vec![
                (fit(0, 1), vec![adjustment()]),
                (fit(0, 2), vec![]),
            ]),
            StageResult::Moments(vec![(
                fit(3, 3),
                vec![
                    Moments {
                        n: 11,
                        mean: A,
                        m2: 4.5,
                    },
                    Moments {
                        n: 11,
                        mean: -1e-300,
                        m2: TINY,
                    },
                ],
            )]),
            StageResult::Lasso(vec![(
                fit(1, 3),
                vec![
                    FitSums::Moments(MomentSums {
                        fit_id: 8,
                        sum_w: 14.0,
                        sum_wy: 6.0,
                        features: vec![models::WeightedMoments {
                            w: 14.0,
                            mean: A,
                            m2: 2.5,
                        }],
                    }),
                    FitSums::Irls(IrlsSums {
                        fit_id: 7,
                        sum_w: 13.0,
                        loss: 8.5,
                        r0: -0.5,
                        rx: vec![0.25, NEG0],
                        w0: 3.0,
                        wx: vec![A, 1.0],
                        hess: vec![1.0, 0.5, 2.0],
                        hess_factor: vec![],
                        hess_basis: vec![2.0, HUGE, 0.125],
                        basis_r: vec![A, NEG0, TINY],
                        heldout_w: 2.0,
                        heldout_dev: 1.75,
                    }),
                    FitSums::Refused(Refusal {
                        fit_id: 9,
                        params: 57,
                        rows: 10,
                        max_params_per_row: 0.2,
                    }),
                ],
            )]),
            StageResult::Trained(vec![
                (
                    fit(0, 0),
                    TrainOutcome {
                        n_train: 30,
                        refused: None,
                        shared: shared(),
                    },
                ),
                (
                    fit(0, 1),
                    TrainOutcome {
                        n_train: 4,
                        refused: Some("4 training rows, fewer than min_train_rows = 8".into()),
                        shared: vec![],
                    },
                ),
            ]),
            StageResult::Relayed { fits: 5, rows: 61 },
            StageResult::Fit {
                mlp: vec![(
                    fit(9, 4),
                    LossGradSum {
                        loss_sum: A * 10.0,
                        grad_sum: vec![NEG0, -TINY, 0.5, HUGE],
                        n: 13,
                    },
                )],
                clinical: vec![
                    (
                        fit(9, 4),
                        LogisticReply::Sums(LogisticSums {
                            fit_id: 0,
                            rows: 13,
                            sum_w: 13.0,
                            loglik: -7.25,
                            score: vec![0.5, -A],
                            info: vec![3.0, 0.25, 1.5],
                        }),
                    ),
                    (
                        fit(9, 3),
                        LogisticReply::Refused(Refusal {
                            fit_id: 1,
                            params: 6,
                            rows: 2,
                            max_params_per_row: 1.0,
                        }),
                    ),
                ],
            },
            StageResult::Scored { fits: 5, rows: 12 },
            StageResult::Columns(ColumnReport {
                numeric: vec!["f1".into(), "ki67".into()],
                incomplete: vec!["f2".into()],
                text: vec!["sex".into()],
            }),
        ]
    }

    fn task_of(stage: StageTask) -> Task {
        Task {
            study_id: StudyId::new("p1").unwrap(),
            study_hash: StudyHash("ab".into()),
            study_spec_json: "{}".into(),
            round: 17,
            body: TaskBody::Pipeline(PipelineTask {
                site: "S01".into(),
                batch: 3,
                features: vec!["f 1".into(), "original_glcm_Idm".into()],
                stage,
            }),
        }
    }

    fn result_of(stage: StageResult) -> TaskResult {
        TaskResult {
            study_id: StudyId::new("p1").unwrap(),
            round: 17,
            body: ResultBody::Pipeline(stage),
        }
    }

    fn through_bytes_task(t: &Task) -> Result<Task> {
        let bytes = pb::Task::from(t).encode_to_vec();
        Task::try_from(pb::Task::decode(bytes.as_slice()).unwrap())
    }

    fn through_bytes_result(r: &TaskResult) -> Result<TaskResult> {
        let bytes = pb::TaskResult::from(r).encode_to_vec();
        TaskResult::try_from(pb::TaskResult::decode(bytes.as_slice()).unwrap())
    }

    #[test]
    fn every_task_stage_round_trips_bit_exactly() {
        let mut names = Vec::new();
        for stage in stage_tasks() {
            names.push(stage.name());
            let t = task_of(stage);
            same_bits(&through_bytes_task(&t).unwrap(), &t);
        }
        // Every stage but the metrics stage (not ours yet) is covered.
        for s in [
            "columns", "combat", "zscore", "lasso", "train", "relay", "meta-fit", "score",
        ] {
            assert!(names.contains(&s), "no round trip for {s}");
        }
    }

    #[test]
    fn every_result_stage_round_trips_bit_exactly() {
        let mut names = Vec::new();
        for stage in stage_results() {
            names.push(stage.name());
            let r = result_of(stage);
            same_bits(&through_bytes_result(&r).unwrap(), &r);
        }
        for s in [
            "combat_levels",
            "combat_cross_products",
            "combat_residuals",
            "combat_estimates",
            "moments",
            "lasso_sums",
            "trained",
            "relayed",
            "meta_fit_sums",
            "scored",
            "columns",
        ] {
            assert!(names.contains(&s), "no round trip for {s}");
        }
    }

    /// A known proto3 limit, stated so nobody relies on the opposite: a singular `double` equal
    /// to the default 0 is not written (implicit presence), and −0.0 == 0, so −0.0 arrives as
    /// +0.0. Repeated (packed) doubles are written verbatim and keep it.
    #[test]
    fn singular_negative_zero_arrives_as_positive_zero() {
        let r = StageResult::Fit {
            mlp: vec![(
                fit(0, 0),
                LossGradSum {
                    loss_sum: NEG0,
                    grad_sum: vec![NEG0],
                    n: 0,
                },
            )],
            clinical: vec![],
        };
        let back = through_bytes_result(&result_of(r)).unwrap();
        let ResultBody::Pipeline(StageResult::Fit { mlp, .. }) = back.body else {
            panic!()
        };
        assert_eq!(mlp[0].1.loss_sum.to_bits(), 0.0f64.to_bits());
        assert_eq!(mlp[0].1.grad_sum[0].to_bits(), NEG0.to_bits());
    }

    #[test]
    fn relayed_models_predict_the_same_after_the_trip() {
        let x = ndarray::Array2::from_shape_fn((7, 3), |(i, j)| (i as f64 - 3.0) * 0.6 + j as f64);
        let StageTask::Relay { models } = &stage_tasks()[5] else {
            panic!("stage order changed")
        };
        let t = task_of(StageTask::Relay {
            models: models.clone(),
        });
        let back = through_bytes_task(&t).unwrap();
        let TaskBody::Pipeline(PipelineTask {
            stage: StageTask::Relay { models: got },
            ..
        }) = back.body
        else {
            panic!("not a relay task")
        };
        for (a, b) in models[0].1.iter().zip(&got[0].1) {
            use learners::ProbabilisticModel;
            let (pa, pb) = (
                a.model.predict_proba(x.view()).unwrap(),
                b.model.predict_proba(x.view()).unwrap(),
            );
            assert_eq!(
                pa.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                pb.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    /// The pipeline part of an encoded task, for tampering.
    fn pb_stage(t: &Task) -> pb::PipelineTask {
        match pb::Task::from(t).body {
            Some(pb::task::Body::Pipeline(p)) => p,
            other => panic!("{other:?}"),
        }
    }

    fn pb_result(r: &StageResult) -> pb::PipelineResult {
        result_to(r).unwrap()
    }

    fn forest_of(m: &mut pb::SharedModel) -> Option<&mut pb::ForestModel> {
        match m.model.as_mut()?.model.as_mut()? {
            pb::trained_model::Model::Forest(f) => Some(f),
            _ => None,
        }
    }

    fn gbm_of(m: &mut pb::SharedModel) -> Option<&mut pb::GbmModel> {
        match m.model.as_mut()?.model.as_mut()? {
            pb::trained_model::Model::Gbm(g) => Some(g),
            _ => None,
        }
    }

    fn svm_of(m: &mut pb::SharedModel) -> Option<&mut pb::SvmModel> {
        match m.model.as_mut()?.model.as_mut()? {
            pb::trained_model::Model::Svm(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn missing_and_malformed_fields_are_named() {
        use pb::pipeline_result::Stage as R;
        use pb::pipeline_task::Stage as T;
        let tasks = stage_tasks();
        let results = stage_results();
        let task = |i: usize| pb_stage(&task_of(tasks[i].clone()));
        let err_t = |p: pb::PipelineTask| task_from(p).unwrap_err();

        // A missing oneof.
        let mut p = task(0);
        p.stage = None;
        assert_eq!(err_t(p), ConvertError::Missing("PipelineTask.stage"));
        assert_eq!(
            result_from(pb::PipelineResult { stage: None }).unwrap_err(),
            ConvertError::Missing("PipelineResult.stage")
        );

        // A missing fit id, and a ComBat round that does not exist.
        let mut p = task(0);
        let Some(T::Combat(c)) = &mut p.stage else {
            panic!()
        };
        c.fits[1].fit = None;
        assert_eq!(err_t(p), ConvertError::Missing("FitComBat.fit"));
        let mut p = task(0);
        let Some(T::Combat(c)) = &mut p.stage else {
            panic!()
        };
        c.round = 4;
        assert_eq!(
            err_t(p),
            ConvertError::Range {
                field: "PipelineComBatTask.round",
                value: 4
            }
        );

        // ComBat model parts.
        let mut p = task(1);
        let Some(T::Moments(m)) = &mut p.stage else {
            panic!()
        };
        m.models[0].model.as_mut().unwrap().options = None;
        assert_eq!(err_t(p), ConvertError::Missing("ComBatModel.options"));

        // Standardizer: SDs of another length than the means; an unset convention.
        let mut p = task(2);
        let Some(T::Lasso(l)) = &mut p.stage else {
            panic!()
        };
        l.standardizers[0].standardizer.as_mut().unwrap().sd.pop();
        assert_eq!(
            err_t(p),
            ConvertError::Length {
                field: "Standardizer.sd",
                got: 1,
                expected: 2
            }
        );
        let mut p = task(2);
        let Some(T::Lasso(l)) = &mut p.stage else {
            panic!()
        };
        l.standardizers[0].standardizer.as_mut().unwrap().convention = 0;
        assert_eq!(err_t(p), ConvertError::Missing("Standardizer.convention"));

        // The LASSO requests keep their own strictness, and the pipeline refuses a site key.
        let mut p = task(2);
        let Some(T::Lasso(l)) = &mut p.stage else {
            panic!()
        };
        l.requests[0].requests.as_mut().unwrap().requests[0].kind = None;
        assert_eq!(err_t(p), ConvertError::Missing("FitRequest.kind"));
        let mut p = task(2);
        let Some(T::Lasso(l)) = &mut p.stage else {
            panic!()
        };
        l.requests[0].requests.as_mut().unwrap().site_key = 5;
        assert_eq!(
            err_t(p),
            ConvertError::Range {
                field: "FitLassoRequests.requests.site_key",
                value: 5
            }
        );

        // Shared models: a missing oneof, wrong column lengths, a child before its parent, a
        // feature out of range, an SVM whose JSON is not the model or disagrees with itself.
        let relay = |f: &dyn Fn(&mut pb::SharedModel)| {
            let mut p = task(5);
            let Some(T::Relay(r)) = &mut p.stage else {
                panic!()
            };
            for m in &mut r.models[0].models {
                f(m);
            }
            err_t(p)
        };
        assert_eq!(
            relay(&|m| m.model = None),
            ConvertError::Missing("SharedModel.model")
        );
        assert_eq!(
            relay(&|m| {
                if let Some(f) = forest_of(m) {
                    f.trees[0].threshold.pop();
                }
            }),
            ConvertError::Length {
                field: "ForestTree.threshold",
                got: 2,
                expected: 3
            }
        );
        assert!(matches!(
            relay(&|m| if let Some(f) = forest_of(m) {
                f.trees[0].feature[0] = 3;
            }),
            ConvertError::Invalid {
                field: "ForestTree.feature",
                ..
            }
        ));
        assert!(matches!(
            relay(&|m| if let Some(f) = forest_of(m) {
                f.trees[1].feature.clear();
                f.trees[1].threshold.clear();
                f.trees[1].left.clear();
                f.trees[1].right.clear();
                f.trees[1].value.clear();
            }),
            ConvertError::Invalid {
                field: "ForestTree.feature",
                ..
            }
        ));
        assert!(matches!(
            relay(&|m| if let Some(g) = gbm_of(m) {
                g.trees[0].left[1] = 0;
            }),
            ConvertError::Invalid {
                field: "GbmTree.left",
                ..
            }
        ));
        assert!(matches!(
            relay(&|m| if let Some(g) = gbm_of(m) {
                g.trees[0].right[0] = 5;
            }),
            ConvertError::Invalid {
                field: "GbmTree.right",
                ..
            }
        ));
        assert_eq!(
            relay(&|m| {
                if let Some(g) = gbm_of(m) {
                    g.trees[0].cover.push(1.0);
                }
            }),
            ConvertError::Length {
                field: "GbmTree.cover",
                got: 6,
                expected: 5
            }
        );
        assert!(matches!(
            relay(&|m| if let Some(s) = svm_of(m) {
                s.model_json.truncate(40);
            }),
            ConvertError::Invalid {
                field: "SvmModel.model_json",
                ..
            }
        ));
        let e = relay(&|m| {
            if let Some(s) = svm_of(m) {
                let mut v: serde_json::Value = serde_json::from_slice(&s.model_json).unwrap();
                v["n_features"] = 2.into();
                s.model_json = serde_json::to_vec(&v).unwrap();
            }
        });
        assert!(
            e.to_string()
                .contains("the support vectors have 3 columns, the model declares 2 features"),
            "{e}"
        );

        // Results: a missing part, an information matrix of the wrong size, a missing reply.
        let mut r = pb_result(&results[1]);
        let Some(R::CombatCrossProducts(c)) = &mut r.stage else {
            panic!()
        };
        c.fits[0].cross_products = None;
        assert_eq!(
            result_from(r).unwrap_err(),
            ConvertError::Missing("FitComBatCrossProducts.cross_products")
        );
        let mut r = pb_result(&results[8]);
        let Some(R::Fit(f)) = &mut r.stage else {
            panic!()
        };
        if let Some(pb::fit_logistic_reply::Reply::Sums(s)) = &mut f.clinical[0].reply {
            s.info.pop();
        }
        assert_eq!(
            result_from(r).unwrap_err(),
            ConvertError::Length {
                field: "LogisticSums.info",
                got: 2,
                expected: 3
            }
        );
        let mut r = pb_result(&results[8]);
        let Some(R::Fit(f)) = &mut r.stage else {
            panic!()
        };
        f.clinical[1].reply = None;
        assert_eq!(
            result_from(r).unwrap_err(),
            ConvertError::Missing("FitLogisticReply.reply")
        );
        let mut r = pb_result(&results[5]);
        let Some(R::Lasso(l)) = &mut r.stage else {
            panic!()
        };
        l.fits[0].sums.as_mut().unwrap().fits[1].sums = None;
        assert_eq!(
            result_from(r).unwrap_err(),
            ConvertError::Missing("FitSums.sums")
        );
    }

    #[test]
    fn metrics_stage_crosses_the_wire() {
        // Every variant's own round trip is in `convert_pipeline_metrics`; here the stage slot.
        let t = task_of(StageTask::Metrics(MetricsTask::Scores { bins: 20 }));
        assert_eq!(through_bytes_task(&t).unwrap(), t);
        let r = result_of(StageResult::Metrics(MetricsResult::Scores {
            ml: ScoreRelease::Rows {
                probs: vec![0.25],
                labels: vec![true],
            },
            clinical: None,
            unscored: 0,
        }));
        assert_eq!(through_bytes_result(&r).unwrap(), r);
    }
}
