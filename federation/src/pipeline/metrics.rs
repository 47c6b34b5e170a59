//! The pipeline's last stage: pooled metrics of each patient's mean validation probability (the
//! stacked model and the clinical comparator), their bootstrap CIs, the paired DeLong comparison
//! and progression-free survival by predicted and by observed group, from the sites' count
//! tables, or from the probabilities themselves when a site's policy sets `release_predictions`.
//!
//! # Rounds
//!
//! **Round 1** ([`MetricsTask::Scores`]): each site bins its patients' mean probabilities on the
//! study's shared grid and releases, per model, the count table (`stats::metrics::table`: cells
//! below its `min_count` merged at the site, [`MergeRule::CellTotal`]), or its (probability,
//! label) rows when its policy allows. The aggregator computes every point metric
//! (`stats::metrics::evaluate_pooled`, or `stats::metrics::exact::evaluate` when every site sent
//! rows) and the stratified multinomial bootstrap CIs (`stats::metrics::bootstrap_cis`, B and seed
//! from `analysis.metrics`; on the exact path on one tie group per distinct probability, which is
//! the per-patient bootstrap distribution and gives bit-identical CIs to the count path when no
//! two probabilities share a bin).
//!
//! **Round 2** ([`MetricsTask::FollowUp`], one task per site), only when needed:
//! - *paired DeLong*, count path with a clinical comparator: the aggregator sends each site the
//!   DeLong placement values of the pooled clinical cells behind the site's released clinical
//!   cells (`PooledScoreTable::site_placements`); the site answers, per released ML cell, the
//!   sums of those values over the cell's positives and negatives
//!   (`stats::metrics::site_cross_placements`), and the aggregator finishes the exact two-round
//!   test of the binned data (`paired_delong_from_tables`). Sites that released rows need no
//!   round: the aggregator computes their sums itself. On the exact path the rows give
//!   `exact::paired_delong` directly.
//! - *survival*, when `analysis.metrics.time_column` / `event_column` are set: the aggregator
//!   broadcasts the ML Youden cut-off as one "predicted high" flag per released ML cell (or row):
//!   the pooled cell's score ≥ cut-off (`PooledScoreTable::site_cell_is_high`), so the survival
//!   groups are exactly the partition whose confusion matrix was reported. Each site answers, per
//!   predicted group and per observed response group, event / censoring counts per released time
//!   (`stats::survival::SiteSurvivalTable`; at-risk counts follow from them). It releases the
//!   distinct observed times when every released count already reaches its `min_count`
//!   (`TimeResolution::Exact`), otherwise a grid of [`TIME_GRID_STEP`] time units
//!   (`TimeResolution::Grid`, merged at the site: see that module for the measured bias). The
//!   aggregator reports Kaplan-Meier curves with the median and its CI (log-log transform, as
//!   lifelines and R `survfit(conf.type = "log-log")`), the log-rank χ² and p, and the Cox HR of
//!   group 1 vs group 0 (Efron ties, as R `coxph`'s default; Wald CI and p), unstratified from the
//!   pooled table and site-stratified from each site's own table.
//!
//! # Under secure aggregation (`secure_aggregation = true`)
//!
//! Round 1 is one masked round whose opened sum is **one pooled table** per model, merged on the
//! sum to `analysis.metrics.secure_min_count` (`super::secure`). Round 2 is one masked round
//! too, with **the same task for every site** (`SumShape::PipelineFollowUp`); every entry of a
//! site's vector is per bin of a shared grid, unmerged, so the vectors add up:
//! - *paired DeLong*: the aggregator sends the (V₁₀, V₀₁) placement values of the pooled
//!   clinical cell covering each bin of the score grid (one pair per bin; the pooled table is
//!   known to it). Each site answers, per bin of the **stacked model's** grid, Σ V₁₀ over the
//!   bin's positives and Σ V₀₁ over its negatives ([`follow_up_by_bin`], 32 fractional bits).
//!   The opened per-bin sums are merged to the pooled ML cells while decoding, and the
//!   aggregator finishes `paired_delong_from_tables` on the pooled tables with the pooled table
//!   as the one "site": the same computation as the plain path's, on the pooled tables. With
//!   `secure_min_count = 1` and no bin holding both labels it equals the per-patient
//!   `exact::paired_delong` (`tests/secure_pipeline_metrics.rs`: SE within 5e−12).
//! - *survival*: the aggregator sends the ML Youden cut-off as one "predicted high" flag per bin
//!   (the pooled cell covering the bin has score ≥ cut-off, so the groups are again the
//!   partition whose confusion matrix was reported) and the time grid is shared:
//!   [`SECURE_TIME_BINS`] points of [`TIME_GRID_STEP`] (a grid built from a site's own
//!   follow-up could not be added to another's). Each site answers, per grouping (predicted,
//!   response), per group and per grid point, its event and censoring counts (times moved up to
//!   the next point), plus the patients followed beyond the horizon, who are **censored at the
//!   horizon** (administrative censoring; the report's notes give their number). The opened
//!   counts are exact; the pooled table is merged to `secure_min_count` exactly as a site
//!   merges its own grid table (`SiteSurvivalTable::build`), and the KM curves with median and
//!   CI, the log-rank test and the unstratified Cox HR come from it with the functions above.
//!   The **site-stratified Cox model is not computed**: it needs each site's own table, and only
//!   the sum is opened; the report's notes say so.
//! - *bias of the grid and of the pooled merge* (measured on the 102-patient example cohort,
//!   `tests/secure_pipeline_metrics.rs`, survival by observed response): the monthly grid alone
//!   (`secure_min_count = 1`) moved the HR from 0.508 (exact times) to 0.505, the log-rank χ²
//!   from 8.79 to 9.03 and the medians from 7.7 / 14.6 to 8 / 15 months (a median moves up by
//!   less than one step); merging the pooled table to 5 moved the HR to 0.398 and χ² to 11.9
//!   (events and censorings move to their run's middle point separately, see
//!   `stats::survival`'s table module) — less than merging at each site, but not negligible:
//!   set `secure_min_count` as low as the sites' policies allow when the survival analysis
//!   matters.
//!
//! **What the aggregator learns** from the masked follow-up: the pooled per-bin cross-placement
//! sums (held only while decoding, then merged to the pooled ML cells), the pooled per-point
//! event and censoring counts per group (held only to merge them; the report carries the merged
//! table), the number of patients beyond the horizon, and how many sites could not answer each
//! part (not which). Never a site's own sums or counts: its vector is masked (the test
//! `one_sites_masked_follow_up_vector_is_not_its_plain_answer` decodes one site's vector and
//! finds no value near its plain answer). The task itself carries only pooled quantities: the
//! pooled clinical cells' placements and the pooled ML cells' cut-off flags, spread over bins.
//!
//! # The analysis set
//!
//! Every message of a site describes the same patients: those with a mean probability from the
//! stacked model and, when the study has one, from the clinical comparator (the paired test
//! needs both on the same patients; releasing tables of nested patient sets would let their
//! difference describe the few patients in between). Patients no outer fit scored are counted
//! (`unscored`; which patients these are follows from the fold design and the fits no site
//! trained for, not from their values).
//!
//! # What cannot be computed becomes a note
//!
//! One class, no events, all scores equal, a group without patients, a site whose data cannot be
//! released (non-finite probabilities, a time ≤ 0, too few patients for its `min_count`): the
//! affected metric is left out of the report and `Report::notes` says which and why. A site
//! never fails the study over its data here: it withholds the affected part with a public reason
//! (no counts or values in it), and the pooled numbers use the sites that released.

use super::messages::StageResult;
use super::site::{PipelineError, SiteInputs, SitePipelineState};
use super::spec::PipelineSpec;
use crate::ids::SiteId;
use crate::policy::SitePolicy;
use crate::table::{SiteTable, TableError};
use crate::task::ResultBody;
use serde::{Deserialize, Serialize};
use stats::metrics::{
    BootstrapOptions, CrossPlacementSums, MergeRule, MetricOptions, MetricSet, MetricsError,
    PooledScoreTable, RankedCells, ScoreGrid, SiteScoreTable, bootstrap_cis, evaluate_pooled,
    exact, paired_delong_from_tables, site_cross_placements,
};
use stats::report::{
    ComparisonReport, CoxReport, KmCurveReport, MetricsSource, ModelReport, Report, SurvivalReport,
};
use stats::survival::{
    CoxTies, GroupTable, KmCi, NewtonOptions, SiteSurvivalTable, TimeResolution, TwoGroupTable,
    fit_cox_binary_pooled, fit_cox_binary_stratified, kaplan_meier, log_rank, pool_survival,
};
use std::collections::BTreeMap;

