#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `get jobs`, `describe job` and a gang's `logs --replica` with `--cluster`, against the real
//! test cluster, without the operator: the test writes what the operator would, a
//! TrainingJob with a status, its PipelineRun, and gang pods labelled as the operator labels
//! them (two incarnations of two workers, on a process-mode node, each echoing who it is),
//! then reads them back with the built `toucan`.

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use toucan_core::api::{PipelineRun, TrainingJob};
use toucan_test_harness::cluster::TestCluster;

const NS: &str = "default";
const JOB: &str = "shell-gang";

const TRAINING_JOB: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: TrainingJob
metadata: {name: shell-gang, namespace: default}
spec:
  image: busybox
  command: [sh, -c, "echo hi"]
  roles: {worker: {replicas: 2}}
"#;

/// The PipelineRun the operator would make of the job, with a plain step besides.
const PIPELINE_RUN: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: PipelineRun
metadata: {name: shell-gang, namespace: default}
spec:
  pipelineSpec:
    steps:
      - name: train
        image: busybox
        command: [sh, -c, "echo hi"]
        roles: {worker: {replicas: 2}}
      - name: plain
        image: busybox
        command: [sh, -c, "echo plain"]
"#;

/// The status after worker-1 failed the first gang with code 9.
fn status() -> serde_json::Value {
    json!({"status": {
        "phase": "Running",
        "runId": "run-1",
        "ready": "2/2",
        "replicas": {"worker": {"active": 2, "succeeded": 0, "failed": 0}},
        "restarts": 1,
        "preemptions": 0,
        "incarnation": 1,
        "lastFailure": {
            "role": "worker", "index": 1, "incarnation": 0, "exitCode": 9,
            "reason": "Error", "message": "worker-1 ended with code 9",
            "logTail": "hello from worker-1 incarnation 0\n",
        },
        "progress": {"epoch": 3, "objective": 0.91},
        "conditions": [{
            "type": "Running", "status": "True", "reason": "GangRunning",
            "message": "2 of 2 replicas running", "lastTransitionTime": "2025-03-01T10:00:00Z",
        }],
    }})
}

/// A step pod of attempt 1 of `node`, labelled as the operator labels it; `replica` is
/// `(ROLE-INDEX, incarnation)` for a gang's.
fn step_pod(uid: &str, node: &str, replica: Option<(&str, u32)>) -> Pod {
    let mut labels = json!({"toucan.dev/run-uid": uid, "toucan.dev/attempt": "1"});
    let (name, says) = match replica {
        Some((r, i)) => {
            labels["toucan.dev/replica"] = r.into();
            labels["toucan.dev/incarnation"] = i.to_string().into();
            labels["toucan.dev/gang"] = format!("{JOB}-{node}-1").into();
            (
                format!("{JOB}-{node}-1-{r}-{i}"),
                format!("hello from {r} incarnation {i}"),
            )
        }
        None => (format!("{JOB}-{node}-1"), format!("hello from {node}")),
    };
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"toucan.dev/node": node},
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "step", "image": "busybox", "command": ["sh", "-c", format!("echo {says}")]}],
        },
    }))
    .unwrap()
}

