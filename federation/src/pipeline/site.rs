//! Site half of a pipeline study: each stage on the site's own rows, and the little state a site
//! keeps between stages (fitted preprocessing, its own base models until they are relayed, the
//! meta-features, and each patient's running sum of validation probabilities).
//!
//! The state is the site's own and never leaves it; the agent persists it next to its audit log
//! so an agent restart loses nothing. Answers are idempotent: a repeated round (the aggregator
//! restarted before recording the answer) gets the stored answer again, so no validation
//! probability is ever counted twice.

use super::messages::{
    ColumnReport, FitComBat, PipelineTask, StageResult, StageTask, TrainOutcome,
};
use super::spec::PipelineSpec;
use crate::harmonize::{self, HarmonizeError, SiteRows};
use crate::lasso::site_key;
use crate::policy::SitePolicy;
use crate::study::HarmonizeSpec;
use crate::table::{SiteTable, TableError};
use crate::task::BatchSource;
use learners::driver::{FitRows, site_mlp_sums};
use learners::mlp::MlpModel;
use learners::site::{SharedModel, SiteModels, SiteOutcome, fit_seed, train_site};
use learners::stacking::meta_features;
use learners::{FitId, LearnerKind, ProbabilisticModel, SiteFit, SitePlan};
use models::combat::{self, ComBatModel, ComBatRows};
use models::logistic::{LogisticRequest, site_logistic_sums};
use models::sampling::{SiteData, WeightSpec, assign_stratified_folds};
use models::standardize::Standardizer;
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Why a site cannot answer a pipeline round.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(transparent)]
    Harmonize(#[from] HarmonizeError),
    #[error("column {column:?} has a missing value (row {row}); the pipeline needs complete rows")]
    Missing { column: String, row: usize },
    #[error(
        "clinical column {column:?} row {row} holds {value:?}, which is not one of the declared levels {levels:?}"
    )]
    UnknownLevel {
        column: String,
        row: usize,
        value: String,
        levels: Vec<String>,
    },
    #[error("{0}")]
    Disclosure(String),
    #[error("{0}")]
    Protocol(String),
    #[error("{0}")]
    Models(#[from] models::ModelsError),
    #[error("{0}")]
    Learners(#[from] learners::LearnerError),
}

impl PipelineError {
    /// What may leave the site (no patient ids or values).
    pub fn public_message(&self) -> String {
        match self {
            PipelineError::Table(TableError::NotNumeric { column, .. }) => format!(
                "column {column:?} holds a value that is not a number at this site (details in the agent's log)"
            ),
            PipelineError::Table(TableError::MissingColumn { column, .. }) => {
                format!("column {column:?} is missing from this site's table")
            }
            PipelineError::Table(TableError::BadLabel { column, .. }) => format!(
                "label column {column:?} holds an unexpected value at this site (details in the agent's log)"
            ),
            PipelineError::Harmonize(h) => h.public_message(),
            PipelineError::Missing { column, .. } => format!(
                "column {column:?} has missing values at this site; the pipeline needs complete rows"
            ),
            PipelineError::UnknownLevel { column, levels, .. } => format!(
                "clinical column {column:?} holds a level outside the study's declared levels {levels:?} at this site"
            ),
            other => other.to_string(),
        }
    }
}

type Result<T> = std::result::Result<T, PipelineError>;

/// Serialises a `BTreeMap<FitId, T>` as a list of pairs (JSON object keys must be strings).
mod pairs {
    use super::*;
    use serde::{Deserializer, Serializer};
    pub fn serialize<S: Serializer, T: Serialize>(
        m: &BTreeMap<FitId, T>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(m.iter())
    }
    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> std::result::Result<BTreeMap<FitId, T>, D::Error> {
        let v: Vec<(FitId, T)> = Vec::deserialize(d)?;
        Ok(v.into_iter().collect())
    }
}

/// Meta-features of one fit at this site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitMeta {
    /// Training rows × learner types (own models contribute out-of-fold values).
    pub train: Array2<f64>,
    pub train_y: Vec<bool>,
    /// Validation rows × learner types.
    pub test: Array2<f64>,
}

/// Running mean of each patient's validation probabilities over repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreSums {
    pub sum: Vec<f64>,
    pub count: Vec<u32>,
}

