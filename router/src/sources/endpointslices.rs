//! Replicas from Kubernetes: the Endpoint's EndpointSlices (label
//! `toucan.dev/endpoint=NAME`, the version in another label, `toucan.dev/version` unless told
//! otherwise), watched; the weights, shadow and the rest still come from a base configuration
//! (a file or a URL).
//!
//! Every change of either side publishes the base configuration with each version's replicas
//! replaced by the ready endpoints of its slices (`http://ADDRESS:PORT`, the port named
//! `http` or else the slice's first). A version no slice names has no replica. Nothing is
//! published before the watch has listed every slice once, so a restart never routes from
//! half a list. The pure part ([`slice_replicas`], [`with_replicas`]) is tested here; the watch
//! is kube-runtime's watcher with its default backoff.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;

use super::{ConfigUpdates, ProblemLog, publish_if_changed};
use crate::config::RouterConfig;
use crate::error::RouterError;

/// The label naming a slice's Endpoint.
pub const ENDPOINT_LABEL: &str = "toucan.dev/endpoint";
/// The label naming a slice's version, unless `--version-label` says another.
pub const DEFAULT_VERSION_LABEL: &str = "toucan.dev/version";
/// The name of the port the model server answers HTTP on.
const HTTP_PORT_NAME: &str = "http";

/// What the router keeps of one slice: its version and its ready replicas' URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceReplicas {
    pub version: String,
    pub urls: Vec<String>,
}

/// The base configurations of `base`, with replicas from the EndpointSlices of `namespace`.
pub async fn watch_endpointslices(
    namespace: String,
    version_label: String,
    base: ConfigUpdates,
) -> Result<ConfigUpdates, RouterError> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| RouterError::EndpointSlices {
            namespace: namespace.clone(),
            detail: format!("no Kubernetes client: {e}"),
        })?;
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let (updates, receiver) = watch::channel(None);
    tokio::spawn(run(api, version_label, base, updates));
    Ok(receiver)
}

/// Watches the slices of the base configuration's Endpoint, starting again when the
/// Endpoint's name changes, until the receiver or the base is gone.
async fn run(
    api: Api<EndpointSlice>,
    version_label: String,
    mut base: ConfigUpdates,
    updates: watch::Sender<Option<RouterConfig>>,
) {
    let mut problems = ProblemLog::default();
    loop {
        let endpoint = base
            .borrow_and_update()
            .as_ref()
            .map(|c| c.endpoint.clone());
        let Some(endpoint) = endpoint else {
            tokio::select! {
                changed = base.changed() => if changed.is_err() { return },
                _ = updates.closed() => return,
            }
            continue;
        };
        let selector = format!("{ENDPOINT_LABEL}={endpoint}");
        let stream = watcher::watcher(api.clone(), watcher::Config::default().labels(&selector))
            .default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listing: BTreeMap<String, SliceReplicas> = BTreeMap::new();
        let mut slices: Option<BTreeMap<String, SliceReplicas>> = None;
        loop {
            tokio::select! {
                event = stream.next() => {
                    match event {
                        Some(Ok(Event::Init)) => listing.clear(),
                        Some(Ok(Event::InitApply(slice))) => {
                            if let Some((name, replicas)) = keep(&slice, &version_label) {
                                listing.insert(name, replicas);
                            }
                        }
                        Some(Ok(Event::InitDone)) => {
                            slices = Some(std::mem::take(&mut listing));
                        }
                        Some(Ok(Event::Apply(slice))) => {
                            if let (Some(slices), Some((name, replicas))) =
                                (slices.as_mut(), keep(&slice, &version_label))
                            {
                                slices.insert(name, replicas);
                            }
                        }
                        Some(Ok(Event::Delete(slice))) => {
                            if let (Some(slices), Some(name)) =
                                (slices.as_mut(), slice.metadata.name.as_ref())
                            {
                                slices.remove(name);
                            }
                        }
                        Some(Err(e)) => {
                            problems.problem(format!("watching EndpointSlices {selector}: {e}"));
                            continue;
                        }
                        None => break,
                    }
                }
                changed = base.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let renamed = base.borrow().as_ref().map(|c| c.endpoint.as_str())
                        != Some(endpoint.as_str());
                    if renamed {
                        break;
                    }
                }
                _ = updates.closed() => return,
            }
            let config = base.borrow().clone();
            if let (Some(config), Some(slices)) = (config, slices.as_ref()) {
                let merged = with_replicas(&config, slices.values());
                match merged.validate() {
                    Ok(()) => {
                        problems.solved();
                        publish_if_changed(&updates, merged);
                    }
                    Err(e) => problems.problem(format!("EndpointSlices of {endpoint}: {e}")),
                }
            }
        }
    }
}

