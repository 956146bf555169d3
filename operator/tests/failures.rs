//! Failure handling on the real test cluster: retries and `finally`, a step pod deleted by
//! someone else, the operator killed in the middle of a run, a launcher report made with
//! another run's token, two operator replicas of which only the leader reconciles, and two electors
//! racing for one free lease.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Harness;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use toucan_core::api::PipelineRun;
use toucan_core::records::Phase;
use toucan_test_harness::cluster::pod_token;
use toucan_test_harness::net::{http, http_get};

const NS: &str = "default";

/// A PipelineRun of an inline pipeline whose steps run `sh -c SCRIPT` in order.
fn inline_run(name: &str, steps: &[(&str, &str)], extra: serde_json::Value) -> PipelineRun {
    let mut list = Vec::new();
    let mut previous: Option<&str> = None;
    for (step, script) in steps {
        let mut s = serde_json::json!({
            "name": step, "image": "busybox", "command": ["sh", "-c", script],
            "cache": {"enabled": false},
        });
        if let Some(p) = previous {
            s["dependsOn"] = serde_json::json!([p]);
        }
        list.push(s);
        previous = Some(step);
    }
    let mut spec = serde_json::json!({"steps": list});
    if let serde_json::Value::Object(extra) = extra {
        for (k, v) in extra {
            spec[k] = v;
        }
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineSpec": spec},
    }))
    .unwrap()
}

fn node_of(pod: &Pod) -> String {
    pod.metadata.annotations.as_ref().unwrap()["toucan.dev/node"].clone()
}

