//! An Endpoint's monitoring loop on the real test cluster, served by real `toucan-worker
//! serve` pods (process mode) behind a real `toucan-router`, for two endpoints at once whose
//! retraining pipelines export a good model and one trained on shuffled labels:
//!
//! - requests like the reference raise nothing: the operator's API exports the endpoint's
//!   drift and evaluation gauges on `/metrics`, and its `Drifted` condition is `False`;
//! - brightened requests raise a drift alert (an event, the condition, a row in the store that
//!   `GET /api/v1/alerts` and `toucan get alerts --cluster` list), which creates a retraining
//!   PipelineRun named after the alert;
//! - once that run succeeded, its model is added to the Endpoint as a new version and rolled out
//!   against the serving one with a gate on live accuracy from the labels posted to the API:
//!   the good model is promoted and left alone in the spec; the shuffled one is rolled back
//!   at its first step (it never has more than 50%) and removed; every request is answered
//!   all along;
//! - Prometheus (scraping the operator's API, with the endpoint's rules) and Alertmanager (its
//!   webhook reaching the API with a token the API checks) bring the drift alert back as an
//!   alert of its own, which the endpoint takes as a retraining trigger (held: the run for
//!   its own alert is going or done);
//! - the cluster has no prometheus-operator, which an event says; once its PrometheusRule CRD
//!   is installed (from its Go module), the endpoint's rule is applied, owned by the Endpoint.
//!
//! The model is a Fashion-MNIST classifier and the requests are the dataset's test images. The
//! "retraining" pipelines export models the test made with the real `toucan-worker` (training
//! itself is covered by the worker's and the examples' tests); the reference is a window of the
//! endpoint's own first requests, their input statistics and the model's embeddings of them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::model::{CLASSES, model_bytes, shuffled_model_bytes, test_image};
use common::{Harness, Operator};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use toucan_core::api::{Endpoint, PipelineRun};
use toucan_core::monitoring::evaluation::Label;
use toucan_core::monitoring::rules::rule_file_yaml;
use toucan_core::records::{AlertRecord, Millis};
use toucan_core::serving::PayloadSample;
use toucan_core::time::{now_ms, rfc3339};

const NS: &str = "watched";

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// Requests through the router, each with a request id; their labels once the servers'
/// samples of them are stored.
struct Traffic {
    name: &'static str,
    agent: ureq::Agent,
    router: String,
    api: String,
    token: String,
    sent: u32,
}

