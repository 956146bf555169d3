//! The endpoints' monitoring gauges, for Prometheus to scrape.
//!
//! The shell's monitoring loop assesses each endpoint on a schedule
//! ([`toucan_core::monitoring::assess`]) and sets the figures of the pass on the
//! [`GaugeBoard`], replacing that endpoint's previous ones; `GET /metrics` renders every
//! endpoint's figures together in Prometheus's text format, over which Prometheus evaluates the
//! generated alerting rules. The route holds figures only, as the operator's own `/metrics`
//! does, so it asks for no token: Prometheus scrapes it as it scrapes any exporter.

use std::collections::BTreeMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use toucan_core::monitoring::assess::{Series, exposition};

use super::{ApiError, ApiResult, ApiState, ErrorBody};

/// The content type of Prometheus's text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4";

/// The newest monitoring figures of every endpoint, by the endpoint's store key
/// (`NAMESPACE/NAME` in a cluster).
#[derive(Debug, Default)]
pub struct GaugeBoard {
    by_endpoint: RwLock<BTreeMap<String, Vec<Series>>>,
}

// === impl GaugeBoard ===

impl GaugeBoard {
    /// Replaces `endpoint`'s figures with those of its newest pass.
    pub fn set(&self, endpoint: &str, series: Vec<Series>) {
        self.write().insert(endpoint.to_string(), series);
    }

    /// Forgets `endpoint`'s figures (it was deleted, or stopped being monitored).
    pub fn remove(&self, endpoint: &str) {
        self.write().remove(endpoint);
    }

    /// Keeps only the endpoints `keep` says yes to.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.write().retain(|endpoint, _| keep(endpoint));
    }

    /// Every endpoint's figures in Prometheus's text format, each family's `# HELP` and
    /// `# TYPE` once.
    pub fn render(&self) -> String {
        let all: Vec<Series> = self.read().values().flatten().cloned().collect();
        exposition(&all)
    }

    // A writer that panicked left whole entries behind (`insert` and `remove` do not panic
    // halfway), so the map is still sound to use.
    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Vec<Series>>> {
        self.by_endpoint.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Vec<Series>>> {
        self.by_endpoint.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// The endpoints' monitoring gauges
///
/// Evaluation metrics with their confidence intervals and drift scores of every monitored
/// endpoint, as of its newest monitoring pass, in Prometheus's text exposition format.
#[utoipa::path(
    get,
    path = "/metrics",
    security(()),
    responses(
        (status = 200, description = "OK", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 404, description = "This server exports no endpoint gauges.", body = ErrorBody),
    ),
)]
pub(super) async fn metrics(State(state): State<ApiState>) -> ApiResult<Response> {
    let Some(board) = &state.gauges else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "this server exports no endpoint gauges",
        ));
    };
    Ok(([(header::CONTENT_TYPE, PROMETHEUS_TEXT)], board.render()).into_response())
}