/// Step of the shared time grid (in the time column's units, months for `pfs_months`) a site
/// falls back to when releasing its exact times would release a count below its `min_count`,
/// and the step of the grid every site bins on under secure aggregation.
pub const TIME_GRID_STEP: f64 = 1.0;

/// Grid points of the shared time grid under secure aggregation: every site's vector has one
/// entry per point, so the grid cannot follow any site's own follow-up. 600 steps of
/// [`TIME_GRID_STEP`] = 50 years of months; a longer time is censored at the horizon (see the
/// module docs).
pub const SECURE_TIME_BINS: u32 = 600;

/// Largest number of points a site builds for its time grid (a step far below the follow-up
/// would otherwise allocate without bound).
const MAX_GRID_POINTS: f64 = 100_000.0;

/// Confidence level of every interval in the report.
const CONF_LEVEL: f64 = 0.95;

const ML_NAME: &str = "stacked ML model";
const CLINICAL_NAME: &str = "clinical model";

/// What the aggregator asks in a metrics round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricsTask {
    /// Round 1: count tables (or rows) of the mean probabilities on a grid of `bins` bins.
    Scores { bins: u32 },
    /// Round 2 (per site): what the pooled round-1 tables make computable.
    FollowUp(FollowUpTask),
}

/// The round-2 request to one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpTask {
    /// The score grid of round 1 (the site rebuilds the tables it released then).
    pub bins: u32,
    /// (V₁₀, V₀₁) DeLong placement values of the pooled clinical cell behind each clinical cell
    /// the site released, in the order released; `None` = no cross placements asked.
    pub cross_placements: Option<Vec<(f64, f64)>>,
    /// Survival tables asked; `None` = the study has no survival endpoint.
    pub survival: Option<SurvivalRequest>,
}

/// What a site needs to release its survival tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalRequest {
    /// Per ML cell the site released (or per row, under `release_predictions`): is it predicted
    /// high (pooled score ≥ the ML Youden cut-off)? `None` = no cut-off (the ML metrics could not
    /// be computed or the site withheld its ML scores): survival by observed response only.
    pub predicted_high: Option<Vec<bool>>,
    /// Grid step the site falls back to when exact times would disclose ([`TIME_GRID_STEP`]).
    pub time_step: f64,
}

/// A site's metrics answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MetricsResult {
    Scores {
        /// Stacked model.
        ml: ScoreRelease,
        /// Clinical comparator (absent without one).
        clinical: Option<ScoreRelease>,
        /// Patients left out of the analysis set: no outer fit gave them an ML probability (or,
        /// with a comparator, a clinical one).
        unscored: u32,
    },
    FollowUp(FollowUpResult),
}

/// A site's round-2 answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpResult {
    /// Per released ML cell: Σ clinical V₁₀ over its positives and Σ clinical V₀₁ over its
    /// negatives (sums over a released cell; nothing finer than the round-1 table).
    pub cross_placements: Option<Vec<CrossPlacementSums>>,
    /// Survival tables, when asked.
    pub survival: Option<SurvivalRelease>,
    /// Set only on the decoded **sum** of a masked follow-up round (`super::secure`), never on
    /// a site's own answer; not carried on the wire (a masked round's sum never travels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked_sum: Option<MaskedFollowUpFacts>,
}

/// What the opened sum of a masked follow-up round says besides the pooled tables: counts of
/// sites and patients, never which.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaskedFollowUpFacts {
    /// Sites that could not form their cross-placement sums (a model's scores not valid there:
    /// they withheld it in the score round too).
    pub paired_withheld: u64,
    /// Sites that withheld survival by predicted group and by observed response (missing or
    /// unusable survival columns, or ML scores withheld).
    pub survival_withheld: [u64; 2],
    /// Patients followed beyond the grid's horizon (counted by observed response), censored at
    /// the horizon.
    pub beyond_horizon: u64,
    /// The horizon: the grid's last point.
    pub horizon: f64,
    /// The pooled survival tables were merged to this many patients per released count.
    pub min_count: u64,
}

/// The site's survival tables: group 0 / 1 = predicted low / high, and non-responders /
/// responders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalRelease {
    /// By predicted group (absent when no cut-off was sent).
    pub by_predicted: Option<GroupRelease>,
    /// By observed response.
    pub by_response: GroupRelease,
}

/// One grouping's survival table, or why the site cannot release it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GroupRelease {
    Table {
        table: SiteSurvivalTable,
        times: ReleasedTimes,
    },
    /// A public reason (no counts, no values).
    Withheld { reason: String },
}

/// Which times a survival table carries.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ReleasedTimes {
    /// The distinct observed times (every released count reached `min_count` as it was).
    Exact,
    /// Times moved up to a grid of this step and merged at the site to `min_count` (under
    /// secure aggregation: the shared grid, merged on the pooled table).
    Grid { step: f64 },
}

impl ReleasedTimes {
    fn grid_step(&self) -> Option<f64> {
        match self {
            ReleasedTimes::Grid { step } => Some(*step),
            ReleasedTimes::Exact => None,
        }
    }
}

impl MetricsResult {
    /// One line for the site's audit log: what left the site.
    pub fn describe(&self) -> String {
        match self {
            MetricsResult::Scores { ml, clinical, .. } => {
                let one = |r: &ScoreRelease| match r {
                    ScoreRelease::Table(t) => format!("count table of {} cells", t.cells.len()),
                    ScoreRelease::Rows { probs, .. } => format!(
                        "{} patients' mean probabilities and labels (release_predictions)",
                        probs.len()
                    ),
                    ScoreRelease::Withheld { reason } => format!("withheld ({reason})"),
                };
                match clinical {
                    Some(c) => format!("ML: {}; clinical: {}", one(ml), one(c)),
                    None => format!("ML: {}", one(ml)),
                }
            }
            MetricsResult::FollowUp(f) => {
                let mut parts = Vec::new();
                if let Some(c) = &f.cross_placements {
                    parts.push(format!(
                        "sums of clinical DeLong placement values over {} released ML cells",
                        c.len()
                    ));
                }
                if let Some(s) = &f.survival {
                    let one = |g: &GroupRelease| match g {
                        GroupRelease::Table { table, times } => format!(
                            "{} (time, events, censored) cells on {}",
                            table.groups.iter().map(Vec::len).sum::<usize>(),
                            match times {
                                ReleasedTimes::Exact => "exact times".to_string(),
                                ReleasedTimes::Grid { step } => format!("a {step}-unit time grid"),
                            }
                        ),
                        GroupRelease::Withheld { reason } => format!("withheld ({reason})"),
                    };
                    if let Some(p) = &s.by_predicted {
                        parts.push(format!("survival by predicted group: {}", one(p)));
                    }
                    parts.push(format!("survival by response: {}", one(&s.by_response)));
                }
                if parts.is_empty() {
                    "nothing (no follow-up was needed)".into()
                } else {
                    parts.join("; ")
                }
            }
        }
    }

