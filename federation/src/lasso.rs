//! Federated LASSO-logistic feature selection (glmnet on site sums) over the round engine.
//!
//! Every fit (the full path, each CV fold, each bootstrap replicate) advances in lock-step: one
//! round trip carries every fit's current iterate and returns every fit's sums, so round trips
//! follow the IRLS steps of the slowest fit, not the number of fits. Fold ids and bootstrap
//! weights are drawn at the site from the study seed and the site's key; no row leaves. The
//! math and its conventions are in `models::lasso`.

use crate::engine::{Step, StudyOutput};
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::study::LassoSpec;
use crate::table::{SiteTable, TableError};
use crate::task::{LassoTask, ResultBody, TaskBody};
use models::lasso::{
    BootstrapConfig, BootstrapLambda, FitSums, LassoConfig, LassoDriver, LassoResult,
};
use models::sampling::SiteData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Why a site cannot answer a LASSO round.
#[derive(Debug, thiserror::Error)]
pub enum LassoError {
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("column {column:?} has a missing value (row {row}); the LASSO needs complete rows")]
    Missing { column: String, row: usize },
    #[error("{0}")]
    Disclosure(String),
    #[error("fold id column {column:?} row {row}: {value} is not a fold between 1 and {nfolds}")]
    BadFold {
        column: String,
        row: usize,
        value: f64,
        nfolds: u32,
    },
    #[error("LASSO: {0}")]
    Model(#[from] models::ModelsError),
}

impl LassoError {
    /// What may leave the site (no patient ids or values).
    pub fn public_message(&self) -> String {
        match self {
            LassoError::Table(TableError::NotNumeric { column, .. }) => format!(
                "column {column:?} holds a value that is not a number at this site (details in the agent's log)"
            ),
            LassoError::Table(TableError::MissingColumn { column, .. }) => {
                format!("column {column:?} is missing from this site's table")
            }
            LassoError::Table(TableError::BadLabel { column, .. }) => format!(
                "label column {column:?} holds an unexpected value at this site (details in the agent's log)"
            ),
            LassoError::Missing { column, .. } => format!(
                "column {column:?} has missing values at this site; the LASSO needs complete rows"
            ),
            LassoError::BadFold { column, nfolds, .. } => {
                format!("fold id column {column:?} holds a value outside 1..={nfolds} at this site")
            }
            other => other.to_string(),
        }
    }
}

/// A stable 64-bit key for a site id (seeds its fold and bootstrap draws).
pub fn site_key(site: &SiteId) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(site.as_str().as_bytes());
    u64::from_le_bytes(d[..8].try_into().expect("8 bytes"))
}

/// The site's rows as `models` takes them: complete features, 0/1 outcome, its fold scheme.
pub fn site_data(table: &SiteTable, spec: &LassoSpec, key: u64) -> Result<SiteData, LassoError> {
    let labels = table.label_column(
        &spec.label_column,
        &spec.positive_label,
        &spec.negative_label,
    )?;
    let y: Vec<f64> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            l.map(|b| f64::from(u8::from(b)))
                .ok_or(LassoError::Missing {
                    column: spec.label_column.clone(),
                    row: i + 1,
                })
        })
        .collect::<Result<_, _>>()?;
    let n = y.len();
    let mut x = ndarray::Array2::zeros((n, spec.features.len()));
    for (j, f) in spec.features.iter().enumerate() {
        for (i, v) in table.numeric_column(f)?.into_iter().enumerate() {
            x[[i, j]] = v.ok_or(LassoError::Missing {
                column: f.clone(),
                row: i + 1,
            })?;
        }
    }
    let folds = match &spec.foldid_column {
        None => models::sampling::assign_stratified_folds(&y, spec.nfolds, spec.seed, key),
        Some(c) => table
            .numeric_column(c)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Some(f) if f.fract() == 0.0 && f >= 1.0 && f <= spec.nfolds as f64 => {
                    Ok(f as u32 - 1)
                }
                other => Err(LassoError::BadFold {
                    column: c.clone(),
                    row: i + 1,
                    value: other.unwrap_or(f64::NAN),
                    nfolds: spec.nfolds,
                }),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(SiteData {
        site_id: key,
        x,
        y,
        fold_schemes: vec![folds],
    })
}

/// Site half of a LASSO round.
pub fn site_answer(
    table: &SiteTable,
    spec: &LassoSpec,
    task: &LassoTask,
    policy: &SitePolicy,
) -> Result<ResultBody, LassoError> {
    let data = site_data(table, spec, task.site_key)?;
    let n = data.y.len() as u64;
    if n > 0 && n < policy.min_count {
        return Err(LassoError::Disclosure(format!(
            "this site has {n} rows, fewer than its min_count; it cannot take part"
        )));
    }
    let sums = models::lasso::site_irls_sums(&data, &task.requests, policy.max_params_per_row)?;
    Ok(ResultBody::LassoSums(sums))
}

/// The finished LASSO study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoOutput {
    pub features: Vec<String>,
    pub result: LassoResult,
}

/// Aggregator state of a LASSO study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoStudyDriver {
    spec: LassoSpec,
    sites: Vec<SiteId>,
    driver: LassoDriver,
}

/// The `models` configuration for a spec.
pub fn config(spec: &LassoSpec) -> LassoConfig {
    let mut c = LassoConfig::new(spec.features.len(), spec.nfolds);
    c.nlambda = spec.nlambda;
    if spec.bootstrap > 0 {
        c.bootstrap = Some(BootstrapConfig {
            replicates: spec.bootstrap,
            seed: spec.seed,
            top_k: spec.top_k,
            lambda: BootstrapLambda::MainLambdaMin,
        });
    }
    c
}

impl LassoStudyDriver {
    pub fn start(
        spec: LassoSpec,
        sites: Vec<SiteId>,
    ) -> Result<(Self, BTreeMap<SiteId, TaskBody>), String> {
        let driver = LassoDriver::new(config(&spec)).map_err(|e| format!("LASSO: {e}"))?;
        let d = Self {
            spec,
            sites,
            driver,
        };
        let tasks = d.tasks();
        Ok((d, tasks))
    }

    fn tasks(&self) -> BTreeMap<SiteId, TaskBody> {
        let requests = self.driver.next_requests();
        self.sites
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    TaskBody::LassoSums(LassoTask {
                        site_key: site_key(s),
                        requests: requests.clone(),
                    }),
                )
            })
            .collect()
    }

    pub fn on_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Step {
        let mut replies = Vec::with_capacity(results.len());
        for (site, body) in results {
            match body {
                ResultBody::LassoSums(s) => {
                    if let Some(FitSums::Refused(r)) =
                        s.iter().find(|f| matches!(f, FitSums::Refused(_)))
                    {
                        return Step::Failed(format!(
                            "site {site} refused fit {}: {} parameters for {} rows exceeds its max_params_per_row = {}; use fewer features or ask the site to relax its policy",
                            r.fit_id, r.params, r.rows, r.max_params_per_row
                        ));
                    }
                    replies.push(s.clone());
                }
                other => {
                    return Step::Failed(format!("site {site} answered with {}", other.kind()));
                }
            }
        }
        if let Err(e) = self.driver.apply(&replies) {
            return Step::Failed(format!("LASSO: {e}"));
        }
        if self.driver.is_done() {
            return match self.driver.result() {
                Some(result) => Step::Done(StudyOutput::Lasso(LassoOutput {
                    features: self.spec.features.clone(),
                    result,
                })),
                None => Step::Failed("LASSO finished without a result".into()),
            };
        }
        Step::Next(self.tasks())
    }
}
