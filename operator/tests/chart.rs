#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Helm chart installed for real on the test cluster (`tests/cluster`): the CRDs and the
//! `helm template` output of `charts/toucan` applied into `toucan-system`, then the RBAC it sets
//! up asked of the API server. A user is refused PipelineRuns until a RoleBinding to
//! `toucan-edit`; `toucan-view` reaches users through the built-in `view` role (aggregation);
//! the operator's ServiceAccount may do its job and no more; the step ServiceAccount may do
//! nothing on toucan's objects or pods. The operator's pods run on the cluster's scripted node
//! (no image is pulled), which is enough for the Deployment to roll out.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Client, Error};
use serde_json::json;
use toucan_test_harness::cluster::TestCluster;

const RELEASE_NAMESPACE: &str = "toucan-system";
const TEAM_NAMESPACE: &str = "team-a";
const OPERATOR: &str = "system:serviceaccount:toucan-system:toucan";
const STEP: &str = "system:serviceaccount:toucan-system:toucan-step";
/// How long RBAC changes (bindings, aggregated rules) may take to reach the authorizer.
const RBAC_PROPAGATION: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs a program to completion with `stdin` as its input; fails with its stderr.
async fn run(program: &Path, args: &[&str], kubeconfig: &Path, stdin: &[u8]) -> Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut input = child.stdin.take().context("stdin")?;
    input.write_all(stdin).await?;
    drop(input);
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}):\n{}",
            program.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// Builds helm when its inputs changed, renders the chart and applies it with the CRDs.
async fn install_chart(cluster: &TestCluster) -> Result<()> {
    let kubeconfig = cluster.kubeconfig();
    let kubectl = cluster.kubectl();
    run(&repo().join("tests/helm/build"), &[], &kubeconfig, b"").await?;
    run(
        &kubectl,
        &["apply", "-f", "charts/toucan/crds/"],
        &kubeconfig,
        b"",
    )
    .await?;
    // Right after `apply` a CRD may have no conditions yet, which `kubectl wait` reports as
    // an error rather than waiting: it is asked again.
    let wait = [
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        "crd/pipelines.toucan.dev",
        "crd/pipelineruns.toucan.dev",
    ];
    for attempt in 1.. {
        match run(&kubectl, &wait, &kubeconfig, b"").await {
            Ok(_) => break,
            Err(_) if attempt < 20 => tokio::time::sleep(Duration::from_millis(250)).await,
            Err(e) => return Err(e),
        }
    }
    let manifests = run(
        &repo().join("tests/helm/bin/helm"),
        &[
            "template",
            "toucan",
            "charts/toucan",
            "--namespace",
            RELEASE_NAMESPACE,
            "--set",
            "database.url=postgres://toucan:secret@db.invalid:5432/toucan",
            // The scripted node runs pods without images: the Deployment can roll out.
            "--set-string",
            "nodeSelector.cluster\\.toucan\\.dev/mode=scripted",
            "--set",
            "tolerations[0].key=cluster.toucan.dev/scripted,tolerations[0].operator=Exists",
        ],
        &kubeconfig,
        b"",
    )
    .await?;
    run(
        &kubectl,
        &["apply", "-n", RELEASE_NAMESPACE, "-f", "-"],
        &kubeconfig,
        manifests.as_bytes(),
    )
    .await?;
    Ok(())
}

fn pipeline_runs(client: Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("toucan.dev", "v1alpha1", "PipelineRun");
    Api::namespaced_with(client, namespace, &ApiResource::from_gvk(&gvk))
}

async fn create_pipeline_run(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<DynamicObject, Error> {
    let run: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": "fashion"}},
    }))
    .expect("a PipelineRun");
    pipeline_runs(client, namespace)
        .create(&PostParams::default(), &run)
        .await
}

fn is_forbidden(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(Error::Api(status)) if status.code == 403)
}

/// Retries `attempt` until it succeeds: RBAC changes reach the authorizer through its informers.
async fn eventually<T, F, Fut>(what: &str, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + RBAC_PROPAGATION;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) if Instant::now() > deadline => panic!("{what}: still failing: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn bind(client: Client, namespace: &str, name: &str, cluster_role: &str) {
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: cluster_role.to_owned(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "User".to_owned(),
            name: "user".to_owned(),
            namespace: None,
        }]),
    };
    Api::<RoleBinding>::namespaced(client, namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
}

/// What a SubjectAccessReview answers for a service account (with the groups its token has).
struct Access {
    client: Client,
    user: &'static str,
}

