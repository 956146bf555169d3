//! What `toucan run` executes from a set of loaded documents.

use std::path::PathBuf;

use serde_json::Value;

use super::{DOCUMENT_PATH, Diagnostic, Document, JOB_STEP, LoadedDocument, Source};
use crate::api::{Pipeline, PipelineRun, PipelineSpec, TuningStudy, TuningStudySpec};
use crate::echo::quote;
use crate::suggest;

/// A pipeline to run, with the values its PipelineRun gives (if any).
#[derive(Clone, Debug, PartialEq)]
pub struct RunTarget {
    /// The Pipeline's name, or the PipelineRun's for an inline `pipelineSpec`.
    pub pipeline_name: String,
    /// The pipeline to run.
    pub spec: PipelineSpec,
    /// The PipelineRun's `spec.params`, in order; empty for a bare Pipeline.
    pub params: Vec<(String, Value)>,
    /// The directory `path:` inputs of `spec` are relative to.
    pub base_dir: PathBuf,
    /// The document that asked for the run: the PipelineRun, or the Pipeline itself.
    pub source: Source,
}

/// A study to run, with the Pipeline its trials reference (if they do).
#[derive(Clone, Debug, PartialEq)]
pub struct StudyTarget {
    /// `metadata.name`.
    pub name: String,
    pub spec: TuningStudySpec,
    /// The Pipeline `spec.trial.pipelineRef` names, with its name.
    pub pipeline: Option<(String, PipelineSpec)>,
    /// The directory `path:` inputs of the trials' pipeline are relative to.
    pub base_dir: PathBuf,
    pub source: Source,
}

/// The one TuningStudy of the documents, when there is one, with the Pipeline its trials
/// reference from the same set. Several studies, or a reference to a Pipeline not in the
/// set, are diagnostics.
pub fn select_study(docs: &[LoadedDocument]) -> Option<Result<StudyTarget, Vec<Diagnostic>>> {
    let studies: Vec<(&LoadedDocument, &TuningStudy)> = docs
        .iter()
        .filter_map(|d| match &d.document {
            Document::TuningStudy(s) => Some((d, s.as_ref())),
            _ => None,
        })
        .collect();
    let (doc, study) = match studies.as_slice() {
        [] => return None,
        [one] => *one,
        [_, rest @ ..] => {
            return Some(Err(rest
                .iter()
                .map(|(d, _)| {
                    Diagnostic::new(
                        &d.source,
                        DOCUMENT_PATH,
                        "a second TuningStudy: run one study at a time",
                    )
                })
                .collect()));
        }
    };
    let name = study.metadata.name.clone().unwrap_or_default();
    let mut pipeline = None;
    let mut base_dir = doc.base_dir.clone();
    if let Some(reference) = &study.spec.trial.pipeline_ref {
        let namespace = study.metadata.namespace.as_deref();
        match find_pipeline_named(docs, &reference.name, namespace) {
            Some((pdoc, p)) => {
                pipeline = Some((reference.name.clone(), p.spec.clone()));
                base_dir = pdoc.base_dir.clone();
            }
            None => {
                let known = pipelines(docs).filter_map(|(_, p)| p.metadata.name.as_deref());
                let hint = suggest::did_you_mean_clause(&reference.name, known);
                return Some(Err(vec![Diagnostic::new(
                    &doc.source,
                    "spec.trial.pipelineRef.name",
                    format!(
                        "no Pipeline {} in the files given{hint}",
                        quote(&reference.name)
                    ),
                )]));
            }
        }
    }
    Some(Ok(StudyTarget {
        name,
        spec: study.spec.clone(),
        pipeline,
        base_dir,
        source: doc.source.clone(),
    }))
}

/// Picks what to run: the one PipelineRun (with its Pipeline from the same set, or its
/// inline spec), or else the one Pipeline. Several candidates, none, or a PipelineRun whose
/// Pipeline is not in the set are diagnostics; an Endpoint alone is one too (it is served, not run).
pub fn select(docs: &[LoadedDocument]) -> Result<RunTarget, Vec<Diagnostic>> {
    if let Some(study) = docs
        .iter()
        .find(|d| matches!(d.document, Document::TuningStudy(_)))
    {
        return Err(vec![Diagnostic::new(
            &study.source,
            DOCUMENT_PATH,
            "a TuningStudy: `toucan run` runs it here; in a cluster, apply it (and the Pipeline its trials run) with kubectl",
        )]);
    }
    let runs: Vec<(&LoadedDocument, &PipelineRun)> = docs
        .iter()
        .filter_map(|d| match &d.document {
            Document::PipelineRun(r) => Some((d, r)),
            _ => None,
        })
        .collect();
    // Without a PipelineRun: the one Pipeline or TrainingJob.
    let templates: Vec<RunTarget> = docs.iter().filter_map(template).collect();
    match (runs.as_slice(), templates.as_slice()) {
        ([(doc, run)], _) => from_run(docs, doc, run),
        ([], [only]) => Ok(only.clone()),
        ([], []) => {
            if let Some(endpoint) = docs
                .iter()
                .find(|d| matches!(d.document, Document::Endpoint(_)))
            {
                return Err(vec![Diagnostic::new(
                    &endpoint.source,
                    DOCUMENT_PATH,
                    "an Endpoint is served, not run as a pipeline: use `toucan serve FILE`",
                )]);
            }
            let source = Source {
                file: PathBuf::new(),
                index: 0,
            };
            Err(vec![Diagnostic::new(
                &source,
                DOCUMENT_PATH,
                "nothing to run: no Pipeline, PipelineRun or TrainingJob",
            )])
        }
        ([], [first, rest @ ..]) => {
            let jobs = docs
                .iter()
                .filter(|d| matches!(d.document, Document::TrainingJob(_)))
                .count();
            let what = match jobs {
                0 => "Pipelines",
                n if n == templates.len() => "TrainingJobs",
                _ => "Pipelines and TrainingJobs",
            };
            Err(vec![ambiguous(
                &first.source,
                rest.iter().map(|r| &r.source),
                what,
            )])
        }
        ([(first, _), rest @ ..], _) => Err(vec![ambiguous(
            &first.source,
            rest.iter().map(|r| &r.0.source),
            "PipelineRuns",
        )]),
    }
}

