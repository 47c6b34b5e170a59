//! The round engine: a pure state machine that drives one study's rounds.
//!
//! The aggregator owns IO; this type owns the rules. Every method is a transition the aggregator
//! persists *before* acting on it (answering the site, handing out the next round), so a crash at
//! any point resumes from the last persisted state. Time comes in as milliseconds since the epoch.
//!
//! Rules:
//! - a round's task goes to every participating site; the round completes when every site has
//!   answered (exact steps need every site);
//! - results are keyed by (study, round, site): a repeat of an accepted result is acknowledged and
//!   ignored (idempotent), a different payload for the same key is refused;
//! - when a round has waited longer than the deadline the study is `Paused`, naming the missing
//!   sites; it resumes by itself when they answer. It never hangs silently;
//! - a site's `Failure` fails the study with that site's message;
//! - **dropout in a masked round** (secure aggregation, `crate::secure`): when a masked round
//!   passes its deadline and the study allows it (`on_masked_dropout = "continue_without_site"`
//!   in a pipeline, Table 1, harmonize or LASSO study), the missing sites are left out of the
//!   rest of the study and the analysis restarts over the survivors — a new engine round, a
//!   fresh secure-aggregation round id, the survivors re-mask — provided at least 3 sites remain
//!   ([`StudyState::tick`]). What restarts is whatever already summed the dropped site's data:
//!   Table 1 its masked summary round, listing the survivors' categorical levels only
//!   (`crate::table1`); ComBat its cross-products round (round 1), the design rebuilt from the
//!   survivors' levels, whether the site missed round 1 or 2 (`crate::harmonize`); the LASSO
//!   every fit from its moments round (`crate::lasso`); the pipeline its current stage
//!   (`crate::pipeline::PipelineDriver::drop_sites`). A left-out site's later results, the late
//!   vector of the abandoned attempt included, are refused ([`EngineError::Dropped`]); the
//!   survivors' answers to the abandoned attempt are refused as stale. [`StudyState::dropped`]
//!   and the output (`Table1Output::dropped`, `HarmonizeOutput::dropped`,
//!   `LassoOutput::dropped`, the pipeline's `CvSummary::sites`) name each left-out site with the
//!   round and the reason. Otherwise (the default `pause`, plain rounds, a restart the analysis
//!   cannot build, fewer than 3 left) the study pauses as above. Tests:
//!   `tests/secure_dropout.rs`, `tests/secure_pipeline.rs`.

use crate::harmonize::{HarmonizeDriver, HarmonizeOutput};
use crate::ids::{SiteId, StudyHash};
use crate::lasso::{LassoOutput, LassoStudyDriver};
use crate::study::{AnalysisSpec, StudySpec};
use crate::table1::{Table1Driver, Table1Output};
use crate::task::{ResultBody, Task, TaskBody, TaskResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// SHA-256 of a result's postcard encoding (deterministic: f64s as their 8 bytes, fields in
/// declaration order). Postcard rather than JSON because formatting every float of a large
/// result as text dominated the aggregator's time per round.
pub fn digest(body: &ResultBody) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    postcard::to_io(body, &mut h).expect("a result always serialises");
    hex::encode(h.finalize())
}

/// Where a study stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StudyStatus {
    Running,
    /// The current round passed its deadline without these sites' answers.
    Paused {
        missing: Vec<SiteId>,
        since_ms: u64,
    },
    Completed,
    Failed {
        reason: String,
    },
}

impl StudyStatus {
    pub fn is_finished(&self) -> bool {
        matches!(self, StudyStatus::Completed | StudyStatus::Failed { .. })
    }

