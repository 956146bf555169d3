//! An Endpoint's spec as the serving decisions read it: every default in one place, and the
//! fields the schema keeps loose (a model reference's two forms, a gate's threshold) in
//! their typed form.
//!
//! The manifest checks ([`crate::manifest::check_endpoint`]) refuse what these helpers
//! cannot read, with the field path; the decisions call them on a spec that passed, and fall
//! back to the documented default rather than panic on one that did not.

use std::fmt;

use crate::api::{
    AutoscalingSpec, BatchingSpec, EndpointSpec, GateMetric, GateSpec, ModelRef, ModelVersion,
    OnFailure, ReplicaRange, RolloutSpec,
};
use crate::echo::quote;

/// The fewest replicas of a version when `replicas.min` is omitted.
pub const DEFAULT_MIN_REPLICAS: u32 = 1;
/// A rollout's steps when `steps` is omitted.
pub const DEFAULT_ROLLOUT_STEPS: [u32; 4] = [10, 25, 50, 100];
/// The fewest candidate requests in a step before its gates are judged, when `minRequests`
/// is omitted: with fewer, an error rate of 1% cannot be told from 0%, and one slow request
/// is the p99.
pub const DEFAULT_MIN_REQUESTS: u32 = 20;
/// The fewest labelled samples of each side before a step's evaluation gates are judged,
/// when `minLabels` is omitted: enough for an accuracy interval about ±0.1 wide at worst.
pub const DEFAULT_MIN_LABELS: u32 = 100;
/// In-flight requests per replica when `autoscaling` is omitted: Knative's
/// `container-concurrency-target-default`.
pub const DEFAULT_TARGET_CONCURRENCY: u32 = 100;
/// How long a request waits for its batch to fill when `batching.maxDelay` is omitted.
pub const DEFAULT_MAX_BATCH_DELAY_MS: u64 = 5;
/// The longest `batching.maxDelay`: a batch that waits longer costs more latency than it
/// saves.
pub const MAX_BATCH_DELAY_MS: u64 = 1_000;
/// The most retries `router.retries` may ask for.
pub const MAX_ROUTER_RETRIES: u32 = 10;

/// Where a version's model bundle comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// The output artifact of a step of a run.
    Output {
        run: String,
        step: String,
        artifact: String,
    },
    /// A bundle by content digest (`sha256:...`).
    Digest(String),
}

impl fmt::Display for ModelSource {
    /// `run/step/artifact`, or the digest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelSource::Output {
                run,
                step,
                artifact,
            } => write!(f, "{run}/{step}/{artifact}"),
            ModelSource::Digest(digest) => f.write_str(digest),
        }
    }
}

// === impl ModelRef ===

impl ModelRef {
    /// The one form the reference gives: `run`, `step` and `artifact` together, or `digest`
    /// alone. The message says what is missing or extra.
    pub fn source(&self) -> Result<ModelSource, String> {
        let output = [
            ("run", &self.run),
            ("step", &self.step),
            ("artifact", &self.artifact),
        ];
        let given: Vec<&str> = output
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(n, _)| *n)
            .collect();
        match (&self.digest, &self.run, &self.step, &self.artifact) {
            (Some(_), ..) if !given.is_empty() => Err(format!(
                "gives both digest and {}: give run, step and artifact (a pipeline's output) or \
                 digest (a bundle by content), not both",
                given.join(", ")
            )),
            (Some(digest), ..) => Ok(ModelSource::Digest(digest.clone())),
            (None, Some(run), Some(step), Some(artifact)) => Ok(ModelSource::Output {
                run: run.clone(),
                step: step.clone(),
                artifact: artifact.clone(),
            }),
            (None, ..) if given.is_empty() => Err(
                "names no model: give run, step and artifact (a pipeline's output) or digest \
                 (a bundle by content)"
                    .to_string(),
            ),
            (None, ..) => {
                let missing: Vec<&str> = output
                    .iter()
                    .filter(|(_, v)| v.is_none())
                    .map(|(n, _)| *n)
                    .collect();
                Err(format!(
                    "gives {} without {}: a pipeline's output needs run, step and artifact \
                     together (or give digest alone)",
                    given.join(" and "),
                    missing.join(" and ")
                ))
            }
        }
    }
}

