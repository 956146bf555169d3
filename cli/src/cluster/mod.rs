//! `--cluster`: `get runs`, `describe run`, `get jobs`, `describe job` and `logs` read a
//! Kubernetes cluster instead of the local store.
//!
//! Two sources are read, both with the kubeconfig's credentials (found as kubectl finds them:
//! `KUBECONFIG`, else `~/.kube/config`, else the in-cluster service account):
//!
//! - the Kubernetes API: the PipelineRuns and TrainingJobs and their bounded status summaries,
//!   the step pods (selected by the run's UID label, the node by annotation, a distributed
//!   step's replica and incarnation by label) and their logs;
//! - the operator's control-plane API ([`api`]): what the status leaves out, each step's phase,
//!   cache key, attempts and outputs, and the metrics steps pushed. It is reached through the
//!   API server's service proxy unless `--api`/`TOUCAN_API` names it.
//!
//! In a cluster a run is named by its PipelineRun (NAME in the namespace); its id in the
//! metadata store is the PipelineRun's UID (`.status.runId`). The commands render what they
//! read with the local commands' renderers. Exit codes: 2 for an unknown run, job, step or
//! replica, as locally; 1 when the cluster cannot be read (unreachable, credentials refused, no
//! permission).

mod api;
mod endpoints;
mod jobs;
mod logs;
mod runs;
mod studies;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, LogParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config, Resource};
use toucan_core::api::labels::{ATTEMPT_LABEL, NODE_ANNOTATION, RUN_UID_LABEL, STEP_CONTAINER};

pub use endpoints::{describe_endpoint, get_alerts, get_endpoints};
pub use jobs::{describe_job, get_jobs};
pub use logs::logs;
pub use runs::{describe_run, get_runs};
pub use studies::{describe_study, get_trials};

use crate::Outcome;
use api::OperatorApi;

/// How long to wait for a TCP connection to the API server or the operator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the inspection commands read from: the local store, or a cluster.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Read the cluster of the current kubeconfig context instead of the local store.
    #[arg(long)]
    pub cluster: bool,
    /// The kubeconfig context to use (implies --cluster).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (with --cluster); the context's namespace when omitted, else `default`.
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The toucan operator's API (with --cluster); by default it is reached through the
    /// Kubernetes API server's service proxy.
    #[arg(long, env = "TOUCAN_API", value_name = "URL")]
    pub api: Option<String>,
    /// The namespace of the operator's Service `toucan-operator`, for the service proxy.
    #[arg(long, value_name = "NS", default_value = "toucan-system")]
    pub operator_namespace: String,
}

impl ClusterArgs {
    /// Whether the command reads a cluster; `Err` with a sentence when flags that only mean
    /// something for a cluster were given without `--cluster`.
    pub fn selected(&self, all_namespaces: bool) -> Result<bool, String> {
        if self.cluster || self.context.is_some() {
            return Ok(true);
        }
        match (&self.namespace, all_namespaces) {
            (Some(_), _) => Err("-n/--namespace needs --cluster (or --context)".into()),
            (None, true) => Err("-A/--all-namespaces needs --cluster (or --context)".into()),
            (None, false) => Ok(false),
        }
    }
}

/// Why a cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("no usable kubeconfig: {0}")]
    Config(String),
    #[error("--api {url:?} is not a URL: {reason}")]
    InvalidApiUrl { url: String, reason: String },
    #[error("cannot reach the Kubernetes API server at {server}")]
    Unreachable { server: String, source: kube::Error },
    #[error(
        "the Kubernetes API server at {server} refused the kubeconfig's credentials: {message}"
    )]
    Unauthorized { server: String, message: String },
    #[error("the cluster at {server} has no {kind} resource (are toucan's CRDs installed?)")]
    MissingResource { server: String, kind: String },
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error("{what}")]
    Kube { what: String, source: kube::Error },
}

impl ClusterError {
    /// The exit outcome: the user's typo is invalid input, everything else means the cluster
    /// could not be read.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClusterError::InvalidApiUrl { .. } => Outcome::InvalidInput,
            _ => Outcome::ClusterUnavailable,
        }
    }
}

/// Prints a [`ClusterError`] (wherever in the chain) and maps it to its outcome; other errors
/// go up to `main`.
fn finish(result: anyhow::Result<Outcome>) -> anyhow::Result<Outcome> {
    match result {
        Err(e) => match e.downcast_ref::<ClusterError>() {
            Some(cluster) => {
                eprintln!("error: {}", causes(e.chain()));
                Ok(cluster.outcome())
            }
            None => Err(e),
        },
        ok => ok,
    }
}

/// An error and its causes on one line, leaving out a cause its effect already quotes (the
/// HTTP stack repeats itself: `ServiceError: client error (Connect): client error (Connect)`).
fn causes<'a>(chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut line = String::new();
    let mut previous = String::new();
    for error in chain {
        let message = error.to_string();
        if previous.contains(&message) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&message);
        previous = message;
    }
    line
}

/// Orders objects newest first: by creation time (`key`'s first), then namespace and name.
fn newest_first_by<T>(items: &mut [T], key: impl Fn(&T) -> (Option<i64>, &str, &str)) {
    items.sort_by(|a, b| {
        let (a, b) = (key(a), key(b));
        b.0.cmp(&a.0).then_with(|| (a.1, a.2).cmp(&(b.1, b.2)))
    });
}

