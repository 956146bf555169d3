//! Kubernetes calls whose "already so" answer is success: a delete of an object that is gone.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams};
use serde::de::DeserializeOwned;

use crate::error::Result;

/// Deletes `name`; one already gone counts as deleted.
pub async fn delete<K>(api: &Api<K>, name: &str, params: &DeleteParams) -> Result<()>
where
    K: Clone + DeserializeOwned + Debug,
{
    match api.delete(name, params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