// === impl ReplicaRange ===

impl ReplicaRange {
    /// `min`, 1 when omitted.
    pub fn min(&self) -> u32 {
        self.min.unwrap_or(DEFAULT_MIN_REPLICAS)
    }

    /// `max`, `min` when omitted.
    pub fn max(&self) -> u32 {
        self.max.unwrap_or_else(|| self.min())
    }
}

impl ModelVersion {
    /// The replica bounds, `(min, max)`, with their defaults.
    pub fn replica_bounds(&self) -> (u32, u32) {
        self.replicas
            .as_ref()
            .map_or((DEFAULT_MIN_REPLICAS, DEFAULT_MIN_REPLICAS), |r| {
                (r.min(), r.max())
            })
    }
}

// === impl BatchingSpec ===

impl BatchingSpec {
    /// `maxDelay`, 5 ms when omitted.
    pub fn max_delay(&self) -> std::time::Duration {
        self.max_delay.as_ref().map_or(
            std::time::Duration::from_millis(DEFAULT_MAX_BATCH_DELAY_MS),
            |d| d.get(),
        )
    }
}

// === autoscaling ===

/// How a version's replica count follows its load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AutoscalingPolicy {
    /// toucan's concurrency autoscaler ([`super::autoscale`]), aiming at this many in-flight
    /// requests per replica.
    Concurrency(u32),
    /// A HorizontalPodAutoscaler aiming at this CPU utilisation (percent of the request).
    Cpu(u32),
}

impl AutoscalingSpec {
    /// The form given; `target` wins if (against the checks) both are.
    pub fn policy(&self) -> Option<AutoscalingPolicy> {
        match (&self.target, &self.hpa) {
            (Some(t), _) => Some(AutoscalingPolicy::Concurrency(t.concurrency)),
            (None, Some(h)) => Some(AutoscalingPolicy::Cpu(h.cpu_utilization)),
            (None, None) => None,
        }
    }
}

// === impl EndpointSpec ===

impl EndpointSpec {
    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<&ModelVersion> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// The autoscaling policy: the spec's, or concurrency at
    /// [`DEFAULT_TARGET_CONCURRENCY`] when omitted.
    pub fn autoscaling_policy(&self) -> AutoscalingPolicy {
        self.autoscaling
            .as_ref()
            .and_then(AutoscalingSpec::policy)
            .unwrap_or(AutoscalingPolicy::Concurrency(DEFAULT_TARGET_CONCURRENCY))
    }

    /// The concurrency autoscaler's stable window: `autoscaling.target.window`, or
    /// [`STABLE_WINDOW_MS`](super::autoscale::STABLE_WINDOW_MS) when not given.
    pub fn stable_window_ms(&self) -> crate::records::Millis {
        self.autoscaling
            .as_ref()
            .and_then(|a| a.target.as_ref())
            .and_then(|t| t.window.as_ref())
            .map_or(super::autoscale::STABLE_WINDOW_MS, |w| {
                crate::records::Millis::try_from(w.get().as_millis()).unwrap_or(i64::MAX)
            })
    }

