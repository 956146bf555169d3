//! An Endpoint's `spec.monitoring` checks, each problem at its field path: slices name a
//! header or attribute once each; the drift reference gives one form and every threshold is
//! in its range; floors bound their metric in its better direction; retraining names a
//! pipeline, uses only the alert's variables and rolls out through steps that climb to 100.
//! The typed readings are [`crate::monitoring::spec`]'s; the checks here refuse what they
//! cannot read.

use std::collections::BTreeMap;

use super::endpoint::{check_header, check_steps};
use super::names::{check_identifier, check_object_name, check_step_name};
use super::schema_check::{Finding, join};
use crate::api::{
    DriftMonitoring, EndpointSpec, EvaluationGate, EvaluationMonitoring, MonitoringSpec,
    RetrainSpec, TimeRange,
};
use crate::echo::quote;
use crate::monitoring::assess::lookback_ms;
use crate::monitoring::retention::MIN_RETENTION_MS;
use crate::monitoring::spec::{
    FEATURES, MAX_SLICES, ReferenceSource, SliceSource, alert_variables,
};
use crate::suggest;

const PATH: &str = "spec.monitoring";

/// Every problem with `spec.monitoring`.
pub(super) fn check_monitoring(
    spec: &EndpointSpec,
    monitoring: &MonitoringSpec,
    out: &mut Vec<Finding>,
) {
    if spec.sampling.as_ref().is_none_or(|s| s.rate <= 0.0) {
        out.push((
            PATH.into(),
            "monitoring watches sampled requests: set spec.sampling.rate above 0".into(),
        ));
    }
    check_slices(monitoring, out);
    if let Some(drift) = &monitoring.drift {
        check_drift(drift, out);
    }
    if let Some(evaluation) = &monitoring.evaluation {
        check_evaluation(evaluation, out);
    }
    if let Some(retrain) = &monitoring.retrain {
        let alerts = monitoring.drift.is_some()
            || monitoring
                .evaluation
                .as_ref()
                .is_some_and(|e| !e.floors.is_empty());
        if !alerts {
            out.push((
                join(PATH, "retrain"),
                "nothing raises an alert to retrain on: add drift, or evaluation floors".into(),
            ));
        }
        check_retrain(retrain, out);
    }
    check_retention(spec, monitoring, out);
}

/// The retention covers a day (what `maxPerDay` counts), the retraining cooldown and the
/// windows a pass reads.
fn check_retention(spec: &EndpointSpec, monitoring: &MonitoringSpec, out: &mut Vec<Finding>) {
    let Some(retention) = &monitoring.retention else {
        return;
    };
    let at = join(PATH, "retention");
    let ms = retention.as_millis();
    let needs = [
        (
            MIN_RETENTION_MS,
            "a day (maxPerDay counts the retraining runs of 24 hours)",
        ),
        (
            monitoring.retrain.as_ref().map_or(0, |r| r.cooldown_ms()),
            "the retraining cooldown",
        ),
        (
            u64::try_from(lookback_ms(spec)).unwrap_or(u64::MAX),
            "the windows a pass reads (the drift window, two evaluation windows and the \
             labels' maturity)",
        ),
    ];
    if let Some((least, what)) = needs.into_iter().find(|(least, _)| ms < *least) {
        out.push((
            at,
            format!(
                "{retention} is shorter than {what}: keep at least {}",
                crate::duration::millis_text(least)
            ),
        ));
    }
}

fn check_slices(monitoring: &MonitoringSpec, out: &mut Vec<Finding>) {
    if monitoring.slices.len() > MAX_SLICES {
        out.push((
            join(PATH, "slices"),
            format!(
                "{} slices: an endpoint has at most {MAX_SLICES}",
                monitoring.slices.len()
            ),
        ));
    }
    let mut names = BTreeMap::new();
    for (i, slice) in monitoring.slices.iter().enumerate() {
        let path = format!("{PATH}.slices[{i}]");
        if let Err(message) = check_identifier("slice", &slice.name) {
            out.push((join(&path, "name"), message));
        } else if let Some(first) = names.insert(slice.name.as_str(), i) {
            out.push((
                join(&path, "name"),
                format!(
                    "duplicate slice name {} (also slices[{first}])",
                    quote(&slice.name)
                ),
            ));
        }
        let checked = slice.source().and_then(|source| match source {
            SliceSource::Header(name) => check_header(&name),
            SliceSource::Attribute(name) => check_identifier("attribute", &name),
        });
        if let Err(message) = checked {
            out.push((join(&path, "from"), message));
        }
    }
}

