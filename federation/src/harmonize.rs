//! Distributed ComBat (Chen et al., NeuroImage 2022), both halves, over the round engine.
//!
//! Rounds: 0 — each site names the batches and covariate levels it holds; 1 — W'W and W'Y of its
//! rows (W = batch one-hot + covariates); 2 — per-feature residual sums of squares for the
//! pooled B; 3 — the empirical-Bayes step for each batch it holds (a batch never spans sites).
//! The aggregator's final `ComBatModel` equals `models::combat::combat_pooled` on the pooled rows
//! to round-off. Sites keep no state: every task carries what earlier rounds established.
//!
//! Secure aggregation (`secure_aggregation = true`): the key round rides on round 0, rounds 1
//! and 2 are masked, so the aggregator sees only Σ W'W, Σ W'Y, Σ RSS and Σ n over sites; the
//! levels and each batch's estimates (round 3, a batch lives at one site) stay plain. The masked
//! rounds' shapes ([`SumShape::ComBatCrossProducts`], [`SumShape::ComBatResiduals`]) pack counts
//! exactly and the real sums in the LASSO's wide three-limb fixed point (2^−56 per site for
//! |x| ≤ 2^95; the pipeline's masked ComBat uses the same packer), so energy-sized features
//! (residual sums ~2e19) are not refused and the study equals the plain run to f64's order of
//! additions (`tests/secure_harmonize_wide.rs`; `crate::secure`'s Precision section).
//!
//! Dropout (`on_masked_dropout = "continue_without_site"`, `crate::engine`): a site silent past
//! the deadline of round 1 or 2 (masked) is left out and the harmonisation restarts over the
//! survivors **from round 1**, the cross-products ([`HarmonizeDriver::drop_sites`]). Round 1's
//! W'W and W'Y summed the dropped site's rows, so the pooled B of round 2 holds them too: a
//! dropout in either masked round discards both. The design (batch columns, covariate levels)
//! also named the dropped site's batches and levels; it is rebuilt from the survivors' own
//! round-0 answers, kept per site for this, exactly as a run over the survivors alone builds
//! it. Round 0 itself (plain levels, the key round) is not asked again: the survivors' answers
//! and keys would be the same, and a second key round would cost a round trip for nothing. If
//! the survivors' design is unusable (a categorical covariate left with one level), the
//! restart is refused and the study pauses. Round 3 is plain (a silent site pauses it).
//!
//! Disclosure: W'W holds batch sizes and, for categorical covariates, level counts (also within
//! each batch). A site refuses (sends a `Failure`) when any of those counts, or its row count, is
//! between 1 and `min_count − 1`, or when the design's parameter count exceeds
//! `max_params_per_row × rows` (the DataSHIELD-style guard).

use crate::engine::{DroppedSite, Step, StudyOutput};
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::secure::{SecureRounds, SumShape};
use crate::study::{HarmonizeMode, HarmonizeSpec};
use crate::table::{SiteTable, TableError};
use crate::task::{BatchSource, ComBatTask, ResultBody, TaskBody};
use models::combat::{
    self, BatchAdjustment, ComBatCrossProducts, ComBatModel, ComBatOptions, ComBatResiduals,
    ComBatRows, CovariateColumn, CovariateKind, DesignSpec, EbMode, SiteLevels,
};
use ndarray::Array2;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a site cannot answer a ComBat round.
#[derive(Debug, thiserror::Error)]
pub enum HarmonizeError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error(
        "column {column:?} has a missing value (row {row}); ComBat needs complete features and covariates"
    )]
    Missing { column: String, row: usize },
    #[error("{0}")]
    Disclosure(String),
    #[error("ComBat: {0}")]
    Model(#[from] models::ModelsError),
    #[error("the task is missing its {0}; the aggregator sent an incomplete ComBat round")]
    Incomplete(&'static str),
}

impl HarmonizeError {
    /// What may leave the site (no patient ids or values).
    pub fn public_message(&self) -> String {
        match self {
            HarmonizeError::Table(TableError::NotNumeric { column, .. }) => format!(
                "column {column:?} holds a value that is not a number at this site (details in the agent's log)"
            ),
            HarmonizeError::Table(TableError::MissingColumn { column, .. }) => {
                format!("column {column:?} is missing from this site's table")
            }
            HarmonizeError::Missing { column, .. } => format!(
                "column {column:?} has missing values at this site; ComBat needs complete data"
            ),
            other => other.to_string(),
        }
    }
}

/// The rows of one site in the shape `models::combat` takes.
pub struct SiteRows {
    pub batch: Vec<String>,
    pub covariates: Vec<CovariateColumn>,
    pub features: Array2<f64>,
}

impl SiteRows {
    pub fn view(&self) -> ComBatRows<'_> {
        ComBatRows {
            batch: &self.batch,
            covariates: &self.covariates,
            features: self.features.view(),
        }
    }
}

