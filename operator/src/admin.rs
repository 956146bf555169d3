//! The admin server: `/metrics` (Prometheus text format), `/livez` and `/readyz`.
//!
//! `/readyz` answers 200 only once [`Readiness`] says so: the API server is serving and, on the
//! leader, every watch the controllers use has synced its first list.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

/// Whether this replica is ready to serve.
#[derive(Debug, Default)]
pub struct Readiness {
    api: AtomicBool,
    pods: AtomicBool,
    runs: AtomicBool,
}

impl Readiness {
    pub fn api_serving(&self) {
        self.api.store(true, Ordering::Release);
    }
    /// The pod watch delivered its first full list.
    pub fn pods_synced(&self) {
        self.pods.store(true, Ordering::Release);
    }
    /// The PipelineRun watch delivered its first full list.
    pub fn runs_synced(&self) {
        self.runs.store(true, Ordering::Release);
    }
    /// A standby replica watches nothing: serving the API is all it does.
    pub fn standby(&self) {
        self.pods_synced();
        self.runs_synced();
    }
    pub fn is_ready(&self) -> bool {
        [&self.api, &self.pods, &self.runs]
            .iter()
            .all(|flag| flag.load(Ordering::Acquire))
    }
}

#[derive(Clone, Debug)]
struct AdminState {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

pub fn router(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(AdminState { metrics, readiness })
}

/// Serves the admin routes on `addr` until the process ends.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "admin server listening");
    axum::serve(listener, router(metrics, readiness)).await
}

async fn metrics_text(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}
