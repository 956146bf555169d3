//! Endpoints read from files: one that uses every field, and mistakes at every level, each
//! reported at its field path.

use std::path::Path;

use super::*;
use crate::api::{GateMetric, OnFailure};
use crate::serving::spec::{AutoscalingPolicy, GateThreshold, ModelSource};
use crate::serving::traffic::effective_traffic;

const HEAD: &str = "apiVersion: toucan.dev/v1alpha1\nkind: Endpoint\nmetadata: {name: fashion}\n";
const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

const EVERY_FIELD: &str = r#"
spec:
  versions:
    - name: v1
      model: {run: fashion-abc12, step: export, artifact: bundle}
      replicas: {min: 1, max: 4}
      resources: {cpu: "1", memory: 1Gi}
    - name: v2
      model: {run: fashion-def34, step: export, artifact: bundle}
  traffic: [{version: v1, weight: 90}, {version: v2, weight: 10}]
  shadow: {version: v2, percent: 100}
  batching: {maxBatchSize: 32, maxDelay: 5ms}
  autoscaling: {target: {concurrency: 8}}
  rollout:
    candidate: v2
    steps: [10, 25, 50, 100]
    interval: 10m
    gates: [{metric: error_rate, max: 0.01}, {metric: latency_p99, max: 50ms}]
    onFailure: Rollback
  sampling: {rate: 0.05, inputs: false, attributes: [x-source]}
  router: {stickyHeader: x-user, retries: 2}
"#;

/// Writes `text` to `endpoint.yaml` in a new directory and loads it; diagnostics are
/// printed with the file as `endpoint.yaml`.
fn load_text(text: &str) -> Result<Vec<LoadedDocument>, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("endpoint.yaml");
    std::fs::write(&file, text).unwrap();
    load(std::slice::from_ref(&file))
        .map_err(|e| e.iter().map(|d| strip(&d.to_string(), &file)).collect())
}

fn strip(line: &str, file: &Path) -> String {
    line.replace(&file.display().to_string(), "endpoint.yaml")
}

/// The diagnostics of an Endpoint whose spec is `spec` (YAML, from `spec:`).
fn errors(spec: &str) -> Vec<String> {
    match load_text(&format!("{HEAD}{spec}")) {
        Ok(docs) => panic!("loaded {} documents without errors", docs.len()),
        Err(e) => e,
    }
}

fn at(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .map(|line| format!("endpoint.yaml[0] {line}"))
        .collect()
}

#[test]
fn an_endpoint_with_every_field_loads() {
    let docs = load_text(&format!("{HEAD}{EVERY_FIELD}")).unwrap_or_else(|e| panic!("{e:#?}"));
    let [doc] = docs.as_slice() else {
        panic!("{} documents", docs.len());
    };
    let Document::Endpoint(endpoint) = &doc.document else {
        panic!("expected an Endpoint, got {}", doc.document.kind());
    };
    assert_eq!(doc.document.kind(), "Endpoint");
    assert_eq!(doc.document.name(), Some("fashion"));
    let spec = &endpoint.spec;
    assert_eq!(spec.versions[0].replica_bounds(), (1, 4));
    assert_eq!(spec.versions[1].replica_bounds(), (1, 1));
    assert_eq!(
        spec.versions[0].model.source(),
        Ok(ModelSource::Output {
            run: "fashion-abc12".into(),
            step: "export".into(),
            artifact: "bundle".into()
        })
    );
    assert_eq!(spec.autoscaling_policy(), AutoscalingPolicy::Concurrency(8));
    assert_eq!(
        spec.batching.as_ref().unwrap().max_delay(),
        std::time::Duration::from_millis(5)
    );
    let rollout = spec.rollout.as_ref().unwrap();
    assert_eq!(rollout.on_failure(), OnFailure::Rollback);
    assert_eq!(rollout.gates[1].metric, GateMetric::LatencyP99);
    assert_eq!(
        rollout.gates[0].threshold(),
        Ok(GateThreshold::ErrorRate(0.01))
    );
    assert_eq!(
        rollout.gates[1].threshold(),
        Ok(GateThreshold::LatencyMs(50.0))
    );
    assert_eq!(
        effective_traffic(spec, None),
        [("v1".to_string(), 90), ("v2".to_string(), 10)]
    );
    // It is no pipeline to run, and `select` says so.
    let refused = select(&docs).unwrap_err();
    assert_eq!(
        refused[0].to_string(),
        format!(
            "{} (document): an Endpoint is served, not run as a pipeline: use `toucan serve \
             FILE`",
            doc.source
        )
    );
}

