//! Label feedback and the continuous evaluation it feeds.
//!
//! Whoever learns the right answer for a served request — a person reviewing it, a pipeline
//! step, `toucan label` — posts it here by request id. A batch is checked whole before
//! anything is written: every entry must carry a string `requestId` and a string `label` that
//! names one of the model's classes (the classes its stored predictions name), and an
//! optional RFC 3339 `labelledAt`; the first fault is refused with its field path
//! (`labels[3].label`). Then the store joins each label to its sample: a label sent again is
//! left as it is, a different one replaces it, and one whose request id has no sample is
//! counted as unknown, never an error for the batch.
//!
//! In a cluster a label may come from a writer of the endpoint's namespace (the authenticator
//! decides, [`Authenticator::may_label`](crate::Authenticator::may_label)) or from a pipeline
//! step of a run in that namespace. The evaluation is read by whoever may read the namespace.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use toucan_core::duration::Duration;
use toucan_core::monitoring::evaluation::{
    EvaluationOptions, EvaluationReport, Label, LabelCounts, ModelClasses, evaluate,
    first_unknown_class,
};
use toucan_core::time::{now_ms, parse_rfc3339};

use super::{
    ApiError, ApiResult, ApiState, ErrorBody, NOT_JSON, Principal, UNAUTHENTICATED, UNAVAILABLE,
    WRONG_SHAPE, bearer,
};

/// The most labels one batch may carry.
pub const MAX_BATCH: usize = 1000;
/// How many stored samples are read to learn the model's classes.
const CLASS_SCAN: u32 = 10_000;
/// The most samples one evaluation reads (the newest since `since`).
const MAX_EVALUATED: u32 = 50_000;
/// Windows evaluated when the caller gives no `since`.
const DEFAULT_WINDOWS: i64 = 24;

const NOT_LABELLER: &str = "The caller may not write labels for this endpoint (in a cluster: a namespace writer or a \
     pipeline step of the namespace may).";
const INVALID_LABELS: &str = "A label is not a string, names no class of the model, or a field is missing; the error \
     names its path. Nothing was stored.";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct EndpointPath {
    /// The endpoint's name (`metadata.name`).
    endpoint: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct NamespaceQuery {
    /// The endpoint's namespace (in a cluster).
    namespace: Option<String>,
}

/// A batch of labels.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct LabelBatch {
    /// At most 1000.
    labels: Vec<LabelEntry>,
}

/// The right answer for one request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct LabelEntry {
    /// The request's `x-request-id`, as its payload sample recorded it.
    request_id: String,
    /// The right class, by the name the model's predictions use.
    label: String,
    /// When the answer became known (RFC 3339); when it was received if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labelled_at: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub(super) struct EvaluationQuery {
    /// The endpoint's namespace (in a cluster).
    namespace: Option<String>,
    /// The length of a window (`30m`, `1h`; default `1h`).
    window: Option<String>,
    /// Only samples stored at or after this time (milliseconds since the epoch; default 24
    /// windows ago).
    since: Option<i64>,
    /// A sample attribute to slice by (a recorded request header, e.g. `header.x-source`).
    slice: Option<String>,
    /// How old a sample must be before it counts, so late labels are waited for (default `0s`).
    maturity: Option<String>,
    /// The moving average's half-life in windows (default 4).
    half_life: Option<f64>,
    /// The most samples read, the newest (default and at most 50,000); when the read stops
    /// there, `partialThrough` says which windows lack some of theirs.
    limit: Option<u32>,
}

/// Store a batch of labels (idempotent by request id)
///
/// Each label is joined to the endpoint's payload sample of the same request id. The response
/// counts what each label did.
#[utoipa::path(
    post,
    path = "/api/v1/endpoints/{endpoint}/labels",
    params(EndpointPath, NamespaceQuery),
    request_body = LabelBatch,
    responses(
        (status = 200, description = "Stored.", body = LabelCounts),
        (status = 400, description = NOT_JSON, body = String, content_type = "text/plain"),
        (status = 413, description = "More than 1000 labels in one batch.", body = ErrorBody),
        (status = 422, description = INVALID_LABELS, body = ErrorBody),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = NOT_LABELLER, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn post_labels(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(EndpointPath { endpoint }): Path<EndpointPath>,
    Query(NamespaceQuery { namespace }): Query<NamespaceQuery>,
    Json(body): Json<Value>,
) -> ApiResult<Json<LabelCounts>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let key = endpoint_key(namespace.as_deref(), &endpoint);
    if !may_label(&state, &principal, namespace.as_deref(), &key).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this caller may not write labels for endpoint {key:?}"),
        ));
    }
    let now = now_ms();
    let labels = read_batch(&body, now)?;
    let samples = state.store.list_samples(&key, 0, CLASS_SCAN).await?;
    let classes = ModelClasses::of(samples.iter().map(|r| &r.sample));
    check_classes(&labels, &classes)?;
    Ok(Json(state.store.put_labels(&key, &labels, now).await?))
}

