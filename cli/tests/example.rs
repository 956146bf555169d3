//! The fashion-mnist example on the real data: it succeeds, learns, exports, and a second
//! run is served entirely from the cache. Its steps run `toucan-worker` from PATH, which must
//! be the libtorch build (`make test` puts its dev build first), and read Debian's
//! `dataset-fashion-mnist` (installed by `scripts/setup`). One epoch of the CNN keeps it short.
//! The model it exports is then served (`examples/serving/`) and queried through the router.

// Helpers outside `#[test]` functions, which clippy's test exemptions miss.
#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::serving::{
    CLASSES, Served, brightened, eventually, get_json, post_json, predict, test_images,
};
use common::{Sandbox, cached, step};

/// The example trains for one epoch here; the accuracy it must reach in that epoch.
const PARAMS: [&str; 2] = ["-p", "epochs=1"];

#[test]
fn fashion_mnist_example_runs_then_comes_from_the_cache() {
    let device = std::process::Command::new("toucan-worker")
        .args(["device", "--device", "cpu"])
        .env("PATH", common::step_path())
        .output();
    assert!(
        device.as_ref().is_ok_and(|o| o.status.success()),
        "the example needs toucan-worker built with the `torch` feature first on PATH \
         (`make build-torch` builds it; `make test` passes it in TOUCAN_TEST_STEP_PATH): {device:?}"
    );
    let sb = Sandbox::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fashion-mnist/pipeline.yaml")
        .canonicalize()
        .unwrap();
    let (code, first, stderr) = sb.run_json(&manifest, &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["phase"], "Succeeded");
    let accuracy: f64 = step(&first, "evaluate")["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.85,
        "test accuracy {accuracy} after one epoch of the CNN"
    );
    assert_eq!(
        step(&first, "export")["phase"],
        "Succeeded",
        "accuracy clears the gate"
    );
    assert_eq!(step(&first, "summary")["phase"], "Succeeded");

    the_serving_example_serves_the_exported_model(&sb);
    an_endpoint_splits_its_traffic_and_records_samples(&sb);
    a_rollout_promotes_a_good_candidate_and_rolls_back_a_slow_one(&sb);
    the_monitoring_example_retrains_on_drift_and_rolls_the_new_model_out(&sb);

    let (code, second, stderr) = sb.run_json(&manifest, &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    for s in second["steps"].as_array().unwrap() {
        assert_eq!(s["cached"], true, "{s:#}");
    }

    // Raising the bar above the achieved accuracy skips only the export: the gate is
    // evaluated on cached outputs, the rest hits.
    let (code, third, _) = sb.run_json(&manifest, &["-p", "epochs=1", "-p", "min_accuracy=0.99"]);
    assert_eq!(code, 0);
    assert_eq!(step(&third, "export")["phase"], "Skipped");
    assert!(cached(&third, "train"));
}

#[test]
fn transfer_learning_example_fine_tunes_the_pretrained_network() {
    let sb = Sandbox::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/transfer-learning/pipeline.yaml")
        .canonicalize()
        .unwrap();
    // A smaller version of the example: 40 images per class at 64x64, one epoch per stage.
    let params = [
        "-p",
        "per_class=40",
        "-p",
        "size=64x64",
        "-p",
        "transfer_epochs=1",
        "-p",
        "finetune_epochs=1",
    ];
    let (code, run, stderr) = sb.run_json(&manifest, &params);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(run["phase"], "Succeeded");
    for name in ["transfer", "finetune", "evaluate"] {
        let accuracy: f64 = step(&run, name)["outputs"]["params"]["accuracy"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // Three classes: chance is 1/3.
        assert!(accuracy > 0.5, "{name}: accuracy {accuracy}");
    }
    assert_eq!(step(&run, "export")["phase"], "Succeeded");
}

/// The distributed-training example: its pipeline (ingest, a two-replica train step,
/// evaluate) and its TrainingJob, one epoch each on the real data.
#[test]
fn distributed_training_example_trains_with_two_replicas() {
    let _ = common::worker_bin();
    let sb = Sandbox::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/distributed-training")
        .canonicalize()
        .unwrap();
    let (code, run, stderr) = sb.run_json(&example.join("pipeline.yaml"), &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("train: 2 replicas started"), "{stderr}");
    let accuracy: f64 = step(&run, "evaluate")["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.85,
        "test accuracy {accuracy} after one epoch of two replicas"
    );

    // The job, on a dataset ingested beside it as its header says.
    let job = sb.write(
        "job/job.yaml",
        &std::fs::read_to_string(example.join("job.yaml")).unwrap(),
    );
    let ingest = std::process::Command::new("toucan-worker")
        .args([
            "ingest",
            "--source",
            "/usr/share/datasets/fashion-mnist",
            "--out",
        ])
        .arg(sb.path("job/dataset"))
        .env("PATH", common::step_path())
        .output()
        .unwrap();
    assert!(ingest.status.success(), "{ingest:?}");
    let (code, run, stderr) = sb.run_json(&job, &[]);
    assert_eq!(code, 0, "{stderr}");
    let val_accuracy: f64 = step(&run, "train")["outputs"]["params"]["val_accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(val_accuracy > 0.85, "validation accuracy {val_accuracy}");
}

/// `examples/serving/endpoint.yaml` serves the bundle the run exported: `toucan predict`
/// classifies real test images through the router, `get endpoints` and `describe endpoint`
/// report it while it serves, and Ctrl-C stops it.
fn the_serving_example_serves_the_exported_model(sb: &Sandbox) {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/serving/endpoint.yaml")
        .canonicalize()
        .unwrap();
    let images = test_images(sb, 8);
    let mut served = Served::start(sb, &manifest);
    let model = format!("{}/v1/models/fashion", served.url);
    let mut args = vec!["predict", model.as_str(), "-o", "json"];
    args.extend(images.iter().map(|(p, _)| p.to_str().unwrap()));
    let out = sb.run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), images.len());
    let right = rows
        .iter()
        .zip(&images)
        .filter(|(row, (_, label))| row["class"] == CLASSES[*label])
        .count();
    assert!(right >= 6, "{right} of 8 right: {rows:#?}");
    assert!(rows.iter().all(|r| r["version"] == "v1"), "{rows:#?}");

    let listed = eventually(Duration::from_secs(10), "the endpoint to be Ready", || {
        let out = sb.run(&["get", "endpoints", "-o", "json"]);
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (rows[0]["phase"] == "Ready").then_some(rows)
    });
    assert_eq!(listed[0]["name"], "fashion");
    assert_eq!(listed[0]["url"], served.url.as_str());
    assert_eq!(listed[0]["traffic"], "v1=100");
    let out = sb.run(&["describe", "endpoint", "fashion", "-o", "json"]);
    let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["serving"], true, "{detail:#}");
    assert_eq!(
        detail["stats"]["versions"]["v1"]["requests"], 1,
        "{detail:#}"
    );
    assert_eq!(
        detail["status"]["versions"][0]["readyReplicas"], 1,
        "{detail:#}"
    );

    assert!(served.interrupt().success());
    let out = sb.run(&["get", "endpoints", "-o", "json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows[0]["phase"], "Stopped");
}

/// Two versions of the same model at 50/50: both answer, each request's version comes back
/// in `x-toucan-version`, and every request (sampling rate 1) is stored as a payload sample
/// with its request id and the header named as a slice attribute.
fn an_endpoint_splits_its_traffic_and_records_samples(sb: &Sandbox) {
    let file = sb.write(
        "split.yaml",
        r#"
apiVersion: toucan.dev/v1alpha1
kind: Endpoint
metadata: {name: split}
spec:
  versions:
    - {name: a, model: {run: fashion-mnist, step: export, artifact: bundle}}
    - {name: b, model: {run: fashion-mnist, step: export, artifact: bundle}}
  traffic: [{version: a, weight: 50}, {version: b, weight: 50}]
  sampling: {rate: 1, attributes: [x-source]}
"#,
    );
    let images = test_images(sb, 1);
    let served = Served::start(sb, &file);
    let mut versions: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..40 {
        let id = format!("req-{i}");
        let (status, version, body) = predict(
            &served.url,
            "split",
            &images[0].0,
            &[("x-request-id", &id), ("x-source", "test")],
        );
        assert_eq!(status, 200, "{body}");
        *versions.entry(version.unwrap()).or_default() += 1;
    }
    // Binomial(40, 0.5): fewer than 8 either way has probability under 1e-4.
    assert!(versions["a"] >= 8 && versions["b"] >= 8, "{versions:?}");

    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.home().join("endpoints/split/endpoint.json")).unwrap(),
    )
    .unwrap();
    let api = state["api"].as_str().unwrap().to_string();
    let samples = eventually(Duration::from_secs(20), "40 payload samples", || {
        let samples = get_json(&format!("{api}/api/v1/endpoints/split/samples?limit=100"));
        (samples.as_array()?.len() == 40).then_some(samples)
    });
    for s in samples.as_array().unwrap() {
        let sample = &s["sample"];
        assert!(sample["requestId"].as_str().unwrap().starts_with("req-"));
        assert_eq!(sample["attributes"]["x-source"], "test", "{sample:#}");
        assert_eq!(sample["instances"][0]["stats"]["width"], 28, "{sample:#}");
        assert_eq!(sample["instances"][0]["class"], CLASSES[images[0].1]);
    }
}

