//! The helper starts a real cluster whose admin sees the built-in namespaces and whose second
//! user is refused by RBAC.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};
use toucan_test_harness::cluster::TestCluster;

#[tokio::test]
async fn admin_lists_namespaces_and_user_is_forbidden() -> anyhow::Result<()> {
    let Some(cluster) = TestCluster::start().await? else {
        return Ok(());
    };

    let namespaces: Api<Namespace> = Api::all(cluster.client());
    let names: Vec<String> = namespaces
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|ns| ns.metadata.name)
        .collect();
    for want in ["default", "kube-node-lease", "kube-public", "kube-system"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }

    let denied = Api::<Namespace>::all(cluster.user_client())
        .list(&ListParams::default())
        .await;
    match denied {
        Err(kube::Error::Api(status)) => assert!(status.is_forbidden(), "{status:?}"),
        other => panic!("the unprivileged user listed namespaces: {other:?}"),
    }

    let dir = cluster.dir().to_owned();
    drop(cluster);
    assert!(!dir.exists(), "down left {}", dir.display());
    Ok(())
}
