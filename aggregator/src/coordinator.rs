//! The aggregator's core: studies, sites and the rules for who gets which task, with every
//! transition persisted before anyone is told about it. IO-free apart from the `Store`.
//!
//! What is durable when (the persisted transitions, each a named [`failpoint`](crate::failpoint)):
//! - a submitted study: its state, flushed before the submitter is told (`submit.persisted`);
//! - a result: kept in memory only (`result.accepted`). A result lost in a crash is asked for
//!   again — the site answers the same task with the same bytes — so nothing is double-counted;
//! - a completed round: every site's result appended to the study's round log
//!   (`round.written`, see [`crate::roundlog`]), synced before the next round is handed out
//!   (`round.durable`). Except a *recomputable* round followed by another
//!   (`StudyState::completed_recomputable`: the pipeline's plain ComBat, LASSO and meta-model
//!   sums, which a site answers again with the same bytes and keeps no answer for): it is not
//!   logged at all, and a crash before the next durable transition rewinds the study to it and
//!   asks the sites again. Those rounds were ≈ 2.7 GB of LASSO sums per batch of 10 repeats, and
//!   writing them was a seventh of the whole study's CPU, on the critical path of every
//!   round. The first round after them that is not recomputable is made durable by a snapshot
//!   (the log must hold every round after the snapshot, in order), so no site is ever handed a
//!   task whose answer it keeps (the trained models, the scored probabilities) while the state
//!   before it could still be lost;
//! - a snapshot of the whole study state (`snapshot.written`, `snapshot.durable`): when the study
//!   finishes, and after a completed round once `snapshot_interval_ms` has passed since the last
//!   one. Writing a large study's state after every round cost more than the round itself (a
//!   pipeline study's state is megabytes of LASSO paths), so the state is written now and then
//!   and the rounds in between are replayed on start-up (`restore.replayed`): the drivers are
//!   deterministic functions of the stored results, so the replayed state is bit-identical.
//!   The round log is then emptied (except Table 1's, whose first round the report reads).
//!
//! A round deadline pausing a study is not persisted: it is a function of the time, and a
//! restarted aggregator gives the sites a fresh deadline. A deadline that drops a site from a
//! masked round (`federation::engine`, `on_masked_dropout`) is a transition: the study is
//! snapshotted before the restarted round is handed out.
//!
//! **Finished studies leave memory.** Once a finished study's results folder is durable (the
//! server's housekeeping writes and syncs it) the study is *retired* ([`Coordinator::retire`]):
//! in one atomic store batch its final snapshot moves to the archive and a small
//! [`RetiredStudy`] summary is written (`retire.durable`); the whole state (driver, last round's
//! results, output) is then dropped and only the summary stays in memory. Everything that asked
//! for the state still gets it: [`Coordinator::study`] reads the archive on demand, a retried
//! push is answered from the archived state exactly as a restarted aggregator would, and a
//! restart loads retired studies as summaries only. Without this a long-running aggregator kept
//! every study it ever ran (a few MiB each at 50 sites).

use crate::failpoint;
use crate::store::{SiteRecord, Store, StoreError};
use federation::engine::{Accepted, EngineError, StudyState, StudyStatus};
use federation::study::StudySpec;
use federation::task::{Task, TaskResult};
use federation::{PROTOCOL_VERSION, SiteId, StudyHash, StudyId};
use serde::{Deserialize, Serialize};
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

/// A finished study retired from memory: what `status`, the inbox and the progress queries need
/// without reading its archived state. Written to the store when the study is retired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredStudy {
    pub hash: StudyHash,
    pub status: StudyStatus,
    pub round: u32,
    /// `StudyState::stage_progress` at the end (multi-stage studies).
    pub stage: Option<(String, f64)>,
    /// The study's line in `status.json`, exactly as it was before the study was retired.
    pub summary: StudySummary,
}

/// How a study is held in memory.
enum Held {
    /// Running, or finished and not yet retired: the whole state.
    Live(Box<StudyState>),
    /// Finished, results durable: the summary only (the state is in the store's archive).
    Retired(RetiredStudy),
}

impl Held {
    fn live(&self) -> Option<&StudyState> {
        match self {
            Held::Live(s) => Some(s),
            Held::Retired(_) => None,
        }
    }
}

/// How many studies the coordinator holds, and how: bounded memory means `live` does not grow
/// with the number of studies run, only `retired` (a few hundred bytes each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Residency {
    /// Running or paused studies (whole state in memory).
    pub running: usize,
    /// Finished studies still held whole (results folder not yet durable).
    pub finished_in_memory: usize,
    /// Finished studies held as a summary only.
    pub retired: usize,
}

