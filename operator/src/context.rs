//! What every reconcile shares: clients, stores, settings, metrics, the pod cache.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use toucan_core::api::PipelineRun;
use toucan_store::artifacts::ArtifactStore;
use toucan_store::metadata::MetadataStore;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::run::pods::{PodDefaults, RUN_UID_LABEL};

/// Shared by every reconcile, through an `Arc`.
pub struct Context {
    pub client: Client,
    pub store: Arc<dyn MetadataStore>,
    /// The endpoints' monitoring gauges the control-plane API serves on `/metrics`.
    pub gauges: Arc<toucan_api::GaugeBoard>,
    pub artifacts: ArtifactStore,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Every pod the operator manages, kept current by a watch.
    pub pods: Store<Pod>,
    /// Every PipelineRun the operator watches, kept current by the run watch.
    pub runs: RunCache,
    pub pod_defaults: PodDefaults,
    /// PipelineRuns by run id, so an API report can wake the right run.
    pub runs_by_id: Mutex<HashMap<String, ObjectRef<PipelineRun>>>,
    /// Namespaces where the step service account is known to exist.
    pub service_accounts: Mutex<HashSet<String>>,
    /// Held while a gang's admission counts the nodes' room, so that two gangs never count
    /// the same room.
    pub gang_admission: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("store", &self.store)
            .field("artifacts", &self.artifacts)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// The cached pods of one run.
    pub fn pods_of(&self, run_uid: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state()
            .into_iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(RUN_UID_LABEL))
                    .is_some_and(|u| u == run_uid)
            })
            .collect()
    }

    pub fn remember_run(&self, run_id: &str, obj: ObjectRef<PipelineRun>) {
        self.runs_by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(run_id.to_string(), obj);
    }

    pub fn run_ref(&self, run_id: &str) -> Option<ObjectRef<PipelineRun>> {
        self.runs_by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
            .cloned()
    }

    pub fn forget_run(&self, run_id: &str) {
        self.runs_by_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(run_id);
    }
}

// === impl RunCache ===

/// A reflector store of PipelineRuns, and whether its watch has delivered a full list yet.
///
/// Readiness is tracked here rather than with `Store::wait_until_ready`: that future wakes
/// only its last waiter, and the run controller already waits on it.
#[derive(Debug)]
pub struct RunCache {
    store: Store<PipelineRun>,
    listed: AtomicBool,
}

impl RunCache {
    pub fn new(store: Store<PipelineRun>) -> Self {
        RunCache {
            store,
            listed: AtomicBool::new(false),
        }
    }

    /// Inspects the watch that fills the store; put it after `reflect`, so that a full list is
    /// in the store by the time it counts as listed.
    pub fn observe(&self, event: &Result<watcher::Event<PipelineRun>, watcher::Error>) {
        if let Ok(watcher::Event::InitDone) = event {
            self.listed.store(true, Ordering::Release);
        }
    }

    /// The cached runs; `None` until the watch's first full list, when an empty store does
    /// not yet mean "no runs".
    pub fn state(&self) -> Option<Vec<Arc<PipelineRun>>> {
        self.listed
            .load(Ordering::Acquire)
            .then(|| self.store.state())
    }
}
