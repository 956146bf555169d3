//! One YAML document: `apiVersion` and `kind`, `metadata`, the schema check, the typed
//! value and its semantic checks, in that order.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::names::check_object_name;
use super::params::{check_run_value_names, check_run_values};
use super::schema_check::{self, Finding, describe};
use super::{DOCUMENT_PATH, Diagnostic, Document, Source, validate_spec};
use crate::api::{
    API_VERSION, Endpoint, Pipeline, PipelineRun, PipelineSpec, TrainingJob, TrainingJobSpec,
    TuningStudy,
};
use crate::echo::{cut, quote};
use crate::suggest;

/// The kinds toucan reads.
const KINDS: &[&str] = &[
    "Pipeline",
    "PipelineRun",
    "TrainingJob",
    "TuningStudy",
    "Endpoint",
];
/// Top-level fields the API server handles itself; the CRD schema does not describe them.
const ENVELOPE: &[&str] = &["apiVersion", "kind", "metadata"];
/// The fields of `metadata` (Kubernetes `ObjectMeta`).
const METADATA_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "finalizers",
    "ownerReferences",
    "managedFields",
    "selfLink",
];

/// The structural schemas of the CRDs, computed once per load.
pub(super) struct Schemas {
    pipeline: JSONSchemaProps,
    pipeline_run: JSONSchemaProps,
    training_job: JSONSchemaProps,
    tuning_study: JSONSchemaProps,
    endpoint: JSONSchemaProps,
}

impl Schemas {
    pub(super) fn new() -> Self {
        let schema = |crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            crd.spec
                .versions
                .into_iter()
                .next()
                .and_then(|v| v.schema)
                .and_then(|s| s.open_api_v3_schema)
                .unwrap_or_default()
        };
        Schemas {
            pipeline: schema(Pipeline::crd()),
            pipeline_run: schema(PipelineRun::crd()),
            training_job: schema(TrainingJob::crd()),
            tuning_study: schema(TuningStudy::crd()),
            endpoint: schema(Endpoint::crd()),
        }
    }
}

/// Checks one non-empty document, appending every problem to `out`. Returns the typed
/// document when it deserialized, even if semantic checks failed, so that checks across
/// documents still see it.
pub(super) fn read(
    source: &Source,
    mut value: Value,
    schemas: &Schemas,
    out: &mut Vec<Diagnostic>,
) -> Option<Document> {
    let mut found = Vec::new();
    let mut durations = Vec::new();
    let document = check(&mut value, schemas, &mut found, &mut durations);
    let structurally_valid = found.is_empty();
    // An invalid duration is taken out of the document so that the rest is still checked;
    // a required one then reads as missing, which is the problem already reported.
    found.retain(|(path, message)| {
        message != "missing required field" || !durations.iter().any(|(taken, _)| taken == path)
    });
    out.extend(
        found
            .into_iter()
            .chain(durations)
            .map(|(path, message)| Diagnostic::new(source, path, message)),
    );
    let kind = document?;
    if !structurally_valid {
        return None;
    }
    let mut found = Vec::new();
    let document = match kind {
        Kind::Pipeline => typed(value, &mut found).map(Document::Pipeline),
        Kind::PipelineRun => typed(value, &mut found).map(Document::PipelineRun),
        Kind::TrainingJob => typed(value, &mut found).map(|j| Document::TrainingJob(Box::new(j))),
        Kind::TuningStudy => typed(value, &mut found).map(|s| Document::TuningStudy(Box::new(s))),
        Kind::Endpoint => typed(value, &mut found).map(|e| Document::Endpoint(Box::new(e))),
    };
    out.extend(
        found
            .into_iter()
            .map(|(path, message)| Diagnostic::new(source, path, message)),
    );
    match &document {
        Some(Document::Pipeline(p)) => out.extend(validate_spec(&p.spec, source, "spec")),
        Some(Document::PipelineRun(r)) => out.extend(check_run(r, source)),
        Some(Document::TrainingJob(j)) => out.extend(check_job(&j.spec, source)),
        Some(Document::TuningStudy(s)) => out.extend(super::study::check_study(&s.spec, source)),
        Some(Document::Endpoint(e)) => out.extend(super::check_endpoint(&e.spec, source)),
        None => {}
    }
    document
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pipeline,
    PipelineRun,
    TrainingJob,
    TuningStudy,
    Endpoint,
}

