//! The contract between a runtime and the launcher (`toucan-launcher exec`, also
//! `toucan-worker exec`) that wraps every step attempt.
//!
//! The runtime writes a [`LaunchSpec`] and starts the launcher. The launcher materializes the
//! inputs from the artifact store by digest, resolves the path placeholders, runs the command
//! in a scratch directory, stores the outputs, and writes a [`LaunchReport`] (atomically) for
//! the runtime to read. Locally the spec and report are files; in a cluster the same report
//! is also the pod's termination message.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cache::DeclaredOutputs;
use crate::engine::{InputSource, Invocation};
use crate::records::{ArtifactRef, Millis, StepOutputs};
use crate::template::{Reference, Template};

/// Output parameters are small values; anything larger belongs in an artifact.
pub const MAX_PARAM_BYTES: usize = 256 * 1024;

/// The launcher's exit code when the launcher itself failed (inputs, outputs, store); the
/// user command's own exit code is passed through otherwise.
pub const LAUNCHER_FAILURE_EXIT: i32 = 120;

/// What the launcher needs to run one attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchSpec {
    pub run_id: String,
    pub node: String,
    pub attempt: u32,
    /// Command and args with values resolved and path placeholders left.
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// The values the step's templates used, typed ([`Invocation::values`]); written to
    /// [`LaunchSpec::values_path`] for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, serde_json::Value>,
    pub inputs: BTreeMap<String, InputSource>,
    pub outputs: DeclaredOutputs,
    /// The artifact store's location (`open` syntax).
    pub artifacts: String,
    /// The attempt's directory: `inputs/`, `outputs/`, `work/` are made inside it.
    pub dir: PathBuf,
    /// Where checkpoints go, when not beside the attempt's directory: the step's replicas
    /// share one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<PathBuf>,
    /// Whether the outputs are collected and stored; a gang's replicas other than its leader
    /// write theirs where the command expects them, and they are dropped.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub collect_outputs: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A step's newest checkpoint as the cluster keeps it: a directory in the artifact store holding
/// `latest` and the one checkpoint directory it names, as the command left them in
/// `TOUCAN_CHECKPOINT_DIR`. The leader's launcher stores it while the command runs and `PUT`s
/// this pointer to the control-plane API; the launcher of every new pod of the step (a
/// restarted gang, a retried attempt) `GET`s it and restores the directory before the command
/// starts. The body of the run document `checkpoint`, keyed by node.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointPointer {
    /// The stored directory: `latest` and the checkpoint it names.
    pub artifact: ArtifactRef,
    /// The checkpoint's directory name: `ckpt-` and its step number (`ckpt-0000001234`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^ckpt-[0-9]+$"))]
    pub checkpoint: CheckpointName,
    /// The attempt that stored it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// The gang's incarnation that stored it (distributed steps).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u32>,
    /// When the control plane recorded it (ms since the epoch); set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub updated_at: Option<Millis>,
}

impl CheckpointPointer {
    /// Whether this pointer may replace `stored`. A pointer never moves back to an older step
    /// (a late upload of a stopped incarnation); the same step again replaces it, since a
    /// command may save one step twice (periodically, then at an epoch's end).
    pub fn may_replace(&self, stored: &CheckpointPointer) -> bool {
        self.checkpoint.step() >= stored.checkpoint.step()
    }
}

/// A checkpoint's directory name: `ckpt-` followed by its step number in decimal digits, as
/// `toucan-worker train` names them. Nothing else is accepted, so the name is safe as a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CheckpointName {
    name: String,
    step: u64,
}

/// The prefix of every checkpoint's directory name.
pub const CHECKPOINT_PREFIX: &str = "ckpt-";

