//! Distributed steps (gangs) on the real test cluster: replicas that find each other by name
//! behind their headless Service and all-reduce with torch.distributed, a gang restarted by a
//! kill's exit code and failed at once by a program error, and gang admission: two 4-GPU
//! TrainingJobs on a 6-GPU cluster run one after the other, never half-placed, the waiting one
//! saying why, and a job larger than the cluster fails with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use toucan_core::api::{PipelineRun, TrainingJob};
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

/// Six GPUs on two scripted nodes (4 and 2), and a process node for the rest.
const SIX_GPUS: &str = r#"
nodes:
  - name: cpu-0
    mode: process
    capacity: {cpu: "8", memory: 32Gi, pods: "110", nvidia.com/gpu: "0", google.com/tpu: "0"}
  - name: gpu-a
    mode: scripted
    capacity: {cpu: "16", memory: 64Gi, pods: "110", nvidia.com/gpu: "4", google.com/tpu: "0"}
    taints: [{key: cluster.toucan.dev/scripted, value: "true", effect: NoSchedule}]
  - name: gpu-b
    mode: scripted
    capacity: {cpu: "16", memory: 64Gi, pods: "110", nvidia.com/gpu: "2", google.com/tpu: "0"}
    taints: [{key: cluster.toucan.dev/scripted, value: "true", effect: NoSchedule}]
"#;

