//! The Prometheus side of monitoring: the gauges toucan exports for every endpoint, and the
//! alerting rules generated from an Endpoint's `spec.monitoring` over them.
//!
//! The exporter (the operator's and the local runtime's `/metrics`) writes the gauges named
//! here with the labels named here; [`prometheus_rule`] turns the spec's thresholds into a
//! `PrometheusRule` (monitoring.coreos.com/v1) the operator applies next to the Endpoint, and
//! [`rule_file_yaml`] into the `groups:` of a plain Prometheus rule file (for the local runtime
//! and `promtool`). Both are pure and deterministic: the same spec gives the same bytes, so an
//! unchanged Endpoint never rewrites its rule.
//!
//! The rules repeat the guards the drift and evaluation engines already apply (the minimum
//! sample size, the intervals), so an alert never rests on a thinner sample than the spec asks
//! for even when a series is stale or came from an older exporter.
//!
//! `namespace` and `endpoint` are also labels prometheus-operator adds to every scraped target;
//! the scrape of toucan's metrics must keep the exported ones (`honorLabels: true` on a
//! ServiceMonitor, `honor_labels: true` in a scrape config), as for kube-state-metrics.

use serde_json::{Value, json};

use crate::api::labels::{MANAGED_BY, MANAGED_BY_LABEL};
use crate::api::{EndpointSpec, EvaluationMetric};
use crate::monitoring::spec::FloorBound;

/// One gauge family toucan exports: its name, its help text and its labels, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

/// The namespace of the Endpoint (`default` on the local runtime).
pub const NAMESPACE_LABEL: &str = "namespace";
/// The Endpoint's name.
pub const ENDPOINT_LABEL: &str = "endpoint";
/// The version of the endpoint the figure is about.
pub const VERSION_LABEL: &str = "version";
/// The slice: [`ALL_TRAFFIC`] for every request, `NAME=VALUE` for one value of a slice of
/// `spec.monitoring.slices` (`source=mobile`).
pub const SLICE_LABEL: &str = "slice";
/// An evaluation metric as `spec.monitoring.evaluation.floors` names it
/// ([`EvaluationMetric::as_str`]).
pub const METRIC_LABEL: &str = "metric";
/// A drift feature ([`super::spec::FEATURES`]; `channel_means` per channel as
/// `channel_means_0`, ...).
pub const FEATURE_LABEL: &str = "feature";
/// The drift test or distance, as Evidently names it ([`super::drift::StatTest::name`]).
pub const TEST_LABEL: &str = "test";
/// The slice label's value for every request of the endpoint. A slice value is always
/// `NAME=VALUE`, so it cannot be taken for this.
pub const ALL_TRAFFIC: &str = "all";

const EVALUATION_LABELS: &[&str] = &[
    NAMESPACE_LABEL,
    ENDPOINT_LABEL,
    VERSION_LABEL,
    SLICE_LABEL,
    METRIC_LABEL,
];
const DRIFT_LABELS: &[&str] = &[
    NAMESPACE_LABEL,
    ENDPOINT_LABEL,
    SLICE_LABEL,
    FEATURE_LABEL,
    TEST_LABEL,
];

