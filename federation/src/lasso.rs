//! Federated LASSO-logistic feature selection (glmnet on site sums) over the round engine.
//!
//! Every fit (the full path, each CV fold, each bootstrap replicate) advances in lock-step: one
//! round trip carries every fit's current iterate and returns every fit's sums, so round trips
//! follow the IRLS steps of the slowest fit, not the number of fits. Fold ids and bootstrap
//! weights are drawn at the site from the study seed and the site's key; no row leaves. The
//! math and its conventions are in `models::lasso`.
//!
//! Secure aggregation (`secure_aggregation = true`): round 1 is the key round (no inner
//! request: every LASSO round is summed), and every later round is masked
//! ([`secure`]: the moments as raw power sums, the IRLS sums with x̃ᵀWx̃ in additive form), so
//! the driver sees only the sums over sites under the pseudo-site `masked-sum`.
//!
//! Dropout (`on_masked_dropout = "continue_without_site"`, `crate::engine`): a site silent past
//! a masked round's deadline is left out and **every fit restarts from its moments round** over
//! the survivors ([`LassoStudyDriver::drop_sites`]), as the pipeline's LASSO stage does: since
//! the moments round every fit's standardisation (means, SDs), λ path and iterates were built
//! from sums that include the dropped site's rows, so nothing after the key round can be kept.
//! The survivors' fold ids and bootstrap weights are drawn at each site from the study seed
//! and its own key, so the restarted study is the one the survivors alone would have run.

pub mod secure;

use crate::engine::{DroppedSite, Step, StudyOutput};
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::secure::SecureRounds;
use crate::study::LassoSpec;
use crate::table::{SiteTable, TableError};
use crate::task::{LassoTask, ResultBody, TaskBody};
use models::lasso::{
    BootstrapConfig, BootstrapLambda, FitSums, LassoConfig, LassoDriver, LassoResult,
};
use models::sampling::SiteData;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

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

/// One parsed table in [`ROWS`].
struct CachedRows {
    table: SiteTable,
    spec: LassoSpec,
    key: u64,
    data: Arc<SiteData>,
}

/// How many parsed tables [`ROWS`] keeps (a simulation runs up to this many sites in one
/// process; a real agent has one table).
const ROWS_CAPACITY: usize = 64;

/// The rows of the tables this process answered LASSO rounds for, most recently used last. A
/// study asks the same site for a hundred rounds or more; parsing its table's text cells into
/// numbers every round cost more than the round's sums. An entry is reused only for an
/// identical table (every cell compared), spec and site key, so the answer is exactly what
/// [`site_data`] would return; errors are not cached.
static ROWS: Mutex<Vec<CachedRows>> = Mutex::new(Vec::new());

