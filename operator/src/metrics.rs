//! Prometheus metrics of the operator, served at `/metrics` by [`crate::admin`].
//!
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms). The cache
//! hit ratio is `toucan_cache_lookups_total{result="hit"}` over all lookups; it is also
//! exported directly as a gauge for dashboards without PromQL.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub controller: &'static str,
    /// `new` (an object's first reconcile) or `active` (see `crate::queue::Class`).
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

/// Every metric of the operator, registered once at start-up.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ControllerLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// Reconciles running now, per controller.
    pub reconciles_in_flight: Family<ControllerLabels, Gauge>,
    /// Objects waiting in a controller's work queue (due or not), per controller.
    pub queue_depth: Family<ControllerLabels, Gauge>,
    /// From an object's reconcile falling due to its start, per controller and class.
    pub queue_wait: Family<QueueLabels, Histogram>,
    /// From a step becoming ready (its last dependency finished, or the run started) to its
    /// pod being created.
    pub step_start_latency: Histogram,
    pub step_pods_created: Counter,
    pub cache_lookups: Family<ResultLabels, Counter>,
    cache_hit_ratio: Gauge<f64, AtomicU64>,
    pub runs_finished: Family<PhaseLabels, Counter>,
    /// Runs that have started and not finished.
    pub runs_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Counts a failed reconcile of `controller`, by the error's stable reason.
    pub fn reconcile_failed(&self, controller: &'static str, reason: &'static str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { controller, reason })
            .inc();
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("toucan");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 16))
            });
        let reconciles_in_flight = Family::<ControllerLabels, Gauge>::default();
        let queue_depth = Family::<ControllerLabels, Gauge>::default();
        let queue_wait = Family::<QueueLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 18))
        });
        let step_start_latency = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let step_pods_created = Counter::default();
        let cache_lookups = Family::<ResultLabels, Counter>::default();
        let cache_hit_ratio = Gauge::<f64, AtomicU64>::default();
        let runs_finished = Family::<PhaseLabels, Counter>::default();
        let runs_active = Gauge::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by reason",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long a reconcile took",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now",
            reconciles_in_flight.clone(),
        );
        registry.register(
            "queue_depth",
            "Objects waiting in a controller's work queue",
            queue_depth.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "From an object's reconcile falling due to its start, by class (new or active)",
            queue_wait.clone(),
        );
        registry.register(
            "step_start_latency_seconds",
            "From a step becoming ready to its pod being created",
            step_start_latency.clone(),
        );
        registry.register(
            "step_pods_created",
            "Step pods created",
            step_pods_created.clone(),
        );
        registry.register(
            "cache_lookups",
            "Cache lookups of steps about to start, by result (hit or miss)",
            cache_lookups.clone(),
        );
        registry.register(
            "cache_hit_ratio",
            "Hits over all cache lookups since start-up",
            cache_hit_ratio.clone(),
        );
        registry.register(
            "runs_finished",
            "PipelineRuns finished, by phase",
            runs_finished.clone(),
        );
        registry.register(
            "runs_active",
            "PipelineRuns started and not finished",
            runs_active.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            reconciles_in_flight,
            queue_depth,
            queue_wait,
            step_start_latency,
            step_pods_created,
            cache_lookups,
            cache_hit_ratio,
            runs_finished,
            runs_active,
        }
    }

    /// Counts one cache lookup and updates the ratio gauge.
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&ResultLabels { result })
            .inc();
        let hits = self
            .cache_lookups
            .get_or_create(&ResultLabels { result: "hit" })
            .get();
        let misses = self
            .cache_lookups
            .get_or_create(&ResultLabels { result: "miss" })
            .get();
        let total = hits + misses;
        if total > 0 {
            self.cache_hit_ratio.set(hits as f64 / total as f64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }

    /// Times one reconcile of `controller`; the guard records it when dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.reconciles_in_flight.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            started: std::time::Instant::now(),
        }
    }
}

/// Records a reconcile's duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    started: std::time::Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .reconcile_duration
            .get_or_create(&self.labels)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .reconciles_in_flight
            .get_or_create(&self.labels)
            .dec();
    }
}
