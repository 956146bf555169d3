//! The one error type of datasets: reading sources, writing and reading the toucan format.

use std::path::PathBuf;

use crate::{EXIT_FAILURE, EXIT_INVALID};

/// What went wrong, with the file it concerns. Each variant has a stable [`DatasetError::reason`]
/// and an exit code: [`EXIT_INVALID`] for input the user can fix, [`EXIT_FAILURE`] for the
/// machine failing us.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    InvalidFile { path: PathBuf, message: String },
    #[error("{dir}: {message}")]
    InvalidSource { dir: PathBuf, message: String },
    #[error("output {path} already exists and is not empty; remove it or choose another --out")]
    OutputExists { path: PathBuf },
    #[error("{0}")]
    InvalidArgument(String),
}

impl DatasetError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DatasetError {
        let path = path.into();
        move |source| DatasetError::Io { path, source }
    }

    pub fn invalid_file(path: impl Into<PathBuf>, message: impl Into<String>) -> DatasetError {
        DatasetError::InvalidFile {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A short stable string for events, metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DatasetError::Io { .. } => "IoError",
            DatasetError::InvalidFile { .. } => "InvalidFile",
            DatasetError::InvalidSource { .. } => "InvalidSource",
            DatasetError::OutputExists { .. } => "OutputExists",
            DatasetError::InvalidArgument(_) => "InvalidArgument",
        }
    }

    /// [`EXIT_INVALID`] when the input is at fault, [`EXIT_FAILURE`] when reading or writing
    /// failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            DatasetError::Io { .. } => EXIT_FAILURE,
            _ => EXIT_INVALID,
        }
    }
}
