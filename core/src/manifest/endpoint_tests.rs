//! Endpoints read from files: one that uses every field, and mistakes at every level, each
//! reported at its field path.

use std::path::Path;

use super::*;
use crate::api::{EvaluationMetric, GateMetric, OnFailure};
use crate::monitoring::spec::{FloorBound, SliceSource};
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
  router:
    stickyHeader: x-user
    retries: 2
    gateway:
      parentRefs: [{name: public, namespace: gateways, sectionName: https}]
      hostnames: [models.example.com]
  monitoring:
    slices: [{name: source, from: header.x-source}, {name: region, from: attribute.region}]
    drift:
      reference: {dataset: {run: fashion-abc12, step: ingest, artifact: dataset}}
      window: 1h
      minSamples: 500
      effectSize: 0.1
      fdr: 0.05
      features: [brightness, contrast, prediction]
      for: 10m
    evaluation:
      window: 1h
      maturity: 10m
      floors: [{metric: accuracy, min: 0.85}, {metric: log_loss, max: 0.6}]
      for: 5m
    retrain:
      pipelineRef: {name: fashion-mnist}
      params:
        - {name: extra_data, value: "{{alert.window.samples}}"}
        - {name: note, value: "retrained on {{ alert.reason }} ({{alert.window.start}} to {{alert.window.end}})"}
        - {name: epochs, value: 3}
      cooldown: 6h
      maxPerDay: 2
      promote:
        rollout:
          steps: [10, 50, 100]
          interval: 2h
          gates: [{metric: accuracy, minDelta: 0.0}, {metric: ece, minDelta: -0.01}]
          onFailure: Rollback
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
    let monitoring = spec.monitoring.as_ref().unwrap();
    assert_eq!(
        monitoring.slices[0].source(),
        Ok(SliceSource::Header("x-source".into()))
    );
    let drift = monitoring.drift.as_ref().unwrap();
    assert_eq!(drift.features(), ["brightness", "contrast", "prediction"]);
    assert_eq!(drift.hold_ms(), 600_000);
    let evaluation = monitoring.evaluation.as_ref().unwrap();
    assert_eq!(evaluation.floors[1].bound(), Ok(FloorBound::Max(0.6)));
    let retrain = monitoring.retrain.as_ref().unwrap();
    assert_eq!(retrain.cooldown_ms(), 6 * 3_600_000);
    let promote = retrain.promote.as_ref().unwrap().rollout.as_ref().unwrap();
    assert_eq!(promote.steps(), [10, 50, 100]);
    assert_eq!(promote.gates[1].metric, EvaluationMetric::Ece);
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
    - {name: router, model: {digest: "sha256:abc"}}
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
            "spec.versions[5].name: \"router\" is the router's name (its Deployment is \
             NAME-router): name the version otherwise",
            "spec.versions[5].model.digest: invalid digest \"sha256:abc\": write sha256: and 64 \
             lowercase hexadecimal digits",
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
  autoscaling: {{target: {{concurrency: 0, window: 2s}}, hpa: {{cpuUtilization: 150}}}}
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
            "spec.autoscaling.target.window: 2s is not between 6s and 1h",
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

/// An endpoint with one version, sampled, and `monitoring` (YAML, indented under it).
fn monitored(monitoring: &str) -> String {
    format!(
        "spec:\n  versions: [{{name: v1, model: {{digest: \"{DIGEST}\"}}}}]\n  sampling: {{rate: \
         0.1}}\n  monitoring:\n{monitoring}"
    )
}

#[test]
fn monitoring_thresholds_are_within_their_ranges() {
    let spec = monitored(
        r#"    slices:
      - {name: source, from: header.x-source}
      - {name: source, from: "header.x source"}
      - {name: Region, from: attribute.1st}
      - {name: device, from: cookie.device}
    drift:
      reference: {dataset: {run: fashion-abc12, step: ingest, artifact: dataset}}
      window: 0s
      minSamples: 0
      effectSize: 0
      fdr: 1.5
      features: [brightness, brightnes, brightness]
    evaluation:
      window: 0s
      floors:
        - {metric: accuracy, min: 1.5}
        - {metric: log_loss, min: 0.5}
        - {metric: accuracy, min: 0.8}
        - {metric: macro_f1, min: 0.5, max: 0.9}
        - {metric: ece, max: 0.1}
"#,
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.monitoring.slices[1].name: duplicate slice name \"source\" (also slices[0])",
            "spec.monitoring.slices[1].from: invalid header name \"x source\": use letters, \
             digits and -, e.g. x-user",
            "spec.monitoring.slices[2].from: invalid attribute name \"1st\": use letters, \
             digits, \"-\" and \"_\", starting with a letter or \"_\"",
            "spec.monitoring.slices[3].from: \"cookie.device\" names no source: write \
             header.NAME (a request header) or attribute.NAME (a sample attribute)",
            "spec.monitoring.drift.window: must be positive: the current samples are taken over \
             this window",
            "spec.monitoring.drift.minSamples: must be at least 1: a feature cannot drift on no \
             samples",
            "spec.monitoring.drift.effectSize: 0 is not above 0: the smallest effect that counts \
             as drift",
            "spec.monitoring.drift.fdr: 1.5 is not a fraction in (0, 1)",
            "spec.monitoring.drift.features[1]: unknown feature \"brightnes\" (did you mean \
             \"brightness\"?)",
            "spec.monitoring.drift.features[2]: \"brightness\" is listed twice (also \
             features[0])",
            "spec.monitoring.evaluation.window: must be positive: metrics are computed over \
             windows this long",
            "spec.monitoring.evaluation.floors[0].min: 1.5 is not a fraction from 0 to 1",
            "spec.monitoring.evaluation.floors[1].min: log_loss is better when lower, so a floor \
             on it is a max: write max: 0.5",
            "spec.monitoring.evaluation.floors[2].metric: a second accuracy floor (also \
             floors[0]): give each metric one bound",
            "spec.monitoring.evaluation.floors[3]: gives both min and max: bound macro_f1 on \
             one side",
        ])
    );
}

