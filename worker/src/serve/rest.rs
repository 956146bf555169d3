//! The REST side: one axum router for TF Serving's API ([`super::rest_v1`]), the Open
//! Inference Protocol ([`super::rest_v2`]) and `/metrics`, behind one middleware that gives
//! every request its id (the client's `x-request-id`, or a new one), echoes it on the
//! response, and counts the request with its code and time.
//!
//! Bodies are read whole, at most `--max-body-bytes` (413 past that); every error is
//! `{"error": "..."}` with its status, as both protocols shape errors.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::context::{self, Call, Context, V1, V2};
use super::error::RequestError;
use super::metrics::CONTENT_TYPE;
use super::{rest_v1, rest_v2};

/// The header that carries a request's id, in and out.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being handled (a request extension set by the middleware).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// When the middleware saw the request.
#[derive(Debug, Clone, Copy)]
pub struct Received(pub Instant);

/// A response extension: the request reached the served model (its name and version label
/// the request's metrics).
#[derive(Debug, Clone, Copy)]
pub struct ReachedModel;

pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route(
            "/v1/models/{*path}",
            get(rest_v1::get_model).post(rest_v1::post_model),
        )
        .route("/v2", get(rest_v2::server_metadata))
        .route("/v2/health/live", get(rest_v2::live))
        .route("/v2/health/ready", get(rest_v2::ready))
        .route(
            "/v2/models/{*path}",
            get(rest_v2::get_model).post(rest_v2::post_model),
        )
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(ctx.max_body_bytes))
        .layer(middleware::from_fn_with_state(Arc::clone(&ctx), observe))
        .with_state(ctx)
}

/// Which protocol a path belongs to, for metrics.
fn protocol_of(path: &str) -> Option<&'static str> {
    if path.starts_with("/v1/") {
        Some(V1)
    } else if path == "/v2" || path.starts_with("/v2/") {
        Some(V2)
    } else {
        None
    }
}

async fn observe(State(ctx): State<Arc<Context>>, mut request: Request, next: Next) -> Response {
    let received = Instant::now();
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| context::usable_request_id(id))
        .map_or_else(context::new_request_id, str::to_string);
    let protocol = protocol_of(request.uri().path());
    request.extensions_mut().insert(RequestId(id.clone()));
    request.extensions_mut().insert(Received(received));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    if let Some(protocol) = protocol {
        let reached = response.extensions().get::<ReachedModel>().is_some();
        let model = &ctx.model;
        ctx.metrics.answered(
            protocol,
            reached.then_some((model.name.as_str(), model.version.as_str())),
            response.status().as_u16().to_string(),
            received.elapsed().as_secs_f64(),
        );
    }
    response
}

/// The [`Call`] of a request the middleware has seen.
pub fn call(
    ctx: &Context,
    protocol: &'static str,
    id: &RequestId,
    received: Received,
    headers: &axum::http::HeaderMap,
) -> Call {
    Call {
        request_id: id.0.clone(),
        protocol,
        started: received.0,
        attributes: ctx.sampler.attributes(headers),
    }
}

/// The body, or the error to answer with: 413 over the limit, 400 when it could not be read.
pub fn body(read: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, RequestError> {
    read.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RequestError::too_large(format!(
                "the body is larger than {limit} bytes (--max-body-bytes)"
            ))
        } else {
            RequestError::bad_request(format!("reading the body: {rejection}"))
        }
    })
}

/// Marks a response as one the served model gave.
pub fn reached(mut response: Response) -> Response {
    response.extensions_mut().insert(ReachedModel);
    response
}

/// A response that reached the model, whether it succeeded or not.
pub fn answer(result: Result<Response, RequestError>) -> Response {
    match result {
        Ok(response) => reached(response),
        Err(e) => {
            let not_found = e.http_status() == StatusCode::NOT_FOUND;
            let response = e.into_response();
            // A 404 names no served model, so it is not counted as the model's.
            if not_found {
                response
            } else {
                reached(response)
            }
        }
    }
}

async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], ctx.metrics.encode()).into_response()
}

async fn no_route(request: Request) -> Response {
    RequestError::not_found(format!(
        "no such path: {} {}",
        request.method(),
        request.uri().path()
    ))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_path() {
        assert_eq!(protocol_of("/v1/models/a:predict"), Some(V1));
        assert_eq!(protocol_of("/v2/health/live"), Some(V2));
        assert_eq!(protocol_of("/v2"), Some(V2));
        assert_eq!(protocol_of("/metrics"), None);
        assert_eq!(protocol_of("/v22"), None);
    }
}