fn check_drift(drift: &DriftMonitoring, out: &mut Vec<Finding>) {
    let path = join(PATH, "drift");
    let reference = join(&path, "reference");
    match drift.reference.source() {
        Err(message) => out.push((reference, message)),
        Ok(ReferenceSource::Dataset(dataset)) => {
            let at = join(&reference, "dataset");
            if let Err(message) = check_object_name(&dataset.run) {
                out.push((join(&at, "run"), message));
            }
            if let Err(message) = check_step_name(&dataset.step) {
                out.push((join(&at, "step"), message));
            }
            if let Err(message) = check_identifier("artifact", &dataset.artifact) {
                out.push((join(&at, "artifact"), message));
            }
        }
        Ok(ReferenceSource::Window(window)) => {
            check_time_range(window, &join(&reference, "window"), out);
        }
    }
    if drift.window.as_ref().is_some_and(|w| w.get().is_zero()) {
        out.push((
            join(&path, "window"),
            "must be positive: the current samples are taken over this window".into(),
        ));
    }
    if drift.min_samples == Some(0) {
        out.push((
            join(&path, "minSamples"),
            "must be at least 1: a feature cannot drift on no samples".into(),
        ));
    }
    if let Some(effect) = drift.effect_size
        && !(effect.is_finite() && effect > 0.0)
    {
        out.push((
            join(&path, "effectSize"),
            format!("{effect} is not above 0: the smallest effect that counts as drift"),
        ));
    }
    if let Some(fdr) = drift.fdr
        && !(fdr > 0.0 && fdr < 1.0)
    {
        out.push((
            join(&path, "fdr"),
            format!("{fdr} is not a fraction in (0, 1)"),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, feature) in drift.features.iter().enumerate() {
        let at = format!("{path}.features[{i}]");
        if !FEATURES.contains(&feature.as_str()) {
            let hint = suggest::unknown_name_hint(feature, &FEATURES, "features");
            out.push((at, format!("unknown feature {}{hint}", quote(feature))));
        } else if let Some(first) = seen.insert(feature.as_str(), i) {
            out.push((
                at,
                format!(
                    "{} is listed twice (also features[{first}])",
                    quote(feature)
                ),
            ));
        }
    }
}

fn check_time_range(range: &TimeRange, path: &str, out: &mut Vec<Finding>) {
    let start = crate::time::parse_rfc3339(&range.start);
    let end = crate::time::parse_rfc3339(&range.end);
    if let Err(e) = &start {
        out.push((join(path, "start"), e.to_string()));
    }
    if let Err(e) = &end {
        out.push((join(path, "end"), e.to_string()));
    }
    if let (Ok(start), Ok(end)) = (start, end)
        && start >= end
    {
        out.push((
            join(path, "end"),
            format!(
                "{} is not after start ({})",
                quote(&range.end),
                quote(&range.start)
            ),
        ));
    }
}

fn check_evaluation(evaluation: &EvaluationMonitoring, out: &mut Vec<Finding>) {
    let path = join(PATH, "evaluation");
    if evaluation
        .window
        .as_ref()
        .is_some_and(|w| w.get().is_zero())
    {
        out.push((
            join(&path, "window"),
            "must be positive: metrics are computed over windows this long".into(),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, floor) in evaluation.floors.iter().enumerate() {
        let at = format!("{path}.floors[{i}]");
        if let Some(first) = seen.insert(floor.metric, i) {
            out.push((
                join(&at, "metric"),
                format!(
                    "a second {} floor (also floors[{first}]): give each metric one bound",
                    floor.metric.as_str()
                ),
            ));
        }
        if let Err(message) = floor.bound() {
            let field = match (floor.min, floor.max) {
                (Some(_), None) => join(&at, "min"),
                (None, Some(_)) => join(&at, "max"),
                _ => at,
            };
            out.push((field, message));
        }
    }
}

fn check_retrain(retrain: &RetrainSpec, out: &mut Vec<Finding>) {
    let path = join(PATH, "retrain");
    if let Err(message) = check_object_name(&retrain.pipeline_ref.name) {
        out.push((format!("{path}.pipelineRef.name"), message));
    }
    let mut names = BTreeMap::new();
    for (i, param) in retrain.params.iter().enumerate() {
        let at = format!("{path}.params[{i}]");
        if let Err(message) = check_identifier("parameter", &param.name) {
            out.push((join(&at, "name"), message));
        } else if let Some(first) = names.insert(param.name.as_str(), i) {
            out.push((
                join(&at, "name"),
                format!(
                    "{} is given twice (also params[{first}])",
                    quote(&param.name)
                ),
            ));
        }
        if let serde_json::Value::String(text) = &param.value
            && let Err(message) = alert_variables(text)
        {
            out.push((join(&at, "value"), message));
        }
    }
    if retrain.cooldown.as_ref().is_some_and(|c| c.get().is_zero()) {
        out.push((
            join(&path, "cooldown"),
            "must be positive: without it one long alert would start a run at every \
             evaluation"
                .into(),
        ));
    }
    if retrain.max_per_day == Some(0) {
        out.push((
            join(&path, "maxPerDay"),
            "must be at least 1 (omit retrain to never retrain)".into(),
        ));
    }
    let Some(rollout) = retrain.promote.as_ref().and_then(|p| p.rollout.as_ref()) else {
        return;
    };
    let at = format!("{path}.promote.rollout");
    if let Some(steps) = &rollout.steps {
        check_steps(&join(&at, "steps"), steps, out);
    }
    if rollout.interval.as_ref().is_some_and(|i| i.get().is_zero()) {
        out.push((
            join(&at, "interval"),
            "must be positive: each step is observed for this long".into(),
        ));
    }
    check_evaluation_gates(&join(&at, "gates"), &rollout.gates, out);
    if rollout.min_labels == Some(0) {
        out.push((
            join(&at, "minLabels"),
            "must be at least 1: a gate judged on no labels would pass on no evidence".into(),
        ));
    }
}

/// Evaluation gates (at `path`): one per metric, each `minDelta` a difference the metric can
/// have.
pub(super) fn check_evaluation_gates(path: &str, gates: &[EvaluationGate], out: &mut Vec<Finding>) {
    let mut seen = BTreeMap::new();
    for (i, gate) in gates.iter().enumerate() {
        let gate_path = format!("{path}[{i}]");
        if let Some(first) = seen.insert(gate.metric, i) {
            out.push((
                join(&gate_path, "metric"),
                format!(
                    "a second {} gate (also gates[{first}]): give each metric one bound",
                    gate.metric.as_str()
                ),
            ));
        }
        let delta = gate.min_delta;
        let in_range = delta.is_finite() && (!gate.metric.is_fraction() || delta.abs() <= 1.0);
        if !in_range {
            out.push((
                join(&gate_path, "minDelta"),
                format!(
                    "{delta} is not a difference of {} (from -1 to 1)",
                    gate.metric.as_str()
                ),
            ));
        }
    }
}
