//! From a PipelineRun to a [`RunPlan`]: dereference the Pipeline, validate, resolve the
//! parameters. The checks are the local runtime's (`toucan run` and `toucan validate`), so a
//! run rejected here would be rejected locally, with the same field paths.

use std::path::PathBuf;

use toucan_core::api::{PipelineRun, PipelineSpec};
use toucan_core::engine::RunPlan;
use toucan_core::manifest::{Diagnostic, Source, resolve_run_params, validate_spec};

/// Why a run cannot start; each becomes the run's failure message.
#[derive(Debug, PartialEq)]
pub enum Invalid {
    /// The referenced Pipeline does not exist (yet): wait for it.
    MissingPipeline(String),
    /// The spec is wrong: the run fails.
    Diagnostics(Vec<Diagnostic>),
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::MissingPipeline(name) => write!(f, "Pipeline {name:?} not found"),
            Invalid::Diagnostics(d) => {
                let text: Vec<String> = d
                    .iter()
                    .map(|d| format!("{}: {}", d.path, d.message))
                    .collect();
                f.write_str(&text.join("; "))
            }
        }
    }
}

/// Where a run's diagnostics point: `pipelineruns/NAMESPACE/NAME`.
pub fn source_of(namespace: &str, name: &str) -> Source {
    Source {
        file: PathBuf::from(format!("pipelineruns/{namespace}/{name}")),
        index: 0,
    }
}

/// The plan of `run`, whose pipeline is `pipeline` (the referenced Pipeline's spec, or None
/// when `pipelineRef` names one that does not exist).
pub fn plan(
    run: &PipelineRun,
    namespace: &str,
    name: &str,
    referenced: Option<(&str, &PipelineSpec)>,
) -> Result<RunPlan, Invalid> {
    let source = source_of(namespace, name);
    let (pipeline_name, spec, prefix) = match (&run.spec.pipeline_ref, &run.spec.pipeline_spec) {
        (Some(r), None) => match referenced {
            Some((n, spec)) => (n.to_string(), spec.clone(), "pipeline.spec"),
            None => return Err(Invalid::MissingPipeline(r.name.clone())),
        },
        (None, Some(spec)) => (name.to_string(), spec.clone(), "spec.pipelineSpec"),
        _ => {
            return Err(Invalid::Diagnostics(vec![Diagnostic::new(
                &source,
                "spec",
                "exactly one of pipelineRef and pipelineSpec is needed",
            )]));
        }
    };
    let mut problems = validate_spec(&spec, &source, prefix);
    let params = match resolve_run_params(&spec, &run.spec.params, &source) {
        Ok(p) => Some(p),
        Err(e) => {
            problems.extend(e);
            None
        }
    };
    match params {
        Some(params) if problems.is_empty() => Ok(RunPlan::new(
            &format!("{namespace}/{pipeline_name}"),
            spec,
            params,
        )),
        _ => Err(Invalid::Diagnostics(problems)),
    }
}
