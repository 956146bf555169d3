//! Label feedback through the API: labels join their samples by request id, idempotently,
//! corrections replace, unknown request ids are counted; a bad label refuses the whole batch
//! with its field path; only namespace writers and pipeline steps of the namespace write; and
//! the evaluation reads back the windowed metrics.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{app, send_json as send};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use toucan_api::{Anyone, AuthError, Authenticator, Principal};
use toucan_core::records::{Phase, RunRecord};
use toucan_core::serving::{InputStats, PayloadSample, SampledInstance};
use toucan_core::time::{now_ms, rfc3339};
use toucan_store::metadata::MetadataStore;

/// `writer` writes and reads namespace `prod`, `reader` only reads it, `stranger` nothing;
/// `step:RUN` is a step pod of run RUN; `server:NS:NAME` a model server.
#[derive(Debug)]
struct Tokens;

#[async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let parts: Vec<&str> = token.ok_or(AuthError::Missing)?.split(':').collect();
        match parts.as_slice() {
            ["server", namespace, endpoint] => Ok(Principal::Server {
                namespace: namespace.to_string(),
                endpoint: endpoint.to_string(),
            }),
            ["step", run] => Ok(Principal::Step {
                run_id: run.to_string(),
                node: "label".into(),
            }),
            [name @ ("writer" | "reader" | "stranger")] => Ok(Principal::Reader {
                name: name.to_string(),
                groups: Vec::new(),
            }),
            _ => Err(AuthError::Rejected("unknown token".into())),
        }
    }

    async fn may_read(&self, principal: &Principal, key: &str) -> Result<bool, AuthError> {
        Ok(matches!(principal, Principal::Reader { name, .. }
                if name == "reader" || name == "writer")
            && key.starts_with("prod/"))
    }

    async fn may_label(&self, principal: &Principal, key: &str) -> Result<bool, AuthError> {
        Ok(
            matches!(principal, Principal::Reader { name, .. } if name == "writer")
                && key.starts_with("prod/"),
        )
    }
}

const CLASSES: [&str; 3] = ["T-shirt", "Trouser", "Dress"];

/// A sample received `at`, predicting `predicted` with probability 0.8.
fn sample(request_id: &str, version: &str, predicted: usize, at: i64) -> PayloadSample {
    let mut probabilities = vec![0.1f32; 3];
    probabilities[predicted] = 0.8;
    PayloadSample {
        request_id: request_id.into(),
        model: "fashion".into(),
        version: version.into(),
        received_at: rfc3339(at).unwrap(),
        protocol: "v2".into(),
        latency_ms: 2.0,
        instances: vec![SampledInstance {
            stats: InputStats {
                width: 28,
                height: 28,
                channels: 1,
                brightness: 0.3,
                contrast: 0.2,
                channel_means: vec![0.3],
                sharpness: 0.04,
            },
            input: None,
            embedding: None,
            label: predicted as i64,
            class: CLASSES[predicted].into(),
            probabilities,
        }],
        attributes: BTreeMap::from([("x-source".into(), "app".into())]),
    }
}

/// Samples of every class for `key`, received an hour ago.
async fn seed(store: &Arc<dyn MetadataStore>, key: &str) -> i64 {
    let at = now_ms() - 3_600_000;
    let samples: Vec<PayloadSample> = (0..6)
        .map(|i| sample(&format!("r{i}"), if i < 3 { "v1" } else { "v2" }, i % 3, at))
        .collect();
    store.put_samples(key, &samples, at).await.unwrap();
    at
}

fn labels(entries: &[(&str, &str)]) -> Option<Value> {
    let labels: Vec<Value> = entries
        .iter()
        .map(|(id, label)| json!({"requestId": id, "label": label}))
        .collect();
    Some(json!({ "labels": labels }))
}

const LABELS: &str = "/api/v1/endpoints/fashion/labels";