impl ScoreSums {
    fn new(n: usize) -> Self {
        Self {
            sum: vec![0.0; n],
            count: vec![0; n],
        }
    }
    fn add(&mut self, rows: &[usize], probs: &[f64]) {
        for (&r, &p) in rows.iter().zip(probs) {
            self.sum[r] += p;
            self.count[r] += 1;
        }
    }
    /// Each row's mean probability, `None` for rows never scored.
    pub fn means(&self) -> Vec<Option<f64>> {
        self.sum
            .iter()
            .zip(&self.count)
            .map(|(s, &c)| (c > 0).then(|| s / f64::from(c)))
            .collect()
    }
}

/// Everything a site keeps for one pipeline study.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SitePipelineState {
    /// The last answered round and its answer (idempotent repeats).
    pub last: Option<(u32, StageResult)>,
    /// The batch the per-fit state below belongs to.
    pub batch: u32,
    #[serde(with = "pairs")]
    pub combat: BTreeMap<FitId, ComBatModel>,
    #[serde(with = "pairs")]
    pub standardizers: BTreeMap<FitId, Standardizer>,
    #[serde(with = "pairs")]
    pub selected: BTreeMap<FitId, Vec<usize>>,
    #[serde(with = "pairs")]
    pub own_models: BTreeMap<FitId, SiteModels>,
    #[serde(with = "pairs")]
    pub meta: BTreeMap<FitId, FitMeta>,
    /// Per-patient sums of the stacked model's validation probabilities (all batches).
    pub ml: Option<ScoreSums>,
    /// Same for the clinical comparator.
    pub clinical: Option<ScoreSums>,
    /// (repeat, fold) pairs already added to the sums.
    pub scored: Vec<FitId>,
    /// Each outer fit's LASSO sub-fit standardisations, kept from the round that carried them
    /// (the pipeline's LASSO sends each only once: `LassoConfig::standardisation_once`), for
    /// the batch's LASSO stage only. Persisted, because the aggregator will not send them again,
    /// but not with the rest of the state: each change is also written to `kept_std_log`, which
    /// the agent appends to a journal of its own (`SiteMemory::take_kept_std`). Rewriting the
    /// whole memory file (up to 15 MB of JSON) for every LASSO round that brought new ones cost
    /// more than a tenth of a batch's CPU.
    #[serde(skip)]
    pub lasso_std: BTreeMap<FitId, models::lasso::KeptStandardisations>,
    /// The changes to `lasso_std` since the agent last took them, in order.
    #[serde(skip)]
    pub kept_std_log: Vec<KeptStdEntry>,
    /// Set when an answer changed what must survive an agent restart (fitted preprocessing,
    /// models, meta-features, score sums). The pure rounds (ComBat, LASSO and meta-model sums)
    /// leave it unset: a restarted agent recomputes them identically, so they need no write.
    #[serde(skip)]
    pub dirty: bool,
    /// Each fit's LASSO rows (harmonised, z-scored outer training rows, labels, CV folds),
    /// derived from `combat` and `standardizers` once per batch instead of once per round.
    #[serde(skip)]
    pub lasso_rows: LassoRows,
}

/// One change to a site's kept LASSO standardisations ([`SitePipelineState::lasso_std`]), as
/// the agent journals it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeptStdEntry {
    /// Every kept standardisation of the study is dropped (a new batch, or the LASSO stage is
    /// over).
    Clear,
    /// Sub-fit `sub` of outer fit `fit` keeps `std`.
    Keep {
        fit: FitId,
        sub: u32,
        std: models::lasso::KeptStandardisation,
    },
}

impl SitePipelineState {
    /// Applies a journalled change (an agent restoring its memory).
    pub fn apply_kept_std(&mut self, entry: KeptStdEntry) {
        match entry {
            KeptStdEntry::Clear => self.lasso_std.clear(),
            KeptStdEntry::Keep { fit, sub, std } => {
                self.lasso_std.entry(fit).or_default().0.insert(sub, std);
            }
        }
    }

    fn clear_kept_std(&mut self) {
        if !self.lasso_std.is_empty() {
            self.lasso_std.clear();
            self.kept_std_log.clear();
            self.kept_std_log.push(KeptStdEntry::Clear);
        }
    }
}

