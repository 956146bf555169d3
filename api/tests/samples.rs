//! Payload samples through the API: an endpoint's server pods ship batches, a batch shipped
//! twice is stored once, nobody else writes for the endpoint, and readers of its namespace read
//! them back.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{app, send};

use async_trait::async_trait;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use toucan_api::{Anyone, AuthError, Authenticator, Principal};

/// `server:NS:ENDPOINT` is a model server pod of that endpoint, `reader` may read namespace
/// `prod`, `stranger` nothing, `step` is a pipeline step pod.
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
            ["step"] => Ok(Principal::Step {
                run_id: "r".into(),
                node: "n".into(),
            }),
            [name @ ("reader" | "stranger")] => Ok(Principal::Reader {
                name: name.to_string(),
                groups: Vec::new(),
            }),
            _ => Err(AuthError::Rejected("unknown token".into())),
        }
    }

    async fn may_read(&self, principal: &Principal, key: &str) -> Result<bool, AuthError> {
        Ok(
            matches!(principal, Principal::Reader { name, .. } if name == "reader")
                && key.starts_with("prod/"),
        )
    }
}

fn sample(request_id: &str, version: &str) -> Value {
    json!({
        "requestId": request_id,
        "model": "fashion",
        "version": version,
        "receivedAt": "2026-12-05T18:00:00Z",
        "protocol": "v2",
        "latencyMs": 2.5,
        "instances": [{
            "stats": {"width": 28, "height": 28, "channels": 1, "brightness": 0.3,
                      "contrast": 0.2, "channelMeans": [0.3], "sharpness": 0.04},
            "label": 3, "class": "Dress", "probabilities": [0.1, 0.9]
        }]
    })
}

fn batch(samples: &[Value]) -> Option<String> {
    Some(json!({ "samples": samples }).to_string())
}

const PATH: &str = "/api/v1/endpoints/fashion/samples";

#[tokio::test]
async fn a_server_ships_batches_stored_once_and_readers_of_its_namespace_read_them() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Tokens)).await;
    let server = "server:prod:fashion";
    let first = batch(&[sample("a", "v1"), sample("b", "v2")]);
    let (status, body) = send(&app, Method::POST, PATH, server, first.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"added": 2, "duplicates": 0}));
    // The same shipment retried, with one new sample.
    let again = batch(&[sample("b", "v2"), sample("c", "v1")]);
    let (_, body) = send(&app, Method::POST, PATH, server, again).await;
    assert_eq!(body, json!({"added": 1, "duplicates": 1}));
    let stored = store.list_samples("prod/fashion", 0, 10).await.unwrap();
    let ids: Vec<&str> = stored
        .iter()
        .map(|s| s.sample.request_id.as_str())
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);

    let read = format!("{PATH}?namespace=prod&limit=2");
    let (status, body) = send(&app, Method::GET, &read, "reader", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.as_array().unwrap().len(), 2);
    assert_eq!(body[0]["sample"]["requestId"], "a");
    assert_eq!(body[0]["endpoint"], "prod/fashion");
    let (status, _) = send(&app, Method::GET, &read, "stranger", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn only_the_endpoints_own_servers_write_and_bad_batches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Tokens)).await;
    let one = batch(&[sample("a", "v1")]);
    for token in ["server:prod:other", "reader", "step"] {
        let (status, body) = send(&app, Method::POST, PATH, token, one.clone()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{token}: {body}");
    }
    let (status, _) = send(&app, Method::POST, PATH, "nobody", one).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let server = "server:prod:fashion";
    let (status, _) = send(&app, Method::POST, PATH, server, Some("{".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let missing = batch(&[json!({"requestId": "x"})]);
    let (status, _) = send(&app, Method::POST, PATH, server, missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let many: Vec<Value> = (0..1001).map(|i| sample(&i.to_string(), "v1")).collect();
    let (status, body) = send(&app, Method::POST, PATH, server, batch(&many)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1001"), "{body}");
    assert!(
        store
            .list_samples("prod/fashion", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn locally_samples_are_kept_under_the_endpoints_name() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Anyone)).await;
    let (status, _) = send(&app, Method::POST, PATH, "", batch(&[sample("a", "v1")])).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(store.list_samples("fashion", 0, 10).await.unwrap().len(), 1);
    let (_, body) = send(&app, Method::GET, PATH, "", None).await;
    assert_eq!(body[0]["sample"]["version"], "v1");
}
