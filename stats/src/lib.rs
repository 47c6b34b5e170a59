//! Pure statistics for fedrad's federated Table 1 (baseline characteristics by response group).
//!
//! Everything here is deterministic `f64` math with no IO, so the site half (what a hospital
//! computes and releases) and the aggregator half (how releases are combined) can be tested
//! against a pooled, centralised reference.
//!
//! Modules:
//! - [`moments`]: count / mean / sum of squared deviations, with an exact parallel merge (Chan et
//!   al.) so sites can send three numbers per group instead of rows.
//! - [`hypothesis`]: Student and Welch t-tests from moments, Pearson chi-square independence,
//!   Mann-Whitney (Wilcoxon rank-sum) from tie-group counts. Conventions follow R (`t.test`,
//!   `chisq.test(correct = FALSE)`, `wilcox.test(exact = FALSE, correct = TRUE)`) and agree with
//!   scipy's equivalents; the golden files in `tests/golden/` hold scipy's numbers.
//! - [`quantile`]: R type-7 (= numpy `linear`) quantiles, exact on sorted values and estimated
//!   with an error bound from counted intervals.
//! - [`tree`]: the disclosure-safe laminar binary-tree histogram that lets the aggregator compute
//!   medians, quartiles and Mann-Whitney without any site releasing a count below its
//!   `min_count`.
//! - [`metrics`]: federated classification metrics (ROC/AUC/DeLong, Youden, confusion metrics,
//!   Brier, calibration, decision curves, bootstrap CIs, paired DeLong) from site count tables,
//!   with an exact per-patient reference.
//! - [`survival`]: federated Kaplan-Meier, log-rank and Cox (pooled from count tables and
//!   site-stratified by distributed Newton), with per-patient references.
//! - [`report`]: the serialisable report data model for the statistician.
//!
//! Floating point: the caller should sum or merge site contributions in `SiteId` order so that
//! results repeat bit for bit; integer counts are summed exactly in `u64`/`u128`.

pub mod error;
pub mod hypothesis;
pub mod metrics;
pub mod moments;
pub mod quantile;
pub mod report;
pub mod survival;
pub mod tree;

pub use error::StatsError;
pub use hypothesis::{
    MannWhitney, TestResult, chi_square_independence, mann_whitney_from_tied_cells,
    mann_whitney_normal, mann_whitney_pooled, student_t_test, welch_t_test,
};
pub use moments::Moments;
pub use quantile::{
    QuantileEstimate, ValueCell, quantile_type7, quantile_type7_from_cells, type7_order_statistics,
};
pub use tree::{
    CommonCell, HistogramState, Mass, NodeId, QuantileBounds, RefineRequest, RefineTargets,
    TreeError, TreeMannWhitney, TreeRoot, cells_to_refine, common_cells, contains, node_interval,
    site_release,
};
