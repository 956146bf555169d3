//! `GET /api/v1/namespaces/{ns}/endpoints/{name}/router-config`: what an Endpoint's router
//! applies, served by every operator replica (the router polls it every second); and
//! `GET .../stats?window=SECONDS`: the router's own figures (requests, errors, latency by
//! version), asked of the router pod at the time, for `toucan describe endpoint --cluster`.
//!
//! The document is derived, never stored: each version's ready replicas from the pod cache
//! ([`super::observe::endpoint_pods`]), the split in force from the spec and the rollout's
//! state in `status.rollout` ([`effective_traffic`], the same function the status shows),
//! the shadow, the sticky header and the retries from the spec. So the router follows a
//! rollout step as soon as the leader has written it, whichever replica it asks.
//!
//! The route is not part of the `toucan_api` crate (and its OpenAPI document) because only
//! the operator has pods to report. Callers authenticate like the API's: the endpoint's own
//! router pod (its service-account token, `toucan-router --config-token-file`), or anyone who
//! may read the namespace's runs.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::runtime::reflector::ObjectRef;
use toucan_api::{AuthError, Authenticator};
use toucan_core::api::Endpoint;
use toucan_core::serving::rollout::RolloutState;
use toucan_core::serving::traffic::effective_traffic;
use toucan_core::time::now_ms;
use toucan_router::config::{DEFAULT_RETRIES, DEFAULT_TIMEOUT};
use toucan_router::{RouterConfig, ShadowConfig, VersionConfig};

use super::observe::EndpointPods;
use super::watches::Watches;

/// The route's path, in axum's syntax.
pub const PATH: &str = "/api/v1/namespaces/{namespace}/endpoints/{name}/router-config";
/// The router's figures.
pub const STATS_PATH: &str = "/api/v1/namespaces/{namespace}/endpoints/{name}/stats";

/// What the route needs: the caches, and who the caller is.
#[derive(Clone, Debug)]
struct RouteState {
    watches: Watches,
    auth: Arc<dyn Authenticator>,
}

/// The route, over the endpoint and pod caches, for the callers `auth` admits.
pub fn routes(watches: Watches, auth: Arc<dyn Authenticator>) -> axum::Router {
    axum::Router::new()
        .route(PATH, get(router_config_handler))
        .route(STATS_PATH, get(stats_handler))
        .with_state(RouteState { watches, auth })
}

/// The caller may read the configuration of `namespace/name`: its router, or a reader of the
/// namespace. Refusals say no more than "unauthenticated" or "not found", as the API's do.
async fn admitted(
    auth: &dyn Authenticator,
    headers: &HeaderMap,
    namespace: &str,
    name: &str,
) -> Result<(), Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let principal = match auth.authenticate(token).await {
        Ok(p) => p,
        Err(AuthError::Unavailable(e)) => {
            tracing::warn!(error = %e, "router-config: authenticator unavailable");
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "authentication unavailable".into(),
            ));
        }
        Err(_) => return Err(error(StatusCode::UNAUTHORIZED, "unauthenticated".into())),
    };
    if principal.routes_for(namespace, name) {
        return Ok(());
    }
    match auth
        .may_read(&principal, &format!("{namespace}/{name}"))
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no Endpoint {name:?} in namespace {namespace:?}"),
        )),
        Err(_) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "authentication unavailable".into(),
        )),
    }
}

async fn router_config_handler(
    State(RouteState { watches, auth }): State<RouteState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(refused) = admitted(auth.as_ref(), &headers, &namespace, &name).await {
        return refused;
    }
    match cached(&watches, &namespace, &name) {
        Ok((endpoint, uid)) => {
            Json(router_config(&endpoint, &watches.pods_of(&uid))).into_response()
        }
        Err((status, message)) => error(status, message),
    }
}

/// The endpoint `namespace/name` from the cache, with its UID; the refusal's status and message otherwise.
fn cached(
    watches: &Watches,
    namespace: &str,
    name: &str,
) -> Result<(Arc<Endpoint>, String), (StatusCode, String)> {
    if !watches.synced() {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            "the operator has not listed endpoints and pods yet".into(),
        ));
    }
    let key = ObjectRef::<Endpoint>::new(name).within(namespace);
    let Some(endpoint) = watches.endpoints.get(&key) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no Endpoint {name:?} in namespace {namespace:?}"),
        ));
    };
    let Some(uid) = endpoint.metadata.uid.clone() else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("Endpoint {name:?} has no uid"),
        ));
    };
    Ok((endpoint, uid))
}

#[derive(Debug, serde::Deserialize)]
struct StatsQuery {
    window: Option<u64>,
}

