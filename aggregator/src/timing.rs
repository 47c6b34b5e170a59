//! Wall-clock time per stage of a running study and its ETA, measured at the edge: the
//! coordinator stamps each completed round with its stage and the time (the pure round engine
//! and drivers read no clock). In memory only and a handful of numbers per stage, so it costs
//! nothing per round; a restarted aggregator starts its clocks afresh (and its ETA from the
//! progress made since the restart).
//!
//! A round's time is from the previous round's completion (or the study's submission, or the
//! aggregator's start) to its own: the sites' computation, the network and the aggregator's step
//! together, attributed to the stage of the round's tasks.

use federation::SiteId;
use federation::task::TaskBody;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The stage a round's tasks belong to: the pipeline's stage name (`columns`, `combat`,
/// `zscore`, `lasso`, `train`, `relay`, `meta-fit`, `score`, `metrics`), or the task kind of
/// other studies. Masked and key rounds are named by what they carry.
pub fn round_stage(tasks: &BTreeMap<SiteId, TaskBody>) -> String {
    fn name(body: &TaskBody) -> String {
        match body {
            TaskBody::Pipeline(p) => p.stage.name().to_string(),
            TaskBody::Masked(m) => name(&m.inner),
            TaskBody::SecureKeys(k) => match k.inner.as_deref() {
                Some(inner) => name(inner),
                None => body.kind().to_string(),
            },
            other => other.kind().to_string(),
        }
    }
    tasks.values().next().map_or_else(String::new, name)
}

/// One stage's share of a study's wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    pub stage: String,
    /// Round trips of this stage.
    pub rounds: u32,
    /// Wall seconds of those rounds.
    pub seconds: f64,
    /// Encoded task bytes sent to all sites in those rounds (retries included).
    #[serde(default)]
    pub bytes_to_sites: u64,
    /// Encoded result bytes received from all sites in those rounds.
    #[serde(default)]
    pub bytes_from_sites: u64,
}

/// A study's timing as `status.json` and `simulate study`'s `timing.json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyTiming {
    /// Seconds from the clock's start (submission, or this aggregator's start) to the last
    /// completed round; the sum of the stages' seconds.
    pub total_seconds: f64,
    pub rounds: u32,
    /// In the order the stages first ran.
    pub stages: Vec<StageTime>,
    /// Seconds from the clock's start to now (running studies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_seconds: Option<f64>,
    /// Estimated seconds to the end, from the progress made since the clock started (running
    /// multi-stage studies, once there is progress to extrapolate from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
}

/// The clock of one study.
#[derive(Debug, Clone)]
pub struct StudyClock {
    started_ms: u64,
    /// The study's fraction done when the clock started (after a restart, not 0).
    fraction_at_start: f64,
    last_ms: u64,
    stages: Vec<StageCount>,
    /// Task bytes handed out since the last completed round (attributed to that round's stage).
    pending_task_bytes: u64,
}

/// One stage's running totals.
#[derive(Debug, Clone)]
struct StageCount {
    stage: String,
    rounds: u32,
    ms: u64,
    bytes_to_sites: u64,
    bytes_from_sites: u64,
}

impl StudyClock {
    pub fn new(now_ms: u64, fraction_done: f64) -> Self {
        Self {
            started_ms: now_ms,
            fraction_at_start: fraction_done,
            last_ms: now_ms,
            stages: Vec::new(),
            pending_task_bytes: 0,
        }
    }

    /// A task of `bytes` (encoded) was handed to a site.
    pub fn task_sent(&mut self, bytes: u64) {
        self.pending_task_bytes += bytes;
    }

    /// A round of `stage` completed at `now_ms`; its sites sent `result_bytes` in all.
    pub fn round_done(&mut self, stage: &str, now_ms: u64, result_bytes: u64) {
        let ms = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let task_bytes = std::mem::take(&mut self.pending_task_bytes);
        let e = match self.stages.iter().position(|s| s.stage == stage) {
            Some(i) => &mut self.stages[i],
            None => {
                self.stages.push(StageCount {
                    stage: stage.to_string(),
                    rounds: 0,
                    ms: 0,
                    bytes_to_sites: 0,
                    bytes_from_sites: 0,
                });
                self.stages.last_mut().expect("just pushed")
            }
        };
        e.rounds += 1;
        e.ms += ms;
        e.bytes_to_sites += task_bytes;
        e.bytes_from_sites += result_bytes;
    }

