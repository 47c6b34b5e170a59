//! The aggregator's core: studies, sites and the rules for who gets which task, with every
//! transition persisted before anyone is told about it. IO-free apart from the `Store`.

use crate::store::{SiteRecord, Store, StoreError};
use federation::engine::{Accepted, EngineError, StudyState, StudyStatus};
use federation::study::StudySpec;
use federation::task::{Task, TaskResult};
use federation::{PROTOCOL_VERSION, SiteId, StudyHash, StudyId};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(
        "protocol version mismatch: the agent speaks v{agent}, this aggregator speaks v{ours}; install matching fedrad releases"
    )]
    Version { agent: u32, ours: u32 },
    #[error("site {0} is not enrolled with this aggregator (add it to enrolled_sites)")]
    NotEnrolled(SiteId),
    #[error("the study cannot start: {0}")]
    Setup(String),
    #[error("study {0} already exists; choose another id")]
    Duplicate(StudyId),
    #[error("no study {0}")]
    UnknownStudy(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct Inner {
    studies: BTreeMap<StudyId, StudyState>,
    sites: BTreeMap<String, SiteRecord>,
}

/// Shared aggregator state.
pub struct Coordinator {
    store: Box<dyn Store>,
    enrolled: BTreeSet<SiteId>,
    deadline_ms: u64,
    inner: Mutex<Inner>,
    /// Set when a transition could not be persisted: no more work is handed out until restart.
    degraded: std::sync::atomic::AtomicBool,
    /// Woken on every state change (long-polls and status writers wait on it).
    pub changed: Notify,
}

/// A site as shown by `aggregator status`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteStatus {
    pub site: String,
    pub enrolled: bool,
    pub connected: bool,
    pub last_seen_ms: Option<u64>,
    pub agent_version: Option<String>,
}

/// Status, round, and for multi-stage studies (stage description, fraction done).
pub type StudyProgress = (StudyStatus, u32, Option<(String, f64)>);

/// A study as shown by `aggregator status`.
#[derive(Debug, Clone, Serialize)]
pub struct StudySummary {
    pub id: String,
    pub hash: String,
    pub kind: String,
    pub round: u32,
    pub answered: usize,
    pub sites: usize,
    pub status: String,
    pub finished: bool,
    pub failed: bool,
    /// Multi-stage studies: where the study is (e.g. "batch 2/10 (repeats 11–20 …): LASSO").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// Fraction of the work done (multi-stage studies), for an ETA.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction_done: Option<f64>,
}

/// The whole status report.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub updated_ms: u64,
    pub sites: Vec<SiteStatus>,
    pub studies: Vec<StudySummary>,
}

/// A site counts as connected if seen within this window.
const CONNECTED_WINDOW_MS: u64 = 30_000;

