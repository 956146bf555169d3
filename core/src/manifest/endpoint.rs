//! An Endpoint's checks: what its schema cannot say, each problem at its field path.
//!
//! Versions are well-named, unique and name one model each; the traffic split, the shadow and
//! the rollout name versions that exist; weights sum to 100; the rollout's steps climb to 100
//! and its gates' thresholds read for their metric ([`crate::api::GateSpec::threshold`]); and
//! every number is within its range. The serving decisions ([`crate::serving`]) assume a spec
//! that passed.

use std::collections::BTreeMap;

use super::monitoring::check_monitoring;
use super::names::{check_identifier, check_label, check_object_name, check_step_name};
use super::quantity::parse_quantity;
use super::schema_check::{Finding, join};
use super::{Diagnostic, Source};
use crate::api::{EndpointSpec, MAX_VERSIONS, ModelVersion, RolloutSpec};
use crate::echo::quote;
use crate::serving::spec::{MAX_BATCH_DELAY_MS, MAX_ROUTER_RETRIES, ModelSource};
use crate::serving::traffic::declared_traffic;
use crate::suggest;

/// The Gateway API route: at least one parent, DNS names throughout.
fn check_gateway(gateway: &crate::api::GatewaySpec, out: &mut Vec<Finding>) {
    if gateway.parent_refs.is_empty() {
        out.push((
            "spec.router.gateway.parentRefs".into(),
            "names no Gateway: give at least one {name: GATEWAY}".into(),
        ));
    }
    for (i, parent) in gateway.parent_refs.iter().enumerate() {
        let path = format!("spec.router.gateway.parentRefs[{i}]");
        if let Err(message) = check_object_name(&parent.name) {
            out.push((join(&path, "name"), message));
        }
        if let Some(Err(message)) = parent
            .namespace
            .as_deref()
            .map(|n| check_label("namespace", n))
        {
            out.push((join(&path, "namespace"), message));
        }
        if let Some(Err(message)) = parent
            .section_name
            .as_deref()
            .map(|n| check_label("listener", n))
        {
            out.push((join(&path, "sectionName"), message));
        }
    }
    for (i, host) in gateway.hostnames.iter().enumerate() {
        let bare = host.strip_prefix("*.").unwrap_or(host);
        if check_object_name(bare).is_err() || !bare.contains('.') {
            out.push((
                format!("spec.router.gateway.hostnames[{i}]"),
                format!(
                    "invalid host name {}: write a DNS name such as models.example.com, or \
                     *.example.com",
                    quote(host)
                ),
            ));
        }
    }
}

/// A version of this name would take the router's Deployment name in a cluster.
pub const RESERVED_VERSION: &str = "router";

