//! The pipeline's last stage: pooled metrics of each patient's mean validation probability (the
//! stacked model and the clinical comparator) from the sites' count tables, or from the rows
//! themselves when a site's policy sets `release_predictions`.
//!
//! Round 1: each site bins its patients' mean probabilities on the study's shared grid and
//! releases the tables (`stats::metrics::table`: cells below its `min_count` merged at the site),
//! or its (probability, label) rows when its policy allows. Patients that no outer fit could
//! score (no site trained a model for their fold) are left out and counted.

use super::messages::StageResult;
use super::site::{PipelineError, SiteInputs, SitePipelineState};
use super::spec::PipelineSpec;
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::task::ResultBody;
use serde::{Deserialize, Serialize};
use stats::metrics::{
    MergeRule, MetricOptions, PooledScoreTable, ScoreGrid, SiteScoreTable, evaluate_pooled, exact,
};
use stats::report::{MetricsSource, ModelReport, Report};
use std::collections::BTreeMap;

/// What the aggregator asks in a metrics round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricsTask {
    /// Count tables (or rows) of the mean probabilities on a grid of `bins` bins.
    Scores { bins: u32 },
}

/// A site's metrics answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricsResult {
    Scores {
        /// Stacked model.
        ml: ScoreRelease,
        /// Clinical comparator (absent without one).
        clinical: Option<ScoreRelease>,
        /// Patients left out because no outer fit scored them.
        unscored: u32,
    },
}

impl MetricsResult {
    pub fn describe(&self) -> String {
        let MetricsResult::Scores { ml, clinical, .. } = self;
        let one = |r: &ScoreRelease| match r {
            ScoreRelease::Table(t) => format!("count table of {} cells", t.cells.len()),
            ScoreRelease::Rows { probs, .. } => {
                format!(
                    "{} patients' mean probabilities and labels (release_predictions)",
                    probs.len()
                )
            }
        };
        match clinical {
            Some(c) => format!("ML: {}; clinical: {}", one(ml), one(c)),
            None => format!("ML: {}", one(ml)),
        }
    }

    /// Patient counts in released cells (rows released under `release_predictions` are not
    /// counts: the policy allowed them explicitly).
    pub fn released_counts(&self) -> Vec<u64> {
        let MetricsResult::Scores { ml, clinical, .. } = self;
        let mut out = Vec::new();
        for r in std::iter::once(ml).chain(clinical) {
            if let ScoreRelease::Table(t) = r {
                out.extend(t.cells.iter().map(|c| c.n()));
            }
        }
        out
    }
}

/// One model's scores as the site releases them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ScoreRelease {
    /// Count table with cells merged to the site's `min_count`.
    Table(SiteScoreTable),
    /// (mean probability, responder) rows: only under `release_predictions = true`.
    Rows { probs: Vec<f64>, labels: Vec<bool> },
}

/// The finished pipeline study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineOutput {
    pub spec: PipelineSpec,
    pub cv: super::driver::CvSummary,
    pub metrics: Report,
}

/// Aggregator state of the metrics stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsDriver {
    bins: u32,
}

impl MetricsDriver {
    pub fn new(spec: &PipelineSpec, _n_sites: usize) -> Self {
        Self {
            bins: spec.metrics.bins,
        }
    }

    /// This round's request (the same for every site).
    pub fn task(&self) -> MetricsTask {
        MetricsTask::Scores { bins: self.bins }
    }

