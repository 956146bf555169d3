//! `Pipeline`: a DAG template of containerized steps.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CheckpointPolicy, FailurePolicy, RoleSpec, SuccessPolicy, schema};
use crate::duration::Duration;

/// A reusable DAG of steps with typed parameters, run by a `PipelineRun` or `toucan run`.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "toucan.dev",
    version = "v1alpha1",
    kind = "Pipeline",
    namespaced,
    status = "PipelineStatus",
    shortname = "pl",
    category = "toucan",
    printcolumn = r#"{"name":"Steps","type":"integer","jsonPath":".status.stepCount"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Last Run","type":"string","jsonPath":".status.lastRun"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineSpec {
    /// Typed parameters, referenced as `{{params.NAME}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamSpec>,
    /// The steps; dependencies come from references and `dependsOn`.
    pub steps: Vec<Step>,
    /// Steps that run after every other step has finished, whatever happened.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finally: Vec<Step>,
    /// A cron schedule (five fields) on which the operator starts runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// What a scheduled run does when the previous one is still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyPolicy>,
    /// Finished scheduled runs kept (the oldest are deleted); 10 when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_limit: Option<u32>,
    /// The default cache policy of every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
}

/// A declared parameter.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamSpec {
    pub name: String,
    /// The value's type; `string` when omitted.
    #[serde(rename = "type", default)]
    pub kind: ParamType,
    /// The value used when a run gives none. A parameter without a default is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "schema::optional_any_value")]
    pub default: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The smallest value allowed (int and float parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<serde_json::Number>,
    /// The largest value allowed (int and float parameters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<serde_json::Number>,
    /// The only values allowed, each of the parameter's type.
    #[serde(rename = "enum", default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_values")]
    pub allowed: Option<Vec<serde_json::Value>>,
}

/// A list of values of any JSON type (a parameter's `enum`).
fn any_values(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let item = schema::any_value(generator);
    schemars::json_schema!({
        "type": "array",
        "items": item,
    })
}

/// The type of a parameter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    #[default]
    String,
    Int,
    Float,
    Bool,
    List,
}

impl ParamType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::String => "string",
            ParamType::Int => "int",
            ParamType::Float => "float",
            ParamType::Bool => "bool",
            ParamType::List => "list",
        }
    }
}

/// What a new scheduled run does while an earlier one is still running.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Runs overlap.
    #[default]
    Allow,
    /// The new run is not started.
    Forbid,
    /// The running one is cancelled and the new one started.
    Replace,
}

/// One step: a command in a container image.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Unique within the pipeline: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// The container image. Recorded and part of the cache key; locally the command runs on
    /// the host.
    pub image: String,
    /// The program and its first arguments; placeholders `{{...}}` are resolved at run time.
    pub command: Vec<String>,
    /// More arguments, appended to `command`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    /// Steps this one waits for, beyond those it references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// A condition; the step is `Skipped` when it is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// Fans the step out over a list: a reference to a list parameter or an upstream output
    /// parameter holding a JSON list, or a literal JSON list. Each child sees `{{item}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The longest one attempt may run, as a Go duration (`30m`, `1h30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    /// Where the step's pod runs in a cluster, and what it carries; the local runtime ignores
    /// it, and it is not part of the cache key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// Makes the step a distributed training job: its replicas by role (`chief`, `worker`,
    /// `ps`, `evaluator`), run as one gang with the TrainingJob's env contract. Outputs come
    /// from the leader (the chief, else worker 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub roles: BTreeMap<String, RoleSpec>,
    /// With `roles`: when the gang has succeeded; `ChiefOrWorker0` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_policy: Option<SuccessPolicy>,
    /// With `roles`: how the gang restarts when a replica fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// With `roles`: how often replicas checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointPolicy>,
}

/// The pod-level settings of a step in a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodSettings {
    /// Node labels the pod's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Annotations added to the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Labels added to the pod (toucan's own `toucan.dev/*` labels cannot be overridden).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// An environment variable of a step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

/// Compute resources a step asks for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    /// A Kubernetes CPU quantity (`500m`, `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// A Kubernetes memory quantity (`4Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Whole accelerators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<u32>,
}

/// What a step consumes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inputs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<InputParam>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<InputArtifact>,
}

/// A named input value, usually a reference; the step sees it as `{{inputs.params.NAME}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputParam {
    pub name: String,
    pub value: String,
}

/// A named input artifact, materialized at `{{inputs.artifacts.NAME}}`. Exactly one of `from`
/// (an upstream step's output artifact, or a parameter naming an artifact) or `path` (a local
/// file or directory, relative to the manifest) is set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputArtifact {
    pub name: String,
    /// `{{steps.STEP.outputs.artifacts.NAME}}`, or `{{params.NAME}}`: a string parameter whose
    /// value is a path or the `sha256:` digest of a stored artifact (stored or found before
    /// the run starts, keyed by content), or empty for no artifact (the placeholder is then the
    /// empty string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A file or directory on the machine that submits the run; hashed by content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// What a step produces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outputs {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<OutputParam>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<OutputArtifact>,
}

/// A small value the step writes to the file `{{outputs.params.NAME}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputParam {
    pub name: String,
    /// The value's type, checked when the step finishes; `string` when omitted.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ParamType>,
}

/// A file or directory the step writes at `{{outputs.artifacts.NAME}}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutputArtifact {
    pub name: String,
}

/// How often a failed step is tried again, and how long to wait in between.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub limit: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Exit codes that mean the step can never succeed with these inputs: an attempt that
    /// ends with one is not retried. `[2]` (a usage error, as `toucan-worker` and most
    /// command-line tools exit on bad arguments) when omitted; `[]` retries every failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permanent_exit_codes: Option<Vec<i32>>,
}

/// Exponential backoff: `initial * factor^(retry-1)`, capped at `max`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    /// First delay, as a Go duration (`5s`); 1s when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Growth factor; 2 when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// Longest delay, as a Go duration; 10m when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
}

/// Whether a step's outputs are cached, and for how long.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CachePolicy {
    /// On unless set to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Entries older than this are not used, as a Go duration (`168h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
    /// Changes the key without changing the step, to force a miss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
}

/// What the controller observed of a `Pipeline`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_count: Option<u32>,
    /// The name of the most recent PipelineRun it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// The most recent time the schedule fired (RFC 3339), whether a run started or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
