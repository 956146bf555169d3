//! `Endpoint`: model versions served behind one name, with a traffic split, shadowing,
//! batching, autoscaling, a guarded rollout of a candidate version and payload sampling.
//!
//! Each version is a Deployment of `toucan-worker serve` (locally, a process) running one
//! model bundle, named by the pipeline output that produced it or by its digest. toucan's own
//! router splits requests between versions, mirrors a share to a shadow version and retries.
//! Every decision over this resource is pure and lives in [`crate::serving`]: the traffic in
//! force ([`crate::serving::traffic`]), each version's replica count
//! ([`crate::serving::autoscale`]) and the rollout's next step
//! ([`crate::serving::rollout`]); the manifest checks are [`crate::manifest::check_endpoint`].
//! `spec.monitoring` (evaluation, drift, their alerts and retraining) is read by
//! [`crate::monitoring::spec`], and its Prometheus rules are [`crate::monitoring::rules`]'s.
//!
//! The status is bounded: one entry per version (at most [`MAX_VERSIONS`]), the traffic in
//! force, the rollout's current step and a few conditions. Per-request detail (samples,
//! latencies, gate observations) lives in the metadata store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{ParamValue, PipelineRef, Resources, schema};
use crate::duration::Duration;

/// The most versions an Endpoint may declare: a router splitting among more is not a rollout
/// any more, and the status stays small.
pub const MAX_VERSIONS: usize = 16;

/// Model versions served behind one name.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "toucan.dev",
    version = "v1alpha1",
    kind = "Endpoint",
    namespaced,
    status = "EndpointStatus",
    shortname = "ep",
    category = "toucan",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Traffic","type":"string","jsonPath":".status.trafficSummary"}"#,
    printcolumn = r#"{"name":"Candidate","type":"string","jsonPath":".status.rollout.candidate"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointSpec {
    /// The versions that can serve, each a model bundle with its replicas and resources.
    pub versions: Vec<ModelVersion>,
    /// How live requests are split between versions, weights summing to 100. When omitted,
    /// the first version takes every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// A version that also receives a copy of a share of the requests; its responses are
    /// discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Server-side batching of concurrent requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<BatchingSpec>,
    /// How each version's replica count follows its load (within its `replicas`). When
    /// omitted, on concurrency with Knative's default target of 100 in-flight requests per
    /// replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
    /// A guarded, stepwise shift of traffic to a candidate version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Which requests are recorded for continuous evaluation and drift detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<SamplingSpec>,
    /// The router's per-endpoint settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<RouterSpec>,
    /// Continuous evaluation, drift detection, the alerts they raise and the retraining
    /// those alerts start. Needs `sampling`: it watches the sampled requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
}

/// One version of the model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelVersion {
    /// A DNS-1123 label (`v1`, `candidate-2`), unique in the endpoint.
    pub name: String,
    /// The model bundle it serves.
    pub model: ModelRef,
    /// How many replicas it may run; `{min: 1, max: 1}` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaRange>,
    /// What each replica asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// A model bundle: either the artifact a pipeline step produced (`run`, `step` and
/// `artifact` together) or a content digest (`digest` alone). One structural object rather
/// than an untagged enum, so that the CRD schema stays structural; exactly one form is
/// checked when the manifest is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRef {
    /// The run that produced it (a PipelineRun's name, or a local run's id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The step of that run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The step's output artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    /// The bundle's content digest, `sha256:` and 64 hexadecimal digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// The bounds of a version's replica count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplicaRange {
    /// At least 1 (scale to zero is not supported); 1 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    /// At least `min`; `min` when omitted (a fixed size).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// A version's share of live requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficTarget {
    pub version: String,
    /// A percentage, 0 to 100.
    pub weight: u32,
}

/// A version that sees a copy of live requests without answering them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShadowSpec {
    pub version: String,
    /// The percentage of requests mirrored, 0 to 100.
    pub percent: u32,
}