/// The structural checks; the kind when it is known. Invalid durations go to `durations` and
/// are removed from the value, so that the rest of the document is still checked.
fn check(
    value: &mut Value,
    schemas: &Schemas,
    found: &mut Vec<Finding>,
    durations: &mut Vec<Finding>,
) -> Option<Kind> {
    if let Err(e) = value.apply_merge() {
        found.push((
            DOCUMENT_PATH.into(),
            format!("malformed YAML merge key: {e}"),
        ));
        return None;
    }
    let Value::Mapping(mapping) = value else {
        let message = format!(
            "expected a mapping with apiVersion, kind, metadata and spec, got {}",
            describe(value)
        );
        found.push((DOCUMENT_PATH.into(), message));
        return None;
    };
    check_api_version(mapping, found);
    let kind = check_kind(mapping, found)?;
    check_metadata(mapping, kind, found);
    let schema = match kind {
        Kind::Pipeline => &schemas.pipeline,
        Kind::PipelineRun => &schemas.pipeline_run,
        Kind::TrainingJob => &schemas.training_job,
        Kind::TuningStudy => &schemas.tuning_study,
        Kind::Endpoint => &schemas.endpoint,
    };
    schema_check::take_invalid_durations(mapping, schema, "", durations);
    schema_check::check_document(mapping, schema, ENVELOPE, found);
    Some(kind)
}

fn check_api_version(mapping: &Mapping, found: &mut Vec<Finding>) {
    match mapping.get("apiVersion") {
        None => found.push(("apiVersion".into(), "missing required field".into())),
        Some(Value::String(v)) if v == API_VERSION => {}
        Some(Value::String(v)) => found.push((
            "apiVersion".into(),
            format!("unknown apiVersion {} (expected {API_VERSION:?})", quote(v)),
        )),
        Some(other) => found.push((
            "apiVersion".into(),
            format!(
                "expected the string {API_VERSION:?}, got {}",
                describe(other)
            ),
        )),
    }
}

fn check_kind(mapping: &Mapping, found: &mut Vec<Finding>) -> Option<Kind> {
    match mapping.get("kind") {
        None => found.push(("kind".into(), "missing required field".into())),
        Some(Value::String(k)) if k == "Pipeline" => return Some(Kind::Pipeline),
        Some(Value::String(k)) if k == "PipelineRun" => return Some(Kind::PipelineRun),
        Some(Value::String(k)) if k == "TrainingJob" => return Some(Kind::TrainingJob),
        Some(Value::String(k)) if k == "TuningStudy" => return Some(Kind::TuningStudy),
        Some(Value::String(k)) if k == "Endpoint" => return Some(Kind::Endpoint),
        Some(Value::String(k)) => {
            let hint = suggest::did_you_mean_clause(k, KINDS.iter().copied());
            let message = format!("unknown kind {} (expected {}{hint})", quote(k), kinds());
            found.push(("kind".into(), message));
        }
        Some(other) => found.push((
            "kind".into(),
            format!("expected {}, got {}", kinds(), describe(other)),
        )),
    }
    None
}

