//! A step's checkpoint pointer: where in the artifact store its newest checkpoint is kept.
//!
//! In a cluster a step's checkpoint directory lives in its pod and dies with it. The leader's
//! launcher stores each new checkpoint in the artifact store and `PUT`s a
//! [`CheckpointPointer`] here; the launcher of every new pod of the step (a gang restarted on
//! new pods, a retried attempt) `GET`s it and restores the directory before its command
//! starts. The pointer is a run document keyed by node, so it outlives attempts and
//! incarnations and goes with its run. It only moves forward: a `PUT` of an older step than
//! the recorded one (a stopped incarnation's late upload) is refused, the same step again
//! replaces it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};

use toucan_core::launch::CheckpointPointer;
use toucan_core::records::DocumentKind;
use toucan_core::time::now_ms;

use super::{
    ApiError, ApiResult, ApiState, ErrorBody, FORBIDDEN, NOT_FOUND, NOT_JSON, STORED, StepPath,
    UNAUTHENTICATED, UNAVAILABLE, readable_step, writer,
};

const BAD_POINTER: &str = "The body's JSON does not have the documented shape, or `checkpoint` \
    is not `ckpt-` and a step number.";
const OLDER: &str = "The step already has a checkpoint of a later step; it is kept.";
const READABLE: &str = "No such run or no checkpoint of the step, or the caller may not read \
    it (a step pod reads its own step's).";

/// Record a step's newest checkpoint (idempotent; never an older one)
///
/// The launcher of a distributed step's leader (or of a plain step) calls this after storing
/// a checkpoint directory in the artifact store. `updatedAt` is set by the server.
#[utoipa::path(
    put,
    path = "/api/v1/runs/{run}/steps/{node}/checkpoint",
    params(StepPath),
    request_body = CheckpointPointer,
    responses(
        (status = 204, description = STORED),
        (status = 400, description = NOT_JSON, body = String, content_type = "text/plain"),
        (status = 422, description = BAD_POINTER, body = String, content_type = "text/plain"),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = FORBIDDEN, body = ErrorBody),
        (status = 404, description = NOT_FOUND, body = ErrorBody),
        (status = 409, description = OLDER, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn put_checkpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StepPath { run, node }): Path<StepPath>,
    Json(mut pointer): Json<CheckpointPointer>,
) -> ApiResult<StatusCode> {
    writer(&state, &headers, &run, &node).await?;
    if let Some(stored) = stored(&state, &run, &node).await?
        && !pointer.may_replace(&stored)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "{node:?} already has {}, later than {}",
                stored.checkpoint, pointer.checkpoint
            ),
        ));
    }
    let now = now_ms();
    pointer.updated_at = Some(now);
    let body = serde_json::to_value(&pointer)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    state
        .store
        .put_run_document(&run, DocumentKind::Checkpoint, &node, &body, now)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A step's newest checkpoint
///
/// Readable by those who may read the run, and by the step's own pods.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{run}/steps/{node}/checkpoint",
    params(StepPath),
    responses(
        (status = 200, description = "OK", body = CheckpointPointer),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 404, description = READABLE, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn get_checkpoint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(StepPath { run, node }): Path<StepPath>,
) -> ApiResult<Json<CheckpointPointer>> {
    readable_step(&state, &headers, &run, &node).await?;
    stored(&state, &run, &node).await?.map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no checkpoint of {node:?} is recorded"),
        )
    })
}

/// The recorded pointer of `node`. One that no longer reads as a pointer is treated as none,
/// so that the next `PUT` replaces it rather than every one failing.
async fn stored(state: &ApiState, run: &str, node: &str) -> ApiResult<Option<CheckpointPointer>> {
    let Some(body) = state
        .store
        .get_run_document(run, DocumentKind::Checkpoint, node)
        .await?
    else {
        return Ok(None);
    };
    match serde_json::from_value(body) {
        Ok(pointer) => Ok(Some(pointer)),
        Err(e) => {
            tracing::warn!(run, node, error = %e, "a recorded checkpoint pointer does not parse");
            Ok(None)
        }
    }
}
