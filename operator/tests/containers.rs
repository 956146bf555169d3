//! Step pods in real containers: the test cluster's container node runs each pod in its image
//! with runc (tests/cluster), from the images `scripts/images` built. The launcher comes from
//! `toucan/step-base` by the init container and runs inside the step's image; `toucan-worker`
//! runs on libtorch's CPU libraries in `toucan/worker:VERSION-cpu`; the root filesystem is
//! read-only; a step over its memory limit is reported `OOMKilled` and retried per its policy;
//! a command the image lacks fails with a message that names it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, container_statuses};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use toucan_core::api::PipelineRun;
use toucan_core::records::Phase;
use toucan_test_harness::images;

const NS: &str = "default";

/// A step that runs `command` in `image` on the container node, never from the cache.
fn step(name: &str, image: &str, command: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "image": image,
        "command": command,
        "cache": {"enabled": false},
        "pod": {
            "nodeSelector": {"cluster.toucan.dev/mode": "container"},
            "tolerations": [{"key": "cluster.toucan.dev/container", "operator": "Exists", "effect": "NoSchedule"}],
        },
    })
}

fn node_of(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()["toucan.dev/node"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_run_in_their_images() {
    let worker = images::reference("worker", "-cpu");
    let base = images::reference("step-base", "");
    if !images::available(&[worker.clone(), base.clone()]).unwrap() {
        return;
    }
    // Containers reach the artifact store over the network, not through this machine's files.
    let Some(_) = toucan_test_harness::s3::location().unwrap() else {
        return;
    };
    let Some(h) = Harness::start("containers").await else {
        return;
    };
    h.apply_crds();
    let operator = h.operator("op-1", &["--leader-elect=false"]);
    operator.ready().await;
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();

    let mut oom = step(
        "oom",
        &base,
        serde_json::json!(["sh", "-c", "head -c 256m /dev/zero | tail"]),
    );
    oom["resources"] = serde_json::json!({"memory": "32Mi"});
    oom["retry"] = serde_json::json!({"limit": 1, "backoff": {"initial": "1s"}});
    let mut device = step(
        "device",
        &worker,
        serde_json::json!([
            "sh",
            "-c",
            "toucan-worker device > {{outputs.params.device}}"
        ]),
    );
    device["outputs"] = serde_json::json!({"params": [{"name": "device"}]});
    let mut readonly = step(
        "readonly",
        &base,
        serde_json::json!([
            "sh",
            "-c",
            "if touch /probe 2>/dev/null; then echo the root filesystem is writable; exit 1; fi; \
             echo written > {{outputs.params.ok}}"
        ]),
    );
    readonly["outputs"] = serde_json::json!({"params": [{"name": "ok"}]});
    let missing = step(
        "missing",
        &base,
        serde_json::json!(["no-such-tool", "--version"]),
    );
    let run: PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "contained"},
        "spec": {"pipelineSpec": {"steps": [device, readonly, oom, missing]}},
    }))
    .unwrap();
    let api: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    api.create(&PostParams::default(), &run).await.unwrap();
    let done = h
        .wait_finished(NS, "contained", Duration::from_secs(240))
        .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"), "{status:#?}");
    let run_id = status.run_id.unwrap();
    let steps = store.list_steps(&run_id).await.unwrap();
    let phase = |name: &str| steps.iter().find(|s| s.name == name).unwrap().phase;

    // Every pod ran on the container node, in the image it names.
    let pods = h.pods(NS, "contained").await;
    assert!(!pods.is_empty());
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(
            spec.node_name.as_deref(),
            Some("container-0"),
            "{}",
            node_of(pod)
        );
        let statuses = container_statuses(pod);
        let step = statuses.iter().find(|c| c.name == "step").unwrap();
        assert!(
            step.image_id.contains("@sha256:"),
            "{}: the runtime names the image by digest: {step:?}",
            node_of(pod)
        );
    }

    // toucan-worker loads libtorch's CPU libraries from its image, and not libtorch_cuda.
    assert_eq!(phase("device"), Phase::Succeeded, "{steps:#?}");
    let device = &steps
        .iter()
        .find(|s| s.name == "device")
        .unwrap()
        .outputs
        .params["device"];
    let device: serde_json::Value = serde_json::from_str(device).unwrap();
    assert_eq!(device["selected"], "cpu", "{device}");
    assert_eq!(device["libtorch_cuda_loaded"], false, "{device}");
    assert_eq!(device["test_product_sum"], 12.0, "{device}");

    // The root filesystem is read-only; the outputs volume is not.
    assert_eq!(phase("readonly"), Phase::Succeeded, "{steps:#?}");

    // Over its memory limit: OOMKilled, retried once as its policy says, then failed.
    assert_eq!(phase("oom"), Phase::Failed);
    let attempts = store.list_attempts(&run_id, "oom").await.unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for a in &attempts {
        let message = a.message.as_deref().unwrap_or("");
        assert!(message.starts_with("OOMKilled"), "{a:#?}");
    }
    let oom_pods: Vec<&Pod> = pods.iter().filter(|p| node_of(p) == "oom").collect();
    assert_eq!(oom_pods.len(), 2);
    for pod in oom_pods {
        let statuses = container_statuses(pod);
        let terminated = statuses[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap();
        assert_eq!(
            terminated.reason.as_deref(),
            Some("OOMKilled"),
            "{terminated:?}"
        );
    }

    // A command the image lacks: the step fails saying which.
    assert_eq!(phase("missing"), Phase::Failed);
    let attempts = store.list_attempts(&run_id, "missing").await.unwrap();
    let message = attempts[0].message.as_deref().unwrap_or("");
    assert!(
        message.contains("\"no-such-tool\"") && message.contains("No such file"),
        "{attempts:#?}"
    );
}