    /// Patient counts in released cells: score cells' patients, survival cells' events +
    /// censorings (the site's gate checks each is ≥ `min_count`). Rows released under
    /// `release_predictions` are not counts: the policy allowed them explicitly. Cross-placement
    /// sums are sums over round-1 cells whose counts were checked then.
    pub fn released_counts(&self) -> Vec<u64> {
        let mut out = Vec::new();
        match self {
            MetricsResult::Scores { ml, clinical, .. } => {
                for r in std::iter::once(ml).chain(clinical) {
                    if let ScoreRelease::Table(t) = r {
                        out.extend(t.cells.iter().map(|c| c.n()));
                    }
                }
            }
            MetricsResult::FollowUp(f) => {
                if let Some(s) = &f.survival {
                    for g in s.by_predicted.iter().chain([&s.by_response]) {
                        if let GroupRelease::Table { table, .. } = g {
                            out.extend(
                                table.groups.iter().flatten().map(|c| c.events + c.censored),
                            );
                        }
                    }
                }
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
    /// The site cannot release this model's scores; a public reason (no counts, no values).
    Withheld { reason: String },
}

/// The finished pipeline study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineOutput {
    pub spec: PipelineSpec,
    pub cv: super::driver::CvSummary,
    pub metrics: Report,
}

// ------------------------------------------------------------------------------------------
// Site half
// ------------------------------------------------------------------------------------------

/// Each patient's progression-free survival, checked: times finite and > 0, events 0/1.
#[derive(Debug, Clone, PartialEq)]
pub struct SurvivalColumns {
    pub times: Vec<f64>,
    /// true = progression or death, false = censored.
    pub events: Vec<bool>,
}

impl SurvivalColumns {
    /// Checks one value per patient. The error is a public reason (it names the column, never a
    /// patient or a value). Times must be > 0: PFS is counted from treatment start, so a time of
    /// 0 or below is a data-entry error, not an event at baseline.
    pub fn checked(
        time_column: &str,
        event_column: &str,
        times: &[Option<f64>],
        events: &[Option<f64>],
    ) -> Result<SurvivalColumns, String> {
        let mut out = SurvivalColumns {
            times: Vec::with_capacity(times.len()),
            events: Vec::with_capacity(times.len()),
        };
        for (t, e) in times.iter().zip(events) {
            let t = t.ok_or_else(|| {
                format!("column {time_column:?} has missing values at this site; survival needs a time for every patient")
            })?;
            if !(t.is_finite() && t > 0.0) {
                return Err(format!(
                    "column {time_column:?} holds a time ≤ 0 or not finite at this site; survival times must be positive (time from treatment start)"
                ));
            }
            let e = match e {
                Some(x) if *x == 1.0 => true,
                Some(x) if *x == 0.0 => false,
                Some(_) => {
                    return Err(format!(
                        "column {event_column:?} holds a value other than 0 and 1 at this site (1 = progression or death, 0 = censored)"
                    ));
                }
                None => {
                    return Err(format!(
                        "column {event_column:?} has missing values at this site; survival needs an event indicator for every patient"
                    ));
                }
            };
            out.times.push(t);
            out.events.push(e);
        }
        Ok(out)
    }
}

/// Reads the study's survival columns from the site's table: `None` without a survival
/// endpoint, `Some(Err(public reason))` when the columns cannot be used (the site then withholds
/// its survival tables; every other stage goes on).
pub fn read_survival(
    table: &SiteTable,
    spec: &PipelineSpec,
) -> Option<Result<SurvivalColumns, String>> {
    let (Some(tc), Some(ec)) = (&spec.metrics.time_column, &spec.metrics.event_column) else {
        return None;
    };
    let public = |e: TableError| match e {
        TableError::MissingColumn { column, .. } => {
            format!("column {column:?} is missing from this site's table")
        }
        TableError::NotNumeric { column, .. } => {
            format!("column {column:?} holds a value that is not a number at this site")
        }
        _ => "the survival columns cannot be read at this site".to_string(),
    };
    Some((|| {
        let times = table.numeric_column(tc).map_err(public)?;
        let events = table.numeric_column(ec).map_err(public)?;
        SurvivalColumns::checked(tc, ec, &times, &events)
    })())
}

/// Everything the metrics stage needs from a site, one entry per patient of its table.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsInputs {
    pub labels: Vec<bool>,
    /// Mean validation probability of the stacked model (`None` = never scored).
    pub ml: Vec<Option<f64>>,
    /// Same for the clinical comparator; `None` when the study has none.
    pub clinical: Option<Vec<Option<f64>>>,
    /// The survival columns (see [`read_survival`]).
    pub survival: Option<Result<SurvivalColumns, String>>,
}

impl MetricsInputs {
    /// From the site's table inputs and its pipeline state (`ScoreSums::means`).
    pub fn from_state(inputs: &SiteInputs, state: &SitePipelineState) -> MetricsInputs {
        let n = inputs.labels.len();
        let means = |s: Option<&super::site::ScoreSums>| {
            s.map(|s| s.means()).unwrap_or_else(|| vec![None; n])
        };
        MetricsInputs {
            labels: inputs.labels.clone(),
            ml: means(state.ml.as_ref()),
            clinical: inputs
                .clinical
                .as_ref()
                .map(|_| means(state.clinical.as_ref())),
            survival: inputs.survival.clone(),
        }
    }