    /// The `toucan-worker serve` flags every replica of the endpoint shares: batching, and
    /// sampling when there is a sink to ship samples to (the control-plane API's URL, and the
    /// file of the bearer token the server presents there, if it needs one).
    pub fn server_flags(&self, sink: Option<(&str, Option<&str>)>) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(b) = &self.batching {
            flags.extend([
                "--max-batch-size".to_string(),
                b.max_batch_size.to_string(),
                "--max-delay-ms".into(),
                b.max_delay().as_millis().to_string(),
            ]);
        }
        if let (Some(s), Some((url, token))) = (&self.sampling, sink)
            && s.rate > 0.0
        {
            flags.extend([
                "--sample-rate".to_string(),
                s.rate.to_string(),
                "--sample-sink".into(),
                url.to_string(),
            ]);
            if let Some(token) = token {
                flags.extend(["--sample-token-file".to_string(), token.to_string()]);
            }
            if s.inputs {
                flags.push("--sample-inputs".into());
            }
            if !s.attributes.is_empty() {
                flags.extend(["--sample-attributes".to_string(), s.attributes.join(",")]);
            }
        }
        flags
    }
}

// === impl RolloutSpec ===

impl RolloutSpec {
    /// The candidate's successive weights: the spec's, or [`DEFAULT_ROLLOUT_STEPS`] when
    /// omitted (or, against the checks, empty).
    pub fn steps(&self) -> Vec<u32> {
        match &self.steps {
            Some(steps) if !steps.is_empty() => steps.clone(),
            _ => DEFAULT_ROLLOUT_STEPS.to_vec(),
        }
    }

    /// What a failing gate does; `Rollback` when omitted.
    pub fn on_failure(&self) -> OnFailure {
        self.on_failure.unwrap_or_default()
    }

    /// The fewest candidate requests in a step before its gates are judged.
    pub fn min_requests(&self) -> u64 {
        u64::from(self.min_requests.unwrap_or(DEFAULT_MIN_REQUESTS))
    }

    /// The fewest labelled samples of the candidate and of the incumbent in a step before its
    /// evaluation gates are judged.
    pub fn min_labels(&self) -> u64 {
        u64::from(self.min_labels.unwrap_or(DEFAULT_MIN_LABELS))
    }
}

// === gates ===

/// A gate's bound in the unit of its metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GateThreshold {
    /// The largest error rate that passes, a fraction in `[0, 1]`.
    ErrorRate(f64),
    /// The largest latency that passes, in milliseconds.
    LatencyMs(f64),
}

impl GateSpec {
    /// `max` read for the gate's metric: a fraction (`0.01`, `"0.01"`) or a percentage
    /// (`"1%"`) of requests for `error_rate`, a duration (`50ms`) for a latency.
    pub fn threshold(&self) -> Result<GateThreshold, String> {
        match self.metric {
            GateMetric::ErrorRate => error_rate(&self.max).map(GateThreshold::ErrorRate),
            GateMetric::LatencyP50 | GateMetric::LatencyP90 | GateMetric::LatencyP99 => {
                latency_ms(&self.max).map(GateThreshold::LatencyMs)
            }
        }
    }
}

fn error_rate(value: &serde_json::Value) -> Result<f64, String> {
    let expected = "an error rate is a fraction from 0 to 1 (0.01) or a percentage (\"1%\")";
    let rate = match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(text) => match text.trim().strip_suffix('%') {
            Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
            None => text.trim().parse::<f64>().ok(),
        },
        _ => None,
    };
    match rate {
        Some(rate) if rate.is_finite() && (0.0..=1.0).contains(&rate) => Ok(rate),
        _ => Err(format!("{} is not an error rate: {expected}", shown(value))),
    }
}

fn latency_ms(value: &serde_json::Value) -> Result<f64, String> {
    match value {
        serde_json::Value::String(text) => crate::duration::Duration::parse(text)
            .map(|d| d.get().as_secs_f64() * 1_000.0)
            .map_err(|e| e.to_string()),
        other => Err(format!(
            "{} is not a latency: write a duration such as 50ms or 1.5s",
            shown(other)
        )),
    }
}