/// Every problem with an Endpoint's spec, at its field path.
pub fn check_endpoint(spec: &EndpointSpec, source: &Source) -> Vec<Diagnostic> {
    let mut out: Vec<Finding> = Vec::new();
    let names = check_versions(&spec.versions, &mut out);
    let known = |name: &str, path: String, out: &mut Vec<Finding>| {
        if !names.contains_key(name) {
            out.push((path, unknown_version(name, &names)));
        }
    };
    let mut listed: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, target) in spec.traffic.iter().enumerate() {
        let path = format!("spec.traffic[{i}]");
        known(&target.version, join(&path, "version"), &mut out);
        if let Some(first) = listed.insert(&target.version, i) {
            out.push((
                join(&path, "version"),
                format!(
                    "{} is listed twice (also spec.traffic[{first}]): give each version one weight",
                    quote(&target.version)
                ),
            ));
        }
        if target.weight > 100 {
            out.push((join(&path, "weight"), percent_message(target.weight)));
        }
    }
    let total: u64 = spec.traffic.iter().map(|t| u64::from(t.weight)).sum();
    if !spec.traffic.is_empty() && total != 100 {
        out.push((
            "spec.traffic".into(),
            format!("the weights sum to {total}: they must sum to 100"),
        ));
    }
    let declared = declared_traffic(spec);
    if let Some(shadow) = &spec.shadow {
        known(&shadow.version, "spec.shadow.version".into(), &mut out);
        if shadow.percent > 100 {
            out.push((
                "spec.shadow.percent".into(),
                percent_message(shadow.percent),
            ));
        }
        if declared
            .iter()
            .all(|(name, weight)| *name == shadow.version || *weight == 0)
            && names.contains_key(shadow.version.as_str())
        {
            out.push((
                "spec.shadow.version".into(),
                format!(
                    "{} already takes every request: shadow a version that does not",
                    quote(&shadow.version)
                ),
            ));
        }
    }
    if let Some(batching) = &spec.batching {
        if batching.max_batch_size == 0 {
            out.push((
                "spec.batching.maxBatchSize".into(),
                "must be at least 1".into(),
            ));
        }
        if let Some(delay) = &batching.max_delay
            && delay.get() > std::time::Duration::from_millis(MAX_BATCH_DELAY_MS)
        {
            out.push((
                "spec.batching.maxDelay".into(),
                format!(
                    "{delay} is longer than 1s: a request would wait longer for its batch than \
                     batching saves"
                ),
            ));
        }
    }
    if let Some(autoscaling) = &spec.autoscaling {
        match (&autoscaling.target, &autoscaling.hpa) {
            (Some(_), Some(_)) => out.push((
                "spec.autoscaling".into(),
                "gives both target and hpa: give one".into(),
            )),
            (None, None) => out.push((
                "spec.autoscaling".into(),
                "gives neither target ({concurrency: N}) nor hpa ({cpuUtilization: PERCENT}): \
                 give one, or omit autoscaling"
                    .into(),
            )),
            _ => {}
        }
        if autoscaling
            .target
            .as_ref()
            .is_some_and(|t| t.concurrency == 0)
        {
            out.push((
                "spec.autoscaling.target.concurrency".into(),
                "must be at least 1 in-flight request per replica".into(),
            ));
        }
        if let Some(window) = autoscaling.target.as_ref().and_then(|t| t.window.as_ref()) {
            let ms = window.get().as_millis();
            let (low, high) = (
                crate::serving::autoscale::MIN_STABLE_WINDOW_MS as u128,
                crate::serving::autoscale::MAX_STABLE_WINDOW_MS as u128,
            );
            if !(low..=high).contains(&ms) {
                out.push((
                    "spec.autoscaling.target.window".into(),
                    format!("{window} is not between 6s and 1h"),
                ));
            }
        }
        if let Some(hpa) = &autoscaling.hpa
            && !(1..=100).contains(&hpa.cpu_utilization)
        {
            out.push((
                "spec.autoscaling.hpa.cpuUtilization".into(),
                format!("{} is not a percentage from 1 to 100", hpa.cpu_utilization),
            ));
        }
    }
    if let Some(rollout) = &spec.rollout {
        known(
            &rollout.candidate,
            "spec.rollout.candidate".into(),
            &mut out,
        );
        check_rollout(
            rollout,
            &declared,
            names.contains_key(rollout.candidate.as_str()),
            &mut out,
        );
    }
    if let Some(sampling) = &spec.sampling {
        if !(sampling.rate.is_finite() && (0.0..=1.0).contains(&sampling.rate)) {
            out.push((
                "spec.sampling.rate".into(),
                format!(
                    "{} is not a fraction from 0 to 1 (0.05 records one request in twenty)",
                    sampling.rate
                ),
            ));
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, header) in sampling.attributes.iter().enumerate() {
            let path = format!("spec.sampling.attributes[{i}]");
            if let Err(message) = check_header(header) {
                out.push((path, message));
            } else if let Some(first) = seen.insert(header.to_ascii_lowercase(), i) {
                out.push((
                    path,
                    format!(
                        "{} is listed twice (also attributes[{first}])",
                        quote(header)
                    ),
                ));
            }
        }
    }
    if let Some(router) = &spec.router {
        if let Some(Err(message)) = router.sticky_header.as_deref().map(check_header) {
            out.push(("spec.router.stickyHeader".into(), message));
        }
        if let Some(retries) = router.retries
            && retries > MAX_ROUTER_RETRIES
        {
            out.push((
                "spec.router.retries".into(),
                format!("{retries} retries: give 0 to {MAX_ROUTER_RETRIES}"),
            ));
        }
        if let Some(gateway) = &router.gateway {
            check_gateway(gateway, &mut out);
        }
    }
    if let Some(monitoring) = &spec.monitoring {
        check_monitoring(spec, monitoring, &mut out);
    }
    out.into_iter()
        .map(|(path, message)| Diagnostic::new(source, path, message))
        .collect()
}

