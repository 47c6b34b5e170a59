//! Typed errors of the generator and its file writer; each message says what is wrong and how to fix it.

use std::path::PathBuf;

/// What can go wrong while planning, rendering or writing a synthetic cohort.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid generator parameter {what}: {problem}")]
    InvalidParams { what: String, problem: String },
    #[error(
        "output folder {path} is not empty; choose a new folder or pass --force to overwrite the generated files"
    )]
    OutputNotEmpty { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write NIfTI file {path}: {message}")]
    Nifti { path: PathBuf, message: String },
    #[error(
        "cannot store geometry in NIfTI file {path}: {problem} (the generator only makes axis-aligned grids; this is a bug)"
    )]
    Geometry { path: PathBuf, problem: String },
    #[error("cannot write table {path}: {message}")]
    Table { path: PathBuf, message: String },
}

impl SynthError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
