//! Hyper-parameter random search by inner stratified K-fold cross-validation.
//!
//! A search space declares, per hyper-parameter, a fixed value, a uniform / log-uniform / integer
//! range or a list of choices (serde, so it can sit in the study TOML). Candidate `c` of learner
//! `kind` draws its values, in the field order of the space, from
//! `derive_seed(seed, [SEARCH, kind, c])`; so the candidates depend only on the seed, never on
//! the data.
//!
//! Each candidate is fitted on every inner training part and predicts the held-out inner fold;
//! the held-out probabilities of all folds are pooled into one out-of-fold (OOF) vector and scored
//! on it. Selection metric: **AUC of the pooled OOF probabilities** by default (the study's
//! headline metric; pooling instead of averaging per-fold AUCs because an inner fold at a small
//! site holds a handful of patients, often of one class), ties broken by lower log-loss, then by
//! the earlier candidate. [`SelectionMetric::LogLoss`] selects by the pooled OOF log-loss instead
//! (ties: higher AUC, then earlier candidate). The winner's OOF vector is the site's out-of-fold
//! meta-feature for its own training rows. (The same inner folds choose the hyper-parameters and
//! produce these OOF values, as in scikit-learn's `cross_val_predict` of a tuned estimator: a
//! slight optimism that the outer CV does not share.)

use ndarray::{ArrayView2, Axis};
use serde::{Deserialize, Serialize};

use crate::error::{LearnerError, Result, param};
use crate::forest::{ForestParams, fit_forest};
use crate::gbm::{GbmParams, fit_gbm};
use crate::metrics;
use crate::model::{LearnerKind, TrainedModel};
use crate::plan::ProbabilisticModel;
use crate::rng::{self, derive_seed, tag};
use crate::svm::{PlattMode, SvmParams, fit_svm};

/// One hyper-parameter's search range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Range {
    Fixed {
        value: f64,
    },
    Uniform {
        low: f64,
        high: f64,
    },
    /// `exp(uniform(ln low, ln high))`, low > 0.
    LogUniform {
        low: f64,
        high: f64,
    },
    /// Integer uniform on `low..=high`.
    IntUniform {
        low: i64,
        high: i64,
    },
    Choice {
        values: Vec<f64>,
    },
}

impl Range {
    fn sample(&self, r: &mut rand_chacha::ChaCha8Rng) -> f64 {
        match self {
            Range::Fixed { value } => *value,
            Range::Uniform { low, high } => low + (high - low) * rng::unit(r),
            Range::LogUniform { low, high } => {
                (low.ln() + (high.ln() - low.ln()) * rng::unit(r)).exp()
            }
            Range::IntUniform { low, high } => {
                (*low + rng::below(r, (high - low + 1) as u64) as i64) as f64
            }
            Range::Choice { values } => values[rng::below(r, values.len() as u64) as usize],
        }
    }

    fn validate(&self, name: &'static str) -> Result<()> {
        let ok = match self {
            Range::Fixed { value } => value.is_finite(),
            Range::Uniform { low, high } => low.is_finite() && high.is_finite() && low <= high,
            Range::LogUniform { low, high } => *low > 0.0 && high.is_finite() && low <= high,
            Range::IntUniform { low, high } => low <= high,
            Range::Choice { values } => !values.is_empty() && values.iter().all(|v| v.is_finite()),
        };
        if ok {
            Ok(())
        } else {
            Err(param(
                name,
                format!("{self:?}"),
                "needs finite bounds with low ≤ high (low > 0 for log_uniform) or a non-empty choice list",
            ))
        }
    }
}

fn fixed(v: f64) -> Range {
    Range::Fixed { value: v }
}
fn logu(low: f64, high: f64) -> Range {
    Range::LogUniform { low, high }
}
fn unif(low: f64, high: f64) -> Range {
    Range::Uniform { low, high }
}
fn int(low: i64, high: i64) -> Range {
    Range::IntUniform { low, high }
}

/// SVM search space (scikit-learn names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SvmSpace {
    pub c: Range,
    pub gamma: Range,
}

impl Default for SvmSpace {
    fn default() -> Self {
        Self {
            c: logu(1e-2, 1e2),
            gamma: logu(1e-3, 1e1),
        }
    }
}

/// Random-forest search space. `max_depth` 0 means "no limit".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForestSpace {
    pub n_trees: Range,
    pub max_depth: Range,
    pub max_features: Range,
    pub min_samples_leaf: Range,
}

impl Default for ForestSpace {
    fn default() -> Self {
        Self {
            n_trees: Range::Choice {
                values: vec![50.0, 100.0, 200.0],
            },
            max_depth: Range::Choice {
                values: vec![0.0, 2.0, 3.0, 5.0],
            },
            max_features: unif(0.2, 1.0),
            min_samples_leaf: int(1, 4),
        }
    }
}

/// Gradient-boosting search space (XGBoost names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GbmSpace {
    pub n_rounds: Range,
    pub eta: Range,
    pub max_depth: Range,
    pub min_child_weight: Range,
    pub subsample: Range,
    pub colsample_bytree: Range,
    pub lambda: Range,
    pub gamma: Range,
}