async fn stats_handler(
    State(RouteState { watches, auth }): State<RouteState>,
    headers: HeaderMap,
    Path((namespace, name)): Path<(String, String)>,
    Query(query): Query<StatsQuery>,
) -> Response {
    if let Err(refused) = admitted(auth.as_ref(), &headers, &namespace, &name).await {
        return refused;
    }
    let window = query
        .window
        .unwrap_or(super::observe::MAX_STATS_WINDOW_SECONDS);
    if !(1..=super::observe::MAX_STATS_WINDOW_SECONDS).contains(&window) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "window: {window} is not in [1, {}] seconds",
                super::observe::MAX_STATS_WINDOW_SECONDS
            ),
        );
    }
    let uid = match cached(&watches, &namespace, &name) {
        Ok((_, uid)) => uid,
        Err((status, message)) => return error(status, message),
    };
    let Some(router) = watches.pods_of(&uid).router else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Endpoint {namespace}/{name} has no ready router pod"),
        );
    };
    match super::observe::router_stats(&router, window).await {
        Ok(stats) => Json(stats).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// The router's configuration for `endpoint` whose pods are `pods`.
pub fn router_config(endpoint: &Endpoint, pods: &EndpointPods) -> RouterConfig {
    let spec = &endpoint.spec;
    let rollout = endpoint
        .status
        .as_ref()
        .and_then(|s| s.rollout.as_ref())
        .map(|r| RolloutState::from_status(r, now_ms()));
    let traffic = effective_traffic(spec, rollout.as_ref());
    let weight = |version: &str| {
        traffic
            .iter()
            .find(|(name, _)| name == version)
            .map_or(0, |(_, w)| *w)
    };
    RouterConfig {
        endpoint: endpoint.metadata.name.clone().unwrap_or_default(),
        versions: spec
            .versions
            .iter()
            .map(|v| VersionConfig {
                name: v.name.clone(),
                weight: weight(&v.name),
                replicas: pods
                    .versions
                    .get(&v.name)
                    .map(|p| p.ready.clone())
                    .unwrap_or_default(),
            })
            .collect(),
        shadow: spec.shadow.as_ref().map(|s| ShadowConfig {
            version: s.version.clone(),
            percent: f64::from(s.percent),
        }),
        sticky_header: spec.router.as_ref().and_then(|r| r.sticky_header.clone()),
        retries: spec
            .router
            .as_ref()
            .and_then(|r| r.retries)
            .unwrap_or(DEFAULT_RETRIES),
        timeout: DEFAULT_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::endpoint::observe::VersionPods;
    use serde_json::json;

    fn endpoint(status: serde_json::Value) -> Endpoint {
        serde_json::from_value(json!({
            "apiVersion": "toucan.dev/v1alpha1", "kind": "Endpoint",
            "metadata": {"name": "fashion", "namespace": "models", "uid": "u"},
            "spec": {
                "versions": [
                    {"name": "v1", "model": {"digest": "sha256:aa"}},
                    {"name": "v2", "model": {"digest": "sha256:bb"}},
                    {"name": "v3", "model": {"digest": "sha256:cc"}},
                ],
                "traffic": [{"version": "v1", "weight": 100}],
                "shadow": {"version": "v3", "percent": 5},
                "rollout": {"candidate": "v2", "steps": [50, 100], "interval": "2s"},
                "router": {"stickyHeader": "x-user", "retries": 1},
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn the_split_follows_the_rollout_and_only_ready_replicas_are_listed() {
        let mut pods = EndpointPods::default();
        pods.versions.insert(
            "v1".into(),
            VersionPods {
                running: 2,
                ready: vec!["http://10.0.0.1:8080".into()],
            },
        );
        let before = router_config(&endpoint(json!({})), &pods);
        let weights: Vec<_> = before
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.weight))
            .collect();
        assert_eq!(weights, [("v1", 100), ("v2", 0), ("v3", 0)]);
        assert_eq!(before.versions[0].replicas, ["http://10.0.0.1:8080"]);
        assert!(before.versions[1].replicas.is_empty());
        assert_eq!(before.shadow.as_ref().unwrap().version, "v3");
        assert_eq!(before.sticky_header.as_deref(), Some("x-user"));
        assert_eq!(before.retries, 1);
        before.validate().unwrap();

        let during = router_config(
            &endpoint(
                json!({"rollout": {"candidate": "v2", "model": "sha256:bb", "step": 0,
                                        "weight": 50, "phase": "Progressing"}}),
            ),
            &pods,
        );
        let weights: Vec<_> = during
            .versions
            .iter()
            .map(|v| (v.name.as_str(), v.weight))
            .collect();
        assert_eq!(weights, [("v1", 50), ("v2", 50), ("v3", 0)]);
    }
}
