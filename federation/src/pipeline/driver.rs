//! Aggregator half of a pipeline study: the stage machine that runs every outer fit of a batch
//! of repeats through ComBat → z-score → LASSO → base learners → relay → meta-model and clinical
//! comparator → scoring, then the next batch, then the pooled metrics.
//!
//! All state is serde, so the aggregator persists it on every transition and a restarted
//! aggregator resumes at the same round with the same bits. Each stage reuses the exact
//! aggregator halves of `models` (ComBat, standardisation, LASSO, logistic IRLS) and `learners`
//! (the batched MLP driver), once per fit, advanced in lock-step.

use super::messages::{
    ColumnReport, FitComBat, PipelineTask, StageResult, StageTask, TrainOutcome,
};
use super::metrics::{MetricsDriver, PipelineOutput};
use super::site::{fit_index, lasso_seed};
use super::spec::PipelineSpec;
use crate::engine::Step;
use crate::ids::SiteId;
use crate::task::{ResultBody, TaskBody};
use learners::FitId;
use learners::driver::MlpDriver;
use learners::site::SharedModel;
use models::combat::{self, BatchAdjustment, ComBatModel, DesignSpec, SiteLevels};
use models::lasso::{BootstrapConfig, BootstrapLambda, FitSums, LassoConfig, LassoDriver};
use models::logistic::{LogisticDriver, LogisticFitSpec, LogisticOptions, LogisticReply};
use models::sampling::WeightSpec;
use models::standardize::{Standardizer, VarianceConvention};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where the current batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    ComBat(u8),
    Moments,
    Lasso,
    Train,
    Relay,
    Fit,
    Score,
    Metrics,
    /// Before the first batch, when the study file omits `features`: the sites' column names.
    Columns,
}

impl Stage {
    pub fn name(&self) -> &'static str {
        match self {
            Stage::ComBat(_) => "ComBat",
            Stage::Moments => "z-score",
            Stage::Lasso => "LASSO + bootstrap",
            Stage::Train => "base learners",
            Stage::Relay => "model relay",
            Stage::Fit => "meta-model + clinical",
            Stage::Score => "scoring",
            Stage::Metrics => "pooled metrics",
            Stage::Columns => "feature columns",
        }
    }
}

/// What the study learnt along the way (no per-patient values): the statistician's view of the
/// nested CV.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CvSummary {
    pub features: Vec<String>,
    /// Outer fits completed.
    pub fits: u32,
    /// Per feature: in how many outer fits it was among the top-k.
    pub selected_count: Vec<u32>,
    /// Per site: outer fits where it trained, and where it refused (with the last reason).
    pub sites: Vec<SiteTraining>,
    /// MLP objective per fit (mean over fits).
    pub mlp_objective_mean: f64,
    /// Clinical fits that did not converge.
    pub clinical_not_converged: u32,
    /// Round trips per stage name.
    pub rounds: BTreeMap<String, u32>,
    /// One record per outer fit, in fit order.
    pub per_fit: Vec<FitRecord>,
    /// How `features` was resolved, when the study file omitted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<FeatureResolution>,
}

/// How the feature columns of a study that omits `features` were resolved from the sites'
/// column names ([`resolve_features`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureResolution {
    /// The features: the columns numeric and complete at every site, minus the excluded ones,
    /// in the first site's column order (sites in `SiteId` order).
    pub features: Vec<String>,
    /// Columns holding numbers at some site that are not features, with each site's problem.
    pub dropped: Vec<DroppedColumn>,
    /// Columns some site has that the study's rules keep out of the features (label, batch,
    /// clinical comparator, survival, `exclude_columns`).
    pub excluded: Vec<String>,
}

/// A column left out of the resolved features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedColumn {
    pub column: String,
    /// Each site where it cannot be a feature, and why.
    pub sites: Vec<(String, ColumnProblem)>,
}

/// Why a column cannot be a feature at a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnProblem {
    /// The site's table has no such column.
    Missing,
    /// Some cells are empty / `NA`.
    MissingValues,
    /// Some cell is not a number.
    NotNumeric,
}

