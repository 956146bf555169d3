//! The proxy: every request that is not the router's own (`/metrics`, `/router/...`,
//! `/livez`, `/readyz`) is forwarded, path and method unchanged, to one replica of one
//! version.
//!
//! Per request: take (or make) the request id; buffer the body (up to the limit, so it can be
//! retried and mirrored); choose the version from the sticky key or the request id
//! ([`crate::split`]); maybe hand a copy to the shadow ([`crate::shadow`]); then try ready
//! replicas of that version ([`crate::replicas`]), moving to another one on a refused or
//! broken connection or a 502/503, at most `retries` times. The first other answer streams
//! back as it comes, with `x-request-id` and `x-toucan-version`; nothing is retried once it
//! has. Every answer is counted in the version's stats window and the metrics.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{HeaderMap, HeaderName, HeaderValue};
use axum::http::uri::PathAndQuery;
use axum::http::{StatusCode, request};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

use crate::context::Context;
use crate::error::json_error;
use crate::metrics::NO_VERSION;
use crate::replicas::ReplicaInFlight;
use crate::shadow;
use crate::split::{choose_version, mirrored, route_key};
use crate::table::{RoutingTable, VersionInFlight, VersionRoute};
use crate::upstream::{Forward, TryOutcome, forwarded_headers, remove_hop_by_hop, send};

/// The request id: taken from the caller when given, made otherwise, forwarded to the
/// replica and returned to the caller.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The version that answered.
pub static VERSION: HeaderName = HeaderName::from_static("x-toucan-version");
/// A caller's request id longer than this is replaced by one of ours.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Forwards one request; the fallback of the router's HTTP service.
pub async fn forward(State(ctx): State<Arc<Context>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let request_id = request_id(&parts.headers);
    let (mut response, version) = route(&ctx, parts, body, &request_id, started).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    if let Some(version) = version.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(VERSION.clone(), version);
    }
    response
}

/// The caller's `x-request-id` when it is usable, a new ULID otherwise.
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN)
        .map(str::to_string)
        .unwrap_or_else(|| ulid::Ulid::new().to_string())
}

/// The answer, and the version it is from (if one was chosen).
async fn route(
    ctx: &Arc<Context>,
    parts: request::Parts,
    body: Body,
    request_id: &str,
    started: Instant,
) -> (Response, Option<String>) {
    let Some(table) = ctx.table() else {
        return (
            ctx.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoConfiguration",
                "the router has no configuration yet".into(),
                started,
            ),
            None,
        );
    };
    let body = match read_body(body, ctx.settings.max_body_bytes).await {
        Ok(body) => body,
        Err((status, reason, detail)) => {
            return (ctx.refuse(status, reason, detail, started), None);
        }
    };
    let sticky = table
        .sticky_header
        .as_ref()
        .and_then(|h| parts.headers.get(h))
        .and_then(|v| v.to_str().ok());
    let Some(chosen) = choose_version(&table.shares(), route_key(sticky, request_id)) else {
        let detail = format!(
            "endpoint {} has no version with traffic and a ready replica",
            table.endpoint
        );
        return (
            ctx.refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "NoReadyReplica",
                detail,
                started,
            ),
            None,
        );
    };
    let mut headers = forwarded_headers(&parts.headers);
    // Only the router marks a request as a copy.
    headers.remove(&shadow::SHADOW);
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID.clone(), value);
    }
    let request = Forward {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        headers,
        body,
    };
    if let Some(shadow) = table.shadow
        && mirrored(request_id, shadow.percent)
    {
        shadow::mirror(ctx, &table, shadow, &request);
    }
    let version = &table.versions[chosen];
    let response = try_replicas(ctx, &table, version, request, started).await;
    (response, Some(version.name.clone()))
}

/// The whole body, or why not: 413 over the limit, 400 when it could not be read.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, (StatusCode, &'static str, String)> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            "BodyTooLarge",
            format!("the request body is larger than {limit} bytes"),
        )),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            "BodyUnreadable",
            format!("reading the request body: {e}"),
        )),
    }
}

/// What the last failed try left, for when there is no try left.
enum LastTry {
    None,
    /// A 502/503 answer, passed on as it is when no other replica can answer.
    Answer(Box<axum::http::Response<Incoming>>, ReplicaInFlight),
    /// No answer at all.
    Failed(String),
}

