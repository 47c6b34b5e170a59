//! Typed errors of the report writer: what went wrong and what to do about it.

use std::path::PathBuf;
use thiserror::Error;

/// Why a report could not be written. When `write_report` returns one of these, the output
/// directory holds no new file (see `write_report`).
#[derive(Debug, Error)]
pub enum ReportError {
    /// A file system operation failed.
    #[error(
        "cannot {action} {path}: {source}; check that the output directory's parent exists, is \
         writable and has free space"
    )]
    Io {
        /// What was being done ("create", "write", "rename", …).
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output path cannot hold a report.
    #[error("output directory {path}: {reason}")]
    OutDir {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        reason: String,
    },
    /// The input contradicts itself (a caller bug, not a statistical limitation).
    #[error("the study report is inconsistent: {0}; fix the code that assembles StudyReport")]
    Inconsistent(String),
    /// A figure could not be drawn.
    #[error("cannot draw figure {figure}: {message}")]
    Figure {
        /// Figure file stem (e.g. "roc").
        figure: &'static str,
        /// The plotting library's message.
        message: String,
    },
    /// The embedded font could not be registered (the bundled TTF is damaged).
    #[error(
        "the embedded DejaVu Sans font is not a valid TrueType file; restore \
         report/assets/DejaVuSans.ttf from Debian's fonts-dejavu-core"
    )]
    Font,
    /// PNG encoding failed.
    #[error("cannot encode figure {figure} as PNG: {message}")]
    Png {
        /// Figure file stem.
        figure: &'static str,
        /// The encoder's message.
        message: String,
    },
    /// JSON serialisation failed.
    #[error("cannot serialise metrics.json: {0}")]
    Json(#[from] serde_json::Error),
    /// CSV serialisation failed.
    #[error("cannot write {file}: {message}")]
    Csv {
        /// CSV file name.
        file: &'static str,
        /// The CSV writer's message.
        message: String,
    },
}
