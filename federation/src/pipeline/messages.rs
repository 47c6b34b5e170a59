//! What the aggregator asks a site at each stage of a pipeline study, and what the site answers
//! (domain types; the protobuf mirrors are in `protocol`).
//!
//! Every stage carries all outer fits of the current batch of repeats, so round trips grow with
//! the number of batches and the optimisers' iterations, not with the number of fits. What each
//! answer reveals is listed on its variant.

use super::metrics::{MetricsResult, MetricsTask};
use learners::FitId;
use learners::driver::MlpRequest;
use learners::mlp::LossGradSum;
use learners::site::SharedModel;
use models::combat::{
    BatchAdjustment, ComBatCrossProducts, ComBatFit, ComBatGlobal, ComBatModel, ComBatResiduals,
    DesignSpec, SiteLevels,
};
use models::lasso::{FitRequest, FitSums};
use models::logistic::LogisticReply;
use models::standardize::Standardizer;
use serde::{Deserialize, Serialize};
use stats::Moments;

/// One round's work for one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineTask {
    /// The site's own id (it seeds the site's folds and learners; the site checks it is its own).
    pub site: String,
    /// Index of the current batch of repeats (0-based).
    pub batch: u32,
    /// The feature columns resolved at the start of the study, when the study file omits
    /// `features` (every round after the [`StageTask::Columns`] round carries them, so the site
    /// keeps no copy); empty when the study file lists them.
    #[serde(default)]
    pub features: Vec<String>,
    pub stage: StageTask,
}

/// The per-stage request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageTask {
    /// Before the first batch, when the study file omits `features`: the names of the site's
    /// columns by kind (no values, no counts), from which the aggregator resolves the features.
    Columns,
    /// ComBat round `round` (0 levels, 1 cross-products, 2 residuals, 3 estimate) of every fit,
    /// on each fit's outer training rows.
    ComBat { round: u8, fits: Vec<FitComBat> },
    /// The fitted ComBat models (the site keeps them); answer the moments of the harmonised
    /// training rows for the z-score.
    Moments { models: Vec<(FitId, ComBatModel)> },
    /// LASSO sums of every fit's current sub-fits; `standardizers` is sent once, in the first
    /// LASSO round of the batch (the site keeps them).
    Lasso {
        standardizers: Vec<(FitId, Standardizer)>,
        requests: Vec<(FitId, Vec<FitRequest>)>,
    },
    /// Train the base learners on the selected features (indices into the feature list).
    Train { selected: Vec<(FitId, Vec<usize>)> },
    /// The other sites' shared models per fit: build the meta-features (training and validation
    /// rows) and keep them.
    Relay {
        models: Vec<(FitId, Vec<SharedModel>)>,
    },
    /// One round of the meta-model's and the clinical comparator's optimisers: MLP weights and
    /// clinical coefficients (intercept first) per fit.
    Fit {
        mlp: Vec<MlpRequest>,
        clinical: Vec<(FitId, Vec<f64>)>,
    },
    /// The fitted meta-models and clinical coefficients: score the validation rows and add them
    /// to each patient's average over repeats (kept at the site).
    Score {
        mlp: Vec<(FitId, Vec<f64>)>,
        clinical: Vec<(FitId, Vec<f64>)>,
    },
    /// After the last batch: the pooled metrics' rounds.
    Metrics(MetricsTask),
}

/// One fit's ComBat input: what earlier ComBat rounds established.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitComBat {
    pub fit: FitId,
    pub design: Option<DesignSpec>,
    pub regression: Option<ComBatFit>,
    pub global: Option<ComBatGlobal>,
}

/// The per-stage answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StageResult {
    /// The site's column names by kind (names only).
    Columns(ColumnReport),
    /// Batch labels and covariate levels present (no counts).
    ComBatLevels(Vec<(FitId, SiteLevels)>),
    /// W'W and W'Y over the fit's training rows (batch sizes ≥ min_count, as in `harmonize`).
    ComBatCrossProducts(Vec<(FitId, ComBatCrossProducts)>),
    /// Per-feature residual sums of squares.
    ComBatResiduals(Vec<(FitId, ComBatResiduals)>),
    /// The empirical-Bayes location/scale of each batch the site holds.
    ComBatEstimates(Vec<(FitId, Vec<BatchAdjustment>)>),
    /// (n, mean, M2) per feature of the harmonised training rows.
    Moments(Vec<(FitId, Vec<Moments>)>),
    /// LASSO weighted sums per fit (no rows).
    Lasso(Vec<(FitId, Vec<FitSums>)>),
    /// Per fit: trained or why not, and the models the site's policy lets it share.
    Trained(Vec<(FitId, TrainOutcome)>),
    /// How many fits now have meta-features, and the rows they cover.
    Relayed { fits: u32, rows: u32 },
    /// MLP loss/gradient sums and clinical IRLS sums over the training rows.
    Fit {
        mlp: Vec<(FitId, LossGradSum)>,
        clinical: Vec<(FitId, LogisticReply)>,
    },
    /// Validation rows scored (per-patient probabilities stay at the site).
    Scored { fits: u32, rows: u32 },
    /// Count tables (or, under `release_predictions`, rows) for the pooled metrics.
    Metrics(MetricsResult),
}

