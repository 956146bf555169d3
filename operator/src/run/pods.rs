//! Step pods: their names, labels and specs. Pure: built from an [`Invocation`] and the
//! operator's settings, tested without a cluster.
//!
//! A step pod has an init container that copies the launcher (`toucan-launcher`) from the
//! launcher image into an emptyDir, and one container, `step`, that runs the user's image
//! with the launcher as its command: `toucan-launcher exec --spec-env TOUCAN_LAUNCH_SPEC`. The
//! launcher materializes inputs, runs the command, stores outputs, reports to the API and
//! leaves the same report in the termination message. Pod names are derived from the run, the
//! node and the attempt, so a repeated reconcile finds the pod it created instead of making
//! another.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toucan_core::api::{PodSettings, Resources};
use toucan_core::engine::Invocation;
use toucan_core::launch::{LaunchReport, LaunchSpec};

pub use toucan_core::api::labels::{
    ATTEMPT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, NODE_ANNOTATION, RUN_ID_ANNOTATION, RUN_LABEL,
    RUN_UID_LABEL, SOURCE_DIR_ANNOTATION, STEP_CONTAINER, STEP_LABEL,
};

/// The launcher's name, in the launcher image (on its `PATH`) and in the pod.
pub const LAUNCHER_BIN: &str = "toucan-launcher";

/// The environment variable holding the launch spec as JSON.
pub const SPEC_ENV: &str = "TOUCAN_LAUNCH_SPEC";

const LAUNCHER_DIR: &str = "/toucan/bin";
const WORK_DIR: &str = "/toucan/work";
const TERMINATION_LOG: &str = "/dev/termination-log";
/// An unprivileged user that no image maps to root.
const STEP_UID: i64 = 65532;

/// What every step pod of the operator shares.
#[derive(Clone, Debug)]
pub struct PodDefaults {
    pub launcher_image: String,
    /// The images of an Endpoint's model servers and router.
    pub serving_image: String,
    pub router_image: String,
    pub service_account: String,
    pub api_url: Option<String>,
    pub artifacts: String,
    pub artifacts_secret: Option<String>,
}

/// The run a pod belongs to.
#[derive(Clone, Debug)]
pub struct RunRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub owner: OwnerReference,
}

