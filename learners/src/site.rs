//! A site's base-learner training for one outer fit: minimum-size checks, the three searches,
//! out-of-fold probabilities for its own training rows and the final refits.

use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, check_xy, param};
use crate::model::{LearnerKind, TrainedModel};
use crate::search::{self, LearnerParams, SearchConfig, SearchResult, fit_learner};

/// When a site is too small to train, and the search itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteTrainingConfig {
    /// Fewest outer training rows a site trains on (default 10).
    pub min_train_rows: usize,
    /// Fewest rows of each class (default 2: then every inner training part of a stratified
    /// split holds both classes).
    pub min_per_class: usize,
    pub search: SearchConfig,
}

impl Default for SiteTrainingConfig {
    fn default() -> Self {
        Self {
            min_train_rows: 10,
            min_per_class: 2,
            search: SearchConfig::default(),
        }
    }
}

/// Why a site trained nothing. A refused site still receives meta-features from the others'
/// models (DESIGN §4 step 5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Refusal {
    #[error("only {rows} training rows, fewer than min_train_rows = {min}")]
    TooFewRows { rows: usize, min: usize },
    #[error("all {rows} training rows are {}", if *positive { "responders" } else { "non-responders" })]
    SingleClass { rows: usize, positive: bool },
    #[error(
        "{positives} responders and {negatives} non-responders: each class needs at least min_per_class = {min}"
    )]
    TooFewInClass {
        positives: usize,
        negatives: usize,
        min: usize,
    },
}

/// One trained learner at a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearnerFit {
    pub params: LearnerParams,
    pub model: TrainedModel,
    /// The search, including the winner's OOF probabilities (per-patient: stays at the site).
    pub search: SearchResult,
}

/// Everything a site trained for one outer fit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteModels {
    pub n_train: usize,
    /// In [`LearnerKind::ALL`] order.
    pub learners: Vec<LearnerFit>,
}

/// A model as relayed to other sites (`share_models`): no per-patient values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedModel {
    pub site: String,
    /// Training rows it was fitted on: its weight in the meta-features.
    pub n_train: usize,
    pub model: TrainedModel,
}

impl SiteModels {
    /// The out-of-fold probabilities of `kind` for the training rows (training-row order).
    pub fn oof(&self, kind: LearnerKind) -> Option<&[f64]> {
        self.learners
            .iter()
            .find(|l| l.model.kind() == kind)
            .map(|l| l.search.oof.as_slice())
    }

    /// The models without per-patient values, ready to relay.
    pub fn shareable(&self, site: &str) -> Vec<SharedModel> {
        self.learners
            .iter()
            .map(|l| SharedModel {
                site: site.to_string(),
                n_train: self.n_train,
                model: l.model.clone(),
            })
            .collect()
    }
}

/// Trained or refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SiteOutcome {
    Trained(SiteModels),
    Refused(Refusal),
}

/// Checks the size rules; `Some(reason)` if the site must not train.
pub fn refusal(y: &[bool], config: &SiteTrainingConfig) -> Option<Refusal> {
    let positives = y.iter().filter(|&&v| v).count();
    let negatives = y.len() - positives;
    if y.len() < config.min_train_rows {
        return Some(Refusal::TooFewRows {
            rows: y.len(),
            min: config.min_train_rows,
        });
    }
    if positives == 0 || negatives == 0 {
        return Some(Refusal::SingleClass {
            rows: y.len(),
            positive: positives > 0,
        });
    }
    if positives < config.min_per_class || negatives < config.min_per_class {
        return Some(Refusal::TooFewInClass {
            positives,
            negatives,
            min: config.min_per_class,
        });
    }
    None
}

/// Trains the three learners on a site's outer training rows `x`, `y` with inner folds
/// `inner_fold` (from [`crate::plan::SiteFit::inner_fold`]). `seed` should be unique per
/// (study, repeat, fold, site), e.g. [`fit_seed`].
pub fn train_site(
    x: ArrayView2<f64>,
    y: &[bool],
    inner_fold: &[u32],
    config: &SiteTrainingConfig,
    seed: u64,
) -> Result<SiteOutcome> {
    check_xy("site training", x, y.len())?;
    config.search.validate()?;
    if config.min_per_class < 1 {
        return Err(param("min_per_class", 0, "must be at least 1"));
    }
    if let Some(r) = refusal(y, config) {
        return Ok(SiteOutcome::Refused(r));
    }
    if inner_fold.len() != y.len() {
        return Err(LearnerError::LengthMismatch {
            what: "inner folds",
            rows: inner_fold.len(),
            labels: y.len(),
        });
    }
    let mut learners = Vec::new();
    for kind in LearnerKind::ALL {
        let result = search::search(kind, x, y, inner_fold, &config.search, seed)?;
        let params = result.candidates[result.best].params;
        let model = fit_learner(
            x,
            y,
            &params,
            config.search.platt,
            search::refit_seed(seed, kind),
        )?;
        learners.push(LearnerFit {
            params,
            model,
            search: result,
        });
    }
    Ok(SiteOutcome::Trained(SiteModels {
        n_train: y.len(),
        learners,
    }))
}

/// The learner seed of one site's outer fit: `derive_seed(scheme_seed, [FIT, repeat, fold,
/// str_tag(site)])`.
pub fn fit_seed(scheme_seed: u64, fit: crate::plan::FitId, site: &str) -> u64 {
    crate::rng::derive_seed(
        scheme_seed,
        &[
            crate::rng::tag::FIT,
            u64::from(fit.repeat),
            u64::from(fit.fold),
            crate::rng::str_tag(site),
        ],
    )
}
