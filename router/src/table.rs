//! The routing table: a validated [`RouterConfig`] turned into what the proxy reads on every
//! request — the versions in order with their weights, replicas and live state.
//!
//! A new table is built on every configuration change and swapped in whole; requests already
//! running keep the table they started with. Live state outlives the swap: a replica (by URL)
//! keeps its probe verdict and in-flight count, a version (by name) its stats window, so a
//! weight change does not make every replica unready or reset the numbers the rollout gates
//! read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::HeaderName;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{RouterConfig, replica_authority};
use crate::metrics::Metrics;
use crate::replicas::{Candidate, Replica, choose_replica};
use crate::split::VersionShare;
use crate::stats::{StatsWindow, WindowSummary};

/// What the proxy routes by, for one configuration.
#[derive(Debug)]
pub struct RoutingTable {
    pub endpoint: String,
    pub versions: Vec<VersionRoute>,
    pub shadow: Option<ShadowRoute>,
    pub sticky_header: Option<HeaderName>,
    pub retries: u32,
    pub timeout: Duration,
}

/// One version: its weight, its replicas, its live state.
#[derive(Debug)]
pub struct VersionRoute {
    pub name: String,
    pub weight: u32,
    pub replicas: Vec<Arc<Replica>>,
    pub state: Arc<VersionState>,
}

/// The shadow, resolved to an index into [`RoutingTable::versions`].
#[derive(Debug, Clone, Copy)]
pub struct ShadowRoute {
    pub version: usize,
    pub percent: f64,
}

/// What a version keeps across configuration changes.
#[derive(Debug)]
pub struct VersionState {
    in_flight: AtomicUsize,
    /// Advanced on every replica choice, so equal replicas are taken in turn.
    cursor: AtomicUsize,
    window: Mutex<StatsWindow>,
    gauge: Gauge,
}

// === impl RoutingTable ===

impl RoutingTable {
    /// The table for `config`, reusing the live state of `previous` where replicas and
    /// versions are the same. `config` must have passed [`RouterConfig::validate`]; a replica
    /// URL that does not parse is skipped (and logged) rather than trusted.
    pub fn build(
        config: &RouterConfig,
        previous: Option<&RoutingTable>,
        metrics: &Metrics,
    ) -> RoutingTable {
        let mut known_replicas: HashMap<&str, &Arc<Replica>> = HashMap::new();
        let mut known_versions: HashMap<&str, &Arc<VersionState>> = HashMap::new();
        for version in previous.map(|t| t.versions.as_slice()).unwrap_or_default() {
            known_versions.insert(&version.name, &version.state);
            for replica in &version.replicas {
                known_replicas.insert(replica.url(), replica);
            }
        }
        let versions = config
            .versions
            .iter()
            .map(|version| {
                let replicas = version
                    .replicas
                    .iter()
                    .filter_map(|url| match replica_authority(url) {
                        Ok(authority) => {
                            let url = format!("http://{authority}");
                            Some(match known_replicas.get(url.as_str()) {
                                Some(replica) => Arc::clone(replica),
                                None => Arc::new(Replica::new(url, authority)),
                            })
                        }
                        Err(e) => {
                            tracing::warn!(version = %version.name, "skipping replica: {e}");
                            None
                        }
                    })
                    .collect();
                let state = match known_versions.get(version.name.as_str()) {
                    Some(state) => Arc::clone(state),
                    None => Arc::new(VersionState::new(metrics.in_flight_gauge(&version.name))),
                };
                VersionRoute {
                    name: version.name.clone(),
                    weight: version.weight,
                    replicas,
                    state,
                }
            })
            .collect::<Vec<_>>();
        let shadow = config.shadow.as_ref().and_then(|shadow| {
            let index = versions.iter().position(|v| v.name == shadow.version)?;
            Some(ShadowRoute {
                version: index,
                percent: shadow.percent,
            })
        });
        RoutingTable {
            endpoint: config.endpoint.clone(),
            versions,
            shadow,
            sticky_header: config
                .sticky_header
                .as_deref()
                .and_then(|h| HeaderName::try_from(h).ok()),
            retries: config.retries,
            timeout: config.timeout,
        }
    }

    /// What the split needs, in version order.
    pub fn shares(&self) -> Vec<VersionShare> {
        self.versions
            .iter()
            .map(|v| VersionShare {
                weight: v.weight,
                ready_replicas: v.ready_replicas(),
            })
            .collect()
    }

