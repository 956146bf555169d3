//! Logging and tracing for the operator: `tracing` events to stderr, and spans exported over
//! OTLP to an OpenTelemetry collector when one is configured.
//!
//! # Logs
//!
//! Everything goes through `tracing`; the `fmt` layer writes to stderr, filtered by `RUST_LOG`
//! (default `info`, an `EnvFilter` directive). The same filter decides which spans exist at all,
//! so it also bounds what is exported.
//!
//! # Turning on OTLP export
//!
//! Only the standard OpenTelemetry variables configure export; nothing is toucan-specific.
//! Setting `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, used as is) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, `/v1/traces` appended) turns it on. The OTLP
//! exporter and the SDK read the rest themselves: the endpoints, `OTEL_EXPORTER_OTLP_HEADERS`
//! and `..._TRACES_HEADERS` (percent-decoded), `..._TIMEOUT`, `..._COMPRESSION`,
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `..._ARG`,
//! `OTEL_SPAN_*_COUNT_LIMIT` and `OTEL_BSP_*`.
//!
//! [`env`] holds the few rules the SDK (0.33) leaves to its user, each for a stated reason:
//! that no endpoint means no export (the exporter would otherwise send to `localhost:4318`),
//! `OTEL_SDK_DISABLED` and `OTEL_TRACES_EXPORTER` (the SDK does not read them), refusing a
//! protocol other than `http/protobuf` (the SDK only logs a warning, before any subscriber
//! exists, and sends protobuf anyway), percent-decoding `OTEL_RESOURCE_ATTRIBUTES` values (the
//! SDK keeps them encoded), and `toucan-operator` as the default `service.name` (the SDK's is
//! `unknown_service:<executable>`).
//!
//! The transport is OTLP/HTTP with protobuf bodies, through a blocking `reqwest` client owned by
//! the SDK's batch span processor thread: [`init`] runs before the tokio runtime exists, and
//! export must not depend on it (an async client would need the runtime's reactor). `https://`
//! endpoints use rustls with the workspace's aws-lc-rs provider and the platform's roots.
//!
//! # What is exported
//!
//! - Every `tracing` span the filter lets through, as an OpenTelemetry span (its events become
//!   span events). The work queue (`crate::queue`) wraps each reconcile in an `info` span named
//!   `reconciling object` (attributes `object.ref`, `object.class`), so there is a span per
//!   reconcile, with the reconciler's own spans and log events inside it. Spans of the export
//!   machinery itself (`opentelemetry*`, `hyper*`, `reqwest*`, `h2`, `tower*`, `rustls*`) are
//!   never exported, so that exporting cannot feed itself.
//! - One trace per PipelineRun, built from the run's records rather than from live spans:
//!   see [`runs`].
//!
//! Spans leave in batches (the SDK's batch span processor); [`TelemetryGuard`] flushes and shuts
//! the exporter down when dropped.

pub mod env;
mod runs;

pub use runs::{run_finished, run_trace_id, step_attempt};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use env::DEFAULT_SERVICE_NAME;

/// Name of the instrumentation scope of the operator's spans.
const SCOPE: &str = "toucan-operator";

/// Targets whose spans and events are never exported: the exporter's own HTTP stack and the
/// SDK's internal logs. Exporting them would make every export produce more to export.
const EXPORT_MACHINERY_TARGETS: &[&str] =
    &["opentelemetry", "hyper", "reqwest", "h2", "tower", "rustls"];

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{variable}={value:?}: toucan-operator exports OTLP over http/protobuf only")]
    UnsupportedProtocol {
        variable: &'static str,
        value: String,
    },
    #[error("building the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("installing the tracing subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

impl TelemetryError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            TelemetryError::UnsupportedProtocol { .. } => "OtlpProtocol",
            TelemetryError::Exporter(_) => "OtlpExporter",
            TelemetryError::Subscriber(_) => "TracingSubscriber",
        }
    }
}

// === impl TelemetryGuard ===

/// Keeps export running; flushes the spans still queued and shuts the exporter down when
/// dropped. Drop it outside async code, or in `spawn_blocking`: the flush blocks until the
/// collector answers or the export times out.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        runs::stop();
        if let Err(e) = provider.shutdown() {
            tracing::warn!("flushing the last spans to the OTLP collector: {e}");
        }
    }
}

/// Installs the global `tracing` subscriber, configured from the process environment (see the
/// module docs). Call once, before anything logs.
pub fn init() -> Result<TelemetryGuard, TelemetryError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let export = env::OtlpExport::from_lookup(lookup)?;
    let provider = match &export {
        Some(_) => Some(provider(env::resource(lookup))?),
        None => None,
    };
    let otel_layer = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SCOPE))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !is_export_machinery(meta.target())
            }))
    });
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(otel_layer)
        .try_init()?;
    if let (Some(provider), Some(export)) = (&provider, &export) {
        runs::start(provider.tracer(SCOPE));
        tracing::info!(
            variable = export.variable,
            endpoint = %export.endpoint,
            "exporting spans over OTLP/HTTP"
        );
    }
    Ok(TelemetryGuard { provider })
}

/// The tracer provider: the exporter takes its endpoint, headers, timeout and compression from
/// the environment; only the protocol is fixed here, the one transport built in.
fn provider(resource: opentelemetry_sdk::Resource) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_id_generator(runs::RunIdGenerator::default())
        .with_batch_exporter(exporter)
        .build())
}

fn is_export_machinery(target: &str) -> bool {
    EXPORT_MACHINERY_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', ':', '-']))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_export_machinery_is_recognised_by_target_prefix() {
        for target in [
            "opentelemetry",
            "opentelemetry_sdk::trace",
            "opentelemetry-otlp",
            "hyper_util::client",
            "reqwest::blocking",
            "h2::codec",
        ] {
            assert!(is_export_machinery(target), "{target}");
        }
        for target in [
            "toucan_operator::run",
            "kube_runtime::controller",
            "h2o",
            "towers",
        ] {
            assert!(!is_export_machinery(target), "{target}");
        }
    }
}
