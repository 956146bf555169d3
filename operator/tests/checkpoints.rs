//! Checkpoints on the real test cluster: each pod has a checkpoint directory of its own (in
//! its emptyDir), so a gang restarted on new pods and a retried step resume only because the
//! launcher keeps the newest checkpoint in the artifact store, keyed by run and step, and
//! restores it into the new pods before their command starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::Harness;
use kube::api::{Api, PostParams};
use toucan_core::api::PipelineRun;
use toucan_core::engine::gang::Gang;
use toucan_core::records::DocumentKind;

const NS: &str = "default";

/// Saves and restores checkpoints in `toucan-worker train`'s layout (`ckpt-NNNNNNNNNN/`
/// renamed into place complete, then `latest` likewise). Every pod's directory starts empty in
/// the first incarnation and attempt; in later ones the command prints what it restored to its
/// output param (argv[1]), or fails when it found nothing.
///
/// `train` (a gang of two): in incarnation 0 rank 0 saves a checkpoint at once and waits to be
/// stopped, and rank 1 exits 137 after a few seconds (as a SIGKILL would), which restarts
/// the gang on new pods. `retried` (a plain step): attempt 1 saves a checkpoint and fails.
const SCRIPT: &str = r#"
import os, sys, time
d = os.environ["TOUCAN_CHECKPOINT_DIR"]
first = os.environ.get("TOUCAN_INCARNATION", "0") == "0" and os.environ["TOUCAN_ATTEMPT"] == "1"
rank = os.environ.get("RANK", "0")

def restored():
    try:
        name = open(os.path.join(d, "latest")).read().strip()
    except FileNotFoundError:
        return None
    return open(os.path.join(d, name, "data")).read()

def save(step, text):
    os.makedirs(d, exist_ok=True)
    name = "ckpt-%010d" % step
    partial = os.path.join(d, "." + name + ".partial")
    os.makedirs(partial)
    open(os.path.join(partial, "data"), "w").write(text)
    os.rename(partial, os.path.join(d, name))
    open(os.path.join(d, ".latest.tmp"), "w").write(name)
    os.rename(os.path.join(d, ".latest.tmp"), os.path.join(d, "latest"))

if first:
    if restored() is not None:
        sys.exit("the checkpoint directory of a first pod is not empty: " + d)
    if "RANK" not in os.environ:
        save(1, "saved by attempt 1")
        sys.exit(1)
    if rank == "0":
        save(1, "saved by incarnation 0")
        time.sleep(120)
    time.sleep(6)
    sys.exit(137)
found = restored()
if found is None:
    sys.exit("nothing was restored into " + d)
if rank == "0":
    open(sys.argv[1], "w").write(found)
"#;

fn run(name: &str) -> PipelineRun {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": {"steps": [
            {
                "name": "train", "image": "python",
                "command": ["python3", "-c", SCRIPT, "{{outputs.params.found}}"],
                "outputs": {"params": [{"name": "found"}]},
                "cache": {"enabled": false},
                "roles": {"worker": {"replicas": 2}},
                "failurePolicy": {"maxRestarts": 1},
            },
            {
                "name": "retried", "image": "python",
                "command": ["python3", "-c", SCRIPT, "{{outputs.params.found}}"],
                "outputs": {"params": [{"name": "found"}]},
                "cache": {"enabled": false},
                "retry": {"limit": 1},
            },
            {
                "name": "check", "image": "busybox", "dependsOn": ["train", "retried"],
                "command": ["sh", "-c",
                            "test \"$1\" = 'saved by incarnation 0' && test \"$2\" = 'saved by attempt 1'",
                            "check",
                            "{{steps.train.outputs.params.found}}",
                            "{{steps.retried.outputs.params.found}}"],
                "cache": {"enabled": false},
            },
        ]}},
    }))
    .unwrap()
}

/// The notes of the Events of `reason` about the PipelineRun `run`.
fn events(h: &Harness, run: &str, reason: &str) -> String {
    h.kubectl_ok(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("involvedObject.name={run},reason={reason}"),
        "-o",
        "jsonpath={.items[*].message}",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_restarted_on_new_pods_and_a_retried_step_resume_from_the_artifact_store() {
    let Some(h) = Harness::start("checkpoints").await else {
        return;
    };
    h.apply_crds();
    let operator = h.operator("a", &[]);
    let api: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    api.create(&PostParams::default(), &run("resume"))
        .await
        .unwrap();

    let done = h
        .wait_finished(NS, "resume", Duration::from_secs(240))
        .await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "{:?}\n{}\n{}",
        status.message,
        events(&h, "resume", "StepFailed"),
        operator.log_text()
    );

    let run_id = status.run_id.clone().unwrap();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    // The gang restarted once (new pods, named by incarnation) after worker-1's kill.
    let gang: Gang = serde_json::from_value(
        store
            .get_run_document(&run_id, DocumentKind::Gang, "train/1")
            .await
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!((gang.restarts, gang.incarnation), (1, 1), "{gang:?}");
    // The pointers the leaders recorded: the gang's from incarnation 0, the step's from
    // attempt 1; each names a directory artifact in the store.
    for (node, by) in [("train", "incarnation"), ("retried", "attempt")] {
        let pointer = store
            .get_run_document(&run_id, DocumentKind::Checkpoint, node)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no checkpoint pointer for {node}"));
        assert_eq!(
            pointer["checkpoint"], "ckpt-0000000001",
            "{node}: {pointer}"
        );
        assert_eq!(pointer["artifact"]["kind"], "dir", "{node}: {pointer}");
        let expected = if by == "incarnation" { 0 } else { 1 };
        assert_eq!(pointer[by], expected, "{node}: {pointer}");
    }
    let steps = store.list_steps(&run_id).await.unwrap();
    let retried = steps.iter().find(|s| s.name == "retried").unwrap();
    assert_eq!(retried.attempts, 2, "{retried:?}");
    assert_eq!(retried.outputs.params["found"], "saved by attempt 1");
}