/// The value of an evaluation metric over the newest matured window of one version and slice.
pub const EVALUATION: Gauge = Gauge {
    name: "toucan_endpoint_evaluation",
    help: "An evaluation metric over the newest matured window of labelled samples.",
    labels: EVALUATION_LABELS,
};
/// The lower bound of that value's confidence interval (Wilson for accuracy, a percentile
/// bootstrap for the others).
pub const EVALUATION_LOWER: Gauge = Gauge {
    name: "toucan_endpoint_evaluation_lower",
    help: "The lower bound of the evaluation metric's confidence interval.",
    labels: EVALUATION_LABELS,
};
/// The upper bound of that value's confidence interval.
pub const EVALUATION_UPPER: Gauge = Gauge {
    name: "toucan_endpoint_evaluation_upper",
    help: "The upper bound of the evaluation metric's confidence interval.",
    labels: EVALUATION_LABELS,
};
/// The labelled samples that window's figures are computed over (the same for every metric
/// of one version and slice, so no `metric` label).
pub const EVALUATION_SAMPLES: Gauge = Gauge {
    name: "toucan_endpoint_evaluation_samples",
    help: "Labelled samples in the newest matured evaluation window.",
    labels: &[NAMESPACE_LABEL, ENDPOINT_LABEL, VERSION_LABEL, SLICE_LABEL],
};
/// A feature's drift statistic or distance over the current window against the reference.
pub const DRIFT_SCORE: Gauge = Gauge {
    name: "toucan_endpoint_drift_score",
    help: "A feature's drift statistic or distance against the reference.",
    labels: DRIFT_LABELS,
};
/// The test's p-value, for tests that have one (absent for the distances).
pub const DRIFT_P_VALUE: Gauge = Gauge {
    name: "toucan_endpoint_drift_p_value",
    help: "The drift test's p-value, where the test has one.",
    labels: DRIFT_LABELS,
};
/// 1 when the feature drifted: at least `minSamples` samples, an effect of at least
/// `effectSize`, and significant after Benjamini-Hochberg at `fdr` across every feature and
/// slice; 0 otherwise.
pub const DRIFT_DETECTED: Gauge = Gauge {
    name: "toucan_endpoint_drift_detected",
    help: "1 when the feature drifted (sample size, effect size and false discovery rate \
           all passed), else 0.",
    labels: DRIFT_LABELS,
};
/// The samples of the current window the feature was compared on.
pub const DRIFT_SAMPLES: Gauge = Gauge {
    name: "toucan_endpoint_drift_samples",
    help: "Samples in the current drift window.",
    labels: DRIFT_LABELS,
};

/// Every gauge family, in the order an exporter registers them.
pub const GAUGES: [Gauge; 8] = [
    EVALUATION,
    EVALUATION_LOWER,
    EVALUATION_UPPER,
    EVALUATION_SAMPLES,
    DRIFT_SCORE,
    DRIFT_P_VALUE,
    DRIFT_DETECTED,
    DRIFT_SAMPLES,
];

/// The `slice` label of one value of a slice.
pub fn slice_label(slice: &str, value: &str) -> String {
    format!("{slice}={value}")
}

/// A feature drifted.
pub const DRIFT_ALERT: &str = "ToucanEndpointDrift";
/// A live metric crossed its floor.
pub const FLOOR_ALERT: &str = "ToucanEndpointMetricBelowFloor";
/// A version is worse than the version listed before it.
pub const REGRESSION_ALERT: &str = "ToucanEndpointRegression";
/// The alerts' label naming the Endpoint.
pub const ENDPOINT_ALERT_LABEL: &str = "toucan_endpoint";
/// The alerts' label saying which check raised them: `drift`, `floor` or `regression` (what a
/// retraining trigger records as the alert's reason).
pub const KIND_ALERT_LABEL: &str = "toucan_alert";

/// The `PrometheusRule` of an Endpoint, `None` when its spec has no monitoring or nothing in
/// it to alert on (then the operator deletes the rule it made before). Named as the Endpoint,
/// in its namespace, with one group.
pub fn prometheus_rule(namespace: &str, name: &str, spec: &EndpointSpec) -> Option<Value> {
    let group = rule_group(namespace, name, spec)?;
    Some(json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": {"groups": [group]},
    }))
}

/// The same rules as a Prometheus rule file (`groups:`), YAML text, `None` as for
/// [`prometheus_rule`].
pub fn rule_file_yaml(
    namespace: &str,
    name: &str,
    spec: &EndpointSpec,
) -> Option<Result<String, serde_yaml_ng::Error>> {
    let group = rule_group(namespace, name, spec)?;
    Some(serde_yaml_ng::to_string(&json!({"groups": [group]})))
}