struct Inner {
    studies: BTreeMap<StudyId, Held>,
    sites: BTreeMap<String, SiteRecord>,
    /// When each study's state was last written whole (ms since the epoch).
    snapshot_ms: BTreeMap<StudyId, u64>,
    /// Studies with completed rounds that are neither logged nor in a snapshot (recomputable
    /// rounds, see the module doc): the next round that is not is written as a snapshot.
    unlogged: BTreeSet<StudyId>,
}

/// Default time between two snapshots of a running study's state.
pub const DEFAULT_SNAPSHOT_INTERVAL_MS: u64 = 20_000;

/// Shared aggregator state.
pub struct Coordinator {
    store: Box<dyn Store>,
    enrolled: BTreeSet<SiteId>,
    deadline_ms: u64,
    snapshot_interval_ms: u64,
    inner: Mutex<Inner>,
    /// Set when a transition could not be persisted: no more work is handed out until restart.
    degraded: std::sync::atomic::AtomicBool,
    /// Woken on every state change (long-polls and status writers wait on it).
    pub changed: Notify,
    /// Per study: wall time per stage and the ETA's base (`crate::timing`; memory only).
    clocks: Mutex<BTreeMap<String, crate::timing::StudyClock>>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Per study id: wall time per stage, and for running multi-stage studies the elapsed time
    /// and the ETA (`crate::timing`).
    pub timing: BTreeMap<String, crate::timing::StudyTiming>,
}

/// A site counts as connected if seen within this window.
const CONNECTED_WINDOW_MS: u64 = 30_000;