impl Default for GbmSpace {
    fn default() -> Self {
        Self {
            n_rounds: int(20, 200),
            eta: logu(0.01, 0.3),
            max_depth: int(1, 4),
            min_child_weight: logu(0.1, 2.0),
            subsample: unif(0.6, 1.0),
            colsample_bytree: unif(0.6, 1.0),
            lambda: logu(0.1, 10.0),
            gamma: fixed(0.0),
        }
    }
}

/// Candidates tried per learner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Budget {
    pub svm: u32,
    pub forest: u32,
    pub gbm: u32,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            svm: 20,
            forest: 10,
            gbm: 10,
        }
    }
}

impl Budget {
    pub fn of(&self, kind: LearnerKind) -> u32 {
        match kind {
            LearnerKind::Svm => self.svm,
            LearnerKind::Forest => self.forest,
            LearnerKind::Gbm => self.gbm,
        }
    }
}

/// What the search selects by (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionMetric {
    #[default]
    Auc,
    LogLoss,
}

/// The whole search configuration of a site's base learners.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    pub svm: SvmSpace,
    pub forest: ForestSpace,
    pub gbm: GbmSpace,
    pub budget: Budget,
    pub metric: SelectionMetric,
    pub platt: PlattMode,
}

impl SearchConfig {
    pub fn validate(&self) -> Result<()> {
        for (n, r) in [("svm.c", &self.svm.c), ("svm.gamma", &self.svm.gamma)] {
            r.validate(n)?;
        }
        let f = &self.forest;
        for (n, r) in [
            ("forest.n_trees", &f.n_trees),
            ("forest.max_depth", &f.max_depth),
            ("forest.max_features", &f.max_features),
            ("forest.min_samples_leaf", &f.min_samples_leaf),
        ] {
            r.validate(n)?;
        }
        let g = &self.gbm;
        for (n, r) in [
            ("gbm.n_rounds", &g.n_rounds),
            ("gbm.eta", &g.eta),
            ("gbm.max_depth", &g.max_depth),
            ("gbm.min_child_weight", &g.min_child_weight),
            ("gbm.subsample", &g.subsample),
            ("gbm.colsample_bytree", &g.colsample_bytree),
            ("gbm.lambda", &g.lambda),
            ("gbm.gamma", &g.gamma),
        ] {
            r.validate(n)?;
        }
        for k in LearnerKind::ALL {
            if self.budget.of(k) == 0 {
                return Err(param(
                    "budget",
                    k.name(),
                    "every learner needs at least one candidate",
                ));
            }
        }
        Ok(())
    }
}

/// Hyper-parameters of one candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LearnerParams {
    Svm(SvmParams),
    Forest(ForestParams),
    Gbm(GbmParams),
}

impl LearnerParams {
    pub fn kind(&self) -> LearnerKind {
        match self {
            LearnerParams::Svm(_) => LearnerKind::Svm,
            LearnerParams::Forest(_) => LearnerKind::Forest,
            LearnerParams::Gbm(_) => LearnerKind::Gbm,
        }
    }
}

/// Candidate `candidate` of `kind` (see the module doc for the draw order).
pub fn sample_params(
    kind: LearnerKind,
    config: &SearchConfig,
    seed: u64,
    candidate: u32,
) -> LearnerParams {
    let mut r = rng::stream(derive_seed(
        seed,
        &[tag::SEARCH, kind.tag(), u64::from(candidate)],
    ));
    match kind {
        LearnerKind::Svm => LearnerParams::Svm(SvmParams {
            c: config.svm.c.sample(&mut r),
            gamma: config.svm.gamma.sample(&mut r),
        }),
        LearnerKind::Forest => {
            let f = &config.forest;
            let n_trees = f.n_trees.sample(&mut r).round().max(1.0) as u32;
            let depth = f.max_depth.sample(&mut r).round().max(0.0) as u32;
            LearnerParams::Forest(ForestParams {
                n_trees,
                max_depth: (depth > 0).then_some(depth),
                max_features: f.max_features.sample(&mut r).clamp(1e-9, 1.0),
                min_samples_leaf: f.min_samples_leaf.sample(&mut r).round().max(1.0) as u32,
                ..ForestParams::default()
            })
        }
        LearnerKind::Gbm => {
            let g = &config.gbm;
            LearnerParams::Gbm(GbmParams {
                n_rounds: g.n_rounds.sample(&mut r).round().max(1.0) as u32,
                eta: g.eta.sample(&mut r),
                max_depth: g.max_depth.sample(&mut r).round().max(1.0) as u32,
                min_child_weight: g.min_child_weight.sample(&mut r),
                subsample: g.subsample.sample(&mut r),
                colsample_bytree: g.colsample_bytree.sample(&mut r),
                lambda: g.lambda.sample(&mut r),
                gamma: g.gamma.sample(&mut r),
                base_score: None,
            })
        }
    }
}