impl DroppedColumn {
    /// E.g. `missing at S03; not numeric at S05`.
    pub fn reason(&self) -> String {
        self.sites
            .iter()
            .map(|(site, p)| {
                let what = match p {
                    ColumnProblem::Missing => "missing",
                    ColumnProblem::MissingValues => "has missing values",
                    ColumnProblem::NotNumeric => "not numeric",
                };
                format!("{what} at {site}")
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Resolves the features of a study that omits them from each site's column report (sites in
/// `SiteId` order): every column numeric and complete at every site, minus
/// [`PipelineSpec::excluded_columns`]. Fails when none is left or fewer than `lasso.top_k`.
pub fn resolve_features(
    spec: &PipelineSpec,
    reports: &[(&SiteId, &ColumnReport)],
) -> Result<FeatureResolution, String> {
    let excluded_rule = spec.excluded_columns();
    let mut seen: Vec<&String> = Vec::new();
    for (_, r) in reports {
        for c in r.numeric.iter().chain(&r.incomplete).chain(&r.text) {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
    }
    let numeric_everywhere = |c: &String| reports.iter().all(|(_, r)| r.numeric.contains(c));
    let features: Vec<String> = reports
        .first()
        .map(|(_, r)| {
            r.numeric
                .iter()
                .filter(|c| !excluded_rule.contains(*c) && numeric_everywhere(c))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut dropped = Vec::new();
    let mut excluded = Vec::new();
    for c in seen {
        if excluded_rule.contains(c) {
            excluded.push(c.clone());
            continue;
        }
        let holds_numbers = reports
            .iter()
            .any(|(_, r)| r.numeric.contains(c) || r.incomplete.contains(c));
        if features.contains(c) || !holds_numbers {
            continue;
        }
        let sites = reports
            .iter()
            .filter_map(|(site, r)| {
                let problem = if r.numeric.contains(c) {
                    return None;
                } else if r.incomplete.contains(c) {
                    ColumnProblem::MissingValues
                } else if r.text.contains(c) {
                    ColumnProblem::NotNumeric
                } else {
                    ColumnProblem::Missing
                };
                Some((site.to_string(), problem))
            })
            .collect();
        dropped.push(DroppedColumn {
            column: c.clone(),
            sites,
        });
    }
    let dropped_note = || {
        if dropped.is_empty() {
            String::new()
        } else {
            format!(
                "; dropped: {}",
                dropped
                    .iter()
                    .map(|d| format!("{} ({})", d.column, d.reason()))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    if features.is_empty() {
        return Err(format!(
            "no column is numeric and complete at every site once the study's excluded columns ({}) are left out{}; list analysis.features or fix the tables",
            excluded_rule.join(", "),
            dropped_note()
        ));
    }
    if spec.lasso.top_k > features.len() {
        return Err(format!(
            "analysis.lasso.top_k = {} but only {} columns are numeric and complete at every site ({}){}; lower top_k",
            spec.lasso.top_k,
            features.len(),
            features.join(", "),
            dropped_note()
        ));
    }
    Ok(FeatureResolution {
        features,
        dropped,
        excluded,
    })
}

/// What one outer fit produced (aggregates and digests only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitRecord {
    pub fit: FitId,
    /// SHA-256 of the fit's frozen preprocessing (ComBat model and z-score), so two runs can be
    /// compared fit by fit without storing the models.
    pub preprocessing_digest: String,
    /// Indices of the top-k features.
    pub selected: Vec<usize>,
    /// λ.min of the fit's LASSO CV.
    pub lambda_min: f64,
    /// MLP objective at the returned weights and a digest of the weights.
    pub mlp_objective: Option<f64>,
    pub mlp_digest: String,
    /// Clinical coefficients (intercept first), when there is a comparator.
    pub clinical_coef: Option<Vec<f64>>,
}

fn digest<T: Serialize>(value: &T) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        serde_json::to_vec(value).expect("serialisable"),
    ))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteTraining {
    pub site: String,
    pub trained: u32,
    pub refused: u32,
    pub last_refusal: Option<String>,
    /// Models this site shared (relayed to the others).
    pub shared: u32,
    /// Why and when the site was left out of the study (`on_masked_dropout`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<String>,
}

/// Aggregator state of a pipeline study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineDriver {
    spec: PipelineSpec,
    sites: Vec<SiteId>,
    batch: u32,
    stage: Stage,
    fits: Vec<FitId>,
    combat: Vec<FitComBat>,
    models: Vec<(FitId, ComBatModel)>,
    standardizers: Vec<(FitId, Standardizer)>,
    lasso: Vec<(FitId, LassoDriver)>,
    lasso_rounds: u32,
    selected: Vec<(FitId, Vec<usize>)>,
    lambda_min: Vec<f64>,
    shared: Vec<(FitId, Vec<SharedModel>)>,
    mlp: Option<MlpDriver>,
    clinical: Option<LogisticDriver>,
    summary: CvSummary,
    metrics: Option<MetricsDriver>,
    /// Rounds completed in the current stage (for the progress estimate).
    #[serde(default)]
    stage_rounds: u32,
    /// Under `secure_aggregation`: the key round, then the masked meta-model and score rounds
    /// (`super::secure`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure: Option<crate::secure::SecureRounds>,
    /// Sites left out after missing a masked round's deadline (`on_masked_dropout`), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<(SiteId, String)>,
    /// Under `secure_aggregation`: each site's answer to the batch's ComBat levels round (batch
    /// labels present, per fit), so that a masked ComBat or z-score round missing a site can
    /// restart the batch's ComBat over the survivors' designs without asking again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    combat_levels: Vec<(SiteId, Vec<(FitId, SiteLevels)>)>,
}

type Tasks = BTreeMap<SiteId, TaskBody>;

impl PipelineDriver {
    pub fn start(spec: PipelineSpec, sites: Vec<SiteId>) -> Result<(Self, Tasks), String> {
        spec.validate()?;
        let summary = CvSummary {
            features: spec.features.clone(),
            selected_count: vec![0; spec.features.len()],
            sites: sites
                .iter()
                .map(|s| SiteTraining {
                    site: s.to_string(),
                    ..SiteTraining::default()
                })
                .collect(),
            ..CvSummary::default()
        };
        let mut d = Self {
            spec,
            sites,
            batch: 0,
            stage: Stage::ComBat(0),
            fits: vec![],
            combat: vec![],
            models: vec![],
            standardizers: vec![],
            lasso: vec![],
            lasso_rounds: 0,
            selected: vec![],
            lambda_min: vec![],
            shared: vec![],
            mlp: None,
            clinical: None,
            summary,
            metrics: None,
            stage_rounds: 0,
            secure: None,
            dropped: vec![],
            combat_levels: vec![],
        };
        if d.spec.resolves_features() {
            d.stage = Stage::Columns;
        } else {
            d.begin_batch();
        }
        if d.spec.secure_aggregation {
            // The key round (no inner request) comes first; the first stage's tasks follow it.
            let analysis = crate::study::AnalysisSpec::Pipeline(Box::new(d.spec.clone()));
            let secure = crate::secure::SecureRounds::new(&analysis, &d.sites);
            let keys = secure.key_round(BTreeMap::new());
            d.secure = Some(secure);
            return Ok((d, keys));
        }
        let tasks = d.tasks();
        Ok((d, tasks))
    }

    fn n_batches(&self) -> u32 {
        self.spec
            .cv
            .repeats
            .div_ceil(self.spec.cv.repeats_per_batch)
    }

    /// One line for `aggregator status`: the repeats and folds in progress, the outer fits done,
    /// the stage and its round. A batch's repeats and all their folds advance together in
    /// lock-step (one round carries every fit), so the line names the range, not one fold.
    pub fn progress(&self) -> String {
        let cv = &self.spec.cv;
        let total = cv.repeats * cv.outer_folds;
        match self.stage {
            Stage::Columns => {
                return "resolving the feature columns (each site's column names)".into();
            }
            Stage::Metrics => {
                return format!(
                    "pooled metrics ({} of {total} outer fits done)",
                    self.summary.fits
                );
            }
            _ => {}
        }
        let first = self.batch * cv.repeats_per_batch + 1;
        let last = ((self.batch + 1) * cv.repeats_per_batch).min(cv.repeats);
        let repeats = if first == last {
            format!("repeat {first}")
        } else {
            format!("repeats {first}–{last}")
        };
        let stage = match self.stage {
            Stage::ComBat(r) => format!("ComBat round {}/4", r + 1),
            s => format!("{} round {}", s.name(), self.stage_rounds + 1),
        };
        format!(
            "{repeats} of {}, folds 1–{} (batch {}/{}); {} of {total} outer fits done; {stage}",
            cv.repeats,
            cv.outer_folds,
            self.batch + 1,
            self.n_batches(),
            self.summary.fits,
        )
    }

    /// Estimated fraction of the study's work done (for an ETA): the outer fits completed plus
    /// the current batch's fits weighted by how far the batch is, from each stage's share of a
    /// batch's wall time and, inside a stage, its rounds against the rounds it took in the
    /// batches before (or a typical count in the first batch). The shares are rough, from the
    /// per-stage measurements of the published protocol on the shared example cohort
    /// (BENCHMARKS.md, issue 5: ≈ 226 LASSO and ≈ 269 meta-model round trips per batch, LASSO
    /// the largest share, then the meta-model, then the base learners); an estimate for an ETA,
    /// not a promise (`simulate study`'s `timing.json` measures the real split).
    pub fn fraction_done(&self) -> f64 {
        let total = f64::from((self.spec.cv.repeats * self.spec.cv.outer_folds).max(1));
        let in_batch = match self.stage {
            Stage::Columns | Stage::Metrics => 0.0,
            _ => self.fits.len() as f64 * self.batch_fraction(),
        };
        ((f64::from(self.summary.fits) + in_batch) / total).min(1.0)
    }

    /// How far the current batch is, in [0, 1) (see [`Self::fraction_done`]).
    fn batch_fraction(&self) -> f64 {
        // Each stage's share of a batch's wall time; typical rounds per batch for the stages
        // whose round count depends on the data (LASSO, meta-model), used until one batch is
        // done and its own counts are known.
        const SHARES: [(&str, f64, f64); 7] = [
            ("ComBat", 0.02, 4.0),
            ("z-score", 0.01, 1.0),
            ("LASSO + bootstrap", 0.47, 230.0),
            ("base learners", 0.15, 1.0),
            ("model relay", 0.02, 1.0),
            ("meta-model + clinical", 0.31, 270.0),
            ("scoring", 0.02, 1.0),
        ];
        let name = self.stage.name();
        let Some(pos) = SHARES.iter().position(|(n, _, _)| *n == name) else {
            return 0.0;
        };
        let before: f64 = SHARES[..pos].iter().map(|(_, s, _)| s).sum();
        let (_, share, typical) = SHARES[pos];
        let done_here = match self.stage {
            Stage::ComBat(r) => f64::from(r),
            _ => f64::from(self.stage_rounds),
        };
        let expected = if self.batch > 0 && !matches!(self.stage, Stage::ComBat(_)) {
            let so_far = self.summary.rounds.get(name).copied().unwrap_or(0);
            f64::from(so_far.saturating_sub(self.stage_rounds)) / f64::from(self.batch)
        } else {
            typical
        };
        let within = (done_here / expected.max(1.0)).min(0.95);
        (before + share * within).min(0.99)
    }

    fn begin_batch(&mut self) {
        let per = self.spec.cv.repeats_per_batch;
        let r0 = self.batch * per;
        let r1 = (r0 + per).min(self.spec.cv.repeats);
        self.fits = (r0..r1)
            .flat_map(|repeat| {
                (0..self.spec.cv.outer_folds).map(move |fold| FitId { repeat, fold })
            })
            .collect();
        self.combat = self
            .fits
            .iter()
            .map(|&fit| FitComBat {
                fit,
                design: None,
                regression: None,
                global: None,
            })
            .collect();
        self.models.clear();
        self.combat_levels.clear();
        self.standardizers.clear();
        self.lasso.clear();
        self.lasso_rounds = 0;
        self.selected.clear();
        self.lambda_min.clear();
        self.shared.clear();
        self.mlp = None;
        self.clinical = None;
        self.stage = Stage::ComBat(0);
    }

    fn stage_task(&self) -> StageTask {
        match self.stage {
            Stage::Columns => StageTask::Columns,
            Stage::ComBat(round) => StageTask::ComBat {
                round,
                fits: self.combat.clone(),
            },
            Stage::Moments => StageTask::Moments {
                models: self.models.clone(),
            },
            Stage::Lasso => StageTask::Lasso {
                standardizers: if self.lasso_rounds == 0 {
                    self.standardizers.clone()
                } else {
                    vec![]
                },
                requests: self
                    .lasso
                    .iter()
                    .filter(|(_, d)| !d.is_done())
                    .map(|(id, d)| (*id, d.next_requests()))
                    .collect(),
            },
            Stage::Train => StageTask::Train {
                selected: self.selected.clone(),
            },
            Stage::Relay => StageTask::Relay {
                models: self.shared.clone(),
            },
            Stage::Fit => StageTask::Fit {
                mlp: self
                    .mlp
                    .as_ref()
                    .map(MlpDriver::next_requests)
                    .unwrap_or_default(),
                clinical: self
                    .clinical
                    .as_ref()
                    .map(|c| {
                        c.next_requests()
                            .into_iter()
                            .map(|r| (self.fit_of(r.fit_id), r.beta))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            Stage::Score => {
                let mlp = self
                    .mlp
                    .as_ref()
                    .and_then(|m| m.result().ok())
                    .map(|r| r.into_iter().map(|(id, f)| (id, f.model.weights)).collect())
                    .unwrap_or_default();
                let clinical = self
                    .clinical
                    .as_ref()
                    .and_then(LogisticDriver::results)
                    .map(|r| {
                        r.into_iter()
                            .map(|f| (self.fit_of(f.fit_id), f.coef))
                            .collect()
                    })
                    .unwrap_or_default();
                StageTask::Score { mlp, clinical }
            }
            Stage::Metrics => unreachable!("the metrics stage builds its own tasks"),
        }
    }

    fn fit_of(&self, index: u32) -> FitId {
        FitId {
            repeat: index / self.spec.cv.outer_folds,
            fold: index % self.spec.cv.outer_folds,
        }
    }

    fn tasks(&self) -> Tasks {
        // The metrics stage's follow-up round differs per site; every other stage's does not.
        let common = match (self.stage, &self.metrics) {
            (Stage::Metrics, Some(_)) => None,
            _ => Some(self.stage_task()),
        };
        self.sites
            .iter()
            .map(|s| {
                let stage = match (&common, &self.metrics) {
                    (None, Some(m)) => StageTask::Metrics(m.task_for(s)),
                    (c, _) => c.clone().expect("a common task outside the metrics stage"),
                };
                (
                    s.clone(),
                    TaskBody::Pipeline(PipelineTask {
                        site: s.to_string(),
                        batch: self.batch,
                        features: self.resolved_features(),
                        stage,
                    }),
                )
            })
            .collect()
    }

    pub fn on_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Step {
        // Secure aggregation: record the key round's keys, or open a masked round's sum.
        let opened;
        let results = match self.secure_round(results) {
            Ok(SecureIn::Keys) => return self.next_step(),
            Ok(SecureIn::Opened(sum)) => {
                opened = sum;
                &opened
            }
            Ok(SecureIn::Plain) => results,
            Err(e) => return Step::Failed(e),
        };
        if self.stage == Stage::Metrics {
            let Some(m) = self.metrics.as_mut() else {
                return Step::Failed("metrics stage without state".into());
            };
            return match m.on_round(results) {
                Ok(None) => self.next_step(),
                Ok(Some(mut metrics)) => {
                    for (site, why) in &self.dropped {
                        metrics.notes.push(format!(
                            "site {site} was left out of the study ({why}); its patients are not in these metrics"
                        ));
                    }
                    Step::Done(crate::engine::StudyOutput::Pipeline(Box::new(
                        PipelineOutput {
                            spec: self.spec.clone(),
                            cv: self.summary.clone(),
                            metrics,
                        },
                    )))
                }
                Err(e) => Step::Failed(e),
            };
        }
        let name = self.stage.name().to_string();
        *self.summary.rounds.entry(name).or_default() += 1;
        let stage = self.stage;
        match self.advance(results) {
            Ok(()) => {
                self.stage_rounds = if self.stage == stage {
                    self.stage_rounds + 1
                } else {
                    0
                };
                self.next_step()
            }
            Err(e) => Step::Failed(e),
        }
    }

    /// The features every task carries when they were resolved at the start (empty when the
    /// study file lists them: the sites read them from the spec).
    fn resolved_features(&self) -> Vec<String> {
        match &self.summary.columns {
            Some(_) => self.spec.features.clone(),
            None => vec![],
        }
    }

    fn advance(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Result<(), String> {
        let mut per_site: Vec<(&SiteId, &StageResult)> = Vec::with_capacity(results.len());
        for (site, body) in results {
            match body {
                ResultBody::Pipeline(r) => per_site.push((site, r)),
                other => return Err(format!("site {site} answered with {}", other.kind())),
            }
        }
        macro_rules! collect {
            ($variant:ident) => {
                per_site
                    .iter()
                    .map(|(site, r)| match r {
                        StageResult::$variant(x) => Ok(x),
                        other => Err(format!(
                            "site {site} answered a {} round with {}",
                            self.stage.name(),
                            other.name()
                        )),
                    })
                    .collect::<Result<Vec<_>, String>>()?
            };
        }
        let err = |e: models::ModelsError| format!("{}: {e}", self.stage.name());
        match self.stage {
            Stage::Columns => {
                let reports = collect!(Columns);
                let named: Vec<(&SiteId, &ColumnReport)> = per_site
                    .iter()
                    .map(|(s, _)| *s)
                    .zip(reports.iter().copied())
                    .collect();
                let resolution = resolve_features(&self.spec, &named)?;
                self.spec.features = resolution.features.clone();
                self.summary.features = resolution.features.clone();
                self.summary.selected_count = vec![0; resolution.features.len()];
                self.summary.columns = Some(resolution);
                self.begin_batch();
            }
            Stage::ComBat(0) => {
                let levels = collect!(ComBatLevels);
                for (i, f) in self.combat.iter_mut().enumerate() {
                    let per: Vec<_> = levels
                        .iter()
                        .map(|l| pick(l, i, f.fit))
                        .collect::<Result<_, _>>()?;
                    let lv: Vec<_> = per.into_iter().cloned().collect();
                    f.design = Some(DesignSpec::from_site_levels(&[], &lv).map_err(err)?);
                }
                if self.secure.is_some() {
                    self.combat_levels = per_site
                        .iter()
                        .zip(&levels)
                        .map(|((site, _), l)| ((*site).clone(), (*l).clone()))
                        .collect();
                }
                self.stage = Stage::ComBat(1);
            }
            Stage::ComBat(1) => {
                let xps = collect!(ComBatCrossProducts);
                for (i, f) in self.combat.iter_mut().enumerate() {
                    let per: Vec<_> = xps
                        .iter()
                        .map(|x| pick(x, i, f.fit).cloned())
                        .collect::<Result<_, _>>()?;
                    let design = f.design.as_ref().ok_or("no ComBat design")?;
                    f.regression =
                        Some(combat::aggregate_cross_products(design, &per).map_err(err)?);
                }
                self.stage = Stage::ComBat(2);
            }
            Stage::ComBat(2) => {
                let rs = collect!(ComBatResiduals);
                for (i, f) in self.combat.iter_mut().enumerate() {
                    let per: Vec<_> = rs
                        .iter()
                        .map(|x| pick(x, i, f.fit).cloned())
                        .collect::<Result<_, _>>()?;
                    let reg = f.regression.as_ref().ok_or("no ComBat regression")?;
                    f.global = Some(combat::aggregate_residuals(reg, &per).map_err(err)?);
                }
                self.stage = Stage::ComBat(3);
            }
            Stage::ComBat(_) => {
                let est = collect!(ComBatEstimates);
                let options = crate::harmonize::options(self.spec.combat_mode);
                self.models.clear();
                for (i, f) in self.combat.iter().enumerate() {
                    let global = f.global.clone().ok_or("no ComBat global fit")?;
                    let mut batches: Vec<BatchAdjustment> = Vec::new();
                    for e in &est {
                        batches.extend(pick(e, i, f.fit)?.iter().cloned());
                    }
                    let order = &global.fit.spec.batches;
                    batches.sort_by_key(|b| order.iter().position(|o| *o == b.batch));
                    self.models.push((
                        f.fit,
                        ComBatModel {
                            global,
                            options,
                            batches,
                        },
                    ));
                }
                self.stage = Stage::Moments;
            }
            Stage::Moments => {
                let moments = collect!(Moments);
                self.standardizers.clear();
                self.lasso.clear();
                for (i, &fit) in self.fits.iter().enumerate() {
                    let per: Vec<_> = moments
                        .iter()
                        .map(|m| pick(m, i, fit).cloned())
                        .collect::<Result<_, _>>()?;
                    let z = Standardizer::from_site_moments(&per, VarianceConvention::Sample)
                        .map_err(err)?;
                    self.standardizers.push((fit, z));
                    let driver = LassoDriver::new(self.lasso_config(fit)).map_err(err)?;
                    self.lasso.push((fit, driver));
                }
                self.lasso_rounds = 0;
                self.stage = Stage::Lasso;
            }
            Stage::Lasso => {
                let sums = collect!(Lasso);
                let active: Vec<usize> = (0..self.lasso.len())
                    .filter(|&i| !self.lasso[i].1.is_done())
                    .collect();
                // Every outer fit's replies first (in site order), then the drivers advance in
                // parallel: each driver's step depends only on its own replies, so the result
                // is the same for any thread count (and the aggregator's cores are otherwise
                // idle while it computes: the sites wait for the next round).
                let mut work: Vec<Vec<&[FitSums]>> = Vec::with_capacity(active.len());
                for (k, &i) in active.iter().enumerate() {
                    let fit = self.lasso[i].0;
                    let mut replies: Vec<&[FitSums]> = Vec::with_capacity(sums.len());
                    for (s, site_sums) in sums.iter().enumerate() {
                        let v = pick(site_sums, k, fit)?;
                        if let Some(FitSums::Refused(r)) =
                            v.iter().find(|f| matches!(f, FitSums::Refused(_)))
                        {
                            return Err(format!(
                                "site {} refused the LASSO of fit (repeat {}, fold {}): {} parameters for {} rows exceeds its max_params_per_row = {}; use fewer features or ask the site to relax its policy",
                                per_site[s].0,
                                fit.repeat,
                                fit.fold,
                                r.params,
                                r.rows,
                                r.max_params_per_row
                            ));
                        }
                        replies.push(v);
                    }
                    work.push(replies);
                }
                let outcomes: Vec<Result<(), models::ModelsError>> = self
                    .lasso
                    .iter_mut()
                    .filter(|(_, d)| !d.is_done())
                    .zip(work)
                    .collect::<Vec<_>>()
                    .into_par_iter()
                    .map(|((_, d), replies)| d.apply(&replies))
                    .collect();
                // The first failure in outer-fit order, whatever finished first.
                outcomes
                    .into_iter()
                    .collect::<Result<Vec<()>, _>>()
                    .map_err(err)?;
                self.lasso_rounds += 1;
                if self.lasso.iter().all(|(_, d)| d.is_done()) {
                    self.selected.clear();
                    self.lambda_min.clear();
                    for (fit, d) in &self.lasso {
                        let r = d.result().ok_or("LASSO finished without a result")?;
                        self.lambda_min.push(r.cv.lambda_min);
                        let top = r
                            .bootstrap
                            .map(|b| b.top_k)
                            .ok_or("LASSO finished without bootstrap frequencies")?;
                        for &j in &top {
                            self.summary.selected_count[j] += 1;
                        }
                        self.selected.push((*fit, top));
                    }
                    // The drivers' paths and bootstrap fits are not read again: dropped now, not
                    // at the next batch, they would otherwise be most of every snapshot of the
                    // rest of the batch (≈ 75 MB of JSON against ≈ 17 MB at 50 outer fits).
                    self.lasso.clear();
                    self.stage = Stage::Train;
                }
            }
            Stage::Train => {
                let trained = collect!(Trained);
                self.shared = self.fits.iter().map(|&f| (f, Vec::new())).collect();
                for (s, outcomes) in trained.iter().enumerate() {
                    for (i, &fit) in self.fits.iter().enumerate() {
                        let o: &TrainOutcome = pick(outcomes, i, fit)?;
                        let name = per_site[s].0.as_str();
                        let Some(st) = self.summary.sites.iter_mut().find(|t| t.site == name)
                        else {
                            return Err(format!("site {name} is not in the study's summary"));
                        };
                        match &o.refused {
                            None => st.trained += 1,
                            Some(r) => {
                                st.refused += 1;
                                st.last_refusal = Some(r.clone());
                            }
                        }
                        st.shared += o.shared.len() as u32;
                        self.shared[i].1.extend(o.shared.iter().cloned());
                    }
                }
                self.stage = Stage::Relay;
            }
            Stage::Relay => {
                let _ = per_site
                    .iter()
                    .map(|(site, r)| match r {
                        StageResult::Relayed { .. } => Ok(()),
                        other => Err(format!(
                            "site {site} answered a relay round with {}",
                            other.name()
                        )),
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                // The relayed models have served their purpose; don't keep them in the state.
                self.shared.clear();
                self.start_fit_drivers()?;
                self.stage = Stage::Fit;
            }
            Stage::Fit => {
                let mut mlp_sums = Vec::with_capacity(per_site.len());
                let mut clin = Vec::with_capacity(per_site.len());
                for (site, r) in &per_site {
                    match r {
                        StageResult::Fit { mlp, clinical } => {
                            mlp_sums.push(mlp.clone());
                            let mut replies = Vec::with_capacity(clinical.len());
                            for (fit, reply) in clinical {
                                if let LogisticReply::Refused(x) = reply {
                                    return Err(format!(
                                        "site {site} refused the clinical model of fit (repeat {}, fold {}): {} parameters for {} rows exceeds its max_params_per_row = {}",
                                        fit.repeat,
                                        fit.fold,
                                        x.params,
                                        x.rows,
                                        x.max_params_per_row
                                    ));
                                }
                                replies.push(reply.clone());
                            }
                            clin.push(replies);
                        }
                        other => {
                            return Err(format!(
                                "site {site} answered a meta-model round with {}",
                                other.name()
                            ));
                        }
                    }
                }
                if let Some(m) = self.mlp.as_mut()
                    && !m.is_done()
                {
                    m.apply(&mlp_sums).map_err(|e| format!("meta-model: {e}"))?;
                }
                if let Some(c) = self.clinical.as_mut()
                    && !c.is_done()
                {
                    c.apply(&clin).map_err(|e| format!("clinical model: {e}"))?;
                }
                let mlp_done = self.mlp.as_ref().is_none_or(MlpDriver::is_done);
                let clin_done = self.clinical.as_ref().is_none_or(LogisticDriver::is_done);
                if mlp_done && clin_done {
                    self.record_fits()?;
                    if let Some(m) = &self.mlp {
                        let fits = m.result().map_err(|e| format!("meta-model: {e}"))?;
                        let done = f64::from(self.summary.fits);
                        let batch_sum: f64 = fits.values().map(|f| f.objective).sum();
                        let total = self.summary.mlp_objective_mean * done + batch_sum;
                        self.summary.mlp_objective_mean = total / (done + fits.len() as f64);
                    }
                    if let Some(c) = &self.clinical {
                        self.summary.clinical_not_converged +=
                            c.results()
                                .unwrap_or_default()
                                .iter()
                                .filter(|f| !f.converged)
                                .count() as u32;
                    }
                    self.stage = Stage::Score;
                }
            }
            Stage::Score => {
                for (site, r) in &per_site {
                    if !matches!(r, StageResult::Scored { .. }) {
                        return Err(format!(
                            "site {site} answered a scoring round with {}",
                            r.name()
                        ));
                    }
                }
                self.summary.fits += self.fits.len() as u32;
                self.batch += 1;
                if self.batch < self.n_batches() {
                    self.begin_batch();
                } else {
                    self.fits.clear();
                    self.combat.clear();
                    self.models.clear();
                    self.standardizers.clear();
                    self.lasso.clear();
                    self.mlp = None;
                    self.clinical = None;
                    self.metrics = Some(
                        MetricsDriver::new(&self.spec, self.sites.len())
                            .secure(self.secure.is_some()),
                    );
                    self.stage = Stage::Metrics;
                }
            }
            Stage::Metrics => unreachable!("handled in on_round"),
        }
        Ok(())
    }

    /// Fresh meta-model and clinical optimisers for the current batch's fits (the start of the
    /// meta-model stage, and its restart without a dropped site).
    fn start_fit_drivers(&mut self) -> Result<(), String> {
        let mlp_spec = self.spec.meta.mlp(learners::LearnerKind::ALL.len());
        self.mlp = Some(
            MlpDriver::new(mlp_spec, &self.fits, self.spec.cv.seed)
                .map_err(|e| format!("meta-model: {e}"))?,
        );
        self.clinical = match &self.spec.clinical {
            None => None,
            Some(c) => Some(
                LogisticDriver::new(
                    c.column_names().len(),
                    self.fits
                        .iter()
                        .map(|&f| LogisticFitSpec {
                            fit_id: fit_index(&self.spec, f),
                            weights: WeightSpec::default(),
                        })
                        .collect(),
                    LogisticOptions::default(),
                )
                .map_err(|e| format!("{}: {e}", self.stage.name()))?,
            ),
        };
        Ok(())
    }

    // --- Secure aggregation (`super::secure`) ---

    /// The key round's keys, a masked round's opened sum, or a plain round.
    fn secure_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Result<SecureIn, String> {
        let Some(secure) = self.secure.as_mut() else {
            return Ok(SecureIn::Plain);
        };
        if secure.keys().is_empty() {
            let inner = secure.on_key_round(results)?;
            if !inner.is_empty() {
                return Err("the pipeline's key round carries no request".into());
            }
            return Ok(SecureIn::Keys);
        }
        if secure.is_open() {
            return secure.open_sum(results).map(SecureIn::Opened);
        }
        Ok(SecureIn::Plain)
    }

    /// The next round's tasks, masked when the stage has a masked form in a secure study.
    fn next_step(&mut self) -> Step {
        let tasks = self.tasks();
        match self.masked(tasks) {
            Ok(t) => Step::Next(t),
            Err(e) => Step::Failed(e),
        }
    }

    fn masked(&mut self, tasks: Tasks) -> Result<Tasks, String> {
        let Some(secure) = self.secure.as_mut() else {
            return Ok(tasks);
        };
        let Some(TaskBody::Pipeline(first)) = tasks.values().next() else {
            return Ok(tasks);
        };
        if !super::secure::has_masked_form(&first.stage) {
            return Ok(tasks);
        }
        let shape = match &first.stage {
            StageTask::Metrics(_) => {
                super::secure::metrics_shape(&self.spec, self.metrics.as_ref())
            }
            StageTask::Lasso { requests, .. } => {
                crate::lasso::secure::pipeline_shape(self.spec.features.len(), requests)
            }
            stage @ (StageTask::ComBat { .. } | StageTask::Moments { .. }) => {
                super::secure::combat_shape(stage, self.spec.features.len())
                    .ok_or("a masked ComBat stage without a shape")?
            }
            stage => super::secure::fit_shape(stage, &self.spec)
                .ok_or("a masked stage without a shape")?,
        };
        secure.masked(tasks, shape)
    }

    /// Leaves `dropped` out of the rest of the study after they missed the deadline of the
    /// masked round now open (`round`: the engine's round), and returns the round restarted
    /// over the survivors under a fresh round id. The meta-model stage restarts its optimisers
    /// from their initial point (their earlier iterations summed the dropped sites' rows, so
    /// continuing them would mix two objectives), and so does the LASSO stage's every fit
    /// (from its moments round); the score round is simply asked again. A masked ComBat
    /// (cross-products, residuals) or z-score round restarts the batch's ComBat from its
    /// cross-products round over the survivors ([`Self::restart_combat`]): the ComBat models
    /// and z-scores after it are rebuilt without the dropped sites' batches and rows. `Err`
    /// (the engine then pauses the study as for a plain round) outside a masked round or when
    /// fewer than 3 sites would remain.
    pub fn drop_sites(&mut self, dropped: &[SiteId], round: u32) -> Result<Tasks, String> {
        if !self.secure.as_ref().is_some_and(|s| s.is_open()) {
            return Err("not in a masked round".into());
        }
        if !matches!(
            self.stage,
            Stage::Fit | Stage::Metrics | Stage::Lasso | Stage::ComBat(1 | 2) | Stage::Moments
        ) {
            // Any other masked stage would carry state built from every site's rows and has no
            // restart rule: pause.
            return Err(format!(
                "the {} stage cannot continue without a site",
                self.stage.name()
            ));
        }
        let survivors = self.sites.iter().filter(|s| !dropped.contains(s)).count();
        let min = crate::secure::SecureRounds::policy().min_participants();
        if survivors < min {
            return Err(format!(
                "only {survivors} sites would remain, fewer than secure aggregation's {min}"
            ));
        }
        // Every change below is undone if the restart cannot be built (the study then pauses).
        let before = (self.sites.clone(), self.mlp.clone(), self.clinical.clone());
        let metrics_before = self.metrics.clone();
        let lasso_before =
            (self.stage == Stage::Lasso).then(|| (self.lasso.clone(), self.lasso_rounds));
        let stage_before = self.stage;
        let combat_before = matches!(self.stage, Stage::ComBat(_) | Stage::Moments).then(|| {
            (
                self.combat.clone(),
                self.models.clone(),
                self.combat_levels.clone(),
            )
        });
        self.sites.retain(|s| !dropped.contains(s));
        let restarted = (|| {
            if combat_before.is_some() {
                let shape = self.restart_combat()?;
                let tasks = self.tasks();
                let secure = self.secure.as_mut().expect("checked above");
                return secure.restart_without_reshaped(dropped, tasks, shape);
            }
            if self.stage == Stage::Fit {
                self.start_fit_drivers()?;
            }
            if self.stage == Stage::Lasso {
                // Every LASSO fit of the batch has summed the dropped sites' rows since its
                // moments round: each starts again over the survivors (moments first, so the
                // round's shape changes too). The LASSO standardises every fit by its own
                // weighted mean and SD, so the batch's z-score, which the dropped sites took
                // part in, does not change the fits; the ComBat models they took part in do.
                for i in 0..self.lasso.len() {
                    let fit = self.lasso[i].0;
                    self.lasso[i].1 = LassoDriver::new(self.lasso_config(fit))
                        .map_err(|e| format!("LASSO: {e}"))?;
                }
                self.lasso_rounds = 0;
                let requests: Vec<_> = self
                    .lasso
                    .iter()
                    .map(|(id, d)| (*id, d.next_requests()))
                    .collect();
                let shape =
                    crate::lasso::secure::pipeline_shape(self.spec.features.len(), &requests);
                let tasks = self.tasks();
                let secure = self.secure.as_mut().expect("checked above");
                return secure.restart_without_reshaped(dropped, tasks, shape);
            }
            if self.stage == Stage::Metrics
                && self
                    .metrics
                    .as_ref()
                    .is_some_and(|m| m.follow_up_shape().is_some())
            {
                // The masked follow-up's placements, cut-off and cells come from the score round
                // the dropped sites were summed into: the metrics stage starts again from its
                // score round over the survivors.
                self.metrics = Some(MetricsDriver::new(&self.spec, survivors).secure(true));
                let tasks = self.tasks();
                let shape = super::secure::scores_shape(&self.spec);
                let secure = self.secure.as_mut().expect("checked above");
                return secure.restart_without_reshaped(dropped, tasks, shape);
            }
            let tasks = self.tasks();
            let secure = self.secure.as_mut().expect("checked above");
            secure.restart_without(dropped, tasks)
        })();
        match restarted {
            Ok(t) => {
                let why = format!(
                    "missed the deadline of masked round {round} ({}); the round was restarted without it",
                    stage_before.name()
                );
                for site in dropped {
                    if let Some(st) = self
                        .summary
                        .sites
                        .iter_mut()
                        .find(|t| t.site == site.as_str())
                    {
                        st.dropped = Some(why.clone());
                    }
                    self.dropped.push((site.clone(), why.clone()));
                }
                Ok(t)
            }
            Err(e) => {
                (self.sites, self.mlp, self.clinical) = before;
                self.metrics = metrics_before;
                if let Some((lasso, rounds)) = lasso_before {
                    (self.lasso, self.lasso_rounds) = (lasso, rounds);
                }
                if let Some((combat, models, levels)) = combat_before {
                    (self.combat, self.models, self.combat_levels) = (combat, models, levels);
                    self.stage = stage_before;
                }
                Err(e)
            }
        }
    }

    /// The batch's ComBat starts again from its cross-products round over the sites left
    /// (`self.sites`, after a masked ComBat or z-score round missed a site): each fit's design is
    /// rebuilt from the survivors' answers to the levels round (batches nest in sites, so the
    /// dropped sites' batches leave the design), and what was fitted since (regression, pooled
    /// variance, models) is discarded. Returns the restarted round's shape.
    fn restart_combat(&mut self) -> Result<crate::secure::SumShape, String> {
        if self.combat_levels.is_empty() {
            return Err(
                "the batch's ComBat levels were not kept (a state from an earlier release)".into(),
            );
        }
        self.combat_levels.retain(|(s, _)| self.sites.contains(s));
        for (i, f) in self.combat.iter_mut().enumerate() {
            let levels: Vec<SiteLevels> = self
                .combat_levels
                .iter()
                .map(|(_, l)| pick(l, i, f.fit).cloned())
                .collect::<Result<_, _>>()?;
            f.design = Some(
                DesignSpec::from_site_levels(&[], &levels).map_err(|e| format!("ComBat: {e}"))?,
            );
            f.regression = None;
            f.global = None;
        }
        self.models.clear();
        self.stage = Stage::ComBat(1);
        self.stage_rounds = 0;
        super::secure::combat_shape(&self.stage_task(), self.spec.features.len())
            .ok_or_else(|| "a ComBat round without a masked shape".into())
    }

    fn record_fits(&mut self) -> Result<(), String> {
        let mlp = match &self.mlp {
            Some(m) => Some(m.result().map_err(|e| format!("meta-model: {e}"))?),
            None => None,
        };
        let clinical = self.clinical.as_ref().and_then(LogisticDriver::results);
        for (i, &fit) in self.fits.iter().enumerate() {
            let m = mlp.as_ref().and_then(|m| m.get(&fit));
            self.summary.per_fit.push(FitRecord {
                fit,
                preprocessing_digest: digest(&(&self.models[i].1, &self.standardizers[i].1)),
                selected: self.selected[i].1.clone(),
                lambda_min: self.lambda_min[i],
                mlp_objective: m.map(|m| m.objective),
                mlp_digest: m.map_or_else(String::new, |m| digest(&m.model.weights)),
                clinical_coef: clinical.as_ref().map(|c| c[i].coef.clone()),
            });
        }
        Ok(())
    }

    fn lasso_config(&self, fit: FitId) -> LassoConfig {
        let l = &self.spec.lasso;
        let mut c = LassoConfig::new(self.spec.features.len(), l.nfolds);
        c.nlambda = l.nlambda;
        c.bootstrap = Some(BootstrapConfig {
            replicates: l.bootstrap,
            seed: lasso_seed(self.spec.cv.seed, fit),
            top_k: l.top_k,
            lambda: BootstrapLambda::MainLambdaMin,
        });
        // The sites keep each fit's standardisation between rounds (`SitePipelineState`).
        c.standardisation_once = true;
        // On z-scored features every sub-fit's standardisation is a mild affine map of the
        // main fit's, so the sites answer in their row bases; masked rounds need sums that add
        // up across sites, which those are not.
        c.hessian_basis = !self.spec.secure_aggregation;
        c
    }
}

/// What a round's answers are under secure aggregation.
enum SecureIn {
    /// The key round (keys recorded; nothing for the stage machine).
    Keys,
    /// A masked round's opened sum under the pseudo-site `masked-sum`.
    Opened(BTreeMap<SiteId, ResultBody>),
    /// A plain round (or a plain study).
    Plain,
}

/// The `i`-th entry of a site's per-fit answer, checked to be for `fit`.
fn pick<T>(list: &[(FitId, T)], i: usize, fit: FitId) -> Result<&T, String> {
    match list.get(i) {
        Some((id, v)) if *id == fit => Ok(v),
        _ => Err(format!(
            "a site's answer does not list fit (repeat {}, fold {}) in position {i}",
            fit.repeat, fit.fold
        )),
    }
}