/// [`site_data`] through the [`ROWS`] cache.
pub fn site_data_cached(
    table: &SiteTable,
    spec: &LassoSpec,
    key: u64,
) -> Result<Arc<SiteData>, LassoError> {
    // A poisoned lock only means another thread panicked mid-update of a plain Vec; its entries
    // are still whole (each is pushed complete), so the cache stays usable.
    let lock = || {
        ROWS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    {
        let mut rows = lock();
        if let Some(i) = rows
            .iter()
            .position(|c| c.key == key && c.spec == *spec && c.table == *table)
        {
            let hit = rows.remove(i);
            let data = hit.data.clone();
            rows.push(hit);
            return Ok(data);
        }
    }
    let data = Arc::new(site_data(table, spec, key)?);
    let mut rows = lock();
    if rows.len() >= ROWS_CAPACITY {
        rows.remove(0);
    }
    rows.push(CachedRows {
        table: table.clone(),
        spec: spec.clone(),
        key,
        data: data.clone(),
    });
    Ok(data)
}

/// Site half of a LASSO round.
pub fn site_answer(
    table: &SiteTable,
    spec: &LassoSpec,
    task: &LassoTask,
    policy: &SitePolicy,
) -> Result<ResultBody, LassoError> {
    let data = site_data_cached(table, spec, task.site_key)?;
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
    /// Sites left out after missing a masked round's deadline (round and reason); the result
    /// is the survivors' alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedSite>,
}

/// Aggregator state of a LASSO study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoStudyDriver {
    spec: LassoSpec,
    sites: Vec<SiteId>,
    driver: LassoDriver,
    /// Under `secure_aggregation`: the key round, then every round masked (`crate::secure`).
    /// Not written when absent, so a plain study's persisted state is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure: Option<SecureRounds>,
    /// Sites left out after missing a masked round's deadline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    dropped: Vec<DroppedSite>,
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
        let secure = spec
            .secure_aggregation
            .then(|| SecureRounds::new(&crate::study::AnalysisSpec::Lasso(spec.clone()), &sites));
        let d = Self {
            spec,
            sites,
            driver,
            secure,
            dropped: Vec::new(),
        };
        let tasks = match &d.secure {
            // Nothing rides on the key round: every LASSO round is summed.
            Some(s) => s.key_round(BTreeMap::new()),
            None => d.tasks(),
        };
        Ok((d, tasks))
    }

    /// The next round's tasks: masked under secure aggregation, plain otherwise.
    fn next_step(&mut self) -> Step {
        let tasks = self.tasks();
        match &mut self.secure {
            None => Step::Next(tasks),
            Some(s) => {
                let shape = secure::shape(self.spec.features.len(), &self.driver.next_requests());
                match s.masked(tasks, shape) {
                    Ok(t) => Step::Next(t),
                    Err(e) => Step::Failed(e),
                }
            }
        }
    }

    /// Dropout in a masked round (see the module doc): leaves `dropped` out of the rest of the
    /// study and starts every fit again from its moments round over the survivors (a new
    /// layout). Refused, with the state unchanged (the engine then pauses), when no masked
    /// round is open or fewer than secure aggregation's minimum would remain.
    pub fn drop_sites(
        &mut self,
        dropped: &[DroppedSite],
    ) -> Result<BTreeMap<SiteId, TaskBody>, String> {
        if !self.secure.as_ref().is_some_and(SecureRounds::is_open) {
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
        let fresh = LassoDriver::new(config(&self.spec)).map_err(|e| format!("LASSO: {e}"))?;
        let before = (
            std::mem::replace(&mut self.sites, survivors),
            std::mem::replace(&mut self.driver, fresh),
        );
        let tasks = self.tasks();
        let shape = secure::shape(self.spec.features.len(), &self.driver.next_requests());
        let s = self.secure.as_mut().expect("checked above");
        match s.restart_without_reshaped(&gone, tasks, shape) {
            Ok(tasks) => {
                self.dropped.extend_from_slice(dropped);
                Ok(tasks)
            }
            Err(e) => {
                (self.sites, self.driver) = before;
                Err(e)
            }
        }
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
        // Under secure aggregation: the key round's announcements, then only the decoded sum of
        // each masked round, under one pseudo-site (a refusal arrives as a site's failure).
        let opened;
        let results = match &mut self.secure {
            None => results,
            Some(s) if s.keys().is_empty() => {
                return match s.on_key_round(results) {
                    Ok(_) => self.next_step(),
                    Err(e) => Step::Failed(e),
                };
            }
            Some(s) => match s.open_sum(results) {
                Ok(sum) => {
                    opened = sum;
                    &opened
                }
                Err(e) => return Step::Failed(e),
            },
        };
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
                    replies.push(s.as_slice());
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
                    dropped: self.dropped.clone(),
                })),
                None => Step::Failed("LASSO finished without a result".into()),
            };
        }
        self.next_step()
    }
}

/// Persisted form of a round's tasks (`StudyState::tasks`, `RoundRecord::tasks`): a LASSO round
/// asks every site for the same sums at the same iterates, so the sites' tasks differ only by
/// `site_key` while their request list (every current fit's mean, SD and coefficients) is
/// large. It is stored once per round, with each site's key beside it; other tasks are stored
/// as they are. Reading gives back exactly the map that was written (restart exactness), and
/// a plain `{site: task}` map (states written before this form) is still read.
pub mod stored_tasks {
    use crate::ids::SiteId;
    use crate::task::{LassoTask, TaskBody};
    use models::lasso::FitRequest;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    enum EntryRef<'a> {
        Task(&'a TaskBody),
        /// `LassoSums { site_key, requests: <the shared list> }`.
        LassoKey(u64),
    }

    #[derive(Deserialize)]
    enum Entry {
        Task(TaskBody),
        LassoKey(u64),
    }

    #[derive(Serialize)]
    struct CompactRef<'a> {
        lasso_requests: Option<&'a [FitRequest]>,
        sites: BTreeMap<&'a SiteId, EntryRef<'a>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Compact {
        lasso_requests: Option<Vec<FitRequest>>,
        sites: BTreeMap<SiteId, Entry>,
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Compact(Compact),
        Plain(BTreeMap<SiteId, TaskBody>),
    }