impl CheckpointName {
    pub fn parse(name: &str) -> Result<CheckpointName, String> {
        let step = name
            .strip_prefix(CHECKPOINT_PREFIX)
            .filter(|digits| !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|digits| digits.parse::<u64>().ok())
            .ok_or_else(|| {
                format!("{name:?} is not a checkpoint name (`ckpt-` and a step number)")
            })?;
        Ok(CheckpointName {
            name: name.to_string(),
            step,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The step number the name carries.
    pub fn step(&self) -> u64 {
        self.step
    }
}

impl TryFrom<String> for CheckpointName {
    type Error = String;
    fn try_from(name: String) -> Result<CheckpointName, String> {
        CheckpointName::parse(&name)
    }
}

impl From<CheckpointName> for String {
    fn from(name: CheckpointName) -> String {
        name.name
    }
}

impl std::fmt::Display for CheckpointName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// The name of an attempt's metrics file, beside its log.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// What happened to one attempt.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LaunchReport {
    pub succeeded: bool,
    /// The command's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended the command, when it was killed.
    pub signal: Option<i32>,
    pub outputs: StepOutputs,
    /// Why the attempt failed, in a sentence.
    pub error: Option<String>,
    pub duration_ms: u64,
}

impl LaunchSpec {
    /// The spec of one attempt of `inv` in run `run_id`, in the attempt directory `dir`, with
    /// artifacts in the store at `artifacts`.
    pub fn for_attempt(
        run_id: &str,
        inv: &Invocation,
        artifacts: &str,
        dir: PathBuf,
    ) -> LaunchSpec {
        LaunchSpec {
            run_id: run_id.to_string(),
            node: inv.node.clone(),
            attempt: inv.attempt,
            argv: inv.argv.clone(),
            env: inv.env.clone(),
            values: inv.values.clone(),
            inputs: inv.inputs.clone(),
            outputs: inv.outputs.clone(),
            artifacts: artifacts.to_string(),
            dir,
            checkpoints: None,
            collect_outputs: true,
        }
    }

    pub fn inputs_dir(&self) -> PathBuf {
        self.dir.join("inputs")
    }
    pub fn outputs_dir(&self) -> PathBuf {
        self.dir.join("outputs")
    }
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// The JSON object of typed values the command may read (`TOUCAN_VALUES`).
    pub fn values_path(&self) -> PathBuf {
        self.dir.join("values.json")
    }
    pub fn report_path(&self) -> PathBuf {
        self.dir.join("report.json")
    }
    /// A directory shared by all attempts of the step in this run (`TOUCAN_CHECKPOINT_DIR`),
    /// beside the attempts' own: where training keeps checkpoints that a retry resumes from.
    pub fn checkpoint_dir(&self) -> PathBuf {
        if let Some(dir) = &self.checkpoints {
            return dir.clone();
        }
        match self.dir.parent() {
            Some(step_dir) => step_dir.join("checkpoints"),
            None => self.dir.join("checkpoints"),
        }
    }
    /// The metrics file a step's command may append JSON lines to (`TOUCAN_METRICS_FILE`).
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }
    pub fn spec_path(dir: &Path) -> PathBuf {
        dir.join("launch.json")
    }
    pub fn input_path(&self, name: &str) -> PathBuf {
        self.inputs_dir().join(name)
    }
    pub fn output_artifact_path(&self, name: &str) -> PathBuf {
        self.outputs_dir().join("artifacts").join(name)
    }
    pub fn output_param_path(&self, name: &str) -> PathBuf {
        self.outputs_dir().join("params").join(name)
    }

    /// Resolves the path placeholders of one string.
    pub fn resolve_paths(&self, text: &str) -> Result<String, String> {
        let template = Template::parse(text).map_err(|e| format!("{text:?}: {e}"))?;
        let mut error = None;
        let out = template.render(|r| {
            let path = match r {
                Reference::InputArtifact(n) => match self.inputs.get(n) {
                    Some(InputSource::Absent) => return Some(String::new()),
                    Some(_) => self.input_path(n),
                    None => {
                        error.get_or_insert_with(|| {
                            format!("{r} cannot be resolved by the launcher")
                        });
                        return None;
                    }
                },
                Reference::OutputArtifact(n) if self.outputs.artifacts.contains(n) => {
                    self.output_artifact_path(n)
                }
                Reference::OutputParam(n) if self.outputs.params.contains(n) => {
                    self.output_param_path(n)
                }
                other => {
                    error.get_or_insert_with(|| {
                        format!("{other} cannot be resolved by the launcher")
                    });
                    return None;
                }
            };
            Some(path.to_string_lossy().into_owned())
        });
        match error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

/// What the launcher's `stage` command stores before a cluster run starts: the run's `path:`
/// inputs, read in the step's image (relative paths from its working directory). Its report
/// names each stored input `STEP/INPUT` among its output artifacts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageSpec {
    pub run_id: String,
    /// The artifact store's location (`open` syntax).
    pub artifacts: String,
    pub inputs: Vec<StageInput>,
}

/// One `path:` input to store, or one artifact a parameter names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageInput {
    pub step: String,
    pub input: String,
    /// A file or directory; for a parameter's value also a `sha256:` digest of an artifact
    /// already in the store.
    pub path: String,
    /// The parameter whose value `path` is, when a parameter names the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

/// The node name a stage reports under.
pub const STAGE_NODE: &str = "_stage";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ArtifactKind;

    fn pointer(name: &str) -> CheckpointPointer {
        CheckpointPointer {
            artifact: ArtifactRef {
                digest: "sha256:00".into(),
                size: 1,
                kind: ArtifactKind::Dir,
            },
            checkpoint: CheckpointName::parse(name).unwrap(),
            attempt: None,
            incarnation: None,
            updated_at: None,
        }
    }

    #[test]
    fn checkpoint_names_carry_their_step() {
        for (name, step) in [("ckpt-0000001234", Some(1234)), ("ckpt-7", Some(7))] {
            assert_eq!(CheckpointName::parse(name).ok().map(|n| n.step()), step);
        }
        for bad in [
            "ckpt-",
            "ckpt-12a",
            "ckpt--1",
            "ckpt-+1",
            "ckpt-1/../x",
            "latest",
            "",
            "ckpt-99999999999999999999",
        ] {
            assert!(CheckpointName::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_pointer_never_moves_back() {
        let (old, new) = (pointer("ckpt-0000000009"), pointer("ckpt-0000000010"));
        assert!(new.may_replace(&old));
        assert!(!old.may_replace(&new));
        assert!(
            old.may_replace(&old),
            "the same step saved again replaces it"
        );
    }

    #[test]
    fn a_pointer_reads_back_as_written() {
        let json = serde_json::json!({
            "artifact": {"digest": "sha256:00", "size": 1, "kind": "dir"},
            "checkpoint": "ckpt-0000000010",
            "incarnation": 1,
        });
        let read: CheckpointPointer = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(read.checkpoint.step(), 10);
        assert_eq!(serde_json::to_value(&read).unwrap(), json);
        let bad = serde_json::json!({
            "artifact": {"digest": "sha256:00", "size": 1, "kind": "dir"},
            "checkpoint": "../etc",
        });
        assert!(serde_json::from_value::<CheckpointPointer>(bad).is_err());
    }
}