/// A site's columns, by name only, in its table's order; its patient-id column is left out.
/// Which kind a column is follows from its cells as a whole: no count or value is released.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ColumnReport {
    /// Every cell is a number.
    pub numeric: Vec<String>,
    /// Every present cell is a number but some are missing (empty, `NA`, `NaN`): the pipeline
    /// needs complete rows, so these cannot be features.
    pub incomplete: Vec<String>,
    /// Some cell is text (not a number and not missing).
    pub text: Vec<String>,
}

/// One fit's base-learner training at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// Outer training rows.
    pub n_train: u32,
    /// Why nothing was trained (too few rows, one class), when so.
    pub refused: Option<String>,
    /// Models the site shares (`share_models = true`); empty otherwise.
    pub shared: Vec<SharedModel>,
}

impl StageTask {
    pub fn name(&self) -> &'static str {
        match self {
            StageTask::Columns => "columns",
            StageTask::ComBat { .. } => "combat",
            StageTask::Moments { .. } => "zscore",
            StageTask::Lasso { .. } => "lasso",
            StageTask::Train { .. } => "train",
            StageTask::Relay { .. } => "relay",
            StageTask::Fit { .. } => "meta-fit",
            StageTask::Score { .. } => "score",
            StageTask::Metrics(_) => "metrics",
        }
    }
}

impl StageResult {
    /// One line for the site's audit log: what left the site.
    pub fn describe(&self) -> String {
        match self {
            StageResult::Columns(c) => format!(
                "names of this site's columns ({} numeric, {} with missing cells, {} text; no values, no counts)",
                c.numeric.len(),
                c.incomplete.len(),
                c.text.len()
            ),
            StageResult::ComBatLevels(v) => {
                format!("ComBat batch labels for {} fits; no counts", v.len())
            }
            StageResult::ComBatCrossProducts(v) => {
                format!("ComBat W'W and W'Y for {} fits (no rows)", v.len())
            }
            StageResult::ComBatResiduals(v) => {
                format!("ComBat residual sums of squares for {} fits", v.len())
            }
            StageResult::ComBatEstimates(v) => {
                format!("ComBat batch location/scale for {} fits", v.len())
            }
            StageResult::Moments(v) => {
                format!("feature moments (n, mean, M2) for {} fits", v.len())
            }
            StageResult::Lasso(v) => format!(
                "LASSO weighted sums for {} outer fits ({} sub-fits; no rows)",
                v.len(),
                v.iter().map(|(_, s)| s.len()).sum::<usize>()
            ),
            StageResult::Trained(v) => {
                let shared: usize = v.iter().map(|(_, t)| t.shared.len()).sum();
                let refused = v.iter().filter(|(_, t)| t.refused.is_some()).count();
                format!(
                    "base learners for {} fits: {refused} not trained here, {shared} fitted models shared (share_models)",
                    v.len()
                )
            }
            StageResult::Relayed { fits, .. } => {
                format!("acknowledged meta-features for {fits} fits (kept here)")
            }
            StageResult::Fit { mlp, clinical } => format!(
                "MLP loss/gradient sums for {} fits and clinical IRLS sums for {} fits (no rows)",
                mlp.len(),
                clinical.len()
            ),
            StageResult::Scored { fits, .. } => {
                format!("acknowledged scoring of {fits} fits (probabilities kept here)")
            }
            StageResult::Metrics(m) => m.describe(),
        }
    }

    /// Every patient count this answer discloses (checked against `min_count` by the site's
    /// single policy gate before anything is sent).
    pub fn released_counts(&self) -> Vec<u64> {
        match self {
            StageResult::ComBatCrossProducts(v) => v.iter().map(|(_, c)| c.n).collect(),
            StageResult::ComBatResiduals(v) => v.iter().map(|(_, r)| r.n).collect(),
            StageResult::ComBatEstimates(v) => {
                v.iter().flat_map(|(_, b)| b.iter().map(|b| b.n)).collect()
            }
            StageResult::Moments(v) => v.iter().flat_map(|(_, m)| m.first().map(|m| m.n)).collect(),
            StageResult::Metrics(m) => m.released_counts(),
            // Row counts of the CV partitions (training / validation rows of a fit) follow from
            // the site's size and the fold design alone, not from any patient's values.
            StageResult::Trained(_) | StageResult::Relayed { .. } | StageResult::Scored { .. } => {
                vec![]
            }
            StageResult::ComBatLevels(_) | StageResult::Lasso(_) | StageResult::Fit { .. } => {
                vec![]
            }
            // Names only.
            StageResult::Columns(_) => vec![],
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            StageResult::Columns(_) => "columns",
            StageResult::ComBatLevels(_) => "combat_levels",
            StageResult::ComBatCrossProducts(_) => "combat_cross_products",
            StageResult::ComBatResiduals(_) => "combat_residuals",
            StageResult::ComBatEstimates(_) => "combat_estimates",
            StageResult::Moments(_) => "moments",
            StageResult::Lasso(_) => "lasso_sums",
            StageResult::Trained(_) => "trained",
            StageResult::Relayed { .. } => "relayed",
            StageResult::Fit { .. } => "meta_fit_sums",
            StageResult::Scored { .. } => "scored",
            StageResult::Metrics(_) => "metrics",
        }
    }
}
