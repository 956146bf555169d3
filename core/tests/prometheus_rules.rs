//! The Prometheus rules generated from an Endpoint's `spec.monitoring`, checked by the real
//! `promtool`: `promtool check rules` accepts the file, and `promtool test rules` replays
//! synthetic series of toucan's gauges through it, for each alert both where it must fire
//! (after its `for`, and still during its `keep_firing_for`) and where it must not (too few
//! samples, an interval that still reaches the floor, overlapping intervals).
//!
//! promtool comes from `TOUCAN_TEST_PROMTOOL` (`tests/alerting/up DIR` writes it to
//! `DIR/env`; `make test` exports it). Without it the test is skipped, or fails when
//! `TOUCAN_REQUIRE_ALERTING=1` (as `make test` sets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use toucan_core::manifest::{Document, load};
use toucan_core::monitoring::rules::{prometheus_rule, rule_file_yaml};

const PROMTOOL_ENV: &str = "TOUCAN_TEST_PROMTOOL";
const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_ALERTING";

/// The serving example's endpoint with a second version and monitoring: drift on at least 500
/// samples, an accuracy floor and a log-loss ceiling, both held 5 minutes.
const ENDPOINT: &str = r#"apiVersion: toucan.dev/v1alpha1
kind: Endpoint
metadata:
  name: fashion
spec:
  versions:
    - name: v1
      model: {run: fashion-mnist, step: export, artifact: bundle}
      replicas: {min: 1, max: 2}
    - name: v2
      model: {run: fashion-mnist-2, step: export, artifact: bundle}
  traffic: [{version: v1, weight: 90}, {version: v2, weight: 10}]
  sampling: {rate: 0.1}
  monitoring:
    slices: [{name: source, from: header.x-source}]
    drift:
      reference: {dataset: {run: fashion-mnist, step: ingest, artifact: dataset}}
      window: 1h
      minSamples: 500
      effectSize: 0.1
      fdr: 0.05
      for: 5m
    evaluation:
      window: 1h
      maturity: 10m
      floors: [{metric: accuracy, min: 0.85}, {metric: log_loss, max: 0.6}]
      for: 5m
"#;

/// promtool, or `None` after saying why the test skips; panics when alerting is required.
fn promtool() -> Option<String> {
    match std::env::var(PROMTOOL_ENV).ok().filter(|p| !p.is_empty()) {
        // Absolute: promtool runs in the test's own directory.
        Some(path) => Some(
            std::path::absolute(&path)
                .unwrap_or_else(|e| panic!("{PROMTOOL_ENV}={path}: {e}"))
                .display()
                .to_string(),
        ),
        None if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") => panic!(
            "{REQUIRE_ENV}=1 but {PROMTOOL_ENV} is unset; start Prometheus with \
             `tests/alerting/up DIR` and export the variables of DIR/env"
        ),
        None => {
            let _ = writeln!(
                std::io::stderr(),
                "skipping the promtool checks: {PROMTOOL_ENV} is unset (`tests/alerting/up DIR` \
                 writes it to DIR/env; `make test` sets it). {REQUIRE_ENV}=1 makes this skip a \
                 failure."
            );
            None
        }
    }
}