    /// One line for `aggregator status`.
    pub fn describe(&self) -> String {
        match self {
            StudyStatus::Running => "running".into(),
            StudyStatus::Paused { missing, .. } => format!(
                "paused: waiting for {} (past the round deadline; the study resumes when they answer)",
                missing
                    .iter()
                    .map(SiteId::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            StudyStatus::Completed => "completed".into(),
            StudyStatus::Failed { reason } => format!("failed: {reason}"),
        }
    }
}

/// The analysis-specific half of the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Analysis {
    Table1(Table1Driver),
    Harmonize(HarmonizeDriver),
    Lasso(LassoStudyDriver),
    Pipeline(Box<crate::pipeline::PipelineDriver>),
}

/// A finished study's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StudyOutput {
    Table1(Table1Output),
    Harmonize(HarmonizeOutput),
    Lasso(LassoOutput),
    Pipeline(Box<crate::pipeline::PipelineOutput>),
}

/// What an analysis does after a complete round.
#[derive(Debug)]
pub enum Step {
    /// The next round: one task per site.
    Next(BTreeMap<SiteId, TaskBody>),
    Done(StudyOutput),
    Failed(String),
}

/// The same task for every site.
pub fn same_for_all(sites: &[SiteId], task: TaskBody) -> BTreeMap<SiteId, TaskBody> {
    sites.iter().map(|s| (s.clone(), task.clone())).collect()
}

impl Analysis {
    fn start(
        spec: &StudySpec,
        sites: &[SiteId],
    ) -> Result<(Self, BTreeMap<SiteId, TaskBody>), String> {
        Ok(match &spec.analysis {
            AnalysisSpec::Table1(t) => {
                let (driver, task) = Table1Driver::start(t.clone(), sites.to_vec());
                (Analysis::Table1(driver), same_for_all(sites, task))
            }
            AnalysisSpec::Harmonize(h) => {
                let (driver, tasks) = HarmonizeDriver::start(h.clone(), sites.to_vec());
                (Analysis::Harmonize(driver), tasks)
            }
            AnalysisSpec::Lasso(l) => {
                let (driver, tasks) = LassoStudyDriver::start(l.clone(), sites.to_vec())?;
                (Analysis::Lasso(driver), tasks)
            }
            AnalysisSpec::Pipeline(p) => {
                let (driver, tasks) =
                    crate::pipeline::PipelineDriver::start((**p).clone(), sites.to_vec())?;
                (Analysis::Pipeline(Box::new(driver)), tasks)
            }
        })
    }

    fn on_round(&mut self, results: &BTreeMap<SiteId, ResultBody>) -> Step {
        match self {
            Analysis::Table1(d) => d.on_round(results),
            Analysis::Harmonize(d) => d.on_round(results),
            Analysis::Lasso(d) => d.on_round(results),
            Analysis::Pipeline(d) => d.on_round(results),
        }
    }
}

/// Why a transition was refused (the caller answers the site with this message).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EngineError {
    #[error("site {0} does not take part in study {1}")]
    NotParticipant(SiteId, String),
    #[error("result is for study {got}, this is study {expected}")]
    WrongStudy { got: String, expected: String },
    #[error("result for round {got} but study {study} is at round {current}")]
    FutureRound {
        study: String,
        got: u32,
        current: u32,
    },
    #[error("result for round {got} of study {study} is too old (the study is at round {current})")]
    Stale {
        study: String,
        got: u32,
        current: u32,
    },
    #[error("result kind {got} does not answer a {expected} task")]
    WrongKind {
        got: &'static str,
        expected: &'static str,
    },
    #[error(
        "site {site} already sent a different result for study {study} round {round}; results are final once accepted"
    )]
    Conflict {
        site: SiteId,
        study: String,
        round: u32,
    },
    #[error("study {0} is finished; no more results are taken")]
    Finished(String),
    #[error(
        "site {site} was left out of study {study} at round {round} ({reason}); its results are no longer taken"
    )]
    Dropped {
        site: SiteId,
        study: String,
        round: u32,
        reason: String,
    },
}

/// A site left out of a study after it missed a masked round's deadline (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedSite {
    pub site: SiteId,
    /// The engine round it missed (restarted as the next round without it).
    pub round: u32,
    pub reason: String,
}

