//! What can be wrong with a study's spec, its warm-start studies or its ledger.

use std::fmt;

use serde::Serialize;

/// One problem with a study's spec, at a field path in the manifest's style
/// (`spec.parameters[2].min: ...`). A shell that knows the file turns it into a
/// [`crate::manifest::Diagnostic`] with the same path and message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Issue {
    /// The field path, from `spec` (`spec.budget.parallelTrials`).
    pub path: String,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl Issue {
    /// An issue at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every way the tuning engine refuses its input.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TuningError {
    /// The spec breaks one or more rules; every problem found is listed.
    #[error("invalid study: {}", join(.issues))]
    InvalidSpec {
        /// The problems, in the order of the spec's fields.
        issues: Vec<Issue>,
    },
    /// A warm-start study searched a space this study cannot learn from.
    #[error("warm-start study {study:?} is incompatible: parameter {parameter:?} {reason}")]
    IncompatibleWarmStart {
        /// The earlier study.
        study: String,
        /// The parameter that differs.
        parameter: String,
        /// How it differs.
        reason: String,
    },
    /// The ledger does not describe trials `0..n` in order, or names a trial it lacks.
    #[error("trial ledger: {message}")]
    Ledger {
        /// What is inconsistent.
        message: String,
    },
}

impl TuningError {
    /// A short stable reason for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            TuningError::InvalidSpec { .. } => "InvalidStudy",
            TuningError::IncompatibleWarmStart { .. } => "IncompatibleWarmStart",
            TuningError::Ledger { .. } => "InconsistentLedger",
        }
    }

    pub(crate) fn ledger(message: impl Into<String>) -> Self {
        TuningError::Ledger {
            message: message.into(),
        }
    }
}

fn join(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(Issue::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