    /// Indices of the analysis set: scored by the ML model and (with a comparator) clinically.
    fn analysis_set(&self) -> Vec<usize> {
        (0..self.labels.len())
            .filter(|&i| {
                self.ml.get(i).is_some_and(Option::is_some)
                    && self
                        .clinical
                        .as_ref()
                        .is_none_or(|c| c.get(i).is_some_and(Option::is_some))
            })
            .collect()
    }
}

/// The analysis set's values at one site.
struct SiteSet {
    idx: Vec<usize>,
    labels: Vec<bool>,
    ml: Vec<f64>,
    clinical: Option<Vec<f64>>,
}

impl SiteSet {
    fn new(inp: &MetricsInputs) -> SiteSet {
        let idx = inp.analysis_set();
        let pick = |v: &[Option<f64>]| idx.iter().map(|&i| v[i].unwrap_or(f64::NAN)).collect();
        SiteSet {
            labels: idx.iter().map(|&i| inp.labels[i]).collect(),
            ml: pick(&inp.ml),
            clinical: inp.clinical.as_deref().map(pick),
            idx,
        }
    }
}

/// The analysis set's (labels, ML probabilities, clinical probabilities) and the number of
/// patients left out of it, for the masked score round (`super::secure`).
pub(crate) fn analysis_scores(inp: &MetricsInputs) -> (Vec<bool>, Vec<f64>, Option<Vec<f64>>, u32) {
    let set = SiteSet::new(inp);
    let unscored = (inp.labels.len() - set.idx.len()) as u32;
    (set.labels, set.ml, set.clinical, unscored)
}

pub(crate) fn valid_probabilities(p: &[f64]) -> bool {
    p.iter().all(|x| (0.0..=1.0).contains(x))
}

/// The site's released table of one model (deterministic: round 2 rebuilds the round-1 table).
fn score_table(
    grid: ScoreGrid,
    probs: &[f64],
    labels: &[bool],
    policy: &SitePolicy,
    name: &str,
) -> Result<SiteScoreTable, String> {
    if !valid_probabilities(probs) {
        return Err(format!(
            "the {name}'s mean probability is not a number in [0, 1] for some patients at this site; its metrics cannot use this site"
        ));
    }
    SiteScoreTable::build(grid, probs, labels, policy.min_count, MergeRule::CellTotal).map_err(
        |e| match e {
            MetricsError::SiteTooSmall { .. } => format!(
                "this site's scored patients cannot form a {name} count table whose cells hold at least its min_count patients; it sits out"
            ),
            _ => format!("the {name}'s count table cannot be built at this site"),
        },
    )
}

fn score_release(
    grid: ScoreGrid,
    probs: &[f64],
    labels: &[bool],
    policy: &SitePolicy,
    name: &str,
) -> ScoreRelease {
    if policy.release_predictions {
        if !valid_probabilities(probs) {
            return ScoreRelease::Withheld {
                reason: format!(
                    "the {name}'s mean probability is not a number in [0, 1] for some patients at this site; its metrics cannot use this site"
                ),
            };
        }
        return ScoreRelease::Rows {
            probs: probs.to_vec(),
            labels: labels.to_vec(),
        };
    }
    match score_table(grid, probs, labels, policy, name) {
        Ok(t) => ScoreRelease::Table(t),
        Err(reason) => ScoreRelease::Withheld { reason },
    }
}

/// One grouping's survival table: exact times if every count already reaches `min_count`,
/// else the grid of `step`.
fn group_release(
    times: &[f64],
    events: &[bool],
    groups: &[usize],
    step: f64,
    policy: &SitePolicy,
    what: &str,
) -> GroupRelease {
    let build = |res: &TimeResolution| {
        SiteSurvivalTable::build(
            times,
            events,
            groups,
            2,
            res,
            policy.min_count,
            MergeRule::CellTotal,
        )
    };
    match build(&TimeResolution::Exact) {
        Ok(table) => {
            return GroupRelease::Table {
                table,
                times: ReleasedTimes::Exact,
            };
        }
        Err(MetricsError::ExactTimesDisclosive { .. }) => {}
        Err(_) => {
            return GroupRelease::Withheld {
                reason: format!("the survival table by {what} cannot be built at this site"),
            };
        }
    }
    let max = times.iter().copied().fold(0.0f64, f64::max);
    if !(step.is_finite() && step > 0.0) || max / step > MAX_GRID_POINTS {
        return GroupRelease::Withheld {
            reason: format!(
                "the time grid step {step} is not positive or too fine for this site's follow-up (at most {MAX_GRID_POINTS} points)"
            ),
        };
    }
    let mut k = (max / step).ceil().max(1.0) as usize;
    if (k as f64) * step < max {
        k += 1;
    }
    let grid: Vec<f64> = (1..=k).map(|i| i as f64 * step).collect();
    match build(&TimeResolution::Grid(grid)) {
        Ok(table) => GroupRelease::Table {
            table,
            times: ReleasedTimes::Grid { step },
        },
        Err(_) => GroupRelease::Withheld {
            reason: format!(
                "even on a {step}-unit time grid, a group by {what} at this site has too few patients to release counts of at least its min_count; it sits out"
            ),
        },
    }
}

/// Site half of a metrics round, from the site's table inputs and pipeline state.
pub fn site_answer(
    inputs: &SiteInputs,
    task: &MetricsTask,
    policy: &SitePolicy,
    state: &SitePipelineState,
) -> Result<MetricsResult, PipelineError> {
    site_metrics(&MetricsInputs::from_state(inputs, state), task, policy)
}

/// Site half of a metrics round. Data problems never fail: the affected part is withheld with a
/// public reason. An `Err` means the task itself is inconsistent with the site's round-1 answer
/// (a protocol bug).
pub fn site_metrics(
    inp: &MetricsInputs,
    task: &MetricsTask,
    policy: &SitePolicy,
) -> Result<MetricsResult, PipelineError> {
    let protocol = |m: String| PipelineError::Protocol(m);
    let set = SiteSet::new(inp);
    match task {
        MetricsTask::Scores { bins } => {
            let grid = ScoreGrid::new(*bins).map_err(|e| protocol(e.to_string()))?;
            let ml = score_release(grid, &set.ml, &set.labels, policy, ML_NAME);
            let clinical = set
                .clinical
                .as_ref()
                .map(|c| score_release(grid, c, &set.labels, policy, CLINICAL_NAME));
            Ok(MetricsResult::Scores {
                ml,
                clinical,
                unscored: (inp.labels.len() - set.idx.len()) as u32,
            })
        }
        MetricsTask::FollowUp(f) => {
            let grid = ScoreGrid::new(f.bins).map_err(|e| protocol(e.to_string()))?;
            let cross_placements = match &f.cross_placements {
                None => None,
                Some(pl) => {
                    let clin = set.clinical.as_ref().ok_or_else(|| {
                        protocol("cross placements asked but this study has no clinical comparator at this site".into())
                    })?;
                    let not_released = |_| {
                        protocol("cross placements asked for a model whose table this site withheld in round 1".into())
                    };
                    let ta = score_table(grid, &set.ml, &set.labels, policy, ML_NAME)
                        .map_err(not_released)?;
                    let tb = score_table(grid, clin, &set.labels, policy, CLINICAL_NAME)
                        .map_err(not_released)?;
                    Some(
                        site_cross_placements(&ta, &tb, &set.ml, clin, &set.labels, pl)
                            .map_err(|e| protocol(format!("cross placements: {e}")))?,
                    )
                }
            };
            let survival = match &f.survival {
                None => None,
                Some(req) => Some(survival_release(inp, &set, grid, req, policy)?),
            };
            Ok(MetricsResult::FollowUp(FollowUpResult {
                cross_placements,
                survival,
                masked_sum: None,
            }))
        }
    }
}

/// The points of the shared time grid of a masked follow-up round: `time_bins` multiples of
/// the step (the last is the horizon), then one more point standing for "followed beyond the
/// horizon". Built the same way at every site and at the aggregator, so the values are equal.
pub fn masked_time_grid(step: f64, time_bins: u32) -> Vec<f64> {
    (1..=time_bins as usize + 1)
        .map(|i| i as f64 * step)
        .collect()
}

/// SITE HALF of the masked follow-up round (`super::secure`): the site's per-bin answer, to be
/// packed and masked, **never released as it is** (no cell is merged to `min_count`, so the
/// single gate's per-site count check does not apply; only the sum over ≥ 3 sites is opened).
///
/// - Cross placements: per bin of the score grid, Σ over the bin's positives of the clinical
///   V₁₀ and Σ over its negatives of the clinical V₀₁, where each patient's placement is the one
///   the aggregator sent for the bin of its clinical probability (one pair per bin: the pooled
///   clinical cell's placement, the same vector to every site). `None` when either model's
///   probabilities are not valid at this site (it withheld that model in the score round).
/// - Survival: per grouping (predicted group from the per-bin "high" flags, observed
///   response), per group, event and censoring counts at the points of
///   [`masked_time_grid`] (times moved up to the next point), `min_count` 1; a time beyond the
///   horizon lands on the extra last point. Withheld with a public reason as in the plain path.
pub fn follow_up_by_bin(
    inp: &MetricsInputs,
    task: &FollowUpTask,
    shape: &super::secure::FollowUpShape,
) -> Result<FollowUpResult, PipelineError> {
    let protocol = |m: String| PipelineError::Protocol(m);
    if task.bins != shape.bins {
        return Err(protocol(format!(
            "the masked follow-up's shape has {} bins and its request {}",
            shape.bins, task.bins
        )));
    }
    let grid = ScoreGrid::new(shape.bins).map_err(|e| protocol(e.to_string()))?;
    let n_bins = shape.bins as usize;
    let set = SiteSet::new(inp);
    let ml_valid = valid_probabilities(&set.ml);
    let cross_placements = if shape.ml_cells.is_empty() {
        None
    } else {
        let pl = task
            .cross_placements
            .as_ref()
            .filter(|p| p.len() == n_bins)
            .ok_or_else(|| {
                protocol(format!(
                    "a masked follow-up with a paired part must send one placement pair per bin ({n_bins})"
                ))
            })?;
        let clin = set.clinical.as_ref().ok_or_else(|| {
            protocol(
                "cross placements asked but this study has no clinical comparator at this site"
                    .into(),
            )
        })?;
        if ml_valid && valid_probabilities(clin) {
            let mut out = vec![CrossPlacementSums::default(); n_bins];
            for ((&a, &b), &y) in set.ml.iter().zip(clin).zip(&set.labels) {
                let (ka, kb) = (grid.bin_of(a) as usize, grid.bin_of(b) as usize);
                if y {
                    out[ka].sum_v10_pos += pl[kb].0;
                } else {
                    out[ka].sum_v01_neg += pl[kb].1;
                }
            }
            Some(out)
        } else {
            None
        }
    };
    let survival = match &shape.survival {
        None => None,
        Some(ss) => {
            let req = task.survival.as_ref().ok_or_else(|| {
                protocol(
                    "the masked follow-up's shape has a survival part and its request none".into(),
                )
            })?;
            if req.time_step != ss.time_step {
                return Err(protocol(format!(
                    "the masked follow-up's shape has a time step of {} and its request {}",
                    ss.time_step, req.time_step
                )));
            }
            if !(ss.time_step.is_finite() && ss.time_step > 0.0) || ss.time_bins == 0 {
                return Err(protocol(format!(
                    "a shared time grid of {} points of step {} is not a grid",
                    ss.time_bins, ss.time_step
                )));
            }
            // Per patient of the analysis set: predicted high (1) or low (0), or `None` when the
            // site's ML scores are not valid (it withheld them in the score round).
            let predicted: Option<Option<Vec<usize>>> = if ss.by_predicted {
                let flags = req
                    .predicted_high
                    .as_ref()
                    .filter(|f| f.len() == n_bins)
                    .ok_or_else(|| {
                        protocol(format!(
                            "a masked follow-up by predicted group must send one cut-off flag per bin ({n_bins})"
                        ))
                    })?;
                Some(ml_valid.then(|| {
                    set.ml
                        .iter()
                        .map(|&p| usize::from(flags[grid.bin_of(p) as usize]))
                        .collect()
                }))
            } else {
                None
            };
            let withheld = |reason: &str| GroupRelease::Withheld {
                reason: reason.to_string(),
            };
            let no_ml = "the stacked model's scores were withheld at a site";
            Some(match &inp.survival {
                None => {
                    let r = "a site has no survival columns configured for the study";
                    SurvivalRelease {
                        by_predicted: predicted.map(|_| withheld(r)),
                        by_response: withheld(r),
                    }
                }
                Some(Err(reason)) => SurvivalRelease {
                    by_predicted: predicted.map(|_| withheld(reason)),
                    by_response: withheld(reason),
                },
                Some(Ok(cols)) => {
                    let points = masked_time_grid(ss.time_step, ss.time_bins);
                    let horizon = points[points.len() - 2];
                    let beyond = points[points.len() - 1];
                    let times: Vec<f64> = set
                        .idx
                        .iter()
                        .map(|&i| {
                            let t = cols.times[i];
                            if t > horizon { beyond } else { t }
                        })
                        .collect();
                    let events: Vec<bool> = set.idx.iter().map(|&i| cols.events[i]).collect();
                    let build = |groups: &[usize], what: &str| match SiteSurvivalTable::build(
                        &times,
                        &events,
                        groups,
                        2,
                        &TimeResolution::Grid(points.clone()),
                        1,
                        MergeRule::CellTotal,
                    ) {
                        Ok(table) => GroupRelease::Table {
                            table,
                            times: ReleasedTimes::Grid { step: ss.time_step },
                        },
                        Err(_) => withheld(&format!(
                            "the survival table by {what} cannot be built at a site"
                        )),
                    };
                    let response: Vec<usize> = set.labels.iter().map(|&y| usize::from(y)).collect();
                    SurvivalRelease {
                        by_predicted: predicted.map(|g| match g {
                            Some(g) => build(&g, "predicted group"),
                            None => withheld(no_ml),
                        }),
                        by_response: build(&response, "observed response"),
                    }
                }
            })
        }
    };
    Ok(FollowUpResult {
        cross_placements,
        survival,
        masked_sum: None,
    })
}

/// `per_cell[j]` (one value per cell of `table`) spread over the grid's bins: each bin takes
/// the value of the cell that covers it, a bin no cell covers (no patient) `empty`.
fn per_bin<T: Copy>(table: &SiteScoreTable, per_cell: &[T], empty: T) -> Vec<T> {
    let mut out = vec![empty; table.grid.n_bins() as usize];
    for (c, &v) in table.cells.iter().zip(per_cell) {
        for k in c.lo_bin..=c.hi_bin {
            if let Some(x) = out.get_mut(k as usize) {
                *x = v;
            }
        }
    }
    out
}

fn survival_release(
    inp: &MetricsInputs,
    set: &SiteSet,
    grid: ScoreGrid,
    req: &SurvivalRequest,
    policy: &SitePolicy,
) -> Result<SurvivalRelease, PipelineError> {
    // Predicted group of each analysis patient, from the flags of the cells (rows) it released.
    let predicted: Option<Vec<usize>> = match &req.predicted_high {
        None => None,
        Some(flags) => {
            let mismatch = |n: usize| {
                PipelineError::Protocol(format!(
                    "the cut-off flags list {} entries but this site released {n} ML cells or rows in round 1",
                    flags.len()
                ))
            };
            if policy.release_predictions {
                if flags.len() != set.ml.len() {
                    return Err(mismatch(set.ml.len()));
                }
                Some(flags.iter().map(|&h| usize::from(h)).collect())
            } else {
                let t = score_table(grid, &set.ml, &set.labels, policy, ML_NAME).map_err(|_| {
                    PipelineError::Protocol(
                        "cut-off flags sent for ML scores this site withheld in round 1".into(),
                    )
                })?;
                if flags.len() != t.cells.len() {
                    return Err(mismatch(t.cells.len()));
                }
                let mut g = Vec::with_capacity(set.ml.len());
                for &p in &set.ml {
                    let c = t.cell_index(p).ok_or_else(|| {
                        PipelineError::Protocol("a patient's score is in no released cell".into())
                    })?;
                    g.push(usize::from(flags[c]));
                }
                Some(g)
            }
        }
    };
    let withheld = |reason: &str| GroupRelease::Withheld {
        reason: reason.to_string(),
    };
    let cols = match &inp.survival {
        None => {
            let r = "this site has no survival columns configured for the study";
            return Ok(SurvivalRelease {
                by_predicted: predicted.map(|_| withheld(r)),
                by_response: withheld(r),
            });
        }
        Some(Err(reason)) => {
            return Ok(SurvivalRelease {
                by_predicted: predicted.map(|_| withheld(reason)),
                by_response: withheld(reason),
            });
        }
        Some(Ok(c)) => c,
    };
    let times: Vec<f64> = set.idx.iter().map(|&i| cols.times[i]).collect();
    let events: Vec<bool> = set.idx.iter().map(|&i| cols.events[i]).collect();
    let response: Vec<usize> = set.labels.iter().map(|&y| usize::from(y)).collect();
    Ok(SurvivalRelease {
        by_predicted: predicted.map(|g| {
            group_release(
                &times,
                &events,
                &g,
                req.time_step,
                policy,
                "predicted group",
            )
        }),
        by_response: group_release(
            &times,
            &events,
            &response,
            req.time_step,
            policy,
            "observed response",
        ),
    })
}

// ------------------------------------------------------------------------------------------
// Aggregator half
// ------------------------------------------------------------------------------------------

/// One site's released scores of one model, as the aggregator uses them.
#[derive(Debug, Clone)]
struct SiteScores {
    site: SiteId,
    /// The released table, or the one the aggregator bins from released rows (`min_count` 1).
    table: SiteScoreTable,
    /// The rows, when released.
    rows: Option<(Vec<f64>, Vec<bool>)>,
}

/// One model's releases over all sites.
#[derive(Debug, Clone, Default)]
struct ModelPool {
    sites: Vec<SiteScores>,
    /// (site, reason) of the sites that withheld or sent something unusable.
    withheld: Vec<(SiteId, String)>,
}

impl ModelPool {
    fn add(&mut self, site: &SiteId, r: &ScoreRelease, grid: ScoreGrid) {
        let bad = |reason: String| (site.clone(), reason);
        match r {
            ScoreRelease::Withheld { reason } => self.withheld.push(bad(reason.clone())),
            ScoreRelease::Table(t) => {
                if t.grid != grid {
                    self.withheld.push(bad(format!(
                        "its table uses a {}-bin grid, not the study's {}",
                        t.grid.n_bins(),
                        grid.n_bins()
                    )));
                } else if let Err(e) = t.validate(t.min_count, t.rule) {
                    self.withheld
                        .push(bad(format!("its table was refused: {e}")));
                } else {
                    self.sites.push(SiteScores {
                        site: site.clone(),
                        table: t.clone(),
                        rows: None,
                    });
                }
            }
            ScoreRelease::Rows { probs, labels } => {
                match SiteScoreTable::build(grid, probs, labels, 1, MergeRule::CellTotal) {
                    Ok(table) => self.sites.push(SiteScores {
                        site: site.clone(),
                        table,
                        rows: Some((probs.clone(), labels.clone())),
                    }),
                    Err(e) => self
                        .withheld
                        .push(bad(format!("its released rows were refused: {e}"))),
                }
            }
        }
    }

