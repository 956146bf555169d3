//! Semantic validation of a [`PipelineSpec`]: what the schema cannot say.
//!
//! Names are unique and well-formed, every step has an image and a command, placeholders
//! refer to things that exist (see `references`), the step graph has no cycle and main
//! steps never wait for `finally` steps, and durations, quantities, the cron schedule,
//! parameter defaults and `when` conditions all make sense. Every problem is reported.

use std::collections::BTreeMap;

use croner::parser::{CronParser, Seconds, Year};

use super::names::{check_env_name, check_identifier, check_step_name};
use super::params::{declaration_problems, not_allowed, type_mismatch};
use super::quantity::parse_quantity;
use super::references::{self, Scope};
use super::schema_check::{Finding, join};
use super::{Diagnostic, Source};
use crate::api::{CachePolicy, PipelineSpec, Resources, RetryPolicy, Step};
use crate::duration::Duration;
use crate::echo::quote;
use crate::engine::gang::{self, GangPlan};
use crate::graph;

/// What `check_names` calls environment variables; their names follow other rules.
const ENV: &str = "environment variable";

/// Every semantic problem of `spec`, found at `prefix` (`spec` in a Pipeline,
/// `spec.pipelineSpec` in a PipelineRun) of the document at `source`.
pub fn validate_spec(spec: &PipelineSpec, source: &Source, prefix: &str) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let scope = Scope::new(spec);
    check_params(spec, prefix, &mut out);
    if spec.steps.is_empty() {
        out.push((
            join(prefix, "steps"),
            "a pipeline needs at least one step".to_string(),
        ));
    }
    let mut step_names: BTreeMap<&str, String> = BTreeMap::new();
    for (list, steps, from_finally) in [
        ("steps", &spec.steps, false),
        ("finally", &spec.finally, true),
    ] {
        let list_path = join(prefix, list);
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{list_path}[{i}]");
            let name_path = join(&path, "name");
            match check_step_name(&step.name) {
                Err(message) => out.push((name_path, message)),
                Ok(()) => {
                    if let Some(first) = step_names.get(step.name.as_str()) {
                        let message = format!("duplicate step name {:?} (also {first})", step.name);
                        out.push((name_path, message));
                    } else {
                        step_names.insert(&step.name, path.clone());
                    }
                }
            }
            check_step(&scope, step, from_finally, &path, &mut out);
        }
        check_cycles(steps, &list_path, &mut out);
    }
    if let Some(schedule) = &spec.schedule
        && let Err(message) = check_schedule(schedule)
    {
        out.push((join(prefix, "schedule"), message));
    }
    if let Some(cache) = &spec.cache {
        check_cache(cache, &join(prefix, "cache"), &mut out);
    }
    out.into_iter()
        .map(|(path, message)| Diagnostic::new(source, path, message))
        .collect()
}

fn check_params(spec: &PipelineSpec, prefix: &str, out: &mut Vec<Finding>) {
    let list = join(prefix, "params");
    check_names(
        spec.params.iter().map(|p| p.name.as_str()),
        &list,
        "parameter",
        out,
    );
    for (i, p) in spec.params.iter().enumerate() {
        let at = format!("{list}[{i}]");
        let declaration = declaration_problems(p);
        let declaration_ok = declaration.is_empty();
        for (field, message) in declaration {
            out.push((join(&at, &field), message));
        }
        let Some(default) = &p.default else { continue };
        let problem = type_mismatch(default, p.kind)
            .or_else(|| declaration_ok.then(|| not_allowed(default, p)).flatten());
        if let Some(message) = problem {
            out.push((join(&at, "default"), message));
        }
    }
}

