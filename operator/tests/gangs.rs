//! Distributed steps (gangs) on the real test cluster: replicas that find each other by name
//! behind their headless Service and all-reduce with torch.distributed, a gang restarted by a
//! kill's exit code and failed at once by a program error, and gang admission: two gangs that
//! each need every GPU of the node run one after the other, never half-placed, and a gang
//! larger than the cluster fails with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use toucan_core::api::PipelineRun;
use toucan_core::engine::gang::Gang;
use toucan_core::records::DocumentKind;

const NS: &str = "default";

/// Every replica joins torch.distributed's group through the env contract (`MASTER_ADDR` is
/// the leader's name behind the gang's Service) and sums `rank + 1`; the leader writes the
/// sum. `FAIL` is `INCARNATION:RANK:CODE`: that replica exits CODE in that incarnation.
const ALL_REDUCE: &str = r#"
import os, sys
incarnation, rank = os.environ["TOUCAN_INCARNATION"], os.environ["RANK"]
fail = sys.argv[2].split(":")
if fail[0] == incarnation and fail[1] == rank:
    sys.exit(int(fail[2]))
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(int(rank) + 1)])
dist.all_reduce(t)
if rank == "0":
    open(sys.argv[1], "w").write(str(int(t.item())))
dist.destroy_process_group()
"#;

fn gang_run(name: &str, fail: &str) -> PipelineRun {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": {"steps": [
            {
                "name": "train", "image": "python",
                "command": ["python3", "-c", ALL_REDUCE, "{{outputs.params.sum}}", fail],
                "env": [{"name": "GLOO_SOCKET_IFNAME", "value": "lo"}],
                "outputs": {"params": [{"name": "sum"}]},
                "cache": {"enabled": false},
                "roles": {"worker": {"replicas": 2}},
                "failurePolicy": {"maxRestarts": 2},
            },
            {
                // The leader's output is the step's.
                "name": "check", "image": "busybox", "dependsOn": ["train"],
                "command": ["sh", "-c", "test \"$1\" = 3", "check",
                            "{{steps.train.outputs.params.sum}}"],
                "cache": {"enabled": false},
            },
        ]}},
    }))
    .unwrap()
}

/// A gang of `replicas` replicas of `gpus` GPUs each that runs `sleep SECONDS`.
fn gpu_run(name: &str, replicas: u32, gpus: u32, seconds: u32) -> PipelineRun {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": {"steps": [{
            "name": "train", "image": "busybox",
            "command": ["sh", "-c", format!("sleep {seconds}")],
            "cache": {"enabled": false},
            "roles": {"worker": {"replicas": replicas, "resources": {"gpu": gpus}}},
        }]}},
    }))
    .unwrap()
}

async fn create(h: &Harness, run: &PipelineRun) {
    let api: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    api.create(&PostParams::default(), run).await.unwrap();
}

