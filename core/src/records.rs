//! The records of a run as the metadata store keeps them: runs, steps (nodes), attempts,
//! artifacts, cache entries and run documents, and the phases they move through. The engine
//! speaks in these types; the store itself (sqlx over SQLite and PostgreSQL) is the
//! `toucan-store` crate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::time::Millis;

/// The phase of a run, a step or an attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Skipped => "Skipped",
            Phase::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Skipped" => Phase::Skipped,
            "Cancelled" => Phase::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to a thing in this phase.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Skipped | Phase::Cancelled
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outputs of a step: small parameter values and artifact digests, by output name.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutputs {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactRef>,
}

impl StepOutputs {
    /// The artifact rows of these outputs, produced by `step` of `run_id` at `now`.
    pub fn artifact_records(&self, run_id: &str, step: &str, now: Millis) -> Vec<ArtifactRecord> {
        self.artifacts
            .iter()
            .map(|(name, a)| ArtifactRecord {
                digest: a.digest.clone(),
                size: a.size,
                kind: a.kind,
                run_id: run_id.to_string(),
                step: step.to_string(),
                output: name.clone(),
                created_at: now,
            })
            .collect()
    }
}

/// A reference to an artifact in the content-addressed store.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// `sha256:<hex>` of the artifact's canonical bytes (a file, or a directory manifest).
    pub digest: String,
    /// Total size in bytes of the files the artifact holds.
    pub size: u64,
    pub kind: ArtifactKind,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    File,
    Dir,
}

/// One execution of a pipeline.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A ULID, unique in the store.
    pub id: String,
    pub pipeline: String,
    pub phase: Phase,
    /// The resolved parameter values of the run, as JSON.
    pub params: serde_json::Value,
    /// The pipeline spec the run executes (JSON), so a run can be resumed without its file.
    pub spec: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub created_at: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub finished_at: Option<Millis>,
    pub message: Option<String>,
}

/// One node of a run's graph: a step, or one child `name[index]` of a fan-out.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub name: String,
    pub phase: Phase,
    /// Hex cache key, once the step's inputs were resolved.
    pub cache_key: Option<String>,
    /// The components the key was computed from (see `cache::CacheKeyComponents`), as JSON.
    pub cache_components: Option<serde_json::Value>,
    pub cached: bool,
    pub attempts: u32,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub started_at: Option<Millis>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub finished_at: Option<Millis>,
    pub outputs: StepOutputs,
    pub message: Option<String>,
}

/// One attempt of a step: one process (locally) or one pod (in a cluster).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub run_id: String,
    pub step: String,
    /// 1-based.
    pub attempt: u32,
    pub phase: Phase,
    pub exit_code: Option<i32>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub started_at: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub finished_at: Option<Millis>,
    /// Where the attempt's log lives: a path for the local runtime, a digest for the cluster.
    pub log_ref: Option<String>,
    pub message: Option<String>,
}

/// A blob in the artifact store, as the metadata store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub digest: String,
    pub size: u64,
    pub kind: ArtifactKind,
    pub run_id: String,
    pub step: String,
    pub output: String,
    pub created_at: Millis,
}

/// A cache entry: the outputs a step with this key produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Hex SHA-256 cache key.
    pub key: String,
    pub outputs: StepOutputs,
    pub run_id: String,
    pub step: String,
    pub created_at: Millis,
}

/// Every row one step of an engine changed, written in one transaction: a node's result
/// with its attempt, artifacts and cache entry, a fan-out's children, the run's end.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunChanges {
    /// A run to record (inserted once; an existing row is left as it is).
    pub created: Option<RunRecord>,
    pub steps: Vec<StepRecord>,
    pub attempts: Vec<AttemptRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    /// Cache entries to write (only for succeeded, cacheable attempts).
    pub cache_entries: Vec<CacheEntry>,
    /// The run's new phase, message and finish time.
    pub phase: Option<RunPhase>,
}

impl RunChanges {
    pub fn is_empty(&self) -> bool {
        self == &RunChanges::default()
    }
}

/// A run's phase as recorded: set when it starts again (`--resume`) and when it ends.
#[derive(Clone, Debug, PartialEq)]
pub struct RunPhase {
    pub run_id: String,
    pub phase: Phase,
    pub message: Option<String>,
    pub finished_at: Option<Millis>,
}

/// What a run document holds: JSON kept beside a run's rows, one per (run, kind, key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// The engine's state of a run driven by the operator (key `""`).
    State,
    /// A launcher's report of one attempt (key `NODE/ATTEMPT`).
    Report,
    /// The metric series a step pushed (key: the node).
    Metrics,
    /// A distributed step's gang: the engine's record with every replica's end (key
    /// `NODE/ATTEMPT`).
    Gang,
    /// Where a step's newest checkpoint is kept in the artifact store, so that a new pod
    /// resumes from it (key: the node; body: a `launch::CheckpointPointer`).
    Checkpoint,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::State => "state",
            DocumentKind::Report => "report",
            DocumentKind::Metrics => "metrics",
            DocumentKind::Gang => "gang",
            DocumentKind::Checkpoint => "checkpoint",
        }
    }
}

/// A tuning study as the metadata store keeps it: its spec (to resume it without its file)
/// and its phase. Its trials are [`TrialRecord`]s. In a cluster its name is
/// `NAMESPACE/NAME`, as a run's pipeline is.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// Unique in the store: a ULID locally, the resource's UID in a cluster.
    pub id: String,
    /// The study's name (`metadata.name`).
    pub name: String,
    pub phase: Phase,
    /// What the study runs (the shell's own document, as JSON).
    pub spec: serde_json::Value,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub created_at: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub finished_at: Option<Millis>,
    pub message: Option<String>,
}

/// A payload sample as the metadata store keeps it: whom it belongs to and when it arrived.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampleRecord {
    /// The endpoint (`NAMESPACE/NAME` in a cluster, as a run's pipeline is).
    pub endpoint: String,
    pub sample: crate::serving::PayloadSample,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub stored_at: Millis,
}

/// One trial of a study, as the engine's ledger holds it, and the run it became.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRecord {
    pub study_id: String,
    pub trial: crate::tuning::Trial,
    /// The run of its current budget, once created.
    pub run_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub updated_at: Millis,
}

/// An alert of an endpoint as the metadata store keeps it: one row per episode (from the
/// first breach to the resolution), updated as it moves on. See
/// [`crate::monitoring::alerts`] for how an episode moves.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// The endpoint (`NAMESPACE/NAME` in a cluster).
    pub endpoint: String,
    /// What the alert is about, stable across episodes: `drift/all`,
    /// `floor/accuracy/v1/source=web`, `regression/accuracy/v2/all`, or an Alertmanager
    /// fingerprint.
    pub key: String,
    pub kind: crate::monitoring::alerts::AlertKind,
    pub phase: crate::monitoring::alerts::AlertPhase,
    /// One line: what breached, by how much.
    pub summary: String,
    /// The window of samples the breach was judged on (the newest one seen).
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub window_start: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub window_end: Millis,
    /// The figure that breached (an effect size, a metric or an interval's bound) and its
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// When the breach was first seen: with `key`, what identifies the episode.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub active_since: Millis,
    /// When it had held for `for` and fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub firing_since: Option<Millis>,
    /// The last time the breach was seen.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub last_breach: Millis,
    /// When it resolved (or cleared before firing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub ended_at: Option<Millis>,
    /// What the endpoint did about it: the retraining run it started, or why it held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The retraining run it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub updated_at: Millis,
}
