//! Authentication of API callers with Kubernetes service-account tokens.
//!
//! A token is checked with the TokenReview API. A step pod's projected token is bound to the
//! pod, so the review names the pod (`authentication.kubernetes.io/pod-name` and `pod-uid`);
//! the pod's own annotations then say which run and node it executes, and that is all it may
//! write for. A model server of an Endpoint (a pod labelled `toucan.dev/endpoint` and
//! `toucan.dev/version`) is [`Principal::Server`] of that endpoint in the pod's namespace: it
//! may ship payload samples for it alone; the endpoint's router pod (labelled
//! `toucan.dev/component: router`) is [`Principal::Router`], which may read the endpoint's
//! router configuration alone. Any other authenticated identity is a reader, allowed to read a
//! run when a SubjectAccessReview says it may `get` PipelineRuns in the run's namespace, and to
//! send labels for an Endpoint when one says it may `update` Endpoints there. Results are kept
//! for a short while under the token's SHA-256, so a burst of reports costs one review.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use toucan_api::{AuthError, Authenticator, Principal};

use crate::endpoint::{
    COMPONENT_LABEL, ENDPOINT_ANNOTATION, ENDPOINT_LABEL, ROUTER_COMPONENT, SERVER_COMPONENT,
    VERSION_LABEL,
};
use crate::run::pods::{MANAGED_BY, MANAGED_BY_LABEL, NODE_ANNOTATION, RUN_ID_ANNOTATION};

/// How long a reviewed token is trusted without asking again.
const REVIEW_TTL: Duration = Duration::from_secs(30);
/// Entries kept at most; the cache is cleared when it grows past this.
const MAX_CACHED: usize = 10_000;

const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

pub struct ClusterAuth {
    client: Client,
    reviewed: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl std::fmt::Debug for ClusterAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterAuth").finish_non_exhaustive()
    }
}

impl ClusterAuth {
    pub fn new(client: Client) -> ClusterAuth {
        ClusterAuth {
            client,
            reviewed: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Result<Principal, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let status = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview: {e}")))?
            .status
            .unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Rejected(
                status.error.unwrap_or_else(|| "not authenticated".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |key: &str| extra.get(key).and_then(|v| v.first()).cloned();
        let (Some(pod_name), Some(pod_uid)) = (first(POD_NAME_EXTRA), first(POD_UID_EXTRA)) else {
            return Ok(Principal::Reader {
                name,
                groups: user.groups.unwrap_or_default(),
            });
        };
        // system:serviceaccount:NAMESPACE:NAME
        let Some(namespace) = name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split(':').next())
        else {
            return Err(AuthError::Rejected(
                "a pod-bound token of no service account".into(),
            ));
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pods
            .get_opt(&pod_name)
            .await
            .map_err(|e| {
                AuthError::Unavailable(format!("reading pod {namespace}/{pod_name}: {e}"))
            })?
            .ok_or_else(|| AuthError::Rejected(format!("pod {namespace}/{pod_name} is gone")))?;
        if pod.metadata.uid.as_deref() != Some(pod_uid.as_str()) {
            return Err(AuthError::Rejected(format!(
                "pod {namespace}/{pod_name} was replaced"
            )));
        }
        let labels = pod.metadata.labels.unwrap_or_default();
        let managed = labels
            .get(MANAGED_BY_LABEL)
            .is_some_and(|v| v == MANAGED_BY);
        let annotations = pod.metadata.annotations.unwrap_or_default();
        if let Some((endpoint, component)) = endpoint_pod(&labels, &annotations) {
            let namespace = namespace.to_string();
            return Ok(if component == ROUTER_COMPONENT {
                Principal::Router {
                    namespace,
                    endpoint,
                }
            } else {
                Principal::Server {
                    namespace,
                    endpoint,
                }
            });
        }
        match (
            managed,
            annotations.get(RUN_ID_ANNOTATION),
            annotations.get(NODE_ANNOTATION),
        ) {
            (true, Some(run_id), Some(node)) => Ok(Principal::Step {
                run_id: run_id.clone(),
                node: node.clone(),
            }),
            _ => Err(AuthError::Rejected(format!(
                "pod {namespace}/{pod_name} is not a toucan step pod"
            ))),
        }
    }
}

/// The Endpoint a pod of an Endpoint serves (its exact name from the annotation its template
/// carries, else the label: the same when the name fits a label value) and the pod's part:
/// a model server (labelled with its version) or the router.
fn endpoint_pod(
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Option<(String, String)> {
    let label = labels.get(ENDPOINT_LABEL)?;
    let component = match labels.get(COMPONENT_LABEL).map(String::as_str) {
        Some(ROUTER_COMPONENT) => ROUTER_COMPONENT,
        _ => {
            labels.get(VERSION_LABEL)?;
            SERVER_COMPONENT
        }
    };
    let name = annotations
        .get(ENDPOINT_ANNOTATION)
        .unwrap_or(label)
        .clone();
    Some((name, component.to_string()))
}

#[async_trait]
impl Authenticator for ClusterAuth {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((principal, at)) = self.lock().get(&key)
            && at.elapsed() < REVIEW_TTL
        {
            return Ok(principal.clone());
        }
        let principal = self.review(token).await?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (principal.clone(), Instant::now()));
        Ok(principal)
    }

    async fn may_read(&self, principal: &Principal, pipeline: &str) -> Result<bool, AuthError> {
        let namespace = pipeline.split_once('/').map(|(ns, _)| ns);
        self.may(principal, "get", "pipelineruns", namespace).await
    }

    /// Labels are feedback on an endpoint's answers: whoever may update the Endpoint (its
    /// namespace's writers) may send them.
    async fn may_label(&self, principal: &Principal, endpoint: &str) -> Result<bool, AuthError> {
        let Some((namespace, _)) = endpoint.split_once('/') else {
            return Ok(false);
        };
        self.may(principal, "update", "endpoints", Some(namespace))
            .await
    }
}

impl ClusterAuth {
    /// Whether a reader `principal` may `verb` toucan's `resource` in `namespace` (every
    /// namespace when `None`), by a SubjectAccessReview.
    async fn may(
        &self,
        principal: &Principal,
        verb: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> Result<bool, AuthError> {
        let Principal::Reader { name, groups } = principal else {
            return Ok(matches!(principal, Principal::Anyone));
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(name.clone()),
                groups: Some(groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    namespace: namespace.map(str::to_string),
                    verb: Some(verb.into()),
                    group: Some(toucan_core::api::GROUP.into()),
                    resource: Some(resource.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let status = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("SubjectAccessReview: {e}")))?
            .status;
        Ok(status.is_some_and(|s| s.allowed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        self.reviewed.lock().unwrap_or_else(|p| p.into_inner())
    }
}