/// The versions' own checks; the well-formed names, each with its index.
fn check_versions<'a>(
    versions: &'a [ModelVersion],
    out: &mut Vec<Finding>,
) -> BTreeMap<&'a str, usize> {
    let mut names = BTreeMap::new();
    if versions.is_empty() {
        out.push((
            "spec.versions".into(),
            "an endpoint needs at least one version".into(),
        ));
    }
    if versions.len() > MAX_VERSIONS {
        out.push((
            "spec.versions".into(),
            format!(
                "{} versions: an endpoint serves at most {MAX_VERSIONS}",
                versions.len()
            ),
        ));
    }
    for (i, version) in versions.iter().enumerate() {
        let path = format!("spec.versions[{i}]");
        match check_label("version", &version.name) {
            Err(message) => out.push((join(&path, "name"), message)),
            Ok(()) if version.name == RESERVED_VERSION => out.push((
                join(&path, "name"),
                format!(
                    "{} is the router's name (its Deployment is NAME-router): name the version \
                     otherwise",
                    quote(&version.name)
                ),
            )),
            Ok(()) => {
                if let Some(first) = names.insert(version.name.as_str(), i) {
                    out.push((
                        join(&path, "name"),
                        format!(
                            "duplicate version name {} (also spec.versions[{first}])",
                            quote(&version.name)
                        ),
                    ));
                }
            }
        }
        check_model(version, &join(&path, "model"), out);
        let (min, max) = version.replica_bounds();
        let replicas = join(&path, "replicas");
        if min == 0 {
            out.push((
                join(&replicas, "min"),
                "must be at least 1 (scale to zero is not supported)".into(),
            ));
        }
        if version.replicas.as_ref().is_some_and(|r| r.max == Some(0)) {
            out.push((join(&replicas, "max"), "must be at least 1".into()));
        } else if max < min {
            out.push((
                join(&replicas, "max"),
                format!("max ({max}) is less than min ({min})"),
            ));
        }
        if let Some(resources) = &version.resources {
            for (field, value) in [("cpu", &resources.cpu), ("memory", &resources.memory)] {
                if let Some(Err(message)) = value.as_deref().map(parse_quantity) {
                    out.push((format!("{path}.resources.{field}"), message));
                }
            }
        }
    }
    names
}

fn check_model(version: &ModelVersion, path: &str, out: &mut Vec<Finding>) {
    match version.model.source() {
        Err(message) => out.push((path.to_string(), message)),
        Ok(ModelSource::Digest(digest)) => {
            let hex = digest.strip_prefix("sha256:").unwrap_or_default();
            let ok = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                out.push((
                    join(path, "digest"),
                    format!(
                        "invalid digest {}: write sha256: and 64 lowercase hexadecimal digits",
                        quote(&digest)
                    ),
                ));
            }
        }
        Ok(ModelSource::Output {
            run,
            step,
            artifact,
        }) => {
            if let Err(message) = check_object_name(&run) {
                out.push((join(path, "run"), message));
            }
            if let Err(message) = check_step_name(&step) {
                out.push((join(path, "step"), message));
            }
            if let Err(message) = check_identifier("artifact", &artifact) {
                out.push((join(path, "artifact"), message));
            }
        }
    }
}

