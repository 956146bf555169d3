//! The one context every part of the router shares by `Arc`: the settings, the HTTP client
//! and its pool, the metrics, the current routing table and the shadow's concurrency budget.
//!
//! Configurations come in through [`Context::apply`], which builds a new
//! [`RoutingTable`] from the previous one and publishes it on a watch channel: the proxy
//! reads the latest on every request, the health probe wakes up on every change.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use crate::config::RouterConfig;
use crate::metrics::Metrics;
use crate::table::RoutingTable;
use crate::upstream::{HttpClient, client};

/// What the router is run with, besides its configuration.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// How often every replica is probed.
    pub probe_interval: Duration,
    /// Request bodies are buffered (so they can be retried and mirrored) up to this; larger
    /// ones are answered 413.
    pub max_body_bytes: usize,
    /// Mirrored requests in flight at most; a copy beyond is dropped and counted.
    pub shadow_concurrency: usize,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            probe_interval: Duration::from_secs(1),
            max_body_bytes: 16 * 1024 * 1024,
            shadow_concurrency: 64,
        }
    }
}

/// Shared by the proxy, the shadow, the probe and the admin handlers.
#[derive(Debug)]
pub struct Context {
    pub settings: RouterSettings,
    pub client: HttpClient,
    pub metrics: Metrics,
    /// `None` until the first configuration arrives.
    pub tables: watch::Sender<Option<Arc<RoutingTable>>>,
    pub shadow_permits: Arc<Semaphore>,
    started: Instant,
}

// === impl Context ===

impl Context {
    pub fn new(settings: RouterSettings) -> Arc<Context> {
        let shadow_permits = Arc::new(Semaphore::new(settings.shadow_concurrency));
        Arc::new(Context {
            settings,
            client: client(),
            metrics: Metrics::new(),
            tables: watch::Sender::new(None),
            shadow_permits,
            started: Instant::now(),
        })
    }

    /// The table in force now.
    pub fn table(&self) -> Option<Arc<RoutingTable>> {
        self.tables.borrow().clone()
    }

    /// Installs a validated configuration.
    pub fn apply(&self, config: &RouterConfig) {
        let previous = self.table();
        let table = RoutingTable::build(config, previous.as_deref(), &self.metrics);
        tracing::info!(
            endpoint = %table.endpoint,
            versions = ?config
                .versions
                .iter()
                .map(|v| format!("{}={} ({} replicas)", v.name, v.weight, v.replicas.len()))
                .collect::<Vec<_>>(),
            "configuration applied"
        );
        self.tables.send_replace(Some(Arc::new(table)));
    }

    /// Whole seconds since the router started: the clock of the stats windows.
    pub fn now_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