/// A cache of what the LASSO rounds of a batch read: `SiteData` per fit, built from the
/// fit's frozen ComBat model and z-score. It is a pure function of persisted state, so it is not
/// persisted (a restarted agent rebuilds it on the next round) and takes no part in comparing
/// states: two states are equal when what they persist is.
#[derive(Clone, Default)]
pub struct LassoRows(BTreeMap<FitId, (Arc<SiteData>, models::lasso::BasisCache)>);

impl PartialEq for LassoRows {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for LassoRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LassoRows({} fits cached)", self.0.len())
    }
}

/// The site's rows, read once per answer.
pub struct SiteInputs {
    pub site: String,
    pub labels: Vec<bool>,
    pub combat_rows: SiteRows,
    pub plan: SitePlan,
    /// Clinical design (rows × columns, no intercept), when the study has a comparator.
    pub clinical: Option<Array2<f64>>,
    /// Survival columns for the metrics stage (`super::metrics::read_survival`).
    pub survival: Option<std::result::Result<super::metrics::SurvivalColumns, String>>,
}

/// Reads and checks the site's table for the spec.
pub fn site_inputs(table: &SiteTable, spec: &PipelineSpec, site: &str) -> Result<SiteInputs> {
    let labels: Vec<bool> = table
        .label_column(
            &spec.label_column,
            &spec.positive_label,
            &spec.negative_label,
        )?
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            l.ok_or(PipelineError::Missing {
                column: spec.label_column.clone(),
                row: i + 1,
            })
        })
        .collect::<Result<_>>()?;
    let hspec = HarmonizeSpec {
        secure_aggregation: false,
        features: spec.features.clone(),
        batch_column: spec.batch_column.clone(),
        covariates: vec![],
        categorical: vec![],
        mode: spec.combat_mode,
        on_masked_dropout: Default::default(),
    };
    let batch = match &spec.batch_column {
        Some(c) => BatchSource::Column(c.clone()),
        None => BatchSource::Label(site.to_string()),
    };
    let combat_rows = harmonize::site_rows(table, &hspec, &batch)?;
    let plan = SitePlan::new(spec.cv.scheme(), site, &labels)?;
    let clinical = match &spec.clinical {
        None => None,
        Some(c) => {
            let names = c.column_names();
            let mut x = Array2::zeros((labels.len(), names.len()));
            let mut col = 0;
            for name in &c.numeric {
                for (i, v) in table.numeric_column(name)?.into_iter().enumerate() {
                    x[[i, col]] = v.ok_or(PipelineError::Missing {
                        column: name.clone(),
                        row: i + 1,
                    })?;
                }
                col += 1;
            }
            for cat in &c.categorical {
                let values = table.text_column(&cat.column)?;
                for (i, v) in values.into_iter().enumerate() {
                    let v = v.ok_or(PipelineError::Missing {
                        column: cat.column.clone(),
                        row: i + 1,
                    })?;
                    let level = cat.levels.iter().position(|l| l == v).ok_or_else(|| {
                        PipelineError::UnknownLevel {
                            column: cat.column.clone(),
                            row: i + 1,
                            value: v.to_string(),
                            levels: cat.levels.clone(),
                        }
                    })?;
                    if level > 0 {
                        x[[i, col + level - 1]] = 1.0;
                    }
                }
                col += cat.levels.len() - 1;
            }
            Some(x)
        }
    };
    Ok(SiteInputs {
        site: site.to_string(),
        labels,
        combat_rows,
        plan,
        clinical,
        survival: super::metrics::read_survival(table, spec),
    })
}

/// One parsed table in [`INPUTS`].
struct CachedInputs {
    table: SiteTable,
    spec: PipelineSpec,
    site: String,
    inputs: Arc<SiteInputs>,
}

/// How many parsed tables [`INPUTS`] keeps (a simulation answers for every site in one process;
/// a real agent has one table).
const INPUTS_CAPACITY: usize = 64;

/// The inputs of the tables this process answered pipeline rounds for, most recently used last.
/// A pipeline study asks each site for hundreds of rounds; parsing the table's text cells every
/// round cost more than most rounds' arithmetic. An entry is reused only for an identical table
/// (every cell compared), spec and site id, so the answer is exactly what [`site_inputs`]
/// returns; errors are not cached.
static INPUTS: Mutex<Vec<CachedInputs>> = Mutex::new(Vec::new());

