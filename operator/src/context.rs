//! What every reconcile shares: clients, stores, settings, metrics, the pod cache.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use toucan_core::api::PipelineRun;
use toucan_core::artifacts::ArtifactStore;
use toucan_core::store::MetadataStore;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::run::pods::{PodDefaults, RUN_UID_LABEL};

/// Shared by every reconcile, through an `Arc`.
pub struct Context {
    pub client: Client,
    pub store: Arc<dyn MetadataStore>,
    pub artifacts: ArtifactStore,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    /// Every pod the operator manages, kept current by a watch.
    pub pods: Store<Pod>,
    pub pod_defaults: PodDefaults,
    /// PipelineRuns by run id, so an API report can wake the right run.
    pub runs_by_id: Mutex<HashMap<String, ObjectRef<PipelineRun>>>,
    /// Namespaces where the step service account is known to exist.
    pub service_accounts: Mutex<HashSet<String>>,
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