    fn is_exact(&self) -> bool {
        !self.sites.is_empty() && self.sites.iter().all(|s| s.rows.is_some())
    }

    fn pooled(&self) -> Result<PooledScoreTable, MetricsError> {
        let tables: Vec<SiteScoreTable> = self.sites.iter().map(|s| s.table.clone()).collect();
        PooledScoreTable::pool(&tables)
    }

    /// Concatenated rows in `SiteId` order (exact path).
    fn rows(&self) -> (Vec<f64>, Vec<bool>) {
        let mut p = Vec::new();
        let mut l = Vec::new();
        for s in &self.sites {
            if let Some((sp, sl)) = &s.rows {
                p.extend_from_slice(sp);
                l.extend_from_slice(sl);
            }
        }
        (p, l)
    }

    /// The same model restricted to `sites`.
    fn restricted(&self, sites: &[SiteId]) -> ModelPool {
        ModelPool {
            sites: self
                .sites
                .iter()
                .filter(|s| sites.contains(&s.site))
                .cloned()
                .collect(),
            withheld: vec![],
        }
    }

    fn site(&self, id: &SiteId) -> Option<&SiteScores> {
        self.sites.iter().find(|s| &s.site == id)
    }
}

/// Round 1 as the aggregator reads it.
struct Pools {
    /// Every releasing site sent rows: the exact per-patient path.
    exact: bool,
    ml: ModelPool,
    clinical: Option<ModelPool>,
    unscored: u64,
}

impl Pools {
    fn from_round1(round1: &[(SiteId, MetricsResult)], bins: u32) -> Result<Pools, String> {
        let grid = ScoreGrid::new(bins).map_err(|e| e.to_string())?;
        let mut ml = ModelPool::default();
        let mut clinical: Option<ModelPool> = None;
        let mut unscored = 0u64;
        for (site, r) in round1 {
            let MetricsResult::Scores {
                ml: m,
                clinical: c,
                unscored: u,
            } = r
            else {
                return Err(format!(
                    "site {site} answered the metrics score round with a follow-up answer"
                ));
            };
            ml.add(site, m, grid);
            if let Some(c) = c {
                clinical
                    .get_or_insert_with(ModelPool::default)
                    .add(site, c, grid);
            }
            unscored += u64::from(*u);
        }
        Ok(Pools {
            exact: ml.is_exact(),
            ml,
            clinical,
            unscored,
        })
    }

