//! A TuningStudy's checks, and its trial template made concrete for one trial.
//!
//! The engine checks the search itself ([`crate::tuning::Study::new`]); here, the trial
//! template: exactly one way to run a trial, every `{{trial.params.NAME}}` naming a parameter
//! of the space (or the multi-fidelity resource), the trial's pipeline valid once those
//! placeholders hold values, and an objective some step of it produces.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Diagnostic, JOB_STEP, Source, validate_spec};
use crate::api::{PipelineSpec, TrialTemplate, TuningStudySpec};
use crate::suggest;
use crate::tuning::{Study, TuningError};

/// The placeholder prefix of a trial's parameter values.
const TRIAL_PARAMS: &str = "trial.params.";

/// Every problem with a study's spec, at its field path.
pub fn check_study(spec: &TuningStudySpec, source: &Source) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    match Study::new(&spec.engine_spec()) {
        Ok(_) => {}
        Err(TuningError::InvalidSpec { issues }) => out.extend(
            issues
                .into_iter()
                .map(|issue| Diagnostic::new(source, issue.path, issue.message)),
        ),
        Err(other) => out.push(Diagnostic::new(source, "spec", other.to_string())),
    }
    let names = parameter_names(spec);
    // The template with every known placeholder given a sample value, so that the trial's
    // pipeline is checked as a trial would run it.
    let mut sample: BTreeMap<String, String> =
        names.iter().map(|n| (n.clone(), "1".into())).collect();
    let (mut trial, unknown) = instantiate(&spec.trial, &sample);
    if !unknown.is_empty() {
        // Reported once, here, not again by the pipeline's checks.
        sample.extend(unknown.iter().map(|(_, name)| (name.clone(), "1".into())));
        trial = instantiate(&spec.trial, &sample).0;
    }
    for (path, name) in unknown {
        let hint = suggest::did_you_mean_clause(&name, names.iter().map(String::as_str));
        out.push(Diagnostic::new(
            source,
            format!("spec.trial{path}"),
            format!(
                "{{{{trial.params.{name}}}}} names no parameter of the study (it has {}){hint}",
                names.join(", ")
            ),
        ));
    }
    let ways = [
        trial.pipeline_ref.is_some(),
        trial.pipeline_spec.is_some(),
        trial.training_job.is_some(),
    ];
    match ways.iter().filter(|&&w| w).count() {
        1 => {}
        0 => out.push(Diagnostic::new(
            source,
            "spec.trial",
            "says nothing to run: give one of pipelineRef, pipelineSpec or trainingJob",
        )),
        _ => out.push(Diagnostic::new(
            source,
            "spec.trial",
            "gives more than one of pipelineRef, pipelineSpec and trainingJob: give one",
        )),
    }
    if trial.training_job.is_some() && !trial.params.is_empty() {
        out.push(Diagnostic::new(
            source,
            "spec.trial.params",
            "a trainingJob trial takes no pipeline params: write {{trial.params.NAME}} in the job itself",
        ));
    }
    if let Some(pipeline) = &trial.pipeline_spec {
        out.extend(validate_spec(pipeline, source, "spec.trial.pipelineSpec"));
        out.extend(check_objective(
            spec,
            pipeline,
            source,
            "spec.trial.pipelineSpec",
        ));
    }
    if let Some(job) = &trial.training_job {
        let mut found = super::document::check_job(job, source);
        for d in &mut found {
            if let Some(rest) = d.path.strip_prefix("spec") {
                d.path = format!("spec.trial.trainingJob{rest}");
            }
        }
        out.extend(found);
        let pipeline = PipelineSpec {
            steps: vec![job.step(JOB_STEP)],
            ..PipelineSpec::default()
        };
        out.extend(check_objective(
            spec,
            &pipeline,
            source,
            "spec.trial.trainingJob",
        ));
    }
    out
}

/// The objective of a referenced Pipeline's trials, once that Pipeline is known (loaded from
/// the same files): its params and the step output the objective comes from.
pub fn check_study_pipeline(
    spec: &TuningStudySpec,
    pipeline: &PipelineSpec,
    source: &Source,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (i, given) in spec.trial.params.iter().enumerate() {
        if !pipeline.params.iter().any(|p| p.name == given.name) {
            let hint = suggest::did_you_mean_clause(
                &given.name,
                pipeline.params.iter().map(|p| p.name.as_str()),
            );
            out.push(Diagnostic::new(
                source,
                format!("spec.trial.params[{i}].name"),
                format!("the pipeline has no parameter {:?}{hint}", given.name),
            ));
        }
    }
    out.extend(check_objective(
        spec,
        pipeline,
        source,
        "spec.trial.pipelineRef",
    ));
    out
}

/// The step and output param a trial's objective is read from: `objectiveFrom`, else the
/// output param named like the objective's metric of the pipeline's last step.
pub fn objective_source(
    spec: &TuningStudySpec,
    pipeline: &PipelineSpec,
) -> Option<(String, String)> {
    match &spec.trial.objective_from {
        Some(text) => parse_step_param(text),
        None => pipeline
            .steps
            .last()
            .map(|step| (step.name.clone(), spec.objective.metric.clone())),
    }
}

