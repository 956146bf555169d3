#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! OTLP export end to end: the operator's telemetry, configured by the standard `OTEL_*`
//! variables alone, is pointed at an OTLP/HTTP receiver served here on 127.0.0.1, and what it
//! receives is decoded and checked.
//!
//! The exporting side runs in a child process (this test binary again, running only
//! [`exporting_process`]): the SDK reads the variables from the process environment, which a
//! test cannot set in its own process without `unsafe`, and `telemetry::init` installs the
//! process-wide subscriber.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use toucan_operator::telemetry;

/// One POST /v1/traces as the receiver saw it.
struct Export {
    headers: HeaderMap,
    body: Bytes,
}

/// Serves POST /v1/traces on 127.0.0.1; every request lands on the returned channel.
async fn start_receiver() -> (String, mpsc::UnboundedReceiver<Export>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            async move {
                tx.send(Export { headers, body }).unwrap();
                // An empty ExportTraceServiceResponse: full success.
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

/// A received span with the resource attributes of its batch.
struct Received {
    span: Span,
    resource: HashMap<String, Value>,
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, Value> {
    kvs.iter()
        .map(|kv| {
            let value = kv.value.as_ref().and_then(|v| v.value.clone()).unwrap();
            (kv.key.clone(), value)
        })
        .collect()
}

fn string(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn ms_to_ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap() * 1_000_000
}

/// Set only in the child process that [`a_run_is_one_trace_with_a_span_per_step_attempt`]
/// starts.
const CHILD: &str = "TOUCAN_TELEMETRY_TEST_CHILD";
const RUN_ID: &str = "01JRUNULIDFORTELEMETRYTEST";
const T0: i64 = 1_760_000_000_000;

/// The exporting side: what the operator records, with export configured from the environment.
#[test]
#[ignore = "run by a_run_is_one_trace_with_a_span_per_step_attempt in a child process"]
fn exporting_process() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let guard = telemetry::init().unwrap();

    // What kube-runtime does around every reconcile.
    tracing::info_span!(
        target: "kube_runtime::controller",
        "reconciling object",
        "object.ref" = "PipelineRun.v1alpha1.toucan.dev/nightly-1.ml",
        object.reason = "object updated"
    )
    .in_scope(|| tracing::info!("reconciled"));

    telemetry::step_attempt(RUN_ID, "train", 1, T0 + 100, T0 + 1_600, "Failed");
    telemetry::step_attempt(RUN_ID, "train", 2, T0 + 2_000, T0 + 9_250, "Succeeded");
    telemetry::run_finished(RUN_ID, "nightly", T0, T0 + 9_500, "Succeeded");
    // Another run: another trace.
    telemetry::step_attempt("another-run", "prep", 1, T0, T0 + 10, "Succeeded");

    // Flushes and shuts down; blocks until the receiver has answered every export.
    drop(guard);
    // With export shut down the run functions do nothing, and must not fail.
    telemetry::step_attempt(RUN_ID, "train", 3, T0, T0 + 1, "Succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_one_trace_with_a_span_per_step_attempt() {
    let (endpoint, mut exports) = start_receiver().await;
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap());
    child.args([
        "exporting_process",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    // Only the variables below configure the child, whatever this environment holds.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("OTEL_") {
            child.env_remove(name);
        }
    }
    child
        .env(CHILD, "1")
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "toucan-operator-under-test")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=overridden,k8s.namespace.name=toucan%2Dsystem,deployment.environment=test",
        )
        .env("OTEL_EXPORTER_OTLP_HEADERS", "x-toucan-token=wrong")
        .env(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "x-toucan-token=s3cret%20token",
        );
    let output = child.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the exporting process failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("exporting spans over OTLP/HTTP"),
        "the start-up log names the export:\n{stderr}"
    );
    let run_id = RUN_ID;
    let t0 = T0;

    let mut received = Vec::new();
    while let Ok(export) = exports.try_recv() {
        assert_eq!(export.headers["x-toucan-token"], "s3cret token");
        assert_eq!(
            export.headers[header::CONTENT_TYPE],
            "application/x-protobuf"
        );
        let request = ExportTraceServiceRequest::decode(export.body).unwrap();
        for resource_spans in request.resource_spans {
            let resource = attributes(&resource_spans.resource.unwrap().attributes);
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(Received {
                        span,
                        resource: resource.clone(),
                    });
                }
            }
        }
    }
    let names: Vec<&str> = received.iter().map(|r| r.span.name.as_str()).collect();
    let named = |name: &str| -> Vec<&Received> {
        received.iter().filter(|r| r.span.name == name).collect()
    };

    for r in &received {
        assert_eq!(
            r.resource["service.name"],
            string("toucan-operator-under-test")
        );
        assert_eq!(r.resource["k8s.namespace.name"], string("toucan-system"));
        assert_eq!(r.resource["deployment.environment"], string("test"));
    }

    let digest = Sha256::digest(run_id.as_bytes());
    let trace_id = &digest[..16];
    let root_span_id = &digest[16..24];

    let roots = named("pipeline run");
    assert_eq!(roots.len(), 1, "spans received: {names:?}");
    let root = &roots[0].span;
    assert_eq!(root.trace_id, trace_id);
    assert_eq!(root.span_id, root_span_id);
    assert!(root.parent_span_id.is_empty(), "the run span is the root");
    assert_eq!(root.start_time_unix_nano, ms_to_ns(t0));
    assert_eq!(root.end_time_unix_nano, ms_to_ns(t0 + 9_500));
    let attrs = attributes(&root.attributes);
    assert_eq!(attrs["toucan.run_id"], string(run_id));
    assert_eq!(attrs["toucan.pipeline"], string("nightly"));
    assert_eq!(attrs["toucan.phase"], string("Succeeded"));

    let mut attempts: Vec<&Span> = named("step attempt")
        .into_iter()
        .map(|r| &r.span)
        .filter(|s| s.trace_id == trace_id)
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(attempts.len(), 2, "spans received: {names:?}");
    let expected = [
        (1, t0 + 100, t0 + 1_600, "Failed", SpanStatus::Error),
        (2, t0 + 2_000, t0 + 9_250, "Succeeded", SpanStatus::Ok),
    ];
    for (span, (attempt, start, end, outcome, status)) in attempts.iter().zip(expected) {
        assert_eq!(span.parent_span_id, root_span_id);
        assert_ne!(span.span_id, root_span_id);
        assert_eq!(span.start_time_unix_nano, ms_to_ns(start));
        assert_eq!(span.end_time_unix_nano, ms_to_ns(end));
        let attrs = attributes(&span.attributes);
        assert_eq!(attrs["toucan.run_id"], string(run_id));
        assert_eq!(attrs["toucan.node"], string("train"));
        assert_eq!(attrs["toucan.attempt"], Value::IntValue(attempt));
        assert_eq!(attrs["toucan.outcome"], string(outcome));
        assert_eq!(span.status.as_ref().unwrap().code, status as i32);
    }
    assert_ne!(attempts[0].span_id, attempts[1].span_id);

    let other: Vec<&Received> = named("step attempt")
        .into_iter()
        .filter(|r| r.span.trace_id != trace_id)
        .collect();
    assert_eq!(other.len(), 1, "spans received: {names:?}");
    assert_eq!(
        other[0].span.trace_id,
        &Sha256::digest(b"another-run")[..16]
    );

    // The tracing span went out through the tracing-opentelemetry layer, in a trace of its own.
    let reconciles = named("reconciling object");
    assert_eq!(reconciles.len(), 1, "spans received: {names:?}");
    let reconcile = &reconciles[0].span;
    assert_ne!(reconcile.trace_id, trace_id);
    assert!(reconcile.parent_span_id.is_empty());
    let attrs = attributes(&reconcile.attributes);
    assert_eq!(
        attrs["object.ref"],
        string("PipelineRun.v1alpha1.toucan.dev/nightly-1.ml")
    );
    assert!(
        reconcile.events.iter().any(|e| e.name == "reconciled"),
        "the log event inside the reconcile is a span event"
    );

    assert_eq!(received.len(), 5, "spans received: {names:?}");
}