impl Coordinator {
    /// Loads persisted studies and sites, replaying the rounds completed after each study's
    /// last snapshot.
    pub fn new(
        store: Box<dyn Store>,
        enrolled: Vec<SiteId>,
        deadline_ms: u64,
        snapshot_interval_ms: u64,
    ) -> Result<Self, CoordError> {
        let mut studies = BTreeMap::new();
        let mut snapshot_ms = BTreeMap::new();
        let now = now_ms();
        for mut s in store.studies()? {
            let id = s.spec.id.to_string();
            let mut replayed = 0u32;
            // The log holds whole rounds (a torn last record is dropped); each one at the
            // study's current round advances it exactly as it did before the stop. Rounds
            // before it are covered by the snapshot (a stop between the snapshot and the log's
            // truncation leaves them behind).
            for (round, results) in store.logged_rounds(&id)? {
                if s.status.is_finished() || round < s.round {
                    continue;
                }
                if round > s.round || !s.restore(results, now) {
                    break;
                }
                if let Some(rec) = s.completed.as_ref() {
                    store.write_round(&id, rec)?;
                }
                replayed += 1;
            }
            if replayed > 0 {
                tracing::info!(
                    "study {id}: replayed {replayed} logged rounds, at round {}",
                    s.round
                );
                s.digest_previous();
                store.put_study(&s)?;
                store.flush()?;
            }
            if prunes_results(&s) {
                store.prune_results(&id)?;
            }
            if !s.status.is_finished() {
                // Rounds after this one that were not logged (recomputable) are asked again.
                tracing::info!("study {id}: resuming at round {}", s.round);
            }
            snapshot_ms.insert(s.spec.id.clone(), now);
            studies.insert(s.spec.id.clone(), Held::Live(Box::new(s)));
        }
        let live = studies.len();
        for r in store.retired()? {
            let id = StudyId::new(r.summary.id.clone()).map_err(|e| StoreError::Corrupt {
                path: std::path::PathBuf::from("retired"),
                key: r.summary.id.clone(),
                message: e.to_string(),
            })?;
            // Also loaded whole: the retirement was cut short after its summary was written
            // (see `Store::retire`); it is retired again once its results are checked.
            studies.entry(id).or_insert(Held::Retired(r));
        }
        if !studies.is_empty() {
            tracing::info!(
                "loaded {live} studies whole and {} finished studies as summaries",
                studies.len() - live
            );
        }
        failpoint::hit("restore.replayed");
        let sites = store
            .sites()?
            .into_iter()
            .map(|s| (s.site.clone(), s))
            .collect();
        Ok(Self {
            store,
            enrolled: enrolled.into_iter().collect(),
            deadline_ms,
            snapshot_interval_ms,
            inner: Mutex::new(Inner {
                studies,
                sites,
                snapshot_ms,
                unlogged: BTreeSet::new(),
            }),
            degraded: std::sync::atomic::AtomicBool::new(false),
            changed: Notify::new(),
            clocks: Mutex::new(BTreeMap::new()),
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
        Ok(inner
            .studies
            .values()
            .find_map(|s| s.live()?.task_for(site)))
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
        let Inner {
            studies,
            snapshot_ms,
            unlogged,
            ..
        } = &mut *inner;
        let state = match studies.get_mut(&study_id) {
            Some(Held::Live(state)) => state,
            Some(Held::Retired(_)) => {
                // A retry of a retired study's last result (its reply was lost), or a stray
                // push: answered from the archived state, as a restarted aggregator would. A
                // finished state changes under no push, so the copy is simply dropped.
                let mut archived =
                    self.store
                        .archived_study(study_id.as_str())?
                        .ok_or_else(|| {
                            CoordError::UnknownStudy(format!(
                                "{study_id} (its archived state is missing)"
                            ))
                        })?;
                return Ok(archived.accept(site, result, bytes, now_ms())?);
            }
            None => return Err(CoordError::UnknownStudy(study_id.to_string())),
        };
        // Applied in place: cloning a state whose round holds every site's sums so far would
        // cost O(sites²) copying per round. If persisting fails below, the in-memory state is
        // ahead of the disk; the aggregator then stops handing out work (see `degraded`) and a
        // restart resumes from the last persisted transition, re-asking for what was lost.
        let round_before = state.round;
        let accepted = state.accept(site, result, bytes, now_ms())?;
        if accepted == Accepted::Duplicate {
            return Ok(accepted);
        }
        failpoint::hit("result.accepted");
        if accepted == Accepted::RoundComplete {
            // The round's stage for the study's clock, read before the record goes to the store.
            let stage = state.completed.as_ref().map(|r| {
                (
                    crate::timing::round_stage(&r.tasks),
                    r.bytes.values().sum::<u64>(),
                )
            });
            let persisted = (|| -> Result<(), StoreError> {
                // Left in place: the state keeps its results for a retried push.
                let mut snapshot_now = false;
                if let Some(rec) = state.completed.as_ref() {
                    if state.completed_recomputable() {
                        // Asked again after a crash instead (see the module doc).
                        self.store.note_round(study_id.as_str(), rec)?;
                        unlogged.insert(study_id.clone());
                    } else if unlogged.contains(&study_id) {
                        // The log must hold every round after the snapshot, in order: with
                        // unlogged rounds before this one, the state itself is written.
                        self.store.note_round(study_id.as_str(), rec)?;
                        snapshot_now = true;
                    } else {
                        self.store.write_round(study_id.as_str(), rec)?;
                        failpoint::hit("round.written");
                        self.store.sync_rounds(study_id.as_str())?;
                        failpoint::hit("round.durable");
                    }
                }
                let now = now_ms();
                let last = snapshot_ms.get(&study_id).copied().unwrap_or(0);
                if snapshot_now
                    || state.status.is_finished()
                    || now.saturating_sub(last) >= self.snapshot_interval_ms
                {
                    state.digest_previous();
                    self.store.put_study(state)?;
                    failpoint::hit("snapshot.written");
                    self.store.flush()?;
                    failpoint::hit("snapshot.durable");
                    snapshot_ms.insert(study_id.clone(), now);
                    unlogged.remove(&study_id);
                    if prunes_results(state) {
                        self.store.prune_results(study_id.as_str())?;
                    }
                }
                Ok(())
            })();
            if let Err(e) = persisted {
                tracing::error!("cannot persist study {study_id}: {e}; no more work is handed out");
                self.degraded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e.into());
            }
            if let Some((stage, result_bytes)) = stage {
                self.clock_round(study_id.as_str(), &stage, result_bytes, || {
                    state.stage_progress().map_or(0.0, |p| p.1)
                });
            }
            if state.round != round_before || state.status.is_finished() {
                tracing::debug!(
                    "study {study_id}: round {round_before} complete -> {}",
                    if state.status.is_finished() {
                        state.status.describe()
                    } else {
                        format!("round {}", state.round)
                    }
                );
            }
            if state.status.is_finished() {
                tracing::info!("study {study_id}: {}", state.status.describe());
            }
        }
        drop(inner);
        self.changed.notify_waiters();
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
        self.store.flush()?;
        failpoint::hit("submit.persisted");
        self.clocks.lock().expect("clock lock poisoned").insert(
            state.spec.id.to_string(),
            crate::timing::StudyClock::new(now_ms(), 0.0),
        );
        let hash = state.hash.clone();
        tracing::info!("study {} submitted (hash {hash})", state.spec.id);
        inner.snapshot_ms.insert(state.spec.id.clone(), now_ms());
        inner
            .studies
            .insert(state.spec.id.clone(), Held::Live(Box::new(state)));
        drop(inner);
        self.changed.notify_waiters();
        Ok(hash)
    }

    /// Applies round deadlines; returns whether anything changed. In memory only (see the
    /// module doc): a pause is a function of the time.
    pub fn tick(&self) -> Result<bool, CoordError> {
        let now = now_ms();
        let mut inner = self.lock();
        let mut changed = false;
        let Inner {
            studies,
            snapshot_ms,
            unlogged,
            ..
        } = &mut *inner;
        for (id, held) in studies.iter_mut() {
            let Held::Live(study) = held else { continue };
            let round = study.round;
            if study.tick(now) {
                if let StudyStatus::Paused { .. } = &study.status {
                    tracing::warn!("study {id} {}", study.status.describe());
                }
                if study.round != round {
                    // A site dropped from a masked round (`StudyState::tick`): unlike a pause
                    // this is a transition, persisted as a snapshot before the restarted round
                    // is handed out. A crash before it re-runs the abandoned attempt, whose
                    // vectors are re-sent identically, and drops the site again.
                    if let Some(d) = study.dropped.last() {
                        tracing::warn!(
                            "study {id}: site {} left out at round {} ({}); the round restarts without it",
                            d.site,
                            d.round,
                            d.reason
                        );
                    }
                    study.digest_previous();
                    self.store.put_study(study)?;
                    self.store.flush()?;
                    snapshot_ms.insert(id.clone(), now);
                    unlogged.remove(id);
                }
                changed = true;
            }
        }
        drop(inner);
        if changed {
            self.changed.notify_waiters();
        }
        Ok(changed)
    }

    /// A study's whole state: a copy of the one in memory, or for a retired study the archived
    /// final snapshot read from the store (`None` if there is no such study, or the archive
    /// cannot be read — logged).
    pub fn study(&self, id: &str) -> Option<StudyState> {
        let inner = self.lock();
        match inner.studies.get(&StudyId::new(id).ok()?)? {
            Held::Live(s) => Some(StudyState::clone(s)),
            Held::Retired(_) => {
                drop(inner);
                match self.store.archived_study(id) {
                    Ok(state) => state,
                    Err(e) => {
                        tracing::error!("cannot read the archived state of study {id}: {e}");
                        None
                    }
                }
            }
        }
    }

    /// Every completed round of a study (inputs and outputs), from the store.
    pub fn rounds(&self, study: &str) -> Result<Vec<federation::engine::RoundRecord>, CoordError> {
        Ok(self.store.rounds(study)?)
    }

    fn with_held<T>(&self, id: &str, f: impl FnOnce(&Held) -> T) -> Option<T> {
        let id = StudyId::new(id).ok()?;
        self.lock().studies.get(&id).map(f)
    }

    /// The hash of a registered study, if there is one with this id.
    pub fn study_hash(&self, id: &str) -> Option<StudyHash> {
        self.with_held(id, |h| match h {
            Held::Live(s) => s.hash.clone(),
            Held::Retired(r) => r.hash.clone(),
        })
    }

    /// Where a study stands and its round, without copying its state.
    pub fn study_status(&self, id: &str) -> Option<(StudyStatus, u32)> {
        self.with_held(id, |h| match h {
            Held::Live(s) => (s.status.clone(), s.round),
            Held::Retired(r) => (r.status.clone(), r.round),
        })
    }

    /// Status, round and stage progress of a study, without copying its state.
    pub fn study_progress(&self, id: &str) -> Option<StudyProgress> {
        self.with_held(id, |h| match h {
            Held::Live(s) => (s.status.clone(), s.round, s.stage_progress()),
            Held::Retired(r) => (r.status.clone(), r.round, r.stage.clone()),
        })
    }

    /// Ids of the finished studies still held whole in memory: their results are to be written
    /// and made durable, then the study retired ([`Coordinator::retire`]).
    pub fn finished_studies(&self) -> Vec<String> {
        self.lock()
            .studies
            .values()
            .filter_map(Held::live)
            .filter(|s| s.status.is_finished())
            .map(|s| s.spec.id.to_string())
            .collect()
    }

    /// Retires a finished study whose results folder the caller has made durable: its final
    /// snapshot moves to the store's archive and its summary is written, in one synced batch
    /// (`retire.durable`), then its state is dropped from memory. Returns `Ok(false)` (and does
    /// nothing) for a study that is running, already retired or unknown, and while the
    /// aggregator is degraded (the state in memory may then be ahead of the disk).
    pub fn retire(&self, id: &str) -> Result<bool, CoordError> {
        let Ok(study_id) = StudyId::new(id) else {
            return Ok(false);
        };
        if self.degraded.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(false);
        }
        let mut inner = self.lock();
        let Some(Held::Live(state)) = inner.studies.get(&study_id) else {
            return Ok(false);
        };
        if !state.status.is_finished() {
            return Ok(false);
        }
        let retired = RetiredStudy {
            hash: state.hash.clone(),
            status: state.status.clone(),
            round: state.round,
            stage: state.stage_progress(),
            summary: summarize(state),
        };
        self.store.retire(id, &retired)?;
        failpoint::hit("retire.durable");
        inner
            .studies
            .insert(study_id.clone(), Held::Retired(retired));
        inner.snapshot_ms.remove(&study_id);
        inner.unlogged.remove(&study_id);
        drop(inner);
        tracing::debug!("study {id}: results durable, state retired from memory");
        Ok(true)
    }