// === impl Cluster ===

/// A connection to a cluster and to its toucan operator.
pub(crate) struct Cluster {
    client: Client,
    server: String,
    namespace: String,
    api: OperatorApi,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("server", &self.server)
            .field("namespace", &self.namespace)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub async fn connect(args: &ClusterArgs) -> Result<Cluster, ClusterError> {
        let mut config = match &args.context {
            Some(context) => {
                let options = KubeConfigOptions {
                    context: Some(context.clone()),
                    ..KubeConfigOptions::default()
                };
                Config::from_kubeconfig(&options)
                    .await
                    .map_err(|e| ClusterError::Config(format!("context {context:?}: {e}")))?
            }
            None => Config::infer()
                .await
                .map_err(|e| ClusterError::Config(e.to_string()))?,
        };
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let server = config.cluster_url.to_string();
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let api = match &args.api {
            Some(url) => Some(OperatorApi::direct(&config, url)?),
            None => None,
        };
        let client = Client::try_from(config).map_err(|e| ClusterError::Config(e.to_string()))?;
        let api =
            api.unwrap_or_else(|| OperatorApi::proxy(client.clone(), &args.operator_namespace));
        Ok(Cluster {
            client,
            server,
            namespace,
            api,
        })
    }

    /// The Kubernetes API client, with the kubeconfig's credentials.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The namespace the commands work in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Maps a Kubernetes API error to what the user should read.
    pub fn error(&self, what: String, e: kube::Error) -> ClusterError {
        match e {
            kube::Error::Api(status) if status.code == 401 => ClusterError::Unauthorized {
                server: self.server.clone(),
                message: status.message,
            },
            kube::Error::Api(status) if status.code == 403 => {
                ClusterError::Forbidden(status.message)
            }
            e @ kube::Error::Api(_) => ClusterError::Kube { what, source: e },
            e @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
                ClusterError::Unreachable {
                    server: self.server.clone(),
                    source: e,
                }
            }
            e => ClusterError::Kube { what, source: e },
        }
    }

    /// The objects of kind `K`, read untyped, so that one object this CLI's types cannot hold
    /// does not hide the others; the summaries take what they know from each.
    fn objects<K: Resource<DynamicType = ()>>(
        &self,
        namespace: Option<&str>,
    ) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    /// The objects of kind `K` of the namespace, or of every namespace.
    async fn list<K: Resource<DynamicType = ()>>(
        &self,
        all_namespaces: bool,
    ) -> Result<Vec<DynamicObject>, ClusterError> {
        let kind = K::kind(&());
        let namespace = (!all_namespaces).then_some(self.namespace.as_str());
        self.objects::<K>(namespace)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => ClusterError::MissingResource {
                    server: self.server.clone(),
                    kind: kind.to_string(),
                },
                e => self.error(format!("listing {kind}s"), e),
            })
    }

    /// The object `name` of kind `K` in the namespace, if there is one.
    async fn get<K: Resource<DynamicType = ()>>(
        &self,
        name: &str,
    ) -> Result<Option<DynamicObject>, ClusterError> {
        self.objects::<K>(Some(&self.namespace))
            .get_opt(name)
            .await
            .map_err(|e| self.error(format!("reading {} {name}", K::kind(&())), e))
    }

    /// The step pods of the PipelineRun whose UID is `uid`.
    async fn step_pods(&self, uid: &str) -> Result<Vec<Pod>, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        pods.list(&ListParams::default().labels(&format!("{RUN_UID_LABEL}={uid}")))
            .await
            .map(|l| l.items)
            .map_err(|e| self.error("listing step pods".into(), e))
    }

    /// The log of a step pod's main container.
    async fn step_log(&self, pod: &str) -> Result<String, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = LogParams {
            container: Some(STEP_CONTAINER.into()),
            ..LogParams::default()
        };
        pods.logs(pod, &params).await.map_err(|e| {
            self.error(
                format!("reading the log of pod {}/{pod}", self.namespace),
                e,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        source: Option<Box<Layer>>,
    }

    fn layers(messages: &[&'static str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |source: Option<Layer>, m| {
                Some(Layer {
                    message: m,
                    source: source.map(Box::new),
                })
            })
            .unwrap()
    }

    #[test]
    fn causes_leave_out_what_the_effect_already_says() {
        let e = layers(&[
            "cannot reach X",
            "ServiceError: client error (Connect)",
            "client error (Connect)",
            "tcp connect error: Connection refused",
        ]);
        let chain = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        });
        assert_eq!(
            causes(chain),
            "cannot reach X: ServiceError: client error (Connect): tcp connect error: Connection refused"
        );
    }

    #[test]
    fn cluster_flags_need_a_cluster() {
        let args = |cluster, context: Option<&str>, namespace: Option<&str>| ClusterArgs {
            cluster,
            context: context.map(str::to_string),
            namespace: namespace.map(str::to_string),
            api: None,
            operator_namespace: "toucan-system".into(),
        };
        assert_eq!(args(false, None, None).selected(false), Ok(false));
        assert_eq!(args(true, None, None).selected(true), Ok(true));
        assert_eq!(
            args(false, Some("user"), Some("ml")).selected(false),
            Ok(true)
        );
        assert!(args(false, None, Some("ml")).selected(false).is_err());
        assert!(args(false, None, None).selected(true).is_err());
    }
}