/// The one rule group of an endpoint: drift, then each floor, then each regression check.
fn rule_group(namespace: &str, name: &str, spec: &EndpointSpec) -> Option<Value> {
    let monitoring = spec.monitoring.as_ref()?;
    let at = Target { namespace, name };
    let mut rules = Vec::new();
    if let Some(drift) = &monitoring.drift {
        rules.push(drift_rule(&at, drift));
    }
    if let Some(evaluation) = &monitoring.evaluation {
        let hold = prometheus_duration(evaluation.hold_ms());
        for floor in &evaluation.floors {
            if let Ok(bound) = floor.bound() {
                rules.push(floor_rule(&at, floor.metric, bound, &hold));
            }
        }
        for pair in spec.versions.windows(2) {
            rules.push(regression_rule(&at, &pair[0].name, &pair[1].name, &hold));
        }
    }
    if rules.is_empty() {
        return None;
    }
    Some(json!({
        "name": format!("toucan.endpoint.{namespace}.{name}"),
        "rules": rules,
    }))
}

/// The endpoint the rules are about.
struct Target<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl Target<'_> {
    /// A selector of `gauge`'s series of this endpoint, with `extra` matchers.
    fn series(&self, gauge: Gauge, extra: &[String]) -> String {
        let mut matchers = vec![
            format!("{NAMESPACE_LABEL}={}", promql_string(self.namespace)),
            format!("{ENDPOINT_LABEL}={}", promql_string(self.name)),
        ];
        matchers.extend_from_slice(extra);
        format!("{}{{{}}}", gauge.name, matchers.join(", "))
    }

    /// The labels every alert of this endpoint carries.
    fn labels(&self, kind: &str, severity: &str) -> Value {
        json!({
            "severity": severity,
            ENDPOINT_ALERT_LABEL: self.name,
            NAMESPACE_LABEL: self.namespace,
            KIND_ALERT_LABEL: kind,
        })
    }
}

/// Drift: `drift_detected == 1` where the window also holds `minSamples` samples.
fn drift_rule(at: &Target<'_>, drift: &crate::api::DriftMonitoring) -> Value {
    let min_samples = drift.min_samples();
    let hold = prometheus_duration(drift.hold_ms());
    let window = prometheus_duration(drift.window_ms());
    let expr = format!(
        "{} == 1\nand on({NAMESPACE_LABEL}, {ENDPOINT_LABEL}, {SLICE_LABEL}, {FEATURE_LABEL}, \
         {TEST_LABEL})\n{} >= {min_samples}",
        at.series(DRIFT_DETECTED, &[]),
        at.series(DRIFT_SAMPLES, &[]),
    );
    json!({
        "alert": DRIFT_ALERT,
        "expr": expr,
        "for": hold,
        "keep_firing_for": hold,
        "labels": at.labels("drift", "warning"),
        "annotations": {
            "summary": format!(
                "Drift on {}/{}: feature {{{{ $labels.feature }}}}, slice {{{{ $labels.slice }}}}",
                at.namespace, at.name
            ),
            "description": format!(
                "The {{{{ $labels.test }}}} test finds feature {{{{ $labels.feature }}}} of slice \
                 {{{{ $labels.slice }}}} moved away from the reference over the last {window}: \
                 at least {min_samples} samples, an effect of at least {}, significant at a \
                 false discovery rate of {}.",
                drift.effect_size(),
                drift.fdr()
            ),
        },
    })
}

