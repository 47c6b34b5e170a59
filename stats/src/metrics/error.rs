//! Typed errors for the classification metrics (count tables, ROC/DeLong, calibration, decision
//! curves, bootstrap) and for the survival module.

use thiserror::Error;

/// What went wrong while building a count table or computing a metric, and how to fix it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricsError {
    /// A predicted probability is NaN or outside [0, 1].
    #[error(
        "patient {index}: predicted probability {value} is not in [0, 1]; pass calibrated \
         probabilities (e.g. the averaged outer-fold predictions), not logits"
    )]
    BadProbability {
        /// Position of the offending patient in the input.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// Input slices that must have one entry per patient differ in length.
    #[error("{what}: {a_name} has {a} entries but {b_name} has {b}; pass one entry per patient")]
    LengthMismatch {
        /// Which function.
        what: &'static str,
        /// Name of the first slice.
        a_name: &'static str,
        /// Its length.
        a: usize,
        /// Name of the second slice.
        b_name: &'static str,
        /// Its length.
        b: usize,
    },
    /// A metric needs both classes (or some other minimum) and the data do not have it.
    #[error(
        "{what} needs at least {needed} {class} but the data have {got}; the metric is not \
         estimable on this table"
    )]
    TooFew {
        /// Which metric.
        what: &'static str,
        /// Which class or unit (e.g. "positives", "negatives", "events").
        class: &'static str,
        /// Minimum needed.
        needed: u64,
        /// Present.
        got: u64,
    },
    /// A site cannot release a table without a count below its `min_count`.
    #[error(
        "this site has {positives} positive(s) and {negatives} negative(s); with min_count = \
         {min_count} every released label count must be 0 or >= {min_count}, which is \
         impossible even with all patients merged into one cell; this site must sit out the \
         pooled metrics (or its policy must lower min_count)"
    )]
    SiteTooSmall {
        /// Positives at the site.
        positives: u64,
        /// Negatives at the site.
        negatives: u64,
        /// The site's min_count.
        min_count: u64,
    },
    /// Tables that must share a grid do not.
    #[error(
        "{what}: grids differ ({a} vs {b} bins); every site must bin on the study's shared grid"
    )]
    GridMismatch {
        /// Which operation.
        what: &'static str,
        /// First grid's size.
        a: u32,
        /// Second grid's size.
        b: u32,
    },
    /// A grid or option is invalid.
    #[error("invalid option {name} = {value}: {reason}")]
    BadOption {
        /// Option name.
        name: &'static str,
        /// Its value, formatted.
        value: String,
        /// What would be valid.
        reason: &'static str,
    },
    /// A released cell is malformed (aggregator-side validation of site messages).
    #[error("released cell {index} is malformed: {reason}")]
    BadCell {
        /// Index of the cell in the message.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A cell violates the min_count rule (aggregator-side check of a site message).
    #[error(
        "released cell {index} has a count of {count}, which is between 1 and min_count - 1 = \
         {max_bad}; the site's merge step is broken, refuse the message"
    )]
    DisclosureViolation {
        /// Cell index.
        index: usize,
        /// The offending count.
        count: u64,
        /// min_count − 1.
        max_bad: u64,
    },
    /// A survival time is negative or not finite.
    #[error(
        "patient {index}: survival time {value} is not a finite non-negative number; use the \
         time from treatment start to progression or last follow-up"
    )]
    BadTime {
        /// Position of the offending patient.
        index: usize,
        /// The value given.
        value: f64,
    },
    /// A patient's time lies beyond the shared time grid.
    #[error(
        "time {time} is beyond the last point {last} of the shared time grid; extend the study's \
         time grid so it covers the longest follow-up"
    )]
    BeyondGrid {
        /// The time.
        time: f64,
        /// The grid's last point.
        last: f64,
    },
    /// Exact event times were requested but a count would fall below min_count.
    #[error(
        "releasing exact times would release a count of {count} at time {time}, below min_count \
         = {min_count}; release on the study's shared time grid instead"
    )]
    ExactTimesDisclosive {
        /// The time.
        time: f64,
        /// The count.
        count: u64,
        /// The site's min_count.
        min_count: u64,
    },
    /// Newton's method did not converge.
    #[error(
        "Cox Newton iterations did not converge after {iterations} steps (last |step| = {step:e}); \
         the data may be separated (a group with no events) so the HR is infinite"
    )]
    NoConvergence {
        /// Iterations run.
        iterations: usize,
        /// Size of the last step.
        step: f64,
    },
    /// The information matrix is singular.
    #[error(
        "the Cox information matrix is singular; a covariate is constant or collinear, or a group \
         has no events"
    )]
    SingularInformation,
    /// A distribution from statrs could not be built.
    #[error("cannot build the {what} distribution: {reason}")]
    Distribution {
        /// Which distribution.
        what: &'static str,
        /// statrs' message.
        reason: String,
    },
}
