//! The report's input: a plain, serialisable description of a finished (or partly finished)
//! study. It holds results, never computes them; every part is a [`Part`] so a study that stopped
//! early, or a metric that could not be estimated, still renders with the reason.

use federation::table1::Table1Output;
use models::lasso::LassoResult;
use serde::{Deserialize, Serialize};
use stats::report::{CoxReport, KmCurveReport, Report, SurvivalReport};
use stats::survival::LogRank;

/// Schema version of [`StudyReport`] (written into `metrics.json`); bump on incompatible
/// changes.
pub const STUDY_REPORT_SCHEMA_VERSION: u32 = 1;

/// One part of a study: absent, present, or attempted and not computable.
///
/// Serialised externally tagged: `"omitted"`, `{"unavailable": {"reason": "…"}}` or
/// `{"available": …}`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part<T> {
    /// Not part of this study (not requested, or the study has not reached it).
    #[default]
    Omitted,
    /// Attempted but not computable; `reason` is shown in the report (e.g. the
    /// `stats::metrics::MetricsError` message: "log-rank test needs at least 1 events …").
    Unavailable {
        /// Why, in words a statistician can act on.
        reason: String,
    },
    /// Computed.
    Available(T),
}

impl<T> Part<T> {
    /// The value when available.
    pub fn get(&self) -> Option<&T> {
        match self {
            Part::Available(t) => Some(t),
            _ => None,
        }
    }

    /// `Available` for `Ok`, `Unavailable` with the error's message for `Err`: the usual way to
    /// store a metric whose computation may fail.
    pub fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Part<T> {
        match r {
            Ok(t) => Part::Available(t),
            Err(e) => Part::Unavailable {
                reason: e.to_string(),
            },
        }
    }

    /// Why the part is not shown (None when it is available).
    pub fn why_missing(&self) -> Option<String> {
        match self {
            Part::Available(_) => None,
            Part::Omitted => Some("not part of this study".into()),
            Part::Unavailable { reason } => Some(reason.clone()),
        }
    }
}

/// A named setting shown verbatim in the report (policy values, grid sizes, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    /// Name (e.g. "min_count").
    pub key: String,
    /// Value as the statistician should read it (e.g. "5").
    pub value: String,
}

impl Setting {
    /// A setting from anything printable.
    pub fn new(key: impl Into<String>, value: impl std::fmt::Display) -> Setting {
        Setting {
            key: key.into(),
            value: value.to_string(),
        }
    }
}

/// A named random seed (e.g. "cv folds", "bootstrap").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedSeed {
    /// What the seed drives.
    pub name: String,
    /// The seed.
    pub seed: u64,
}

/// What the study was and how it was run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StudySettings {
    /// Study id (e.g. "nettreat-2024").
    pub study_id: String,
    /// Human title (the report's heading; the id is used when empty).
    pub title: String,
    /// The study spec's hash, as sites approve it.
    pub spec_hash: String,
    /// Every seed that makes the run repeatable.
    pub seeds: Vec<NamedSeed>,
    /// Cross-validation scheme in words (e.g. "5-fold CV repeated 10×, folds stratified by
    /// site").
    pub cv_scheme: String,
    /// Disclosure policy summary (min_count, release_predictions, …).
    pub policy: Vec<Setting>,
    /// Anything else worth stating (score grid, bootstrap B, software version, …).
    pub other: Vec<Setting>,
    /// When the results were produced, as the caller formats it (the report adds no clock).
    pub generated_at: Option<String>,
}

/// The LASSO feature selection with the names of its features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LassoReport {
    /// Feature names in the column order of the fit (`result.cv.path.beta[k][j]` is feature
    /// `feature_names[j]`).
    pub feature_names: Vec<String>,
    /// The fit: λ path, coefficients on both scales, CV curve, λ.min / λ.1se, bootstrap
    /// selection frequencies.
    pub result: LassoResult,
}