/// A Pipeline as itself, a TrainingJob as a pipeline of one distributed step.
fn template(doc: &LoadedDocument) -> Option<RunTarget> {
    let (name, spec) = match &doc.document {
        Document::Pipeline(p) => (p.metadata.name.clone(), p.spec.clone()),
        Document::TrainingJob(j) => (
            j.metadata.name.clone(),
            PipelineSpec {
                steps: vec![j.spec.step(JOB_STEP)],
                ..PipelineSpec::default()
            },
        ),
        Document::PipelineRun(_) | Document::TuningStudy(_) | Document::Endpoint(_) => return None,
    };
    Some(RunTarget {
        pipeline_name: name.unwrap_or_default(),
        spec,
        params: Vec::new(),
        base_dir: doc.base_dir.clone(),
        source: doc.source.clone(),
    })
}

fn ambiguous<'a>(first: &Source, rest: impl Iterator<Item = &'a Source>, what: &str) -> Diagnostic {
    let others: Vec<String> = rest.map(|s| s.to_string()).collect();
    let message = format!(
        "{} {what} to choose from (also {}); run a single file, or a PipelineRun naming the \
         Pipeline to run",
        others.len() + 1,
        others.join(", ")
    );
    Diagnostic::new(first, DOCUMENT_PATH, message)
}

fn from_run(
    docs: &[LoadedDocument],
    doc: &LoadedDocument,
    run: &PipelineRun,
) -> Result<RunTarget, Vec<Diagnostic>> {
    let params = run
        .spec
        .params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    if let Some(spec) = &run.spec.pipeline_spec {
        let name = run.metadata.name.clone().or_else(|| {
            run.metadata
                .generate_name
                .as_ref()
                .map(|g| g.trim_end_matches('-').to_string())
        });
        return Ok(RunTarget {
            pipeline_name: name.unwrap_or_default(),
            spec: spec.clone(),
            params,
            base_dir: doc.base_dir.clone(),
            source: doc.source.clone(),
        });
    }
    let Some(reference) = &run.spec.pipeline_ref else {
        let message = "set one of pipelineRef or pipelineSpec";
        return Err(vec![Diagnostic::new(&doc.source, "spec", message)]);
    };
    match find_pipeline(docs, run) {
        Some((pipeline_doc, pipeline)) => Ok(RunTarget {
            pipeline_name: reference.name.clone(),
            spec: pipeline.spec.clone(),
            params,
            base_dir: pipeline_doc.base_dir.clone(),
            source: doc.source.clone(),
        }),
        None => Err(vec![unknown_pipeline(docs, doc, &reference.name)]),
    }
}

/// Every PipelineRun among `docs` whose `pipelineRef` names no Pipeline among them. `toucan
/// run` refuses such a run when it selects it; `toucan validate` reports every one.
pub fn check_pipeline_refs(docs: &[LoadedDocument]) -> Vec<Diagnostic> {
    docs.iter()
        .filter_map(|doc| match &doc.document {
            Document::PipelineRun(run) => {
                let reference = run.spec.pipeline_ref.as_ref()?;
                match find_pipeline(docs, run) {
                    Some(_) => None,
                    None => Some(unknown_pipeline(docs, doc, &reference.name)),
                }
            }
            _ => None,
        })
        .collect()
}

/// The diagnostic for a `pipelineRef` naming no Pipeline among `docs`.
fn unknown_pipeline(docs: &[LoadedDocument], doc: &LoadedDocument, name: &str) -> Diagnostic {
    let names: Vec<&str> = pipelines(docs)
        .filter_map(|(_, p)| p.metadata.name.as_deref())
        .collect();
    let hint = match suggest::closest(name, names.iter().copied()) {
        Some(close) => format!(" (did you mean {close:?}?)"),
        None => " (give its file too, e.g. the directory holding both)".to_string(),
    };
    let message = format!("no Pipeline {} in the loaded files{hint}", quote(name));
    Diagnostic::new(&doc.source, "spec.pipelineRef.name", message)
}

fn pipelines(docs: &[LoadedDocument]) -> impl Iterator<Item = (&LoadedDocument, &Pipeline)> {
    docs.iter().filter_map(|d| match &d.document {
        Document::Pipeline(p) => Some((d, p)),
        _ => None,
    })
}

/// The Pipeline a PipelineRun's `pipelineRef` names, among `docs`: same name, and the same
/// namespace where both say one.
pub(super) fn find_pipeline<'a>(
    docs: &'a [LoadedDocument],
    run: &PipelineRun,
) -> Option<(&'a LoadedDocument, &'a Pipeline)> {
    let name = &run.spec.pipeline_ref.as_ref()?.name;
    find_pipeline_named(docs, name, run.metadata.namespace.as_deref())
}

/// The Pipeline `name` among `docs`, in `namespace` when both say one.
pub(super) fn find_pipeline_named<'a>(
    docs: &'a [LoadedDocument],
    name: &str,
    namespace: Option<&str>,
) -> Option<(&'a LoadedDocument, &'a Pipeline)> {
    pipelines(docs).find(|(_, p)| {
        p.metadata.name.as_deref() == Some(name)
            && match (namespace, p.metadata.namespace.as_deref()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}
