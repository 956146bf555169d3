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
//!
//! The status is bounded: one entry per version (at most [`MAX_VERSIONS`]), the traffic in
//! force, the rollout's current step and a few conditions. Per-request detail (samples,
//! latencies, gate observations) lives in the metadata store.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Resources, schema};
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
    /// Whether to record the model's inputs themselves, not only their statistics.
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