/// A slice's name and what the router keeps of it; `None` for a slice without a name or
/// a version label, which no version can claim.
fn keep(slice: &EndpointSlice, version_label: &str) -> Option<(String, SliceReplicas)> {
    let name = slice.metadata.name.clone()?;
    Some((name, slice_replicas(slice, version_label)?))
}

/// The version a slice serves and the URLs of its ready endpoints. An endpoint whose
/// `ready` condition is absent counts as ready, as the EndpointSlice API says it should.
pub fn slice_replicas(slice: &EndpointSlice, version_label: &str) -> Option<SliceReplicas> {
    let version = slice.metadata.labels.as_ref()?.get(version_label)?.clone();
    let ports = slice.ports.as_deref().unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| p.name.as_deref() == Some(HTTP_PORT_NAME))
        .or_else(|| ports.first())
        .and_then(|p| p.port);
    let Some(port) = port else {
        return Some(SliceReplicas {
            version,
            urls: Vec::new(),
        });
    };
    let urls = slice
        .endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .filter_map(|e| e.addresses.first())
        .map(|address| match slice.address_type.as_str() {
            "IPv6" => format!("http://[{address}]:{port}"),
            _ => format!("http://{address}:{port}"),
        })
        .collect();
    Some(SliceReplicas { version, urls })
}

/// `base` with each version's replicas those of the slices naming it, in a stable order.
pub fn with_replicas<'a>(
    base: &RouterConfig,
    slices: impl IntoIterator<Item = &'a SliceReplicas>,
) -> RouterConfig {
    let mut by_version: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for slice in slices {
        by_version
            .entry(slice.version.as_str())
            .or_default()
            .extend(slice.urls.iter().cloned());
    }
    let mut config = base.clone();
    for version in &mut config.versions {
        let mut urls = by_version.remove(version.name.as_str()).unwrap_or_default();
        urls.sort_unstable();
        urls.dedup();
        version.replicas = urls;
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(yaml: &str) -> EndpointSlice {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn only_ready_endpoints_of_labelled_slices_become_replicas() {
        let v1 = slice(
            r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: fashion-v1-abcde
  labels: {toucan.dev/endpoint: fashion, toucan.dev/version: v1}
addressType: IPv4
ports: [{name: metrics, port: 9090}, {name: http, port: 8080}]
endpoints:
  - addresses: [10.0.0.5]
    conditions: {ready: true}
  - addresses: [10.0.0.6]
    conditions: {ready: false}
  - addresses: [10.0.0.7]
"#,
        );
        assert_eq!(
            slice_replicas(&v1, DEFAULT_VERSION_LABEL),
            Some(SliceReplicas {
                version: "v1".into(),
                urls: vec!["http://10.0.0.5:8080".into(), "http://10.0.0.7:8080".into()],
            })
        );
        let v6 = slice(
            r#"
metadata: {name: s, labels: {toucan.dev/version: v2}}
addressType: IPv6
ports: [{port: 8080}]
endpoints: [{addresses: ["fd00::1"], conditions: {ready: true}}]
"#,
        );
        assert_eq!(
            slice_replicas(&v6, DEFAULT_VERSION_LABEL).unwrap().urls,
            vec!["http://[fd00::1]:8080".to_string()]
        );
        let unlabelled = slice("metadata: {name: s}\naddressType: IPv4\nendpoints: []\n");
        assert_eq!(slice_replicas(&unlabelled, DEFAULT_VERSION_LABEL), None);
    }

    #[test]
    fn replicas_replace_the_base_configuration_s_per_version() {
        let base = RouterConfig::from_text(
            r#"{"endpoint":"fashion","versions":[
                {"name":"v1","weight":90,"replicas":["http://127.0.0.1:1"]},
                {"name":"v2","weight":10}]}"#,
            "base",
        )
        .unwrap();
        let slices = [
            SliceReplicas {
                version: "v1".into(),
                urls: vec!["http://10.0.0.6:8080".into()],
            },
            SliceReplicas {
                version: "v1".into(),
                urls: vec!["http://10.0.0.5:8080".into(), "http://10.0.0.6:8080".into()],
            },
            SliceReplicas {
                version: "v9".into(),
                urls: vec!["http://10.0.0.9:8080".into()],
            },
        ];
        let merged = with_replicas(&base, &slices);
        assert_eq!(
            merged.versions[0].replicas,
            vec!["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
        );
        assert!(merged.versions[1].replicas.is_empty());
        assert_eq!(merged.versions[0].weight, 90);
        assert!(merged.validate().is_ok());
    }
}