/// A JSON value as a message shows it.
fn shown(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => format!("the string {}", quote(s)),
        serde_json::Value::Number(n) => format!("the number {n}"),
        serde_json::Value::Bool(b) => format!("the boolean {b}"),
        serde_json::Value::Null => "null".to_string(),
        serde_json::Value::Array(_) => "a list".to_string(),
        serde_json::Value::Object(_) => "a mapping".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(
        run: Option<&str>,
        step: Option<&str>,
        artifact: Option<&str>,
        digest: Option<&str>,
    ) -> ModelRef {
        ModelRef {
            run: run.map(Into::into),
            step: step.map(Into::into),
            artifact: artifact.map(Into::into),
            digest: digest.map(Into::into),
        }
    }

    #[test]
    fn a_model_ref_gives_exactly_one_form() {
        let output = model(Some("r"), Some("export"), Some("bundle"), None);
        assert_eq!(output.source().unwrap().to_string(), "r/export/bundle");
        let digest = model(None, None, None, Some("sha256:ab"));
        assert_eq!(digest.source(), Ok(ModelSource::Digest("sha256:ab".into())));
        let cases = [
            (
                model(None, None, None, None),
                "names no model: give run, step and artifact (a pipeline's output) or digest (a bundle by content)",
            ),
            (
                model(Some("r"), None, None, Some("sha256:ab")),
                "gives both digest and run: give run, step and artifact (a pipeline's output) or digest (a bundle by content), not both",
            ),
            (
                model(Some("r"), Some("s"), None, None),
                "gives run and step without artifact: a pipeline's output needs run, step and artifact together (or give digest alone)",
            ),
        ];
        for (reference, message) in cases {
            assert_eq!(reference.source(), Err(message.to_string()));
        }
    }

    #[test]
    fn defaults() {
        let range = ReplicaRange::default();
        assert_eq!((range.min(), range.max()), (1, 1));
        let range = ReplicaRange {
            min: Some(3),
            max: None,
        };
        assert_eq!((range.min(), range.max()), (3, 3));
        let batching = BatchingSpec {
            max_batch_size: 8,
            max_delay: None,
        };
        assert_eq!(batching.max_delay(), std::time::Duration::from_millis(5));
    }

    #[test]
    fn gate_thresholds_are_read_per_metric() {
        let gate = |metric, max| GateSpec { metric, max };
        let cases = [
            (gate(GateMetric::ErrorRate, json!(0.01)), Ok(GateThreshold::ErrorRate(0.01))),
            (gate(GateMetric::ErrorRate, json!("0.05")), Ok(GateThreshold::ErrorRate(0.05))),
            (gate(GateMetric::ErrorRate, json!("2%")), Ok(GateThreshold::ErrorRate(0.02))),
            (gate(GateMetric::ErrorRate, json!(0)), Ok(GateThreshold::ErrorRate(0.0))),
            (gate(GateMetric::LatencyP99, json!("50ms")), Ok(GateThreshold::LatencyMs(50.0))),
            (gate(GateMetric::LatencyP50, json!("1.5s")), Ok(GateThreshold::LatencyMs(1500.0))),
            (
                gate(GateMetric::ErrorRate, json!(1.5)),
                Err("the number 1.5 is not an error rate: an error rate is a fraction from 0 to 1 (0.01) or a percentage (\"1%\")".to_string()),
            ),
            (
                gate(GateMetric::ErrorRate, json!("50ms")),
                Err("the string \"50ms\" is not an error rate: an error rate is a fraction from 0 to 1 (0.01) or a percentage (\"1%\")".to_string()),
            ),
            (
                gate(GateMetric::LatencyP90, json!(50)),
                Err("the number 50 is not a latency: write a duration such as 50ms or 1.5s".to_string()),
            ),
        ];
        for (gate, want) in cases {
            assert_eq!(gate.threshold(), want, "{gate:?}");
        }
        let bad = gate(GateMetric::LatencyP99, json!("50 ms"))
            .threshold()
            .unwrap_err();
        assert!(bad.starts_with("invalid duration \"50 ms\""), "{bad}");
    }
}