impl Traffic {
    /// Sends `n` images (brightened or not), waits for their samples, labels them.
    async fn send(&mut self, h: &Harness, n: u32, bright: bool) -> Vec<String> {
        let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
        let mut labels = Vec::new();
        let mut versions = Vec::new();
        for _ in 0..n {
            let (mut pixels, label) = test_image(self.sent);
            if bright {
                for p in &mut pixels {
                    *p = 255 - ((255 - u32::from(*p)) * 3 / 10) as u8;
                }
            }
            let id = format!("{}-{}", self.name, self.sent);
            self.sent += 1;
            let url = format!("http://{}/v1/models/{}:predict", self.router, self.name);
            let mut response = self
                .agent
                .post(&url)
                .header("x-request-id", &id)
                .send_json(json!({ "instances": [pixels] }))
                .unwrap_or_else(|e| panic!("POST {url}: {e}"));
            let body = response.body_mut().read_to_string().unwrap_or_default();
            assert_eq!(response.status(), 200, "{}: {body}", self.name);
            versions.push(
                response
                    .headers()
                    .get("x-toucan-version")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            );
            labels.push(json!({"requestId": id, "label": CLASSES[label]}));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let ours = format!("{}-", self.name);
        while store
            .list_samples(&format!("{NS}/{}", self.name), 0, 100_000)
            .await
            .unwrap()
            .iter()
            .filter(|s| s.sample.request_id.starts_with(&ours))
            .count()
            < self.sent as usize
        {
            assert!(Instant::now() < deadline, "the samples were not stored");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let url = format!(
            "{}/api/v1/endpoints/{}/labels?namespace={NS}",
            self.api, self.name
        );
        let mut response = self
            .agent
            .post(&url)
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(json!({ "labels": labels }))
            .unwrap();
        let stored: Value = response.body_mut().read_json().unwrap();
        assert_eq!(stored["unknown"], 0, "{stored}");
        versions
    }

    fn get(&self, path: &str) -> String {
        self.agent
            .get(format!("{}{path}", self.api))
            .header("Authorization", format!("Bearer {}", self.token))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    }

    fn alerts(&self) -> Vec<Value> {
        serde_json::from_str(&self.get(&format!(
            "/api/v1/alerts?endpoint={}&namespace={NS}",
            self.name
        )))
        .unwrap()
    }
}

async fn wait_endpoint(
    h: &Harness,
    op: &Operator,
    name: &str,
    what: &str,
    timeout: Duration,
    mut f: impl FnMut(&Endpoint) -> bool,
) -> Endpoint {
    let api: Api<Endpoint> = Api::namespaced(h.client(), NS);
    let deadline = Instant::now() + timeout;
    loop {
        let ep = api.get(name).await.unwrap();
        if f(&ep) {
            return ep;
        }
        if Instant::now() > deadline {
            let log = op.log_text();
            let lines: Vec<&str> = log.lines().collect();
            panic!(
                "{name}: {what}: never happened; endpoint {:#?}\noperator (last 40 lines):\n{}",
                ep,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn condition(ep: &Endpoint, type_: &str) -> Option<String> {
    ep.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

fn events_of(h: &Harness, name: &str) -> Vec<String> {
    let out = h.kubectl_ok(&[
        "get",
        "events",
        "-n",
        NS,
        "--field-selector",
        &format!("involvedObject.name={name},involvedObject.kind=Endpoint"),
        "-o",
        "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
    ]);
    out.lines().map(str::to_string).collect()
}

/// Installs prometheus-operator's PrometheusRule CRD (from its Go module) and waits for the
/// endpoint's rule: owned by the Endpoint, with its drift alert.
async fn the_rule_is_applied_once_prometheus_operator_is_there(h: &Harness, name: &str) {
    h.install_crd_from_go_module(
        "github.com/prometheus-operator/prometheus-operator@v0.89.0",
        "example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml",
        "prometheusrules.monitoring.coreos.com",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let rule: Value = loop {
        let out = h.kubectl(&["get", "prometheusrule", name, "-n", NS, "-o", "json"]);
        if out.status.success() {
            break serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no PrometheusRule {name}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        rule["metadata"]["ownerReferences"][0]["kind"], "Endpoint",
        "{rule:#}"
    );
    assert_eq!(
        rule["metadata"]["ownerReferences"][0]["name"], name,
        "{rule:#}"
    );
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][0]["alert"], "ToucanEndpointDrift",
        "{rule:#}"
    );
}

/// A one-step pipeline that "retrains" by exporting the model file at `model`; it counts the
/// rows of the table its `extra_data` parameter names (`none` when it names none) as the
/// output param `samples`.
fn pipeline(h: &Harness, name: &str, model: &std::path::Path) {
    let script = format!(
        "cp {} {{{{outputs.artifacts.model}}}} && f='{{{{inputs.artifacts.extra}}}}' && \
         if [ -n \"$f\" ]; then awk 'END {{ print NR - 1 }}' \"$f\"; else echo none; fi \
         > {{{{outputs.params.samples}}}}",
        model.display()
    );
    let pipeline = json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "Pipeline",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "params": [{"name": "extra_data", "default": ""}],
            "steps": [{
                "name": "export",
                "image": "busybox",
                "command": ["sh", "-c", script],
                "inputs": {"artifacts": [{"name": "extra", "from": "{{params.extra_data}}"}]},
                "outputs": {"artifacts": [{"name": "model"}], "params": [{"name": "samples"}]},
            }],
        },
    });
    let file = h.dir.path().join(format!("{name}.json"));
    std::fs::write(&file, pipeline.to_string()).unwrap();
    h.kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_retrains_and_the_new_model_is_promoted_or_rolled_back_on_live_accuracy() {
    let Some(h) = Harness::start("monitoring").await else {
        return;
    };
    h.apply_crds();
    let op = h.operator("a", &["--leader-elect=false"]);
    op.ready().await;
    h.kubectl_ok(&["create", "namespace", NS]);
    h.artifacts_secret(NS);

    // The pipelines drift alerts run, and the first run, whose model v1 serves.
    let good = h.dir.path().join("good.safetensors");
    std::fs::write(&good, model_bytes()).unwrap();
    let shuffled = h.dir.path().join("shuffled.safetensors");
    std::fs::write(&shuffled, shuffled_model_bytes()).unwrap();
    pipeline(&h, "fashion", &good);
    pipeline(&h, "fashion-shuffled", &shuffled);
    let runs: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    let first: PipelineRun = serde_json::from_value(json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": "fashion-1"},
        "spec": {"pipelineRef": {"name": "fashion"}},
    }))
    .unwrap();
    runs.create(&PostParams::default(), &first).await.unwrap();
    let done = h
        .wait_finished(NS, "fashion-1", Duration::from_secs(120))
        .await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    // With no extra data the input is absent: an empty path, nothing staged.
    assert_eq!(exported_samples(&h, &done).await, "none");

    tokio::join!(
        the_loop(&h, &op, "fashion", "fashion", true),
        the_loop(&h, &op, "fashion-bad", "fashion-shuffled", false),
    );
}

/// A labelled sample and an ended alert of endpoint `name`, stored eight days ago; returns
/// when.
async fn seed_past_retention(h: &Harness, name: &str) -> Millis {
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let key = format!("{NS}/{name}");
    let then = now_ms() - 8 * 24 * 3_600_000;
    let sample: PayloadSample = serde_json::from_value(json!({
        "requestId": "old", "model": "fashion", "version": "v1",
        "receivedAt": rfc3339(then).unwrap(), "protocol": "v1", "latencyMs": 1.0,
        "instances": [{"stats": {"width": 28, "height": 28, "channels": 1, "brightness": 0.3,
                                 "contrast": 0.2, "channelMeans": [0.3], "sharpness": 0.01},
                       "label": 0, "class": CLASSES[0], "probabilities": [0.9, 0.1]}],
    }))
    .unwrap();
    store.put_samples(&key, &[sample], then).await.unwrap();
    let label: Label = serde_json::from_value(
        json!({"requestId": "old", "label": CLASSES[0], "labelledAt": then}),
    )
    .unwrap();
    store.put_labels(&key, &[label], then).await.unwrap();
    let alert: AlertRecord = serde_json::from_value(json!({
        "endpoint": key, "key": "drift/old", "kind": "drift", "phase": "Resolved",
        "summary": "an old episode", "windowStart": then - 60_000, "windowEnd": then,
        "activeSince": then - 60_000, "lastBreach": then - 60_000, "endedAt": then,
        "updatedAt": then,
    }))
    .unwrap();
    store.put_alerts(&[alert]).await.unwrap();
    then
}

/// What the export step of `run` wrote as `samples`.
async fn exported_samples(h: &Harness, run: &PipelineRun) -> String {
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let id = run.status.as_ref().and_then(|s| s.run_id.clone()).unwrap();
    let steps = store.list_steps(&id).await.unwrap();
    let export = steps.iter().find(|s| s.name == "export").unwrap();
    export.outputs.params["samples"].clone()
}

/// Endpoint `name`, retrained by `retrain`: normal requests, brightened ones, the retraining
/// run, and its model's rollout to promotion or rollback.
async fn the_loop(h: &Harness, op: &Operator, name: &'static str, retrain: &str, promoted: bool) {
    // The reference: the endpoint's own first requests (the window is closed once they are
    // in; meanwhile it compares the requests with themselves).
    let start = now_ms();
    let reference = json!({"window": {
        "start": rfc3339(start).unwrap(),
        "end": rfc3339(start + 3_600_000).unwrap(),
    }});
    let endpoint: Endpoint = serde_json::from_value(json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "Endpoint",
        "metadata": {"name": name},
        "spec": {
            "versions": [{"name": "v1", "model": {"run": "fashion-1", "step": "export", "artifact": "model"}}],
            "sampling": {"rate": 1},
            "monitoring": {
                "drift": {"reference": reference, "window": "20s", "minSamples": 30,
                          "effectSize": 0.3, "for": "0s"},
                "evaluation": {"window": "10s", "maturity": "0s", "for": "0s"},
                "retrain": {
                    "pipelineRef": {"name": retrain},
                    "params": [{"name": "extra_data", "value": "{{alert.window.samples}}"}],
                    "cooldown": "1h",
                    "promote": {"rollout": {"steps": [50, 100], "interval": "3s", "minLabels": 15,
                                            "gates": [{"metric": "accuracy", "minDelta": -0.1}]}},
                },
            },
        },
    }))
    .unwrap();
    let past_retention = seed_past_retention(h, name).await;
    let endpoints: Api<Endpoint> = Api::namespaced(h.client(), NS);
    endpoints
        .create(&PostParams::default(), &endpoint)
        .await
        .unwrap();
    let router = h.router_address(NS, Some(name)).await;
    let token = h.kubectl_ok(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.users[0].user.token}",
    ]);
    let mut traffic = Traffic {
        name,
        agent: agent(),
        router,
        api: format!("http://127.0.0.1:{}", op.api_port),
        token: token.trim().to_string(),
        sent: 0,
    };

    // Like the reference: gauges, no alert.
    traffic.send(h, 45, false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let detected = format!(
        "toucan_endpoint_drift_detected{{namespace=\"{NS}\",endpoint=\"{name}\",slice=\"all\",feature=\"brightness\",test=\"ks\"}} 0"
    );
    let samples = format!(
        "toucan_endpoint_evaluation_samples{{namespace=\"{NS}\",endpoint=\"{name}\",version=\"v1\""
    );
    // The model's embeddings of the requests, compared with its embeddings in the window.
    let embeddings = format!(
        "toucan_endpoint_drift_detected{{namespace=\"{NS}\",endpoint=\"{name}\",slice=\"all\",feature=\"embedding/v1\",test=\"mmd\"}} 0"
    );
    loop {
        let metrics = traffic.get("/metrics");
        if metrics.contains(&detected)
            && metrics.contains(&samples)
            && metrics.contains(&embeddings)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: no gauges yet:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ep = wait_endpoint(
        h,
        op,
        name,
        "Drifted is False",
        Duration::from_secs(20),
        |e| condition(e, "Drifted").as_deref() == Some("False"),
    )
    .await;
    assert_eq!(ep.spec.versions.len(), 1);
    // The first passes deleted what was older than the retention (a week), nothing newer.
    let store = toucan_store::metadata::open(&h.db_url).await.unwrap();
    let key = format!("{NS}/{name}");
    let kept = store
        .list_labelled_samples(&key, 0..Millis::MAX, 1_000)
        .await
        .unwrap();
    assert!(
        !kept.iter().any(|s| s.sample.stored_at <= past_retention),
        "{name}: a sample past the retention is still there"
    );
    assert!(kept.len() >= 45, "{name}: {} samples left", kept.len());
    let alerts = store.list_alerts(Some(&key), false, 100).await.unwrap();
    assert!(
        alerts.iter().all(|a| a.key != "drift/old"),
        "{name}: {alerts:#?}"
    );
    assert_eq!(
        condition(&ep, "Monitoring").as_deref(),
        Some("True"),
        "{ep:#?}"
    );
    assert!(traffic.alerts().is_empty(), "{:#?}", traffic.alerts());
    let close = json!({"spec": {"monitoring": {"drift": {"reference": {"window": {
        "start": rfc3339(start).unwrap(),
        "end": rfc3339(now_ms()).unwrap(),
    }}}}}});
    endpoints
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&close),
        )
        .await
        .unwrap();

    // Prometheus scrapes the operator's API and evaluates the endpoint's rules (what its
    // PrometheusRule holds); Alertmanager posts to the API's webhook with the admin's token.
    let wired = if promoted {
        let rules = rule_file_yaml(NS, name, &endpoint.spec).unwrap().unwrap();
        toucan_test_harness::alerting::Wired::wire(
            name,
            traffic.api.trim_start_matches("http://"),
            &rules,
            &format!("{}/api/v1/alertmanager", traffic.api),
            Some(&traffic.token),
        )
        .unwrap()
    } else {
        None
    };

    // Brightened: the drift alert, its retraining run, the new version.
    traffic.send(h, 40, true).await;
    wait_endpoint(
        h,
        op,
        name,
        "Drifted is True",
        Duration::from_secs(30),
        |e| condition(e, "Drifted").as_deref() == Some("True"),
    )
    .await;
    let alert = traffic
        .alerts()
        .into_iter()
        .find(|a| a["key"] == "drift/all")
        .unwrap_or_else(|| panic!("{:#?}", traffic.alerts()));
    assert_eq!(alert["phase"], "Firing", "{alert:#}");
    eprintln!("{name}: {}", alert["summary"]);
    if promoted {
        // prometheus-operator's CRD installed now: the endpoint's rule follows.
        the_rule_is_applied_once_prometheus_operator_is_there(h, name).await;
    }
    let ep = wait_endpoint(
        h,
        op,
        name,
        "the retrained version",
        Duration::from_secs(90),
        |e| e.spec.versions.len() == 2,
    )
    .await;
    let candidate = ep.spec.versions[1].name.clone();
    let run = ep.spec.versions[1].model.run.clone().unwrap();
    let runs: Api<PipelineRun> = Api::namespaced(h.client(), NS);
    let retrained = runs.get(&run).await.unwrap();
    assert_eq!(
        retrained.metadata.labels.as_ref().unwrap()["toucan.dev/retrains"],
        name
    );
    // The run got the alert window's labelled samples as an artifact of its own.
    let samples = exported_samples(h, &retrained).await;
    let labelled: usize = samples.parse().unwrap_or_else(|_| panic!("{samples:?}"));
    assert!(
        (1..=traffic.sent as usize).contains(&labelled),
        "{name}: {labelled} labelled samples of {} requests",
        traffic.sent
    );
    assert_eq!(
        ep.spec.rollout.as_ref().map(|r| r.candidate.as_str()),
        Some(candidate.as_str())
    );

    // Live labels until the rollout ends.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut answered = std::collections::BTreeMap::<String, u32>::new();
    let mut most = 0;
    loop {
        for version in traffic.send(h, 10, false).await {
            *answered.entry(version).or_default() += 1;
        }
        let ep = endpoints.get(name).await.unwrap();
        if let Some(r) = ep.status.as_ref().and_then(|s| s.rollout.as_ref())
            && r.candidate == candidate
        {
            most = most.max(r.weight);
        }
        if ep.spec.versions.len() == 1 {
            assert!(ep.spec.rollout.is_none(), "{:#?}", ep.spec);
            let kept = if promoted { candidate.as_str() } else { "v1" };
            assert_eq!(ep.spec.versions[0].name, kept, "{name}: {:#?}", ep.spec);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the rollout did not end: {:#?}\n{}",
            ep,
            op.log_text()
        );
    }
    assert!(answered.contains_key(&candidate), "{name}: {answered:?}");
    if !promoted {
        assert!(most <= 50, "{name}: the shuffled model had {most}%");
    }
    let outcome = if promoted { "promoted" } else { "rolled back" };
    let alert = traffic
        .alerts()
        .into_iter()
        .find(|a| a["run"] == run.as_str())
        .unwrap();
    let action = alert["action"].as_str().unwrap();
    assert!(action.contains(outcome), "{name}: {alert:#}");

    if wired.is_some() {
        // Alertmanager's notifications are alerts of their own, retraining triggers that the
        // endpoint's own alert has acted on already.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let external = traffic.alerts().into_iter().find(|a| {
                a["key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("alertmanager/"))
                    && a["kind"] == "drift"
                    && a["action"].is_string()
            });
            if let Some(external) = external {
                let action = external["action"].as_str().unwrap();
                assert!(action.starts_with("held ("), "{external:#}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: no alert from Alertmanager: {:#?}",
                traffic.alerts()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    drop(wired);

    // The CLI shows the loop's history from the operator's API.
    let out = std::process::Command::new(common::bin_dir().join("toucan"))
        .args([
            "get",
            "alerts",
            name,
            "-o",
            "json",
            "--cluster",
            "-n",
            NS,
            "--api",
        ])
        .arg(&traffic.api)
        .env("KUBECONFIG", h.cluster.kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        listed.iter().any(|a| a["run"] == run.as_str()),
        "{listed:#?}"
    );
    let events = events_of(h, name);
    let ended = if promoted {
        "RetrainedVersionPromoted"
    } else {
        "RetrainedVersionRolledBack"
    };
    for reason in [
        "AlertFiring",
        "RetrainStarted",
        "RetrainedVersionAdded",
        ended,
        "PrometheusRuleMissing",
    ] {
        assert!(
            events.iter().any(|e| e == reason),
            "{name}: {reason}: {events:?}"
        );
    }
}
