//! `get endpoints --cluster` and `describe endpoint NAME --cluster`.
//!
//! The list comes from the Endpoints alone: each one's status holds the split in force, the
//! ready replicas and the URL. `describe` adds the Endpoint's events and the router's own
//! figures (requests, errors, latency by version over the last minute), which the operator's
//! API asks of the endpoint's router; when they cannot be had, the status is shown alone,
//! with a note on stderr.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde::Serialize;
use toucan_core::api::{Endpoint, EndpointStatus};
use toucan_core::monitoring::alerts::AlertPhase;
use toucan_router::admin::EndpointStats;

use super::{Cluster, ClusterArgs, finish, newest_first_by};
use crate::Outcome;
use crate::commands::alerts::alerts_table;
use crate::commands::serve::{EndpointRow, EndpointView, describe_text, print_endpoints};
use crate::output::{Format, print_structured};

/// Phase shown for an Endpoint the operator has not picked up yet.
const NOT_STARTED: &str = "Pending";

/// An Endpoint read untyped: what is missing or malformed stays empty.
struct Summary {
    namespace: String,
    name: String,
    created_ms: Option<i64>,
    status: EndpointStatus,
}

fn summarize(object: &DynamicObject) -> Summary {
    Summary {
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        name: object.metadata.name.clone().unwrap_or_default(),
        created_ms: object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond()),
        status: object
            .data
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default(),
    }
}

fn row(s: &Summary) -> EndpointRow<'_> {
    EndpointRow {
        namespace: Some(&s.namespace),
        name: &s.name,
        phase: s.status.phase.clone().unwrap_or_else(|| NOT_STARTED.into()),
        url: s.status.url.as_deref(),
        traffic: s.status.traffic_summary.as_deref(),
        ready: s.status.ready.as_deref(),
        candidate: s.status.rollout.as_ref().map(|r| r.candidate.as_str()),
    }
}

/// `get endpoints --cluster`: newest first.
pub async fn get_endpoints(
    args: &ClusterArgs,
    all_namespaces: bool,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let mut endpoints: Vec<Summary> = cluster
                .list::<Endpoint>(all_namespaces)
                .await?
                .iter()
                .map(summarize)
                .collect();
            newest_first_by(&mut endpoints, |e| (e.created_ms, &e.namespace, &e.name));
            let rows: Vec<EndpointRow> = endpoints.iter().map(row).collect();
            print_endpoints(&rows, all_namespaces, format)?;
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// What `describe endpoint --cluster -o json|yaml` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Detail<'a> {
    namespace: &'a str,
    name: &'a str,
    status: &'a EndpointStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<EndpointStats>,
    events: Vec<String>,
    alerts: Vec<toucan_core::records::AlertRecord>,
}

/// `describe endpoint NAME --cluster`.
pub async fn describe_endpoint(
    args: &ClusterArgs,
    name: &str,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let namespace = cluster.namespace().to_string();
            let Some(object) = cluster.get::<Endpoint>(name).await? else {
                eprintln!("error: no Endpoint {name:?} in namespace {namespace:?}");
                return Ok(Outcome::InvalidInput);
            };
            let summary = summarize(&object);
            let events = events(&cluster, name).await;
            let stats = router_stats(&cluster, name).await;
            let alerts = alerts_of(&cluster, name).await;
            let detail = Detail {
                namespace: &namespace,
                name,
                status: &summary.status,
                stats,
                events,
                alerts,
            };
            match format {
                Format::Table => print!(
                    "{}",
                    describe_text(&EndpointView {
                        name,
                        phase: summary.status.phase.as_deref().unwrap_or(NOT_STARTED),
                        status: &summary.status,
                        started_at: summary.created_ms,
                        restarts: &BTreeMap::new(),
                        stats: detail.stats.as_ref(),
                        alerts: &detail.alerts,
                        events: &detail.events,
                    })
                ),
                format => print_structured(format, &detail)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// `get alerts [ENDPOINT] --cluster`: the alerts of the namespace's endpoints, from the
/// operator's API.
pub async fn get_alerts(
    args: &ClusterArgs,
    endpoint: Option<&str>,
    all: bool,
    limit: u32,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let alerts: Vec<toucan_core::records::AlertRecord> = match cluster
                .api
                .alerts(cluster.namespace(), endpoint, limit.max(1))
                .await
            {
                Ok(alerts) => alerts
                    .into_iter()
                    .filter(|a| all || a.phase != AlertPhase::Cleared)
                    .collect(),
                Err(e) => {
                    eprintln!("error: {}", e.explain());
                    return Ok(Outcome::ClusterUnavailable);
                }
            };
            match format {
                Format::Table => print!("{}", alerts_table(&alerts, endpoint.is_none())),
                format => print_structured(format, &alerts)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// The Endpoint's alerts, newest first; none (with a note on stderr) when they cannot be had.
async fn alerts_of(cluster: &Cluster, name: &str) -> Vec<toucan_core::records::AlertRecord> {
    match cluster
        .api
        .alerts(cluster.namespace(), Some(name), ALERTS_SHOWN)
        .await
    {
        Ok(alerts) => alerts
            .into_iter()
            .filter(|a| a.phase != AlertPhase::Cleared)
            .collect(),
        Err(e) => {
            eprintln!(
                "note: the endpoint's alerts are unavailable: {}",
                e.explain()
            );
            Vec::new()
        }
    }
}

/// How many of an endpoint's newest alerts `describe endpoint` shows.
const ALERTS_SHOWN: u32 = 20;

/// The Endpoint's events, oldest first, as `REASON: message`; none when they cannot be read.
async fn events(cluster: &Cluster, name: &str) -> Vec<String> {
    let api: Api<Event> = Api::namespaced(cluster.client(), cluster.namespace());
    let selector = format!("involvedObject.kind=Endpoint,involvedObject.name={name}");
    let Ok(list) = api.list(&ListParams::default().fields(&selector)).await else {
        return Vec::new();
    };
    let mut events: Vec<(i64, String)> = list
        .items
        .into_iter()
        .map(|e| {
            let at = e
                .last_timestamp
                .as_ref()
                .or(e.first_timestamp.as_ref())
                .map_or(0, |t| t.0.as_millisecond());
            let reason = e.reason.unwrap_or_default();
            let message = e.message.unwrap_or_default();
            (at, format!("{reason}: {message}"))
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, e)| e).collect()
}

/// The router's figures, through the operator's API; `None` (with a note on stderr) when
/// they cannot be had.
async fn router_stats(cluster: &Cluster, name: &str) -> Option<EndpointStats> {
    match cluster.api.endpoint_stats(cluster.namespace(), name).await {
        Ok(stats) => Some(stats),
        Err(e) => {
            eprintln!(
                "note: the router's figures are unavailable: {}",
                e.explain()
            );
            None
        }
    }
}
