//! The router's own HTTP paths, beside the proxied ones: `/metrics` (Prometheus text),
//! `/router/v1/stats` (JSON, for the autoscaler and the rollout gates), `/livez` and
//! `/readyz`. None starts with `/v1` or `/v2`, so none can shadow a model's path.
//!
//! Stats are read from the versions' rolling windows ([`crate::stats`]) and their live
//! counts; `?window=SECONDS` narrows the window (default and most: 60 s).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::json_error;
use crate::split::choose_version;
use toucan_core::serving::rollout::{LatencyPercentiles, VersionObservation};

use crate::stats::WINDOW_SECONDS;

pub const METRICS_PATH: &str = "/metrics";
pub const STATS_PATH: &str = "/router/v1/stats";

/// The answer of `/router/v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStats {
    pub endpoint: String,
    /// The seconds the counts and percentiles cover, the current one included.
    pub window_seconds: u64,
    pub versions: BTreeMap<String, VersionStats>,
}

/// One version's numbers over the window (counts) and now (`inFlight`, replicas).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionStats {
    pub weight: u32,
    pub replicas: usize,
    pub ready_replicas: usize,
    /// Answers, mirrored copies included.
    pub requests: u64,
    /// Answers with a 5xx status, the router's own (502, 503, 504) included.
    pub errors: u64,
    /// Of `requests`, the copies the shadow sent.
    pub mirrored: u64,
    pub in_flight: usize,
    /// Time to the response headers; `null` when there was no request.
    pub latency_ms: Latency,
}

impl EndpointStats {
    /// Each version's requests as a rollout's gates judge them (core's
    /// [`rollout::decide`](toucan_core::serving::rollout::decide)): the copies the shadow sent
    /// are not the version's answers to callers.
    pub fn observations(&self) -> Vec<VersionObservation> {
        self.versions
            .iter()
            .map(|(name, v)| VersionObservation {
                version: name.clone(),
                requests: v.requests.saturating_sub(v.mirrored),
                errors: v.errors,
                latency_ms: LatencyPercentiles {
                    p50: v.latency_ms.p50,
                    p90: v.latency_ms.p90,
                    p99: v.latency_ms.p99,
                },
                quality: None,
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct StatsQuery {
    window: Option<u64>,
}

pub async fn metrics(State(ctx): State<Arc<Context>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.encode(),
    )
        .into_response()
}

pub async fn stats(State(ctx): State<Arc<Context>>, Query(query): Query<StatsQuery>) -> Response {
    let window = query.window.unwrap_or(WINDOW_SECONDS);
    if !(1..=WINDOW_SECONDS).contains(&window) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidWindow",
            format!("window: {window} is not in [1, {WINDOW_SECONDS}] seconds"),
        );
    }
    let Some(table) = ctx.table() else {
        return no_configuration();
    };
    let now = ctx.now_seconds();
    let versions = table
        .versions
        .iter()
        .map(|version| {
            let summary = version.state.summary(now, window);
            let stats = VersionStats {
                weight: version.weight,
                replicas: version.replicas.len(),
                ready_replicas: version.ready_replicas(),
                requests: summary.requests,
                errors: summary.errors,
                mirrored: summary.mirrored,
                in_flight: version.state.in_flight(),
                latency_ms: Latency {
                    p50: summary.p50_ms,
                    p90: summary.p90_ms,
                    p99: summary.p99_ms,
                },
            };
            (version.name.clone(), stats)
        })
        .collect();
    Json(EndpointStats {
        endpoint: table.endpoint.clone(),
        window_seconds: window,
        versions,
    })
    .into_response()
}

pub async fn livez() -> &'static str {
    "ok"
}

/// Ready when a configuration is in force and some version can take traffic.
pub async fn readyz(State(ctx): State<Arc<Context>>) -> Response {
    let Some(table) = ctx.table() else {
        return no_configuration();
    };
    // Any key: the split picks a version iff one has weight and a ready replica.
    if choose_version(&table.shares(), "readyz").is_some() {
        "ok".into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "NoReadyReplica",
            format!(
                "endpoint {} has no version with traffic and a ready replica",
                table.endpoint
            ),
        )
    }
}

fn no_configuration() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "NoConfiguration",
        "the router has no configuration yet".into(),
    )
}

fn error(status: StatusCode, reason: &str, detail: String) -> Response {
    json_error(status, reason, &detail)
}