fn kubectl(cluster: &TestCluster, args: &[&str]) {
    let out = Command::new(cluster.kubectl())
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Runs `toucan ARGS` against the cluster, with a local home that has no store.
fn toucan(cluster: &TestCluster, home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toucan"))
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .env("TOUCAN_HOME", home)
        .env_remove("TOUCAN_API")
        .env_remove("TOUCAN_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing both streams when it differs; the streams.
fn expect(out: &Output, code: i32, what: &str) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}:\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspects_a_training_job_and_its_gang_in_the_cluster() {
    let Some(cluster) = TestCluster::start().await.unwrap() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let toucan = |args: &[&str]| toucan(&cluster, home.path(), args);

    // Without toucan's CRDs: said so, as a cluster that cannot be read.
    let (_, err) = expect(
        &toucan(&["get", "jobs", "--cluster"]),
        1,
        "get jobs without CRDs",
    );
    assert!(
        err.starts_with("error: the cluster at ")
            && err.contains("has no TrainingJob resource (are toucan's CRDs installed?)"),
        "{err}"
    );

    let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/toucan/crds");
    kubectl(&cluster, &["apply", "-f", crds.to_str().unwrap()]);
    // Right after `apply` a CRD may have no conditions yet, which `kubectl wait` reports as
    // an error rather than waiting: it is asked again.
    let wait = [
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/trainingjobs.toucan.dev",
        "crd/pipelineruns.toucan.dev",
    ];
    for _ in 0..20 {
        let waited = std::process::Command::new(cluster.kubectl())
            .args(wait)
            .env("KUBECONFIG", cluster.kubeconfig())
            .output()
            .unwrap();
        if waited.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    kubectl(&cluster, &wait);
    let client = cluster.client();
    let jobs: Api<TrainingJob> = Api::namespaced(client.clone(), NS);
    jobs.create(
        &PostParams::default(),
        &serde_yaml_ng::from_str(TRAINING_JOB).unwrap(),
    )
    .await
    .unwrap();
    jobs.patch_status(JOB, &PatchParams::default(), &Patch::Merge(status()))
        .await
        .unwrap();
    let runs: Api<PipelineRun> = Api::namespaced(client.clone(), NS);
    let run = runs
        .create(
            &PostParams::default(),
            &serde_yaml_ng::from_str(PIPELINE_RUN).unwrap(),
        )
        .await
        .unwrap();
    let uid = run.metadata.uid.unwrap();
    let pods: Api<Pod> = Api::namespaced(client, NS);
    for pod in [
        step_pod(&uid, "train", Some(("worker-0", 0))),
        step_pod(&uid, "train", Some(("worker-1", 0))),
        step_pod(&uid, "train", Some(("worker-0", 1))),
        step_pod(&uid, "train", Some(("worker-1", 1))),
        step_pod(&uid, "plain", None),
    ] {
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    // get jobs: the row, and the status as JSON.
    let (table, _) = expect(&toucan(&["get", "jobs", "--cluster"]), 0, "get jobs");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "NAME",
            "PHASE",
            "READY",
            "RESTARTS",
            "PREEMPTIONS",
            "EPOCH",
            "OBJECTIVE",
            "AGE"
        ],
        "{table}"
    );
    assert_eq!(
        rows[1][..7],
        [JOB, "Running", "2/2", "1", "0", "3", "0.91"],
        "{table}"
    );
    let (json, _) = expect(
        &toucan(&["get", "jobs", "--cluster", "-A", "-o", "json"]),
        0,
        "get jobs -A -o json",
    );
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed[0]["name"], JOB, "{listed:#}");
    assert_eq!(listed[0]["namespace"], NS);
    assert_eq!(listed[0]["status"]["lastFailure"]["exitCode"], 9);

    // describe job: the status, the failure, the conditions.
    let (described, _) = expect(
        &toucan(&["describe", "job", JOB, "--cluster"]),
        0,
        "describe job",
    );
    for expected in [
        "TrainingJob:  default/shell-gang\n",
        "Phase:        Running\n",
        "Run id:       run-1\n",
        "Incarnation:  1\n",
        "Restarts:     1\n",
        "Progress:     epoch 3, objective 0.91\n",
        "Last failure: worker-1 in incarnation 0: Error, exit code 9\n",
        "                hello from worker-1 incarnation 0\n",
    ] {
        assert!(
            described.contains(expected),
            "{expected:?} not in\n{described}"
        );
    }
    assert!(
        described
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "Running",
                    "True",
                    "GangRunning",
                    "2",
                    "of",
                    "2",
                    "replicas",
                    "running"
                ]),
        "{described}"
    );
    let (_, err) = expect(
        &toucan(&["describe", "job", "nope", "--cluster"]),
        2,
        "describe an unknown job",
    );
    assert!(
        err.contains("error: no TrainingJob \"nope\" in namespace \"default\""),
        "{err}"
    );

    // logs: the leader of the newest incarnation by default, or the replica asked for.
    kubectl(
        &cluster,
        &[
            "wait",
            "--for=jsonpath={.status.phase}=Succeeded",
            "pod",
            "-l",
            &format!("toucan.dev/run-uid={uid}"),
            "--timeout=60s",
        ],
    );
    let logs = |extra: &[&str]| {
        let mut args = vec!["logs", JOB, "train", "--cluster"];
        args.extend_from_slice(extra);
        toucan(&args)
    };
    let (log, _) = expect(&logs(&[]), 0, "logs of the gang");
    assert_eq!(log, "hello from worker-0 incarnation 1\n");
    let (log, _) = expect(
        &logs(&["--replica", "worker-1", "--incarnation", "0"]),
        0,
        "logs --replica worker-1 --incarnation 0",
    );
    assert_eq!(log, "hello from worker-1 incarnation 0\n");
    let (log, _) = expect(
        &logs(&["--replica", "worker-1"]),
        0,
        "logs --replica worker-1",
    );
    assert_eq!(log, "hello from worker-1 incarnation 1\n");
    let (_, err) = expect(&logs(&["--replica", "worker-7"]), 2, "an unknown replica");
    assert!(
        err.contains(
            "error: step \"train\" of run \"shell-gang\": no replica \"worker-7\" in \
             incarnation 1 (replicas: worker-0, worker-1)"
        ),
        "{err}"
    );
    let (_, err) = expect(&logs(&["--incarnation", "5"]), 2, "an unknown incarnation");
    assert!(
        err.contains("no incarnation 5 (incarnations: 0, 1)"),
        "{err}"
    );
    let (log, _) = expect(
        &toucan(&["logs", JOB, "plain", "--cluster"]),
        0,
        "a plain step's log",
    );
    assert_eq!(log, "hello from plain\n");
    let (_, err) = expect(
        &toucan(&["logs", JOB, "plain", "--cluster", "--replica", "worker-0"]),
        2,
        "--replica for a plain step",
    );
    assert!(
        err.contains("error: step \"plain\" of run \"shell-gang\" is not distributed"),
        "{err}"
    );
}
