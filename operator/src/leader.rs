//! Leader election on a `coordination.k8s.io/v1` Lease, through kube-lease-manager. A replica
//! takes a free lease by server-side apply under a field manager of its own: the apiserver then
//! refuses the second of two simultaneous takers with a conflict on `holderIdentity`. A field
//! manager shared by the replicas would let both applies succeed and both replicas lead.
//!
//! Only the leader runs the controllers, and so only the leader reconciles and writes status.
//! A replica that loses the lease exits: its controllers may be mid-reconcile, and a fresh
//! start (the Deployment restarts it) is simpler to reason about than stopping them cleanly.

use std::time::Duration;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// How long a lease lasts without renewal; a new leader takes over at most this long after
/// the old one stopped renewing.
pub const LEASE_SECONDS: u64 = 15;
/// Renewal starts this long before the lease would expire.
pub const GRACE_SECONDS: u64 = 5;

/// Joins the election; the receiver turns true while this replica leads.
pub async fn elect(
    client: Client,
    namespace: &str,
    lease_name: &str,
    identity: &str,
) -> anyhow::Result<watch::Receiver<bool>> {
    let manager = LeaseManagerBuilder::new(client, lease_name)
        .with_namespace(namespace)
        .with_parameters(
            LeaseParams::new(identity, LEASE_SECONDS, GRACE_SECONDS)
                .with_field_manager(format!("toucan-operator-{identity}")),
        )
        .build()
        .await?;
    let (leading, task) = manager.watch().await;
    tokio::spawn(async move {
        match task.await {
            Ok(Ok(_)) => tracing::info!("leader election stopped"),
            Ok(Err(e)) => tracing::error!("leader election failed: {e}"),
            Err(e) => tracing::error!("leader election task: {e}"),
        }
    });
    Ok(leading)
}

/// Waits until `leading` turns true.
pub async fn until_leading(leading: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    while !*leading.borrow_and_update() {
        leading.changed().await?;
    }
    Ok(())
}

/// Resolves when leadership is lost (or the election stopped).
pub async fn lost(mut leading: watch::Receiver<bool>) {
    loop {
        if leading.changed().await.is_err() {
            return;
        }
        if !*leading.borrow() {
            // Give the lease manager a moment to log why.
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        }
    }
}