    /// Sites that released both models (the paired comparison's sites), in `SiteId` order.
    fn paired_sites(&self) -> Vec<SiteId> {
        let Some(c) = &self.clinical else {
            return vec![];
        };
        self.ml
            .sites
            .iter()
            .filter(|s| c.site(&s.site).is_some())
            .map(|s| s.site.clone())
            .collect()
    }
}

/// One model's metrics: point estimates and bootstrap CIs, on the path the releases allow.
fn model_metrics(
    pool: &ModelPool,
    exact: bool,
    options: &MetricOptions,
    boot: &BootstrapOptions,
) -> Result<
    (
        MetricSet,
        RankedCells,
        Result<stats::metrics::BootstrapCis, MetricsError>,
    ),
    MetricsError,
> {
    let (m, rc) = if exact {
        let (p, l) = pool.rows();
        (
            exact::evaluate(&p, &l, options)?,
            RankedCells::from_patients(&p, &l)?,
        )
    } else {
        let pooled = pool.pooled()?;
        (evaluate_pooled(&pooled, options)?, pooled.ranked())
    };
    let b = bootstrap_cis(&rc, m.youden.threshold, boot);
    Ok((m, rc, b))
}

/// Aggregator state of the metrics stage (serde: persisted with the study).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsDriver {
    bins: u32,
    bootstrap: u32,
    seed: u64,
    /// (time column, event column) when the study has a survival endpoint.
    survival: Option<(String, String)>,
    phase: Phase,
    /// Under secure aggregation the score round's answer is one pooled table and the follow-up
    /// round is one masked round over the shared grids (`super::secure`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    secure: bool,
    /// Under secure aggregation: the pooled survival tables are merged to this many patients per
    /// released count (`analysis.metrics.secure_min_count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secure_min_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Phase {
    Scores,
    FollowUp {
        /// The round-1 answers in `SiteId` order (the pools are rebuilt from them).
        round1: Vec<(SiteId, MetricsResult)>,
        /// The report so far (models and notes).
        report: Report,
        /// The ML Youden cut-off, when computed.
        cutoff: Option<f64>,
        /// Whether the paired comparison waits for the sites' cross placements.
        paired_pending: bool,
        /// Each site's round-2 task (under secure aggregation: one task for every site, listed
        /// under the pseudo-site of the score round's sum).
        tasks: Vec<(SiteId, FollowUpTask)>,
        /// The masked round's shape, under secure aggregation.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        shape: Option<super::secure::FollowUpShape>,
    },
}

impl MetricsDriver {
    pub fn new(spec: &PipelineSpec, _n_sites: usize) -> Self {
        Self {
            bins: spec.metrics.bins,
            bootstrap: spec.metrics.bootstrap,
            seed: spec.metrics.seed,
            survival: match (&spec.metrics.time_column, &spec.metrics.event_column) {
                (Some(t), Some(e)) => Some((t.clone(), e.clone())),
                _ => None,
            },
            phase: Phase::Scores,
            secure: false,
            secure_min_count: Some(spec.metrics.pooled_min_count()),
        }
    }

    /// The shape of the masked follow-up round, when the next round is one.
    pub fn follow_up_shape(&self) -> Option<&super::secure::FollowUpShape> {
        match &self.phase {
            Phase::FollowUp { shape, .. } => shape.as_ref(),
            Phase::Scores => None,
        }
    }

    /// The same driver for a study under secure aggregation (see the field).
    pub fn secure(mut self, on: bool) -> Self {
        self.secure = on;
        self
    }

    /// This round's request to `site`.
    pub fn task_for(&self, site: &SiteId) -> MetricsTask {
        match &self.phase {
            Phase::Scores => MetricsTask::Scores { bins: self.bins },
            Phase::FollowUp { tasks, .. } => MetricsTask::FollowUp(
                tasks
                    .iter()
                    .find(|(s, _)| s == site || self.secure)
                    .map(|(_, t)| t.clone())
                    .unwrap_or(FollowUpTask {
                        bins: self.bins,
                        cross_placements: None,
                        survival: None,
                    }),
            ),
        }
    }

    /// `Ok(Some(report))` when finished. `Err` only for answers of the wrong kind (a protocol
    /// bug); data problems become notes in the report.
    pub fn on_round(
        &mut self,
        results: &BTreeMap<SiteId, ResultBody>,
    ) -> Result<Option<Report>, String> {
        let mut answers: Vec<(SiteId, MetricsResult)> = Vec::with_capacity(results.len());
        for (site, body) in results {
            match body {
                ResultBody::Pipeline(StageResult::Metrics(m)) => {
                    answers.push((site.clone(), m.clone()))
                }
                other => return Err(format!("site {site} answered with {}", other.kind())),
            }
        }
        match std::mem::replace(&mut self.phase, Phase::Scores) {
            Phase::Scores => self.after_scores(answers),
            Phase::FollowUp {
                round1,
                report,
                cutoff,
                paired_pending,
                ..
            } => self
                .after_follow_up(round1, report, cutoff, paired_pending, answers)
                .map(Some),
        }
    }

    fn bootstrap_options(&self) -> BootstrapOptions {
        BootstrapOptions {
            replicates: self.bootstrap as usize,
            seed: self.seed,
            conf_level: CONF_LEVEL,
        }
    }