fn attempt_of(pod: &Pod) -> String {
    pod.metadata.labels.as_ref().unwrap()["toucan.dev/attempt"].clone()
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn create(h: &Harness, run: &PipelineRun) {
    let api: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    api.create(&PostParams::default(), run).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_deletions_restarts_and_tokens() {
    let Some(h) = Harness::start("failures").await else {
        return;
    };
    h.apply_crds();
    let mut operator = h.operator("op-1", &["--leader-elect=false"]);
    operator.ready().await;
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();

    // 1. A failing step is retried per its policy, then the run fails and `finally` runs.
    let flaky = inline_run(
        "flaky",
        &[("flaky", "echo trying; exit 3")],
        serde_json::json!({"finally": [{"name": "cleanup", "image": "busybox", "command": ["sh", "-c", "echo cleanup"]}]}),
    );
    let mut flaky = flaky;
    flaky.spec.pipeline_spec.as_mut().unwrap().steps[0].retry =
        serde_json::from_value(serde_json::json!({"limit": 1, "backoff": {"initial": "1s"}}))
            .unwrap();
    create(&h, &flaky).await;
    let done = h.wait_finished(NS, "flaky", Duration::from_secs(120)).await;
    let status = done.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"), "{status:#?}");
    assert!(
        status.message.as_deref().unwrap_or("").contains("flaky"),
        "{status:#?}"
    );
    let pods = h.pods(NS, "flaky").await;
    let mut seen: Vec<(String, String)> =
        pods.iter().map(|p| (node_of(p), attempt_of(p))).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("cleanup".into(), "1".into()),
            ("flaky".into(), "1".into()),
            ("flaky".into(), "2".into())
        ]
    );
    let run_id = status.run_id.unwrap();
    let attempts = store.list_attempts(&run_id, "flaky").await.unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a.phase == Phase::Failed && a.exit_code == Some(3)),
        "{attempts:#?}"
    );
    let steps = store.list_steps(&run_id).await.unwrap();
    let cleanup = steps.iter().find(|s| s.name == "cleanup").unwrap();
    assert_eq!(cleanup.phase, Phase::Succeeded);

    // 2. A step pod deleted by someone else is recreated as a new attempt.
    create(
        &h,
        &inline_run(
            "deleted",
            &[(
                "slow",
                r#"if [ "$TOUCAN_ATTEMPT" = 1 ]; then sleep 120; fi; echo finished"#,
            )],
            serde_json::json!({}),
        ),
    )
    .await;
    let pods = h
        .wait_pods(NS, "deleted", "attempt 1 running", |p| {
            p.iter().any(is_running)
        })
        .await;
    let first = pods[0].metadata.name.clone().unwrap();
    let pod_api: Api<Pod> = Api::namespaced(h.client(), NS);
    pod_api
        .delete(&first, &DeleteParams::default())
        .await
        .unwrap();
    let done = h
        .wait_finished(NS, "deleted", Duration::from_secs(120))
        .await;
    let status = done.status.unwrap();
    assert_eq!(
        status.phase.as_deref(),
        Some("Succeeded"),
        "{status:#?}\n{}",
        operator.log_text()
    );
    let attempts = store
        .list_attempts(&status.run_id.unwrap(), "slow")
        .await
        .unwrap();
    let phases: Vec<(u32, Phase)> = attempts.iter().map(|a| (a.attempt, a.phase)).collect();
    assert_eq!(
        phases,
        vec![(1, Phase::Failed), (2, Phase::Succeeded)],
        "{attempts:#?}"
    );

    // 3. The operator killed mid-run: a new one finishes the run without duplicating pods.
    create(
        &h,
        &inline_run(
            "restarted",
            &[("a", "sleep 1"), ("b", "sleep 3"), ("c", "echo c")],
            serde_json::json!({}),
        ),
    )
    .await;
    h.wait_pods(NS, "restarted", "b running", |p| {
        p.iter().any(|p| node_of(p) == "b" && is_running(p))
    })
    .await;
    operator.kill();
    let operator2 = h.operator("op-2", &["--leader-elect=false"]);
    let done = h
        .wait_finished(NS, "restarted", Duration::from_secs(120))
        .await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{}",
        operator2.log_text()
    );
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in h.pods(NS, "restarted").await {
        *per_node.entry(node_of(&p)).or_default() += 1;
    }
    assert_eq!(
        per_node,
        BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)])
    );

    // 4. A report made with another run's pod token is refused; the pod's own is accepted.
    for name in ["mine", "theirs"] {
        create(
            &h,
            &inline_run(name, &[("wait", "sleep 60")], serde_json::json!({})),
        )
        .await;
    }
    let mine = h
        .wait_pods(NS, "mine", "running", |p| p.iter().any(is_running))
        .await
        .remove(0);
    h.wait_pods(NS, "theirs", "running", |p| p.iter().any(is_running))
        .await;
    let runs: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    let uid = |name: &str| {
        let runs = runs.clone();
        let name = name.to_string();
        async move { runs.get(&name).await.unwrap().metadata.uid.unwrap() }
    };
    let (mine_id, theirs_id) = (uid("mine").await, uid("theirs").await);
    let token = pod_token(h.client(), "toucan-step", &mine).await.unwrap();
    let report =
        r#"{"succeeded":true,"exitCode":0,"signal":null,"outputs":{},"error":null,"durationMs":1}"#;
    let path = |run: &str| format!("/api/v1/runs/{run}/steps/wait/attempts/1/report");
    let port = operator2.api_port;
    assert_eq!(
        http("PUT", port, &path(&theirs_id), Some(&token), Some(report)).0,
        403,
        "another run's step"
    );
    assert_eq!(
        http("PUT", port, &path(&theirs_id), None, Some(report)).0,
        401,
        "no token"
    );
    assert_eq!(
        http(
            "PUT",
            port,
            &path(&theirs_id),
            Some("not-a-token"),
            Some(report)
        )
        .0,
        401,
        "a bad token"
    );
    let metrics = r#"{"attempt":1,"epochs":[{"epoch":1,"loss":0.5}]}"#;
    let mpath = format!("/api/v1/runs/{mine_id}/steps/wait/metrics");
    assert_eq!(
        http("PUT", port, &mpath, Some(&token), Some(metrics)).0,
        204
    );
    let stored = store
        .get_run_document(
            &mine_id,
            toucan_core::records::DocumentKind::Metrics,
            "wait",
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored["epochs"][0]["loss"], 0.5);
    // A step's token reads nothing.
    assert_eq!(
        http(
            "GET",
            port,
            &format!("/api/v1/runs/{mine_id}"),
            Some(&token),
            None
        )
        .0,
        404
    );
    // The admin (a reader allowed by RBAC) reads the run.
    let admin_token = std::fs::read_to_string(h.cluster.dir().join("tokens/admin")).unwrap();
    let (code, body) = http(
        "GET",
        port,
        &format!("/api/v1/runs/{mine_id}"),
        Some(admin_token.trim()),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"wait\""), "{body}");
    // Deleting a run cancels it in the store.
    runs.delete("mine", &DeleteParams::default()).await.unwrap();
    runs.delete("theirs", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let record = store.get_run(&mine_id).await.unwrap().unwrap();
        if record.phase == Phase::Cancelled {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deleted run is {:?}",
            record.phase
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_reconciles() {
    let Some(h) = Harness::start("leader").await else {
        return;
    };
    h.apply_crds();
    let mut a = h.operator("replica-a", &[]);
    let mut b = h.operator("replica-b", &[]);
    let leases: Api<Lease> = Api::namespaced(h.client(), NS);
    let holder = async || {
        loop {
            if let Some(lease) = leases.get_opt("toucan-operator").await.unwrap()
                && let Some(id) = lease.spec.and_then(|s| s.holder_identity)
            {
                return id;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let leader = holder().await;
    create(
        &h,
        &inline_run(
            "led",
            &[("one", "echo one"), ("two", "echo two")],
            serde_json::json!({}),
        ),
    )
    .await;
    let done = h.wait_finished(NS, "led", Duration::from_secs(120)).await;
    assert_eq!(done.status.unwrap().phase.as_deref(), Some("Succeeded"));
    let reconciles = |port: u16| {
        let (_, text) = http_get(port, "/metrics");
        text.lines()
            .find(|l| l.starts_with("toucan_reconciles_total{controller=\"pipelinerun\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (leading, standby) = if leader == "replica-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert!(
        reconciles(leading.metrics_port) > 0.0,
        "the leader did not reconcile"
    );
    assert_eq!(
        reconciles(standby.metrics_port),
        0.0,
        "the standby reconciled"
    );
    assert_eq!(
        http_get(standby.metrics_port, "/readyz").0,
        200,
        "a standby serves the API"
    );

    // The leader goes away: the standby takes over and runs the next run.
    leading.kill();
    create(
        &h,
        &inline_run("failover", &[("one", "echo one")], serde_json::json!({})),
    )
    .await;
    let done = h
        .wait_finished(NS, "failover", Duration::from_secs(120))
        .await;
    assert_eq!(
        done.status.unwrap().phase.as_deref(),
        Some("Succeeded"),
        "{}",
        standby.log_text()
    );
    assert!(reconciles(standby.metrics_port) > 0.0);
}

/// Two replicas that reach a free lease at the same moment: the apiserver lets only one take it.
/// Several leases at once make the simultaneous take likely rather than lucky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_electors_never_both_lead() {
    let Some(h) = Harness::start("electors").await else {
        return;
    };
    let leases: Api<Lease> = Api::namespaced(h.client(), NS);
    let elections = (0..8).map(|i| {
        let client = h.client();
        async move {
            let name = format!("race-{i}");
            let (a, b) = tokio::join!(
                toucan_operator::leader::elect(client.clone(), NS, &name, "replica-a"),
                toucan_operator::leader::elect(client, NS, &name, "replica-b"),
            );
            (name, a.unwrap(), b.unwrap())
        }
    });
    let elections = futures::future::join_all(elections).await;
    // Long enough for both to try the free lease, well short of a renewal (LEASE - GRACE).
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (name, a, b) in &elections {
        let (a, b) = (*a.borrow(), *b.borrow());
        let holder = leases
            .get(name)
            .await
            .unwrap()
            .spec
            .and_then(|s| s.holder_identity);
        assert!(
            a != b,
            "lease {name}: replica-a leads {a}, replica-b leads {b}, holder {holder:?}"
        );
        let leader = if a { "replica-a" } else { "replica-b" };
        assert_eq!(holder.as_deref(), Some(leader), "lease {name}");
    }
}