    /// Seconds left at `fraction_done`, by extrapolating the rate since the clock started;
    /// `None` until the fraction has moved.
    pub fn eta_seconds(&self, now_ms: u64, fraction_done: f64) -> Option<f64> {
        eta_seconds(
            now_ms.saturating_sub(self.started_ms) as f64 / 1000.0,
            self.fraction_at_start,
            fraction_done,
        )
    }

    /// The timing so far; `now_ms` and the fraction for a running study's elapsed time and ETA.
    pub fn timing(&self, running: Option<(u64, Option<f64>)>) -> StudyTiming {
        let secs = |ms: u64| ms as f64 / 1000.0;
        StudyTiming {
            total_seconds: secs(self.last_ms.saturating_sub(self.started_ms)),
            rounds: self.stages.iter().map(|s| s.rounds).sum(),
            stages: self
                .stages
                .iter()
                .map(|s| StageTime {
                    stage: s.stage.clone(),
                    rounds: s.rounds,
                    seconds: secs(s.ms),
                    bytes_to_sites: s.bytes_to_sites,
                    bytes_from_sites: s.bytes_from_sites,
                })
                .collect(),
            elapsed_seconds: running.map(|(now, _)| secs(now.saturating_sub(self.started_ms))),
            eta_seconds: running.and_then(|(now, f)| f.and_then(|f| self.eta_seconds(now, f))),
        }
    }
}

/// Seconds left when `elapsed` seconds took the work from `f0` to `f` (of 1): a constant rate.
pub fn eta_seconds(elapsed: f64, f0: f64, f: f64) -> Option<f64> {
    let done = f - f0;
    (done > 1e-3 && elapsed > 0.0 && f < 1.0).then(|| elapsed * (1.0 - f) / done)
}

/// `1 h 02 min`, `4 min 05 s`, `12 s`.
pub fn human(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s:02} s"),
        (h, m, _) => format!("{h} h {m:02} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_attributed_to_their_stage_and_add_up() {
        let mut c = StudyClock::new(1_000, 0.0);
        c.task_sent(100);
        c.task_sent(20);
        c.round_done("combat", 1_500, 7);
        c.round_done("combat", 2_000, 8);
        c.task_sent(1_000);
        c.round_done("lasso", 5_000, 9_000);
        c.round_done("combat", 5_250, 5);
        let t = c.timing(None);
        assert_eq!(t.rounds, 4);
        assert_eq!(t.total_seconds, 4.25);
        assert_eq!(
            t.stages,
            vec![
                StageTime {
                    stage: "combat".into(),
                    rounds: 3,
                    seconds: 1.25,
                    bytes_to_sites: 120,
                    bytes_from_sites: 20,
                },
                StageTime {
                    stage: "lasso".into(),
                    rounds: 1,
                    seconds: 3.0,
                    bytes_to_sites: 1_000,
                    bytes_from_sites: 9_000,
                },
            ]
        );
        let sum: f64 = t.stages.iter().map(|s| s.seconds).sum();
        assert_eq!(sum, t.total_seconds);
        assert_eq!(t.elapsed_seconds, None);
    }

    #[test]
    fn eta_extrapolates_the_rate_since_the_clock_started() {
        // 25 % → 50 % in 60 s: 50 % left takes 120 s.
        let c = StudyClock::new(0, 0.25);
        assert_eq!(c.eta_seconds(60_000, 0.5), Some(120.0));
        assert_eq!(c.eta_seconds(60_000, 0.25), None, "no progress yet");
        assert_eq!(c.eta_seconds(60_000, 1.0), None, "done");
        let t = c.timing(Some((60_000, Some(0.5))));
        assert_eq!(t.elapsed_seconds, Some(60.0));
        assert_eq!(t.eta_seconds, Some(120.0));
        assert_eq!(human(3725.0), "1 h 02 min");
        assert_eq!(human(245.4), "4 min 05 s");
        assert_eq!(human(12.0), "12 s");
    }
}