/// An endpoint's evaluation: windowed quality metrics of its labelled samples
///
/// Accuracy, macro precision, recall and F1, log loss, expected calibration error, per-class
/// precision and recall, the confusion matrix and the prediction distribution, per window, for
/// all samples, per version and per slice value, each with its confidence interval, and the
/// moving average across windows.
#[utoipa::path(
    get,
    path = "/api/v1/endpoints/{endpoint}/evaluation",
    params(EndpointPath, EvaluationQuery),
    responses(
        (status = 200, description = "OK", body = EvaluationReport),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = "The caller may not read this endpoint.", body = ErrorBody),
        (status = 422, description = WRONG_SHAPE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn get_evaluation(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(EndpointPath { endpoint }): Path<EndpointPath>,
    Query(query): Query<EvaluationQuery>,
) -> ApiResult<Json<EvaluationReport>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let key = endpoint_key(query.namespace.as_deref(), &endpoint);
    if !state.auth.may_read(&principal, &key).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {endpoint}"),
        ));
    }
    let window_ms = millis("window", query.window.as_deref().unwrap_or("1h"))?;
    let mut options = EvaluationOptions::new(now_ms(), window_ms);
    options.maturity_ms = millis("maturity", query.maturity.as_deref().unwrap_or("0s"))?;
    options.slice = query.slice;
    if let Some(h) = query.half_life {
        options.half_life_windows = h;
    }
    let since = query.since.unwrap_or_else(|| {
        options
            .now
            .saturating_sub(window_ms.saturating_mul(DEFAULT_WINDOWS))
    });
    let limit = query.limit.unwrap_or(MAX_EVALUATED);
    if !(1..=MAX_EVALUATED).contains(&limit) {
        return Err(unprocessable(format!(
            "limit: {limit} is not from 1 to {MAX_EVALUATED}"
        )));
    }
    // Options are checked before the store is read.
    evaluate(&[], &options).map_err(unprocessable)?;
    let samples = state
        .store
        .list_labelled_samples(&key, since..i64::MAX, limit)
        .await?;
    let mut report = evaluate(&samples, &options).map_err(unprocessable)?;
    if samples.len() == limit as usize {
        report.partial_through = samples.first().map(|s| s.sample.stored_at);
    }
    Ok(Json(report))
}

fn endpoint_key(namespace: Option<&str>, endpoint: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{endpoint}"),
        None => endpoint.to_string(),
    }
}

/// A namespace writer (the authenticator's call) or a pipeline step of a run in the
/// endpoint's namespace.
async fn may_label(
    state: &ApiState,
    principal: &Principal,
    namespace: Option<&str>,
    key: &str,
) -> ApiResult<bool> {
    if let (Principal::Step { run_id, .. }, Some(namespace)) = (principal, namespace) {
        let run = state.store.get_run(run_id).await?;
        return Ok(run.is_some_and(|r| {
            r.pipeline
                .split_once('/')
                .is_some_and(|(ns, _)| ns == namespace)
        }));
    }
    Ok(state.auth.may_label(principal, key).await?)
}

fn unprocessable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
}

fn millis(field: &str, text: &str) -> ApiResult<i64> {
    let d = Duration::parse(text).map_err(|e| unprocessable(format!("{field}: {e}")))?;
    i64::try_from(d.as_millis()).map_err(|_| unprocessable(format!("{field}: {text} is too long")))
}

/// The labels of a batch, or the first fault with its field path.
fn read_batch(body: &Value, now: i64) -> ApiResult<Vec<Label>> {
    let entries = body
        .get("labels")
        .ok_or_else(|| unprocessable("labels: missing"))?
        .as_array()
        .ok_or_else(|| {
            unprocessable(format!(
                "labels: expected an array, got {}",
                kind(&body["labels"])
            ))
        })?;
    if entries.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} labels in one batch; at most {MAX_BATCH}", entries.len()),
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let string = |field: &str| -> ApiResult<Option<String>> {
                match entry.get(field) {
                    None | Some(Value::Null) => Ok(None),
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    Some(other) => Err(unprocessable(format!(
                        "labels[{i}].{field}: expected a string, got {}",
                        kind(other)
                    ))),
                }
            };
            if !entry.is_object() {
                return Err(unprocessable(format!(
                    "labels[{i}]: expected an object, got {}",
                    kind(entry)
                )));
            }
            let required = |field: &str| -> ApiResult<String> {
                string(field)?
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| unprocessable(format!("labels[{i}].{field}: missing")))
            };
            let request_id = required("requestId")?;
            let label = required("label")?;
            let labelled_at = match string("labelledAt")? {
                None => now,
                Some(text) => parse_rfc3339(&text)
                    .map_err(|e| unprocessable(format!("labels[{i}].labelledAt: {e}")))?,
            };
            Ok(Label {
                request_id,
                label,
                labelled_at,
            })
        })
        .collect()
}

/// Refuses the first label that names no class of the model.
fn check_classes(labels: &[Label], classes: &ModelClasses) -> ApiResult<()> {
    match first_unknown_class(labels, classes) {
        None => Ok(()),
        Some((i, why)) => Err(unprocessable(format!("labels[{i}].label: {why}"))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