/// What happened to an accepted result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// Stored; the round still waits for other sites.
    Stored,
    /// Stored and it completed the round (the study advanced, finished or failed).
    RoundComplete,
    /// The same result was already stored (a retry after a lost reply): nothing changed.
    Duplicate,
}

/// One study's complete, serialisable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyState {
    pub spec: StudySpec,
    pub hash: StudyHash,
    pub spec_json: String,
    /// Participating sites, sorted: contributions are combined in this order.
    pub sites: Vec<SiteId>,
    pub round: u32,
    /// This round's task for each site (persisted with a LASSO round's shared requests once).
    #[serde(with = "crate::lasso::stored_tasks")]
    pub tasks: BTreeMap<SiteId, TaskBody>,
    /// This round's results so far. Not serialised with the state: the aggregator stores each
    /// result under its own key as it arrives and restores them with [`StudyState::restore`],
    /// so a push costs one result's worth of writing, not the whole round's.
    #[serde(skip)]
    pub received: BTreeMap<SiteId, ResultBody>,
    /// Encoded size of each received result (bytes on the wire), for the traffic report.
    #[serde(skip)]
    pub received_bytes: BTreeMap<SiteId, u64>,
    /// Digest of each site's result in the round completed last, so a retried push whose reply
    /// was lost is recognised as a duplicate (the full record is stored by the aggregator).
    /// Computed only for a snapshot ([`StudyState::digest_previous`]): hashing every result of
    /// every round cost more than the rounds' statistics; between snapshots the bodies
    /// themselves (`previous_bodies`) answer the question.
    #[serde(default)]
    pub previous: Option<(u32, BTreeMap<SiteId, String>)>,
    /// The results of the round completed last (not serialised; see `previous`).
    #[serde(skip)]
    pub previous_bodies: Option<(u32, BTreeMap<SiteId, ResultBody>)>,
    /// The round that the last transition completed, for the caller to store; transient.
    #[serde(skip)]
    pub completed: Option<RoundRecord>,
    pub status: StudyStatus,
    pub round_started_ms: u64,
    pub deadline_ms: u64,
    pub analysis: Analysis,
    pub output: Option<StudyOutput>,
    /// Sites left out after missing a masked round's deadline, in the order they were dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DroppedSite>,
}

/// A completed round: what was asked and what every site answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    #[serde(with = "crate::lasso::stored_tasks")]
    pub tasks: BTreeMap<SiteId, TaskBody>,
    pub results: BTreeMap<SiteId, ResultBody>,
    /// Bytes each site sent for this round.
    #[serde(default)]
    pub bytes: BTreeMap<SiteId, u64>,
    /// The kind of each site's result (kept when the bulky results themselves are pruned).
    #[serde(default)]
    pub kinds: BTreeMap<SiteId, String>,
}

impl StudyState {
    /// A new study at round 1. `sites` are the enrolled sites that take part. Fails when the
    /// analysis cannot be set up from the spec (the message says why).
    pub fn new(
        spec: StudySpec,
        mut sites: Vec<SiteId>,
        now_ms: u64,
        deadline_ms: u64,
    ) -> Result<Self, String> {
        sites.sort();
        sites.dedup();
        let (analysis, tasks) = Analysis::start(&spec, &sites)?;
        Ok(Self {
            hash: spec.hash(),
            spec_json: spec.canonical_json(),
            spec,
            sites,
            round: 1,
            tasks,
            received: BTreeMap::new(),
            received_bytes: BTreeMap::new(),
            previous: None,
            previous_bodies: None,
            completed: None,
            status: StudyStatus::Running,
            round_started_ms: now_ms,
            deadline_ms,
            analysis,
            output: None,
            dropped: Vec::new(),
        })
    }