/// `Pipeline, PipelineRun, TrainingJob, TuningStudy or Endpoint`.
fn kinds() -> String {
    match KINDS.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

fn check_metadata(mapping: &Mapping, kind: Kind, found: &mut Vec<Finding>) {
    let meta = match mapping.get("metadata") {
        None => return found.push(("metadata".into(), "missing required field".into())),
        Some(Value::Mapping(m)) => m,
        Some(other) => {
            let message = format!("expected a mapping, got {}", describe(other));
            return found.push(("metadata".into(), message));
        }
    };
    for key in meta.keys() {
        match key.as_str() {
            Some(k) if METADATA_FIELDS.contains(&k) => {}
            Some(k) => {
                let hint = suggest::did_you_mean(k, METADATA_FIELDS.iter().copied());
                found.push((
                    format!("metadata.{}", cut(k)),
                    format!("unknown field{hint}"),
                ));
            }
            None => found.push((
                "metadata".into(),
                format!("keys must be strings, got {}", describe(key)),
            )),
        }
    }
    let string = |field: &str, found: &mut Vec<Finding>| -> Option<String> {
        match meta.get(field)? {
            Value::String(s) => Some(s.clone()),
            other => {
                let message = format!("expected a string, got {}", describe(other));
                found.push((format!("metadata.{field}"), message));
                None
            }
        }
    };
    match (string("name", found), meta.contains_key("name")) {
        (Some(name), _) => {
            if let Err(message) = check_object_name(&name) {
                found.push(("metadata.name".into(), message));
            }
        }
        (None, true) => {}
        (None, false) if kind == Kind::PipelineRun && meta.contains_key("generateName") => {}
        (None, false) if kind == Kind::PipelineRun => found.push((
            "metadata.name".into(),
            "missing required field (or set metadata.generateName)".into(),
        )),
        (None, false) => found.push(("metadata.name".into(), "missing required field".into())),
    }
    if let Some(prefix) = string("generateName", found)
        && let Err(message) = check_object_name(&format!("{prefix}x"))
    {
        found.push(("metadata.generateName".into(), message));
    }
    if let Some(namespace) = string("namespace", found)
        && let Err(message) = check_object_name(&namespace)
    {
        found.push(("metadata.namespace".into(), message));
    }
    for field in ["labels", "annotations"] {
        match meta.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(entries)) => {
                for (key, value) in entries {
                    if !value.is_string() {
                        let key = key
                            .as_str()
                            .map_or_else(|| describe(key), |k| cut(k).into());
                        let message = format!("expected a string, got {}", describe(value));
                        found.push((format!("metadata.{field}.{key}"), message));
                    }
                }
            }
            Some(other) => found.push((
                format!("metadata.{field}"),
                format!("expected a mapping, got {}", describe(other)),
            )),
        }
    }
}

/// Deserializes a structurally valid document; any residual error carries its field path.
fn typed<T: DeserializeOwned>(value: Value, found: &mut Vec<Finding>) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." {
                DOCUMENT_PATH.to_string()
            } else {
                path
            };
            found.push((path, e.into_inner().to_string()));
            None
        }
    }
}

/// The checks of a PipelineRun that need no other document.
fn check_run(run: &PipelineRun, source: &Source) -> Vec<Diagnostic> {
    let mut out = check_run_value_names(&run.spec.params, source, "spec.params");
    match (&run.spec.pipeline_ref, &run.spec.pipeline_spec) {
        (Some(_), Some(_)) => out.push(Diagnostic::new(
            source,
            "spec",
            "set exactly one of pipelineRef or pipelineSpec, not both",
        )),
        (None, None) => out.push(Diagnostic::new(
            source,
            "spec",
            "set one of pipelineRef (the name of a Pipeline) or pipelineSpec (an inline pipeline)",
        )),
        (Some(reference), None) => {
            if let Err(message) = check_object_name(&reference.name) {
                out.push(Diagnostic::new(source, "spec.pipelineRef.name", message));
            }
        }
        (None, Some(spec)) => {
            out.extend(validate_spec(spec, source, "spec.pipelineSpec"));
            out.extend(check_run_values(
                spec,
                &run.spec.params,
                source,
                "spec.params",
            ));
        }
    }
    out
}

/// The step a TrainingJob runs as: its template with `roles`, named `train`.
pub const JOB_STEP: &str = "train";

/// A TrainingJob's checks: those of its template as the one step of a pipeline, reported at
/// the job's own paths (`spec.roles.worker.replicas`, not `spec.steps[0]...`).
pub fn check_job(spec: &TrainingJobSpec, source: &Source) -> Vec<Diagnostic> {
    let pipeline = PipelineSpec {
        steps: vec![spec.step(JOB_STEP)],
        ..PipelineSpec::default()
    };
    let mut out = validate_spec(&pipeline, source, "spec");
    for d in &mut out {
        if let Some(rest) = d.path.strip_prefix("spec.steps[0]") {
            d.path = format!("spec{rest}");
        }
    }
    if let Some(policy) = &spec.run_policy
        && let Some(ttl) = &policy.ttl_after_finished
        && ttl.get().is_zero()
    {
        out.push(Diagnostic::new(
            source,
            "spec.runPolicy.ttlAfterFinished",
            "must be positive (omit it to keep finished jobs)",
        ));
    }
    out
}