    fn after_scores(
        &mut self,
        round1: Vec<(SiteId, MetricsResult)>,
    ) -> Result<Option<Report>, String> {
        let pools = Pools::from_round1(&round1, self.bins)?;
        let max_min_count = pools
            .ml
            .sites
            .iter()
            .chain(pools.clinical.iter().flat_map(|c| &c.sites))
            .filter(|s| s.rows.is_none())
            .map(|s| s.table.min_count)
            .max()
            .unwrap_or(0);
        let mut report = Report::new(if pools.exact {
            MetricsSource::Exact
        } else {
            MetricsSource::CountTables {
                score_bins: self.bins,
                max_min_count,
            }
        });
        let options = MetricOptions::default();
        let boot = self.bootstrap_options();
        let mut cutoff = None;
        let mut computed = [false, false];
        for (k, (name, pool)) in [
            (ML_NAME, Some(&pools.ml)),
            (CLINICAL_NAME, pools.clinical.as_ref()),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(pool) = pool else { continue };
            for (site, reason) in &pool.withheld {
                report
                    .notes
                    .push(format!("{name}: site {site} sat out: {reason}"));
            }
            if pool.sites.is_empty() {
                report
                    .notes
                    .push(format!("{name}: not computed: no site released its scores"));
                continue;
            }
            match model_metrics(pool, pool.is_exact(), &options, &boot) {
                Err(e) => report
                    .notes
                    .push(format!("{name}: metrics not computed: {e}")),
                Ok((m, rc, b)) => {
                    let boot_cis = match b {
                        Ok(b) => Some(b),
                        Err(e) => {
                            report
                                .notes
                                .push(format!("{name}: bootstrap CIs not computed: {e}"));
                            None
                        }
                    };
                    if rc.cells.len() == 1 {
                        report.notes.push(format!(
                            "{name}: every patient has the same score{}: the AUC is 0.5 by ties, its DeLong interval is degenerate and the Youden cut-off classifies everyone as positive (uninformative)",
                            if pool.is_exact() { "" } else { " at the count tables' resolution" }
                        ));
                    }
                    if m.auc_resolution_bound > 0.0 {
                        report.notes.push(format!(
                            "{name}: count tables merge some patients into shared cells; the AUC is within ±{:.4} of the per-patient AUC (resolution bound), Brier is exact",
                            m.auc_resolution_bound
                        ));
                    }
                    if k == 0 {
                        cutoff = Some(m.youden.threshold);
                    }
                    computed[k] = true;
                    report
                        .models
                        .push(ModelReport::new(name, &m, boot_cis.as_ref()));
                }
            }
        }
        if pools.unscored > 0 {
            report.notes.push(format!(
                "{} patients had no validation probability (no site trained a model for their outer folds) and are left out",
                pools.unscored
            ));
        }

        // The paired comparison: exact now, or a follow-up round for the sites' cross sums.
        let mut paired_pending = false;
        let mut cross: BTreeMap<SiteId, Vec<(f64, f64)>> = BTreeMap::new();
        if let Some(clin) = &pools.clinical {
            let sites = pools.paired_sites();
            if !(computed[0] && computed[1]) {
                report.notes.push(format!(
                    "paired DeLong test {ML_NAME} vs {CLINICAL_NAME}: not computed because a model's metrics were not"
                ));
            } else if sites.is_empty() {
                report.notes.push(format!(
                    "paired DeLong test {ML_NAME} vs {CLINICAL_NAME}: not computed: no site released both models' scores"
                ));
            } else {
                if sites.len() < pools.ml.sites.len() || sites.len() < clin.sites.len() {
                    report.notes.push(format!(
                        "paired DeLong test: computed on the {} sites that released both models' scores",
                        sites.len()
                    ));
                }
                let a = pools.ml.restricted(&sites);
                let b = clin.restricted(&sites);
                if a.is_exact() && b.is_exact() {
                    let (pa, la) = a.rows();
                    let (pb, _) = b.rows();
                    match exact::paired_delong(&pa, &pb, &la, CONF_LEVEL) {
                        Ok(d) => report.comparisons.push(ComparisonReport {
                            model_a: ML_NAME.into(),
                            model_b: CLINICAL_NAME.into(),
                            delong: d,
                            source: "exact (per-patient probabilities)".into(),
                        }),
                        Err(e) => report
                            .notes
                            .push(format!("paired DeLong test: not computed: {e}")),
                    }
                } else {
                    let pooled_b = b
                        .pooled()
                        .map_err(|e| format!("pooling the clinical tables: {e}"))?;
                    for s in &sites {
                        let sb = clin.site(s).expect("paired site released clinical");
                        let sa = pools.ml.site(s).expect("paired site released ML");
                        if sa.rows.is_none() && sb.rows.is_none() {
                            cross.insert(s.clone(), pooled_b.site_placements(&sb.table));
                        }
                    }
                    paired_pending = true;
                }
            }
        }

        // Survival: a follow-up round to every site.
        let mut tasks: Vec<(SiteId, FollowUpTask)> = Vec::new();
        let pooled_ml = if pools.exact {
            None
        } else {
            pools.ml.pooled().ok()
        };
        for (site, _) in &round1 {
            let survival = self.survival.as_ref().map(|_| {
                let predicted_high = cutoff.and_then(|t| {
                    let s = pools.ml.site(site)?;
                    match (&s.rows, &pooled_ml) {
                        // Exact path: the cut-off is a patient's probability.
                        (Some((p, _)), None) => Some(p.iter().map(|&x| x >= t).collect()),
                        // Count path: the cut-off is a pooled cell's score; a row is high when
                        // the pooled cell of its bin is.
                        (Some((p, _)), Some(pool)) => {
                            let flags = pool.site_cell_is_high(&s.table, t);
                            Some(
                                p.iter()
                                    .map(|&x| s.table.cell_index(x).is_some_and(|c| flags[c]))
                                    .collect(),
                            )
                        }
                        (None, Some(pool)) => Some(pool.site_cell_is_high(&s.table, t)),
                        // A table site on a path without a pooled table: nothing to map.
                        (None, None) => None,
                    }
                });
                SurvivalRequest {
                    predicted_high,
                    time_step: TIME_GRID_STEP,
                }
            });
            let cross_placements = cross.remove(site);
            if survival.is_some() || cross_placements.is_some() {
                tasks.push((
                    site.clone(),
                    FollowUpTask {
                        bins: self.bins,
                        cross_placements,
                        survival,
                    },
                ));
            }
        }
        if self.survival.is_some() && cutoff.is_none() {
            report.notes.push(format!(
                "survival by predicted group: not computed: the {ML_NAME}'s Youden cut-off is not available"
            ));
        }
        if self.secure && !tasks.is_empty() {
            // Round 1 was one pooled table (under the sum's pseudo-site): its per-cell task
            // becomes one per-bin task for every site, masked with the shape below.
            let (sum_site, mut task) = tasks.swap_remove(0);
            let ml_table = pools.ml.site(&sum_site).map(|s| &s.table);
            let clin_table = pools
                .clinical
                .as_ref()
                .and_then(|c| c.site(&sum_site))
                .map(|s| &s.table);
            task.cross_placements = match (task.cross_placements.take(), clin_table) {
                (Some(v), Some(t)) => Some(per_bin(t, &v, (0.0, 0.0))),
                _ => None,
            };
            if let Some(req) = task.survival.as_mut() {
                req.predicted_high = match (req.predicted_high.take(), ml_table) {
                    (Some(f), Some(t)) => Some(per_bin(t, &f, false)),
                    _ => None,
                };
            }
            let ml_cells = match (&task.cross_placements, ml_table) {
                (Some(_), Some(t)) => t.cells.iter().map(|c| (c.lo_bin, c.hi_bin)).collect(),
                _ => vec![],
            };
            let shape = super::secure::FollowUpShape {
                bins: self.bins,
                ml_cells,
                survival: task
                    .survival
                    .as_ref()
                    .map(|s| super::secure::FollowUpSurvivalShape {
                        time_step: s.time_step,
                        time_bins: SECURE_TIME_BINS,
                        by_predicted: s.predicted_high.is_some(),
                    }),
                min_count: self.secure_min_count.unwrap_or(5),
            };
            self.phase = Phase::FollowUp {
                round1,
                report,
                cutoff,
                paired_pending: paired_pending && task.cross_placements.is_some(),
                tasks: vec![(sum_site, task)],
                shape: Some(shape),
            };
            return Ok(None);
        }
        if tasks.is_empty() && !paired_pending {
            return Ok(Some(report));
        }
        if tasks.is_empty() {
            // Only row sites: the aggregator has everything for the paired test.
            return self
                .after_follow_up(round1, report, cutoff, true, vec![])
                .map(Some);
        }
        self.phase = Phase::FollowUp {
            round1,
            report,
            cutoff,
            paired_pending,
            tasks,
            shape: None,
        };
        Ok(None)
    }

    fn after_follow_up(
        &mut self,
        round1: Vec<(SiteId, MetricsResult)>,
        mut report: Report,
        cutoff: Option<f64>,
        paired_pending: bool,
        answers: Vec<(SiteId, MetricsResult)>,
    ) -> Result<Report, String> {
        let pools = Pools::from_round1(&round1, self.bins)?;
        let mut replies: BTreeMap<SiteId, FollowUpResult> = BTreeMap::new();
        for (site, a) in answers {
            match a {
                MetricsResult::FollowUp(f) => {
                    replies.insert(site, f);
                }
                MetricsResult::Scores { .. } => {
                    return Err(format!(
                        "site {site} answered the metrics follow-up round with score tables"
                    ));
                }
            }
        }
        // Under secure aggregation the one answer is the opened sum (`super::secure`).
        let facts = replies.values().find_map(|r| r.masked_sum.clone());
        if self.secure && facts.is_none() && !replies.is_empty() {
            return Err(
                "the masked follow-up round's answer is not a decoded sum over the sites".into(),
            );
        }
        let paired_withheld = facts.as_ref().map_or(0, |f| f.paired_withheld);
        if paired_pending && paired_withheld > 0 {
            report.notes.push(format!(
                "paired DeLong test {ML_NAME} vs {CLINICAL_NAME}: not computed: {paired_withheld} sites could not form their cross-placement sums (a model's scores were withheld there)"
            ));
        } else if paired_pending {
            match self.paired_from_tables(&pools, &replies) {
                Ok(d) => report.comparisons.push(ComparisonReport {
                    model_a: ML_NAME.into(),
                    model_b: CLINICAL_NAME.into(),
                    delong: d,
                    source: if self.secure {
                        format!(
                            "pooled count tables ({} bins) under secure aggregation, two rounds: the masked sum over sites of the pooled clinical placement values per bin, merged to the pooled {ML_NAME} cells",
                            self.bins
                        )
                    } else {
                        format!(
                            "count tables ({} bins), two rounds: sites' sums of the pooled clinical placement values per released ML cell",
                            self.bins
                        )
                    },
                }),
                Err(e) => report
                    .notes
                    .push(format!("paired DeLong test: not computed: {e}")),
            }
        }
        if let Some((tc, ec)) = &self.survival {
            let endpoint = format!("progression-free survival ({tc}; event = {ec} = 1)");
            let mut by_pred = Vec::new();
            let mut by_resp = Vec::new();
            for (site, r) in &replies {
                match &r.survival {
                    Some(s) => {
                        if let Some(p) = &s.by_predicted {
                            by_pred.push((site.clone(), p.clone()));
                        }
                        by_resp.push((site.clone(), s.by_response.clone()));
                    }
                    None => report.notes.push(format!(
                        "survival: site {site} sent no survival tables although asked"
                    )),
                }
            }
            if let Some(f) = &facts {
                for (k, what) in ["predicted group", "observed response"].iter().enumerate() {
                    if f.survival_withheld[k] > 0 {
                        report.notes.push(format!(
                            "survival by {what}: {} sites withheld their survival counts; the pooled tables are over the other sites",
                            f.survival_withheld[k]
                        ));
                    }
                }
                if f.beyond_horizon > 0 {
                    report.notes.push(format!(
                        "survival: {} patients were followed beyond the shared time grid's horizon of {} time units and are censored at it",
                        f.beyond_horizon, f.horizon
                    ));
                }
            }
            if let Some(t) = cutoff {
                survival_report(
                    &mut report,
                    &format!("predicted group ({ML_NAME}, Youden cut-off p ≥ {t:.4})"),
                    ["predicted low", "predicted high"],
                    &by_pred,
                    &endpoint,
                    facts.as_ref(),
                );
            }
            survival_report(
                &mut report,
                "observed response",
                ["non-responders", "responders"],
                &by_resp,
                &endpoint,
                facts.as_ref(),
            );
        }
        Ok(report)
    }