fn check_step(
    scope: &Scope<'_>,
    step: &Step,
    from_finally: bool,
    path: &str,
    out: &mut Vec<Finding>,
) {
    if step.image.trim().is_empty() {
        out.push((join(path, "image"), "must not be empty".to_string()));
    }
    if step.command.is_empty() {
        out.push((join(path, "command"), "a step needs a command".to_string()));
    }
    check_names(
        step.env.iter().map(|e| e.name.as_str()),
        &join(path, "env"),
        ENV,
        out,
    );
    if let Some(inputs) = &step.inputs {
        let params = inputs.params.iter().map(|p| p.name.as_str());
        check_names(params, &join(path, "inputs.params"), "input parameter", out);
        let artifacts = inputs.artifacts.iter().map(|a| a.name.as_str());
        check_names(
            artifacts,
            &join(path, "inputs.artifacts"),
            "input artifact",
            out,
        );
        for (i, a) in inputs.artifacts.iter().enumerate() {
            let at = format!("{path}.inputs.artifacts[{i}]");
            match (&a.from, &a.path) {
                (Some(_), Some(_)) => {
                    out.push((at, "set exactly one of from or path, not both".into()))
                }
                (None, None) => out.push((
                    at,
                    "set one of from (an upstream output artifact) or path (a local file)".into(),
                )),
                (None, Some(p)) if p.trim().is_empty() => {
                    out.push((join(&at, "path"), "must not be empty".into()));
                }
                _ => {}
            }
        }
    }
    if let Some(outputs) = &step.outputs {
        let params = outputs.params.iter().map(|p| p.name.as_str());
        check_names(
            params,
            &join(path, "outputs.params"),
            "output parameter",
            out,
        );
        let artifacts = outputs.artifacts.iter().map(|a| a.name.as_str());
        check_names(
            artifacts,
            &join(path, "outputs.artifacts"),
            "output artifact",
            out,
        );
    }
    for (i, target) in step.depends_on.iter().enumerate() {
        if let Err(message) = scope.check_step_target(step, from_finally, target) {
            out.push((format!("{path}.dependsOn[{i}]"), message));
        }
    }
    references::check_step(scope, step, from_finally, path, out);
    if let Some(resources) = &step.resources {
        check_resources(resources, &join(path, "resources"), out);
    }
    if let Some(retry) = &step.retry {
        check_retry(retry, &join(path, "retry"), out);
    }
    if let Some(timeout) = &step.timeout {
        check_duration(timeout, join(path, "timeout"), out);
    }
    if let Some(cache) = &step.cache {
        check_cache(cache, &join(path, "cache"), out);
    }
    check_gang(step, path, out);
}

/// A distributed step's roles and policies, and the variables its replicas get from toucan.
fn check_gang(step: &Step, path: &str, out: &mut Vec<Finding>) {
    let Some(gang) = step.gang() else {
        for (field, set) in [
            ("successPolicy", step.success_policy.is_some()),
            ("failurePolicy", step.failure_policy.is_some()),
            ("checkpoint", step.checkpoint.is_some()),
        ] {
            if set {
                let message = "applies to a distributed step only: add roles".to_string();
                out.push((join(path, field), message));
            }
        }
        return;
    };
    if let Err(problems) = GangPlan::new(gang) {
        out.extend(problems.into_iter().map(|(p, m)| (join(path, &p), m)));
    }
    let role_env = step.roles.iter().flat_map(|(r, spec)| {
        (0..spec.env.len()).map(move |i| (format!("roles.{r}.env[{i}]"), &spec.env[i]))
    });
    let step_env = step
        .env
        .iter()
        .enumerate()
        .map(|(i, e)| (format!("env[{i}]"), e));
    for (at, var) in step_env.chain(role_env) {
        if gang::RESERVED.contains(&var.name.as_str()) {
            let message = format!(
                "{} is set by toucan for every replica (the env contract); remove it",
                var.name
            );
            out.push((join(path, &format!("{at}.name")), message));
        }
    }
    for (role, spec) in &step.roles {
        if let Some(resources) = &spec.resources {
            check_resources(resources, &format!("{path}.roles.{role}.resources"), out);
        }
    }
}

/// The cpu and memory quantities of a step's or a role's `resources` at `path`.
fn check_resources(resources: &Resources, path: &str, out: &mut Vec<Finding>) {
    for (field, value) in [("cpu", &resources.cpu), ("memory", &resources.memory)] {
        if let Some(Err(message)) = value.as_deref().map(parse_quantity) {
            out.push((join(path, field), message));
        }
    }
}

/// Names in a list are well-formed and unique; problems are reported at `LIST[i].name`.
fn check_names<'a>(
    names: impl Iterator<Item = &'a str>,
    list: &str,
    what: &str,
    out: &mut Vec<Finding>,
) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names.enumerate() {
        let at = format!("{list}[{i}].name");
        let valid = if what == ENV {
            check_env_name(name)
        } else {
            check_identifier(what, name)
        };
        if let Err(message) = valid {
            out.push((at, message));
        } else if let Some(first) = seen.get(name) {
            out.push((
                at,
                format!("duplicate {what} name {name:?} (also {list}[{first}])"),
            ));
        } else {
            seen.insert(name, i);
        }
    }
}

