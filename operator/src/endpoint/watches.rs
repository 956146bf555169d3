//! The caches every operator replica keeps of Endpoints and their pods, and the changes the
//! leader's controller is woken by.
//!
//! They run from start-up on every replica, leader or not, because every replica serves the
//! routers' configuration ([`super::router_config`]). The pod watch selects
//! `toucan.dev/endpoint` and keeps only labels, annotations and status (no spec, no managed
//! fields), so it grows with the endpoints' pods alone. Changes are published on a bounded
//! broadcast channel: a standby with no controller subscribed keeps nothing, and a
//! controller that falls behind is told so and re-reads every endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use tokio::sync::broadcast;
use toucan_core::api::Endpoint;

use super::observe::{EndpointPods, endpoint_pods};
use super::{ENDPOINT_ANNOTATION, ENDPOINT_LABEL};

/// Changes kept for a controller that is behind, before it is told it lagged.
const CHANGES_CAPACITY: usize = 1024;

/// The caches, cheap to clone.
#[derive(Clone)]
pub struct Watches {
    pub endpoints: Store<Endpoint>,
    pub pods: Store<Pod>,
    endpoints_listed: Arc<AtomicBool>,
    pods_listed: Arc<AtomicBool>,
    changes: broadcast::Sender<ObjectRef<Endpoint>>,
}

impl std::fmt::Debug for Watches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watches")
            .field("synced", &self.synced())
            .finish_non_exhaustive()
    }
}

impl Watches {
    /// Starts both watches (in `namespace`, or every namespace) on the current runtime.
    pub fn start(client: &Client, namespace: Option<&str>) -> Watches {
        let (endpoints_api, pods_api): (Api<Endpoint>, Api<Pod>) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let (endpoints, endpoints_writer) = reflector::store::<Endpoint>();
        let (pods, pods_writer) = reflector::store::<Pod>();
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let watches = Watches {
            endpoints,
            pods,
            endpoints_listed: Arc::new(AtomicBool::new(false)),
            pods_listed: Arc::new(AtomicBool::new(false)),
            changes,
        };

        let listed = watches.endpoints_listed.clone();
        let sender = watches.changes.clone();
        let endpoint_watch = watcher(endpoints_api, watcher::Config::default())
            .default_backoff()
            .modify(|e| e.metadata.managed_fields = None)
            .reflect(endpoints_writer)
            .inspect(move |event| mark_listed(event, &listed))
            .applied_objects()
            // Its own status writes do not wake an endpoint: its pods and its timer do.
            .predicate_filter(predicates::generation, Default::default())
            .for_each(move |endpoint| {
                match endpoint {
                    Ok(endpoint) => {
                        let _ = sender.send(ObjectRef::from_obj(&endpoint));
                    }
                    Err(e) => tracing::debug!("endpoint watch: {e}"),
                }
                std::future::ready(())
            });
        tokio::spawn(endpoint_watch);

        let listed = watches.pods_listed.clone();
        let sender = watches.changes.clone();
        let pod_watch = watcher(pods_api, watcher::Config::default().labels(ENDPOINT_LABEL))
            .default_backoff()
            .modify(|pod| {
                pod.metadata.managed_fields = None;
                pod.spec = None;
            })
            .reflect(pods_writer)
            .inspect(move |event| mark_listed(event, &listed))
            .touched_objects()
            .for_each(move |pod| {
                match pod {
                    Ok(pod) => {
                        if let Some(endpoint) = endpoint_of(&pod) {
                            let _ = sender.send(endpoint);
                        }
                    }
                    Err(e) => tracing::debug!("endpoint pod watch: {e}"),
                }
                std::future::ready(())
            });
        tokio::spawn(pod_watch);
        watches
    }

    /// Whether both watches have delivered a full list.
    pub fn synced(&self) -> bool {
        self.endpoints_listed.load(Ordering::Acquire) && self.pods_listed.load(Ordering::Acquire)
    }

    /// The pods of the endpoint with UID `uid`, sorted by what they are.
    pub fn pods_of(&self, uid: &str) -> EndpointPods {
        endpoint_pods(&self.pods.state(), uid)
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ObjectRef<Endpoint>> {
        self.changes.subscribe()
    }
}

fn mark_listed<K>(event: &Result<watcher::Event<K>, watcher::Error>, listed: &AtomicBool) {
    if let Ok(watcher::Event::InitDone) = event {
        listed.store(true, Ordering::Release);
    }
}

/// The Endpoint a pod serves: its namespace and the exact name its template annotates.
fn endpoint_of(pod: &Pod) -> Option<ObjectRef<Endpoint>> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let name = pod
        .metadata
        .annotations
        .as_ref()?
        .get(ENDPOINT_ANNOTATION)?;
    Some(ObjectRef::new(name).within(namespace))
}
