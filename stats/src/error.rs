//! Typed errors for the moment, hypothesis-test and quantile functions.

use thiserror::Error;

/// What went wrong in a statistic, and what the caller can do about it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StatsError {
    /// A group has fewer observations than the statistic needs.
    #[error(
        "{what} needs at least {needed} observation(s) in {group} but it has {got}; \
         report the statistic as not estimable for this variable"
    )]
    TooFewObservations {
        /// Which statistic asked.
        what: &'static str,
        /// Which group was short (e.g. "group a").
        group: &'static str,
        /// Minimum number needed.
        needed: u64,
        /// Number present.
        got: u64,
    },
    /// An input value is NaN or infinite.
    #[error(
        "{what} got a non-finite value ({value}); drop missing values before computing statistics"
    )]
    NonFinite {
        /// Which function received it.
        what: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The standard error is zero (or round-off small): R stops with "data are essentially
    /// constant" in this case.
    #[error(
        "{what}: data are essentially constant (standard error {stderr:e}); the test is undefined, \
         report the groups as identical instead"
    )]
    EssentiallyConstant {
        /// Which test.
        what: &'static str,
        /// The computed standard error.
        stderr: f64,
    },
    /// A contingency table cannot be tested.
    #[error("chi-square test: {reason}")]
    BadTable {
        /// Human-readable reason, including how to fix it.
        reason: String,
    },
    /// A probability is outside [0, 1].
    #[error("quantile probability {p} is outside [0, 1]")]
    BadProbability {
        /// The probability given.
        p: f64,
    },
    /// The slice handed to an order-statistic function is not sorted ascending.
    #[error(
        "values are not sorted ascending at index {index}; sort them (e.g. with f64::total_cmp) first"
    )]
    NotSorted {
        /// First index `i` with `x[i] < x[i-1]`.
        index: usize,
    },
    /// Value cells are malformed (overlapping, descending, or with `hi < lo`).
    #[error("value cell {index} is malformed: {reason}")]
    BadCell {
        /// Index of the offending cell.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A distribution from statrs could not be constructed (e.g. non-positive degrees of freedom).
    #[error("cannot build the {what} distribution: {reason}")]
    Distribution {
        /// Which distribution.
        what: &'static str,
        /// statrs' message.
        reason: String,
    },
}