#[test]
fn a_drift_reference_gives_a_dataset_or_a_window() {
    let reference = |reference: &str| {
        errors(&monitored(&format!(
            "    drift: {{reference: {reference}}}\n"
        )))
    };
    assert_eq!(
        reference("{}"),
        at(&[
            "spec.monitoring.drift.reference: gives neither dataset ({run, step, artifact}) nor \
             window ({start, end}): give one"
        ])
    );
    assert_eq!(
        reference(
            "{dataset: {run: r, step: ingest, artifact: dataset}, window: {start: \
             \"2025-01-01T00:00:00Z\", end: \"2025-01-02T00:00:00Z\"}}"
        ),
        at(&[
            "spec.monitoring.drift.reference: gives both dataset and window: compare with a \
             dataset or with a window of production samples, not both"
        ])
    );
    assert_eq!(
        reference("{window: {start: \"2025-01-02T00:00:00Z\", end: \"2025-01-01T00:00:00Z\"}}"),
        at(&[
            "spec.monitoring.drift.reference.window.end: \"2025-01-01T00:00:00Z\" is not after \
             start (\"2025-01-02T00:00:00Z\")"
        ])
    );
    let unreadable = reference("{window: {start: yesterday, end: \"2025-01-01T00:00:00Z\"}}");
    assert_eq!(unreadable.len(), 1, "{unreadable:?}");
    assert!(
        unreadable[0].starts_with(
            "endpoint.yaml[0] spec.monitoring.drift.reference.window.start: \"yesterday\" is \
             not an RFC 3339 timestamp"
        ),
        "{unreadable:?}"
    );
    assert_eq!(
        reference("{dataset: {run: Fashion, step: ingest, artifact: 1data}}"),
        at(&[
            "spec.monitoring.drift.reference.dataset.run: invalid name \"Fashion\": use at most \
             253 lowercase letters, digits, \"-\" and \".\", starting and ending with a letter or \
             digit",
            "spec.monitoring.drift.reference.dataset.artifact: invalid artifact name \"1data\": \
             use letters, digits, \"-\" and \"_\", starting with a letter or \"_\"",
        ])
    );
}

#[test]
fn retraining_uses_the_alerts_variables_and_climbs_to_100() {
    let spec = monitored(
        r#"    evaluation: {floors: [{metric: accuracy, min: 0.85}]}
    retrain:
      pipelineRef: {name: fashion-mnist}
      params:
        - {name: extra_data, value: "{{alert.window.sample}}"}
        - {name: since, value: "{{params.start}}"}
        - {name: extra_data, value: "{{alert.reason"}
      cooldown: 0s
      maxPerDay: 0
      promote:
        rollout:
          steps: [50, 10, 90]
          interval: 0s
          gates:
            - {metric: accuracy, minDelta: 2}
            - {metric: accuracy, minDelta: 0}
            - {metric: log_loss, minDelta: 2}
"#,
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.monitoring.retrain.params[0].value: unknown variable \
             \"{{alert.window.sample}}\" (expected one of: alert.window.samples, \
             alert.window.start, alert.window.end, alert.reason; did you mean \
             \"alert.window.samples\"?)",
            "spec.monitoring.retrain.params[1].value: unknown variable \"{{params.start}}\" \
             (expected one of: alert.window.samples, alert.window.start, alert.window.end, \
             alert.reason)",
            "spec.monitoring.retrain.params[2].name: \"extra_data\" is given twice (also \
             params[0])",
            "spec.monitoring.retrain.params[2].value: unclosed placeholder starting at byte 0",
            "spec.monitoring.retrain.cooldown: must be positive: without it one long alert would \
             start a run at every evaluation",
            "spec.monitoring.retrain.maxPerDay: must be at least 1 (omit retrain to never \
             retrain)",
            "spec.monitoring.retrain.promote.rollout.steps[1]: 10 does not follow 50: steps must \
             increase",
            "spec.monitoring.retrain.promote.rollout.steps: the last step is 90: end at 100, \
             where the candidate is promoted",
            "spec.monitoring.retrain.promote.rollout.interval: must be positive: each step is \
             observed for this long",
            "spec.monitoring.retrain.promote.rollout.gates[0].minDelta: 2 is not a difference of \
             accuracy (from -1 to 1)",
            "spec.monitoring.retrain.promote.rollout.gates[1].metric: a second accuracy gate \
             (also gates[0]): give each metric one bound",
        ])
    );
    // Retraining with nothing to raise an alert, and monitoring without sampling.
    let spec = format!(
        "spec:\n  versions: [{{name: v1, model: {{digest: \"{DIGEST}\"}}}}]\n  monitoring:\n    \
         retrain: {{pipelineRef: {{name: fashion-mnist}}}}\n"
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.monitoring: monitoring watches sampled requests: set spec.sampling.rate above 0",
            "spec.monitoring.retrain: nothing raises an alert to retrain on: add drift, or \
             evaluation floors",
        ])
    );
}