    /// How many studies are held whole and how many as summaries.
    pub fn residency(&self) -> Residency {
        let inner = self.lock();
        let mut r = Residency {
            running: 0,
            finished_in_memory: 0,
            retired: 0,
        };
        for h in inner.studies.values() {
            match h {
                Held::Live(s) if s.status.is_finished() => r.finished_in_memory += 1,
                Held::Live(_) => r.running += 1,
                Held::Retired(_) => r.retired += 1,
            }
        }
        r
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
            .map(|h| match h {
                Held::Live(s) => summarize(s),
                Held::Retired(r) => r.summary.clone(),
            })
            .collect();
        drop(inner);
        let mut report = StatusReport {
            updated_ms: now,
            sites,
            studies,
            timing: BTreeMap::new(),
        };
        report.timing = report
            .studies
            .iter()
            .filter_map(|s| {
                let running = (!s.finished).then_some((now, s.fraction_done));
                Some((s.id.clone(), self.timing_at(&s.id, running)?))
            })
            .collect();
        report
    }

    /// A round of `stage` of study `id` completed now. A study without a clock (submitted
    /// before this aggregator started) gets one starting now, at its current fraction done.
    fn clock_round(
        &self,
        id: &str,
        stage: &str,
        result_bytes: u64,
        fraction_done: impl FnOnce() -> f64,
    ) {
        let now = now_ms();
        let mut clocks = self.clocks.lock().expect("clock lock poisoned");
        match clocks.get_mut(id) {
            Some(c) => c.round_done(stage, now, result_bytes),
            // The round straddled the restart: its time is not attributed.
            None => {
                clocks.insert(
                    id.to_string(),
                    crate::timing::StudyClock::new(now, fraction_done()),
                );
            }
        }
    }