#[test]
fn the_smallest_endpoint_loads_with_its_defaults() {
    let docs = load_text(&format!(
        "{HEAD}spec:\n  versions: [{{name: v1, model: {{digest: \"{DIGEST}\"}}}}]\n"
    ))
    .unwrap_or_else(|e| panic!("{e:#?}"));
    let Document::Endpoint(endpoint) = &docs[0].document else {
        panic!("expected an Endpoint");
    };
    assert_eq!(
        effective_traffic(&endpoint.spec, None),
        [("v1".to_string(), 100)]
    );
    assert_eq!(
        endpoint.spec.autoscaling_policy(),
        AutoscalingPolicy::Concurrency(100)
    );
}

#[test]
fn traffic_names_known_versions_and_sums_to_100() {
    let spec = format!(
        r#"spec:
  versions:
    - {{name: v1, model: {{digest: "{DIGEST}"}}}}
    - {{name: canary, model: {{digest: "{DIGEST}"}}}}
  traffic:
    - {{version: v1, weight: 90}}
    - {{version: canry, weight: 20}}
    - {{version: v1, weight: 0}}
    - {{version: v9, weight: 101}}
"#
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.traffic[1].version: unknown version \"canry\" (did you mean \"canary\"?)",
            "spec.traffic[2].version: \"v1\" is listed twice (also spec.traffic[0]): give each \
             version one weight",
            "spec.traffic[3].version: unknown version \"v9\" (expected one of: v1, canary)",
            "spec.traffic[3].weight: 101 is not a percentage from 0 to 100",
            "spec.traffic: the weights sum to 211: they must sum to 100",
        ])
    );
}

#[test]
fn versions_are_named_once_and_name_one_model() {
    let spec = r#"spec:
  versions:
    - {name: V1, model: {run: fashion-abc12, step: export}}
    - {name: v2, model: {run: fashion-abc12, digest: "sha256:abc"}}
    - {name: v2, model: {digest: "sha256:abc"}}
    - {name: v3, model: {}}
    - {name: v4, model: {run: Fashion, step: "export step", artifact: "1bundle"}}
"#;
    assert_eq!(
        errors(spec),
        at(&[
            "spec.versions[0].name: invalid version name \"V1\": use at most 63 lowercase \
             letters, digits and \"-\", starting and ending with a letter or digit",
            "spec.versions[0].model: gives run and step without artifact: a pipeline's output \
             needs run, step and artifact together (or give digest alone)",
            "spec.versions[1].model: gives both digest and run: give run, step and artifact (a \
             pipeline's output) or digest (a bundle by content), not both",
            "spec.versions[2].name: duplicate version name \"v2\" (also spec.versions[1])",
            "spec.versions[2].model.digest: invalid digest \"sha256:abc\": write sha256: and 64 \
             lowercase hexadecimal digits",
            "spec.versions[3].model: names no model: give run, step and artifact (a pipeline's \
             output) or digest (a bundle by content)",
            "spec.versions[4].model.run: invalid name \"Fashion\": use at most 253 lowercase \
             letters, digits, \"-\" and \".\", starting and ending with a letter or digit",
            "spec.versions[4].model.step: invalid step name \"export step\": use at most 63 \
             lowercase letters, digits, \"-\" and \"_\", starting with a letter or digit",
            "spec.versions[4].model.artifact: invalid artifact name \"1bundle\": use letters, \
             digits, \"-\" and \"_\", starting with a letter or \"_\"",
        ])
    );
    assert_eq!(
        errors("spec:\n  versions: []\n"),
        at(&["spec.versions: an endpoint needs at least one version"])
    );
}

