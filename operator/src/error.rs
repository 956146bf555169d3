//! The operator's errors: one enum, each variant with a short stable reason used in Events,
//! metrics and logs.

use toucan_store::artifacts::ArtifactError;
use toucan_store::cache::LookupError;
use toucan_store::metadata::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Artifacts(#[from] ArtifactError),
    #[error("{0}")]
    Cache(#[from] LookupError),
    #[error("the stored state of run {run_id} is unreadable: {detail}")]
    CorruptState { run_id: String, detail: String },
    #[error("the trial ledger: {0}")]
    Ledger(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("{0} has no {1}")]
    MissingField(String, &'static str),
    #[error("pod {0} went away while it was adopted; it is created again")]
    PodGone(String),
    #[error(
        "pod {pod} belongs to another PipelineRun that was named {run}; waiting for it to be \
         deleted with its run"
    )]
    StrangerPod { pod: String, run: String },
    #[error("monitoring: {0}")]
    Monitoring(String),
}

impl Error {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeApi",
            Error::Store(e) => e.reason(),
            Error::Artifacts(e) => e.reason(),
            Error::Cache(_) => "CacheLookup",
            Error::CorruptState { .. } => "CorruptState",
            Error::Ledger(_) => "InconsistentLedger",
            Error::Finalizer(_) => "Finalizer",
            Error::MissingField(..) => "MissingField",
            Error::PodGone(_) => "PodGone",
            Error::StrangerPod { .. } => "StrangerPod",
            Error::Monitoring(_) => "Monitoring",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