fn check_rollout(
    rollout: &RolloutSpec,
    declared: &[(String, u32)],
    candidate_known: bool,
    out: &mut Vec<Finding>,
) {
    if candidate_known
        && declared
            .iter()
            .all(|(name, weight)| *name == rollout.candidate || *weight == 0)
    {
        out.push((
            "spec.rollout.candidate".into(),
            format!(
                "the other versions take no traffic in spec.traffic: there is nothing for {} to \
                 take over from",
                quote(&rollout.candidate)
            ),
        ));
    }
    if let Some(steps) = &rollout.steps {
        check_steps("spec.rollout.steps", steps, out);
    }
    if rollout.interval.get().is_zero() {
        out.push((
            "spec.rollout.interval".into(),
            "must be positive: each step is observed for this long".into(),
        ));
    }
    if rollout.min_requests == Some(0) {
        out.push((
            "spec.rollout.minRequests".into(),
            "must be at least 1: a gate judged on no requests would pass on no evidence".into(),
        ));
    }
    let mut seen = BTreeMap::new();
    for (i, gate) in rollout.gates.iter().enumerate() {
        let path = format!("spec.rollout.gates[{i}]");
        if let Some(first) = seen.insert(gate.metric, i) {
            out.push((
                join(&path, "metric"),
                format!(
                    "a second {} gate (also gates[{first}]): give each metric one bound",
                    gate.metric.as_str()
                ),
            ));
        }
        if let Err(message) = gate.threshold() {
            out.push((join(&path, "max"), message));
        }
    }
    super::monitoring::check_evaluation_gates(
        "spec.rollout.evaluationGates",
        &rollout.evaluation_gates,
        out,
    );
    if rollout.min_labels == Some(0) {
        out.push((
            "spec.rollout.minLabels".into(),
            "must be at least 1: an evaluation gate judged on no labels would pass on no \
             evidence"
                .into(),
        ));
    }
}

/// A rollout's steps (at `path`): at least one, each a percentage above the one before,
/// the last 100.
pub(super) fn check_steps(path: &str, steps: &[u32], out: &mut Vec<Finding>) {
    if steps.is_empty() {
        out.push((
            path.to_string(),
            "give at least one step, the last 100 (or omit steps for 10, 25, 50, 100)".into(),
        ));
    }
    for (i, weight) in steps.iter().enumerate() {
        let at = format!("{path}[{i}]");
        if !(1..=100).contains(weight) {
            out.push((at, format!("{weight} is not a percentage from 1 to 100")));
        } else if i > 0 && steps[i - 1] >= *weight {
            out.push((
                at,
                format!(
                    "{weight} does not follow {}: steps must increase",
                    steps[i - 1]
                ),
            ));
        }
    }
    if let Some(last) = steps.last()
        && *last != 100
    {
        out.push((
            path.to_string(),
            format!("the last step is {last}: end at 100, where the candidate is promoted"),
        ));
    }
}

/// The message for a weight or percentage above 100.
fn percent_message(value: u32) -> String {
    format!("{value} is not a percentage from 0 to 100")
}

fn unknown_version(name: &str, names: &BTreeMap<&str, usize>) -> String {
    let mut known: Vec<(&str, usize)> = names.iter().map(|(n, i)| (*n, *i)).collect();
    known.sort_by_key(|(_, i)| *i);
    let known: Vec<&str> = known.into_iter().map(|(n, _)| n).collect();
    let hint = suggest::unknown_name_hint(name, &known, "versions");
    format!("unknown version {}{hint}", quote(name))
}

/// An HTTP header name (an RFC 9110 token).
pub(super) fn check_header(name: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if !name.is_empty() && name.chars().all(token) {
        Ok(())
    } else {
        Err(format!(
            "invalid header name {}: use letters, digits and -, e.g. x-user",
            quote(name)
        ))
    }
}
