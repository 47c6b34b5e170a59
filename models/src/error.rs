//! Typed errors of the `models` crate: each says what is wrong and how to fix it.

use thiserror::Error;

/// Everything that can go wrong in standardisation, ComBat, LASSO and logistic regression.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ModelsError {
    /// Two inputs that must agree in size do not.
    #[error(
        "size mismatch in {what}: expected {expected}, got {got}; check that every site uses the same feature list and design"
    )]
    Dimension {
        /// Which input.
        what: String,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A value is NaN or infinite.
    #[error(
        "non-finite value in {what} (row {row}, column {col}); drop or impute missing values before this step"
    )]
    NonFinite {
        /// Which input.
        what: String,
        /// Row index (local to the caller's table).
        row: usize,
        /// Column index.
        col: usize,
    },
    /// A normal-equation / information matrix is not positive definite.
    #[error(
        "{context}: matrix not positive definite (pivot {pivot} = {value:e}); the design is rank-deficient (a covariate confounded with batch, an empty batch or level, or a constant column): drop or merge the offending columns"
    )]
    Singular {
        /// What was being solved.
        context: String,
        /// Pivot index that failed.
        pivot: usize,
        /// Its value.
        value: f64,
    },
    /// A ComBat batch has fewer rows than the chosen variant needs.
    #[error(
        "batch '{batch}' has {n} row(s); ComBat estimates a per-batch variance and needs at least 2 rows per batch (sva::ComBat silently switches to mean-only; here set mean_only = true explicitly, or merge the batch with another)"
    )]
    BatchTooSmall {
        /// Batch label.
        batch: String,
        /// Its row count.
        n: u64,
    },
    /// A batch label is not part of the design / model.
    #[error(
        "batch '{0}' is not in the ComBat design or model; add it to the design (training data) or harmonise it with a batch that was trained"
    )]
    UnknownBatch(String),
    /// A batch's rows are spread over several sites (or a site sent a partial batch).
    #[error(
        "batch '{batch}' has {global} rows in the design but {local} at this site; the EB step needs every row of a batch at one site (batch must be nested within site)"
    )]
    BatchSplit {
        /// Batch label.
        batch: String,
        /// Rows counted by the aggregator.
        global: u64,
        /// Rows present here.
        local: u64,
    },
    /// A categorical covariate takes a level the design does not know.
    #[error(
        "covariate '{covariate}' has level '{level}' that is not in the design; declare it in the study's level list"
    )]
    UnknownLevel {
        /// Covariate name.
        covariate: String,
        /// Offending level.
        level: String,
    },
    /// Malformed input or message.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// A site refused to release a cross-product matrix (too many parameters for its rows).
    #[error(
        "site #{site} refused fit {fit_id}: {params} parameters for {rows} rows exceeds {max_params_per_row} parameters per row (disclosure guard); drop the site from the study explicitly or reduce the number of features"
    )]
    DisclosureRefused {
        /// Index of the site in site order.
        site: usize,
        /// Fit that was refused.
        fit_id: u32,
        /// Parameters requested (features + intercept).
        params: usize,
        /// Rows with non-zero weight.
        rows: usize,
        /// The site's limit.
        max_params_per_row: f64,
    },
    /// An iterative method exceeded its iteration limit.
    #[error(
        "{what} did not converge within {iterations} iterations; the data may be (quasi-)separated or badly scaled"
    )]
    NotConverged {
        /// Which method.
        what: String,
        /// Iteration limit reached.
        iterations: usize,
    },
}

/// Result alias.
pub type Result<T> = std::result::Result<T, ModelsError>;