fn check_objective(
    spec: &TuningStudySpec,
    pipeline: &PipelineSpec,
    source: &Source,
    pipeline_path: &str,
) -> Vec<Diagnostic> {
    let path = if spec.trial.objective_from.is_some() {
        "spec.trial.objectiveFrom"
    } else {
        "spec.objective.metric"
    };
    let Some((step_name, param)) = objective_source(spec, pipeline) else {
        let message = match &spec.trial.objective_from {
            Some(text) => format!(
                "{text:?} is not a step's output param: write {{{{steps.STEP.outputs.params.NAME}}}}"
            ),
            None => format!("{pipeline_path} has no step to read the objective from"),
        };
        return vec![Diagnostic::new(source, path, message)];
    };
    let Some(step) = pipeline.steps.iter().find(|s| s.name == step_name) else {
        let hint = suggest::did_you_mean_clause(
            &step_name,
            pipeline.steps.iter().map(|s| s.name.as_str()),
        );
        return vec![Diagnostic::new(
            source,
            path,
            format!(
                "no trial can produce the objective: the pipeline has no step {step_name:?}{hint}"
            ),
        )];
    };
    let declared = step
        .outputs
        .as_ref()
        .map(|o| o.params.iter().map(|p| p.name.as_str()).collect::<Vec<_>>())
        .unwrap_or_default();
    if declared.contains(&param.as_str()) {
        return Vec::new();
    }
    let hint = suggest::did_you_mean_clause(&param, declared.iter().copied());
    vec![Diagnostic::new(
        source,
        path,
        format!(
            "no trial can produce the objective: step {step_name:?} declares no output param {param:?} (it declares {}){hint}",
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join(", ")
            }
        ),
    )]
}

/// `{{steps.STEP.outputs.params.NAME}}` as (STEP, NAME).
fn parse_step_param(text: &str) -> Option<(String, String)> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    let rest = inner.strip_prefix("steps.")?;
    let (step, name) = rest.split_once(".outputs.params.")?;
    (!step.is_empty() && !name.is_empty() && !step.contains('.'))
        .then(|| (step.to_string(), name.to_string()))
}

/// The names a template may use: the parameters, and the multi-fidelity resource.
fn parameter_names(spec: &TuningStudySpec) -> Vec<String> {
    let mut names: Vec<String> = spec.parameters.iter().map(|p| p.name.clone()).collect();
    if let Some(resource) = &spec.algorithm.resource {
        names.push(resource.name.clone());
    }
    names
}

/// The template with every `{{trial.params.NAME}}` replaced by `values[NAME]`; placeholders
/// naming no value are left as written and returned with their path below `spec.trial`
/// (`.params[0].value`).
pub fn instantiate(
    template: &TrialTemplate,
    values: &BTreeMap<String, String>,
) -> (TrialTemplate, Vec<(String, String)>) {
    let mut unknown = Vec::new();
    let Ok(mut json) = serde_json::to_value(template) else {
        return (template.clone(), unknown);
    };
    substitute(&mut json, values, &mut String::new(), &mut unknown);
    // Only strings changed, so the value still has the template's shape.
    let trial = serde_json::from_value(json).unwrap_or_else(|_| template.clone());
    (trial, unknown)
}

fn substitute(
    value: &mut Value,
    values: &BTreeMap<String, String>,
    path: &mut String,
    unknown: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(text) => {
            if text.contains("{{") {
                *text = replace_placeholders(text, values, path, unknown);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute(item, values, path, unknown);
                path.truncate(len);
            }
        }
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                substitute(field, values, path, unknown);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn replace_placeholders(
    text: &str,
    values: &BTreeMap<String, String>,
    path: &str,
    unknown: &mut Vec<(String, String)>,
) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push_str(&rest[..start]);
        let whole = &rest[start..start + 2 + end + 2];
        match after[..end].trim().strip_prefix(TRIAL_PARAMS) {
            Some(name) => match values.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    unknown.push((path.to_string(), name.to_string()));
                    out.push_str(whole);
                }
            },
            None => out.push_str(whole),
        }
        rest = &rest[start + 2 + end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_take_the_trial_values_and_unknown_names_are_reported_at_their_path() {
        let template: TrialTemplate = serde_json::from_value(serde_json::json!({
            "pipelineRef": {"name": "fmnist"},
            "params": [
                {"name": "lr", "value": "{{ trial.params.learning_rate }}"},
                {"name": "note", "value": "x={{trial.params.x}}, {{params.keep}}"},
            ],
        }))
        .unwrap();
        let values = BTreeMap::from([("learning_rate".to_string(), "0.01".to_string())]);
        let (trial, unknown) = instantiate(&template, &values);
        assert_eq!(trial.params[0].value, "0.01");
        assert_eq!(
            trial.params[1].value,
            "x={{trial.params.x}}, {{params.keep}}"
        );
        assert_eq!(unknown, [(".params[1].value".to_string(), "x".to_string())]);
    }

    #[test]
    fn an_objective_source_is_a_step_output_param() {
        assert_eq!(
            parse_step_param("{{steps.evaluate.outputs.params.accuracy}}"),
            Some(("evaluate".into(), "accuracy".into()))
        );
        for bad in [
            "{{params.x}}",
            "steps.a.outputs.params.b",
            "{{steps..outputs.params.b}}",
        ] {
            assert_eq!(parse_step_param(bad), None, "{bad}");
        }
    }
}