/// A TrainingJob of `replicas` replicas of `gpus` GPUs each, on the scripted nodes: each
/// replica runs for `seconds` and succeeds.
fn gpu_job(name: &str, replicas: u32, gpus: u32, seconds: u32) -> TrainingJob {
    let report = serde_json::json!({
        "succeeded": true, "exitCode": 0, "signal": null,
        "outputs": {"params": {}, "artifacts": {}}, "error": null, "durationMs": 1,
    });
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": {
            "image": "trainer", "command": ["train"],
            "cache": {"enabled": false},
            "roles": {"worker": {"replicas": replicas, "resources": {"gpu": gpus}}},
            "pod": {
                "nodeSelector": {"cluster.toucan.dev/mode": "scripted"},
                "tolerations": [{"key": "cluster.toucan.dev/scripted", "operator": "Exists"}],
                "annotations": {
                    "cluster.toucan.dev/run-seconds": seconds.to_string(),
                    "cluster.toucan.dev/termination-message": report.to_string(),
                },
            },
        },
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
async fn two_four_gpu_jobs_on_six_gpus_run_one_after_the_other() {
    let Some(h) = Harness::start_with_nodes("gang_admission", Some(SIX_GPUS)).await else {
        return;
    };
    h.apply_crds();
    let _operator = h.operator("a", &[]);
    let jobs: Api<TrainingJob> = Api::namespaced(h.client(), NS);

    // Each needs 4 of the 6 GPUs: placed pod by pod, the second would take the 2 left and wait
    // for 2 more while holding them.
    for name in ["gang-a", "gang-b"] {
        jobs.create(&PostParams::default(), &gpu_job(name, 2, 2, 5))
            .await
            .unwrap();
    }
    // 8 GPUs: never.
    jobs.create(&PostParams::default(), &gpu_job("gang-huge", 2, 4, 1))
        .await
        .unwrap();

    // While one runs, the other waits, its pods all gated (none placed), and says why.
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
                (2, 0) => break ("gang-a", ("gang-b", b)),
                (0, 2) => break ("gang-b", ("gang-a", a)),
                (x, y) => assert!(x + y <= 2, "both gangs placed: {x} + {y} pods"),
            }
        }
        assert!(Instant::now() < deadline, "no gang was admitted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (waiting_job, waiting_pods) = waiting;
    for p in &waiting_pods {
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
    let deadline = Instant::now() + Duration::from_secs(30);
    let condition = loop {
        let status = jobs
            .get(waiting_job)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        let running_condition = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Running")
            .cloned();
        if let Some(c) = running_condition.filter(|c| c.reason == "WaitingForRoom") {
            assert_eq!(status.phase.as_deref(), Some("Pending"));
            break c;
        }
        assert!(Instant::now() < deadline, "{waiting_job}: {status:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(condition.status, "False");
    assert!(
        condition
            .message
            .contains("waiting for room: its 2 replicas ask for 4 nvidia.com/gpu")
            && condition
                .message
                .contains("free on the nodes it may use: 2 nvidia.com/gpu"),
        "{}",
        condition.message
    );
    let events = events(&h, waiting_job, "GangWaiting");
    assert!(events.contains("waiting for room"), "{events:?}");

    for name in ["gang-a", "gang-b", "gang-huge"] {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            let status = jobs.get(name).await.unwrap().status.unwrap_or_default();
            if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not finish: {status:#?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        if name == "gang-huge" {
            assert_eq!(status.phase.as_deref(), Some("Failed"));
            let message = status.message.unwrap_or_default();
            assert!(
                message.contains("can never fit the cluster")
                    && message.contains("ask for 8 nvidia.com/gpu")
                    && message.contains("have 6 nvidia.com/gpu"),
                "{message}"
            );
        } else {
            assert_eq!(
                status.phase.as_deref(),
                Some("Succeeded"),
                "{name}: {status:#?}"
            );
        }
    }
}

/// Each replica leaves `INCARNATION-RANK-start` and `-end` files (the time) in a folder; a
/// second start of the same replica and incarnation leaves a `-twice` file. Worker 1 exits
/// 137 in the first two incarnations; the leader runs until it is stopped there.
const LOGGED: &str = r#"
import os, signal, sys, time
folder, incarnation, rank = sys.argv[1], int(os.environ["TOUCAN_INCARNATION"]), os.environ["RANK"]
def mark(what):
    path = os.path.join(folder, f"{incarnation}-{rank}-{what}")
    staged = f"{path}.{os.getpid()}.tmp"
    with open(staged, "w") as f:
        f.write(repr(time.time()))
    try:
        os.link(staged, path)
    except FileExistsError:
        # A second SIGTERM (the launcher's and the node's) ends nothing twice.
        if what == "start":
            open(path + "-twice", "w").close()
    os.unlink(staged)
signal.signal(signal.SIGTERM, lambda *_: (mark("end"), sys.exit(143)))
mark("start")
if incarnation < 2:
    time.sleep(1.5 if rank == "1" else 120)
    mark("end")
    sys.exit(137)
time.sleep(1)
mark("end")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_at_random_moments_never_runs_a_replica_twice() {
    use rand_chacha::rand_core::{RngCore, SeedableRng};

    let Some(h) = Harness::start("gang_kills").await else {
        return;
    };
    h.apply_crds();
    let folder = h.dir.path().join("marks");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let run: PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "gang-kills"},
        "spec": {"pipelineSpec": {"steps": [{
            "name": "train", "image": "python",
            "command": ["python3", "-c", LOGGED, folder.display().to_string()],
            "cache": {"enabled": false},
            "roles": {"worker": {"replicas": 2}},
            "failurePolicy": {"maxRestarts": 3},
        }]}},
    }))
    .unwrap();
    let mut operator = h.operator("kills-0", &["--leader-elect=false"]);
    create(&h, &run).await;

    // Ten kills at random moments of the job's life, each followed by a fresh operator.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for i in 1..=10 {
        let pause = 200 + rng.next_u64() % 1300;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        operator.kill();
        operator = h.operator(&format!("kills-{i}"), &["--leader-elect=false"]);
    }
    let done = h
        .wait_finished(NS, "gang-kills", Duration::from_secs(240))
        .await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded"),
        "seed {seed}: {:?}\n{}",
        done.status,
        operator.log_text()
    );
    let (gang, _) = gang_record(&h, &done, "train/1").await;
    assert_eq!(
        (gang.restarts, gang.incarnation),
        (2, 2),
        "seed {seed}: {gang:?}"
    );

    // Every replica of every incarnation started once, and an incarnation started only after
    // every replica of the one before had ended.
    let read = |name: String| -> f64 {
        std::fs::read_to_string(folder.join(&name))
            .unwrap_or_else(|e| panic!("seed {seed}: {name}: {e}"))
            .parse()
            .unwrap()
    };
    let names: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.ends_with("-twice")),
        "seed {seed}: a replica started twice: {names:?}"
    );
    for incarnation in 0..2 {
        let last_end = (0..2)
            .map(|rank| read(format!("{incarnation}-{rank}-end")))
            .fold(f64::MIN, f64::max);
        let next_start = (0..2)
            .map(|rank| read(format!("{}-{rank}-start", incarnation + 1)))
            .fold(f64::MAX, f64::min);
        assert!(
            last_end <= next_start,
            "seed {seed}: incarnation {} started at {next_start} before {incarnation} ended at \
             {last_end}",
            incarnation + 1
        );
    }
}
