//! Who may call the control-plane API, and for what.
//!
//! The router asks an [`Authenticator`] who a request's bearer token belongs to. The local
//! runtime binds loopback and lets [`Anyone`] in; the operator checks the token with the
//! Kubernetes TokenReview API and maps a step pod's token to the one run and node it may
//! write for, so a step can never report for another run's step.

use async_trait::async_trait;

/// Who a caller is, as far as the API is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Any caller: the local runtime on loopback.
    Anyone,
    /// A step pod: it may write only for its own run and node.
    Step { run_id: String, node: String },
    /// An authenticated user or service: it may read what [`Authenticator::may_read`] allows.
    Reader { name: String, groups: Vec<String> },
    /// A model server pod of one endpoint: it may ship payload samples for that endpoint only.
    Server { namespace: String, endpoint: String },
    /// The router pod of one endpoint: it may read that endpoint's router configuration only.
    Router { namespace: String, endpoint: String },
}

impl Principal {
    /// May this caller write reports and metrics for `node` of `run_id`?
    pub fn may_write(&self, run_id: &str, node: &str) -> bool {
        match self {
            Principal::Anyone => true,
            Principal::Step { run_id: r, node: n } => r == run_id && n == node,
            Principal::Reader { .. } | Principal::Server { .. } | Principal::Router { .. } => false,
        }
    }

    /// Is this the router of the endpoint `name` in `namespace` (or any caller, locally)?
    pub fn routes_for(&self, namespace: &str, name: &str) -> bool {
        match self {
            Principal::Anyone => true,
            Principal::Router {
                namespace: ns,
                endpoint,
            } => ns == namespace && endpoint == name,
            _ => false,
        }
    }

    /// The store key (`NAMESPACE/NAME` in a cluster, the name locally) under which this caller
    /// may write payload samples for the endpoint `name`, if it may.
    pub fn sample_key(&self, name: &str) -> Option<String> {
        match self {
            Principal::Anyone => Some(name.to_string()),
            Principal::Server {
                namespace,
                endpoint,
            } if endpoint == name => Some(format!("{namespace}/{name}")),
            _ => None,
        }
    }
}

/// Why a caller was turned away.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The authenticator itself failed (the TokenReview call, a pod lookup).
    #[error("authenticating: {0}")]
    Unavailable(String),
}

/// Maps a request's bearer token to a [`Principal`].
#[async_trait]
pub trait Authenticator: Send + Sync + std::fmt::Debug {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError>;

    /// May `principal` read the run whose pipeline is recorded as `pipeline`? Cluster runs
    /// record `NAMESPACE/PIPELINE`, so a cluster authenticator can check the namespace.
    async fn may_read(&self, principal: &Principal, pipeline: &str) -> Result<bool, AuthError>;

    /// May `principal`, a user or service (not a pod of toucan's own), write labels for the
    /// endpoint stored as `endpoint` (`NAMESPACE/NAME` in a cluster): is it a writer of that
    /// namespace? A pipeline step of the namespace is let in by the API itself. By default
    /// only the local runtime's [`Principal::Anyone`] may.
    async fn may_label(&self, principal: &Principal, endpoint: &str) -> Result<bool, AuthError> {
        let _ = endpoint;
        Ok(matches!(principal, Principal::Anyone))
    }

    /// May `principal` report alerts of the endpoint stored as `endpoint` (`NAMESPACE/NAME` in
    /// a cluster), as Alertmanager's webhook does? By default whoever may write its labels
    /// ([`Authenticator::may_label`]): the namespace's writers.
    async fn may_alert(&self, principal: &Principal, endpoint: &str) -> Result<bool, AuthError> {
        self.may_label(principal, endpoint).await
    }
}

/// Lets every caller in: for the local runtime, whose API listens on loopback only.
#[derive(Clone, Copy, Debug, Default)]
pub struct Anyone;

#[async_trait]
impl Authenticator for Anyone {
    async fn authenticate(&self, _token: Option<&str>) -> Result<Principal, AuthError> {
        Ok(Principal::Anyone)
    }

    async fn may_read(&self, _principal: &Principal, _pipeline: &str) -> Result<bool, AuthError> {
        Ok(true)
    }
}