/// [`site_inputs`] through the [`INPUTS`] cache.
pub fn site_inputs_cached(
    table: &SiteTable,
    spec: &PipelineSpec,
    site: &str,
) -> Result<Arc<SiteInputs>> {
    // A poisoned lock only means another thread panicked mid-update of a plain Vec whose
    // entries are pushed whole, so the cache stays usable.
    let lock = || {
        INPUTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    {
        let mut cache = lock();
        if let Some(i) = cache
            .iter()
            .position(|c| c.site == site && c.spec == *spec && c.table == *table)
        {
            let hit = cache.remove(i);
            let inputs = hit.inputs.clone();
            cache.push(hit);
            return Ok(inputs);
        }
    }
    let inputs = Arc::new(site_inputs(table, spec, site)?);
    let mut cache = lock();
    if cache.len() >= INPUTS_CAPACITY {
        cache.remove(0);
    }
    cache.push(CachedInputs {
        table: table.clone(),
        spec: spec.clone(),
        site: site.to_string(),
        inputs: inputs.clone(),
    });
    Ok(inputs)
}

impl SiteInputs {
    fn fit(&self, id: FitId) -> Result<&SiteFit> {
        Ok(self.plan.fit(id)?)
    }

    /// ComBat rows of a subset.
    fn combat_subset(&self, rows: &[usize]) -> SiteRows {
        let r = &self.combat_rows;
        SiteRows {
            batch: rows.iter().map(|&i| r.batch[i].clone()).collect(),
            covariates: vec![],
            features: r.features.select(Axis(0), rows),
        }
    }

    fn labels_of(&self, rows: &[usize]) -> Vec<bool> {
        rows.iter().map(|&i| self.labels[i]).collect()
    }

    /// Harmonised and z-scored rows of a subset with the fit's frozen preprocessing.
    fn preprocessed(
        &self,
        state: &SitePipelineState,
        id: FitId,
        rows: &[usize],
    ) -> Result<Array2<f64>> {
        let model = state
            .combat
            .get(&id)
            .ok_or_else(|| lost("ComBat model", id))?;
        let z = state
            .standardizers
            .get(&id)
            .ok_or_else(|| lost("z-score", id))?;
        let sub = self.combat_subset(rows);
        let h = model.apply(&sub.view())?;
        Ok(z.transform(h.view())?)
    }
}

fn lost(what: &str, id: FitId) -> PipelineError {
    PipelineError::Protocol(format!(
        "this site has no {what} for fit (repeat {}, fold {}): its local study state was lost or the aggregator skipped a stage; restart the study",
        id.repeat, id.fold
    ))
}

/// Seed of the LASSO's CV folds and bootstrap inside one outer fit.
pub fn lasso_seed(cv_seed: u64, id: FitId) -> u64 {
    learners::rng::derive_seed(cv_seed, &[0x1A55, u64::from(id.repeat), u64::from(id.fold)])
}

/// Global id of a fit among all repeats (the clinical driver's fit id).
pub fn fit_index(spec: &PipelineSpec, id: FitId) -> u32 {
    id.repeat * spec.cv.outer_folds + id.fold
}

/// Answers one pipeline round. `state` is this study's state at this site.
pub fn site_answer(
    table: &SiteTable,
    spec: &PipelineSpec,
    task: &PipelineTask,
    round: u32,
    policy: &SitePolicy,
    state: &mut SitePipelineState,
) -> Result<StageResult> {
    if let Some((r, answer)) = &state.last
        && *r == round
    {
        return Ok(answer.clone());
    }
    if matches!(task.stage, StageTask::Columns) {
        // Answered before the inputs are read: they need the features this round resolves.
        let n = table.n_rows();
        if n > 0 && (n as u64) < policy.min_count {
            return Err(PipelineError::Disclosure(format!(
                "this site has {n} patients, fewer than its min_count; it cannot take part"
            )));
        }
        return Ok(StageResult::Columns(column_report(table)));
    }
    let resolved;
    let spec = match (spec.resolves_features(), task.features.is_empty()) {
        (false, true) => spec,
        (false, false) => {
            return Err(PipelineError::Protocol(
                "the study file lists its features, but the aggregator sent a feature list of its own; refusing".into(),
            ));
        }
        (true, true) => {
            return Err(PipelineError::Protocol(
                "the study resolves its features from the sites' columns, but this round names none; the aggregator skipped the column round".into(),
            ));
        }
        (true, false) => {
            check_resolved_features(table, spec, &task.features)?;
            resolved = PipelineSpec {
                features: task.features.clone(),
                ..spec.clone()
            };
            &resolved
        }
    };
    let inputs = site_inputs_cached(table, spec, &task.site)?;
    if state.batch != task.batch {
        // A new batch of repeats: the per-fit state of the previous one is no longer needed.
        let keep = (
            state.ml.take(),
            state.clinical.take(),
            std::mem::take(&mut state.scored),
        );
        *state = SitePipelineState {
            batch: task.batch,
            dirty: true,
            ml: keep.0,
            clinical: keep.1,
            scored: keep.2,
            ..SitePipelineState::default()
        };
    }
    let n = inputs.labels.len();
    if n > 0 && (n as u64) < policy.min_count {
        return Err(PipelineError::Disclosure(format!(
            "this site has {n} patients, fewer than its min_count; it cannot take part"
        )));
    }
    let result = match &task.stage {
        StageTask::Columns => unreachable!("answered above"),
        StageTask::ComBat { round, fits } => combat_round(&inputs, spec, policy, *round, fits)?,
        StageTask::Moments { models } => {
            let mut out = Vec::new();
            state.lasso_rows.0.clear();
            for (id, model) in models {
                state.combat.insert(*id, model.clone());
                let fit = inputs.fit(*id)?;
                let h = model.apply(&inputs.combat_subset(&fit.train).view())?;
                out.push((*id, models::standardize::site_moments(h.view())?));
            }
            StageResult::Moments(out)
        }
        StageTask::Lasso {
            standardizers,
            requests,
        } => {
            if !standardizers.is_empty() {
                // New preprocessing (the batch's first LASSO round): rows derived from the old
                // one are stale, and so are the standardisations the last batch's fits kept.
                state.lasso_rows.0.clear();
                state.clear_kept_std();
            }
            for (id, z) in standardizers {
                state.standardizers.insert(*id, z.clone());
            }
            let key =
                site_key(&crate::ids::SiteId::new(&inputs.site).map_err(|e| {
                    PipelineError::Protocol(format!("site id {:?}: {e}", inputs.site))
                })?);
            let mut out = Vec::new();
            for (id, reqs) in requests {
                let data = match state.lasso_rows.0.get(id) {
                    Some((d, _)) => d.clone(),
                    None => {
                        let fit = inputs.fit(*id)?;
                        let x = inputs.preprocessed(state, *id, &fit.train)?;
                        let y: Vec<f64> = inputs
                            .labels_of(&fit.train)
                            .into_iter()
                            .map(|b| f64::from(u8::from(b)))
                            .collect();
                        let folds = assign_stratified_folds(
                            &y,
                            spec.lasso.nfolds,
                            lasso_seed(spec.cv.seed, *id),
                            key,
                        );
                        let d = Arc::new(SiteData {
                            site_id: key,
                            x,
                            y,
                            fold_schemes: vec![folds],
                        });
                        state
                            .lasso_rows
                            .0
                            .insert(*id, (d.clone(), Default::default()));
                        d
                    }
                };
                let kept = state.lasso_std.entry(*id).or_default();
                let cache = &mut state
                    .lasso_rows
                    .0
                    .get_mut(id)
                    .ok_or_else(|| {
                        PipelineError::Protocol("the LASSO rows were not cached".into())
                    })?
                    .1;
                let (sums, changed) = models::lasso::site_irls_sums_keeping_cached(
                    &data,
                    reqs,
                    policy.max_params_per_row,
                    kept,
                    cache,
                )?;
                // A kept standardisation must survive a restart (it is not sent again): the
                // agent journals it.
                for sub in changed {
                    state.kept_std_log.push(KeptStdEntry::Keep {
                        fit: *id,
                        sub,
                        std: kept.0[&sub].clone(),
                    });
                }
                out.push((*id, sums));
            }
            StageResult::Lasso(out)
        }
        StageTask::Train { selected } => {
            // The LASSO stage is over: its kept standardisations are not needed any more.
            state.clear_kept_std();
            let mut out = Vec::new();
            for (id, sel) in selected {
                state.selected.insert(*id, sel.clone());
                let fit = inputs.fit(*id)?;
                let x = inputs
                    .preprocessed(state, *id, &fit.train)?
                    .select(Axis(1), sel);
                let y = inputs.labels_of(&fit.train);
                let seed = fit_seed(spec.cv.seed, *id, &inputs.site);
                let outcome = match train_site(x.view(), &y, &fit.inner_fold, &spec.learners, seed)?
                {
                    SiteOutcome::Trained(m) => {
                        let shared = if policy.share_models {
                            m.shareable(&inputs.site)
                        } else {
                            vec![]
                        };
                        state.own_models.insert(*id, m);
                        TrainOutcome {
                            n_train: fit.train.len() as u32,
                            refused: None,
                            shared,
                        }
                    }
                    SiteOutcome::Refused(r) => TrainOutcome {
                        n_train: fit.train.len() as u32,
                        refused: Some(r.to_string()),
                        shared: vec![],
                    },
                };
                out.push((*id, outcome));
            }
            StageResult::Trained(out)
        }
        StageTask::Relay { models } => {
            let mut fits = 0;
            let mut rows = 0;
            for (id, others) in models {
                let fit = inputs.fit(*id)?;
                let sel = state
                    .selected
                    .get(id)
                    .ok_or_else(|| lost("feature selection", *id))?
                    .clone();
                let own = state.own_models.remove(id);
                let mut available: Vec<SharedModel> = others
                    .iter()
                    .filter(|m| m.site != inputs.site)
                    .cloned()
                    .collect();
                if let Some(m) = &own {
                    available.extend(m.shareable(&inputs.site));
                }
                if available.is_empty() {
                    // No site trained for this fit: its rows get no meta-features.
                    continue;
                }
                let xtr = inputs
                    .preprocessed(state, *id, &fit.train)?
                    .select(Axis(1), &sel);
                let xte = inputs
                    .preprocessed(state, *id, &fit.test)?
                    .select(Axis(1), &sel);
                let train = meta_features(
                    &inputs.site,
                    xtr.view(),
                    own.as_ref(),
                    &available,
                    &LearnerKind::ALL,
                )?;
                let test = meta_features(
                    &inputs.site,
                    xte.view(),
                    None,
                    &available,
                    &LearnerKind::ALL,
                )?;
                fits += 1;
                rows += fit.train.len() as u32;
                state.meta.insert(
                    *id,
                    FitMeta {
                        train,
                        train_y: inputs.labels_of(&fit.train),
                        test,
                    },
                );
            }
            StageResult::Relayed { fits, rows }
        }
        StageTask::Fit { mlp, clinical } => {
            let rows: BTreeMap<FitId, FitRows> = state
                .meta
                .iter()
                .map(|(id, m)| {
                    (
                        *id,
                        FitRows {
                            x: m.train.clone(),
                            y: m.train_y.clone(),
                        },
                    )
                })
                .collect();
            let mlp_spec = spec.meta.mlp(LearnerKind::ALL.len());
            let mlp_sums = site_mlp_sums(&mlp_spec, mlp, &rows)?;
            let mut clin = Vec::new();
            for (id, beta) in clinical {
                let fit = inputs.fit(*id)?;
                let data = clinical_data(&inputs, &fit.train)?;
                let req = LogisticRequest {
                    fit_id: fit_index(spec, *id),
                    weights: WeightSpec::default(),
                    beta: beta.clone(),
                };
                let mut reply = site_logistic_sums(&data, &[req], policy.max_params_per_row)?;
                clin.push((*id, reply.remove(0)));
            }
            StageResult::Fit {
                mlp: mlp_sums,
                clinical: clin,
            }
        }
        StageTask::Score { mlp, clinical } => {
            let ml = state.ml.get_or_insert_with(|| ScoreSums::new(n));
            let mut fits = 0;
            let mut rows = 0;
            for (id, weights) in mlp {
                if state.scored.contains(id) {
                    continue;
                }
                let Some(meta) = state.meta.get(id) else {
                    continue;
                };
                let fit = inputs.fit(*id)?;
                let model = MlpModel {
                    spec: spec.meta.mlp(LearnerKind::ALL.len()),
                    weights: weights.clone(),
                };
                let p = model.predict_proba(meta.test.view())?;
                ml.add(&fit.test, &p);
                fits += 1;
                rows += fit.test.len() as u32;
            }
            if let Some(x) = &inputs.clinical {
                let cl = state.clinical.get_or_insert_with(|| ScoreSums::new(n));
                for (id, beta) in clinical {
                    if state.scored.contains(id) {
                        continue;
                    }
                    let fit = inputs.fit(*id)?;
                    let p: Vec<f64> = fit
                        .test
                        .iter()
                        .map(|&i| {
                            let eta = beta[0]
                                + x.row(i)
                                    .iter()
                                    .zip(&beta[1..])
                                    .map(|(a, b)| a * b)
                                    .sum::<f64>();
                            1.0 / (1.0 + (-eta).exp())
                        })
                        .collect();
                    cl.add(&fit.test, &p);
                }
            }
            for (id, _) in mlp.iter().chain(clinical) {
                if !state.scored.contains(id) {
                    state.scored.push(*id);
                }
            }
            StageResult::Scored { fits, rows }
        }
        StageTask::Metrics(m) => {
            StageResult::Metrics(super::metrics::site_answer(&inputs, m, policy, state)?)
        }
    };
    state.dirty |= match &task.stage {
        StageTask::Columns
        | StageTask::ComBat { .. }
        | StageTask::Fit { .. }
        | StageTask::Metrics(_) => false,
        StageTask::Lasso { standardizers, .. } => !standardizers.is_empty(),
        StageTask::Moments { .. }
        | StageTask::Train { .. }
        | StageTask::Relay { .. }
        | StageTask::Score { .. } => true,
    };
    // The answer is kept for a repeated round only where answering again would not give the
    // same answer or would count twice (stages that change the site's state). A pure round
    // (ComBat, LASSO and meta-model sums: functions of the task and of state it does not
    // change) is simply recomputed, bit for bit the same; keeping its answer meant copying
    // megabytes of LASSO sums every round.
    let pure = matches!(
        task.stage,
        StageTask::ComBat { .. } | StageTask::Lasso { .. } | StageTask::Fit { .. }
    );
    if !pure {
        state.last = Some((round, result.clone()));
    }
    Ok(result)
}

/// The site's columns by kind, names only (the [`StageTask::Columns`] answer). The patient-id
/// column is left out whatever its cells hold.
pub fn column_report(table: &SiteTable) -> ColumnReport {
    let mut out = ColumnReport::default();
    for name in table.header() {
        if table.id_column_name() == Some(name.as_str()) {
            continue;
        }
        let Ok(cells) = table.text_column(name) else {
            continue;
        };
        let numeric = |v: &str| v.parse::<f64>().is_ok_and(f64::is_finite);
        if cells.iter().flatten().any(|v| !numeric(v)) {
            out.text.push(name.clone());
        } else if cells.iter().any(Option::is_none) {
            out.incomplete.push(name.clone());
        } else {
            out.numeric.push(name.clone());
        }
    }
    out
}

/// Checks the feature list an aggregator resolved against the study's rules before using it:
/// none of the study's excluded columns (label, batch, clinical, survival, `exclude_columns`),
/// not this site's patient-id column, no name twice. A column the table lacks or that is not
/// numeric is caught when the table is read, as for a listed feature.
fn check_resolved_features(
    table: &SiteTable,
    spec: &PipelineSpec,
    features: &[String],
) -> Result<()> {
    let excluded = spec.excluded_columns();
    let mut seen = std::collections::BTreeSet::new();
    for f in features {
        if excluded.contains(f) || table.id_column_name() == Some(f.as_str()) {
            return Err(PipelineError::Protocol(format!(
                "the aggregator's feature list names {f:?}, which the study excludes from the features; refusing"
            )));
        }
        if !seen.insert(f) {
            return Err(PipelineError::Protocol(format!(
                "the aggregator's feature list names {f:?} twice; refusing"
            )));
        }
    }
    Ok(())
}

fn clinical_data(inputs: &SiteInputs, rows: &[usize]) -> Result<SiteData> {
    let x = inputs
        .clinical
        .as_ref()
        .ok_or_else(|| PipelineError::Protocol("the study has no clinical comparator".into()))?;
    Ok(SiteData {
        site_id: 0,
        x: x.select(Axis(0), rows),
        y: inputs
            .labels_of(rows)
            .into_iter()
            .map(|b| f64::from(u8::from(b)))
            .collect(),
        fold_schemes: vec![],
    })
}

fn combat_round(
    inputs: &SiteInputs,
    spec: &PipelineSpec,
    policy: &SitePolicy,
    round: u8,
    fits: &[FitComBat],
) -> Result<StageResult> {
    let options = harmonize::options(spec.combat_mode);
    let mut levels = Vec::new();
    let mut xps = Vec::new();
    let mut rss = Vec::new();
    let mut est = Vec::new();
    for f in fits {
        let fit = inputs.fit(f.fit)?;
        let rows = inputs.combat_subset(&fit.train);
        let view: ComBatRows = rows.view();
        match round {
            0 => levels.push((f.fit, combat::site_levels(&rows.batch, &rows.covariates))),
            1 => {
                let d = f.design.as_ref().ok_or_else(|| incomplete("design"))?;
                harmonize::check_counts(&rows, policy, d)?;
                xps.push((f.fit, combat::site_cross_products(d, &view)?));
            }
            2 => {
                let r = f
                    .regression
                    .as_ref()
                    .ok_or_else(|| incomplete("regression"))?;
                harmonize::check_counts(&rows, policy, &r.spec)?;
                rss.push((f.fit, combat::site_residuals(r, &view)?));
            }
            _ => {
                let g = f.global.as_ref().ok_or_else(|| incomplete("global fit"))?;
                harmonize::check_counts(&rows, policy, &g.fit.spec)?;
                est.push((f.fit, combat::site_estimate(g, &view, &options)?));
            }
        }
    }
    Ok(match round {
        0 => StageResult::ComBatLevels(levels),
        1 => StageResult::ComBatCrossProducts(xps),
        2 => StageResult::ComBatResiduals(rss),
        _ => StageResult::ComBatEstimates(est),
    })
}

fn incomplete(what: &str) -> PipelineError {
    PipelineError::Protocol(format!(
        "the ComBat task is missing its {what}; the aggregator sent an incomplete round"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::study::{AnalysisSpec, StudySpec};

    fn spec() -> PipelineSpec {
        let text = r#"
id = "inputs-cache"
[analysis]
kind = "pipeline"
label_column = "response"
features = ["f1", "f2"]
[analysis.cv]
seed = 3
repeats = 1
outer_folds = 2
inner_folds = 2
repeats_per_batch = 1
[analysis.lasso]
top_k = 1
"#;
        match StudySpec::from_toml(text).unwrap().analysis {
            AnalysisSpec::Pipeline(p) => *p,
            other => panic!("not a pipeline: {other:?}"),
        }
    }

    fn table(cell: &str) -> SiteTable {
        SiteTable::new(
            vec!["response".into(), "f1".into(), "f2".into()],
            (0..20)
                .map(|i| {
                    vec![
                        (i % 2).to_string(),
                        if i == 7 {
                            cell.into()
                        } else {
                            format!("{i}.5")
                        },
                        format!("{}", i * i),
                    ]
                })
                .collect(),
        )
        .unwrap()
    }

    /// The parsed-inputs cache hands back the same parse for the same table, spec and site, and
    /// parses anew when one cell, the site or the spec differs; what it returns is what
    /// parsing returns.
    #[test]
    fn the_inputs_cache_is_reused_only_for_the_same_table_spec_and_site() {
        let spec = spec();
        let (t1, t2) = (table("41.25"), table("41.5"));
        let a = site_inputs_cached(&t1, &spec, "A").unwrap();
        let fresh = site_inputs(&t1, &spec, "A").unwrap();
        assert_eq!(a.labels, fresh.labels);
        assert_eq!(a.combat_rows.features, fresh.combat_rows.features);
        assert_eq!(a.plan, fresh.plan);
        assert!(Arc::ptr_eq(
            &a,
            &site_inputs_cached(&t1, &spec, "A").unwrap()
        ));
        let b = site_inputs_cached(&t2, &spec, "A").unwrap();
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(b.combat_rows.features[[7, 0]], 41.5);
        assert_eq!(a.combat_rows.features[[7, 0]], 41.25);
        let other_site = site_inputs_cached(&t1, &spec, "B").unwrap();
        assert!(!Arc::ptr_eq(&a, &other_site));
        assert_eq!(other_site.site, "B");
        let mut spec2 = spec.clone();
        spec2.cv.seed = 4;
        assert!(!Arc::ptr_eq(
            &a,
            &site_inputs_cached(&t1, &spec2, "A").unwrap()
        ));
        assert!(site_inputs_cached(&table("NA"), &spec, "A").is_err());
    }
}
