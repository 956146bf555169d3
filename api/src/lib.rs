//! toucan-api: the control-plane HTTP API, one axum router for the operator and the local
//! runtime.
//!
//! Steps write through it: the launcher `PUT`s its report of each attempt and, in a cluster,
//! where its step's newest checkpoint is stored (the `checkpoints` module); commands such as
//! `toucan-worker train` `PUT` their metric series (idempotent: the whole series replaces what
//! was there, keyed by run and node). All land in the metadata store as run documents, and
//! every accepted report is announced on [`ApiState::reports`] so the runtime that waits for
//! it reacts at once. The CLI and dashboards read runs, steps, attempts and metrics.
//! Every request is authenticated by the [`Authenticator`] the shell supplies; writes are
//! accepted only for the caller's own run and node.
//!
//! Served models feed it too: model servers ship payload samples (`samples`), whoever learns
//! the right answers posts labels (`labels`), Alertmanager posts its notifications of the
//! endpoints' alerts (`alerts`), and `/metrics` exports the endpoints' monitoring gauges the
//! shell's monitoring loop sets on its [`GaugeBoard`] (`gauges`).
//!
//! The OpenAPI document served at `/api/v1/openapi.json` is generated from the same list of
//! annotated handlers the router is built from (see [`openapi`]), so the two cannot drift.

mod alerts;
mod auth;
mod checkpoints;
mod gauges;
mod labels;
mod samples;

pub use auth::{Anyone, AuthError, Authenticator, Principal};
pub use gauges::GaugeBoard;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::openapi::OpenApi as OpenApiDocument;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use toucan_core::launch::LaunchReport;
use toucan_core::records::{
    AttemptRecord, DocumentKind, RunRecord, StepRecord, StudyRecord, TrialRecord,
};
use toucan_core::time::now_ms;
use toucan_store::metadata::{MetadataStore, StoreError};

/// Bodies larger than this are refused: reports and metric series are small.
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Runs listed when the caller gives no limit.
const DEFAULT_LIST_LIMIT: u32 = 50;

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
    /// The endpoints' monitoring gauges `GET /metrics` exports; `None` where this server
    /// exports none (`/metrics` answers 404).
    pub gauges: Option<Arc<GaugeBoard>>,
}

/// The document key of an attempt's report.
pub fn report_key(node: &str, attempt: u32) -> String {
    format!("{node}/{attempt}")
}

/// The API's routes over `state`, serving their own OpenAPI document.
pub fn router(state: ApiState) -> Router {
    let (router, document) = routes().split_for_parts();
    router
        .layer(Extension(Arc::new(document)))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The OpenAPI 3.1 document of the API's routes, as [`router`] serves it.
pub fn openapi() -> OpenApiDocument {
    routes().into_openapi()
}

/// Every route with its documentation: the one list both the router and the document are
/// built from. A handler is served only if it is documented (`#[utoipa::path]`).
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(openapi_document))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(list_attempts))
        .routes(routes!(put_report, get_report))
        .routes(routes!(put_metrics, get_metrics))
        .routes(routes!(get_study))
        .routes(routes!(
            checkpoints::put_checkpoint,
            checkpoints::get_checkpoint
        ))
        .routes(routes!(samples::post_samples, samples::list_samples))
        .routes(routes!(labels::post_labels))
        .routes(routes!(labels::get_evaluation))
        .routes(routes!(alerts::list_alerts))
        .routes(routes!(alerts::post_alertmanager))
        .routes(routes!(gauges::metrics))
}

/// The parts of the document no handler describes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "toucan control-plane API",
        version = "v1",
        description = "Launcher reports, metric pushes, checkpoint pointers, payload samples \
            from model servers, label feedback and the continuous evaluation it feeds, \
            endpoints' alerts (Alertmanager's webhook receiver) and monitoring gauges, run and \
            study reads. In a cluster every call but the document and `/metrics` carries a \
            Kubernetes service-account token as a bearer token; a step pod may write only for \
            its own run and step.",
    ),
    security(("bearer" = [])),
    modifiers(&BearerToken),
)]
struct ApiDoc;