/// Tries replicas of `version` until one answers with something other than 502/503, or
/// there is no try or ready replica left.
async fn try_replicas(
    ctx: &Arc<Context>,
    table: &RoutingTable,
    version: &VersionRoute,
    request: Forward,
    started: Instant,
) -> Response {
    let version_in_flight = version.state.begin();
    let mut tried: Vec<usize> = Vec::new();
    let mut last = LastTry::None;
    while tried.len() <= table.retries as usize {
        let Some(index) = version.choose_replica(&tried) else {
            break;
        };
        if !tried.is_empty() {
            ctx.metrics.retried(&version.name);
        }
        tried.push(index);
        let replica = &version.replicas[index];
        let replica_in_flight = replica.begin();
        let outcome = send(&ctx.client, replica, request.clone(), table.timeout).await;
        match outcome {
            TryOutcome::Answered(response) if is_retried_status(response.status()) => {
                tracing::debug!(
                    replica = replica.url(),
                    status = %response.status(),
                    "trying another replica"
                );
                last = LastTry::Answer(Box::new(response), replica_in_flight);
            }
            TryOutcome::Answered(response) => {
                return ctx.pass_on(
                    version,
                    response,
                    (version_in_flight, replica_in_flight),
                    started,
                );
            }
            TryOutcome::Failed { detail, refused } => {
                if refused && replica.set_ready(false) {
                    tracing::warn!(
                        replica = replica.url(),
                        "replica refused a connection; not ready until it passes a probe: \
                         {detail}"
                    );
                }
                last = LastTry::Failed(detail);
            }
            TryOutcome::TimedOut => {
                let detail = format!(
                    "{} gave no response within {}",
                    replica.url(),
                    humantime::format_duration(table.timeout)
                );
                return ctx.fail(
                    version,
                    StatusCode::GATEWAY_TIMEOUT,
                    "Timeout",
                    detail,
                    started,
                );
            }
        }
    }
    match last {
        LastTry::Answer(response, replica_in_flight) => ctx.pass_on(
            version,
            *response,
            (version_in_flight, replica_in_flight),
            started,
        ),
        LastTry::Failed(detail) => ctx.fail(
            version,
            StatusCode::BAD_GATEWAY,
            "UpstreamUnreachable",
            format!("no replica of version {} answered: {detail}", version.name),
            started,
        ),
        LastTry::None => ctx.fail(
            version,
            StatusCode::SERVICE_UNAVAILABLE,
            "NoReadyReplica",
            format!("version {} has no ready replica", version.name),
            started,
        ),
    }
}

/// Answers a replica gives when it cannot take the request (overloaded, draining, or a
/// proxy in front of it failing): another replica may.
fn is_retried_status(status: StatusCode) -> bool {
    status == StatusCode::BAD_GATEWAY || status == StatusCode::SERVICE_UNAVAILABLE
}

// === impl Context (answers) ===

impl Context {
    /// A replica's answer, streamed back; the in-flight counts stay up until its body ends.
    fn pass_on(
        &self,
        version: &VersionRoute,
        response: axum::http::Response<Incoming>,
        in_flight: (VersionInFlight, ReplicaInFlight),
        started: Instant,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        self.record(version, parts.status.as_u16(), started);
        let body = Body::new(StreamingAnswer {
            body,
            _in_flight: in_flight,
        });
        Response::from_parts(parts, body)
    }

    /// The router's own error about a chosen version.
    fn fail(
        &self,
        version: &VersionRoute,
        status: StatusCode,
        reason: &str,
        detail: String,
        started: Instant,
    ) -> Response {
        tracing::warn!(version = %version.name, reason, "{detail}");
        self.record(version, status.as_u16(), started);
        json_error(status, reason, &detail)
    }

    /// The router's own error before any version was chosen.
    fn refuse(
        &self,
        status: StatusCode,
        reason: &str,
        detail: String,
        started: Instant,
    ) -> Response {
        tracing::debug!(reason, "{detail}");
        self.metrics.answered(
            NO_VERSION,
            status.as_u16(),
            false,
            started.elapsed().as_secs_f64(),
        );
        json_error(status, reason, &detail)
    }

    fn record(&self, version: &VersionRoute, status: u16, started: Instant) {
        let elapsed = started.elapsed();
        version.state.record(
            self.now_seconds(),
            elapsed.as_secs_f64() * 1000.0,
            status,
            false,
        );
        self.metrics
            .answered(&version.name, status, false, elapsed.as_secs_f64());
    }
}

/// A replica's response body on its way to the caller, holding the request's in-flight
/// counts until it ends or the caller goes away.
struct StreamingAnswer {
    body: Incoming,
    _in_flight: (VersionInFlight, ReplicaInFlight),
}

impl HttpBody for StreamingAnswer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_usable_request_id_is_kept_and_a_missing_one_is_made() {
        let mut headers = HeaderMap::new();
        let made = request_id(&headers);
        assert_eq!(made.len(), 26);
        assert_ne!(made, request_id(&headers));
        headers.insert(REQUEST_ID.clone(), HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
        headers.insert(
            REQUEST_ID.clone(),
            HeaderValue::from_str(&"x".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 26);
    }

    #[test]
    fn only_502_and_503_are_retried() {
        let retried: Vec<u16> = (200..600)
            .filter(|&s| is_retried_status(StatusCode::from_u16(s).unwrap()))
            .collect();
        assert_eq!(retried, vec![502, 503]);
    }
}
