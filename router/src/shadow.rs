//! The shadow: a copy of some requests (chosen by [`crate::split::mirrored`]) sent to the
//! shadow version in the background, its answer read and thrown away.
//!
//! The caller never waits for it and never sees it: the copy is spawned before the caller's
//! own try starts and owns everything it needs. Copies in flight are bounded by a semaphore;
//! when it is full, or the shadow version has no ready replica, the copy is dropped and
//! counted, never queued. Copies carry `x-toucan-shadow: true` and the caller's request id,
//! are tried once, and count in the shadow version's stats (as `mirrored`), which is what a
//! shadow rollout's gates compare.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{HeaderName, HeaderValue};
use http_body_util::{BodyExt, Limited};

use crate::context::Context;
use crate::table::{RoutingTable, ShadowRoute};
use crate::upstream::{Forward, TryOutcome, send};

/// Marks a mirrored request, so the model server can leave it out of what it samples.
pub static SHADOW: HeaderName = HeaderName::from_static("x-toucan-shadow");
/// A shadow answer longer than this is read no further.
const SHADOW_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Sends a copy of the request to the shadow version in the background, or drops it.
pub fn mirror(
    ctx: &Arc<Context>,
    table: &Arc<RoutingTable>,
    shadow: ShadowRoute,
    request: &Forward,
) {
    let Ok(permit) = Arc::clone(&ctx.shadow_permits).try_acquire_owned() else {
        ctx.metrics.shadow_dropped("saturated");
        return;
    };
    let Some(version) = table.versions.get(shadow.version) else {
        return;
    };
    let Some(index) = version.choose_replica(&[]) else {
        ctx.metrics.shadow_dropped("no_ready_replica");
        return;
    };
    let mut copy = request.clone();
    copy.headers
        .insert(SHADOW.clone(), HeaderValue::from_static("true"));
    ctx.metrics.shadow_sent.inc();
    let ctx = Arc::clone(ctx);
    let table = Arc::clone(table);
    tokio::spawn(async move {
        let _permit = permit;
        let Some(version) = table.versions.get(shadow.version) else {
            return;
        };
        let Some(replica) = version.replicas.get(index) else {
            return;
        };
        let _version_in_flight = version.state.begin();
        let _replica_in_flight = replica.begin();
        let started = Instant::now();
        let outcome = send(&ctx.client, replica, copy, table.timeout).await;
        let elapsed = started.elapsed();
        let status = match outcome {
            TryOutcome::Answered(response) => {
                let status = response.status().as_u16();
                let _ = Limited::new(response.into_body(), SHADOW_BODY_LIMIT)
                    .collect()
                    .await;
                status
            }
            TryOutcome::Failed { detail, refused } => {
                if refused && replica.set_ready(false) {
                    tracing::warn!(replica = replica.url(), "shadow replica refused: {detail}");
                }
                502
            }
            TryOutcome::TimedOut => 504,
        };
        version.state.record(
            ctx.now_seconds(),
            elapsed.as_secs_f64() * 1000.0,
            status,
            true,
        );
        ctx.metrics
            .answered(&version.name, status, true, elapsed.as_secs_f64());
    });
}