/// Server-side batching.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchingSpec {
    /// The most instances run through the model at once; at least 1.
    pub max_batch_size: u32,
    /// How long a request may wait for others to fill its batch, at most `1s`; `5ms` when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay: Option<Duration>,
}

/// How replica counts follow load: `target` (toucan's concurrency autoscaler) or `hpa` (a
/// Kubernetes HorizontalPodAutoscaler on CPU), exactly one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AutoscalingSpec {
    /// Scale on in-flight requests per replica (Knative's KPA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ConcurrencyTarget>,
    /// Scale on CPU utilisation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hpa: Option<HpaSpec>,
}

/// The concurrency autoscaler's target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConcurrencyTarget {
    /// In-flight requests per replica to aim at; at least 1.
    pub concurrency: u32,
    /// The stable window the average load is taken over, 6s to 1h (Knative's
    /// `autoscaling.knative.dev/window`); `60s` when omitted. The panic window is a tenth of
    /// it, and a version scales down at the earliest one window after its load fell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// A HorizontalPodAutoscaler's target.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaSpec {
    /// Average CPU utilisation to aim at, as a percentage of the requested CPU, 1 to 100.
    pub cpu_utilization: u32,
}

/// A stepwise shift of traffic to `candidate`, each step held for `interval` and taken only
/// while every gate holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// The version being rolled out.
    pub candidate: String,
    /// The candidate's successive weights, strictly increasing, ending at 100;
    /// `[10, 25, 50, 100]` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    /// How long each step is held and observed before the next.
    pub interval: Duration,
    /// Conditions on the candidate's requests during a step; every one must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateSpec>,
    /// What a failing gate does; `Rollback` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// The fewest candidate requests in a step before its gates are judged; 20 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u32>,
    /// Conditions on the candidate's live evaluation metrics (over its labelled samples since
    /// the step began) against the incumbent's over the same time; every one must hold. A
    /// gate fails once the candidate's confidence interval lies wholly on the worse side of
    /// the incumbent's figure moved by `minDelta`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluation_gates: Vec<EvaluationGate>,
    /// The fewest labelled samples, of the candidate and of the incumbent each, in a step
    /// before its evaluation gates are judged; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labels: Option<u32>,
}

/// A bound on one metric of the candidate's requests during a rollout step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GateSpec {
    pub metric: GateMetric,
    /// The largest value that passes: for `error_rate` a fraction (`0.01`) or a percentage
    /// (`"1%"`), for a latency a duration (`50ms`). Either a number or a string in the
    /// schema, so it is checked per metric when the manifest is read.
    #[schemars(schema_with = "schema::any_value")]
    pub max: serde_json::Value,
}

/// What a rollout gate measures.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum GateMetric {
    /// Failed requests (5xx and errors the router saw) over all requests.
    ErrorRate,
    /// The median latency.
    LatencyP50,
    /// The 90th percentile latency.
    LatencyP90,
    /// The 99th percentile latency.
    LatencyP99,
}

impl GateMetric {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            GateMetric::ErrorRate => "error_rate",
            GateMetric::LatencyP50 => "latency_p50",
            GateMetric::LatencyP90 => "latency_p90",
            GateMetric::LatencyP99 => "latency_p99",
        }
    }
}

/// What a failing rollout gate does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OnFailure {
    /// The candidate loses all its traffic to the other versions.
    #[default]
    Rollback,
    /// The candidate keeps the weight it had; the rollout stops there.
    Pause,
}

/// Which requests are recorded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SamplingSpec {
    /// The fraction of requests recorded, 0 to 1; the same requests in every process.
    pub rate: f64,
    /// Whether to record the images themselves (their pixels at the model's input size), not
    /// only their statistics: what makes the labelled samples a retraining run can learn from
    /// (`{{alert.window.samples}}`).
    #[serde(default)]
    pub inputs: bool,
    /// Request headers recorded with each sample (to slice evaluations by), by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<String>,
}

