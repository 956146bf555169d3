//! One trace per PipelineRun, built from the run's records rather than from live spans: a run
//! outlives any reconcile and any operator restart.
//!
//! [`step_attempt`] records a `step attempt` span per attempt, and [`run_finished`] the trace's
//! root span `pipeline run`. The trace id is the first 16 bytes of SHA-256 of the run id and the
//! root's span id the next 8 ([`run_trace_id`]), so every attempt lands in the same trace
//! whichever replica, process or reconcile records it, and in whatever order; the backend joins
//! them by these ids. With export off, both functions return after one uncontended lock read.

use std::cell::Cell;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer};
use sha2::{Digest as _, Sha256};
use toucan_core::time::Millis;

const STEP_ATTEMPT_SPAN: &str = "step attempt";
const PIPELINE_RUN_SPAN: &str = "pipeline run";

/// The tracer for run spans while export is on; `None` makes [`step_attempt`] and
/// [`run_finished`] no-ops.
static RUN_TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);

/// Export is on: run spans go to `tracer`.
pub(super) fn start(tracer: SdkTracer) {
    *write_run_tracer() = Some(tracer);
}

/// Export is shutting down: run spans are dropped from now on.
pub(super) fn stop() {
    *write_run_tracer() = None;
}

fn write_run_tracer() -> std::sync::RwLockWriteGuard<'static, Option<SdkTracer>> {
    RUN_TRACER
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn run_tracer() -> Option<SdkTracer> {
    RUN_TRACER
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone()
}

/// The trace id of a run's trace and the span id of its `pipeline run` root span: bytes 0..16
/// and 16..24 of SHA-256 of the run id.
fn run_ids(run_id: &str) -> (TraceId, SpanId) {
    let digest = Sha256::digest(run_id.as_bytes());
    let mut trace_id = [0; 16];
    trace_id.copy_from_slice(&digest[..16]);
    let mut span_id = [0; 8];
    span_id.copy_from_slice(&digest[16..24]);
    (TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id))
}

/// The trace id (32 lowercase hex digits) under which a run's spans are exported, for linking
/// to it from status, events or the CLI.
pub fn run_trace_id(run_id: &str) -> String {
    run_ids(run_id).0.to_string()
}