/// Survival by one grouping (predicted group at the cut-off, or observed response), with every
/// piece that may fail on its own carrying its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurvivalAnalysis {
    /// What defines the groups (e.g. "predicted group at the Youden cut-off").
    pub grouping: String,
    /// Endpoint and time unit (e.g. "progression-free survival, months"); the x-axis label.
    pub endpoint: String,
    /// Time resolution released by the sites (e.g. "exact" or "monthly grid, merged").
    pub time_resolution: String,
    /// KM curves, group 0 then group 1 (a group without patients has no curve).
    pub curves: Vec<KmCurveReport>,
    /// Log-rank test of group 1 vs group 0.
    pub log_rank: Part<LogRank>,
    /// Cox hazard ratios of group 1 vs group 0 (pooled and/or site-stratified).
    pub cox: Part<Vec<CoxReport>>,
}

impl From<SurvivalReport> for SurvivalAnalysis {
    /// A fully computed `stats::report::SurvivalReport` (an empty Cox list becomes
    /// `Omitted`).
    fn from(s: SurvivalReport) -> Self {
        SurvivalAnalysis {
            grouping: s.grouping,
            endpoint: s.endpoint,
            time_resolution: s.time_resolution,
            curves: s.curves,
            log_rank: Part::Available(s.log_rank),
            cox: if s.cox.is_empty() {
                Part::Omitted
            } else {
                Part::Available(s.cox)
            },
        }
    }
}

/// Survival by predicted group and by observed response.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SurvivalPart {
    /// By predicted group (the ML model's cut-off).
    pub predicted: Part<SurvivalAnalysis>,
    /// By observed response.
    pub observed: Part<SurvivalAnalysis>,
}

/// What one site contributed and released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteContribution {
    /// Site id.
    pub site: String,
    /// Patients the site contributed (None = the site did not release its count).
    pub n: Option<u64>,
    /// Messages (results) the site sent.
    pub messages_sent: u64,
    /// Bytes the site sent.
    pub bytes_sent: u64,
    /// Cells the site merged or withheld because they were below its `min_count`.
    pub suppressed_cells: u64,
    /// Anything else (e.g. "sat out the pooled metrics: too few responders").
    pub note: Option<String>,
}

/// Everything the statistician's report shows.
///
/// Survival lives in [`StudyReport::survival`], not in `metrics.survival` (the `stats` type
/// cannot say why a log-rank test is missing); when `survival` is entirely omitted and
/// `metrics.survival` holds results, those are shown (see [`StudyReport::survival_parts`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyReport {
    /// [`STUDY_REPORT_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Study settings.
    pub settings: StudySettings,
    /// The cohort table (Table 1).
    pub table1: Part<Table1Output>,
    /// LASSO feature selection.
    pub lasso: Part<LassoReport>,
    /// Classification metrics: `models[0]` is the ML model, `models[1]` the clinical comparator
    /// (the `stats::report::Report` order), and their paired comparison.
    pub metrics: Part<Report>,
    /// Survival analyses.
    pub survival: SurvivalPart,
    /// Per-site contributions.
    pub sites: Part<Vec<SiteContribution>>,
    /// Free-text notes shown at the end (approximations, deviations from the protocol, …).
    pub notes: Vec<String>,
}

impl StudyReport {
    /// An empty report for a study: every part omitted.
    pub fn new(settings: StudySettings) -> StudyReport {
        StudyReport {
            schema_version: STUDY_REPORT_SCHEMA_VERSION,
            settings,
            table1: Part::Omitted,
            lasso: Part::Omitted,
            metrics: Part::Omitted,
            survival: SurvivalPart::default(),
            sites: Part::Omitted,
            notes: Vec::new(),
        }
    }

    /// The report's heading: the title, or the study id when there is none.
    pub fn title(&self) -> &str {
        if self.settings.title.trim().is_empty() {
            &self.settings.study_id
        } else {
            &self.settings.title
        }
    }

    /// The survival analyses to show: [`StudyReport::survival`], or, when both of its parts are
    /// omitted, the first two entries of `metrics.survival` (taken as predicted, then observed).
    pub fn survival_parts(&self) -> SurvivalPart {
        let omitted = matches!(self.survival.predicted, Part::Omitted)
            && matches!(self.survival.observed, Part::Omitted);
        match (omitted, self.metrics.get()) {
            (true, Some(r)) if !r.survival.is_empty() => {
                let mut it = r.survival.iter().cloned().map(SurvivalAnalysis::from);
                SurvivalPart {
                    predicted: it.next().map_or(Part::Omitted, Part::Available),
                    observed: it.next().map_or(Part::Omitted, Part::Available),
                }
            }
            _ => self.survival.clone(),
        }
    }
}
