//! Prometheus metrics of the router, served at `/metrics`.
//!
//! The proxy ([`crate::proxy`]) and the shadow ([`crate::shadow`]) record into these as
//! requests finish; `/metrics` encodes them. Names follow Prometheus conventions (`_total`
//! counters, `_seconds` histograms). Latency is measured to the response headers, which for
//! the small JSON answers of model servers is the whole answer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The version label of answers no version gave (no configuration, no ready version).
pub const NO_VERSION: &str = "none";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub version: String,
    pub code: u16,
    /// `true` for the copies the shadow sent, whose answers nobody saw.
    pub mirrored: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `saturated` (too many copies in flight) or `no_ready_replica`.
    pub reason: &'static str,
}

/// Every metric of the router, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Answers by version and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds to the response headers, by version (mirrored copies included).
    pub latency: Family<VersionLabels, Histogram>,
    /// Requests a version is answering now (mirrored copies included).
    pub in_flight: Family<VersionLabels, Gauge>,
    /// Tries beyond the first, by version.
    pub retries: Family<VersionLabels, Counter>,
    pub shadow_sent: Counter,
    pub shadow_dropped: Family<DropLabels, Counter>,
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("toucan_router");
        let requests = Family::<RequestLabels, Counter>::default();
        // 1 ms to ~65 s.
        let latency = Family::<VersionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        let in_flight = Family::<VersionLabels, Gauge>::default();
        let retries = Family::<VersionLabels, Counter>::default();
        let shadow_sent = Counter::default();
        let shadow_dropped = Family::<DropLabels, Counter>::default();
        registry.register(
            "requests",
            "Answers by version and status code",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to the response headers, by version",
            latency.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests a version is answering now",
            in_flight.clone(),
        );
        registry.register(
            "retries",
            "Tries beyond the first, on another replica of the same version",
            retries.clone(),
        );
        registry.register(
            "shadow_sent",
            "Copies of requests sent to the shadow version",
            shadow_sent.clone(),
        );
        registry.register(
            "shadow_dropped",
            "Copies of requests not sent to the shadow version, by reason",
            shadow_dropped.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            in_flight,
            retries,
            shadow_sent,
            shadow_dropped,
        }
    }

    /// Records one answer of `version`.
    pub fn answered(&self, version: &str, code: u16, mirrored: bool, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                version: version.to_string(),
                code,
                mirrored,
            })
            .inc();
        if version != NO_VERSION {
            self.latency
                .get_or_create(&VersionLabels {
                    version: version.to_string(),
                })
                .observe(seconds);
        }
    }

    /// The gauge of requests in flight to `version`.
    pub fn in_flight_gauge(&self, version: &str) -> Gauge {
        self.in_flight
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .clone()
    }

    pub fn retried(&self, version: &str) {
        self.retries
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .inc();
    }

    pub fn shadow_dropped(&self, reason: &'static str) {
        self.shadow_dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }
}
