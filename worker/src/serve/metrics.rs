//! The model server's Prometheus metrics, served at `/metrics` on the REST address.
//!
//! - `toucan_serve_requests_total{protocol,model,version,code}`: requests answered, by
//!   protocol (`v1`, `v2`, `grpc`), the model and version they reached (empty when the path
//!   or message named no served model) and code (HTTP status, or gRPC code name).
//! - `toucan_serve_request_duration_seconds{protocol}`: time in the server per request.
//! - `toucan_serve_batch_size`: instances per forward pass.
//! - `toucan_serve_queue_depth`: instances waiting for the model.
//! - `toucan_serve_sample_drops_total{reason}`: payload samples not delivered (`queue_full`:
//!   the shipping queue was full; `sink_error`: the sink refused or could not be reached).
//! - `toucan_serve_samples_shipped_total`: payload samples the sink accepted.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub protocol: &'static str,
    pub model: String,
    pub version: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub reason: &'static str,
}

/// Why a payload sample was not delivered.
pub const DROP_QUEUE_FULL: &str = "queue_full";
pub const DROP_SINK_ERROR: &str = "sink_error";

/// Every metric of the server, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<ProtocolLabels, Histogram>,
    pub batch_size: Histogram,
    pub queue_depth: Gauge,
    pub sample_drops: Family<DropLabels, Counter>,
    pub samples_shipped: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("toucan_serve");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<ProtocolLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let queue_depth = Gauge::default();
        let sample_drops = Family::<DropLabels, Counter>::default();
        let samples_shipped = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by protocol, model, version and code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time in the server per request, by protocol",
            request_duration.clone(),
        );
        registry.register(
            "batch_size",
            "Instances per forward pass",
            batch_size.clone(),
        );
        registry.register(
            "queue_depth",
            "Instances waiting for the model",
            queue_depth.clone(),
        );
        registry.register(
            "sample_drops",
            "Payload samples not delivered, by reason",
            sample_drops.clone(),
        );
        registry.register(
            "samples_shipped",
            "Payload samples the sink accepted",
            samples_shipped.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            batch_size,
            queue_depth,
            sample_drops,
            samples_shipped,
        }
    }

    /// Counts one answered request and its time.
    pub fn answered(
        &self,
        protocol: &'static str,
        target: Option<(&str, &str)>,
        code: String,
        seconds: f64,
    ) {
        let (model, version) = target.unwrap_or_default();
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                model: model.to_string(),
                version: version.to_string(),
                code,
            })
            .inc();
        self.request_duration
            .get_or_create(&ProtocolLabels { protocol })
            .observe(seconds);
    }

    pub fn dropped(&self, reason: &'static str, samples: u64) {
        self.sample_drops
            .get_or_create(&DropLabels { reason })
            .inc_by(samples);
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_metric() {
        let m = Metrics::new();
        m.answered("v1", Some(("digits", "1")), "200".into(), 0.01);
        m.answered("v2", None, "404".into(), 0.01);
        m.batch_size.observe(3.0);
        m.dropped(DROP_SINK_ERROR, 2);
        let text = m.encode();
        assert!(
            text.contains(
                r#"toucan_serve_requests_total{protocol="v1",model="digits",version="1",code="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"model="",version="",code="404""#), "{text}");
        assert!(text.contains("toucan_serve_batch_size_count 1"), "{text}");
        assert!(
            text.contains(r#"toucan_serve_sample_drops_total{reason="sink_error"} 2"#),
            "{text}"
        );
        assert!(text.contains("toucan_serve_queue_depth"), "{text}");
        assert!(
            text.contains("toucan_serve_samples_shipped_total 0"),
            "{text}"
        );
    }
}