    /// The task this site should work on now, if any.
    pub fn task_for(&self, site: &SiteId) -> Option<Task> {
        if self.status.is_finished() || self.received.contains_key(site) {
            return None;
        }
        Some(Task {
            study_id: self.spec.id.clone(),
            study_hash: self.hash.clone(),
            study_spec_json: self.spec_json.clone(),
            round: self.round,
            body: self.tasks.get(site)?.clone(),
        })
    }

    /// Sites that have not answered the current round.
    pub fn missing(&self) -> Vec<SiteId> {
        self.sites
            .iter()
            .filter(|s| !self.received.contains_key(*s))
            .cloned()
            .collect()
    }

    /// Takes a site's result (`bytes`: its encoded size, for the traffic report). On `Ok`, the
    /// caller persists the new state before replying.
    pub fn accept(
        &mut self,
        site: &SiteId,
        result: TaskResult,
        bytes: u64,
        now_ms: u64,
    ) -> Result<Accepted, EngineError> {
        // The round completed last (its record was for the caller to store) now only serves
        // to recognise a retried push of it: its results move, uncopied, to `previous_bodies`.
        if let Some(rec) = self.completed.take() {
            self.previous_bodies = Some((rec.round, rec.results));
        }
        let study = self.spec.id.to_string();
        if result.study_id != self.spec.id {
            return Err(EngineError::WrongStudy {
                got: result.study_id.to_string(),
                expected: study,
            });
        }
        if !self.sites.contains(site) {
            if let Some(d) = self.dropped.iter().find(|d| d.site == *site) {
                return Err(EngineError::Dropped {
                    site: site.clone(),
                    study,
                    round: d.round,
                    reason: d.reason.clone(),
                });
            }
            return Err(EngineError::NotParticipant(site.clone(), study));
        }
        if let Some((_, bodies)) = self
            .previous_bodies
            .as_ref()
            .filter(|p| p.0 == result.round)
        {
            // A retry of the round completed last (its reply was lost).
            return match bodies.get(site) {
                Some(b) if *b == result.body => Ok(Accepted::Duplicate),
                _ => Err(EngineError::Conflict {
                    site: site.clone(),
                    study,
                    round: result.round,
                }),
            };
        }
        if let Some((_, digests)) = self.previous.as_ref().filter(|p| p.0 == result.round) {
            // A retry of the round completed last (its reply was lost).
            return match digests.get(site) {
                Some(d) if *d == digest(&result.body) => Ok(Accepted::Duplicate),
                _ => Err(EngineError::Conflict {
                    site: site.clone(),
                    study,
                    round: result.round,
                }),
            };
        }
        if result.round < self.round {
            return Err(EngineError::Stale {
                study,
                got: result.round,
                current: self.round,
            });
        }
        if result.round > self.round {
            return Err(EngineError::FutureRound {
                study,
                got: result.round,
                current: self.round,
            });
        }
        if let Some(existing) = self.received.get(site) {
            return if *existing == result.body {
                Ok(Accepted::Duplicate)
            } else {
                Err(EngineError::Conflict {
                    site: site.clone(),
                    study,
                    round: result.round,
                })
            };
        }
        if self.status.is_finished() {
            return Err(EngineError::Finished(study));
        }
        let expected = self.tasks.get(site).map_or("none", TaskBody::kind);
        let got = result.body.kind();
        if got != expected && got != "failure" {
            return Err(EngineError::WrongKind { got, expected });
        }
        if let ResultBody::Failure(f) = &result.body {
            self.status = StudyStatus::Failed {
                reason: format!(
                    "site {site} could not answer round {}: {}",
                    self.round, f.message
                ),
            };
            self.received.insert(site.clone(), result.body);
            self.received_bytes.insert(site.clone(), bytes);
            return Ok(Accepted::RoundComplete);
        }
        self.received.insert(site.clone(), result.body);
        self.received_bytes.insert(site.clone(), bytes);
        if let StudyStatus::Paused { since_ms, .. } = self.status {
            let missing = self.missing();
            self.status = if missing.is_empty() {
                StudyStatus::Running
            } else {
                StudyStatus::Paused { missing, since_ms }
            };
        }
        if self.received.len() < self.sites.len() {
            return Ok(Accepted::Stored);
        }
        self.complete_round(now_ms);
        Ok(Accepted::RoundComplete)
    }

