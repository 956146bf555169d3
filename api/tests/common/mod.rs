//! What the API's tests share: an app over a fresh SQLite store, and one request through it.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::Value;
use tower::ServiceExt;

use toucan_api::{ApiState, Authenticator, GaugeBoard, router};
use toucan_store::metadata::{MetadataStore, SqliteStore};

/// The API over a new SQLite store in `dir`, with `auth`; the store too.
pub async fn app(
    dir: &std::path::Path,
    auth: Arc<dyn Authenticator>,
) -> (axum::Router, Arc<dyn MetadataStore>) {
    app_with_gauges(dir, auth, None).await
}

/// [`app`], exporting the gauges of `gauges` on `/metrics`.
pub async fn app_with_gauges(
    dir: &std::path::Path,
    auth: Arc<dyn Authenticator>,
    gauges: Option<Arc<GaugeBoard>>,
) -> (axum::Router, Arc<dyn MetadataStore>) {
    let store: Arc<dyn MetadataStore> =
        Arc::new(SqliteStore::open(&dir.join("toucan.db")).await.unwrap());
    let app = router(ApiState {
        store: store.clone(),
        auth,
        reports: None,
        gauges,
    });
    (app, store)
}

/// One request with the bearer `token` and a JSON `body` (sent as given); the status and the
/// body, as JSON when it is, else as a string.
pub async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map_or_else(Body::empty, Body::from);
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// [`send`] with a JSON value.
pub async fn send_json(
    app: &axum::Router,
    method: Method,
    uri: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    send(app, method, uri, token, body.map(|b| b.to_string())).await
}