impl Access {
    async fn allowed(
        &self,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) -> bool {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_owned())),
            None => (resource, None),
        };
        let namespace_of_account = self.user.split(':').nth(2).unwrap();
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(self.user.to_owned()),
                groups: Some(vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace_of_account}"),
                    "system:authenticated".to_owned(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.to_owned()),
                    group: Some(group.to_owned()),
                    resource: Some(resource.to_owned()),
                    subresource,
                    namespace: namespace.map(str::to_owned),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        answer.status.expect("a review's status").allowed
    }

    /// Asserts the answer for each (verb, group, resource, namespace).
    async fn expect(&self, want: bool, cases: &[(&str, &str, &str, Option<&str>)]) {
        let mut wrong = Vec::new();
        for &(verb, group, resource, namespace) in cases {
            if self.allowed(verb, group, resource, namespace).await != want {
                wrong.push(format!("{verb} {group}/{resource} in {namespace:?}"));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} should {}be allowed to: {wrong:#?}",
            self.user,
            if want { "" } else { "not " }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_installs_and_its_rbac_holds() {
    let Some(cluster) = TestCluster::start().await.unwrap() else {
        return;
    };
    let admin = cluster.client();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for name in [RELEASE_NAMESPACE, TEAM_NAMESPACE, "team-b"] {
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap();
    }
    install_chart(&cluster).await.unwrap();

    // The operator's Deployment rolls out (two replicas, leader election between them).
    run(
        &cluster.kubectl(),
        &[
            "rollout",
            "status",
            "deployment/toucan",
            "-n",
            RELEASE_NAMESPACE,
            "--timeout=120s",
        ],
        &cluster.kubeconfig(),
        b"",
    )
    .await
    .unwrap();

    // (a) A user with no binding may not create a PipelineRun.
    let refused = create_pipeline_run(cluster.user_client(), TEAM_NAMESPACE, "before").await;
    assert!(is_forbidden(&refused), "want 403, got {refused:?}");

    // (b) Bound to toucan-edit in team-a, it may.
    bind(admin.clone(), TEAM_NAMESPACE, "team-a-edit", "toucan-edit").await;
    let created = eventually(
        "the user creates a PipelineRun after binding toucan-edit",
        || create_pipeline_run(cluster.user_client(), TEAM_NAMESPACE, "after"),
    )
    .await;
    assert_eq!(created.metadata.namespace.as_deref(), Some(TEAM_NAMESPACE));
    // ... but only there.
    let elsewhere = pipeline_runs(cluster.user_client(), "team-b")
        .list(&ListParams::default())
        .await;
    assert!(
        is_forbidden(&elsewhere),
        "want 403 in team-b, got {elsewhere:?}"
    );

    // The built-in `view` role aggregates toucan-view: bound to `view`, the user lists runs.
    bind(admin.clone(), "team-b", "team-b-view", "view").await;
    let viewer = pipeline_runs(cluster.user_client(), "team-b");
    let all = ListParams::default();
    eventually(
        "the user lists PipelineRuns through the built-in view role",
        || viewer.list(&all),
    )
    .await;
    let create_in_view = create_pipeline_run(cluster.user_client(), "team-b", "viewer").await;
    assert!(
        is_forbidden(&create_in_view),
        "view may create: {create_in_view:?}"
    );

    // (c) The operator's ServiceAccount: what it needs, in any namespace, and no more.
    let team = Some(TEAM_NAMESPACE);
    let release = Some(RELEASE_NAMESPACE);
    let operator = Access {
        client: admin.clone(),
        user: OPERATOR,
    };
    operator
        .expect(
            true,
            &[
                ("create", "", "pods", team),
                ("delete", "", "pods", team),
                ("watch", "", "pods", None),
                ("get", "", "pods/log", team),
                ("create", "", "serviceaccounts", team),
                ("create", "authentication.k8s.io", "tokenreviews", None),
                (
                    "create",
                    "authorization.k8s.io",
                    "subjectaccessreviews",
                    None,
                ),
                ("watch", "toucan.dev", "pipelineruns", None),
                ("patch", "toucan.dev", "pipelineruns/status", team),
                ("update", "toucan.dev", "pipelines/finalizers", team),
                ("watch", "toucan.dev", "tuningstudies", None),
                ("patch", "toucan.dev", "tuningstudies/status", team),
                ("update", "toucan.dev", "tuningstudies/finalizers", team),
                ("create", "events.k8s.io", "events", team),
                (
                    "list",
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    None,
                ),
                ("update", "coordination.k8s.io", "leases", release),
            ],
        )
        .await;
    operator
        .expect(
            false,
            &[
                ("get", "", "secrets", team),
                ("get", "", "secrets", release),
                ("list", "", "secrets", None),
                (
                    "delete",
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    None,
                ),
                (
                    "create",
                    "apiextensions.k8s.io",
                    "customresourcedefinitions",
                    None,
                ),
                ("update", "", "pods", team),
                ("create", "", "pods/exec", team),
                ("delete", "", "serviceaccounts", team),
                ("create", "", "serviceaccounts/token", team),
                ("update", "coordination.k8s.io", "leases", team),
                ("create", "rbac.authorization.k8s.io", "rolebindings", team),
                ("create", "toucan.dev", "trainingjobs", team),
                ("create", "toucan.dev", "tuningstudies", team),
                ("delete", "toucan.dev", "tuningstudies", team),
            ],
        )
        .await;

    // (d) The step ServiceAccount: nothing on toucan's objects nor pods, anywhere.
    let step = Access {
        client: admin,
        user: STEP,
    };
    let mut denied = Vec::new();
    for namespace in [team, release, None] {
        for resource in ["pipelines", "pipelineruns", "pipelineruns/status"] {
            for verb in [
                "get", "list", "watch", "create", "update", "patch", "delete",
            ] {
                denied.push((verb, "toucan.dev", resource, namespace));
            }
        }
        for resource in ["pods", "pods/log", "secrets", "serviceaccounts"] {
            for verb in ["get", "list", "create", "delete"] {
                denied.push((verb, "", resource, namespace));
            }
        }
    }
    step.expect(false, &denied).await;
}