/// The router's settings for this endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouterSpec {
    /// A request header whose value pins a caller to one version (the same value, the same
    /// version, while the split is unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// How many times a failed idempotent request is retried on another replica, 0 to 10;
    /// 0 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Where Gateway API is installed: an `HTTPRoute` (named as the endpoint) that splits
    /// the gateway's traffic between the versions' Services (`NAME-VERSION`) with the weights
    /// in force, and mirrors the shadow's share. The router still serves the Service `NAME`
    /// inside the cluster; a rollout's gates judge the requests that went through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySpec>,
}

/// The Gateway API route of an endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// The Gateways (or their listeners) the route attaches to.
    pub parent_refs: Vec<GatewayParentRef>,
    /// The host names the route answers for; every host of the listeners when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
}

/// A Gateway the route attaches to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayParentRef {
    /// The Gateway's name.
    pub name: String,
    /// Its namespace; the endpoint's when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// One listener of the Gateway; all of them when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
}

// === monitoring ===

/// What toucan watches once the endpoint serves, and what it does about it. Every threshold
/// here is also a rule of the endpoint's generated Prometheus alerts
/// (`toucan_core::monitoring::rules`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MonitoringSpec {
    /// Groups of requests evaluated and compared on their own as well as together, each named
    /// by a request header or a sample attribute (at most 8).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slices: Vec<SliceSpec>,
    /// Whether the inputs and predictions the model sees now moved away from a reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftMonitoring>,
    /// Quality metrics over labelled samples, with floors that alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<EvaluationMonitoring>,
    /// The pipeline an alert runs to train a new model, and how that model is rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrain: Option<RetrainSpec>,
    /// How long the endpoint's samples, their labels and its ended alerts are kept; `168h`
    /// (7 days) when omitted. At least a day, and at least the windows and the retraining
    /// cooldown it must cover; the samples of a reference window are kept while it is the
    /// reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Duration>,
}

/// A slice: the requests that share one value of a header or attribute.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SliceSpec {
    /// The slice's name, unique in the endpoint (a lowercase identifier, `source`): the
    /// metrics' `slice` label is `NAME=VALUE`.
    pub name: String,
    /// Where each request's value comes from: `header.NAME` (a request header, recorded with
    /// the sample) or `attribute.NAME` (an attribute the caller attached to the sample).
    pub from: String,
}

/// Drift detection: each feature of the current window against the reference, with an alert
/// only where the sample is large enough, the effect is large enough and the finding survives
/// the false discovery rate control across features and slices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftMonitoring {
    /// What the current window is compared with.
    pub reference: DriftReference,
    /// The sliding window of production samples compared with the reference; `1h` when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// The fewest samples in the window before a feature can drift; at least 1, 500 when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u32>,
    /// The smallest effect (KS's D, Cramér's V for the class, the maximum mean discrepancy
    /// beyond chance for embeddings) that counts as drift, however small the p-value; greater
    /// than 0, `0.1` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect_size: Option<f64>,
    /// The false discovery rate Benjamini-Hochberg holds across every feature and slice, a
    /// fraction in (0, 1); `0.05` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fdr: Option<f64>,
    /// The features compared, by name: `width`, `height`, `channels`, `brightness`,
    /// `contrast`, `channel_means`, `sharpness` (the input statistics the server records),
    /// `prediction` (the predicted class distribution) and `embedding` (the model's embedding
    /// of the input, per version, by maximum mean discrepancy). Every one when omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
    /// How long drift must hold before its alert fires, and how long the alert keeps firing
    /// after it stops; `15m` when omitted.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold: Option<Duration>,
}

/// The reference of drift detection: a dataset a pipeline step produced (its statistics, as
/// the ingest step's dataset card records them) or a window of past production samples,
/// exactly one. One structural object rather than an enum, so that the CRD schema stays
/// structural; the one form is checked when the manifest is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftReference {
    /// The output artifact of a pipeline step, typically the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<ArtifactSource>,
    /// A period of the endpoint's own sampled requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<TimeRange>,
}

