//! The three base-learner types and a serialisable fitted model of any of them.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::forest::ForestModel;
use crate::gbm::GbmModel;
use crate::plan::ProbabilisticModel;
use crate::svm::SvmModel;

/// Base-learner type; also the column order of the stacking meta-features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LearnerKind {
    Svm,
    Forest,
    Gbm,
}

impl LearnerKind {
    /// The study's learners, in meta-feature column order.
    pub const ALL: [LearnerKind; 3] = [LearnerKind::Svm, LearnerKind::Forest, LearnerKind::Gbm];

    pub fn name(self) -> &'static str {
        match self {
            LearnerKind::Svm => "svm",
            LearnerKind::Forest => "random_forest",
            LearnerKind::Gbm => "gradient_boosting",
        }
    }

    pub(crate) fn tag(self) -> u64 {
        match self {
            LearnerKind::Svm => 1,
            LearnerKind::Forest => 2,
            LearnerKind::Gbm => 3,
        }
    }
}

/// A fitted base learner. Scoring is a pure function of (model, rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TrainedModel {
    Svm(SvmModel),
    Forest(ForestModel),
    Gbm(GbmModel),
}

impl TrainedModel {
    pub fn kind(&self) -> LearnerKind {
        match self {
            TrainedModel::Svm(_) => LearnerKind::Svm,
            TrainedModel::Forest(_) => LearnerKind::Forest,
            TrainedModel::Gbm(_) => LearnerKind::Gbm,
        }
    }
}

impl ProbabilisticModel for TrainedModel {
    fn n_features(&self) -> usize {
        match self {
            TrainedModel::Svm(m) => m.n_features(),
            TrainedModel::Forest(m) => m.n_features(),
            TrainedModel::Gbm(m) => m.n_features(),
        }
    }
    fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Vec<f64>> {
        match self {
            TrainedModel::Svm(m) => m.predict_proba(x),
            TrainedModel::Forest(m) => m.predict_proba(x),
            TrainedModel::Gbm(m) => m.predict_proba(x),
        }
    }
}