#[test]
fn the_retention_covers_a_day_the_cooldown_and_the_windows() {
    let spec = |retention: &str, rest: &str| {
        monitored(&format!(
            "    retention: {retention}\n    evaluation: {{window: 20h, floors: [{{metric: \
             accuracy, min: 0.8}}]}}\n{rest}"
        ))
    };
    let with = |retention: &str, rest: &str| errors(&spec(retention, rest));
    assert_eq!(
        with("12h", ""),
        at(&[
            "spec.monitoring.retention: 12h is shorter than a day (maxPerDay counts the \
              retraining runs of 24 hours): keep at least 24h"
        ])
    );
    assert_eq!(
        with(
            "30h",
            "    retrain: {pipelineRef: {name: fashion-mnist}, cooldown: 48h}\n"
        ),
        at(&[
            "spec.monitoring.retention: 30h is shorter than the retraining cooldown: keep at \
              least 48h"
        ])
    );
    assert_eq!(
        with("30h", ""),
        at(&[
            "spec.monitoring.retention: 30h is shorter than the windows a pass reads (the \
              drift window, two evaluation windows and the labels' maturity): keep at least \
              40h10m"
        ])
    );
    let fine = load_text(&format!("{HEAD}{}", spec("41h", "")));
    assert!(fine.is_ok(), "{fine:?}");
}

#[test]
fn monitoring_mistakes_in_structure_name_their_field() {
    let spec = monitored(
        r#"    evaluation:
      floors: [{metric: acuracy, min: 0.85}]
      maturity: -5m
    drift: {reference: {dataset: {run: r, step: s, artifact: a}}, minSample: 5}
"#,
    );
    assert_eq!(
        errors(&spec),
        at(&[
            "spec.monitoring.evaluation.floors[0].metric: unknown value \"acuracy\" (expected \
             one of: accuracy, macro_f1, macro_precision, macro_recall, log_loss, ece; did you \
             mean \"accuracy\"?)",
            "spec.monitoring.drift.minSample: unknown field (did you mean \"minSamples\"?)",
            "spec.monitoring.evaluation.maturity: invalid duration \"-5m\": a duration cannot be \
             negative",
        ])
    );
}

#[test]
fn a_gateway_route_names_its_gateways_and_hosts() {
    let spec = format!(
        r#"spec:
  versions:
    - {{name: v1, model: {{digest: "{DIGEST}"}}}}
  router:
    gateway:
      parentRefs: [{{name: Public, namespace: "gate ways"}}]
      hostnames: [models.example.com, "*.example.com", localhost, "bad host.com"]
"#
    );
    let found = errors(&spec);
    assert_eq!(found.len(), 4, "{found:#?}");
    for expected in [
        "spec.router.gateway.parentRefs[0].name:",
        "spec.router.gateway.parentRefs[0].namespace:",
        "spec.router.gateway.hostnames[2]: invalid host name \"localhost\"",
        "spec.router.gateway.hostnames[3]: invalid host name \"bad host.com\"",
    ] {
        assert!(
            found.iter().any(|e| e.contains(expected)),
            "{expected} not in {found:#?}"
        );
    }
    let none = format!(
        "spec:\n  versions:\n    - {{name: v1, model: {{digest: \"{DIGEST}\"}}}}\n  router: {{gateway: {{parentRefs: []}}}}\n"
    );
    assert_eq!(
        errors(&none),
        at(&[
            "spec.router.gateway.parentRefs: names no Gateway: give at least one {name: GATEWAY}"
        ])
    );
}