/// Declares the `bearer` security scheme every operation requires.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut OpenApiDocument) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
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

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
struct ErrorBody {
    /// What went wrong, in a sentence.
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
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
    readable_by(state, &principal, run).await
}

/// The run, if the caller may read it or is a pod of the step itself: a step pod reads back
/// what it may write for its own node (its checkpoint), and nothing else.
async fn readable_step(
    state: &ApiState,
    headers: &HeaderMap,
    run: &str,
    node: &str,
) -> ApiResult<RunRecord> {
    let principal = state.auth.authenticate(bearer(headers)).await?;
    if principal.may_write(run, node) {
        return state
            .store
            .get_run(run)
            .await?
            .ok_or_else(|| not_found(run));
    }
    readable_by(state, &principal, run).await
}

async fn readable_by(state: &ApiState, principal: &Principal, run: &str) -> ApiResult<RunRecord> {
    let Some(record) = state.store.get_run(run).await? else {
        return Err(not_found(run));
    };
    // A run the caller may not read is reported as missing, so ids cannot be probed.
    if !state.auth.may_read(principal, &record.pipeline).await? {
        return Err(not_found(run));
    }
    Ok(record)
}

fn not_found(run: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("no run {run}"))
}

// === handlers ===

// The documented meaning of each error status.
const STORED: &str = "Stored.";
const MALFORMED: &str = "The body is not JSON, or `attempt` is not a number.";
const NOT_JSON: &str = "The body is not JSON.";
const BAD_ATTEMPT: &str = "`attempt` is not a number.";
const WRONG_SHAPE: &str = "The body's JSON does not have the documented shape.";
const UNAUTHENTICATED: &str = "No or an invalid bearer token.";
const FORBIDDEN: &str = "The caller may not write for this run and step.";
const NOT_FOUND: &str = "No such run, or the caller may not read it.";
const UNAVAILABLE: &str = "The store or the authenticator is unavailable.";

/// This document
///
/// The OpenAPI document of every route, generated from the handlers the router serves.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    security(()),
    responses((status = 200, description = "OK", content_type = "application/json")),
)]
async fn openapi_document(Extension(document): Extension<Arc<OpenApiDocument>>) -> Response {
    Json(OpenApiDocument::clone(&document)).into_response()
}

/// `/runs/{run}/...`: the run a request is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct RunPath {
    /// The run's id (a ULID locally, the PipelineRun's UID in a cluster).
    run: String,
}

/// `/runs/{run}/steps/{node}/...`: the step a request is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct StepPath {
    /// The run's id (a ULID locally, the PipelineRun's UID in a cluster).
    run: String,
    /// A step, or a fan-out child `step[i]` (percent-encoded).
    node: String,
}

/// `/runs/{run}/steps/{node}/attempts/{attempt}/...`: the attempt a request is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct AttemptPath {
    /// The run's id (a ULID locally, the PipelineRun's UID in a cluster).
    run: String,
    /// A step, or a fan-out child `step[i]` (percent-encoded).
    node: String,
    /// The attempt's number, from 1.
    #[param(minimum = 1)]
    attempt: u32,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// How many runs to list at most (more than 1000 is read as 1000).
    #[param(default = 50)]
    limit: Option<u32>,
}

/// Runs, newest first
///
/// Only the runs the caller may read are listed.
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = Vec<RunRecord>),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunDetail {
    pub run: RunRecord,
    pub steps: Vec<StepRecord>,
}

/// A run and its steps
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run}",
    params(RunPath),
    responses(
        (status = 200, description = "OK", body = RunDetail),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn get_run(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(RunPath { run }): Path<RunPath>,
) -> ApiResult<Json<RunDetail>> {
    let record = readable_run(&state, &headers, &run).await?;
    let steps = state.store.list_steps(&run).await?;
    Ok(Json(RunDetail { run: record, steps }))
}

/// `/studies/{study}`: the study a request is about.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct StudyPath {
    /// The study's id (a ULID locally, the TuningStudy's UID in a cluster).
    study: String,
}

