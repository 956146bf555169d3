//! kube-runtime's finalizer helper for reconcilers that answer with the queue's [`Action`].
//!
//! `kube::runtime::finalizer` adds the finalizer before the first `Apply`, runs `Cleanup` on
//! deletion and removes the finalizer after it; it wants kube's own `Action`, which keeps its
//! requeue time private. This wrapper runs it and hands back the queue's [`Action`] from `Apply`
//! or `Cleanup`; when the helper only added or found no finalizer, the answer is
//! [`Action::await_change`] (its own patch wakes the object again), as in kube-runtime.

use std::error::Error as StdError;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use kube::Resource;
use kube::api::Api;
use kube::runtime::controller::Action as KubeAction;
use kube::runtime::finalizer::{Error, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Action;

/// `kube::runtime::finalizer::finalizer`, answering with the queue's [`Action`].
pub async fn finalizer<K, E, Fut>(
    api: &Api<K>,
    finalizer_name: &str,
    obj: Arc<K>,
    reconcile: impl FnOnce(Event<K>) -> Fut,
) -> Result<Action, Error<E>>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    E: StdError + 'static,
    Fut: Future<Output = Result<Action, E>>,
{
    let mut next = Action::await_change();
    let answer = &mut next;
    kube::runtime::finalizer(api, finalizer_name, obj, |event| async move {
        *answer = reconcile(event).await?;
        Ok::<_, E>(KubeAction::await_change())
    })
    .await?;
    Ok(next)
}
