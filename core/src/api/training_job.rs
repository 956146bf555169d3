//! `TrainingJob`: one training program run as a gang of replicas (chief, workers, parameter
//! servers, an evaluator), restarted as a whole by its failure policy and resumed from its
//! newest checkpoint.
//!
//! A job's replica template is a pipeline step (image, command, env, inputs, outputs,
//! resources, placeholders); the same [`Gang`] fields turn a pipeline step into a distributed
//! one. Outputs come from the leader (the chief, else worker 0) and are stored and cached like
//! any step's.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{CachePolicy, EnvVar, Inputs, Outputs, PodSettings, Resources, Step};
use crate::duration::Duration;

/// A training program run as a gang of replicas.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "toucan.dev",
    version = "v1alpha1",
    kind = "TrainingJob",
    namespaced,
    status = "TrainingJobStatus",
    shortname = "tj",
    category = "toucan",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Restarts","type":"integer","jsonPath":".status.restarts"}"#,
    printcolumn = r#"{"name":"Epoch","type":"integer","jsonPath":".status.progress.epoch"}"#,
    printcolumn = r#"{"name":"Objective","type":"number","jsonPath":".status.progress.objective"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrainingJobSpec {
    /// The container image of every replica.
    pub image: String,
    /// The program and its first arguments; placeholders `{{...}}` as in a pipeline step.
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// What every replica asks for, unless its role says otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Artifacts given by `path:` (a file or directory beside the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Inputs>,
    /// What the leader produces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CachePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodSettings>,
    /// The replicas, by role: `chief`, `worker`, `ps`, `evaluator`.
    pub roles: BTreeMap<String, RoleSpec>,
    /// When the job has succeeded; `ChiefOrWorker0` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_policy: Option<SuccessPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_policy: Option<RunPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointPolicy>,
}

/// The replicas of one role.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleSpec {
    /// How many; 1 to 1024 (at most 1 chief).
    pub replicas: u32,
    /// What each replica of the role asks for, instead of the job's `resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// More environment variables for this role's replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
}

/// When a gang has succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SuccessPolicy {
    /// The chief exited 0, or worker 0 when there is no chief (Kubeflow's default).
    #[default]
    ChiefOrWorker0,
    /// Every chief and worker replica exited 0.
    AllWorkers,
}

/// How the gang is restarted when a replica fails.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailurePolicy {
    /// Whole-gang restarts after failures; 3 when omitted. Preemptions do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restarts: Option<u32>,
    /// What a replica's exit code means; the first rule that matches wins, and codes no rule
    /// matches fall back to the defaults (75: restart from the checkpoint; 1-127: fail;
    /// 128-255: restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ExitCodeRule>,
}

/// An action for a set of exit codes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExitCodeRule {
    /// Codes (`3`) and inclusive ranges (`"128-255"`), 1 to 255.
    pub exit_codes: Vec<IntOrString>,
    pub action: FailureAction,
}

/// What a failed replica does to its gang.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FailureAction {
    /// The job fails at once: the program cannot succeed with these inputs.
    #[default]
    Fail,
    /// The gang restarts from the newest checkpoint, counting against `maxRestarts`.
    Restart,
}

/// The job's lifetime.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunPolicy {
    /// The longest the job may run, restarts included, as a Go duration (`2h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline: Option<Duration>,
    /// How long a finished job is kept before it is deleted, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_after_finished: Option<Duration>,
    /// A suspended job runs no replicas; resuming continues from the newest checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// Which replicas are removed when the job finishes; `Running` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pods: Option<CleanPods>,
}

/// Which replicas go when a job finishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CleanPods {
    /// Those still running (parameter servers, an evaluator); finished ones keep their logs.
    #[default]
    Running,
    All,
    None,
}

/// How often replicas checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// `N epoch` or `N steps`; every epoch when omitted. A replica also checkpoints when it is
    /// asked to stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
}

/// The fields that make a step (or a job's template) a gang, borrowed from either.
#[derive(Clone, Copy, Debug)]
pub struct Gang<'a> {
    pub roles: &'a BTreeMap<String, RoleSpec>,
    pub success_policy: Option<SuccessPolicy>,
    pub failure_policy: Option<&'a FailurePolicy>,
    pub checkpoint: Option<&'a CheckpointPolicy>,
}

impl Step {
    /// The step's gang fields, when it has `roles`.
    pub fn gang(&self) -> Option<Gang<'_>> {
        (!self.roles.is_empty()).then_some(Gang {
            roles: &self.roles,
            success_policy: self.success_policy,
            failure_policy: self.failure_policy.as_ref(),
            checkpoint: self.checkpoint.as_ref(),
        })
    }
}

impl TrainingJobSpec {
    /// The job as the one step of a run: the same template, the job's name as the step's.
    pub fn step(&self, name: &str) -> Step {
        Step {
            name: name.to_string(),
            image: self.image.clone(),
            command: self.command.clone(),
            args: self.args.clone(),
            env: self.env.clone(),
            resources: self.resources.clone(),
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            cache: self.cache.clone(),
            pod: self.pod.clone(),
            timeout: self
                .run_policy
                .as_ref()
                .and_then(|p| p.active_deadline.clone()),
            roles: self.roles.clone(),
            success_policy: self.success_policy,
            failure_policy: self.failure_policy.clone(),
            checkpoint: self.checkpoint.clone(),
            ..Step::default()
        }
    }
}

/// The longest `status.message` of a TrainingJob.
pub const MAX_JOB_MESSAGE_CHARS: usize = 1024;
/// The longest log tail kept in `status.lastFailure`.
pub const MAX_LOG_TAIL_CHARS: usize = 2048;

/// A bounded summary of a job; per-replica history lives in the metadata store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobStatus {
    /// `Pending`, `Suspended`, `Running`, `Restarting`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The job's run id in the metadata store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Running replicas over all replicas (`2/3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    /// Per role: how many replicas of the current gang are active, succeeded, failed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replicas: BTreeMap<String, ReplicaCounts>,
    /// Gang restarts after failures.
    #[serde(default)]
    pub restarts: u32,
    /// Gang restarts after preemptions (evictions, node drains); not counted in `restarts`.
    #[serde(default)]
    pub preemptions: u32,
    /// Which gang this is: 0 for the first, one more at every restart, preemption or resume.
    #[serde(default)]
    pub incarnation: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<ReplicaFailure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<TrainingProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// How many replicas of one role are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    pub active: u32,
    pub succeeded: u32,
    pub failed: u32,
}

/// The replica whose end decided the last restart or failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaFailure {
    pub role: String,
    pub index: u32,
    pub incarnation: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// `Error`, `Killed`, `Preempted`, `LaunchFailed`.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// The end of the replica's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub log_tail: Option<String>,
}

/// What the leader last reported of its training.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingProgress {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The objective metric (`val_accuracy`, else `accuracy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// The latest value of each metric.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}