async fn gang_record(h: &Harness, run: &PipelineRun, key: &str) -> (Gang, serde_json::Value) {
    let run_id = run.status.as_ref().unwrap().run_id.clone().unwrap();
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let body = store
        .get_run_document(&run_id, DocumentKind::Gang, key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no gang record {key} for run {run_id}"));
    (serde_json::from_value(body.clone()).unwrap(), body)
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

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_rendezvous_by_name_and_follow_the_exit_code_rules() {
    let Some(h) = Harness::start("gangs").await else {
        return;
    };
    h.apply_crds();
    let operator = h.operator("a", &[]);

    // Incarnation 0: worker-1 exits 137 (as a SIGKILL would): the gang restarts, and the
    // second incarnation all-reduces 1 + 2.
    create(&h, &gang_run("gang-sum", "0:1:137")).await;
    // A program error (exit 3) fails the gang at once.
    create(&h, &gang_run("gang-exit3", "0:1:3")).await;

    let done = h
        .wait_finished(NS, "gang-sum", Duration::from_secs(240))
        .await;
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "{:?}\n{}\n{}",
        status.message,
        events(&h, "gang-sum", "StepFailed"),
        operator.log_text()
    );
    let (gang, body) = gang_record(&h, &done, "train/1").await;
    assert_eq!(
        (gang.restarts, gang.preemptions, gang.incarnation),
        (1, 0, 1)
    );
    let failure = gang.last_failure.clone().unwrap();
    assert_eq!(
        (failure.role.as_str(), failure.index, failure.exit_code),
        ("worker", 1, Some(137)),
        "{failure:?}"
    );
    assert!(
        gang.history
            .iter()
            .any(|e| e.decisive && e.exit_code == Some(137) && e.incarnation == 0),
        "{:?}",
        gang.history
    );
    assert!(
        body.get("invocation").is_some(),
        "the record keeps the invocation"
    );

    // Deterministic names, the replicas' stable names behind the Service, Kueue's pod group.
    let pods = h.pods(NS, "gang-sum").await;
    let leader = pods
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("gang-sum-train-1-worker-0-1"))
        .unwrap_or_else(|| {
            let names: Vec<_> = pods.iter().map(|p| p.metadata.name.clone()).collect();
            panic!("no pod gang-sum-train-1-worker-0-1 among {names:?}")
        });
    let spec = leader.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("worker-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("gang-sum-train-1"));
    assert!(spec.scheduling_gates.iter().flatten().next().is_none());
    assert_eq!(
        label(leader, "kueue.x-k8s.io/pod-group-name"),
        Some("gang-sum-train-1-1")
    );
    assert_eq!(label(leader, "toucan.dev/replica"), Some("worker-0"));
    assert_eq!(
        leader.metadata.annotations.as_ref().unwrap()["kueue.x-k8s.io/pod-group-total-count"],
        "2"
    );
    // The Service goes with the gang.
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(h.client(), NS);
    assert!(
        services
            .get_opt("gang-sum-train-1")
            .await
            .unwrap()
            .is_none()
    );

    let failed = h
        .wait_finished(NS, "gang-exit3", Duration::from_secs(120))
        .await;
    let status = failed.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let (gang, _) = gang_record(&h, &failed, "train/1").await;
    assert_eq!((gang.restarts, gang.incarnation), (0, 0), "{gang:?}");
    let failure = gang.last_failure.unwrap();
    assert_eq!(failure.exit_code, Some(3));
    let why = events(&h, "gang-exit3", "StepFailed");
    assert!(why.contains("worker-1") && why.contains('3'), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_are_admitted_whole_or_not_at_all() {
    let Some(h) = Harness::start("gang_admission").await else {
        return;
    };
    h.apply_crds();
    let _operator = h.operator("a", &[]);

    // The only node these pods may use has 4 GPUs; each gang needs all of them.
    create(&h, &gpu_run("gang-a", 2, 2, 6)).await;
    create(&h, &gpu_run("gang-b", 2, 2, 6)).await;
    // 8 GPUs: never.
    create(&h, &gpu_run("gang-huge", 2, 4, 1)).await;

    let huge = h
        .wait_finished(NS, "gang-huge", Duration::from_secs(60))
        .await;
    assert_eq!(huge.status.unwrap().phase.as_deref(), Some("Failed"));
    let why = events(&h, "gang-huge", "StepFailed");
    assert!(
        why.contains("can never fit the cluster") && why.contains("ask for 8 nvidia.com/gpu"),
        "{why}"
    );

    // While one gang runs, the other's pods are all still gated, none placed.
    let pods: Api<Pod> = Api::namespaced(h.client(), NS);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (running, waiting) = loop {
        let a = h.pods(NS, "gang-a").await;
        let b = h.pods(NS, "gang-b").await;
        let bound = |ps: &[Pod]| {
            ps.iter()
                .filter(|p| p.spec.as_ref().unwrap().node_name.is_some())
                .count()
        };
        if a.len() == 2 && b.len() == 2 {
            match (bound(&a), bound(&b)) {
                (2, 0) => break ("gang-a", b),
                (0, 2) => break ("gang-b", a),
                (x, y) => assert!(x + y <= 2, "more than 4 GPUs placed: {x} + {y} pods"),
            }
        }
        assert!(Instant::now() < deadline, "no gang was admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for p in &waiting {
        let spec = p.spec.as_ref().unwrap();
        assert!(
            spec.scheduling_gates
                .iter()
                .flatten()
                .any(|g| g.name == "toucan.dev/gang"),
            "{:?} is not gated while {running} runs",
            p.metadata.name
        );
    }
    let waiting_run = if running == "gang-a" {
        "gang-b"
    } else {
        "gang-a"
    };
    let events = events(&h, waiting_run, "GangWaiting");
    assert!(
        events.contains("waiting for room") && events.contains("4 nvidia.com/gpu"),
        "{events:?}"
    );
    drop(pods);

    for name in ["gang-a", "gang-b"] {
        let run = h.wait_finished(NS, name, Duration::from_secs(120)).await;
        assert_eq!(
            run.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded"),
            "{name}: {:?}",
            run.status
        );
    }
}