/// The output artifact of one step of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArtifactSource {
    /// The run (a PipelineRun's name, or locally a run id or a pipeline's name for its newest
    /// run).
    pub run: String,
    /// The step of that run.
    pub step: String,
    /// The step's output artifact.
    pub artifact: String,
}

/// A period of time, `start` before `end`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeRange {
    /// RFC 3339 (`2025-01-31T00:00:00Z`), included.
    pub start: String,
    /// RFC 3339, excluded.
    pub end: String,
}

/// Continuous evaluation: predictions joined to the labels that come back, scored per
/// version and slice over tumbling windows, each figure with a confidence interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluationMonitoring {
    /// The tumbling window the metrics are computed over; `1h` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
    /// How late a label may arrive: a window is scored this long after it closes; `10m`
    /// when omitted, `0s` scores it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maturity: Option<Duration>,
    /// Bounds a live metric must keep; each one's breach is an alert.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floors: Vec<MetricFloor>,
    /// How long a breach (of a floor, or a regression against the previous version) must
    /// hold before its alert fires, and how long the alert keeps firing after it ends; `15m`
    /// when omitted.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub hold: Option<Duration>,
}

/// A bound on one live metric: `min` for a metric where higher is better, `max` for one where
/// lower is better.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricFloor {
    /// The metric bounded.
    pub metric: EvaluationMetric,
    /// The lowest acceptable value (`accuracy`, `macro_f1`, `macro_precision`,
    /// `macro_recall`), a fraction from 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The highest acceptable value (`log_loss`, at least 0; `ece`, a fraction from 0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// A quality metric of continuous evaluation, as the metrics' `metric` label names it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EvaluationMetric {
    /// Correct predictions over labelled ones; higher is better.
    Accuracy,
    /// The unweighted mean of the classes' F1 scores; higher is better.
    MacroF1,
    /// The unweighted mean of the classes' precisions; higher is better.
    MacroPrecision,
    /// The unweighted mean of the classes' recalls; higher is better.
    MacroRecall,
    /// The mean negative log-probability of the true class; lower is better.
    LogLoss,
    /// Expected calibration error; lower is better.
    Ece,
}

impl EvaluationMetric {
    /// Every metric, in the order messages list them.
    pub const ALL: [EvaluationMetric; 6] = [
        EvaluationMetric::Accuracy,
        EvaluationMetric::MacroF1,
        EvaluationMetric::MacroPrecision,
        EvaluationMetric::MacroRecall,
        EvaluationMetric::LogLoss,
        EvaluationMetric::Ece,
    ];

    /// The name as written in manifests and in the metrics' `metric` label.
    pub fn as_str(self) -> &'static str {
        match self {
            EvaluationMetric::Accuracy => "accuracy",
            EvaluationMetric::MacroF1 => "macro_f1",
            EvaluationMetric::MacroPrecision => "macro_precision",
            EvaluationMetric::MacroRecall => "macro_recall",
            EvaluationMetric::LogLoss => "log_loss",
            EvaluationMetric::Ece => "ece",
        }
    }

    /// Whether a larger value is a better model.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, EvaluationMetric::LogLoss | EvaluationMetric::Ece)
    }

    /// Whether the value is a fraction from 0 to 1 (every metric but the log loss).
    pub fn is_fraction(self) -> bool {
        self != EvaluationMetric::LogLoss
    }
}

/// Retraining: on a drift or evaluation alert, a run of a pipeline, whose exported model is
/// then rolled out as a candidate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetrainSpec {
    /// The Pipeline run, in the endpoint's namespace (locally, a pipeline's name).
    pub pipeline_ref: PipelineRef,
    /// Parameter values of the run. A string may use the alert's variables:
    /// `{{alert.window.samples}}` (the labelled production samples of the alerting window, a
    /// CSV table: a path locally, an artifact's digest on a cluster, for a parameter the
    /// pipeline takes as an input artifact with `from: "{{params.NAME}}"`),
    /// `{{alert.window.start}}`, `{{alert.window.end}}` (RFC 3339) and
    /// `{{alert.reason}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamValue>,
    /// The least time between two retraining runs; `6h` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Duration>,
    /// The most retraining runs started in any 24 hours; at least 1, 2 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_day: Option<u32>,
    /// How the retrained model is rolled out; a guarded rollout with the default steps and
    /// no gates but the evaluation's floors when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<PromoteSpec>,
}

