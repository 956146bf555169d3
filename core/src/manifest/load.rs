//! Reading manifests from disk: files and directories, multi-document YAML streams, and the
//! checks across documents (duplicate names, PipelineRun values against their Pipeline).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::document::{self, Schemas};
use super::params::check_run_values;
use super::select::{find_pipeline, find_pipeline_named};
use super::yaml::{self, StreamDocument};
use super::{DOCUMENT_PATH, Diagnostic, Document, FILE_PATH, LoadedDocument, Source};

/// Loads and checks every document of `paths`. A path is a file or a directory, whose
/// `*.yaml` and `*.yml` files are read in name order (not recursively). Empty documents are
/// skipped. Returns the documents only when there is no problem at all; otherwise every
/// problem, across all files and documents.
pub fn load(paths: &[PathBuf]) -> Result<Vec<LoadedDocument>, Vec<Diagnostic>> {
    let schemas = Schemas::new();
    let mut out = Vec::new();
    let mut docs = Vec::new();
    for file in files(paths, &mut out) {
        let whole_file = Source {
            file: file.clone(),
            index: 0,
        };
        let text = match fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                out.push(Diagnostic::new(&whole_file, FILE_PATH, io_message(&e)));
                continue;
            }
        };
        let (docs_before, errors_before) = (docs.len(), out.len());
        read_stream(&file, &text, &schemas, &mut docs, &mut out);
        if docs.len() == docs_before && out.len() == errors_before {
            let message = "no documents: expected a Pipeline or a PipelineRun";
            out.push(Diagnostic::new(&whole_file, FILE_PATH, message));
        }
    }
    check_across(&docs, &mut out);
    if out.is_empty() { Ok(docs) } else { Err(out) }
}

/// The files to read, in order, without repeats.
fn files(paths: &[PathBuf], out: &mut Vec<Diagnostic>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for path in paths {
        let whole = Source {
            file: path.clone(),
            index: 0,
        };
        let metadata = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => {
                out.push(Diagnostic::new(&whole, FILE_PATH, io_message(&e)));
                continue;
            }
        };
        if !metadata.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                out.push(Diagnostic::new(&whole, FILE_PATH, io_message(&e)));
                continue;
            }
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| is_yaml(p) && p.is_file())
            .collect();
        found.sort();
        if found.is_empty() {
            out.push(Diagnostic::new(
                &whole,
                FILE_PATH,
                "no *.yaml or *.yml files in this directory",
            ));
        }
        files.extend(found);
    }
    let mut seen = std::collections::BTreeSet::new();
    files.retain(|f| seen.insert(f.clone()));
    files
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

/// The directory `path:` inputs of a file are relative to.
fn base_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn io_message(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::InvalidData => "not UTF-8 text".into(),
        _ => e.to_string(),
    }
}

/// Reads the documents of one YAML stream. A YAML syntax error ends the stream: the parser
/// cannot find where the next document starts.
fn read_stream(
    file: &Path,
    text: &str,
    schemas: &Schemas,
    docs: &mut Vec<LoadedDocument>,
    out: &mut Vec<Diagnostic>,
) {
    for (index, stream_document) in yaml::documents(text).into_iter().enumerate() {
        let source = Source {
            file: file.to_path_buf(),
            index,
        };
        match stream_document {
            StreamDocument::Malformed(e) => {
                let message = format!("malformed YAML: {e}");
                out.push(Diagnostic::new(&source, DOCUMENT_PATH, message));
            }
            StreamDocument::TooLarge => {
                let message = yaml::too_large_message();
                out.push(Diagnostic::new(&source, DOCUMENT_PATH, message));
            }
            StreamDocument::Value(Value::Null) => {}
            StreamDocument::Value(value) => {
                if let Some(document) = document::read(&source, value, schemas, out) {
                    docs.push(LoadedDocument {
                        source,
                        base_dir: base_dir(file),
                        document,
                    });
                }
            }
        }
    }
}

/// Duplicate names of one kind (in one namespace), and the values of each PipelineRun
/// against the Pipeline it references when that Pipeline was loaded too.
fn check_across(docs: &[LoadedDocument], out: &mut Vec<Diagnostic>) {
    let mut seen: BTreeMap<(&str, &str, &str), &Source> = BTreeMap::new();
    for doc in docs {
        let (namespace, name) = match &doc.document {
            Document::Pipeline(p) => (p.metadata.namespace.as_deref(), p.metadata.name.as_deref()),
            Document::PipelineRun(r) => {
                (r.metadata.namespace.as_deref(), r.metadata.name.as_deref())
            }
            Document::TrainingJob(j) => {
                (j.metadata.namespace.as_deref(), j.metadata.name.as_deref())
            }
            Document::TuningStudy(s) => {
                (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
            }
            Document::Endpoint(e) => (e.metadata.namespace.as_deref(), e.metadata.name.as_deref()),
        };
        let Some(name) = name else { continue };
        let key = (doc.document.kind(), namespace.unwrap_or_default(), name);
        match seen.get(&key) {
            Some(first) => out.push(Diagnostic::new(
                &doc.source,
                "metadata.name",
                format!(
                    "duplicate {} {name:?} (also in {first})",
                    doc.document.kind()
                ),
            )),
            None => {
                seen.insert(key, &doc.source);
            }
        }
    }
    for doc in docs {
        let Document::PipelineRun(run) = &doc.document else {
            continue;
        };
        if run.spec.pipeline_spec.is_some() {
            continue;
        }
        if let Some((_, pipeline)) = find_pipeline(docs, run) {
            out.extend(check_run_values(
                &pipeline.spec,
                &run.spec.params,
                &doc.source,
                "spec.params",
            ));
        }
    }
    // A study's trials against the Pipeline they run, when it was loaded too.
    for doc in docs {
        let Document::TuningStudy(study) = &doc.document else {
            continue;
        };
        let Some(reference) = &study.spec.trial.pipeline_ref else {
            continue;
        };
        let namespace = study.metadata.namespace.as_deref();
        if let Some((_, pipeline)) = find_pipeline_named(docs, &reference.name, namespace) {
            out.extend(super::study::check_study_pipeline(
                &study.spec,
                &pipeline.spec,
                &doc.source,
            ));
        }
    }
}