fn check_retry(retry: &RetryPolicy, path: &str, out: &mut Vec<Finding>) {
    let Some(backoff) = &retry.backoff else {
        return;
    };
    let path = join(path, "backoff");
    let initial = backoff
        .initial
        .as_ref()
        .and_then(|d| check_duration(d, join(&path, "initial"), out));
    let max = backoff
        .max
        .as_ref()
        .and_then(|d| check_duration(d, join(&path, "max"), out));
    if let (Some(initial), Some(max)) = (initial, max)
        && max.get() < initial.get()
    {
        let message = format!("is shorter than initial ({max} < {initial})");
        out.push((join(&path, "max"), message));
    }
    if let Some(factor) = backoff.factor
        && !(factor.is_finite() && factor >= 1.0)
    {
        let message = format!("must be a number of at least 1, got {factor}");
        out.push((join(&path, "factor"), message));
    }
}

fn check_cache(cache: &CachePolicy, path: &str, out: &mut Vec<Finding>) {
    if let Some(max_age) = &cache.max_age {
        check_duration(max_age, join(path, "maxAge"), out);
    }
}

/// A duration parsed when the manifest was read must also be greater than zero; reported at
/// `path` when it is not.
fn check_duration<'a>(
    duration: &'a Duration,
    path: String,
    out: &mut Vec<Finding>,
) -> Option<&'a Duration> {
    if duration.get().is_zero() {
        out.push((
            path,
            format!(
                "duration must be greater than zero, got {:?}",
                duration.as_str()
            ),
        ));
        return None;
    }
    Some(duration)
}

/// The five cron fields with the numbers each accepts.
const CRON_FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

/// Five fields, or a nickname like `@daily`. Numbers out of range are named here (croner
/// only says "out of bounds"); croner checks the rest.
fn check_schedule(text: &str) -> Result<(), String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if !text.trim_start().starts_with('@') && fields.len() != 5 {
        return Err(format!(
            "invalid cron schedule {}: expected 5 fields (minute hour day-of-month month \
             day-of-week), got {}",
            quote(text),
            fields.len()
        ));
    }
    for (field, (name, low, high)) in fields.iter().zip(CRON_FIELDS) {
        let ranges = field
            .split(',')
            .map(|part| part.split_once('/').map_or(part, |(r, _)| r));
        for number in ranges
            .flat_map(|r| r.split('-'))
            .filter_map(|n| n.parse::<u32>().ok())
        {
            if !(low..=high).contains(&number) {
                return Err(format!(
                    "invalid cron schedule {}: {name} {number} is out of range {low}-{high}",
                    quote(text)
                ));
            }
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(text)
        .map(|_| ())
        .map_err(|e| format!("invalid cron schedule {}: {e}", quote(text)))
}

/// Reports one dependency cycle among `steps`, if there is one. Steps that depend on
/// themselves are reported where the dependency is written and left out here.
fn check_cycles(steps: &[Step], list: &str, out: &mut Vec<Finding>) {
    let candidates: Vec<&Step> = steps
        .iter()
        .filter(|s| !graph::dependencies(s).contains(&s.name))
        .collect();
    if let Err(cycle) = graph::topological_order(&candidates) {
        let first = cycle.first().map(String::as_str).unwrap_or_default();
        let i = steps
            .iter()
            .position(|s| s.name == first)
            .unwrap_or_default();
        out.push((
            format!("{list}[{i}]"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        for ok in [
            "0 3 * * *",
            "*/15 * * * 1-5",
            "0 0 1 JAN *",
            "@daily",
            "30 2 * * SUN",
        ] {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "0 3 * *",
            "0 0 3 * * *",
            "61 * * * *",
            "* 24 * * *",
            "a b c d e",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_must_be_positive() {
        let mut out = Vec::new();
        let d = |text: &str| Duration::parse(text).unwrap();
        assert_eq!(
            check_duration(&d("1h30m"), "t".into(), &mut out).map(Duration::get),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(check_duration(&d("0s"), "t".into(), &mut out), None);
        assert_eq!(check_duration(&d("0"), "t".into(), &mut out), None);
        assert_eq!(out.len(), 2);
    }
}
