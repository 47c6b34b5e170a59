//! Typed errors of the learners crate: each says what is wrong and how to fix it.

use thiserror::Error;

/// Everything that can go wrong in this crate. Refusals of a site that is too small to train are
/// *not* errors: they are [`crate::site::Refusal`] values, because a small site is a normal case.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LearnerError {
    #[error("{what}: got {rows} feature rows but {labels} labels; pass one label per row")]
    LengthMismatch {
        what: &'static str,
        rows: usize,
        labels: usize,
    },
    #[error(
        "{what}: the model was trained on {expected} features but the rows have {got}; score rows with the same feature columns, in the same order"
    )]
    FeatureCount {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error(
        "{what}: row {row}, column {col} is not finite ({value}); impute or drop it before training"
    )]
    NonFinite {
        what: &'static str,
        row: usize,
        col: usize,
        value: f64,
    },
    #[error(
        "{what}: needs at least one row of each class (got {positives} positive, {negatives} negative)"
    )]
    NeedBothClasses {
        what: &'static str,
        positives: usize,
        negatives: usize,
    },
    #[error("invalid parameter {name} = {value}: {why}")]
    Parameter {
        name: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("SVM fit failed: {0}")]
    Svm(String),
    #[error(
        "Platt scaling failed: {0}; the SVM decision values are probably degenerate (all equal)"
    )]
    Platt(String),
    #[error("fold assignment: {0}")]
    Folds(String),
    #[error(
        "no {kind} model is available for meta-features (no site trained or shared one); lower min_train_rows or allow share_models"
    )]
    NoModel { kind: &'static str },
    #[error("{what}: {detail}")]
    Protocol { what: &'static str, detail: String },
}

pub type Result<T> = std::result::Result<T, LearnerError>;

/// Checks that `x` has `y_len` rows and only finite values.
pub(crate) fn check_xy(
    what: &'static str,
    x: ndarray::ArrayView2<f64>,
    y_len: usize,
) -> Result<()> {
    if x.nrows() != y_len {
        return Err(LearnerError::LengthMismatch {
            what,
            rows: x.nrows(),
            labels: y_len,
        });
    }
    check_finite(what, x)
}

pub(crate) fn check_finite(what: &'static str, x: ndarray::ArrayView2<f64>) -> Result<()> {
    for ((row, col), &value) in x.indexed_iter() {
        if !value.is_finite() {
            return Err(LearnerError::NonFinite {
                what,
                row,
                col,
                value,
            });
        }
    }
    Ok(())
}

pub(crate) fn check_cols(what: &'static str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(LearnerError::FeatureCount {
            what,
            expected,
            got,
        });
    }
    Ok(())
}

pub(crate) fn param(name: &'static str, value: impl ToString, why: &'static str) -> LearnerError {
    LearnerError::Parameter {
        name,
        value: value.to_string(),
        why,
    }
}
