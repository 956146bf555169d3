//! Endpoints applied to the real test cluster, served by real `toucan-worker serve` pods
//! (process mode) behind a real `toucan-router`, with a tiny linear model trained and exported
//! here and stored in the artifact store by digest:
//!
//! - two versions at 90/10 (plus a third whose model is broken, so its pods are never ready,
//!   and a fourth that only shadows) answer at least 2,000 requests from four clients through
//!   the router's pod IP in a split within binomial tolerance; the never-ready version and the
//!   shadow answer none, while the shadow gets its mirrored share; under that load the first
//!   version scales up to two replicas, one of them is killed without grace and no request
//!   fails, and once the load stops it scales back down; the router's configuration lists no
//!   replica of the broken version; the servers' payload samples, shipped with their pod
//!   tokens, are stored under `NAMESPACE/NAME`; `toucan get endpoints --cluster` and
//!   `toucan describe endpoint --cluster` show the split, the events and the router's figures;
//!   deleting the Endpoint collects its Deployments, Service and pods;
//! - a rollout of a good candidate (steps 50 then 100, a 2 s interval, 5 requests per step)
//!   reaches `Promoted`, with the candidate at 100 in `status.traffic`, its events, and the
//!   router sending it every request; the next candidate, slower than its latency gate, is
//!   rolled back at its first step (never more than 25%), and every request is answered; the
//!   Gateway API HTTPRoute (its CRD from the `sigs.k8s.io/gateway-api` Go module) carries
//!   the same weights over the versions' Services at every step, and goes with the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::model::{SIDE, model_bytes};
use common::{Harness, Operator, bin_dir};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use toucan_core::api::{Endpoint, EndpointStatus};
use toucan_store::artifacts::ArtifactStore;

/// The good model's digest and a broken one's (bytes that are no model), in the harness's
/// artifact store.
async fn store_models(h: &Harness) -> (String, String) {
    let bytes = model_bytes().to_vec();
    let store = ArtifactStore::open(&h.artifacts()).unwrap();
    let good = store.put_bytes(bytes.into()).await.unwrap();
    let broken = store
        .put_bytes(b"not a model at all".to_vec().into())
        .await
        .unwrap();
    (good.to_string(), broken.to_string())
}

/// A cluster, an operator and a namespace with the artifact store's Secret.
async fn setup(name: &str, ns: &str) -> Option<(Harness, Operator)> {
    let h = Harness::start(name).await?;
    h.apply_crds();
    let op = h.operator("a", &["--leader-elect=false"]);
    op.ready().await;
    h.kubectl_ok(&["create", "namespace", ns]);
    h.artifacts_secret(ns);
    Some((h, op))
}