/// A tuning study with every trial.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StudyDetail {
    pub study: StudyRecord,
    /// By index.
    pub trials: Vec<TrialRecord>,
}

/// A tuning study and its trials
///
/// Every trial, as its ledger holds it (the resource's status holds only a summary).
#[utoipa::path(
    get,
    path = "/api/v1/studies/{study}",
    params(StudyPath),
    responses(
        (status = 200, description = "OK", body = StudyDetail),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = "No such study, or the caller may not read it.", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn get_study(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StudyPath { study }): Path<StudyPath>,
) -> ApiResult<Json<StudyDetail>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let missing = || ApiError::new(StatusCode::NOT_FOUND, format!("no study {study}"));
    let Some(record) = state.store.get_study(&study).await? else {
        return Err(missing());
    };
    // A study's name is `NAMESPACE/NAME` in a cluster: read as its namespace's runs are.
    if !state.auth.may_read(&principal, &record.name).await? {
        return Err(missing());
    }
    let trials = state.store.list_trials(&study).await?;
    Ok(Json(StudyDetail {
        study: record,
        trials,
    }))
}

/// The attempts of a step
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run}/steps/{node}/attempts",
    params(StepPath),
    responses(
        (status = 200, description = "OK", body = Vec<AttemptRecord>),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn list_attempts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StepPath { run, node }): Path<StepPath>,
) -> ApiResult<Json<Vec<AttemptRecord>>> {
    readable_run(&state, &headers, &run).await?;
    Ok(Json(state.store.list_attempts(&run, &node).await?))
}

/// The launcher's report of an attempt (idempotent)
#[utoipa::path(
    put,
    path = "/api/v1/runs/{run}/steps/{node}/attempts/{attempt}/report",
    params(AttemptPath),
    request_body = LaunchReport,
    responses(
        (status = 204, description = STORED),
        (status = 400, description = MALFORMED, body = String, content_type = "text/plain"),
        (status = 422, description = WRONG_SHAPE, body = String, content_type = "text/plain"),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn put_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(AttemptPath { run, node, attempt }): Path<AttemptPath>,
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

/// An attempt's report
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run}/steps/{node}/attempts/{attempt}/report",
    params(AttemptPath),
    responses(
        (status = 200, description = "OK", body = LaunchReport),
        (status = 400, description = BAD_ATTEMPT, body = String, content_type = "text/plain"),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn get_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(AttemptPath { run, node, attempt }): Path<AttemptPath>,
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
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MetricSeries {
    #[serde(default)]
    pub attempt: Option<u32>,
    /// One JSON object per point (an epoch of training), in order.
    #[schema(value_type = Vec<Object>)]
    pub epochs: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Replace a step's metric series (idempotent)
#[utoipa::path(
    put,
    path = "/api/v1/runs/{run}/steps/{node}/metrics",
    params(StepPath),
    request_body = MetricSeries,
    responses(
        (status = 204, description = STORED),
        (status = 400, description = NOT_JSON, body = String, content_type = "text/plain"),
        (status = 422, description = WRONG_SHAPE, body = String, content_type = "text/plain"),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn put_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StepPath { run, node }): Path<StepPath>,
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

/// A step's metric series
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run}/steps/{node}/metrics",
    params(StepPath),
    responses(
        (status = 200, description = "OK", body = MetricSeries),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
async fn get_metrics(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StepPath { run, node }): Path<StepPath>,
) -> ApiResult<Json<serde_json::Value>> {
    readable_run(&state, &headers, &run).await?;
    state
        .store
        .get_run_document(&run, DocumentKind::Metrics, &node)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no metrics for {node:?}")))
}
