//! Base learners, stacking and the federated MLP meta-model of the fedrad nested cross-validation.
//!
//! Pure: no IO, no clock, no threads; every random choice comes from a seed derived as described
//! in [`rng`], so the same inputs give the same bits.
//!
//! Where each step runs (DESIGN.md §4, steps 2, 5, 6):
//! - [`folds`], [`plan`]: each site assigns its own patients to outer/inner folds from
//!   (seed, repeat, site id); the aggregator only needs the list of [`plan::FitId`]s.
//! - [`site`]: a site trains SVM ([`svm`]), random forest ([`forest`]) and XGBoost-style boosting
//!   ([`gbm`]) on its own training rows with inner-CV random search ([`search`]); out-of-fold
//!   probabilities stay at the site; the serialisable models may be relayed (`share_models`).
//! - [`stacking`]: a patient's meta-feature per learner type = training-size-weighted mean over
//!   the available sites' models (own model: out-of-fold).
//! - [`mlp`], [`lbfgs`], [`driver`]: the MLP meta-model fitted by exact federated full-batch
//!   L-BFGS; the site half returns loss/gradient sums, the aggregator half steps the optimiser for
//!   every (repeat, fold) fit at once.

pub mod driver;
pub mod error;
pub mod folds;
pub mod forest;
pub mod gbm;
pub mod lbfgs;
pub mod metrics;
pub mod mlp;
pub mod model;
pub mod plan;
pub mod rng;
pub mod search;
pub mod site;
pub mod stacking;
pub mod svm;

pub use error::{LearnerError, Result};
pub use model::{LearnerKind, TrainedModel};
pub use plan::{CvScheme, FitId, OuterAverager, ProbabilisticModel, SiteFit, SitePlan};
