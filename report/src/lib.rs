//! The statistician's report of a fedrad study (issue #6, part 4): `metrics.json`, a CSV of every
//! curve, every figure as SVG and PNG, and one self-contained `report.html` that opens offline.
//!
//! The input is a [`StudyReport`], a plain serialisable struct assembled by whoever ran the
//! study (the aggregator's `report` command, `simulate study`) from results the other crates
//! computed: `federation::table1::Table1Output`, `models::lasso::LassoResult`,
//! `stats::report::Report` (classification metrics and the paired DeLong test) and survival
//! analyses. This crate computes no statistic; it lays results out, and where a part is missing
//! it shows the reason ([`Part::Unavailable`]) instead of a number.
//!
//! ```no_run
//! use report::{Part, StudyReport, StudySettings, write_report};
//! let mut r = StudyReport::new(StudySettings {
//!     study_id: "demo".into(),
//!     ..Default::default()
//! });
//! r.survival.predicted = Part::Unavailable {
//!     reason: "log-rank test needs at least 1 events".into(),
//! };
//! let written = write_report(&r, std::path::Path::new("out/report")).unwrap();
//! println!("{} files", written.files.len());
//! ```
//!
//! Modules: [`model`] (the input types), [`write`] (files and atomicity), `tables` (CSVs),
//! `figures` (one module per figure family, plotters with an embedded DejaVu Sans), `html`
//! (the page).

pub mod error;
mod figures;
mod html;
pub mod model;
mod tables;
pub mod write;

pub use error::ReportError;
pub use html::SECTIONS;
pub use model::{
    LassoReport, NamedSeed, Part, STUDY_REPORT_SCHEMA_VERSION, Setting, SiteContribution,
    StudyReport, StudySettings, SurvivalAnalysis, SurvivalPart,
};
pub use write::{FIGURE_STEMS, NotRendered, Written, write_report};