#[test]
fn numbers_are_within_their_ranges() {
    let spec = format!(
        r#"spec:
  versions:
    - {{name: v1, model: {{digest: "{DIGEST}"}}, replicas: {{min: 0, max: 0}}}}
    - name: v2
      model: {{digest: "{DIGEST}"}}
      replicas: {{min: 3, max: 2}}
      resources: {{cpu: lots}}
  shadow: {{version: v1, percent: 101}}
  batching: {{maxBatchSize: 0, maxDelay: 2s}}
  autoscaling: {{target: {{concurrency: 0}}, hpa: {{cpuUtilization: 150}}}}
  sampling: {{rate: 1.5, attributes: [x-source, "bad header", X-Source]}}
  router: {{stickyHeader: "x user", retries: 11}}
"#
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.versions[0].replicas.min: must be at least 1 (scale to zero is not supported)",
            "spec.versions[0].replicas.max: must be at least 1",
            "spec.versions[1].replicas.max: max (2) is less than min (3)",
            "spec.versions[1].resources.cpu: invalid quantity \"lots\": expected a number with \
             an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), \
             e.g. 500m or 4Gi",
            "spec.shadow.percent: 101 is not a percentage from 0 to 100",
            "spec.shadow.version: \"v1\" already takes every request: shadow a version that \
             does not",
            "spec.batching.maxBatchSize: must be at least 1",
            "spec.batching.maxDelay: 2s is longer than 1s: a request would wait longer for its \
             batch than batching saves",
            "spec.autoscaling: gives both target and hpa: give one",
            "spec.autoscaling.target.concurrency: must be at least 1 in-flight request per \
             replica",
            "spec.autoscaling.hpa.cpuUtilization: 150 is not a percentage from 1 to 100",
            "spec.sampling.rate: 1.5 is not a fraction from 0 to 1 (0.05 records one request in \
             twenty)",
            "spec.sampling.attributes[1]: invalid header name \"bad header\": use letters, \
             digits and -, e.g. x-user",
            "spec.sampling.attributes[2]: \"X-Source\" is listed twice (also attributes[0])",
            "spec.router.stickyHeader: invalid header name \"x user\": use letters, digits and \
             -, e.g. x-user",
            "spec.router.retries: 11 retries: give 0 to 10",
        ])
    );
}