fn complete(column: &str, values: Vec<Option<f64>>) -> Result<Vec<f64>, HarmonizeError> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| HarmonizeError::Missing {
                column: column.to_string(),
                row: i + 1,
            })
        })
        .collect()
}

/// Reads a site's batch, covariates and features.
pub fn site_rows(
    table: &SiteTable,
    spec: &HarmonizeSpec,
    batch: &BatchSource,
) -> Result<SiteRows, HarmonizeError> {
    let n = table.n_rows();
    let batch = match batch {
        BatchSource::Label(l) => vec![l.clone(); n],
        BatchSource::Column(c) => table
            .text_column(c)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.map(str::to_string).ok_or(HarmonizeError::Missing {
                    column: c.clone(),
                    row: i + 1,
                })
            })
            .collect::<Result<_, _>>()?,
    };
    let mut covariates = Vec::new();
    for c in &spec.covariates {
        if spec.categorical.contains(c) {
            let v = table.text_column(c)?;
            covariates.push(CovariateColumn::Categorical(
                v.into_iter()
                    .enumerate()
                    .map(|(i, x)| {
                        x.map(str::to_string).ok_or(HarmonizeError::Missing {
                            column: c.clone(),
                            row: i + 1,
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ));
        } else {
            covariates.push(CovariateColumn::Continuous(complete(
                c,
                table.numeric_column(c)?,
            )?));
        }
    }
    let mut features = Array2::zeros((n, spec.features.len()));
    for (j, f) in spec.features.iter().enumerate() {
        for (i, v) in complete(f, table.numeric_column(f)?)?
            .into_iter()
            .enumerate()
        {
            features[[i, j]] = v;
        }
    }
    Ok(SiteRows {
        batch,
        covariates,
        features,
    })
}

/// Refuses cross-products that would disclose a count below `min_count`: the site's rows, each
/// batch, each categorical level, and each (batch, level) and (level, level) cell of W'W. Also
/// applies the parameters-per-row guard to the design columns this site's rows touch (its own
/// batches and the covariate columns): each feature's regression has that many parameters.
pub(crate) fn check_counts(
    rows: &SiteRows,
    policy: &SitePolicy,
    design: &DesignSpec,
) -> Result<(), HarmonizeError> {
    let n = rows.batch.len();
    let mut own: Vec<&String> = rows.batch.iter().collect();
    own.sort();
    own.dedup();
    let n_params = own.len() + design.n_columns() - design.batches.len();
    let small = |c: usize| c > 0 && (c as u64) < policy.min_count;
    if small(n) {
        return Err(HarmonizeError::Disclosure(format!(
            "this site has {n} rows, fewer than its min_count; it cannot take part"
        )));
    }
    if !models::disclosure::cross_product_allowed(n_params, n, policy.max_params_per_row) {
        return Err(HarmonizeError::Disclosure(format!(
            "the design has {n_params} parameters for {n} rows at this site, more than max_params_per_row = {} allows",
            policy.max_params_per_row
        )));
    }
    // Indicator columns: batch labels and categorical levels.
    let mut indicators: Vec<(String, Vec<bool>)> = Vec::new();
    let mut labels: Vec<&String> = rows.batch.iter().collect();
    labels.sort();
    labels.dedup();
    for l in labels {
        indicators.push((
            format!("batch {l}"),
            rows.batch.iter().map(|b| b == l).collect(),
        ));
    }
    for c in &rows.covariates {
        if let CovariateColumn::Categorical(v) = c {
            let mut levels: Vec<&String> = v.iter().collect();
            levels.sort();
            levels.dedup();
            for l in levels {
                indicators.push((format!("level {l}"), v.iter().map(|x| x == l).collect()));
            }
        }
    }
    for (i, (a, va)) in indicators.iter().enumerate() {
        for (b, vb) in &indicators[i..] {
            let c = va.iter().zip(vb).filter(|(x, y)| **x && **y).count();
            if small(c) {
                return Err(HarmonizeError::Disclosure(format!(
                    "{a} × {b} holds fewer than min_count patients at this site; merge levels or drop the covariate"
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn options(mode: HarmonizeMode) -> ComBatOptions {
    let mut o = ComBatOptions::default();
    match mode {
        HarmonizeMode::Parametric => {}
        HarmonizeMode::Nonparametric => o.mode = EbMode::NonParametric,
        HarmonizeMode::MeanOnly => o.mean_only = true,
    }
    o
}

/// Site half of every ComBat round.
pub fn site_answer(
    table: &SiteTable,
    spec: &HarmonizeSpec,
    body: &TaskBody,
    policy: &SitePolicy,
) -> Result<ResultBody, HarmonizeError> {
    let (task, round) = match body {
        TaskBody::ComBatLevels(t) => (t, 0),
        TaskBody::ComBatCrossProducts(t) => (t, 1),
        TaskBody::ComBatResiduals(t) => (t, 2),
        TaskBody::ComBatEstimate(t) => (t, 3),
        _ => unreachable!("dispatch sends only ComBat tasks here"),
    };
    let rows = site_rows(table, spec, &task.batch)?;
    let design = || {
        task.design
            .as_ref()
            .ok_or(HarmonizeError::Incomplete("design"))
    };
    Ok(match round {
        0 => ResultBody::ComBatLevels(combat::site_levels(&rows.batch, &rows.covariates)),
        1 => {
            let design = design()?;
            check_counts(&rows, policy, design)?;
            ResultBody::ComBatCrossProducts(combat::site_cross_products(design, &rows.view())?)
        }
        2 => {
            let fit = task.fit.as_ref().ok_or(HarmonizeError::Incomplete("fit"))?;
            check_counts(&rows, policy, &fit.spec)?;
            ResultBody::ComBatResiduals(combat::site_residuals(fit, &rows.view())?)
        }
        _ => {
            let global = task
                .global
                .as_ref()
                .ok_or(HarmonizeError::Incomplete("global fit"))?;
            let opts = task.options.ok_or(HarmonizeError::Incomplete("options"))?;
            check_counts(&rows, policy, &global.fit.spec)?;
            ResultBody::ComBatEstimates(combat::site_estimate(global, &rows.view(), &opts)?)
        }
    })
}

/// The finished harmonisation: the frozen model that `ComBatModel::apply` uses on any rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmonizeOutput {
    pub features: Vec<String>,
    pub model: ComBatModel,
    /// Sites left out after missing a masked round's deadline (round and reason); the model
    /// holds the survivors' batches only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedSite>,
}

/// Aggregator state of a harmonisation study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HarmonizeDriver {
    spec: HarmonizeSpec,
    sites: Vec<SiteId>,
    round: u8,
    design: Option<DesignSpec>,
    fit: Option<combat::ComBatFit>,
    global: Option<combat::ComBatGlobal>,
    /// Under `secure_aggregation`: the key round rides on the levels round, and the
    /// cross-product and residual rounds are masked (`crate::secure`).
    #[serde(default)]
    secure: Option<SecureRounds>,
    /// Under `secure_aggregation`: each site's round-0 levels, so that a restart without a
    /// dropped site rebuilds the design from the survivors' levels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    levels: BTreeMap<SiteId, SiteLevels>,
    /// Sites left out after missing a masked round's deadline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<DroppedSite>,
}

impl HarmonizeDriver {
    pub fn start(spec: HarmonizeSpec, sites: Vec<SiteId>) -> (Self, BTreeMap<SiteId, TaskBody>) {
        let secure = spec.secure_aggregation.then(|| {
            SecureRounds::new(&crate::study::AnalysisSpec::Harmonize(spec.clone()), &sites)
        });
        let d = Self {
            spec,
            sites,
            round: 0,
            design: None,
            fit: None,
            global: None,
            secure,
            levels: BTreeMap::new(),
            dropped: Vec::new(),
        };
        let tasks = d.tasks(TaskBody::ComBatLevels);
        let tasks = match &d.secure {
            Some(s) => s.key_round(tasks),
            None => tasks,
        };
        (d, tasks)
    }

    fn batch_for(&self, site: &SiteId) -> BatchSource {
        match &self.spec.batch_column {
            Some(c) => BatchSource::Column(c.clone()),
            None => BatchSource::Label(site.to_string()),
        }
    }

    fn tasks(&self, make: fn(ComBatTask) -> TaskBody) -> BTreeMap<SiteId, TaskBody> {
        self.sites
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    make(ComBatTask {
                        batch: self.batch_for(s),
                        design: self.design.clone(),
                        fit: self.fit.clone(),
                        global: self.global.clone(),
                        options: Some(options(self.spec.mode)),
                    }),
                )
            })
            .collect()
    }

    /// The next summed round: masked under secure aggregation, plain otherwise.
    fn next_summed(
        &mut self,
        make: fn(ComBatTask) -> TaskBody,
        shape: SumShape,
    ) -> Result<Step, String> {
        let tasks = self.tasks(make);
        Ok(Step::Next(match &mut self.secure {
            Some(s) => s.masked(tasks, shape)?,
            None => tasks,
        }))
    }

    /// The design from the sites' round-0 levels (in site order), checking that every batch
    /// lives at one site and that every categorical covariate has two levels or more.
    fn design_from(&self, sites: &[&SiteId], levels: &[SiteLevels]) -> Result<DesignSpec, String> {
        let covs: Vec<(String, bool)> = self
            .spec
            .covariates
            .iter()
            .map(|c| (c.clone(), self.spec.categorical.contains(c)))
            .collect();
        let design =
            DesignSpec::from_site_levels(&covs, levels).map_err(|e| format!("ComBat: {e}"))?;
        // A batch must live at exactly one site (batch ⊆ site).
        let mut owner: BTreeMap<&String, &SiteId> = BTreeMap::new();
        for (site, l) in sites.iter().zip(levels) {
            for b in &l.batches {
                if let Some(other) = owner.insert(b, site) {
                    return Err(format!(
                        "batch {b:?} occurs at sites {other} and {site}; a batch must be nested within one site"
                    ));
                }
            }
        }
        if design
            .covariates
            .iter()
            .any(|c| matches!(&c.kind, CovariateKind::Categorical { levels } if levels.len() < 2))
        {
            return Err(
                "a categorical covariate has a single level over all sites; drop it".into(),
            );
        }
        Ok(design)
    }

    /// Dropout in a masked round (1 or 2; see the module doc): leaves `dropped` out of the
    /// rest of the study and restarts from round 1 over the survivors, with the design rebuilt
    /// from their levels. Refused, with the state unchanged (the engine then pauses), when no
    /// masked round is open, fewer than secure aggregation's minimum would remain, or the
    /// survivors' design is unusable.
    pub fn drop_sites(
        &mut self,
        dropped: &[DroppedSite],
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        if !matches!(self.round, 1 | 2) || !self.secure.as_ref().is_some_and(SecureRounds::is_open)
        {
            return Err("not in a masked round".into());
        }
        let gone: Vec<SiteId> = dropped.iter().map(|d| d.site.clone()).collect();
        let survivors: Vec<SiteId> = self
            .sites
            .iter()
            .filter(|s| !gone.contains(s))
            .cloned()
            .collect();
        let min = SecureRounds::policy().min_participants();
        if survivors.len() < min {
            return Err(format!(
                "only {} sites would remain, fewer than secure aggregation's {min}",
                survivors.len()
            ));
        }
        let mut sites = Vec::new();
        let mut levels = Vec::new();
        for s in &survivors {
            let l = self.levels.get(s).ok_or_else(|| {
                format!("no levels recorded for site {s} (a state written before they were kept)")
            })?;
            sites.push(s);
            levels.push(l.clone());
        }
        let design = self.design_from(&sites, &levels)?;
        let columns = design.n_columns();
        let before = (
            std::mem::replace(&mut self.sites, survivors),
            self.round,
            self.design.replace(design),
            self.fit.take(),
            self.global.take(),
        );
        self.round = 1;
        let tasks = self.tasks(TaskBody::ComBatCrossProducts);
        let shape = SumShape::ComBatCrossProducts {
            columns,
            features: self.spec.features.len(),
        };
        let secure = self.secure.as_mut().expect("checked above");
        match secure.restart_without_reshaped(&gone, tasks, shape) {
            Ok(tasks) => {
                self.levels.retain(|s, _| !gone.contains(s));
                self.dropped.extend_from_slice(dropped);
                Ok(tasks)
            }
            Err(e) => {
                (self.sites, self.round, self.design, self.fit, self.global) = before;
                Err(e)
            }
        }
    }

    pub fn on_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Step {
        match self.advance(results) {
            Ok(step) => step,
            Err(e) => Step::Failed(e),
        }
    }

    fn advance(&mut self, received: &BTreeMap<SiteId, ResultBody>) -> Result<Step, String> {
        let err = |e: models::ModelsError| format!("ComBat: {e}");
        self.round += 1;
        // Under secure aggregation the driver sees the key round's inner answers (round 1) and
        // only the decoded sums of the masked rounds (2 and 3), under one pseudo-site.
        let opened;
        let results = match (&mut self.secure, self.round) {
            (Some(s), 1) => {
                opened = s.on_key_round(received)?;
                &opened
            }
            (Some(s), 2 | 3) => {
                opened = s.open_sum(received)?;
                &opened
            }
            _ => received,
        };
        let features = self.spec.features.len();
        // Defined here so that it reads the (possibly opened) `results` above (macro hygiene).
        macro_rules! collect {
            ($variant:ident) => {
                results
                    .iter()
                    .map(|(site, body)| match body {
                        ResultBody::$variant(x) => Ok(x.clone()),
                        other => Err(format!("site {site} answered with {}", other.kind())),
                    })
                    .collect::<Result<Vec<_>, String>>()?
            };
        }
        match self.round {
            1 => {
                let levels: Vec<SiteLevels> = collect!(ComBatLevels);
                let sites: Vec<&SiteId> = results.keys().collect();
                let design = self.design_from(&sites, &levels)?;
                if self.secure.is_some() {
                    self.levels = sites.into_iter().cloned().zip(levels).collect();
                }
                let columns = design.n_columns();
                self.design = Some(design);
                self.next_summed(
                    TaskBody::ComBatCrossProducts,
                    SumShape::ComBatCrossProducts { columns, features },
                )
            }
            2 => {
                let xp: Vec<ComBatCrossProducts> = collect!(ComBatCrossProducts);
                let design = self.design.as_ref().ok_or("no design")?;
                self.fit = Some(combat::aggregate_cross_products(design, &xp).map_err(err)?);
                self.next_summed(
                    TaskBody::ComBatResiduals,
                    SumShape::ComBatResiduals { features },
                )
            }
            3 => {
                let rs: Vec<ComBatResiduals> = collect!(ComBatResiduals);
                let fit = self.fit.as_ref().ok_or("no fit")?;
                self.global = Some(combat::aggregate_residuals(fit, &rs).map_err(err)?);
                Ok(Step::Next(self.tasks(TaskBody::ComBatEstimate)))
            }
            _ => {
                let per_site: Vec<Vec<BatchAdjustment>> = collect!(ComBatEstimates);
                let global = self.global.clone().ok_or("no global fit")?;
                let mut batches: Vec<BatchAdjustment> = per_site.into_iter().flatten().collect();
                // The model lists batches in design order.
                let order = &global.fit.spec.batches;
                batches.sort_by_key(|b| order.iter().position(|o| *o == b.batch));
                let model = ComBatModel {
                    global,
                    options: options(self.spec.mode),
                    batches,
                };
                Ok(Step::Done(StudyOutput::Harmonize(HarmonizeOutput {
                    features: self.spec.features.clone(),
                    model,
                    dropped: self.dropped.clone(),
                })))
            }
        }
    }
}
