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
//! Only the standard OpenTelemetry variables configure export; nothing is toucan-specific:
//!
//! | variable | meaning |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | full URL spans are POSTed to, used as is (e.g. `http://otel-collector:4318/v1/traces`) |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | base URL of the collector; `/v1/traces` is appended. Either endpoint turns export on |
//! | `OTEL_SDK_DISABLED=true` | export stays off even with an endpoint |
//! | `OTEL_TRACES_EXPORTER` | export stays off unless it is unset or lists `otlp` (`none` turns it off) |
//! | `OTEL_SERVICE_NAME` | `service.name` (default `toucan-operator`; a `service.name` in the attributes below also counts) |
//! | `OTEL_RESOURCE_ATTRIBUTES` | `key=value,key=value` resource attributes, values percent-decoded (`k8s.pod.name=$(POD_NAME)` from the downward API is the usual use) |
//! | `OTEL_EXPORTER_OTLP_TRACES_HEADERS` / `OTEL_EXPORTER_OTLP_HEADERS` | `key=value,...` HTTP headers sent with every export (auth tokens for hosted backends) |
//! | `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` | must be `http/protobuf` (the only protocol built in) if set; anything else fails start-up |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_TRACES_SAMPLER`, `OTEL_BSP_*` | read by the OpenTelemetry SDK itself |
//!
//! The transport is OTLP/HTTP with protobuf bodies, through a blocking `reqwest` client owned by
//! the SDK's batch span processor thread: [`init`] runs before the tokio runtime exists, and
//! export must not depend on it (an async client would need the runtime's reactor). `https://`
//! endpoints use rustls with the workspace's aws-lc-rs provider and the platform's roots.
//!
//! # What is exported
//!
//! - Every `tracing` span the filter lets through, as an OpenTelemetry span (its events become
//!   span events). kube-runtime wraps each reconcile in an `info` span named
//!   `reconciling object` (attributes `object.ref`, `object.reason`), so there is a span per
//!   reconcile, with the reconciler's own spans and log events inside it. Spans of the export
//!   machinery itself (`opentelemetry*`, `hyper*`, `reqwest*`, `h2`, `tower*`, `rustls*`) are
//!   never exported, so that exporting cannot feed itself.
//! - One trace per PipelineRun, built from the run's records rather than from live spans (a run
//!   outlives any reconcile and any operator restart): [`step_attempt`] records a
//!   `step attempt` span per attempt, and [`run_finished`] the trace's root span `pipeline run`.
//!   The trace id is the first 16 bytes of SHA-256 of the run id and the root's span id the next
//!   8 ([`run_trace_id`]), so every attempt lands in the same trace whichever replica, process
//!   or reconcile records it, and in whatever order; the backend joins them by these ids.
//!
//! Spans leave in batches (the SDK's batch span processor); [`TelemetryGuard`] flushes and shuts
//! the exporter down when dropped. With export off, [`step_attempt`] and [`run_finished`] return
//! after one uncontended lock read.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_HEADERS, OTEL_EXPORTER_OTLP_PROTOCOL,
    OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_HEADERS, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, Protocol,
    WithExportConfig as _, WithHttpConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::resource::TelemetryResourceDetector;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use sha2::{Digest as _, Sha256};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `service.name` when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names one.
pub const DEFAULT_SERVICE_NAME: &str = "toucan-operator";

const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
const OTEL_TRACES_EXPORTER: &str = "OTEL_TRACES_EXPORTER";
const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
const SERVICE_NAME_KEY: &str = "service.name";
const TRACES_PATH: &str = "/v1/traces";

/// Name of the instrumentation scope of the run spans.
const SCOPE: &str = "toucan-operator";
const STEP_ATTEMPT_SPAN: &str = "step attempt";
const PIPELINE_RUN_SPAN: &str = "pipeline run";

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
    #[error("{variable}={value:?}: not an http:// or https:// URL")]
    InvalidEndpoint {
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
            TelemetryError::InvalidEndpoint { .. } => "OtlpEndpoint",
            TelemetryError::Exporter(_) => "OtlpExporter",
            TelemetryError::Subscriber(_) => "TracingSubscriber",
        }
    }
}

// === impl OtlpSettings ===