    fn complete_round(&mut self, now_ms: u64) {
        let results = std::mem::take(&mut self.received);
        let bytes = std::mem::take(&mut self.received_bytes);
        let step = self.analysis.on_round(&results);
        self.previous = None;
        // The results are kept in the record, not copied: until the next push they recognise a
        // retry of this round from there, then from `previous_bodies` (see `accept`). Every
        // site's sums of a LASSO round were copied twice per round before (here and for the
        // record's tasks), under the aggregator's lock.
        self.previous_bodies = None;
        // The round's tasks move to the record: the step below replaces them (a finished study
        // hands out no task).
        self.completed = Some(RoundRecord {
            round: self.round,
            tasks: std::mem::take(&mut self.tasks),
            kinds: results
                .iter()
                .map(|(s, b)| (s.clone(), b.kind().to_string()))
                .collect(),
            results,
            bytes,
        });
        match step {
            Step::Next(tasks) if !tasks.keys().eq(self.sites.iter()) => {
                self.status = StudyStatus::Failed {
                    reason: format!(
                        "internal error: round {} has tasks for {} of {} sites",
                        self.round + 1,
                        tasks.len(),
                        self.sites.len()
                    ),
                };
            }
            Step::Next(tasks) => {
                self.round += 1;
                self.tasks = tasks;
                self.round_started_ms = now_ms;
                self.status = StudyStatus::Running;
            }
            Step::Done(output) => {
                self.output = Some(output);
                self.status = StudyStatus::Completed;
            }
            Step::Failed(reason) => self.status = StudyStatus::Failed { reason },
        }
    }

    /// Whether the round completed last may stay out of the round log: it and the round now
    /// handed out are both [`TaskBody::recomputable`] for every site, and the study goes on.
    /// Losing such a round in a crash costs asking the sites again (same tasks from the same
    /// durable state, same answers), and no site was given a task whose answer it keeps in
    /// between; the aggregator makes the study durable before it hands out any other task.
    pub fn completed_recomputable(&self) -> bool {
        let Some(rec) = self.completed.as_ref() else {
            return false;
        };
        !self.status.is_finished()
            && rec.tasks.values().all(TaskBody::recomputable)
            && !self.tasks.is_empty()
            && self.tasks.values().all(TaskBody::recomputable)
    }

    /// Digests the previous round's results for a snapshot (the bodies are not serialised).
    pub fn digest_previous(&mut self) {
        let last = match &self.completed {
            Some(rec) => Some((&rec.round, &rec.results)),
            None => self.previous_bodies.as_ref().map(|(r, b)| (r, b)),
        };
        if let Some((round, bodies)) = last {
            self.previous = Some((
                *round,
                bodies.iter().map(|(s, b)| (s.clone(), digest(b))).collect(),
            ));
        }
    }

    /// Checks the deadline. Returns true if the status changed. A pause is a function of the
    /// time (the caller need not persist it); a dropout (the round number advanced, see the
    /// module doc) is a transition the caller persists before handing out the restarted round.
    pub fn tick(&mut self, now_ms: u64) -> bool {
        if self.status == StudyStatus::Running
            && now_ms.saturating_sub(self.round_started_ms) > self.deadline_ms
        {
            if self.restart_without_missing(now_ms) {
                return true;
            }
            self.status = StudyStatus::Paused {
                missing: self.missing(),
                since_ms: now_ms,
            };
            return true;
        }
        false
    }