/// A Kubernetes name: lowercase letters, digits and `-`, at most 63 characters; longer or
/// rewritten names keep a hash of the original so two nodes never share one.
pub fn dns_label(text: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    while clean.contains("--") {
        clean = clean.replace("--", "-");
    }
    let clean = clean.trim_matches('-').to_string();
    if clean == text && clean.len() <= 63 && !clean.is_empty() {
        return clean;
    }
    let hash = hex::encode(&Sha256::digest(text.as_bytes())[..4]);
    let keep = clean.len().min(63 - hash.len() - 1);
    let head = clean[..keep].trim_end_matches('-');
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// The pod of one attempt of one node.
pub fn pod_name(run: &str, node: &str, attempt: u32) -> String {
    dns_label(&format!("{run}-{node}-{attempt}"))
}

fn labels(
    run: &RunRef,
    step: &str,
    attempt: u32,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = extra
        .iter()
        .filter(|(k, _)| !k.starts_with("toucan.dev/") && k.as_str() != MANAGED_BY_LABEL)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels.insert(RUN_LABEL.into(), dns_label(&run.name));
    labels.insert(RUN_UID_LABEL.into(), run.uid.clone());
    labels.insert(STEP_LABEL.into(), dns_label(step));
    labels.insert(ATTEMPT_LABEL.into(), attempt.to_string());
    labels
}

pub(crate) fn resources(r: Option<&Resources>) -> Option<ResourceRequirements> {
    let r = r?;
    let mut requests = BTreeMap::new();
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &r.cpu {
        requests.insert("cpu".to_string(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &r.memory {
        requests.insert("memory".to_string(), Quantity(memory.clone()));
        limits.insert("memory".to_string(), Quantity(memory.clone()));
    }
    if let Some(gpu) = r.gpu.filter(|g| *g > 0) {
        // Extended resources must be requested and limited alike.
        requests.insert("nvidia.com/gpu".to_string(), Quantity(gpu.to_string()));
        limits.insert("nvidia.com/gpu".to_string(), Quantity(gpu.to_string()));
    }
    Some(ResourceRequirements {
        requests: (!requests.is_empty()).then_some(requests),
        limits: (!limits.is_empty()).then_some(limits),
        ..ResourceRequirements::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(crate) fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

pub(crate) fn restricted() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}

/// What a launcher pod runs: the node's identity and its launch spec.
#[derive(Debug)]
pub struct LauncherPod<'a> {
    pub node: &'a str,
    pub step: &'a str,
    pub attempt: u32,
    pub image: &'a str,
    /// `exec` for a step, `stage` for the pod that stores `path:` inputs.
    pub subcommand: &'a str,
    pub spec_json: String,
    pub resources: Option<&'a Resources>,
    pub pod: Option<&'a PodSettings>,
    pub timeout_ms: Option<u64>,
    pub working_dir: Option<String>,
}

/// The launch spec of an attempt as it runs in a pod: its directory is the pod's emptyDir.
pub fn launch_spec(run_id: &str, inv: &Invocation, artifacts: &str) -> LaunchSpec {
    LaunchSpec::for_attempt(run_id, inv, artifacts, format!("{WORK_DIR}/attempt").into())
}

/// The pod of one launcher run.
pub fn build_pod(run: &RunRef, defaults: &PodDefaults, p: &LauncherPod<'_>) -> Pod {
    let settings = p.pod.cloned().unwrap_or_default();
    let mut annotations = settings.annotations.clone();
    annotations.insert(RUN_ID_ANNOTATION.into(), run.uid.clone());
    annotations.insert(NODE_ANNOTATION.into(), p.node.to_string());
    let mut step_env = vec![
        env(SPEC_ENV, p.spec_json.clone()),
        env("TOUCAN_TERMINATION_MESSAGE_PATH", TERMINATION_LOG),
        // The root filesystem is read-only: home and temporary files live in the work volume.
        env("HOME", format!("{WORK_DIR}/home")),
        env("TMPDIR", format!("{WORK_DIR}/tmp")),
    ];
    if let Some(url) = &defaults.api_url {
        step_env.push(env("TOUCAN_API", url.clone()));
    }
    let env_from = defaults.artifacts_secret.as_ref().map(|name| {
        vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: name.clone(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]
    });
    let launcher = format!("{LAUNCHER_DIR}/{LAUNCHER_BIN}");
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&run.name, p.node, p.attempt)),
            namespace: Some(run.namespace.clone()),
            labels: Some(labels(run, p.step, p.attempt, &settings.labels)),
            annotations: Some(annotations),
            owner_references: Some(vec![run.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            service_account_name: Some(defaults.service_account.clone()),
            automount_service_account_token: Some(true),
            enable_service_links: Some(false),
            active_deadline_seconds: p.timeout_ms.map(|ms| ms.div_ceil(1000).max(1) as i64),
            node_selector: (!settings.node_selector.is_empty())
                .then(|| settings.node_selector.clone()),
            tolerations: (!settings.tolerations.is_empty()).then(|| settings.tolerations.clone()),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(STEP_UID),
                run_as_group: Some(STEP_UID),
                fs_group: Some(STEP_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            init_containers: Some(vec![Container {
                name: "launcher".into(),
                image: Some(defaults.launcher_image.clone()),
                command: Some(vec![
                    LAUNCHER_BIN.into(),
                    "install-launcher".into(),
                    LAUNCHER_DIR.into(),
                ]),
                volume_mounts: Some(vec![mount("toucan-bin", LAUNCHER_DIR, false)]),
                security_context: Some(restricted()),
                ..Container::default()
            }]),
            containers: vec![Container {
                name: STEP_CONTAINER.into(),
                image: Some(p.image.to_string()),
                command: Some(vec![
                    launcher,
                    p.subcommand.into(),
                    "--spec-env".into(),
                    SPEC_ENV.into(),
                ]),
                env: Some(step_env),
                env_from,
                working_dir: p.working_dir.clone(),
                resources: resources(p.resources),
                termination_message_path: Some(TERMINATION_LOG.into()),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                volume_mounts: Some(vec![
                    mount("toucan-bin", LAUNCHER_DIR, true),
                    mount("toucan-work", WORK_DIR, false),
                ]),
                security_context: Some(restricted()),
                ..Container::default()
            }],
            volumes: Some(vec![empty_dir("toucan-bin"), empty_dir("toucan-work")]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Whether `pod` is one of the run with UID `run_uid`: a PipelineRun deleted and made again
/// under the same name has another UID, and must never take the old run's pods.
pub fn belongs_to(pod: &Pod, run_uid: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(RUN_UID_LABEL))
        .is_some_and(|uid| uid == run_uid)
}

/// What is left of a pod for the controller: where the attempt is.
#[derive(Clone, Debug, PartialEq)]
pub enum PodOutcome {
    /// Not finished (pending, running, or being deleted without a result).
    Running,
    /// The `step` container ended; the report from its termination message, if readable.
    Ended {
        exit_code: Option<i32>,
        reason: Option<String>,
        report: Option<LaunchReport>,
        message: Option<String>,
    },
}

/// A pod's outcome, from its status.
pub fn outcome(pod: &Pod) -> PodOutcome {
    let Some(status) = &pod.status else {
        return PodOutcome::Running;
    };
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == STEP_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    match (phase, terminated) {
        ("Succeeded" | "Failed", Some(t)) => {
            let report = t
                .message
                .as_deref()
                .and_then(|m| serde_json::from_str::<TerminationReport>(m.trim()).ok())
                .map(|r| r.0);
            PodOutcome::Ended {
                exit_code: Some(t.exit_code),
                reason: t.reason.clone(),
                report,
                message: t.message.clone(),
            }
        }
        // Failed before the container ran: an init container failed, the deadline passed,
        // or the node went away.
        ("Failed", None) => PodOutcome::Ended {
            exit_code: None,
            reason: status.reason.clone(),
            report: None,
            message: status.message.clone(),
        },
        _ => PodOutcome::Running,
    }
}

/// The launcher's report as it writes it to the termination message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
struct TerminationReport(LaunchReport);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn names_are_dns_labels_and_distinct() {
        assert_eq!(dns_label("fashion-train-1"), "fashion-train-1");
        let a = pod_name("run", "shard[3]", 1);
        let b = pod_name("run", "shard-3", 1);
        assert_ne!(a, b, "a rewritten name keeps a hash of the original");
        let long = pod_name(&"x".repeat(80), "train", 2);
        assert!(long.len() <= 63, "{long}");
        for name in [a, b, long] {
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
    }

    #[test]
    fn a_pod_belongs_only_to_the_run_with_its_uid() {
        let run = RunRef {
            namespace: "ns".into(),
            name: "daily".into(),
            uid: "uid-new".into(),
            owner: OwnerReference::default(),
        };
        let mut old = run.clone();
        old.uid = "uid-old".into();
        let ours = labels(&run, "train", 1, &BTreeMap::new());
        let theirs = labels(&old, "train", 1, &BTreeMap::new());
        let pod = |labels| Pod {
            metadata: ObjectMeta {
                labels: Some(labels),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        assert!(belongs_to(&pod(ours), "uid-new"));
        assert!(!belongs_to(&pod(theirs), "uid-new"), "same name, older run");
        assert!(!belongs_to(&Pod::default(), "uid-new"));
    }

    #[test]
    fn gpu_is_requested_and_limited() {
        let r = resources(Some(&Resources {
            cpu: Some("2".into()),
            memory: Some("4Gi".into()),
            gpu: Some(1),
        }))
        .unwrap();
        let requests = r.requests.unwrap();
        let limits = r.limits.unwrap();
        assert_eq!(requests["nvidia.com/gpu"].0, "1");
        assert_eq!(limits["nvidia.com/gpu"].0, "1");
        assert_eq!(requests["cpu"].0, "2");
        assert!(
            !limits.contains_key("cpu"),
            "no CPU limit: throttling hurts training"
        );
    }
}