/// Where and how spans are exported, as read from the standard `OTEL_*` variables.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    traces_endpoint: String,
    service_name: String,
    resource_attributes: Vec<(String, String)>,
    headers: Vec<(String, String)>,
}

impl OtlpSettings {
    /// Reads the process environment; `None` when export is off.
    pub fn from_env() -> Result<Option<Self>, TelemetryError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the variables through `lookup` (the environment in production, a table in tests);
    /// `None` when export is off. Empty values count as unset.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, TelemetryError> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        if var(OTEL_SDK_DISABLED).is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        if let Some(exporters) = var(OTEL_TRACES_EXPORTER)
            && !exporters.split(',').any(|e| e.trim() == "otlp")
        {
            return Ok(None);
        }
        let traces_endpoint = if let Some(url) = var(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) {
            check_url(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, url)?
        } else if let Some(base) = var(OTEL_EXPORTER_OTLP_ENDPOINT) {
            let url = format!("{}{TRACES_PATH}", base.trim_end_matches('/'));
            check_url(OTEL_EXPORTER_OTLP_ENDPOINT, url)?
        } else {
            return Ok(None);
        };
        for variable in [
            OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            OTEL_EXPORTER_OTLP_PROTOCOL,
        ] {
            if let Some(value) = var(variable)
                && value != OTEL_EXPORTER_OTLP_PROTOCOL_HTTP_PROTOBUF
            {
                return Err(TelemetryError::UnsupportedProtocol { variable, value });
            }
        }
        let mut resource_attributes = var(OTEL_RESOURCE_ATTRIBUTES)
            .map(|s| parse_key_values(&s))
            .unwrap_or_default();
        let service_name = var(OTEL_SERVICE_NAME)
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == SERVICE_NAME_KEY)
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        resource_attributes.retain(|(k, _)| k != SERVICE_NAME_KEY);
        let headers = var(OTEL_EXPORTER_OTLP_TRACES_HEADERS)
            .or_else(|| var(OTEL_EXPORTER_OTLP_HEADERS))
            .map(|s| parse_key_values(&s))
            .unwrap_or_default();
        Ok(Some(OtlpSettings {
            traces_endpoint,
            service_name,
            resource_attributes,
            headers,
        }))
    }

    /// The URL spans are POSTed to.
    pub fn traces_endpoint(&self) -> &str {
        &self.traces_endpoint
    }

    pub fn service_name(&self) -> &str {
        &self.service_name
    }

    fn resource(&self) -> Resource {
        Resource::builder_empty()
            .with_detector(Box::new(TelemetryResourceDetector))
            .with_attributes(
                self.resource_attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_service_name(self.service_name.clone())
            .build()
    }

    fn provider(&self) -> Result<SdkTracerProvider, TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(self.traces_endpoint.clone())
            .with_headers(self.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build()?;
        Ok(SdkTracerProvider::builder()
            .with_resource(self.resource())
            .with_id_generator(RunIdGenerator::default())
            .with_batch_exporter(exporter)
            .build())
    }
}

/// Header values are often credentials: show only their names.
impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSettings")
            .field("traces_endpoint", &self.traces_endpoint)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn check_url(variable: &'static str, value: String) -> Result<String, TelemetryError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value)
    } else {
        Err(TelemetryError::InvalidEndpoint { variable, value })
    }
}

