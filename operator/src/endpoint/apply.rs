//! Carrying out what a reconcile built: the children applied server-side by the operator's
//! field manager, the children of versions no longer in the spec deleted, and the server pods'
//! service account created where it is missing.
//!
//! Only objects the endpoint (by UID) controls are ever deleted: a Deployment of the same name
//! that belongs to someone else is left alone.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ENDPOINT_LABEL;
use super::children::{Children, ROUTE_GROUP, ROUTE_KIND, ROUTE_VERSION};
use crate::context::Context;
use crate::error::Result;
use crate::objects;
use crate::run::pods::dns_label;
use crate::status::FIELD_MANAGER;

/// What applying left undone that is not an error of the reconcile.
#[derive(Debug, Default, PartialEq)]
pub struct Applied {
    /// Why the `HTTPRoute` could not be applied (the cluster has no Gateway API).
    pub route_refused: Option<String>,
}

/// Applies every child.
pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<Applied> {
    for deployment in &children.deployments {
        apply_one(ctx, namespace, deployment).await?;
    }
    for autoscaler in &children.autoscalers {
        apply_one(ctx, namespace, autoscaler).await?;
    }
    if let Some(service) = &children.service {
        apply_one(ctx, namespace, service).await?;
    }
    for service in &children.version_services {
        apply_one(ctx, namespace, service).await?;
    }
    let mut applied = Applied::default();
    if let Some(route) = &children.route {
        let object: DynamicObject =
            serde_json::from_value(route.clone()).map_err(kube::Error::SerdeError)?;
        let result = routes(ctx, namespace)
            .patch(
                &object.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await;
        match result {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {
                applied.route_refused = Some(format!(
                    "the cluster has no {ROUTE_KIND} resource ({ROUTE_GROUP}/{ROUTE_VERSION}): \
                     install Gateway API's CRDs; the router serves the Service alone meanwhile"
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(applied)
}

/// The namespace's `HTTPRoute`s.
fn routes(ctx: &Context, namespace: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        ROUTE_GROUP,
        ROUTE_VERSION,
        ROUTE_KIND,
    ));
    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
}

async fn apply_one<K>(ctx: &Context, namespace: &str, object: &K) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(
        &object.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

/// Deletes the endpoint's Deployments and HorizontalPodAutoscalers that `keep` no longer
/// has (a version removed from the spec, or one that stopped scaling on CPU).
pub async fn sweep(
    ctx: &Context,
    namespace: &str,
    endpoint: &str,
    uid: &str,
    keep: &Children,
) -> Result<()> {
    let deployments: BTreeSet<String> = keep.deployments.iter().map(|d| d.name_any()).collect();
    let autoscalers: BTreeSet<String> = keep.autoscalers.iter().map(|a| a.name_any()).collect();
    sweep_kind::<Deployment>(ctx, namespace, endpoint, uid, &deployments).await?;
    sweep_kind::<HorizontalPodAutoscaler>(ctx, namespace, endpoint, uid, &autoscalers).await?;
    // The router's Service goes with the endpoint alone; the versions' go with the route.
    let services: BTreeSet<String> = keep
        .service
        .iter()
        .chain(&keep.version_services)
        .map(|s| s.name_any())
        .collect();
    sweep_kind::<Service>(ctx, namespace, endpoint, uid, &services).await?;
    if keep.route.is_none() {
        let name = dns_label(endpoint);
        let api = routes(ctx, namespace);
        // No Gateway API (404) or no route: nothing to delete.
        if let Ok(Some(route)) = api.get_opt(&name).await
            && route
                .owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        {
            objects::delete(&api, &name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}

async fn sweep_kind<K>(
    ctx: &Context,
    namespace: &str,
    endpoint: &str,
    uid: &str,
    keep: &BTreeSet<String>,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{ENDPOINT_LABEL}={}", dns_label(endpoint));
    for object in api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
    {
        let ours = object
            .owner_references()
            .iter()
            .any(|o| o.uid == uid && o.controller == Some(true));
        let name = object.name_any();
        if ours && !keep.contains(&name) {
            objects::delete(&api, &name, &DeleteParams::background()).await?;
        }
    }
    Ok(())
}