#[tokio::test]
async fn labels_are_idempotent_corrections_replace_and_unknown_ids_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Anyone)).await;
    seed(&store, "fashion").await;

    let first = labels(&[("r0", "T-shirt"), ("r1", "Dress"), ("gone", "Dress")]);
    let (status, body) = send(&app, Method::POST, LABELS, "", first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"added": 2, "updated": 0, "unchanged": 0, "unknown": 1})
    );
    let (_, body) = send(&app, Method::POST, LABELS, "", first).await;
    assert_eq!(
        body,
        json!({"added": 0, "updated": 0, "unchanged": 2, "unknown": 1})
    );
    let (_, body) = send(&app, Method::POST, LABELS, "", labels(&[("r1", "Trouser")])).await;
    assert_eq!(
        body,
        json!({"added": 0, "updated": 1, "unchanged": 0, "unknown": 0})
    );
    let joined = store
        .list_labelled_samples("fashion", 0..i64::MAX, 10)
        .await
        .unwrap();
    let r1 = joined
        .iter()
        .find(|s| s.sample.sample.request_id == "r1")
        .unwrap();
    assert_eq!(r1.label.as_ref().unwrap().label, "Trouser");
}

#[tokio::test]
async fn a_bad_label_refuses_the_batch_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Anyone)).await;
    seed(&store, "fashion").await;

    let cases = [
        (
            json!({"labels": [{"requestId": "r0", "label": "Dress"},
                              {"requestId": "r1", "label": 3}]}),
            "labels[1].label: expected a string, got a number",
        ),
        (
            json!({"labels": [{"requestId": "r0", "label": "Dress"},
                              {"requestId": "r1", "label": "Sandal"}]}),
            "labels[1].label: \"Sandal\" is not a class of the model",
        ),
        (
            json!({"labels": [{"label": "Dress"}]}),
            "labels[0].requestId: missing",
        ),
        (
            json!({"labels": [{"requestId": "r0", "label": "Dress", "labelledAt": "soon"}]}),
            "labels[0].labelledAt:",
        ),
        (
            json!({"labels": {"r0": "Dress"}}),
            "labels: expected an array",
        ),
        (json!({"label": []}), "labels: missing"),
    ];
    for (body, expected) in cases {
        let (status, answer) = send(&app, Method::POST, LABELS, "", Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{body}: {error}");
    }
    // Nothing of any refused batch was stored.
    let joined = store
        .list_labelled_samples("fashion", 0..i64::MAX, 10)
        .await
        .unwrap();
    assert!(joined.iter().all(|s| s.label.is_none()));

    let too_many: Vec<(String, &str)> = (0..1001).map(|i| (format!("r{i}"), "Dress")).collect();
    let entries: Vec<(&str, &str)> = too_many.iter().map(|(id, l)| (id.as_str(), *l)).collect();
    let (status, _) = send(&app, Method::POST, LABELS, "", labels(&entries)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn namespace_writers_and_its_pipeline_steps_may_label_no_one_else() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Tokens)).await;
    seed(&store, "prod/fashion").await;
    for (id, pipeline) in [("run-prod", "prod/retrain"), ("run-dev", "dev/retrain")] {
        store
            .create_run(&RunRecord {
                id: id.into(),
                pipeline: pipeline.into(),
                phase: Phase::Running,
                params: json!({}),
                spec: json!({}),
                created_at: 1,
                finished_at: None,
                message: None,
            })
            .await
            .unwrap();
    }
    let uri = format!("{LABELS}?namespace=prod");
    let body = labels(&[("r0", "T-shirt")]);
    for (token, expected) in [
        ("writer", StatusCode::OK),
        ("step:run-prod", StatusCode::OK),
        ("step:run-dev", StatusCode::FORBIDDEN),
        ("step:no-such-run", StatusCode::FORBIDDEN),
        ("reader", StatusCode::FORBIDDEN),
        ("server:prod:fashion", StatusCode::FORBIDDEN),
        ("stranger", StatusCode::FORBIDDEN),
        ("nobody", StatusCode::UNAUTHORIZED),
    ] {
        let (status, answer) = send(&app, Method::POST, &uri, token, body.clone()).await;
        assert_eq!(status, expected, "{token}: {answer}");
    }
    // A writer of prod is no writer of dev.
    let (status, _) = send(
        &app,
        Method::POST,
        &format!("{LABELS}?namespace=dev"),
        "writer",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_evaluation_reads_back_windowed_metrics_per_version_and_slice() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Tokens)).await;
    let at = seed(&store, "prod/fashion").await;
    // v1 (r0..r2) all right; v2: r3 right, r4 and r5 wrong.
    let body = labels(&[
        ("r0", "T-shirt"),
        ("r1", "Trouser"),
        ("r2", "Dress"),
        ("r3", "T-shirt"),
        ("r4", "Dress"),
        ("r5", "T-shirt"),
    ]);
    let (status, answer) = send(
        &app,
        Method::POST,
        &format!("{LABELS}?namespace=prod"),
        "writer",
        body,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");

    let uri = format!(
        "/api/v1/endpoints/fashion/evaluation?namespace=prod&window=1h&since={}&slice=header.x-source",
        at - 1
    );
    let (status, report) = send(&app, Method::GET, &uri, "reader", None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["classes"], json!(CLASSES));
    assert_eq!(report["coverage"]["labelled"], 6);
    let window = &report["windows"][0];
    let group = |version: Value, slice: Value| {
        window["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["version"] == version && g["sliceValue"] == slice)
            .unwrap_or_else(|| panic!("no group {version} {slice}"))
            .clone()
    };
    let all = group(Value::Null, Value::Null);
    assert_eq!(all["metrics"]["accuracy"]["value"], 4.0 / 6.0);
    assert_eq!(
        group(json!("v1"), Value::Null)["metrics"]["accuracy"]["value"],
        1.0
    );
    let v2 = group(json!("v2"), Value::Null)["metrics"]["accuracy"]["value"]
        .as_f64()
        .unwrap();
    assert!((v2 - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(group(Value::Null, json!("app"))["coverage"]["labelled"], 6);
    let accuracy = &all["metrics"]["accuracy"];
    assert!(accuracy["lower"].as_f64().unwrap() < 4.0 / 6.0);
    assert!(accuracy["upper"].as_f64().unwrap() > 4.0 / 6.0);

    // Everything was read: the report is whole. Read up to a limit, it says where it is not.
    assert!(report.get("partialThrough").is_none(), "{report}");
    let (_, partial) = send(&app, Method::GET, &format!("{uri}&limit=4"), "reader", None).await;
    assert_eq!(partial["coverage"]["labelled"], 4, "{partial}");
    let oldest_read = store
        .list_labelled_samples("prod/fashion", 0..i64::MAX, 4)
        .await
        .unwrap()[0]
        .sample
        .stored_at;
    assert_eq!(partial["partialThrough"], oldest_read, "{partial}");
    let (status, answer) = send(&app, Method::GET, &format!("{uri}&limit=0"), "reader", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"].as_str().unwrap().starts_with("limit:"),
        "{answer}"
    );

    // A maturity longer than the samples' age leaves them all pending.
    let (_, pending) = send(
        &app,
        Method::GET,
        &format!("{uri}&maturity=2h"),
        "reader",
        None,
    )
    .await;
    assert_eq!(pending["coverage"]["pending"], 6);
    assert!(pending["windows"][0]["groups"][0]["metrics"].is_null());

    // Bad options name themselves; strangers see no endpoint.
    let (status, answer) = send(
        &app,
        Method::GET,
        &uri.replace("window=1h", "window=soon"),
        "reader",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"].as_str().unwrap().starts_with("window:"),
        "{answer}"
    );
    let (status, answer) = send(
        &app,
        Method::GET,
        &format!("{uri}&halfLife=0"),
        "reader",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer["error"].as_str().unwrap().starts_with("halfLife:"),
        "{answer}"
    );
    let (status, _) = send(&app, Method::GET, &uri, "stranger", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
