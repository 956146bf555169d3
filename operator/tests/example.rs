//! The fashion-mnist example on the real test cluster, compared with `toucan run`: the same
//! step phases and the same cache keys; step pods in DAG order, each created promptly after
//! its parents; a second run entirely from the cache, with no pods. Also: the operator exits
//! with a clear message when the CRDs are not installed, and serves health and metrics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use common::{Harness, bin_dir, repo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use toucan_core::api::PipelineRun;
use toucan_core::records::Phase;
use toucan_test_harness::net::http_get;

/// Small, so that the test is quick: a linear model for one epoch, good enough to export.
const PARAMS: [(&str, &str); 3] = [
    ("model", "linear"),
    ("epochs", "1"),
    ("min_accuracy", "0.5"),
];

fn run_manifest(name: &str) -> PipelineRun {
    let params: Vec<serde_json::Value> = PARAMS
        .iter()
        .map(|(n, v)| {
            // Typed as the Pipeline declares them: numbers stay numbers.
            let value = serde_json::from_str::<serde_json::Value>(v)
                .unwrap_or_else(|_| serde_json::json!(v));
            serde_json::json!({"name": n, "value": value})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {
            "name": name,
            "annotations": {
                "toucan.dev/source-dir": repo().join("examples/fashion-mnist").canonicalize().unwrap().to_str().unwrap(),
            },
        },
        "spec": {"pipelineRef": {"name": "fashion-mnist"}, "params": params},
    }))
    .unwrap()
}

fn created_ms(pod: &Pod) -> i64 {
    pod.metadata
        .creation_timestamp
        .as_ref()
        .unwrap()
        .0
        .as_millisecond()
}

fn finished_ms(pod: &Pod) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == "step"))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0.as_millisecond())
        .unwrap()
}

/// The node a pod runs (`_stage` for the pod that stores `path:` inputs).
fn step_of(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()["toucan.dev/node"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_runs_in_the_cluster_as_it_does_locally() {
    let Some(h) = Harness::start("example").await else {
        return;
    };

    // Without the CRDs the operator stops at once and says how to install them.
    let mut early = h.operator("early", &["--leader-elect=false"]);
    let status = early
        .wait_exit(Duration::from_secs(30))
        .expect("operator kept running without CRDs");
    assert_eq!(status.code(), Some(2), "{}", early.log_text());
    assert!(
        early
            .log_text()
            .contains("kubectl apply -f charts/toucan/crds/"),
        "{}",
        early.log_text()
    );

    h.apply_crds();
    let operator = h.operator("op-1", &["--leader-elect=false"]);
    operator.ready().await;
    assert_eq!(http_get(operator.metrics_port, "/livez").0, 200);

    // The user's command: kubectl apply -f examples/fashion-mnist/
    h.kubectl_ok(&[
        "apply",
        "-f",
        repo().join("examples/fashion-mnist").to_str().unwrap(),
    ]);
    let runs: Api<PipelineRun> = Api::namespaced(h.client(), "default");
    runs.create(&PostParams::default(), &run_manifest("first"))
        .await
        .unwrap();
    let first = h
        .wait_finished("default", "first", Duration::from_secs(600))
        .await;
    let status = first.status.clone().unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "{status:#?}\n{}",
        operator.log_text()
    );
    let counts = status.steps.clone().unwrap();
    assert_eq!(
        (counts.total, counts.succeeded, counts.cached),
        (5, 5, 0),
        "{counts:?}"
    );

    // Pods in DAG order, each dependent created after its parents finished, and promptly.
    let pods = h.pods("default", "first").await;
    let by_step: BTreeMap<String, &Pod> = pods
        .iter()
        .filter(|p| step_of(p) != "_stage")
        .map(|p| (step_of(p), p))
        .collect();
    for step in ["ingest", "train", "evaluate", "export", "summary"] {
        assert!(
            by_step.contains_key(step),
            "no pod for {step}: {:?}",
            by_step.keys()
        );
    }
    for (parent, child) in [
        ("ingest", "train"),
        ("train", "evaluate"),
        ("evaluate", "export"),
    ] {
        let gap = created_ms(by_step[child]) - finished_ms(by_step[parent]);
        // Kubernetes timestamps have one-second resolution. The child is created as soon as the
        // parent's pod event arrives (no requeue delay; Argo's is 10 s): allow for a loaded
        // machine, not for a timer.
        assert!(
            (-1000..=5000).contains(&gap),
            "{child} created {gap} ms after {parent} finished"
        );
    }

    // The same pipeline locally, into a store of its own: same phases, same cache keys.
    let local_db = h.database("example_local");
    let home = h.dir.path().join("local-home");
    let mut args = vec![
        "run".to_string(),
        repo()
            .join("examples/fashion-mnist/pipeline.yaml")
            .display()
            .to_string(),
    ];
    for (n, v) in PARAMS {
        args.push("-p".into());
        args.push(format!("{n}={v}"));
    }
    args.extend(["-o".into(), "json".into()]);
    let out = Command::new(bin_dir().join("toucan"))
        .args(&args)
        .env("TOUCAN_HOME", &home)
        .env("TOUCAN_DATABASE_URL", &local_db)
        .env("PATH", common::step_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "local run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let local: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local_id = local["run"].as_str().unwrap().to_string();
    let local_store = toucan_store::metadata::open(&local_db).await.unwrap();
    let cluster_store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let run_id = status.run_id.clone().unwrap();
    let local_steps = local_store.list_steps(&local_id).await.unwrap();
    let cluster_steps = cluster_store.list_steps(&run_id).await.unwrap();
    let view =
        |steps: &[toucan_core::records::StepRecord]| -> Vec<(String, Phase, Option<String>)> {
            steps
                .iter()
                .map(|s| (s.name.clone(), s.phase, s.cache_key.clone()))
                .collect()
        };
    assert_eq!(
        view(&local_steps),
        view(&cluster_steps),
        "local and cluster runs differ"
    );
    assert!(cluster_steps.iter().all(|s| s.cache_key.is_some()));
    assert_eq!(
        local_steps
            .iter()
            .find(|s| s.name == "evaluate")
            .unwrap()
            .outputs
            .params,
        cluster_steps
            .iter()
            .find(|s| s.name == "evaluate")
            .unwrap()
            .outputs
            .params,
        "the same model evaluates the same"
    );

    // A second run of the same Pipeline: every step from the cache, and no step pod.
    runs.create(&PostParams::default(), &run_manifest("second"))
        .await
        .unwrap();
    let second = h
        .wait_finished("default", "second", Duration::from_secs(120))
        .await;
    let s2 = second.status.unwrap();
    assert_eq!(s2.phase.as_deref(), Some("Succeeded"), "{s2:#?}");
    let c2 = s2.steps.unwrap();
    // `summary` is not cacheable in spirit but is in fact: it has no outputs to miss.
    assert_eq!(c2.cached, c2.succeeded, "{c2:?}");
    let step_pods: Vec<String> = h
        .pods("default", "second")
        .await
        .iter()
        .map(step_of)
        .filter(|s| s != "_stage")
        .collect();
    assert!(
        step_pods.is_empty(),
        "a fully cached run created step pods: {step_pods:?}"
    );

    // Metrics saw it all.
    let (code, text) = http_get(operator.metrics_port, "/metrics");
    assert_eq!(code, 200);
    for name in [
        "toucan_reconciles_total",
        "toucan_step_start_latency_seconds_bucket",
        "toucan_cache_hit_ratio",
        "toucan_queue_depth",
        "toucan_runs_active",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
}
