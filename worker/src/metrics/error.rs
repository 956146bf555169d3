//! The one error type of the metrics: input that cannot be evaluated, and writing the report.

use std::path::PathBuf;

/// What is wrong with the predictions, and where (record index, class, column). Each variant has
/// a stable [`MetricsError::reason`] and an exit code: 2 for input the user can fix, 1 for the
/// machine failing us.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("no records to evaluate")]
    Empty,
    #[error("{classes} class name(s) given: a classification needs at least two classes")]
    TooFewClasses { classes: usize },
    #[error(
        "the score matrix has {actual} values, expected {records} records x {classes} classes = \
         {expected}"
    )]
    ScoreShape {
        records: usize,
        classes: usize,
        expected: usize,
        actual: usize,
    },
    #[error("record {record}: label {label} is not a class index (there are {classes} classes)")]
    LabelOutOfRange {
        record: usize,
        label: usize,
        classes: usize,
    },
    #[error(
        "record {record}: the score of class {class} ({name:?}) is {value}, not a finite number"
    )]
    NonFiniteScore {
        record: usize,
        class: usize,
        name: String,
        value: f64,
    },
    #[error("slice column {column:?} has {actual} values, expected one per record ({records})")]
    SliceLength {
        column: String,
        records: usize,
        actual: usize,
    },
    #[error("top-k accuracy: k must be at least 1, got {k}")]
    InvalidTopK { k: usize },
    #[error("drawing the confusion matrix: {message}")]
    Plot { message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serializing the report for {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl MetricsError {
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> MetricsError {
        let path = path.into();
        move |source| MetricsError::Io { path, source }
    }

    /// A short stable string for events, metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            MetricsError::Empty => "EmptyPredictions",
            MetricsError::TooFewClasses { .. } => "TooFewClasses",
            MetricsError::ScoreShape { .. } => "ScoreShape",
            MetricsError::LabelOutOfRange { .. } => "LabelOutOfRange",
            MetricsError::NonFiniteScore { .. } => "NonFiniteScore",
            MetricsError::SliceLength { .. } => "SliceLength",
            MetricsError::InvalidTopK { .. } => "InvalidTopK",
            MetricsError::Plot { .. } => "PlotError",
            MetricsError::Io { .. } => "IoError",
            MetricsError::Json { .. } => "JsonError",
        }
    }

    /// [`crate::EXIT_INVALID`] when the input is at fault, [`crate::EXIT_FAILURE`] when drawing
    /// or writing failed.
    pub fn exit_code(&self) -> u8 {
        match self {
            MetricsError::Plot { .. } | MetricsError::Io { .. } | MetricsError::Json { .. } => {
                crate::EXIT_FAILURE
            }
            _ => crate::EXIT_INVALID,
        }
    }
}
