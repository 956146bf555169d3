//! Carrying out what a reconcile built: the children applied server-side by the operator's
//! field manager, the children of versions no longer in the spec deleted, and the server pods'
//! service account created where it is missing.
//!
//! Only objects the endpoint (by UID) controls are ever deleted: a Deployment of the same name
//! that belongs to someone else is left alone.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ENDPOINT_LABEL;
use super::children::Children;
use crate::context::Context;
use crate::error::Result;
use crate::run::pods::dns_label;
use crate::status::FIELD_MANAGER;

/// Applies every child.
pub async fn apply(ctx: &Context, namespace: &str, children: &Children) -> Result<()> {
    for deployment in &children.deployments {
        apply_one(ctx, namespace, deployment).await?;
    }
    for autoscaler in &children.autoscalers {
        apply_one(ctx, namespace, autoscaler).await?;
    }
    if let Some(service) = &children.service {
        apply_one(ctx, namespace, service).await?;
    }
    Ok(())
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
    // The Service is one per endpoint: it goes with the endpoint alone.
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
            match api.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