    /// Dropout in a masked round: leaves the missing sites out and restarts the round without
    /// them, if the study allows it and its analysis can (see the module doc). Returns whether
    /// it did.
    fn restart_without_missing(&mut self, now_ms: u64) -> bool {
        let masked = self
            .tasks
            .values()
            .any(|t| matches!(t, TaskBody::Masked(_)));
        if !masked || !self.spec.continues_without_dropped_sites() {
            return false;
        }
        let missing = self.missing();
        if missing.is_empty() {
            return false;
        }
        let reason = format!(
            "missed the {} s deadline of masked round {}",
            self.deadline_ms / 1000,
            self.round
        );
        let dropped: Vec<DroppedSite> = missing
            .iter()
            .map(|site| DroppedSite {
                site: site.clone(),
                round: self.round,
                reason: reason.clone(),
            })
            .collect();
        let tasks = match &mut self.analysis {
            Analysis::Pipeline(d) => d.drop_sites(&missing, self.round),
            Analysis::Table1(d) => d.drop_sites(&dropped),
            Analysis::Harmonize(d) => d.drop_sites(&dropped),
            Analysis::Lasso(d) => d.drop_sites(&dropped),
        };
        let Ok(tasks) = tasks else {
            // Fewer than 3 sites would remain, no masked round is open, or the analysis cannot
            // restart over the survivors (the driver left its state as it was): pause instead.
            return false;
        };
        if !tasks
            .keys()
            .eq(self.sites.iter().filter(|s| !missing.contains(s)))
        {
            // A restart that does not ask exactly the survivors would hang or count a dropped
            // site; the driver's state has moved on, so the study cannot simply pause.
            self.status = StudyStatus::Failed {
                reason: format!(
                    "internal error: the restart of round {} has tasks for {} of {} survivors",
                    self.round,
                    tasks.len(),
                    self.sites.len() - missing.len()
                ),
            };
            return true;
        }
        self.dropped.extend(dropped);
        self.sites.retain(|s| !missing.contains(s));
        // The abandoned attempt's answers are discarded: the restarted round is a new engine
        // round, so a late copy of any of them is refused as stale (or, from a dropped site,
        // as dropped) and can never be counted.
        self.received.clear();
        self.received_bytes.clear();
        self.round += 1;
        self.tasks = tasks;
        self.round_started_ms = now_ms;
        self.status = StudyStatus::Running;
        true
    }

    /// Puts back the current round's results after loading a persisted state. If they complete
    /// the round (the aggregator stopped after storing the last result but before advancing),
    /// the round is completed now; returns whether that happened (the caller persists again).
    pub fn restore(&mut self, results: Vec<(SiteId, ResultBody, u64)>, now_ms: u64) -> bool {
        self.completed = None;
        for (site, body, bytes) in results {
            if self.sites.contains(&site) {
                self.received.insert(site.clone(), body);
                self.received_bytes.insert(site, bytes);
            }
        }
        if let Some((site, f)) = self.received.iter().find_map(|(s, b)| match b {
            ResultBody::Failure(f) => Some((s.clone(), f.message.clone())),
            _ => None,
        }) && !self.status.is_finished()
        {
            self.status = StudyStatus::Failed {
                reason: format!("site {site} could not answer round {}: {f}", self.round),
            };
            return true;
        }
        if !self.status.is_finished() && self.received.len() == self.sites.len() {
            self.complete_round(now_ms);
            return true;
        }
        false
    }

    /// Progress of the current round, for `aggregator status`.
    pub fn progress(&self) -> (usize, usize) {
        (self.received.len(), self.sites.len())
    }

    /// Where a multi-stage study stands (pipeline: batch, repeats, stage) and the fraction of
    /// its work done, for progress bars and `aggregator status`; `None` for one-stage analyses.
    pub fn stage_progress(&self) -> Option<(String, f64)> {
        match &self.analysis {
            Analysis::Pipeline(d) => Some((d.progress(), d.fraction_done())),
            _ => None,
        }
    }
}
