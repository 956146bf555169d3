//! `toucan label ENDPOINT FILE.csv`: labels from a CSV reach the local store, or a
//! control-plane API; counts are printed; a bad file or a label of no class is refused with
//! the file, row and column, and nothing is stored.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::Arc;

use common::{Sandbox, toucan_bin};
use serde_json::{Value, json};
use toucan_core::serving::{InputStats, PayloadSample, SampledInstance};
use toucan_store::metadata::{MetadataStore, SqliteStore};

const CLASSES: [&str; 2] = ["T-shirt", "Trouser"];

fn sample(request_id: &str, predicted: usize) -> PayloadSample {
    let mut probabilities = vec![0.2f32; 2];
    probabilities[predicted] = 0.8;
    PayloadSample {
        request_id: request_id.into(),
        model: "fashion".into(),
        version: "v1".into(),
        received_at: "2026-12-05T18:00:00Z".into(),
        protocol: "v1".into(),
        latency_ms: 1.0,
        instances: vec![SampledInstance {
            stats: InputStats {
                width: 28,
                height: 28,
                channels: 1,
                brightness: 0.3,
                contrast: 0.2,
                channel_means: vec![0.3],
                sharpness: 0.01,
            },
            input: None,
            embedding: None,
            label: predicted as i64,
            class: CLASSES[predicted].into(),
            probabilities,
        }],
        attributes: BTreeMap::new(),
    }
}

/// The sandbox's local store, with samples r0 (T-shirt) and r1 (Trouser) of `fashion`.
async fn seeded_store(sandbox: &Sandbox) -> Arc<dyn MetadataStore> {
    std::fs::create_dir_all(sandbox.home()).unwrap();
    let store = SqliteStore::open(&sandbox.home().join("toucan.db"))
        .await
        .unwrap();
    store
        .put_samples("fashion", &[sample("r0", 0), sample("r1", 1)], 1_000)
        .await
        .unwrap();
    Arc::new(store)
}

fn label(sandbox: &Sandbox, args: &[&str]) -> Output {
    Command::new(toucan_bin())
        .arg("label")
        .args(args)
        .env("TOUCAN_HOME", sandbox.home())
        .env_remove("TOUCAN_DATABASE_URL")
        .env_remove("TOUCAN_API_TOKEN")
        .current_dir(sandbox.dir.path())
        .output()
        .unwrap()
}

fn counts(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn stored_labels(store: &Arc<dyn MetadataStore>, key: &str) -> Vec<Option<String>> {
    store
        .list_labelled_samples(key, 0..i64::MAX, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.label.map(|l| l.label))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_reach_the_local_store_idempotently() {
    let sandbox = Sandbox::new();
    let store = seeded_store(&sandbox).await;
    let csv = sandbox.write(
        "labels.csv",
        "request_id,label,note\nr0,T-shirt,x\nr1,T-shirt,y\nnope,Trouser,z\n",
    );
    let csv = csv.to_str().unwrap();
    let out = label(&sandbox, &["fashion", csv, "-o", "json"]);
    assert_eq!(
        counts(&out),
        json!({"added": 2, "updated": 0, "unchanged": 0, "unknown": 1})
    );
    assert_eq!(
        stored_labels(&store, "fashion").await,
        [Some("T-shirt".to_string()), Some("T-shirt".to_string())]
    );
    // Again, with a correction, in the API's column spelling: the table names the counts.
    let fixed = sandbox.write("fixed.csv", "requestId,label\nr0,T-shirt\nr1,Trouser\n");
    let out = label(&sandbox, &["fashion", fixed.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains("UPDATED") && table.contains("UNCHANGED"),
        "{table}"
    );
    assert_eq!(
        stored_labels(&store, "fashion").await,
        [Some("T-shirt".to_string()), Some("Trouser".to_string())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_unknown_classes_name_the_row_and_store_nothing() {
    let sandbox = Sandbox::new();
    let store = seeded_store(&sandbox).await;
    for (name, text, expected) in [
        (
            "no-label.csv",
            "request_id,class\nr0,T-shirt\n",
            "row 1: no label column",
        ),
        (
            "empty.csv",
            "request_id,label\nr0,T-shirt\nr1,\n",
            "row 3, column label: empty",
        ),
        (
            "ragged.csv",
            "request_id,label\nr0,T-shirt\nr1,Trouser,extra\n",
            "row 3",
        ),
        (
            "late.csv",
            "request_id,label,labelled_at\nr0,T-shirt,yesterday\n",
            "row 2, column labelled_at",
        ),
        (
            "class.csv",
            "request_id,label\nr0,T-shirt\nr1,Sandal\n",
            "row 3, column label: \"Sandal\" is not a class of the model",
        ),
    ] {
        let path = sandbox.write(name, text);
        let out = label(&sandbox, &["fashion", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("{}: ", path.display())),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(expected), "{name}: {stderr}");
    }
    assert_eq!(stored_labels(&store, "fashion").await, [None, None]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_go_to_the_api_named() {
    let sandbox = Sandbox::new();
    let store = seeded_store(&sandbox).await;
    let app = toucan_api::router(toucan_api::ApiState {
        store: store.clone(),
        auth: Arc::new(toucan_api::Anyone),
        reports: None,
        gauges: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The local store is another file: the API's store must be the one written.
    let other = Sandbox::new();
    let csv = sandbox.write("labels.csv", "request_id,label\nr0,Trouser\nr9,T-shirt\n");
    let csv = csv.to_str().unwrap();
    let out = label(&other, &["fashion", csv, "--api", &api, "-o", "json"]);
    assert_eq!(
        counts(&out),
        json!({"added": 1, "updated": 0, "unchanged": 0, "unknown": 1})
    );
    assert_eq!(
        stored_labels(&store, "fashion").await,
        [Some("Trouser".to_string()), None]
    );
    // The API's refusal is reported with the row it concerns.
    let bad = sandbox.write("bad.csv", "request_id,label\nr0,T-shirt\nr1,Sandal\n");
    let out = label(&other, &["fashion", bad.to_str().unwrap(), "--api", &api]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("row 3, labels[1].label"), "{stderr}");
    assert_eq!(
        stored_labels(&store, "fashion").await,
        [Some("Trouser".to_string()), None]
    );
}