/// Records one attempt of one step of a run as a `step attempt` span, child of the run's
/// `pipeline run` root in the run's trace.
///
/// `started_ms` and `finished_ms` are Unix milliseconds; `outcome` is
/// the attempt's phase as stored (`Succeeded`, `Failed`, `Cancelled`, ...). `Failed` sets the
/// span status to error, `Succeeded` to ok. Attributes: `toucan.run_id`, `toucan.node`,
/// `toucan.attempt`, `toucan.outcome`.
///
/// Call it once per attempt, when the attempt's result is recorded; calling it again for the
/// same attempt exports a second span. A no-op when export is off.
pub fn step_attempt(
    run_id: &str,
    node: &str,
    attempt: u32,
    started_ms: Millis,
    finished_ms: Millis,
    outcome: &str,
) {
    let Some(tracer) = run_tracer() else {
        return;
    };
    let (trace_id, root_span_id) = run_ids(run_id);
    let root = SpanContext::new(
        trace_id,
        root_span_id,
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let parent = Context::new().with_remote_span_context(root);
    let builder = tracer
        .span_builder(STEP_ATTEMPT_SPAN)
        .with_kind(SpanKind::Internal)
        .with_start_time(unix_millis(started_ms))
        .with_attributes([
            KeyValue::new("toucan.run_id", run_id.to_owned()),
            KeyValue::new("toucan.node", node.to_owned()),
            KeyValue::new("toucan.attempt", i64::from(attempt)),
            KeyValue::new("toucan.outcome", outcome.to_owned()),
        ]);
    let mut span = tracer.build_with_context(builder, &parent);
    span.set_status(status_of(outcome));
    span.end_with_timestamp(unix_millis(finished_ms));
}

/// Records a run's root span, `pipeline run`, spanning the whole run. Attributes:
/// `toucan.run_id`, `toucan.pipeline`, `toucan.phase`; `Failed` sets the status to error.
///
/// Call it once, when the run reaches a final phase; its [`step_attempt`] spans may have been
/// exported before or after it. A no-op when export is off.
pub fn run_finished(
    run_id: &str,
    pipeline: &str,
    started_ms: Millis,
    finished_ms: Millis,
    phase: &str,
) {
    let Some(tracer) = run_tracer() else {
        return;
    };
    let builder = tracer
        .span_builder(PIPELINE_RUN_SPAN)
        .with_kind(SpanKind::Internal)
        .with_start_time(unix_millis(started_ms))
        .with_attributes([
            KeyValue::new("toucan.run_id", run_id.to_owned()),
            KeyValue::new("toucan.pipeline", pipeline.to_owned()),
            KeyValue::new("toucan.phase", phase.to_owned()),
        ]);
    // The SDK always draws a root span's ids from the provider's id generator, so the derived
    // ids are handed to it for the duration of this one call.
    let mut span = with_pinned_ids(run_ids(run_id), || {
        tracer.build_with_context(builder, &Context::new())
    });
    span.set_status(status_of(phase));
    span.end_with_timestamp(unix_millis(finished_ms));
}

fn status_of(phase: &str) -> Status {
    match phase {
        "Failed" => Status::error(phase.to_owned()),
        "Succeeded" => Status::Ok,
        _ => Status::Unset,
    }
}

fn unix_millis(ms: Millis) -> SystemTime {
    let offset = Duration::from_millis(ms.unsigned_abs());
    if ms >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
    .unwrap_or(UNIX_EPOCH)
}

// === impl RunIdGenerator ===

thread_local! {
    /// Ids the next span built on this thread must have; set only inside [`with_pinned_ids`].
    static PINNED_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

fn with_pinned_ids<T>(ids: (TraceId, SpanId), build: impl FnOnce() -> T) -> T {
    struct Unpin;
    impl Drop for Unpin {
        fn drop(&mut self) {
            PINNED_IDS.set(None);
        }
    }
    PINNED_IDS.set(Some(ids));
    let _unpin = Unpin;
    build()
}

/// Random ids, except inside [`with_pinned_ids`] on the calling thread.
#[derive(Debug, Default)]
pub(super) struct RunIdGenerator {
    random: RandomIdGenerator,
}

impl IdGenerator for RunIdGenerator {
    fn new_trace_id(&self) -> TraceId {
        match PINNED_IDS.get() {
            Some((trace_id, _)) => trace_id,
            None => self.random.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match PINNED_IDS.get() {
            Some((_, span_id)) => span_id,
            None => self.random.new_span_id(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn run_ids_come_from_sha256_of_the_run_id() {
        // `printf run-1 | sha256sum`
        let want = "4e65d3fbe8ad6535681b021b30785b12b6c0e3f8878859a4148b3f58b8835db0";
        let (trace_id, span_id) = run_ids("run-1");
        assert_eq!(trace_id.to_string(), want[..32]);
        assert_eq!(span_id.to_string(), want[32..48]);
        assert_eq!(run_trace_id("run-1"), want[..32]);
        assert_ne!(run_ids("run-2").0, trace_id);
    }

    #[test]
    fn run_spans_are_no_ops_while_export_is_off() {
        // No subscriber or provider is installed in unit tests.
        step_attempt("run-1", "train", 1, 0, 1, "Succeeded");
        run_finished("run-1", "demo", 0, 1, "Succeeded");
        assert!(run_tracer().is_none());
    }

    #[test]
    fn millis_become_system_times() {
        assert_eq!(
            unix_millis(1_700_000_000_123),
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert_eq!(unix_millis(-5), UNIX_EPOCH - Duration::from_millis(5));
    }
}