/// A floor, judged on the far end of the metric's confidence interval: a `min` floor fires
/// when even the interval's upper bound is below it, a `max` floor when even its lower bound
/// is above it. On the value alone, a floor near the model's true level would fire on every
/// unlucky window of a few dozen labels; on the interval's bound it fires only once the labels
/// rule out that the model meets its floor (at the interval's confidence), which is also what
/// makes a retraining it triggers worth its cost. A breach on few labels therefore takes more
/// windows to show; `for` adds hysteresis on top.
fn floor_rule(at: &Target<'_>, metric: EvaluationMetric, bound: FloorBound, hold: &str) -> Value {
    let metric_matcher = format!("{METRIC_LABEL}={}", promql_string(metric.as_str()));
    let (expr, side, limit) = match bound {
        FloorBound::Min(min) => (
            format!(
                "{} < {min}",
                at.series(EVALUATION_UPPER, std::slice::from_ref(&metric_matcher))
            ),
            "below its floor",
            min,
        ),
        FloorBound::Max(max) => (
            format!(
                "{} > {max}",
                at.series(EVALUATION_LOWER, std::slice::from_ref(&metric_matcher))
            ),
            "above its ceiling",
            max,
        ),
    };
    let bound_name = match bound {
        FloorBound::Min(_) => "upper",
        FloorBound::Max(_) => "lower",
    };
    // The metric as a label of the rule too, so that each floor's rule differs from the
    // others in more than its expression (one floor per metric, as the checks require).
    let mut labels = at.labels("floor", "critical");
    if let Some(map) = labels.as_object_mut() {
        map.insert(METRIC_LABEL.into(), Value::from(metric.as_str()));
    }
    json!({
        "alert": FLOOR_ALERT,
        "expr": expr,
        "for": hold,
        "keep_firing_for": hold,
        "labels": labels,
        "annotations": {
            "summary": format!(
                "{} of {}/{} version {{{{ $labels.version }}}} is {side} {limit}",
                metric.as_str(), at.namespace, at.name
            ),
            "description": format!(
                "On slice {{{{ $labels.slice }}}}, the {bound_name} bound of {}'s confidence \
                 interval is {{{{ $value }}}}: the labels rule out that version \
                 {{{{ $labels.version }}}} meets its bound of {limit}.",
                metric.as_str()
            ),
        },
    })
}

/// A version worse than the one listed before it in `spec.versions`, in any metric and slice,
/// with intervals that do not overlap: its interval lies wholly on the worse side of the
/// previous version's.
fn regression_rule(at: &Target<'_>, previous: &str, version: &str, hold: &str) -> Value {
    let names = |higher: bool| {
        EvaluationMetric::ALL
            .iter()
            .filter(|m| m.higher_is_better() == higher)
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join("|")
    };
    let side = |gauge: Gauge, of: &str, higher: bool| {
        at.series(
            gauge,
            &[
                format!("{VERSION_LABEL}={}", promql_string(of)),
                format!("{METRIC_LABEL}=~{}", promql_string(&names(higher))),
            ],
        )
    };
    // `group_left` keeps the left side's labels (its version among them): a one-to-one match
    // `on` some labels would keep only those.
    let on = format!(
        "on({NAMESPACE_LABEL}, {ENDPOINT_LABEL}, {SLICE_LABEL}, {METRIC_LABEL}) group_left"
    );
    let expr = format!(
        "(\n  {}\n  < {on}\n  {}\n)\nor\n(\n  {}\n  > {on}\n  {}\n)",
        side(EVALUATION_UPPER, version, true),
        side(EVALUATION_LOWER, previous, true),
        side(EVALUATION_LOWER, version, false),
        side(EVALUATION_UPPER, previous, false),
    );
    let mut labels = at.labels("regression", "warning");
    if let Some(map) = labels.as_object_mut() {
        map.insert("previous_version".into(), Value::from(previous));
    }
    json!({
        "alert": REGRESSION_ALERT,
        "expr": expr,
        "for": hold,
        "keep_firing_for": hold,
        "labels": labels,
        "annotations": {
            "summary": format!(
                "{}/{} version {{{{ $labels.version }}}} is worse than {previous} in \
                 {{{{ $labels.metric }}}}",
                at.namespace, at.name
            ),
            "description": format!(
                "On slice {{{{ $labels.slice }}}}, the confidence interval of \
                 {{{{ $labels.metric }}}} of version {{{{ $labels.version }}}} lies wholly on \
                 the worse side of version {previous}'s (its nearer bound is {{{{ $value }}}})."
            ),
        },
    })
}

