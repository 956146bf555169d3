//! Writing a resource's status, the one way every controller does it: a server-side apply of
//! `status` alone by the operator's field manager, skipped when it did not change.

use kube::api::{Api, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::Result;

/// The field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "toucan-operator";

/// Applies `status` to the `K` named `name` in `namespace`, unless it equals `previous`.
pub async fn apply<K, S>(
    client: &Client,
    namespace: &str,
    name: &str,
    previous: Option<&S>,
    status: &S,
) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if previous == Some(status) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