    pub fn serialize<S: Serializer>(
        tasks: &BTreeMap<SiteId, TaskBody>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let shared = tasks.values().find_map(|t| match t {
            TaskBody::LassoSums(l) => Some(l.requests.as_slice()),
            _ => None,
        });
        let sites = tasks
            .iter()
            .map(|(site, t)| {
                let entry = match (t, shared) {
                    (TaskBody::LassoSums(l), Some(r)) if l.requests == r => {
                        EntryRef::LassoKey(l.site_key)
                    }
                    _ => EntryRef::Task(t),
                };
                (site, entry)
            })
            .collect();
        CompactRef {
            lasso_requests: shared,
            sites,
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<SiteId, TaskBody>, D::Error> {
        match Stored::deserialize(d)? {
            Stored::Plain(m) => Ok(m),
            Stored::Compact(c) => c
                .sites
                .into_iter()
                .map(|(site, e)| match e {
                    Entry::Task(t) => Ok((site, t)),
                    Entry::LassoKey(site_key) => match &c.lasso_requests {
                        Some(r) => Ok((
                            site,
                            TaskBody::LassoSums(LassoTask {
                                site_key,
                                requests: r.clone(),
                            }),
                        )),
                        None => Err(serde::de::Error::custom(format!(
                            "stored tasks: site {site} refers to a shared LASSO request list that is missing"
                        ))),
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{BatchSource, ComBatTask};
    use models::lasso::{FitRequest, RequestKind};
    use models::sampling::WeightSpec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        #[serde(with = "stored_tasks")]
        tasks: BTreeMap<SiteId, TaskBody>,
    }

    fn request(fit_id: u32, beta: f64) -> FitRequest {
        FitRequest {
            fit_id,
            weights: WeightSpec::default(),
            kind: RequestKind::Irls {
                mean: vec![0.1, 1.0 / 3.0],
                sd: vec![2.0, 0.0],
                beta0: -0.7,
                beta: vec![beta, 0.0],
                hessian: true,
                cols: Some(vec![0]),
                eval_only: false,
                basis: None,
                send_basis: false,
            },
        }
    }

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    /// A LASSO round's shared request list is written once, each site by its key; reading gives
    /// back the same map (a site whose list differs is kept whole). Other tasks, and the plain
    /// map older states hold, read back unchanged.
    #[test]
    fn stored_tasks_keep_the_shared_lasso_requests_once_and_read_back_exactly() {
        let shared = vec![request(0, 0.25), request(3, -1e-300)];
        let mut tasks: BTreeMap<SiteId, TaskBody> = ["A", "B", "C"]
            .iter()
            .map(|s| {
                (
                    site(s),
                    TaskBody::LassoSums(LassoTask {
                        site_key: site_key(&site(s)),
                        requests: shared.clone(),
                    }),
                )
            })
            .collect();
        tasks.insert(
            site("D"),
            TaskBody::LassoSums(LassoTask {
                site_key: 7,
                requests: vec![request(1, 0.5)],
            }),
        );
        let h = Holder { tasks };
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json.matches("\"fit_id\":3").count(), 1, "{json}");
        assert_eq!(json.matches("LassoKey").count(), 3);
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), h);

        let combat = Holder {
            tasks: ["A", "B"]
                .iter()
                .map(|s| {
                    (
                        site(s),
                        TaskBody::ComBatLevels(ComBatTask {
                            batch: BatchSource::Label(s.to_string()),
                            design: None,
                            fit: None,
                            global: None,
                            options: None,
                        }),
                    )
                })
                .collect(),
        };
        let json = serde_json::to_string(&combat).unwrap();
        assert_eq!(serde_json::from_str::<Holder>(&json).unwrap(), combat);

        let plain = format!(
            "{{\"tasks\":{}}}",
            serde_json::to_string(&combat.tasks).unwrap()
        );
        assert_eq!(serde_json::from_str::<Holder>(&plain).unwrap(), combat);
    }

    /// A LASSO study whose state is written and read back (as the aggregator persists it, with
    /// the round's tasks in their compact form) after every accepted result, and resumed from
    /// what was read with the results received so far, ends exactly as an undisturbed run.
    #[test]
    fn a_lasso_study_resumed_from_its_persisted_state_every_push_ends_identically() {
        use crate::engine::StudyState;
        use crate::policy::SitePolicy;
        use crate::study::{AnalysisSpec, StudySpec};
        // Deterministic rows with a signal on f1 (no RNG crate in federation).
        let cell = |s: usize, i: usize, j: usize| -> f64 {
            let u = ((s * 7919 + i * 104_729 + j * 1_299_709) % 1000) as f64 / 1000.0 - 0.5;
            u + if j == 0 { 0.5 * (i % 2) as f64 } else { 0.0 }
        };
        let header: Vec<String> = ["y", "f1", "f2", "f3"].map(String::from).to_vec();
        let tables: BTreeMap<SiteId, SiteTable> = ["A", "B", "C"]
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let rows = (0..40)
                    .map(|i| {
                        let mut r = vec![(i % 2).to_string()];
                        r.extend((0..3).map(|j| format!("{}", cell(k, i, j))));
                        r
                    })
                    .collect();
                (site(s), SiteTable::new(header.clone(), rows).unwrap())
            })
            .collect();
        let spec = StudySpec {
            id: crate::ids::StudyId::new("lasso-resume").unwrap(),
            title: String::new(),
            analysis: AnalysisSpec::Lasso(LassoSpec {
                label_column: "y".into(),
                positive_label: "1".into(),
                negative_label: "0".into(),
                features: vec!["f1".into(), "f2".into(), "f3".into()],
                nfolds: 3,
                foldid_column: None,
                nlambda: 20,
                bootstrap: 4,
                top_k: 2,
                seed: 11,
                secure_aggregation: false,
                on_masked_dropout: Default::default(),
            }),
        };
        let policy = SitePolicy {
            allow_all_studies: true,
            max_params_per_row: f64::INFINITY,
            ..SitePolicy::default()
        };
        let run = |persist: bool| -> StudyState {
            let sites: Vec<SiteId> = tables.keys().cloned().collect();
            let mut state = StudyState::new(spec.clone(), sites, 0, u64::MAX).unwrap();
            while !state.status.is_finished() {
                assert!(state.round < 500, "the study does not finish");
                let mut received = Vec::new();
                for (s, table) in &tables {
                    let round = state.round;
                    let task = state.task_for(s).unwrap();
                    let result = crate::site::answer(&task, table, &policy).result;
                    received.push((s.clone(), result.body.clone(), 0));
                    state.accept(s, result, 0, 0).unwrap();
                    if persist {
                        let json = serde_json::to_string(&state).unwrap();
                        state = serde_json::from_str(&json).unwrap();
                        if state.round == round && !state.status.is_finished() {
                            state.restore(received.clone(), 0);
                        }
                    }
                }
            }
            state
        };
        let (plain, resumed) = (run(false), run(true));
        assert!(plain.output.is_some(), "{}", plain.status.describe());
        assert_eq!(plain.output, resumed.output);
        assert_eq!(plain.round, resumed.round);
    }

    fn table(cell: &str) -> SiteTable {
        SiteTable::new(
            vec!["y".into(), "a".into(), "b".into()],
            (0..12)
                .map(|i| {
                    vec![
                        (i % 2).to_string(),
                        if i == 5 {
                            cell.into()
                        } else {
                            format!("{}.5", i)
                        },
                        format!("{}", i * i),
                    ]
                })
                .collect(),
        )
        .unwrap()
    }

    /// The parsed-rows cache answers exactly what parsing would, and a table that differs in
    /// one cell (or another site key) is parsed anew.
    #[test]
    fn the_rows_cache_is_reused_only_for_the_same_table_spec_and_key() {
        let spec = LassoSpec {
            label_column: "y".into(),
            positive_label: "1".into(),
            negative_label: "0".into(),
            features: vec!["a".into(), "b".into()],
            nfolds: 3,
            foldid_column: None,
            nlambda: 10,
            bootstrap: 0,
            top_k: 1,
            seed: 5,
            secure_aggregation: false,
            on_masked_dropout: Default::default(),
        };
        let (t1, t2) = (table("41.25"), table("41.5"));
        let a = site_data_cached(&t1, &spec, 9).unwrap();
        assert_eq!(*a, site_data(&t1, &spec, 9).unwrap());
        assert!(Arc::ptr_eq(&a, &site_data_cached(&t1, &spec, 9).unwrap()));
        let b = site_data_cached(&t2, &spec, 9).unwrap();
        assert_eq!(b.x[[5, 0]], 41.5);
        assert_eq!(a.x[[5, 0]], 41.25);
        let c = site_data_cached(&t1, &spec, 10).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(*c, site_data(&t1, &spec, 10).unwrap());
        assert!(matches!(
            site_data_cached(&table("NA"), &spec, 9),
            Err(LassoError::Missing { .. })
        ));
    }
}