    /// `Ok(Some(report))` when finished.
    pub fn on_round(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<Option<Report>, String> {
        let mut ml = Vec::new();
        let mut clinical = Vec::new();
        let mut unscored_total = 0;
        for (site, body) in results {
            match body {
                ResultBody::Pipeline(StageResult::Metrics(MetricsResult::Scores {
                    ml: m,
                    clinical: c,
                    unscored,
                })) => {
                    ml.push(m);
                    if let Some(c) = c {
                        clinical.push(c);
                    }
                    unscored_total += unscored;
                }
                other => return Err(format!("site {site} answered with {}", other.kind())),
            }
        }
        let exact_path = ml.iter().all(|r| matches!(r, ScoreRelease::Rows { .. }));
        let options = MetricOptions::default();
        let mut report = Report::new(if exact_path {
            MetricsSource::Exact
        } else {
            MetricsSource::CountTables {
                score_bins: self.bins,
                max_min_count: 0,
            }
        });
        for (name, releases) in [("stacked ML model", &ml), ("clinical model", &clinical)] {
            if releases.is_empty() {
                continue;
            }
            match evaluate(releases, self.bins, &options, exact_path) {
                Ok(m) => report.models.push(ModelReport::new(name, &m, None)),
                Err(e) => report.notes.push(format!("{name}: not computed: {e}")),
            }
        }
        if unscored_total > 0 {
            report.notes.push(format!(
                "{unscored_total} patients had no validation probability (no site trained a model for their outer folds) and are left out"
            ));
        }
        Ok(Some(report))
    }
}

fn evaluate(
    releases: &[&ScoreRelease],
    bins: u32,
    options: &MetricOptions,
    exact_path: bool,
) -> Result<stats::metrics::MetricSet, String> {
    if exact_path {
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for r in releases {
            if let ScoreRelease::Rows {
                probs: p,
                labels: l,
            } = r
            {
                probs.extend_from_slice(p);
                labels.extend_from_slice(l);
            }
        }
        return exact::evaluate(&probs, &labels, options).map_err(|e| e.to_string());
    }
    let grid = ScoreGrid::new(bins).map_err(|e| e.to_string())?;
    let tables: Vec<SiteScoreTable> = releases
        .iter()
        .map(|r| match r {
            ScoreRelease::Table(t) => Ok(t.clone()),
            // A site that released rows: the aggregator bins them itself (no merging needed).
            ScoreRelease::Rows { probs, labels } => {
                SiteScoreTable::build(grid, probs, labels, 1, MergeRule::CellTotal)
                    .map_err(|e| e.to_string())
            }
        })
        .collect::<Result<_, _>>()?;
    let pooled = PooledScoreTable::pool(&tables).map_err(|e| e.to_string())?;
    evaluate_pooled(&pooled, options).map_err(|e| e.to_string())
}

/// Site half of a metrics round.
pub fn site_answer(
    inputs: &SiteInputs,
    task: &MetricsTask,
    policy: &SitePolicy,
    state: &SitePipelineState,
) -> Result<MetricsResult, PipelineError> {
    let MetricsTask::Scores { bins } = task;
    let grid = ScoreGrid::new(*bins).map_err(|e| PipelineError::Protocol(e.to_string()))?;
    let release =
        |sums: Option<&super::site::ScoreSums>| -> Result<(ScoreRelease, u32), PipelineError> {
            let means = sums
                .map(|s| s.means())
                .unwrap_or_else(|| vec![None; inputs.labels.len()]);
            let mut probs = Vec::new();
            let mut labels = Vec::new();
            let mut unscored = 0;
            for (m, &y) in means.iter().zip(&inputs.labels) {
                match m {
                    Some(p) => {
                        probs.push(*p);
                        labels.push(y);
                    }
                    None => unscored += 1,
                }
            }
            let r = if policy.release_predictions {
                ScoreRelease::Rows { probs, labels }
            } else {
                ScoreRelease::Table(
                    SiteScoreTable::build(
                        grid,
                        &probs,
                        &labels,
                        policy.min_count,
                        MergeRule::CellTotal,
                    )
                    .map_err(|e| PipelineError::Disclosure(format!("score table: {e}")))?,
                )
            };
            Ok((r, unscored))
        };
    let (ml, unscored) = release(state.ml.as_ref())?;
    let clinical = match inputs.clinical {
        Some(_) => Some(release(state.clinical.as_ref())?.0),
        None => None,
    };
    Ok(MetricsResult::Scores {
        ml,
        clinical,
        unscored,
    })
}