/// Rollouts on the local runtime: a candidate whose gates hold moves through its steps to
/// Promoted and then takes every request; one that breaks its latency gate is rolled back at
/// its first step, and every request is answered all along.
fn a_rollout_promotes_a_good_candidate_and_rolls_back_a_slow_one(sb: &Sandbox) {
    let images = test_images(sb, 1);
    for (name, gate, outcome) in [
        ("good", "{metric: error_rate, max: 0.1}", "Promoted"),
        // The servers batch with a 5 ms window: no answer comes within 1 ms.
        ("slow", "{metric: latency_p99, max: 1ms}", "RolledBack"),
    ] {
        let file = sb.write(
            &format!("{name}.yaml"),
            &format!(
                r#"
apiVersion: toucan.dev/v1alpha1
kind: Endpoint
metadata: {{name: {name}}}
spec:
  versions:
    - {{name: stable, model: {{run: fashion-mnist, step: export, artifact: bundle}}}}
    - {{name: canary, model: {{run: fashion-mnist, step: export, artifact: bundle}}}}
  traffic: [{{version: stable, weight: 100}}]
  rollout:
    candidate: canary
    steps: [50, 100]
    interval: 1s
    minRequests: 5
    gates: [{gate}]
"#
            ),
        );
        let served = Served::start(sb, &file);
        let rollout = eventually(Duration::from_secs(60), outcome, || {
            for _ in 0..5 {
                let (status, _, body) = predict(&served.url, name, &images[0].0, &[]);
                assert_eq!(status, 200, "{name}: {body}");
            }
            let out = sb.run(&["describe", "endpoint", name, "-o", "json"]);
            let detail: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            let rollout = detail["status"]["rollout"].clone();
            (rollout["phase"] == outcome).then_some(rollout)
        });
        let (expected, weight) = match outcome {
            "Promoted" => ("canary", 100),
            _ => ("stable", 0),
        };
        assert_eq!(rollout["weight"], weight, "{name}: {rollout:#}");
        // The router re-reads its configuration within half a second of the decision.
        eventually(Duration::from_secs(5), "the router to follow", || {
            let stats = get_json(&format!("{}/router/v1/stats", served.url));
            (stats["versions"]["canary"]["weight"] == weight).then_some(())
        });
        for _ in 0..10 {
            let (_, version, _) = predict(&served.url, name, &images[0].0, &[]);
            assert_eq!(version.as_deref(), Some(expected), "{name}");
        }
    }
}