/// A PromQL string literal.
fn promql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Milliseconds in Prometheus's duration syntax (`1h30m`, `500ms`, `0s`): units of hours down
/// to milliseconds, largest first, none repeated.
pub fn prometheus_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut rest = ms;
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(monitoring: &str) -> EndpointSpec {
        let text = format!(
            "versions:\n  - {{name: v1, model: {{run: r, step: export, artifact: bundle}}}}\n  - \
             {{name: v2, model: {{run: r2, step: export, artifact: bundle}}}}\n{monitoring}"
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    const MONITORING: &str = r#"monitoring:
  drift:
    reference: {dataset: {run: fashion-abc12, step: ingest, artifact: dataset}}
    window: 1h
    minSamples: 500
    effectSize: 0.1
    fdr: 0.05
  evaluation:
    window: 1h
    for: 5m
    floors: [{metric: accuracy, min: 0.85}, {metric: log_loss, max: 0.6}]
"#;

    #[test]
    fn prometheus_durations() {
        let cases = [
            (0, "0s"),
            (500, "500ms"),
            (1_000, "1s"),
            (90_000, "1m30s"),
            (3_600_000, "1h"),
            (5_400_500, "1h30m500ms"),
            (86_400_000, "24h"),
        ];
        for (ms, text) in cases {
            assert_eq!(prometheus_duration(ms), text);
        }
    }

    #[test]
    fn no_monitoring_no_rule() {
        assert_eq!(prometheus_rule("ns", "fashion", &spec("")), None);
        let slices_only = spec("monitoring: {slices: [{name: source, from: header.x-source}]}\n");
        assert_eq!(prometheus_rule("ns", "fashion", &slices_only), None);
        assert!(rule_file_yaml("ns", "fashion", &slices_only).is_none());
    }

    #[test]
    fn the_rule_carries_every_alert_with_the_specs_thresholds() {
        let rule = prometheus_rule("team-a", "fashion", &spec(MONITORING)).unwrap();
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(rule["kind"], "PrometheusRule");
        assert_eq!(rule["metadata"]["name"], "fashion");
        assert_eq!(rule["metadata"]["namespace"], "team-a");
        let groups = rule["spec"]["groups"].as_array().unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0]["name"], "toucan.endpoint.team-a.fashion");
        let rules = groups[0]["rules"].as_array().unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [DRIFT_ALERT, FLOOR_ALERT, FLOOR_ALERT, REGRESSION_ALERT]
        );
        assert_eq!(
            rules[0]["expr"],
            "toucan_endpoint_drift_detected{namespace=\"team-a\", endpoint=\"fashion\"} == 1\n\
             and on(namespace, endpoint, slice, feature, test)\n\
             toucan_endpoint_drift_samples{namespace=\"team-a\", endpoint=\"fashion\"} >= 500"
        );
        // Drift takes the default hold; evaluation its own.
        assert_eq!(rules[0]["for"], "15m");
        assert_eq!(rules[0]["keep_firing_for"], "15m");
        assert_eq!(
            rules[1]["expr"],
            "toucan_endpoint_evaluation_upper{namespace=\"team-a\", endpoint=\"fashion\", \
             metric=\"accuracy\"} < 0.85"
        );
        assert_eq!(
            rules[2]["expr"],
            "toucan_endpoint_evaluation_lower{namespace=\"team-a\", endpoint=\"fashion\", \
             metric=\"log_loss\"} > 0.6"
        );
        assert_eq!(rules[1]["for"], "5m");
        assert_eq!(rules[3]["labels"]["previous_version"], "v1");
        for rule in rules {
            assert_eq!(rule["labels"]["toucan_endpoint"], "fashion");
            assert_eq!(rule["labels"]["namespace"], "team-a");
            assert!(rule["labels"]["severity"].is_string());
            assert!(rule["annotations"]["summary"].is_string());
        }
    }

    #[test]
    fn the_output_is_deterministic_and_the_rule_file_holds_the_same_group() {
        let one = spec(MONITORING);
        let first = rule_file_yaml("ns", "fashion", &one).unwrap().unwrap();
        let again = rule_file_yaml("ns", "fashion", &one.clone())
            .unwrap()
            .unwrap();
        assert_eq!(first, again);
        let read: Value = serde_yaml_ng::from_str(&first).unwrap();
        let rule = prometheus_rule("ns", "fashion", &one).unwrap();
        assert_eq!(read["groups"], rule["spec"]["groups"]);
    }

    #[test]
    fn every_gauge_is_named_toucan_endpoint_and_labelled_by_endpoint() {
        for gauge in GAUGES {
            assert!(gauge.name.starts_with("toucan_endpoint_"), "{}", gauge.name);
            assert_eq!(&gauge.labels[..2], [NAMESPACE_LABEL, ENDPOINT_LABEL]);
        }
    }
}