/// How a retrained model becomes the served one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteSpec {
    /// A stepwise rollout of the new model as the candidate against the version serving now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<PromoteRollout>,
}

/// The rollout of a retrained model: `spec.rollout`'s steps, held for `interval` each, and
/// gates on live evaluation metrics against the incumbent.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoteRollout {
    /// The candidate's successive weights, strictly increasing, ending at 100;
    /// `[10, 25, 50, 100]` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    /// How long each step is held; the evaluation's window plus its maturity when omitted,
    /// so that each step is judged on one matured window of labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Conditions on the candidate's live metrics against the incumbent's; every one must
    /// hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<EvaluationGate>,
    /// What a failing gate does; `Rollback` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// The fewest labelled samples, of the candidate and of the incumbent each, in a step
    /// before its gates are judged; 100 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labels: Option<u32>,
}

/// A candidate's live metric against the incumbent's over the same step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EvaluationGate {
    /// The metric compared.
    pub metric: EvaluationMetric,
    /// The least improvement over the incumbent that passes, in the metric's unit and in its
    /// better direction (for `log_loss` and `ece`, how much lower): `0.0` passes a candidate
    /// as good as the incumbent, `-0.01` one at most 0.01 worse.
    pub min_delta: f64,
}

// === status ===

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutPhase {
    /// Moving through its steps.
    Progressing,
    /// The candidate takes every request.
    Promoted,
    /// A gate failed: the candidate takes none.
    RolledBack,
    /// A gate failed: the candidate keeps its weight, and the rollout goes no further.
    Paused,
}

impl RolloutPhase {
    /// The name as the status shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutPhase::Progressing => "Progressing",
            RolloutPhase::Promoted => "Promoted",
            RolloutPhase::RolledBack => "RolledBack",
            RolloutPhase::Paused => "Paused",
        }
    }

    /// Whether the rollout is over: nothing moves the candidate's weight any more.
    pub fn is_final(self) -> bool {
        matches!(self, RolloutPhase::Promoted | RolloutPhase::RolledBack)
    }
}

/// The longest `status.message` and `status.rollout.reason`.
pub const MAX_ENDPOINT_MESSAGE_CHARS: usize = 1024;

/// A bounded summary of an endpoint: one entry per version, the split in force, the
/// rollout's step. Requests and samples live in the metadata store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    /// `Pending`, `Ready`, `Progressing` (a rollout is moving), `RolledBack` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready replicas over desired replicas, every version together (`3/4`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// The split the router applies now (the spec's, moved by the rollout).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traffic: Vec<TrafficTarget>,
    /// The same split as one short line, `v1=90,v2=10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_summary: Option<String>,
    /// One entry per version of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Where the endpoint answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One version's replicas and the bundle it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionStatus {
    pub name: String,
    /// Replicas ready to serve.
    #[serde(default)]
    pub ready_replicas: u32,
    /// Replicas running (ready or not).
    #[serde(default)]
    pub replicas: u32,
    /// Replicas the autoscaler asks for.
    #[serde(default)]
    pub desired_replicas: u32,
    /// The digest of the bundle served, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_digest: Option<String>,
}

/// The rollout's current step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    pub candidate: String,
    /// The candidate's model as rolled out (`run/step/artifact` or a digest): a new model
    /// starts a new rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The index of the current step in `spec.rollout.steps`.
    pub step: u32,
    /// The candidate's weight now.
    pub weight: u32,
    pub phase: RolloutPhase,
    /// Why it is where it is (the gate that failed, what it waits for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// When the current step (or phase) began, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}