fn run(promtool: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

fn series(gauge: &str, labels: &[(&str, &str)], values: &str) -> Value {
    let mut all = vec![("namespace", "default"), ("endpoint", "fashion")];
    all.extend_from_slice(labels);
    let labels: Vec<String> = all.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    json!({"series": format!("{gauge}{{{}}}", labels.join(", ")), "values": values})
}

/// The labels every alert of the endpoint carries, with `extra`.
fn alert_labels(kind: &str, severity: &str, extra: &[(&str, &str)]) -> Value {
    let mut labels = json!({
        "severity": severity,
        "toucan_endpoint": "fashion",
        "namespace": "default",
        "endpoint": "fashion",
        "toucan_alert": kind,
    });
    for (k, v) in extra {
        labels[*k] = json!(v);
    }
    labels
}

fn check(eval_time: &str, alertname: &str, exp_alerts: Vec<Value>) -> Value {
    json!({"eval_time": eval_time, "alertname": alertname, "exp_alerts": exp_alerts})
}

/// Drift fires on `brightness` (1000 samples) 5 minutes after it is detected and keeps firing
/// 5 minutes after detection stops; `contrast`, detected on 100 samples, never fires.
fn drift_test() -> Value {
    let brightness = [
        ("slice", "all"),
        ("feature", "brightness"),
        ("test", "wasserstein"),
    ];
    let contrast = [("slice", "all"), ("feature", "contrast"), ("test", "ks")];
    let firing = json!({
        "exp_labels": alert_labels(
            "drift",
            "warning",
            &[("slice", "all"), ("feature", "brightness"), ("test", "wasserstein")],
        ),
        "exp_annotations": {
            "summary": "Drift on default/fashion: feature brightness, slice all",
            "description": "The wasserstein test finds feature brightness of slice all moved \
                            away from the reference over the last 1h: at least 500 samples, an \
                            effect of at least 0.1, significant at a false discovery rate of \
                            0.05.",
        },
    });
    json!({
        "interval": "1m",
        "input_series": [
            // Detected from 2m to 10m.
            series("toucan_endpoint_drift_detected", &brightness, "0 0 1x8 0x10"),
            series("toucan_endpoint_drift_samples", &brightness, "1000x20"),
            series("toucan_endpoint_drift_detected", &contrast, "1x20"),
            series("toucan_endpoint_drift_samples", &contrast, "100x20"),
        ],
        "alert_rule_test": [
            check("5m", "ToucanEndpointDrift", vec![]),
            check("8m", "ToucanEndpointDrift", vec![firing.clone()]),
            // Detection stopped at 11m; the alert holds until 16m.
            check("13m", "ToucanEndpointDrift", vec![firing]),
            check("17m", "ToucanEndpointDrift", vec![]),
        ],
    })
}

/// v1's accuracy interval drops wholly under 0.85 at 2m (fires at 7m); on slice
/// `source=web` its value is under the floor but its interval is not, which never fires; v2's
/// log-loss interval is above 0.6 from the start (fires at 5m), v1's never.
fn floor_test() -> Value {
    let accuracy = |version, slice| {
        [
            ("version", version),
            ("slice", slice),
            ("metric", "accuracy"),
        ]
    };
    let log_loss = |version| {
        [
            ("version", version),
            ("slice", "all"),
            ("metric", "log_loss"),
        ]
    };
    let accuracy_alert = json!({
        "exp_labels": alert_labels(
            "floor",
            "critical",
            &[("version", "v1"), ("slice", "all"), ("metric", "accuracy")],
        ),
        "exp_annotations": {
            "summary": "accuracy of default/fashion version v1 is below its floor 0.85",
            "description": "On slice all, the upper bound of accuracy's confidence interval is \
                            0.8: the labels rule out that version v1 meets its bound of 0.85.",
        },
    });
    let log_loss_alert = json!({
        "exp_labels": alert_labels(
            "floor",
            "critical",
            &[("version", "v2"), ("slice", "all"), ("metric", "log_loss")],
        ),
        "exp_annotations": {
            "summary": "log_loss of default/fashion version v2 is above its ceiling 0.6",
            "description": "On slice all, the lower bound of log_loss's confidence interval is \
                            0.7: the labels rule out that version v2 meets its bound of 0.6.",
        },
    });
    json!({
        "interval": "1m",
        "input_series": [
            series("toucan_endpoint_evaluation_upper", &accuracy("v1", "all"), "0.95 0.95 0.8x10"),
            series("toucan_endpoint_evaluation", &accuracy("v1", "source=web"), "0.8x12"),
            series("toucan_endpoint_evaluation_upper", &accuracy("v1", "source=web"), "0.9x12"),
            series("toucan_endpoint_evaluation_lower", &log_loss("v1"), "0.5x12"),
            series("toucan_endpoint_evaluation_lower", &log_loss("v2"), "0.7x12"),
        ],
        "alert_rule_test": [
            check("4m", "ToucanEndpointMetricBelowFloor", vec![]),
            check("6m", "ToucanEndpointMetricBelowFloor", vec![log_loss_alert.clone()]),
            check(
                "8m",
                "ToucanEndpointMetricBelowFloor",
                vec![accuracy_alert, log_loss_alert],
            ),
        ],
    })
}

/// v2's accuracy interval falls wholly under v1's at 2m (fires at 7m); its ECE interval is
/// wholly above v1's from the start (fires at 5m); its log loss is worse than v1's but the
/// intervals overlap, which never fires.
fn regression_test() -> Value {
    let of = |version, metric| [("version", version), ("slice", "all"), ("metric", metric)];
    let alert = |metric: &str, value: &str| {
        json!({
            "exp_labels": alert_labels(
                "regression",
                "warning",
                &[("version", "v2"), ("slice", "all"), ("metric", metric),
                  ("previous_version", "v1")],
            ),
            "exp_annotations": {
                "summary": format!("default/fashion version v2 is worse than v1 in {metric}"),
                "description": format!(
                    "On slice all, the confidence interval of {metric} of version v2 lies \
                     wholly on the worse side of version v1's (its nearer bound is {value})."
                ),
            },
        })
    };
    json!({
        "interval": "1m",
        "input_series": [
            series("toucan_endpoint_evaluation_lower", &of("v1", "accuracy"), "0.9x12"),
            series("toucan_endpoint_evaluation_upper", &of("v1", "accuracy"), "0.95x12"),
            series("toucan_endpoint_evaluation_lower", &of("v2", "accuracy"), "0.92 0.92 0.8x10"),
            series("toucan_endpoint_evaluation_upper", &of("v2", "accuracy"), "0.97 0.97 0.85x10"),
            series("toucan_endpoint_evaluation_lower", &of("v1", "ece"), "0.02x12"),
            series("toucan_endpoint_evaluation_upper", &of("v1", "ece"), "0.1x12"),
            series("toucan_endpoint_evaluation_lower", &of("v2", "ece"), "0.2x12"),
            series("toucan_endpoint_evaluation_upper", &of("v2", "ece"), "0.3x12"),
            series("toucan_endpoint_evaluation_lower", &of("v1", "log_loss"), "0.3x12"),
            series("toucan_endpoint_evaluation_upper", &of("v1", "log_loss"), "0.5x12"),
            series("toucan_endpoint_evaluation_lower", &of("v2", "log_loss"), "0.45x12"),
            series("toucan_endpoint_evaluation_upper", &of("v2", "log_loss"), "0.7x12"),
        ],
        "alert_rule_test": [
            check("4m", "ToucanEndpointRegression", vec![]),
            check("6m", "ToucanEndpointRegression", vec![alert("ece", "0.2")]),
            check(
                "8m",
                "ToucanEndpointRegression",
                vec![alert("ece", "0.2"), alert("accuracy", "0.85")],
            ),
        ],
    })
}

#[test]
fn promtool_accepts_the_generated_rules_and_they_fire_when_they_should() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The spec passes the manifest checks first: the rules are generated from valid specs only.
    let manifest = dir.path().join("endpoint.yaml");
    std::fs::write(&manifest, ENDPOINT).unwrap();
    let docs = load(std::slice::from_ref(&manifest)).unwrap_or_else(|e| panic!("{e:#?}"));
    let Document::Endpoint(endpoint) = &docs[0].document else {
        panic!("expected an Endpoint");
    };
    let rules = rule_file_yaml("default", "fashion", &endpoint.spec)
        .unwrap()
        .unwrap();
    std::fs::write(dir.path().join("rules.yaml"), &rules).unwrap();
    // What the operator applies holds the same groups.
    let rule = prometheus_rule("default", "fashion", &endpoint.spec).unwrap();
    let spec = serde_yaml_ng::to_string(&rule["spec"]).unwrap();
    std::fs::write(dir.path().join("prometheus-rule-spec.yaml"), spec).unwrap();

    let checked = run(
        &promtool,
        &["check", "rules", "rules.yaml", "prometheus-rule-spec.yaml"],
        dir.path(),
    );
    assert!(checked.contains("SUCCESS: 4 rules found"), "{checked}");

    let tests = json!({
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [drift_test(), floor_test(), regression_test()],
    });
    std::fs::write(
        dir.path().join("rules_test.yaml"),
        serde_yaml_ng::to_string(&tests).unwrap(),
    )
    .unwrap();
    run(&promtool, &["test", "rules", "rules_test.yaml"], dir.path());
}
