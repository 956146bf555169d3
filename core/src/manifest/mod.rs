//! Manifests: loading, checking and selecting the YAML documents users write.
//!
//! Data flows in stages, each of which reports every problem it finds rather than the first:
//!
//! 1. [`load`] reads files and directories and splits multi-document YAML streams
//!    (malformed YAML is reported with its line and column);
//! 2. each document's `apiVersion` and `kind` are checked, then its raw value is walked
//!    against the CRD's structural schema (`schema_check`): unknown fields, wrong types,
//!    missing required fields and bad enum values;
//! 3. documents that pass are deserialized into the typed [`crate::api`] structs, and their
//!    pipeline specs are checked semantically ([`validate_spec`]): names, placeholders,
//!    the step graph, durations, quantities, cron, parameter types and `when` conditions;
//! 4. across documents: duplicate names, and PipelineRun parameter values against the
//!    Pipeline they run.
//!
//! [`select`] then picks what `toucan run` executes and [`resolve_params`] turns the values a
//! run gives into the final, typed parameter map. Everything here is pure: files are read,
//! nothing is written. Every problem is a [`Diagnostic`] naming the file, the document and
//! the field path.

mod document;
mod endpoint;
mod load;
mod monitoring;
mod names;
mod params;
mod quantity;
mod references;
mod schema_check;
mod select;
mod study;
mod validate;
mod yaml;

#[cfg(test)]
mod bad_input_tests;
#[cfg(test)]
mod endpoint_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::api::{Endpoint, Pipeline, PipelineRun, TrainingJob, TuningStudy};

pub use document::{JOB_STEP, check_job};
pub use endpoint::check_endpoint;
pub use load::load;
pub use params::{resolve_params, resolve_run_params};
pub use quantity::parse_quantity;
pub use select::{RunTarget, StudyTarget, check_pipeline_refs, select, select_study};
pub use study::{
    TRIAL_PARAMS_ENV, TrialRun, check_study, check_study_pipeline, instantiate, objective_of,
    objective_series, objective_source, parse_objective, trial_run,
};
pub use validate::validate_spec;
pub use yaml::MAX_NODES;

/// Where a document came from: the file as the user named it and the document's position in
/// its YAML stream (0-based, counting empty documents).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Source {
    /// The file, as the user named it (or as found in a directory the user named).
    pub file: PathBuf,
    /// The document's position in the file's YAML stream.
    pub index: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.file.display(), self.index)
    }
}

/// One problem with the input, displayed as `file[index] path: message`, e.g.
/// `pipeline.yaml[0] spec.steps[2].inputs.artifacts[0].from: unknown step "trian"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The document the problem is in.
    pub source: Source,
    /// The field path (`spec.steps[2].timeout`), `(document)` for the document as a whole,
    /// or `(file)` for the file as a whole.
    pub path: String,
    /// What is wrong, and where possible how to fix it.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic at `path` of the document at `source`.
    pub fn new(source: &Source, path: impl Into<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            source: source.clone(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.source, self.path, self.message)
    }
}

impl std::error::Error for Diagnostic {}

/// The path of diagnostics about a whole document.
pub const DOCUMENT_PATH: &str = "(document)";
/// The path of diagnostics about a whole file.
pub const FILE_PATH: &str = "(file)";

/// A document that passed every check.
#[derive(Clone, Debug)]
pub struct LoadedDocument {
    /// Where it was read from.
    pub source: Source,
    /// The directory of the file it came from; `path:` inputs are relative to it.
    pub base_dir: PathBuf,
    /// The typed resource.
    pub document: Document,
}

/// A toucan resource read from a manifest.
#[derive(Clone, Debug)]
pub enum Document {
    /// A `kind: Pipeline` document.
    Pipeline(Pipeline),
    /// A `kind: PipelineRun` document.
    PipelineRun(PipelineRun),
    /// A `kind: TrainingJob` document.
    TrainingJob(Box<TrainingJob>),
    /// A `kind: TuningStudy` document.
    TuningStudy(Box<TuningStudy>),
    /// A `kind: Endpoint` document.
    Endpoint(Box<Endpoint>),
}

impl Document {
    /// The resource kind as written in manifests.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Pipeline(_) => "Pipeline",
            Document::PipelineRun(_) => "PipelineRun",
            Document::TrainingJob(_) => "TrainingJob",
            Document::TuningStudy(_) => "TuningStudy",
            Document::Endpoint(_) => "Endpoint",
        }
    }

    /// `metadata.name`, if set.
    pub fn name(&self) -> Option<&str> {
        match self {
            Document::Pipeline(p) => p.metadata.name.as_deref(),
            Document::PipelineRun(r) => r.metadata.name.as_deref(),
            Document::TrainingJob(j) => j.metadata.name.as_deref(),
            Document::TuningStudy(s) => s.metadata.name.as_deref(),
            Document::Endpoint(e) => e.metadata.name.as_deref(),
        }
    }
}