    /// Count-path paired DeLong from the sites' round-2 sums (row sites: computed here).
    fn paired_from_tables(
        &self,
        pools: &Pools,
        replies: &BTreeMap<SiteId, FollowUpResult>,
    ) -> Result<stats::metrics::PairedDelong, String> {
        let clin = pools.clinical.as_ref().ok_or("no clinical comparator")?;
        let sites = pools.paired_sites();
        let a = pools.ml.restricted(&sites);
        let b = clin.restricted(&sites);
        let pooled_a = a.pooled().map_err(|e| e.to_string())?;
        let pooled_b = b.pooled().map_err(|e| e.to_string())?;
        let mut sums: Vec<(SiteScoreTable, Vec<CrossPlacementSums>)> = Vec::new();
        for (sa, sb) in a.sites.iter().zip(&b.sites) {
            let reply = match (&sa.rows, &sb.rows) {
                (Some((pa, la)), Some((pb, _))) => site_cross_placements(
                    &sa.table,
                    &sb.table,
                    pa,
                    pb,
                    la,
                    &pooled_b.site_placements(&sb.table),
                )
                .map_err(|e| format!("site {}: {e}", sa.site))?,
                (None, None) => replies
                    .get(&sa.site)
                    .and_then(|r| r.cross_placements.clone())
                    .ok_or_else(|| format!("site {} sent no cross placements", sa.site))?,
                _ => {
                    return Err(format!(
                        "site {} released one model as rows and the other as a table",
                        sa.site
                    ));
                }
            };
            sums.push((sa.table.clone(), reply));
        }
        let refs: Vec<(&SiteScoreTable, &[CrossPlacementSums])> =
            sums.iter().map(|(t, r)| (t, r.as_slice())).collect();
        paired_delong_from_tables(&pooled_a, &pooled_b, &refs, CONF_LEVEL)
            .map_err(|e| e.to_string())
    }
}

/// KM, log-rank and Cox for one grouping from the sites' tables; what cannot be computed goes
/// to the notes. `masked`: the one release is the opened sum of a masked follow-up round (one
/// pooled table, so no site-stratified Cox).
fn survival_report(
    report: &mut Report,
    grouping: &str,
    labels: [&str; 2],
    releases: &[(SiteId, GroupRelease)],
    endpoint: &str,
    masked: Option<&MaskedFollowUpFacts>,
) {
    let mut tables: Vec<(SiteId, &SiteSurvivalTable, ReleasedTimes)> = Vec::new();
    for (site, r) in releases {
        match r {
            GroupRelease::Table { table, times } => {
                if table.groups.len() != 2 {
                    report.notes.push(format!(
                        "survival by {grouping}: site {site} sent {} groups instead of 2; left out",
                        table.groups.len()
                    ));
                } else if let Err(e) = table.validate(table.min_count, table.rule) {
                    report.notes.push(format!(
                        "survival by {grouping}: site {site}'s table was refused: {e}"
                    ));
                } else {
                    tables.push((site.clone(), table, *times));
                }
            }
            GroupRelease::Withheld { reason } => report.notes.push(match masked {
                Some(_) => format!("survival by {grouping}: the pooled table is empty: {reason}"),
                None => format!("survival by {grouping}: site {site} sat out: {reason}"),
            }),
        }
    }
    if tables.is_empty() {
        report.notes.push(format!(
            "survival by {grouping}: not computed: no site released a survival table"
        ));
        return;
    }
    let site_tables: Vec<SiteSurvivalTable> = tables.iter().map(|t| t.1.clone()).collect();
    let pooled = match pool_survival(&site_tables) {
        Ok(p) => p,
        Err(e) => {
            report
                .notes
                .push(format!("survival by {grouping}: not computed: {e}"));
            return;
        }
    };
    let mut curves = Vec::new();
    for (g, label) in labels.iter().enumerate() {
        match kaplan_meier(&pooled[g], KmCi::LogLog, CONF_LEVEL) {
            Ok(km) => curves.push(KmCurveReport::new(label, &km)),
            Err(e) => report.notes.push(format!(
                "survival by {grouping}: Kaplan-Meier of {label} not computed: {e}"
            )),
        }
    }
    let two = TwoGroupTable::align(&pooled[0], &pooled[1]);
    let lr = match log_rank(&two) {
        Ok(lr) => lr,
        Err(e) => {
            report.notes.push(format!(
                "survival by {grouping}: log-rank test not computed ({e}); the Kaplan-Meier curves and Cox models are left out with it"
            ));
            return;
        }
    };
    let newton = NewtonOptions::default();
    let mut cox = Vec::new();
    match fit_cox_binary_pooled(&two, CoxTies::Efron, &newton) {
        Ok(f) => cox.push(CoxReport::new("pooled (unstratified)", &f)),
        Err(e) => report.notes.push(format!(
            "survival by {grouping}: pooled Cox model not computed: {e}"
        )),
    }
    if let Some(f) = masked {
        // The stratified partial likelihood needs each site's own risk sets; only their sum
        // was opened.
        report.notes.push(format!(
            "survival by {grouping}: site-stratified Cox model not computed under secure aggregation (it needs each site's own survival table; only the pooled table is opened)"
        ));
        report.survival.push(SurvivalReport {
            grouping: grouping.to_string(),
            endpoint: endpoint.to_string(),
            curves,
            log_rank: lr,
            cox,
            time_resolution: format!(
                "a {}-unit time grid shared by every site up to a horizon of {} (times moved up to the next grid point), summed under secure aggregation and merged on the pooled table until every released count reaches {}",
                tables[0]
                    .2
                    .grid_step()
                    .unwrap_or(TIME_GRID_STEP),
                f.horizon,
                f.min_count
            ),
        });
        return;
    }
    let per_site: Vec<TwoGroupTable> = site_tables
        .iter()
        .map(|t| {
            TwoGroupTable::align(
                &GroupTable::from_cells(&t.groups[0]),
                &GroupTable::from_cells(&t.groups[1]),
            )
        })
        .collect();
    match fit_cox_binary_stratified(&per_site, CoxTies::Efron, &newton) {
        Ok(f) => cox.push(CoxReport::new("site-stratified", &f)),
        Err(e) => report.notes.push(format!(
            "survival by {grouping}: site-stratified Cox model not computed: {e}"
        )),
    }
    let exact: Vec<&str> = tables
        .iter()
        .filter(|t| t.2 == ReleasedTimes::Exact)
        .map(|t| t.0.as_str())
        .collect();
    // Grid sites grouped by step.
    let mut steps: Vec<(f64, Vec<&str>)> = Vec::new();
    for t in &tables {
        if let ReleasedTimes::Grid { step } = t.2 {
            match steps.iter_mut().find(|(s, _)| *s == step) {
                Some((_, v)) => v.push(t.0.as_str()),
                None => steps.push((step, vec![t.0.as_str()])),
            }
        }
    }
    let mut parts = Vec::new();
    if !exact.is_empty() {
        parts.push(format!(
            "exact event and censoring times at {}",
            if steps.is_empty() {
                "every site".to_string()
            } else {
                exact.join(", ")
            }
        ));
    }
    for (step, sites) in &steps {
        parts.push(format!(
            "a {step}-unit time grid at {} (times moved up to the next grid point, then merged at the site until every released count reaches its min_count)",
            if exact.is_empty() && steps.len() == 1 {
                "every site".to_string()
            } else {
                sites.join(", ")
            }
        ));
    }
    let time_resolution = parts.join("; ");
    report.survival.push(SurvivalReport {
        grouping: grouping.to_string(),
        endpoint: endpoint.to_string(),
        curves,
        log_rank: lr,
        cox,
        time_resolution,
    });
}