impl Coordinator {
    /// Loads persisted studies and sites.
    pub fn new(
        store: Box<dyn Store>,
        enrolled: Vec<SiteId>,
        deadline_ms: u64,
    ) -> Result<Self, CoordError> {
        let mut studies = BTreeMap::new();
        for mut s in store.studies()? {
            let results = store.results(s.spec.id.as_str(), s.round)?;
            if s.restore(results, now_ms()) {
                if let Some(rec) = s.completed.take() {
                    store.put_round(s.spec.id.as_str(), &rec)?;
                }
                store.put_study(&s)?;
            }
            studies.insert(s.spec.id.clone(), s);
        }
        let sites = store
            .sites()?
            .into_iter()
            .map(|s| (s.site.clone(), s))
            .collect();
        Ok(Self {
            store,
            enrolled: enrolled.into_iter().collect(),
            deadline_ms,
            inner: Mutex::new(Inner { studies, sites }),
            degraded: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("coordinator lock poisoned")
    }

    pub fn is_enrolled(&self, site: &SiteId) -> bool {
        self.enrolled.contains(site)
    }

    fn check_enrolled(&self, site: &SiteId) -> Result<(), CoordError> {
        if self.is_enrolled(site) {
            Ok(())
        } else {
            Err(CoordError::NotEnrolled(site.clone()))
        }
    }

    fn touch(
        &self,
        inner: &mut Inner,
        site: &SiteId,
        version: Option<(&str, u32)>,
    ) -> Result<(), CoordError> {
        let rec = inner
            .sites
            .entry(site.to_string())
            .or_insert_with(|| SiteRecord {
                site: site.to_string(),
                agent_version: String::new(),
                protocol_version: 0,
                last_seen_ms: 0,
            });
        rec.last_seen_ms = now_ms();
        if let Some((v, p)) = version {
            rec.agent_version = v.to_string();
            rec.protocol_version = p;
            // Version changes are persisted; plain liveness is kept in memory only.
            self.store.put_site(rec)?;
        }
        Ok(())
    }

    /// First call of a connection.
    pub fn handshake(
        &self,
        site: &SiteId,
        protocol_version: u32,
        agent_version: &str,
    ) -> Result<(), CoordError> {
        self.check_enrolled(site)?;
        if protocol_version != PROTOCOL_VERSION {
            return Err(CoordError::Version {
                agent: protocol_version,
                ours: PROTOCOL_VERSION,
            });
        }
        let mut inner = self.lock();
        self.touch(&mut inner, site, Some((agent_version, protocol_version)))?;
        tracing::info!("site {site} connected (agent {agent_version})");
        Ok(())
    }

    pub fn heartbeat(&self, site: &SiteId) -> Result<(), CoordError> {
        self.check_enrolled(site)?;
        let mut inner = self.lock();
        self.touch(&mut inner, site, None)
    }

    /// The next task for this site, if any (studies in id order).
    pub fn pull(&self, site: &SiteId) -> Result<Option<Task>, CoordError> {
        self.check_enrolled(site)?;
        let mut inner = self.lock();
        self.touch(&mut inner, site, None)?;
        if self.degraded.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(inner.studies.values().find_map(|s| s.task_for(site)))
    }

    /// Takes a site's result (`bytes`: its encoded size); persisted before returning.
    pub fn push(
        &self,
        site: &SiteId,
        result: TaskResult,
        bytes: u64,
    ) -> Result<Accepted, CoordError> {
        self.check_enrolled(site)?;
        let mut inner = self.lock();
        self.touch(&mut inner, site, None)?;
        let study_id = result.study_id.clone();
        let Inner { studies, .. } = &mut *inner;
        let state = studies
            .get_mut(&study_id)
            .ok_or_else(|| CoordError::UnknownStudy(study_id.to_string()))?;
        // Applied in place: cloning a state whose round holds every site's sums so far would
        // cost O(sites²) copying per round. If persisting fails below, the in-memory state is
        // ahead of the disk; the aggregator then stops handing out work (see `degraded`) and a
        // restart resumes from the last persisted transition, re-asking for what was lost.
        let round_before = state.round;
        let status_before = state.status.clone();
        let body = result.body.clone();
        let accepted = state.accept(site, result, bytes, now_ms())?;
        if accepted != Accepted::Duplicate {
            let persisted = (|| -> Result<(), StoreError> {
                self.store
                    .put_result(study_id.as_str(), round_before, site, &body, bytes)?;
                if let Some(rec) = state.completed.take() {
                    self.store.put_round(study_id.as_str(), &rec)?;
                }
                if accepted == Accepted::RoundComplete || state.status != status_before {
                    self.store.put_study(state)?;
                }
                Ok(())
            })();
            if let Err(e) = persisted {
                tracing::error!("cannot persist study {study_id}: {e}; no more work is handed out");
                self.degraded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
            if state.round != round_before || state.status.is_finished() {
                tracing::info!(
                    "study {study_id}: round {round_before} complete -> {}",
                    if state.status.is_finished() {
                        state.status.describe()
                    } else {
                        format!("round {}", state.round)
                    }
                );
            }
            drop(inner);
            self.changed.notify_waiters();
        }
        Ok(accepted)
    }

    /// Registers a study for every enrolled site; persisted before returning.
    pub fn submit(&self, spec: StudySpec) -> Result<StudyHash, CoordError> {
        let mut inner = self.lock();
        if inner.studies.contains_key(&spec.id) {
            return Err(CoordError::Duplicate(spec.id));
        }
        let state = StudyState::new(
            spec,
            self.enrolled.iter().cloned().collect(),
            now_ms(),
            self.deadline_ms,
        )
        .map_err(CoordError::Setup)?;
        self.store.put_study(&state)?;
        let hash = state.hash.clone();
        tracing::info!("study {} submitted (hash {hash})", state.spec.id);
        inner.studies.insert(state.spec.id.clone(), state);
        drop(inner);
        self.changed.notify_waiters();
        Ok(hash)
    }

    /// Applies round deadlines; returns whether anything changed.
    pub fn tick(&self) -> Result<bool, CoordError> {
        let now = now_ms();
        let mut inner = self.lock();
        let mut changed = false;
        let ids: Vec<StudyId> = inner.studies.keys().cloned().collect();
        for id in ids {
            let mut next = inner.studies[&id].clone();
            if next.tick(now) {
                self.store.put_study(&next)?;
                if let StudyStatus::Paused { .. } = &next.status {
                    tracing::warn!("study {id} {}", next.status.describe());
                }
                inner.studies.insert(id, next);
                changed = true;
            }
        }
        drop(inner);
        if changed {
            self.changed.notify_waiters();
        }
        Ok(changed)
    }

    pub fn study(&self, id: &str) -> Option<StudyState> {
        self.lock()
            .studies
            .values()
            .find(|s| s.spec.id.as_str() == id)
            .cloned()
    }

    /// Every completed round of a study (inputs and outputs), from the store.
    pub fn rounds(&self, study: &str) -> Result<Vec<federation::engine::RoundRecord>, CoordError> {
        Ok(self.store.rounds(study)?)
    }

    /// Where a study stands and its round, without copying its state.
    pub fn study_status(&self, id: &str) -> Option<(StudyStatus, u32)> {
        self.lock()
            .studies
            .values()
            .find(|s| s.spec.id.as_str() == id)
            .map(|s| (s.status.clone(), s.round))
    }

    /// Status, round and stage progress of a study, without copying its state.
    pub fn study_progress(&self, id: &str) -> Option<StudyProgress> {
        self.lock()
            .studies
            .values()
            .find(|s| s.spec.id.as_str() == id)
            .map(|s| (s.status.clone(), s.round, s.stage_progress()))
    }

    /// Ids of the finished studies.
    pub fn finished_studies(&self) -> Vec<String> {
        self.lock()
            .studies
            .values()
            .filter(|s| s.status.is_finished())
            .map(|s| s.spec.id.to_string())
            .collect()
    }

    pub fn status(&self) -> StatusReport {
        let inner = self.lock();
        let now = now_ms();
        let mut names: BTreeSet<String> = self.enrolled.iter().map(|s| s.to_string()).collect();
        names.extend(inner.sites.keys().cloned());
        let sites = names
            .into_iter()
            .map(|name| {
                let rec = inner.sites.get(&name);
                SiteStatus {
                    enrolled: self.enrolled.iter().any(|e| e.as_str() == name),
                    connected: rec
                        .is_some_and(|r| now.saturating_sub(r.last_seen_ms) < CONNECTED_WINDOW_MS),
                    last_seen_ms: rec.map(|r| r.last_seen_ms),
                    agent_version: rec.map(|r| r.agent_version.clone()),
                    site: name,
                }
            })
            .collect();
        let studies = inner
            .studies
            .values()
            .map(|s| {
                let (answered, total) = s.progress();
                StudySummary {
                    id: s.spec.id.to_string(),
                    hash: s.hash.to_string(),
                    kind: s.spec.analysis.kind().to_string(),
                    round: s.round,
                    answered,
                    sites: total,
                    status: s.status.describe(),
                    finished: s.status.is_finished(),
                    failed: matches!(s.status, StudyStatus::Failed { .. }),
                    stage: s.stage_progress().map(|p| p.0),
                    fraction_done: s.stage_progress().map(|p| p.1),
                }
            })
            .collect();
        StatusReport {
            updated_ms: now,
            sites,
            studies,
        }
    }
}