#[test]
fn a_rollout_climbs_to_100_on_gates_that_read() {
    let spec = format!(
        r#"spec:
  versions:
    - {{name: v1, model: {{digest: "{DIGEST}"}}}}
    - {{name: v2, model: {{digest: "{DIGEST}"}}}}
  rollout:
    candidate: v3
    steps: [10, 5, 120, 90]
    interval: 0s
    minRequests: 0
    onFailure: Pause
    gates:
      - {{metric: error_rate, max: 2}}
      - {{metric: latency_p99, max: 50}}
      - {{metric: error_rate, max: "1%"}}
      - {{metric: latency_p50, max: 5 ms}}
"#
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.rollout.candidate: unknown version \"v3\" (expected one of: v1, v2)",
            "spec.rollout.steps[1]: 5 does not follow 10: steps must increase",
            "spec.rollout.steps[2]: 120 is not a percentage from 1 to 100",
            "spec.rollout.steps[3]: 90 does not follow 120: steps must increase",
            "spec.rollout.steps: the last step is 90: end at 100, where the candidate is promoted",
            "spec.rollout.interval: must be positive: each step is observed for this long",
            "spec.rollout.minRequests: must be at least 1: a gate judged on no requests would \
             pass on no evidence",
            "spec.rollout.gates[0].max: the number 2 is not an error rate: an error rate is a \
             fraction from 0 to 1 (0.01) or a percentage (\"1%\")",
            "spec.rollout.gates[1].max: the number 50 is not a latency: write a duration such \
             as 50ms or 1.5s",
            "spec.rollout.gates[2].metric: a second error_rate gate (also gates[0]): give each \
             metric one bound",
            "spec.rollout.gates[3].max: invalid duration \"5 ms\": unknown unit \" ms\" (write \
             e.g. 30s, 5m, 1h30m or 500ms; units are ns, us, ms, s, m and h)",
        ])
    );
    // A candidate that already takes every request has no one to take traffic from.
    let spec = format!(
        r#"spec:
  versions:
    - {{name: v1, model: {{digest: "{DIGEST}"}}}}
    - {{name: v2, model: {{digest: "{DIGEST}"}}}}
  traffic: [{{version: v1, weight: 0}}, {{version: v2, weight: 100}}]
  rollout: {{candidate: v2, interval: 10m, steps: []}}
"#
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.rollout.candidate: the other versions take no traffic in spec.traffic: there \
             is nothing for \"v2\" to take over from",
            "spec.rollout.steps: give at least one step, the last 100 (or omit steps for 10, \
             25, 50, 100)",
        ])
    );
}

#[test]
fn structural_mistakes_name_their_field() {
    let spec = r#"spec:
  versions:
    - name: v1
      modle: {digest: x}
      replicas: {min: 1, maximum: 2}
  shadow: {version: v1, percent: half}
  autoscaling: {target: {concurency: 8}}
  rollout:
    candidate: v1
    interval: 10 minutes
    onFailure: rollback
    gates: [{metric: error-rate, max: 0.01}]
  routing: {retries: 2}
"#;
    assert_eq!(
        errors(spec),
        at(&[
            "spec.versions[0].modle: unknown field (did you mean \"model\"?)",
            "spec.versions[0].replicas.maximum: unknown field (did you mean \"max\"?)",
            "spec.versions[0].model: missing required field",
            "spec.shadow.percent: expected an integer, got the string \"half\"",
            "spec.autoscaling.target.concurency: unknown field (did you mean \"concurrency\"?)",
            "spec.autoscaling.target.concurrency: missing required field",
            "spec.rollout.gates[0].metric: unknown value \"error-rate\" (expected one of: \
             error_rate, latency_p50, latency_p90, latency_p99; did you mean \"error_rate\"?)",
            "spec.rollout.onFailure: unknown value \"rollback\" (expected one of: Rollback, \
             Pause; did you mean \"Rollback\"?)",
            "spec.routing: unknown field (did you mean \"router\"?)",
            // Reported once: not also as a missing required field.
            "spec.rollout.interval: invalid duration \"10 minutes\": unknown unit \" minutes\" \
             (write e.g. 30s, 5m, 1h30m or 500ms; units are ns, us, ms, s, m and h)",
        ])
    );
    let text = format!("{HEAD}{EVERY_FIELD}").replace("kind: Endpoint", "kind: Endpiont");
    assert_eq!(
        load_text(&text).unwrap_err(),
        [
            "endpoint.yaml[0] kind: unknown kind \"Endpiont\" (expected Pipeline, PipelineRun, \
             TrainingJob, TuningStudy or Endpoint; did you mean \"Endpoint\"?)"
        ]
    );
}

#[test]
fn two_endpoints_of_one_name_are_refused() {
    let one = format!("{HEAD}spec:\n  versions: [{{name: v1, model: {{digest: \"{DIGEST}\"}}}}]\n");
    assert_eq!(
        load_text(&format!("{one}---\n{one}")).unwrap_err(),
        [
            "endpoint.yaml[1] metadata.name: duplicate Endpoint \"fashion\" (also in endpoint.yaml[0])"
        ]
    );
}