fn endpoint(name: &str, spec: Value) -> Endpoint {
    serde_json::from_value(json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

async fn wait_status(
    h: &Harness,
    op: &Operator,
    ns: &str,
    name: &str,
    what: &str,
    timeout: Duration,
    f: impl Fn(&EndpointStatus) -> bool,
) -> Endpoint {
    let api: Api<Endpoint> = Api::namespaced(h.client(), ns);
    let deadline = Instant::now() + timeout;
    loop {
        let ep = api.get(name).await.unwrap();
        if f(ep.status.as_ref().unwrap_or(&EndpointStatus::default())) {
            return ep;
        }
        if Instant::now() > deadline {
            let pods = h.kubectl(&["get", "pods", "-n", ns, "-o", "wide"]);
            let log = op.log_text();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "endpoint {ns}/{name}: {what}: never happened; status {:#?}\npods:\n{}\noperator (last 30 lines):\n{}",
                ep.status,
                String::from_utf8_lossy(&pods.stdout),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn ready_replicas(status: &EndpointStatus, version: &str) -> u32 {
    status
        .versions
        .iter()
        .find(|v| v.name == version)
        .map_or(0, |v| v.ready_replicas)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// One prediction through the router; the version that answered.
fn predict(agent: &ureq::Agent, router: &str, model: &str) -> String {
    let url = format!("http://{router}/v1/models/{model}:predict");
    let pixels: Vec<u8> = (0..SIDE * SIDE).map(|i| (i % 200) as u8).collect();
    let mut response = agent
        .post(&url)
        .send_json(json!({ "instances": [pixels] }))
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    if response.status() != 200 {
        let body = response.body_mut().read_to_string().unwrap_or_default();
        panic!("POST {url}: {}: {body}", response.status());
    }
    response
        .headers()
        .get("x-toucan-version")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Waits (15 s at most) until `version` answers 20 requests in a row: the router follows a
/// decision within its polling second.
fn only_answers(agent: &ureq::Agent, router: &str, model: &str, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut in_a_row = 0;
    while in_a_row < 20 {
        let answered = predict(agent, router, model);
        if answered == version {
            in_a_row += 1;
        } else {
            in_a_row = 0;
        }
        assert!(
            Instant::now() < deadline,
            "{answered} still answers, not only {version}"
        );
    }
}

fn get_json(agent: &ureq::Agent, url: &str) -> Value {
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(response.status(), 200, "GET {url}");
    response.body_mut().read_json().unwrap()
}

/// Waits until the router itself has seen a ready replica of each of `versions`.
async fn router_sees(agent: &ureq::Agent, router: &str, versions: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = get_json(agent, &format!("http://{router}/router/v1/stats"));
        if versions
            .iter()
            .all(|v| stats["versions"][v]["readyReplicas"].as_u64().unwrap_or(0) > 0)
        {
            return;
        }
        assert!(Instant::now() < deadline, "router stats: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Gateway API's HTTPRoute CRD, from its Go module (`sigs.k8s.io/gateway-api`, through the
/// module cache), installed in the test cluster.
fn install_http_route_crd(h: &Harness) {
    h.install_crd_from_go_module(
        "sigs.k8s.io/gateway-api@v1.6.3",
        "config/crd/standard/gateway.networking.k8s.io_httproutes.yaml",
        "httproutes.gateway.networking.k8s.io",
    );
}

/// The weights of the endpoint's HTTPRoute, by backend Service.
fn route_weights(h: &Harness, ns: &str, name: &str) -> BTreeMap<String, u64> {
    let route: Value =
        serde_json::from_str(&h.kubectl_ok(&["get", "httproute", name, "-n", ns, "-o", "json"]))
            .unwrap();
    route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until the route's weights are `expected`.
async fn route_follows(h: &Harness, ns: &str, name: &str, expected: &[(&str, u64)]) {
    let expected: BTreeMap<String, u64> =
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let weights = route_weights(h, ns, name);
        if weights == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "route weights {weights:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn events_of(h: &Harness, ns: &str, name: &str) -> Vec<String> {
    let out = h.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        &format!("involvedObject.name={name},involvedObject.kind=Endpoint"),
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_split_requests_among_ready_versions_and_deletion_collects_the_children() {
    let ns = "split";
    let Some((h, op)) = setup("ep_split", ns).await else {
        return;
    };
    let (good, broken) = store_models(&h).await;
    let api: Api<Endpoint> = Api::namespaced(h.client(), ns);
    // v1 and v2 take 72 and 8 (90/10 of what the ready versions take); v3's model is
    // broken, so its 20 go to the others. v4 takes no traffic: it is the shadow. v1 scales
    // between 1 and 2 replicas on a target of one request in flight each, over a 6 s window.
    let spec = json!({
        "versions": [
            {"name": "v1", "model": {"digest": good}, "replicas": {"min": 1, "max": 2}},
            {"name": "v2", "model": {"digest": good}},
            {"name": "v3", "model": {"digest": broken}},
            {"name": "v4", "model": {"digest": good}},
        ],
        "traffic": [
            {"version": "v1", "weight": 72},
            {"version": "v2", "weight": 8},
            {"version": "v3", "weight": 20},
        ],
        "shadow": {"version": "v4", "percent": 30},
        "autoscaling": {"target": {"concurrency": 1, "window": "6s"}},
        "sampling": {"rate": 0.2},
    });
    api.create(&PostParams::default(), &endpoint("fashion", spec))
        .await
        .unwrap();
    let ep = wait_status(
        &h,
        &op,
        ns,
        "fashion",
        "v1, v2 and v4 ready",
        Duration::from_secs(90),
        |s| ["v1", "v2", "v4"].iter().all(|v| ready_replicas(s, v) == 1),
    )
    .await;
    let status = ep.status.unwrap();
    assert_eq!(status.traffic_summary.as_deref(), Some("v1=72,v2=8,v3=20"));
    assert_eq!(status.url.as_deref(), Some("http://fashion.split.svc"));
    assert_eq!(
        status.versions[0].model_digest.as_deref(),
        Some(good.as_str())
    );
    assert_eq!(status.versions[2].ready_replicas, 0);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.message.as_str()),
        ("False", "no ready replica of v3")
    );

    let router = h.router_address(ns, None).await;
    let agent = agent();
    router_sees(&agent, &router, &["v1", "v2", "v4"]).await;
    // The router reads its configuration with its pod's token (it serves, so that worked);
    // without a token nobody does, and a cluster admin does.
    let config_url = format!(
        "http://127.0.0.1:{}/api/v1/namespaces/{ns}/endpoints/fashion/router-config",
        op.api_port
    );
    let anonymous = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
        .get(&config_url)
        .call()
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let admin_token = h.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.users[0].user.token}",
    ]);
    let config: Value = agent
        .get(&config_url)
        .header("Authorization", format!("Bearer {}", admin_token.trim()))
        .call()
        .unwrap_or_else(|e| panic!("GET {config_url}: {e}"))
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(config["versions"][2]["name"], "v3");
    assert_eq!(config["versions"][2]["replicas"], json!([]), "{config}");
    assert_eq!(
        config["versions"][0]["replicas"].as_array().unwrap().len(),
        1
    );

    // The load: four clients until told to stop. Every request must be answered 200, by v1
    // or v2 only, while v1 scales up under it and one of its replicas is killed.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (agent, router) = (agent.clone(), router.clone());
            let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
            std::thread::spawn(move || {
                let mut answered: BTreeMap<String, u32> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    *answered
                        .entry(predict(&agent, &router, "fashion"))
                        .or_default() += 1;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                answered
            })
        })
        .collect();
    let scaled = wait_status(
        &h,
        &op,
        ns,
        "fashion",
        "v1 scaled up to 2 ready replicas under load",
        Duration::from_secs(60),
        |s| ready_replicas(s, "v1") == 2,
    )
    .await;
    let v1 = scaled.status.unwrap();
    let v1 = v1.versions.iter().find(|v| v.name == "v1").unwrap();
    assert_eq!(v1.desired_replicas, 2, "{v1:?}");
    // Once the router itself knows both (it reads its configuration every second), kill one
    // of v1's replicas outright (no grace): requests in flight on it break, and the router
    // retries them on the other one.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = get_json(&agent, &format!("http://{router}/router/v1/stats"));
        if stats["versions"]["v1"]["readyReplicas"].as_u64() == Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "router stats: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(h.client(), ns);
    let v1_pods = pods
        .list(&ListParams::default().labels("toucan.dev/endpoint=fashion,toucan.dev/version=v1"))
        .await
        .unwrap();
    let victim = v1_pods.items[0].metadata.name.clone().unwrap();
    pods.delete(
        &victim,
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // At least 2,000 requests in all.
    let deadline = Instant::now() + Duration::from_secs(90);
    while sent.load(Ordering::Relaxed) < 2000 {
        assert!(
            Instant::now() < deadline,
            "the load stalled at {} requests",
            sent.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        for (version, n) in client.join().unwrap() {
            *answered.entry(version).or_default() += n;
        }
    }
    let n: u32 = answered.values().sum();
    let v2 = answered.get("v2").copied().unwrap_or(0);
    assert!(n >= 2000, "{answered:?}");
    assert_eq!(
        answered.get("v1").copied().unwrap_or(0) + v2,
        n,
        "only v1 and v2 answer callers (never v3, never the shadow v4): {answered:?}"
    );
    // Binomial(n, 0.1): within 4.5 standard deviations of the mean.
    let (mean, sd) = (f64::from(n) * 0.1, (f64::from(n) * 0.1 * 0.9).sqrt());
    assert!(
        (f64::from(v2) - mean).abs() <= 4.5 * sd,
        "v2 answered {v2} of {n}: {answered:?}"
    );
    // The shadow got mirrored copies (a 30% share; the router's counts cover its last
    // minute), and nothing else: no caller saw its answers.
    let stats = get_json(&agent, &format!("http://{router}/router/v1/stats"));
    let mirrored = stats["versions"]["v4"]["mirrored"].as_u64().unwrap_or(0);
    assert!(mirrored >= 100, "v4 mirrored {mirrored}: {stats}");
    assert_eq!(
        stats["versions"]["v4"]["requests"].as_u64(),
        Some(mirrored),
        "{stats}"
    );

    // With the load gone, v1 scales back down to its minimum within a window or so.
    wait_status(
        &h,
        &op,
        ns,
        "fashion",
        "v1 scaled back down to 1",
        Duration::from_secs(60),
        |s| {
            s.versions
                .iter()
                .any(|v| v.name == "v1" && v.desired_replicas == 1 && v.replicas == 1)
        },
    )
    .await;
    let events = events_of(&h, ns, "fashion").await;
    for reason in ["ScaledUp", "ScaledDown"] {
        assert!(
            events.iter().any(|e| e == reason),
            "{reason} not in {events:?}"
        );
    }

    // The CLI reads the same endpoint from the cluster: the table, and the router's figures
    // through the operator's API.
    let toucan = |args: &[&str]| {
        let out = Command::new(bin_dir().join("toucan"))
            .args(args)
            .args(["--cluster", "-n", ns, "--api"])
            .arg(format!("http://127.0.0.1:{}", op.api_port))
            .env("KUBECONFIG", h.cluster.kubeconfig())
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "toucan {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let listed = toucan(&["get", "endpoints"]);
    assert!(
        listed.contains("fashion") && listed.contains("v1=72,v2=8,v3=20"),
        "{listed}"
    );
    let detail: Value =
        serde_json::from_str(&toucan(&["describe", "endpoint", "fashion", "-o", "json"])).unwrap();
    assert_eq!(
        detail["status"]["url"], "http://fashion.split.svc",
        "{detail:#}"
    );
    // The router's live figures (its counts cover the last minute, which may be past).
    assert!(
        detail["stats"]["versions"]["v1"]["readyReplicas"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{detail:#}"
    );
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("ScaledUp: v1")),
        "{detail:#}"
    );

    // The servers shipped their samples with their pod tokens, which the API took as the
    // endpoint's servers: they are stored under NAMESPACE/NAME.
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let samples = loop {
        let samples = store.list_samples("split/fashion", 0, 1000).await.unwrap();
        // Binomial(n, 0.2), n at least 2,000: at least 400 on average.
        if samples.len() as f64 >= 0.1 * f64::from(n) {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "{} samples stored\n{}",
            samples.len(),
            op.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        samples.len() as f64 <= 0.3 * f64::from(n),
        "{} samples of {n} requests",
        samples.len()
    );
    assert!(
        samples
            .iter()
            .all(|s| matches!(s.sample.version.as_str(), "v1" | "v2" | "v4"))
    );

    api.delete("fashion", &Default::default()).await.unwrap();
    let deployments: Api<Deployment> = Api::namespaced(h.client(), ns);
    let services: Api<Service> = Api::namespaced(h.client(), ns);
    let pods: Api<Pod> = Api::namespaced(h.client(), ns);
    let selector = ListParams::default().labels("toucan.dev/endpoint=fashion");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = (
            deployments
                .list_metadata(&selector)
                .await
                .unwrap()
                .items
                .len(),
            services.list_metadata(&selector).await.unwrap().items.len(),
            pods.list_metadata(&selector).await.unwrap().items.len(),
        );
        if left == (0, 0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deployments, services and pods left: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_candidate_is_rolled_out_step_by_step_and_promoted() {
    let ns = "rollout";
    let Some((h, op)) = setup("ep_rollout", ns).await else {
        return;
    };
    let (good, _) = store_models(&h).await;
    install_http_route_crd(&h);
    let api: Api<Endpoint> = Api::namespaced(h.client(), ns);
    let gateway = json!({"parentRefs": [{"name": "public"}], "hostnames": ["digits.example.com"]});
    let spec = json!({
        "versions": [
            {"name": "stable", "model": {"digest": good}},
            {"name": "canary", "model": {"digest": good}},
        ],
        "traffic": [{"version": "stable", "weight": 100}],
        "router": {"gateway": gateway},
        "rollout": {
            "candidate": "canary",
            "steps": [50, 100],
            "interval": "2s",
            "minRequests": 5,
            "gates": [{"metric": "error_rate", "max": "5%"}],
        },
    });
    api.create(&PostParams::default(), &endpoint("digits", spec))
        .await
        .unwrap();
    let ep = wait_status(
        &h,
        &op,
        ns,
        "digits",
        "the rollout starts at 50",
        Duration::from_secs(60),
        |s| s.rollout.as_ref().is_some_and(|r| r.weight == 50),
    )
    .await;
    assert_eq!(
        ep.status.unwrap().traffic_summary.as_deref(),
        Some("stable=50,canary=50")
    );
    let router = h.router_address(ns, None).await;
    let agent = agent();
    router_sees(&agent, &router, &["stable", "canary"]).await;
    // The gateway's route carries the same split, over the versions' own Services.
    route_follows(
        &h,
        ns,
        "digits",
        &[("digits-stable", 50), ("digits-canary", 50)],
    )
    .await;
    let services: Api<Service> = Api::namespaced(h.client(), ns);
    let canary = services.get("digits-canary").await.unwrap();
    assert_eq!(
        canary.spec.unwrap().selector.unwrap()["toucan.dev/version"],
        "canary"
    );

    // Traffic while the rollout moves: both versions answer at 50, then the canary alone.
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let promoted = loop {
        for _ in 0..10 {
            *answered
                .entry(predict(&agent, &router, "digits"))
                .or_default() += 1;
        }
        let ep = api.get("digits").await.unwrap();
        let status = ep.status.unwrap_or_default();
        if status
            .rollout
            .as_ref()
            .is_some_and(|r| r.phase.as_str() == "Promoted")
        {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "never promoted: {:#?}\n{answered:?}",
            status.rollout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        answered.get("stable").copied().unwrap_or(0) > 0,
        "{answered:?}"
    );
    assert!(
        answered.get("canary").copied().unwrap_or(0) > 0,
        "{answered:?}"
    );
    let traffic: Vec<(String, u32)> = promoted
        .traffic
        .iter()
        .map(|t| (t.version.clone(), t.weight))
        .collect();
    assert_eq!(
        traffic,
        [("stable".to_string(), 0), ("canary".to_string(), 100)]
    );
    let rollout = promoted.rollout.unwrap();
    assert_eq!((rollout.weight, rollout.step), (100, 1));
    route_follows(
        &h,
        ns,
        "digits",
        &[("digits-stable", 0), ("digits-canary", 100)],
    )
    .await;

    // The router follows within its polling second.
    only_answers(&agent, &router, "digits", "canary");
    let events = events_of(&h, ns, "digits").await;
    for reason in ["RolloutStarted", "RolloutPromoted"] {
        assert!(
            events.iter().any(|e| e == reason),
            "{reason} not in {events:?}"
        );
    }

    // The next candidate is broken: slower than its 1 ms latency gate (the servers batch
    // with a 5 ms window). It is rolled back at its first step, never takes more than that
    // step's share, and every request is answered all along.
    let spec = json!({
        "versions": [
            {"name": "stable", "model": {"digest": good}},
            {"name": "canary", "model": {"digest": good}},
            {"name": "slow", "model": {"digest": good}},
        ],
        "traffic": [{"version": "canary", "weight": 100}],
        "router": {"gateway": gateway},
        "rollout": {
            "candidate": "slow",
            "steps": [25, 100],
            "interval": "2s",
            "minRequests": 5,
            "gates": [{"metric": "latency_p99", "max": "1ms"}],
        },
    });
    let mut ep = api.get("digits").await.unwrap();
    ep.spec = endpoint("digits", spec).spec;
    api.replace("digits", &PostParams::default(), &ep)
        .await
        .unwrap();
    wait_status(
        &h,
        &op,
        ns,
        "digits",
        "the slow candidate ready",
        Duration::from_secs(60),
        |s| ready_replicas(s, "slow") == 1,
    )
    .await;
    router_sees(&agent, &router, &["slow"]).await;
    let mut answered: BTreeMap<String, u32> = BTreeMap::new();
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let rolled_back = loop {
        for _ in 0..10 {
            *answered
                .entry(predict(&agent, &router, "digits"))
                .or_default() += 1;
        }
        let status = api.get("digits").await.unwrap().status.unwrap_or_default();
        if let Some(r) = status.rollout.as_ref().filter(|r| r.candidate == "slow") {
            most = most.max(r.weight);
            if r.phase.as_str() == "RolledBack" {
                break status;
            }
        }
        assert!(
            Instant::now() < deadline,
            "never rolled back: {:#?}\n{answered:?}",
            status.rollout
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(most <= 25, "the slow candidate reached {most}%");
    let rollout = rolled_back.rollout.unwrap();
    assert_eq!((rollout.weight, rollout.step), (0, 0), "{rollout:?}");
    assert!(
        answered.get("canary").copied().unwrap_or(0) > 0 && !answered.contains_key("stable"),
        "{answered:?}"
    );
    // The router follows: the incumbent takes every request again.
    only_answers(&agent, &router, "digits", "canary");
    let events = events_of(&h, ns, "digits").await;
    assert!(
        events.iter().any(|e| e == "RolloutRolledBack"),
        "RolloutRolledBack not in {events:?}"
    );
    route_follows(
        &h,
        ns,
        "digits",
        &[
            ("digits-stable", 0),
            ("digits-canary", 100),
            ("digits-slow", 0),
        ],
    )
    .await;

    // Without a gateway the route and the versions' Services go.
    let mut ep = api.get("digits").await.unwrap();
    ep.spec.router = None;
    api.replace("digits", &PostParams::default(), &ep)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let route = h.kubectl(&["get", "httproute", "digits", "-n", ns]);
        let left = services
            .list_metadata(&ListParams::default().labels("toucan.dev/endpoint=digits"))
            .await
            .unwrap()
            .items
            .len();
        if !route.status.success() && left == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the route or the versions' Services stayed ({left} Services)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
