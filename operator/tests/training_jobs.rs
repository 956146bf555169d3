//! TrainingJobs applied to the real test cluster: a job runs as a gang and its status says how
//! it went; suspending it takes its pods away and resuming starts the next incarnation; an
//! evicted replica restarts the gang as a preemption, not counted against `maxRestarts`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use toucan_core::api::{TrainingJob, TrainingJobStatus};

const NS: &str = "default";

/// Incarnation 0 runs until it is stopped; later ones finish at once.
const LONG_FIRST: &str = "if [ \"$TOUCAN_INCARNATION\" = 0 ]; then sleep 300; else sleep 1; fi";

fn job(name: &str, script: &str, extra: serde_json::Value) -> TrainingJob {
    let mut spec = serde_json::json!({
        "image": "busybox",
        "command": ["sh", "-c", script],
        "cache": {"enabled": false},
        "roles": {"worker": {"replicas": 2}},
    });
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn wait_status(
    h: &Harness,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&TrainingJobStatus) -> bool,
) -> TrainingJobStatus {
    let api: Api<TrainingJob> = Api::namespaced(h.client(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let status = api.get(name).await.unwrap().status.unwrap_or_default();
        if f(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "job {name}: {what}: never happened; last status {status:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn phase(status: &TrainingJobStatus) -> &str {
    status.phase.as_deref().unwrap_or("")
}

fn condition<'a>(status: &'a TrainingJobStatus, type_: &str) -> &'a str {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map_or("", |c| c.status.as_str())
}

async fn live_pods(h: &Harness, job: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(h.client(), NS);
    api.list(&ListParams::default().labels(&format!("toucan.dev/run={job}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_suspends_and_resumes() {
    let Some(h) = Harness::start("jobs").await else {
        return;
    };
    h.apply_crds();
    let _operator = h.operator("a", &[]);
    let api: Api<TrainingJob> = Api::namespaced(h.client(), NS);

    // Invalid: refused before anything runs, at the job's own path.
    let mut bad = job("bad", "true", serde_json::json!({}));
    bad.spec.roles.get_mut("worker").unwrap().replicas = 2000;
    api.create(&PostParams::default(), &bad).await.unwrap();

    api.create(
        &PostParams::default(),
        &job("suspended", LONG_FIRST, serde_json::json!({})),
    )
    .await
    .unwrap();
    let running = wait_status(&h, "suspended", "running", Duration::from_secs(90), |s| {
        phase(s) == "Running" && s.ready.as_deref() == Some("2/2")
    })
    .await;
    assert_eq!(condition(&running, "Created"), "True");
    assert_eq!(condition(&running, "Running"), "True");
    assert_eq!(running.replicas["worker"].active, 2);
    let columns = h.kubectl_ok(&["get", "tj", "suspended", "--no-headers"]);
    assert!(
        columns.contains("Running") && columns.contains("2/2"),
        "{columns}"
    );

    let suspend = |on: bool| serde_json::json!({"spec": {"runPolicy": {"suspend": on}}});
    api.patch(
        "suspended",
        &PatchParams::default(),
        &Patch::Merge(&suspend(true)),
    )
    .await
    .unwrap();
    let suspended = wait_status(&h, "suspended", "suspended", Duration::from_secs(60), |s| {
        phase(s) == "Suspended"
    })
    .await;
    assert_eq!(condition(&suspended, "Suspended"), "True");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !live_pods(&h, "suspended").await.is_empty() {
        assert!(Instant::now() < deadline, "a suspended job's pods stayed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.patch(
        "suspended",
        &PatchParams::default(),
        &Patch::Merge(&suspend(false)),
    )
    .await
    .unwrap();
    let done = wait_status(&h, "suspended", "succeeded", Duration::from_secs(90), |s| {
        phase(s) == "Succeeded"
    })
    .await;
    assert_eq!(
        (done.incarnation, done.restarts, done.preemptions),
        (1, 0, 0),
        "resuming starts the next incarnation and counts nothing: {done:#?}"
    );
    assert_eq!(condition(&done, "Succeeded"), "True");
    assert_eq!(condition(&done, "Suspended"), "False");

    let bad = wait_status(&h, "bad", "failed", Duration::from_secs(30), |s| {
        phase(s) == "Failed"
    })
    .await;
    let message = bad.message.unwrap_or_default();
    assert!(message.contains("spec.roles.worker.replicas"), "{message}");
    let runs: Api<toucan_core::api::PipelineRun> = Api::namespaced(h.client(), NS);
    assert!(
        runs.get_opt("bad").await.unwrap().is_none(),
        "an invalid job runs nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_replica_is_a_preemption() {
    let Some(h) = Harness::start("job_eviction").await else {
        return;
    };
    h.apply_crds();
    let _operator = h.operator("a", &[]);
    let api: Api<TrainingJob> = Api::namespaced(h.client(), NS);
    api.create(
        &PostParams::default(),
        &job(
            "evicted",
            LONG_FIRST,
            serde_json::json!({"failurePolicy": {"maxRestarts": 0}}),
        ),
    )
    .await
    .unwrap();
    wait_status(&h, "evicted", "running", Duration::from_secs(90), |s| {
        phase(s) == "Running" && s.ready.as_deref() == Some("2/2")
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(h.client(), NS);
    pods.evict("evicted-train-1-worker-1-0", &EvictParams::default())
        .await
        .unwrap();
    let done = wait_status(&h, "evicted", "succeeded", Duration::from_secs(90), |s| {
        matches!(phase(s), "Succeeded" | "Failed")
    })
    .await;
    assert_eq!(phase(&done), "Succeeded", "{done:#?}");
    assert_eq!(
        (done.preemptions, done.restarts, done.incarnation),
        (1, 0, 1),
        "an eviction restarts the gang without using its restart budget (0): {done:#?}"
    );
}
