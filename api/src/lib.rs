//! toucan-api: the control-plane HTTP API, one axum router for the operator and the local
//! runtime.
//!
//! Steps write through it: the launcher `PUT`s its report of each attempt, and commands such
//! as `toucan-worker train` `PUT` their metric series (idempotent: the whole series replaces
//! what was there, keyed by run and node). Both land in the metadata store as run documents,
//! and every accepted report is announced on [`ApiState::reports`] so the runtime that waits
//! for it reacts at once. The CLI and dashboards read runs, steps, attempts and metrics.
//! Every request is authenticated by the [`Authenticator`] the shell supplies; writes are
//! accepted only for the caller's own run and node. The routes are described by the OpenAPI
//! document served at `/api/v1/openapi.json`.

mod auth;

pub use auth::{Anyone, AuthError, Authenticator, Principal};

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use toucan_core::launch::LaunchReport;
use toucan_core::records::{AttemptRecord, DocumentKind, RunRecord, StepRecord};
use toucan_core::time::now_ms;
use toucan_store::metadata::{MetadataStore, StoreError};

/// Bodies larger than this are refused: reports and metric series are small.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Runs listed when the caller gives no limit.
const DEFAULT_LIST_LIMIT: u32 = 50;

/// The OpenAPI 3.1 document of these routes.
pub const OPENAPI: &str = include_str!("openapi.json");

/// A launcher report the API accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportAccepted {
    pub run_id: String,
    pub node: String,
    pub attempt: u32,
}

/// What the router needs.
#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Arc<dyn MetadataStore>,
    pub auth: Arc<dyn Authenticator>,
    /// Where accepted reports are announced (the operator requeues the run).
    pub reports: Option<mpsc::UnboundedSender<ReportAccepted>>,
}

/// The document key of an attempt's report.
pub fn report_key(node: &str, attempt: u32) -> String {
    format!("{node}/{attempt}")
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{run}", get(get_run))
        .route(
            "/api/v1/runs/{run}/steps/{node}/attempts",
            get(list_attempts),
        )
        .route(
            "/api/v1/runs/{run}/steps/{node}/attempts/{attempt}/report",
            put(put_report).get(get_report),
        )
        .route(
            "/api/v1/runs/{run}/steps/{node}/metrics",
            put(put_metrics).get(get_metrics),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

// === errors ===

/// An API error: a status and a sentence, as `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body {
            error: String,
        }
        (
            self.status,
            Json(Body {
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::warn!(error = %e, "control-plane API: store error");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.reason())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Unavailable(_) => {
                tracing::warn!(error = %e, "control-plane API: authenticator unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "authentication unavailable",
                )
            }
            // Never echo why a token was rejected: it could carry the token's claims.
            AuthError::Missing | AuthError::Rejected(_) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated")
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

// === authentication ===

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

async fn writer(state: &ApiState, headers: &HeaderMap, run: &str, node: &str) -> ApiResult<()> {
    let principal = state.auth.authenticate(bearer(headers)).await?;
    if !principal.may_write(run, node) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this caller may not write for step {node:?} of run {run}"),
        ));
    }
    if state.store.get_run(run).await?.is_none() {
        return Err(not_found(run));
    }
    Ok(())
}

/// The run, if the caller may read it.
async fn readable_run(state: &ApiState, headers: &HeaderMap, run: &str) -> ApiResult<RunRecord> {
    let principal = state.auth.authenticate(bearer(headers)).await?;
    let Some(record) = state.store.get_run(run).await? else {
        return Err(not_found(run));
    };
    // A run the caller may not read is reported as missing, so ids cannot be probed.
    if !state.auth.may_read(&principal, &record.pipeline).await? {
        return Err(not_found(run));
    }
    Ok(record)
}

fn not_found(run: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no run {run}"))
}

// === handlers ===

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    limit: Option<u32>,
}

async fn list_runs(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<Vec<RunRecord>>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(1000);
    let mut visible = Vec::new();
    for run in state.store.list_runs(limit).await? {
        if state.auth.may_read(&principal, &run.pipeline).await? {
            visible.push(run);
        }
    }
    Ok(Json(visible))
}

/// A run with its steps.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunDetail {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
}

async fn get_run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(run): Path<String>,
) -> ApiResult<Json<RunDetail>> {
    let record = readable_run(&state, &headers, &run).await?;
    let steps = state.store.list_steps(&run).await?;
    Ok(Json(RunDetail { run: record, steps }))
}

async fn list_attempts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((run, node)): Path<(String, String)>,
) -> ApiResult<Json<Vec<AttemptRecord>>> {
    readable_run(&state, &headers, &run).await?;
    Ok(Json(state.store.list_attempts(&run, &node).await?))
}

async fn put_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((run, node, attempt)): Path<(String, String, u32)>,
    Json(report): Json<LaunchReport>,
) -> ApiResult<StatusCode> {
    writer(&state, &headers, &run, &node).await?;
    let body = serde_json::to_value(&report)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .store
        .put_run_document(
            &run,
            DocumentKind::Report,
            &report_key(&node, attempt),
            &body,
            now_ms(),
        )
        .await?;
    if let Some(tx) = &state.reports {
        let _ = tx.send(ReportAccepted {
            run_id: run,
            node,
            attempt,
        });
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn get_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((run, node, attempt)): Path<(String, String, u32)>,
) -> ApiResult<Json<serde_json::Value>> {
    readable_run(&state, &headers, &run).await?;
    state
        .store
        .get_run_document(&run, DocumentKind::Report, &report_key(&node, attempt))
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no report for attempt {attempt} of {node:?}"),
            )
        })
}

/// A metric series as steps push it: every epoch so far, replacing the previous push.
#[derive(Debug, Serialize, Deserialize)]
pub struct MetricSeries {
    #[serde(default)]
    pub attempt: Option<u32>,
    /// One JSON object per point (an epoch of training), in order.
    pub epochs: Vec<serde_json::Map<String, serde_json::Value>>,
}

async fn put_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((run, node)): Path<(String, String)>,
    Json(series): Json<MetricSeries>,
) -> ApiResult<StatusCode> {
    writer(&state, &headers, &run, &node).await?;
    let body = serde_json::to_value(&series)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .store
        .put_run_document(&run, DocumentKind::Metrics, &node, &body, now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn get_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((run, node)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    readable_run(&state, &headers, &run).await?;
    state
        .store
        .get_run_document(&run, DocumentKind::Metrics, &node)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no metrics for {node:?}")))
}