/// Fits one learner with the given hyper-parameters on all rows.
pub fn fit_learner(
    x: ArrayView2<f64>,
    y: &[bool],
    params: &LearnerParams,
    platt: PlattMode,
    seed: u64,
) -> Result<TrainedModel> {
    Ok(match params {
        LearnerParams::Svm(p) => TrainedModel::Svm(fit_svm(x, y, p, platt, seed)?),
        LearnerParams::Forest(p) => TrainedModel::Forest(fit_forest(x, y, p, seed)?),
        LearnerParams::Gbm(p) => TrainedModel::Gbm(fit_gbm(x, y, p, seed)?),
    })
}

/// Out-of-fold probabilities of `params` over the given folds (one fold index per row): fold f's
/// model is fitted with seed `derive_seed(seed, [FIT, f])`.
pub fn out_of_fold(
    x: ArrayView2<f64>,
    y: &[bool],
    fold: &[u32],
    params: &LearnerParams,
    platt: PlattMode,
    seed: u64,
) -> Result<Vec<f64>> {
    if fold.len() != y.len() {
        return Err(LearnerError::LengthMismatch {
            what: "inner folds",
            rows: fold.len(),
            labels: y.len(),
        });
    }
    let k = fold.iter().copied().max().map_or(0, |m| m + 1);
    let mut oof = vec![f64::NAN; y.len()];
    for f in 0..k {
        let tr: Vec<usize> = (0..y.len()).filter(|&i| fold[i] != f).collect();
        let te: Vec<usize> = (0..y.len()).filter(|&i| fold[i] == f).collect();
        if te.is_empty() {
            continue;
        }
        let ytr: Vec<bool> = tr.iter().map(|&i| y[i]).collect();
        let m = fit_learner(
            x.select(Axis(0), &tr).view(),
            &ytr,
            params,
            platt,
            derive_seed(seed, &[tag::FIT, u64::from(f)]),
        )?;
        let p = m.predict_proba(x.select(Axis(0), &te).view())?;
        for (&i, v) in te.iter().zip(p) {
            oof[i] = v;
        }
    }
    Ok(oof)
}

/// How one candidate scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    pub params: LearnerParams,
    /// Pooled OOF AUC (None if the fit failed).
    pub auc: Option<f64>,
    /// Pooled OOF mean log-loss (None if the fit failed).
    pub log_loss: Option<f64>,
    /// Why the candidate could not be evaluated, if it could not.
    pub failure: Option<String>,
}

/// The outcome of one learner's search at one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub kind: LearnerKind,
    pub best: usize,
    pub candidates: Vec<CandidateScore>,
    /// OOF probabilities of the winner, aligned with the training rows. Per-patient: stays at
    /// the site.
    pub oof: Vec<f64>,
}

fn better(metric: SelectionMetric, a: &CandidateScore, b: &CandidateScore) -> bool {
    let (Some(aa), Some(al)) = (a.auc, a.log_loss) else {
        return false;
    };
    let (Some(ba), Some(bl)) = (b.auc, b.log_loss) else {
        return true;
    };
    match metric {
        SelectionMetric::Auc => aa > ba || (aa == ba && al < bl),
        SelectionMetric::LogLoss => al < bl || (al == bl && aa > ba),
    }
}

/// Random search for one learner (see the module doc). `fold` gives each row's inner fold.
pub fn search(
    kind: LearnerKind,
    x: ArrayView2<f64>,
    y: &[bool],
    fold: &[u32],
    config: &SearchConfig,
    seed: u64,
) -> Result<SearchResult> {
    let mut candidates = Vec::new();
    let mut oofs = Vec::new();
    let mut best: Option<usize> = None;
    for c in 0..config.budget.of(kind) {
        let params = sample_params(kind, config, seed, c);
        let fit_seed = derive_seed(seed, &[tag::FIT, kind.tag(), u64::from(c)]);
        let score = match out_of_fold(x, y, fold, &params, config.platt, fit_seed) {
            Ok(oof) => {
                let s = CandidateScore {
                    params,
                    auc: metrics::auc(&oof, y),
                    log_loss: Some(metrics::log_loss(&oof, y)),
                    failure: None,
                };
                oofs.push(oof);
                s
            }
            Err(e) => {
                oofs.push(Vec::new());
                CandidateScore {
                    params,
                    auc: None,
                    log_loss: None,
                    failure: Some(e.to_string()),
                }
            }
        };
        candidates.push(score);
        let i = candidates.len() - 1;
        if best.is_none_or(|b| better(config.metric, &candidates[i], &candidates[b]))
            && candidates[i].auc.is_some()
        {
            best = Some(i);
        }
    }
    let Some(best) = best else {
        return Err(LearnerError::Protocol {
            what: "hyper-parameter search",
            detail: format!(
                "every {} candidate failed; first failure: {}",
                kind.name(),
                candidates[0].failure.clone().unwrap_or_default()
            ),
        });
    };
    let oof = std::mem::take(&mut oofs[best]);
    Ok(SearchResult {
        kind,
        best,
        candidates,
        oof,
    })
}

/// Seed of the final refit of the winning candidate on all training rows.
pub(crate) fn refit_seed(seed: u64, kind: LearnerKind) -> u64 {
    derive_seed(seed, &[tag::FINAL_REFIT, kind.tag()])
}