    /// Every replica once, whichever versions list it.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        let mut seen = std::collections::HashSet::new();
        self.versions
            .iter()
            .flat_map(|v| v.replicas.iter())
            .filter(|r| seen.insert(r.url().to_string()))
            .cloned()
            .collect()
    }
}

// === impl VersionRoute ===

impl VersionRoute {
    pub fn ready_replicas(&self) -> usize {
        self.replicas.iter().filter(|r| r.is_ready()).count()
    }

    /// The replica for the next try: ready, not in `tried`, least loaded, ties in turn.
    pub fn choose_replica(&self, tried: &[usize]) -> Option<usize> {
        let candidates: Vec<Candidate> = self
            .replicas
            .iter()
            .enumerate()
            .map(|(i, r)| Candidate {
                available: r.is_ready() && !tried.contains(&i),
                in_flight: r.in_flight(),
            })
            .collect();
        let cursor = self.state.cursor.fetch_add(1, Ordering::Relaxed);
        choose_replica(&candidates, cursor)
    }
}

// === impl VersionState ===

impl VersionState {
    fn new(gauge: Gauge) -> VersionState {
        VersionState {
            in_flight: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
            window: Mutex::new(StatsWindow::default()),
            gauge,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request in flight to the version until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> VersionInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.gauge.inc();
        VersionInFlight(Arc::clone(self))
    }

    pub fn record(&self, now: u64, latency_ms: f64, status: u16, mirrored: bool) {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(now, latency_ms, status, mirrored);
    }

    pub fn summary(&self, now: u64, seconds: u64) -> WindowSummary {
        self.window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .summary(now, seconds)
    }
}

/// One request in flight to a version.
#[derive(Debug)]
pub struct VersionInFlight(Arc<VersionState>);

impl Drop for VersionInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> RouterConfig {
        RouterConfig::from_text(text, "test").unwrap()
    }

    #[test]
    fn live_state_survives_a_new_configuration() {
        let metrics = Metrics::new();
        let first = RoutingTable::build(
            &config(
                r#"{"endpoint":"e","versions":[
                {"name":"v1","weight":90,"replicas":["http://127.0.0.1:1","http://127.0.0.1:2/"]},
                {"name":"v2","weight":10,"replicas":["http://127.0.0.1:3"]}]}"#,
            ),
            None,
            &metrics,
        );
        first.versions[0].replicas[1].set_ready(true);
        first.versions[1].state.record(1, 5.0, 200, false);
        let second = RoutingTable::build(
            &config(
                r#"{"endpoint":"e","versions":[
                {"name":"v2","weight":50,"replicas":["http://127.0.0.1:3","http://127.0.0.1:4"]},
                {"name":"v1","weight":50,"replicas":["http://127.0.0.1:2"]}],
                "shadow":{"version":"v1","percent":10}}"#,
            ),
            Some(&first),
            &metrics,
        );
        assert_eq!(second.versions[1].replicas[0].url(), "http://127.0.0.1:2");
        assert!(second.versions[1].replicas[0].is_ready());
        assert!(!second.versions[0].replicas[1].is_ready());
        assert_eq!(second.versions[0].state.summary(1, 60).requests, 1);
        assert_eq!(second.shadow.map(|s| s.version), Some(1));
        assert_eq!(
            second.shares(),
            vec![
                VersionShare {
                    weight: 50,
                    ready_replicas: 0
                },
                VersionShare {
                    weight: 50,
                    ready_replicas: 1
                }
            ]
        );
        assert_eq!(second.replicas().len(), 3);
    }

    #[test]
    fn a_version_skips_unready_and_tried_replicas() {
        let metrics = Metrics::new();
        let table = RoutingTable::build(
            &config(
                r#"{"endpoint":"e","versions":[{"name":"v1","weight":1,
                "replicas":["http://127.0.0.1:1","http://127.0.0.1:2","http://127.0.0.1:3"]}]}"#,
            ),
            None,
            &metrics,
        );
        let version = &table.versions[0];
        assert_eq!(version.choose_replica(&[]), None);
        version.replicas[0].set_ready(true);
        version.replicas[2].set_ready(true);
        let _busy = version.replicas[0].begin();
        assert_eq!(version.choose_replica(&[]), Some(2));
        assert_eq!(version.choose_replica(&[2]), Some(0));
        assert_eq!(version.choose_replica(&[0, 2]), None);
    }
}
