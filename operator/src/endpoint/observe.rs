//! What an Endpoint looks like from outside: its pods (from the operator's pod cache, selected
//! by `toucan.dev/endpoint` and counted only with the endpoint's UID) and what its router
//! counted (`GET /router/v1/stats` on the router's pod IP).
//!
//! EndpointSlices are not read: a test cluster on loopback addresses has none, and the pod
//! cache already says which replicas are ready and where they listen.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use toucan_router::admin::EndpointStats;

use super::children::SERVING_PORT;
use super::{
    COMPONENT_LABEL, ENDPOINT_UID_LABEL, ROUTER_COMPONENT, SERVER_COMPONENT, VERSION_LABEL,
};

/// How long a stats request may take.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// The router's longest window, in seconds.
pub const MAX_STATS_WINDOW_SECONDS: u64 = 60;

/// One version's pods.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionPods {
    /// Pods that exist and have not ended (ready or not), not being deleted.
    pub running: u32,
    /// Of which are ready, with their base URLs (`http://POD_IP:8080`), sorted.
    pub ready: Vec<String>,
}

/// The pods of one endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointPods {
    pub versions: BTreeMap<String, VersionPods>,
    /// A ready router pod's address (`IP:8080`), the first by name.
    pub router: Option<String>,
}

/// Sorts the pods of the endpoint with UID `uid` out of `pods`.
pub fn endpoint_pods(pods: &[Arc<Pod>], uid: &str) -> EndpointPods {
    let mut out = EndpointPods::default();
    let mut routers: Vec<(String, String)> = Vec::new();
    for pod in pods {
        let labels = pod.metadata.labels.as_ref();
        let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
        if label(ENDPOINT_UID_LABEL) != Some(uid) || !is_live(pod) {
            continue;
        }
        let address = pod_ip(pod).map(|ip| format!("{ip}:{SERVING_PORT}"));
        match (label(COMPONENT_LABEL), label(VERSION_LABEL)) {
            (Some(SERVER_COMPONENT), Some(version)) => {
                let entry = out.versions.entry(version.to_string()).or_default();
                entry.running += 1;
                if let (true, Some(address)) = (is_ready(pod), address) {
                    entry.ready.push(format!("http://{address}"));
                }
            }
            (Some(ROUTER_COMPONENT), _) => {
                if let (true, Some(address)) = (is_ready(pod), address) {
                    routers.push((pod.metadata.name.clone().unwrap_or_default(), address));
                }
            }
            _ => {}
        }
    }
    for version in out.versions.values_mut() {
        version.ready.sort();
    }
    routers.sort();
    out.router = routers.into_iter().next().map(|(_, address)| address);
    out
}

/// Not ended and not being deleted.
fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .filter(|ip| !ip.is_empty())
}

/// What the router at `address` (`IP:PORT`) counted over the last `window_seconds`.
pub async fn router_stats(address: &str, window_seconds: u64) -> Result<EndpointStats, String> {
    let window = window_seconds.clamp(1, MAX_STATS_WINDOW_SECONDS);
    let url = format!("http://{address}/router/v1/stats?window={window}");
    tokio::task::spawn_blocking(move || -> Result<EndpointStats, String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(STATS_TIMEOUT))
            .build()
            .into();
        agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?
            .body_mut()
            .read_json()
            .map_err(|e| format!("GET {url}: {e}"))
    })
    .await
    .map_err(|e| format!("reading the router's stats: {e}"))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: &str, version: Option<&str>, ip: &str, ready: bool) -> Arc<Pod> {
        let mut labels = json!({ENDPOINT_UID_LABEL: uid});
        match version {
            Some(v) => {
                labels[COMPONENT_LABEL] = json!(SERVER_COMPONENT);
                labels[VERSION_LABEL] = json!(v);
            }
            None => labels[COMPONENT_LABEL] = json!(ROUTER_COMPONENT),
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "labels": labels},
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
                },
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_ready_live_pods_of_this_endpoint_are_served() {
        let mut gone = (*pod("v1-c", "uid", Some("v1"), "10.0.0.3", true)).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods = vec![
            pod("v1-b", "uid", Some("v1"), "10.0.0.2", true),
            pod("v1-a", "uid", Some("v1"), "10.0.0.1", true),
            Arc::new(gone),
            pod("v2-a", "uid", Some("v2"), "10.0.0.4", false),
            pod("old-v1", "older-uid", Some("v1"), "10.0.0.9", true),
            pod("router-b", "uid", None, "10.0.0.6", true),
            pod("router-a", "uid", None, "10.0.0.5", false),
        ];
        let seen = endpoint_pods(&pods, "uid");
        assert_eq!(
            seen.versions["v1"],
            VersionPods {
                running: 2,
                ready: vec!["http://10.0.0.1:8080".into(), "http://10.0.0.2:8080".into()],
            }
        );
        assert_eq!(
            seen.versions["v2"],
            VersionPods {
                running: 1,
                ready: vec![]
            }
        );
        assert_eq!(seen.router.as_deref(), Some("10.0.0.6:8080"));
    }

    #[test]
    fn mirrored_copies_are_not_the_versions_answers() {
        let stats: EndpointStats = serde_json::from_value(json!({
            "endpoint": "e", "windowSeconds": 10,
            "versions": {"v2": {"weight": 0, "replicas": 1, "readyReplicas": 1, "requests": 30,
                                "errors": 2, "mirrored": 20, "inFlight": 0,
                                "latencyMs": {"p50": 1.0, "p90": 2.0, "p99": null}}},
        }))
        .unwrap();
        let o = stats.observations();
        assert_eq!((o[0].requests, o[0].errors), (10, 2));
        assert_eq!(o[0].latency_ms.p99, None);
    }
}