/// Sends each image as a request of `source` to endpoint `name`, waits until its payload
/// samples are stored, then labels them; every request must be answered. Returns how many
/// answers each version gave.
struct Traffic<'a> {
    served: &'a Served,
    name: &'a str,
    api: String,
    sent: usize,
}

impl Traffic<'_> {
    fn send(
        &mut self,
        images: &[(std::path::PathBuf, usize)],
        source: &str,
    ) -> BTreeMap<String, u32> {
        let mut versions = BTreeMap::new();
        let mut labels = Vec::new();
        for (path, label) in images {
            let id = format!("{}-{}", self.name, self.sent);
            self.sent += 1;
            let (status, version, body) = predict(
                &self.served.url,
                self.name,
                path,
                &[("x-request-id", &id), ("x-source", source)],
            );
            assert_eq!(status, 200, "{body}\n{}", self.served.stderr());
            *versions.entry(version.unwrap_or_default()).or_default() += 1;
            labels.push(serde_json::json!({"requestId": id, "label": CLASSES[*label]}));
        }
        // Labels of requests whose samples are not stored yet would be counted unknown.
        let sent = self.sent;
        let ours = format!("{}-", self.name);
        eventually(Duration::from_secs(20), "the samples to be stored", || {
            let url = format!(
                "{}/api/v1/endpoints/{}/samples?limit=10000",
                self.api, self.name
            );
            let stored = get_json(&url)
                .as_array()?
                .iter()
                .filter(|s| {
                    s["sample"]["requestId"]
                        .as_str()
                        .is_some_and(|id| id.starts_with(&ours))
                })
                .count();
            (stored >= sent).then_some(())
        });
        let stored = post_json(
            &format!("{}/api/v1/endpoints/{}/labels", self.api, self.name),
            &serde_json::json!({ "labels": labels }),
        );
        assert_eq!(stored["unknown"], 0, "{stored}");
        versions
    }

    fn alerts(&self, sb: &Sandbox) -> Vec<serde_json::Value> {
        let out = sb.run(&["get", "alerts", self.name, "-o", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// `examples/monitoring/`: the loop on the local runtime. Requests like the training data
/// raise no alert; brightened ones raise a drift alert, which starts a retraining run (the
/// fashion pipeline again, as a linear model); its model is rolled out against the serving
/// one behind an accuracy gate on live labels and promoted, and every request is answered all
/// along. The same loop with a gate asking for an improvement no retrained model shows rolls
/// the candidate back.
fn the_monitoring_example_retrains_on_drift_and_rolls_the_new_model_out(sb: &Sandbox) {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/monitoring/endpoint.yaml")
        .canonicalize()
        .unwrap();
    let text = std::fs::read_to_string(&example).unwrap();
    let strict = sb.write(
        "strict.yaml",
        &text
            .replace("name: fashion-monitored", "name: fashion-strict")
            .replace("minDelta: -0.1", "minDelta: 0.2"),
    );
    let normal = test_images(sb, 200);
    let bright = brightened(sb, &normal[..80]);
    // The two endpoints side by side: most of the time goes to waiting on passes.
    std::thread::scope(|scope| {
        let runs = [
            (example.as_path(), "fashion-monitored", "promoted"),
            (strict.as_path(), "fashion-strict", "rolled back"),
        ]
        .map(|(file, name, outcome)| {
            let (normal, bright) = (&normal, &bright);
            scope.spawn(move || monitoring_loop(sb, file, name, outcome, normal, bright))
        });
        for run in runs {
            if let Err(panic) = run.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}

/// Runs `f` on the sandbox's local store.
fn local_store<T, F: std::future::Future<Output = T>>(
    sb: &Sandbox,
    f: impl FnOnce(std::sync::Arc<dyn toucan_store::metadata::MetadataStore>) -> F,
) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        std::fs::create_dir_all(sb.home()).unwrap();
        let path = sb.home().join("toucan.db");
        f(toucan_store::metadata::open(&path.to_string_lossy())
            .await
            .unwrap())
        .await
    })
}

/// A sample of endpoint `name` stored eight days ago; returns when.
fn seed_past_retention(sb: &Sandbox, name: &str) -> i64 {
    let then = toucan_core::time::now_ms() - 8 * 24 * 3_600_000;
    let sample: toucan_core::serving::PayloadSample = serde_json::from_value(serde_json::json!({
        "requestId": "old", "model": name, "version": "v1",
        "receivedAt": toucan_core::time::rfc3339(then).unwrap(), "protocol": "v1",
        "latencyMs": 1.0,
        "instances": [{"stats": {"width": 28, "height": 28, "channels": 1, "brightness": 0.3,
                                 "contrast": 0.2, "channelMeans": [0.3], "sharpness": 0.01},
                       "label": 0, "class": CLASSES[0], "probabilities": [0.9, 0.1]}],
    }))
    .unwrap();
    local_store(sb, |store| async move {
        store.put_samples(name, &[sample], then).await.unwrap();
    });
    then
}

/// One endpoint of the monitoring example's test: normal requests, brightened ones, the
/// retraining and the rollout's `outcome`.
fn monitoring_loop(
    sb: &Sandbox,
    file: &std::path::Path,
    name: &str,
    outcome: &str,
    normal: &[(std::path::PathBuf, usize)],
    bright: &[(std::path::PathBuf, usize)],
) {
    {
        let past_retention = seed_past_retention(sb, name);
        let served = Served::start(sb, file);
        // The status is written on the loop's first pass after the URL is printed.
        let state: serde_json::Value =
            eventually(Duration::from_secs(10), "the endpoint's status", || {
                let path = sb.home().join(format!("endpoints/{name}/endpoint.json"));
                serde_json::from_slice(&std::fs::read(path).ok()?).ok()
            });
        let mut traffic = Traffic {
            served: &served,
            name,
            api: state["api"].as_str().unwrap().to_string(),
            sent: 0,
        };

        // Like the training data: gauges, no alert.
        traffic.send(&normal[..60], "web");
        let metrics = eventually(Duration::from_secs(60), "the evaluation gauges", || {
            let text = ureq::get(format!("{}/metrics", traffic.api))
                .call()
                .ok()?
                .body_mut()
                .read_to_string()
                .ok()?;
            text.contains(&format!(
                "toucan_endpoint_evaluation_samples{{namespace=\"default\",endpoint=\"{name}\",version=\"v1\",slice=\"all\"}}"
            ))
            .then_some(text)
        });
        let brightness = format!(
            "toucan_endpoint_drift_detected{{namespace=\"default\",endpoint=\"{name}\",slice=\"all\",feature=\"brightness\",test=\"ks\"}} 0"
        );
        assert!(metrics.contains(&brightness), "{metrics}");
        assert!(traffic.alerts(sb).is_empty(), "{:#?}", traffic.alerts(sb));
        // The first pass deleted what was older than the retention (a week).
        let left = local_store(sb, |store| async move {
            store
                .list_samples(name, 0, 1_000)
                .await
                .unwrap()
                .into_iter()
                .filter(|s| s.stored_at <= past_retention)
                .count()
        });
        assert_eq!(
            left, 0,
            "{name}: samples past the retention are still there"
        );

        // Prometheus scrapes the local API and evaluates the endpoint's rule file; its
        // alerts reach the local API through Alertmanager's webhook.
        let wired = if name == "fashion-monitored" {
            let rules =
                std::fs::read_to_string(sb.home().join(format!("endpoints/{name}/rules.yaml")))
                    .unwrap();
            toucan_test_harness::alerting::Wired::wire(
                name,
                traffic.api.trim_start_matches("http://"),
                &rules,
                &format!("{}/api/v1/alertmanager", traffic.api),
                None,
            )
            .unwrap()
        } else {
            None
        };

        // Brightened: a drift alert, and a retraining run.
        traffic.send(bright, "mobile");
        let alert = eventually(
            Duration::from_secs(30),
            "a drift alert to start a run",
            || {
                traffic
                    .alerts(sb)
                    .into_iter()
                    .find(|a| a["key"] == "drift/all" && a["run"].is_string())
            },
        );
        assert_eq!(alert["kind"], "drift", "{alert:#}");
        assert!(
            alert["summary"].as_str().unwrap().contains("brightness"),
            "{alert:#}"
        );
        let run = alert["run"].as_str().unwrap().to_string();

        // The run's model is rolled out under live labels until the rollout ends.
        let mut answered: BTreeMap<String, u32> = BTreeMap::new();
        let mut round = 0;
        let done = eventually(
            Duration::from_secs(300),
            "the retrained model's rollout to end",
            || {
                let start = (round * 20) % 180;
                round += 1;
                for (version, n) in traffic.send(&normal[start..start + 20], "web") {
                    *answered.entry(version).or_default() += n;
                }
                traffic
                    .alerts(sb)
                    .into_iter()
                    .find(|a| a["run"] == run.as_str())
                    .filter(|a| {
                        a["action"]
                            .as_str()
                            .is_some_and(|t| t.contains("promoted") || t.contains("rolled back"))
                    })
            },
        );
        let action = done["action"].as_str().unwrap();
        assert!(
            action.contains(outcome),
            "{name}: {action}\n{}",
            served.stderr()
        );
        let out = sb.run(&["get", "runs", "-o", "json"]);
        let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let retrain = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["run"] == run.as_str())
            .unwrap_or_else(|| panic!("no run {run} in {runs:#}"));
        assert_eq!(retrain["phase"], "Succeeded", "{retrain:#}");
        // The labelled requests of the alert's window (images recorded with `inputs: true`)
        // joined the retraining run's training data.
        let out = sb.run(&["logs", &run, "train"]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let added = log
            .lines()
            .find_map(|l| {
                l.strip_prefix("toucan-worker train: ")?
                    .split_once(" records of ")?
                    .0
                    .parse::<u32>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("{name}: no production records in the retraining:\n{log}"));
        assert!(added > 0, "{name}: {log}");
        let candidate: Vec<&String> = answered.keys().filter(|v| *v != "v1").collect();
        assert_eq!(candidate.len(), 1, "{answered:?}");
        let out = sb.run(&["describe", "endpoint", name, "-o", "json"]);
        let detail: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let versions: Vec<&str> = detail["status"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        let kept = if outcome == "promoted" {
            candidate[0].as_str()
        } else {
            "v1"
        };
        assert_eq!(versions, [kept], "{name}: {detail:#}");
        if wired.is_some() {
            // Alertmanager's notification is an alert of its own, a retraining trigger that
            // the endpoint's own alert has already acted on.
            let external = eventually(
                Duration::from_secs(60),
                "Alertmanager's drift alert",
                || {
                    traffic.alerts(sb).into_iter().find(|a| {
                        a["key"]
                            .as_str()
                            .is_some_and(|k| k.starts_with("alertmanager/"))
                            && a["kind"] == "drift"
                            && a["action"].is_string()
                    })
                },
            );
            let action = external["action"].as_str().unwrap();
            assert!(action.starts_with("held ("), "{external:#}");
        }
        drop(wired);
        if name == "fashion-monitored" {
            the_scheduled_evaluation_scores_through_the_endpoint(sb, &traffic);
        }
        let text = sb.run(&["describe", "endpoint", name]);
        let text = String::from_utf8_lossy(&text.stdout);
        assert!(text.contains("Alerts:") && text.contains(outcome), "{text}");
        let kept = kept.to_string();
        drop(served);

        // Served again from the same manifest, which names v1: the version the loop kept.
        let again = Served::start(sb, file);
        let id = format!("{name}-again");
        let (status, version, body) =
            predict(&again.url, name, &normal[0].0, &[("x-request-id", &id)]);
        assert_eq!(status, 200, "{body}\n{}", again.stderr());
        assert_eq!(
            version.as_deref(),
            Some(kept.as_str()),
            "{name}: {}",
            again.stderr()
        );
    }
}

/// `examples/monitoring/scheduled-evaluation.yaml` against the served endpoint: its score
/// step sends a labelled set through the endpoint and labels every request, which the
/// endpoint's samples and evaluation then hold.
fn the_scheduled_evaluation_scores_through_the_endpoint(sb: &Sandbox, traffic: &Traffic<'_>) {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/monitoring/scheduled-evaluation.yaml")
        .canonicalize()
        .unwrap();
    let url = format!("url={}/v1/models/{}", traffic.served.url, traffic.name);
    let (code, run, stderr) = sb.run_json(&manifest, &["-p", url.as_str(), "-p", "per_class=5"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(cached(&run, "ingest"), "{run:#}");
    let samples = get_json(&format!(
        "{}/api/v1/endpoints/{}/samples?limit=10000",
        traffic.api, traffic.name
    ));
    let scored = samples
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["sample"]["requestId"]
                .as_str()
                .is_some_and(|id| id.contains("-scored-"))
        })
        .count();
    assert_eq!(scored, 50);
}