    /// A task of `bytes` (encoded) of study `id` went to a site (for the traffic per stage).
    pub fn task_sent(&self, id: &str, bytes: u64) {
        if let Some(c) = self.clocks.lock().expect("clock lock poisoned").get_mut(id) {
            c.task_sent(bytes);
        }
    }

    /// A study's wall time per stage as measured by this aggregator (since its submission, or
    /// since this aggregator started); `None` if no round of it completed here yet.
    pub fn timing(&self, id: &str) -> Option<crate::timing::StudyTiming> {
        let running = self
            .study_progress(id)
            .filter(|(status, _, _)| !status.is_finished())
            .map(|(_, _, stage)| (now_ms(), stage.map(|s| s.1)));
        self.timing_at(id, running)
    }

    fn timing_at(
        &self,
        id: &str,
        running: Option<(u64, Option<f64>)>,
    ) -> Option<crate::timing::StudyTiming> {
        let clocks = self.clocks.lock().expect("clock lock poisoned");
        Some(clocks.get(id)?.timing(running))
    }
}

/// A study's line in `status.json`.
fn summarize(s: &StudyState) -> StudySummary {
    let (answered, total) = s.progress();
    let stage = s.stage_progress();
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
        fraction_done: stage.as_ref().map(|p| p.1),
        stage: stage.map(|p| p.0),
    }
}

/// Whether a study's stored results may be deleted once a snapshot covers them: all but Table 1
/// (its first round's group sizes feed the report's per-site counts, and they are small).
fn prunes_results(state: &StudyState) -> bool {
    !matches!(state.analysis, federation::engine::Analysis::Table1(_))
}
