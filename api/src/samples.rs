//! Payload samples: what model servers record of a sampled fraction of their requests.
//!
//! Each replica of `toucan-worker serve` ships its samples here in batches. A batch is stored
//! all or nothing, and a sample whose request id is already stored for the endpoint is kept as
//! it was, so a shipment retried after a timeout stores nothing twice. Continuous evaluation
//! reads them back by time and joins labels to them by request id.
//!
//! In a cluster only the endpoint's own server pods may write (the authenticator maps their
//! token to [`Principal::Server`](crate::Principal::Server)), and the samples are stored under
//! `NAMESPACE/NAME`, read by whoever may read that namespace's runs.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use toucan_core::records::SampleRecord;
use toucan_core::serving::SampleBatch;
use toucan_core::time::now_ms;

use super::{
    ApiError, ApiResult, ApiState, DEFAULT_LIST_LIMIT, ErrorBody, NOT_JSON, UNAUTHENTICATED,
    UNAVAILABLE, WRONG_SHAPE, bearer,
};

/// The most samples one batch may carry.
pub const MAX_BATCH: usize = 1000;
/// The most samples one read returns.
const MAX_LIST_LIMIT: u32 = 10_000;

const NOT_SERVER: &str = "The caller is not a model server of this endpoint.";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct EndpointPath {
    /// The endpoint's name (`metadata.name`).
    endpoint: String,
}

/// How many samples of a batch were new.
#[derive(Debug, Serialize, ToSchema)]
pub(super) struct SamplesStored {
    /// Samples stored by this call.
    added: u64,
    /// Samples of the batch already stored (by request id), left as they were.
    duplicates: u64,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct SampleQuery {
    /// The endpoint's namespace (in a cluster).
    namespace: Option<String>,
    /// Only samples stored at or after this time (milliseconds since the epoch).
    since: Option<i64>,
    /// At most this many (default 50, at most 10,000), oldest first.
    limit: Option<u32>,
}

/// Store a batch of payload samples (idempotent by request id)
///
/// Model servers call this with what they sampled. A batch is stored whole or not at all.
#[utoipa::path(
    post,
    path = "/api/v1/endpoints/{endpoint}/samples",
    params(EndpointPath),
    request_body = SampleBatch,
    responses(
        (status = 200, description = "Stored.", body = SamplesStored),
        (status = 400, description = NOT_JSON, body = String, content_type = "text/plain"),
        (status = 413, description = "More than 1000 samples in one batch.", body = ErrorBody),
        (status = 422, description = WRONG_SHAPE, body = String, content_type = "text/plain"),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = NOT_SERVER, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn post_samples(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(EndpointPath { endpoint }): Path<EndpointPath>,
    Json(batch): Json<SampleBatch>,
) -> ApiResult<Json<SamplesStored>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let Some(key) = principal.sample_key(&endpoint) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("this caller may not write samples for endpoint {endpoint:?}"),
        ));
    };
    if batch.samples.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} samples in one batch; at most {MAX_BATCH}",
                batch.samples.len()
            ),
        ));
    }
    let added = state
        .store
        .put_samples(&key, &batch.samples, now_ms())
        .await?;
    Ok(Json(SamplesStored {
        added,
        duplicates: batch.samples.len() as u64 - added,
    }))
}

/// An endpoint's payload samples, oldest first
#[utoipa::path(
    get,
    path = "/api/v1/endpoints/{endpoint}/samples",
    params(EndpointPath, SampleQuery),
    responses(
        (status = 200, description = "OK", body = Vec<SampleRecord>),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = "The caller may not read this endpoint.", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn list_samples(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(EndpointPath { endpoint }): Path<EndpointPath>,
    Query(query): Query<SampleQuery>,
) -> ApiResult<Json<Vec<SampleRecord>>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let key = match &query.namespace {
        Some(ns) => format!("{ns}/{endpoint}"),
        None => endpoint.clone(),
    };
    if !state.auth.may_read(&principal, &key).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint {endpoint}"),
        ));
    }
    let limit = query
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, MAX_LIST_LIMIT);
    let samples = state
        .store
        .list_samples(&key, query.since.unwrap_or(0), limit)
        .await?;
    Ok(Json(samples))
}
