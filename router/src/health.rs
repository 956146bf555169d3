//! The router's own readiness probe of every replica: `GET /v2/health/ready` (the Open
//! Inference Protocol's), 200 meaning ready, every probe interval and at once whenever the
//! routing table changes, so a new replica takes traffic as soon as it answers.
//!
//! Verdicts land in each [`Replica`]; the split and the replica choice read them. Transitions
//! are logged, steady states are not.

use std::sync::Arc;
use std::time::Duration;

use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Limited};
use tokio::time::MissedTickBehavior;

use crate::context::Context;
use crate::replicas::Replica;
use crate::upstream::{Forward, TryOutcome, send};

/// The Open Inference Protocol's readiness path; TF Serving-style servers answer it too
/// (`toucan-worker serve` does).
pub const READY_PATH: &str = "/v2/health/ready";
/// A probe that takes longer than this counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Health answers are a few bytes; more than this is read no further (and the connection is
/// not reused).
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Probes every replica of the current table every `interval`, and at once on every new
/// table, until the table's sender is gone.
pub async fn probe_replicas(ctx: Arc<Context>, interval: Duration) {
    let mut tables = ctx.tables.subscribe();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = tables.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
        let table = tables.borrow_and_update().clone();
        if let Some(table) = table {
            join_all(
                table
                    .replicas()
                    .into_iter()
                    .map(|replica| probe(&ctx, replica)),
            )
            .await;
        }
    }
}

async fn probe(ctx: &Context, replica: Arc<Replica>) {
    let request = Forward {
        method: Method::GET,
        path_and_query: PathAndQuery::from_static(READY_PATH),
        headers: HeaderMap::new(),
        body: Bytes::new(),
    };
    let outcome = send(&ctx.client, &replica, request, PROBE_TIMEOUT).await;
    let (ready, why) = match outcome {
        TryOutcome::Answered(response) => {
            let status = response.status();
            // Read the few bytes so the connection goes back to the pool.
            let _ = Limited::new(response.into_body(), PROBE_BODY_LIMIT)
                .collect()
                .await;
            (status == StatusCode::OK, format!("answered {status}"))
        }
        TryOutcome::Failed { detail, .. } => (false, detail),
        TryOutcome::TimedOut => (
            false,
            format!(
                "no answer within {}",
                humantime::format_duration(PROBE_TIMEOUT)
            ),
        ),
    };
    if replica.set_ready(ready) {
        if ready {
            tracing::info!(replica = replica.url(), "replica is ready");
        } else {
            tracing::warn!(replica = replica.url(), "replica is not ready: {why}");
        }
    }
}
