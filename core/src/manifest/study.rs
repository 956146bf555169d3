//! A TuningStudy's checks, and its trial template made concrete for one trial.
//!
//! The engine checks the search itself ([`crate::tuning::Study::new`]); here, the trial
//! template: exactly one way to run a trial, every `{{trial.params.NAME}}` naming a parameter
//! of the space (or the multi-fidelity resource), the trial's pipeline valid once those
//! placeholders hold values, and an objective some step of it produces.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Diagnostic, Source, validate_spec};
use crate::api::{EnvVar, PipelineSpec, TrialTemplate, TuningStudySpec};
use crate::suggest;
use crate::tuning::{ParamValue, Study, TuningError};

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
        trial.is_inline(),
    ];
    match ways.iter().filter(|&&w| w).count() {
        1 => {}
        0 => out.push(Diagnostic::new(
            source,
            "spec.trial",
            "says nothing to run: give one of pipelineRef, pipelineSpec, trainingJob or an inline step (image, command)",
        )),
        _ => out.push(Diagnostic::new(
            source,
            "spec.trial",
            "gives more than one of pipelineRef, pipelineSpec, trainingJob and an inline step (image, command): give one",
        )),
    }
    if (trial.training_job.is_some() || trial.is_inline()) && !trial.params.is_empty() {
        out.push(Diagnostic::new(
            source,
            "spec.trial.params",
            "only a pipeline trial takes params: write {{trial.params.NAME}} in the trial itself",
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
    }
    let (checked, at) = if trial.pipeline_spec.is_some() {
        (true, "spec.trial.pipelineSpec")
    } else if trial.training_job.is_some() {
        (false, "spec.trial.trainingJob")
    } else {
        (true, "spec.trial")
    };
    if let (Some(pipeline), 1) = (trial.pipeline(), ways.iter().filter(|&&w| w).count()) {
        if checked {
            let mut found = validate_spec(&pipeline, source, at);
            if trial.is_inline() {
                // The inline step's fields sit on spec.trial itself.
                for d in &mut found {
                    d.path = d.path.replacen("spec.trial.steps[0]", "spec.trial", 1);
                }
            }
            out.extend(found);
        }
        out.extend(check_objective(spec, &pipeline, source, at));
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

/// The variable that carries a trial's values (JSON) in the env of the steps they reach; the
/// launcher writes it to a file and gives the command that file's path as
/// `TOUCAN_TRIAL_PARAMS` instead. Being part of the step's env, it is part of the step's cache
/// key: a step the trial's values do not reach (an ingest step) is shared by every trial.
pub const TRIAL_PARAMS_ENV: &str = "TOUCAN_TRIAL_PARAMS_JSON";

/// What one trial runs: a pipeline and its parameter values.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialRun {
    /// The pipeline's name: the referenced Pipeline's, else the study's.
    pub pipeline: String,
    /// The pipeline with the trial's values in place.
    pub spec: PipelineSpec,
    /// The pipeline's parameter values, resolved and typed as a run's are.
    pub params: BTreeMap<String, Value>,
}

/// The template made concrete for one trial's `values`: `{{trial.params.NAME}}` replaced
/// everywhere, and [`TRIAL_PARAMS_ENV`] added to each step a placeholder was written in (to
/// the one step of a one-step trial in any case). `referenced` is the Pipeline a
/// `pipelineRef` names, with its name.
pub fn trial_run(
    study: &str,
    spec: &TuningStudySpec,
    referenced: Option<(&str, &PipelineSpec)>,
    values: &BTreeMap<String, ParamValue>,
) -> Result<TrialRun, String> {
    let text: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let json = serde_json::to_string(values).map_err(|e| e.to_string())?;
    let (trial, unknown) = instantiate(&spec.trial, &text);
    if let Some((path, name)) = unknown.first() {
        return Err(format!(
            "spec.trial{path}: {{{{trial.params.{name}}}}} has no value in this trial"
        ));
    }
    let (pipeline, mut pipeline_spec, reached) = match (&spec.trial.pipeline_ref, referenced) {
        (Some(r), Some((name, pipeline))) if r.name == name => {
            (name.to_string(), pipeline.clone(), Vec::new())
        }
        (Some(r), _) => return Err(format!("spec.trial.pipelineRef: no Pipeline {:?}", r.name)),
        (None, _) => {
            let template = spec
                .trial
                .pipeline()
                .ok_or("spec.trial: says nothing to run")?;
            let reached = template
                .steps
                .iter()
                .map(|step| serde_json::to_string(step).is_ok_and(|t| t.contains(TRIAL_PARAMS)))
                .collect();
            let concrete = trial.pipeline().ok_or("spec.trial: says nothing to run")?;
            (study.to_string(), concrete, reached)
        }
    };
    let single = pipeline_spec.steps.len() == 1;
    for (i, step) in pipeline_spec.steps.iter_mut().enumerate() {
        if single || reached.get(i).copied().unwrap_or(false) {
            step.env.retain(|e| e.name != TRIAL_PARAMS_ENV);
            step.env.push(EnvVar {
                name: TRIAL_PARAMS_ENV.to_string(),
                value: json.clone(),
            });
        }
    }
    // A placeholder gives text; the run takes values of the declared types, coerced as a
    // run's (and the command line's) values are.
    let given: Vec<(String, Value)> = trial
        .params
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let source = Source {
        file: format!("trial of {study}").into(),
        index: 0,
    };
    let params = super::resolve_params(&pipeline_spec, &given, &source).map_err(|problems| {
        problems
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    Ok(TrialRun {
        pipeline,
        spec: pipeline_spec,
        params,
    })
}

/// A trial's objective from the text of the output param it is read from.
pub fn parse_objective(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    match trimmed.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("the objective is {v}, not a finite number")),
        Err(_) => Err(format!(
            "the objective {:?} is not a number",
            crate::echo::cut(trimmed)
        )),
    }
}

/// A trial's objective series from the metric points a step reported (pushed to the
/// control plane, or appended to `TOUCAN_METRICS_FILE`): the value of `metric` at each point
/// that has it, at the point's `epoch` (else `step`, else its position from 1). A later point
/// at the same step replaces an earlier one.
pub fn objective_series(
    points: &[serde_json::Map<String, Value>],
    metric: &str,
) -> Vec<crate::tuning::MetricPoint> {
    let mut series: BTreeMap<u64, f64> = BTreeMap::new();
    for (i, point) in points.iter().enumerate() {
        let Some(value) = point.get(metric).and_then(Value::as_f64) else {
            continue;
        };
        let step = ["epoch", "step"]
            .iter()
            .find_map(|k| point.get(*k).and_then(Value::as_u64))
            .unwrap_or(i as u64 + 1);
        if value.is_finite() {
            series.insert(step, value);
        }
    }
    series
        .into_iter()
        .map(|(step, value)| crate::tuning::MetricPoint { step, value })
        .collect()
}

/// A trial's objective from the record of the step it is read from (see
/// [`objective_source`]), or why there is none.
pub fn objective_of(step: &crate::records::StepRecord, param: &str) -> Result<f64, String> {
    let name = &step.name;
    if step.phase != crate::records::Phase::Succeeded {
        return Err(format!(
            "its step {name:?} ended {}, so it reported no objective",
            step.phase.as_str()
        ));
    }
    match step.outputs.params.get(param) {
        Some(text) => parse_objective(text).map_err(|e| format!("output param {param:?}: {e}")),
        None => Err(format!(
            "its step {name:?} reported no output param {param:?}"
        )),
    }
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
    fn a_trial_runs_its_pipeline_with_its_values_and_gets_the_file_where_they_reach() {
        let spec: TuningStudySpec = serde_yaml_ng::from_str(
            r#"
objective: {metric: accuracy, goal: maximize}
parameters:
  - {name: lr, type: double, min: 0.001, max: 0.1, scale: log}
  - {name: batch, type: discrete, values: [32, 64]}
algorithm: {name: random, seed: 1}
budget: {maxTrials: 4}
trial:
  pipelineSpec:
    steps:
      - {name: ingest, image: w, command: [ingest]}
      - name: train
        image: w
        command: [train, "--lr={{trial.params.lr}}", "--batch={{trial.params.batch}}"]
        dependsOn: [ingest]
        outputs: {params: [{name: accuracy}]}
"#,
        )
        .unwrap();
        let values = BTreeMap::from([
            ("lr".to_string(), ParamValue::Float(0.01)),
            ("batch".to_string(), ParamValue::Int(64)),
        ]);
        let run = trial_run("fmnist", &spec, None, &values).unwrap();
        assert_eq!(run.pipeline, "fmnist");
        let train = &run.spec.steps[1];
        assert_eq!(train.command, ["train", "--lr=0.01", "--batch=64"]);
        assert_eq!(train.env[0].name, TRIAL_PARAMS_ENV);
        assert_eq!(train.env[0].value, r#"{"batch":64,"lr":0.01}"#);
        // The ingest step uses no value: same spec, same cache key, in every trial.
        assert_eq!(
            run.spec.steps[0],
            spec.trial.pipeline_spec.unwrap().steps[0]
        );
    }

    #[test]
    fn an_inline_trial_is_one_step_checked_at_the_trials_own_fields() {
        let study = |trial: &str| -> TuningStudySpec {
            serde_yaml_ng::from_str(&format!(
                r#"
objective: {{metric: value, goal: minimize}}
parameters: [{{name: x, type: double, min: -2.0, max: 2.0}}]
algorithm: {{name: tpe, seed: 1}}
budget: {{maxTrials: 4}}
trial: {trial}
"#
            ))
            .unwrap()
        };
        let source = Source {
            file: "study.yaml".into(),
            index: 0,
        };
        let good = study(
            r#"{image: python:3.11, command: [python3, f.py, "{{trial.params.x}}", "{{outputs.params.value}}"], outputs: {params: [{name: value}]}}"#,
        );
        assert_eq!(check_study(&good, &source), []);
        let pipeline = good.trial.pipeline().unwrap();
        assert_eq!(pipeline.steps[0].name, crate::api::INLINE_TRIAL_STEP);
        assert_eq!(
            objective_source(&good, &pipeline),
            Some(("trial".into(), "value".into()))
        );

        let bad =
            study(r#"{command: [f, "{{trial.params.y}}"], outputs: {params: [{name: other}]}}"#);
        let paths: Vec<String> = check_study(&bad, &source)
            .into_iter()
            .map(|d| d.path)
            .collect();
        assert_eq!(
            paths,
            [
                "spec.trial.command[1]",
                "spec.trial.image",
                "spec.objective.metric"
            ]
        );
    }

    #[test]
    fn an_objective_series_reads_the_metric_by_epoch() {
        let points: Vec<serde_json::Map<String, Value>> =
            serde_json::from_value(serde_json::json!([
                {"epoch": 1, "val_accuracy": 0.5},
                {"epoch": 2, "loss": 0.3},
                {"epoch": 3, "val_accuracy": 0.7},
                {"epoch": 3, "val_accuracy": 0.75},
                {"val_accuracy": 0.8},
            ]))
            .unwrap();
        let series = objective_series(&points, "val_accuracy");
        let pairs: Vec<(u64, f64)> = series.iter().map(|p| (p.step, p.value)).collect();
        assert_eq!(pairs, [(1, 0.5), (3, 0.75), (5, 0.8)]);
        assert_eq!(parse_objective(" 0.93\n"), Ok(0.93));
        assert!(parse_objective("nan").is_err());
        assert!(
            parse_objective("high")
                .unwrap_err()
                .contains("not a number")
        );
    }

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