/// Parses the W3C-baggage-like `key=value,key=value` lists of `OTEL_RESOURCE_ATTRIBUTES` and
/// `OTEL_EXPORTER_OTLP_HEADERS`, percent-decoding keys and values. Written here because the SDK
/// keeps its parsers private and only reads the real environment; entries without `=` are
/// skipped, as the specification asks.
fn parse_key_values(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|entry| {
            let (key, value) = entry.split_once('=')?;
            let key = percent_decode(key.trim());
            (!key.is_empty()).then(|| (key, percent_decode(value.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
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
        *write_run_tracer() = None;
        if let Err(e) = provider.shutdown() {
            tracing::warn!("flushing the last spans to the OTLP collector: {e}");
        }
    }
}

/// Installs the global `tracing` subscriber, configured from the environment (see the module
/// docs). Call once, before anything logs.
pub fn init() -> Result<TelemetryGuard, TelemetryError> {
    init_with(OtlpSettings::from_env()?)
}

/// [`init`] with the export settings given: `None` logs to stderr only.
pub fn init_with(otlp: Option<OtlpSettings>) -> Result<TelemetryGuard, TelemetryError> {
    let provider = otlp.as_ref().map(OtlpSettings::provider).transpose()?;
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
    if let (Some(provider), Some(otlp)) = (&provider, &otlp) {
        *write_run_tracer() = Some(provider.tracer(SCOPE));
        tracing::info!(
            endpoint = otlp.traces_endpoint(),
            service.name = otlp.service_name(),
            "exporting spans over OTLP/HTTP"
        );
    }
    Ok(TelemetryGuard { provider })
}

fn is_export_machinery(target: &str) -> bool {
    EXPORT_MACHINERY_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', ':', '-']))
    })
}

// === run traces ===

/// The tracer for run spans while export is on; `None` makes [`step_attempt`] and
/// [`run_finished`] no-ops.
static RUN_TRACER: RwLock<Option<SdkTracer>> = RwLock::new(None);

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
/// `started_ms` and `finished_ms` are Unix milliseconds (the store's `Millis`); `outcome` is
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
    started_ms: i64,
    finished_ms: i64,
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
pub fn run_finished(run_id: &str, pipeline: &str, started_ms: i64, finished_ms: i64, phase: &str) {
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

fn unix_millis(ms: i64) -> SystemTime {
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
struct RunIdGenerator {
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

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtlpSettings>, TelemetryError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        OtlpSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn export_is_off_without_an_endpoint_or_when_disabled() {
        let off: &[&[(&str, &str)]] = &[
            &[],
            &[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            ],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")],
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            &[
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://c:4318/v1/traces",
                ),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ];
        for vars in off {
            assert_eq!(settings(vars).unwrap(), None, "{vars:?}");
        }
        let on = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "false"),
            ("OTEL_TRACES_EXPORTER", "console,otlp"),
        ])
        .unwrap();
        assert!(on.is_some());
    }

    #[test]
    fn endpoints_follow_the_otlp_http_rules() {
        let cases = [
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                "http://c:4318/v1/traces",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318/otlp/")],
                "https://c:4318/otlp/v1/traces",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://wrong:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom"),
                ],
                "http://c:9999/custom",
            ),
        ];
        for (vars, want) in cases {
            let got = settings(&vars).unwrap().unwrap();
            assert_eq!(got.traces_endpoint(), want, "{vars:?}");
        }
    }

    #[test]
    fn unsupported_protocols_and_endpoints_are_refused() {
        let err = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .unwrap_err();
        assert_eq!(err.reason(), "OtlpProtocol");
        assert!(
            err.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL"),
            "{err}"
        );
        let err = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "c:4318")]).unwrap_err();
        assert_eq!(err.reason(), "OtlpEndpoint");
        assert!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ])
            .unwrap()
            .is_some()
        );
    }

    #[test]
    fn service_name_resource_attributes_and_headers() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let s = settings(&[endpoint]).unwrap().unwrap();
        assert_eq!(s.service_name(), DEFAULT_SERVICE_NAME);

        let s = settings(&[
            endpoint,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-attrs, k8s.namespace.name=toucan%2Dsystem,broken,note=a%2Cb",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20secret",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.service_name(), "from-attrs");
        assert_eq!(
            s.resource_attributes,
            vec![
                ("k8s.namespace.name".to_owned(), "toucan-system".to_owned()),
                ("note".to_owned(), "a,b".to_owned()),
            ]
        );
        assert_eq!(
            s.headers,
            vec![("authorization".to_owned(), "Bearer secret".to_owned())]
        );
        let debug = format!("{s:?}");
        assert!(!debug.contains("secret"), "{debug}");

        let s = settings(&[
            endpoint,
            ("OTEL_SERVICE_NAME", "from-var"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.service_name(), "from-var");
        assert!(s.resource_attributes.is_empty());
        assert_eq!(s.headers, vec![("b".to_owned(), "2".to_owned())]);
    }

    #[test]
    fn percent_decoding_leaves_malformed_escapes_alone() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
    }

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
