//! A real Kubernetes cluster for a test: [`TestCluster::start`] runs `tests/cluster/up` into a
//! temporary folder (building the control plane first when its sources changed) and hands back
//! kube [`Client`]s; dropping the [`TestCluster`] runs `tests/cluster/down`, which stops every
//! process of it and removes the folder.
//!
//! The cluster is the one `tests/cluster/README.md` describes: kube-apiserver with embedded etcd,
//! kube-controller-manager, kube-scheduler and `toucan-node-agent`, whose process-mode nodes run
//! each pod's containers as processes on this machine. It stops by itself should the test process
//! die without dropping it (the test's pid is its owner), and after three hours in any case.
//!
//! The control plane's first build takes 15-25 minutes on 2 cores, so a plain `cargo test` does
//! not start it: when `tests/cluster/bin` is not built, [`TestCluster::start`] says which test
//! it skips and why on stderr (past the test harness's capture, so it shows in a passing run)
//! and returns `None`, and the test returns early. `make test` builds the cluster first and sets
//! `TOUCAN_REQUIRE_CLUSTER=1`, which turns that skip into an error, as `TOUCAN_REQUIRE_POSTGRES`
//! and `TOUCAN_REQUIRE_S3` do for the other test services.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use k8s_openapi::api::core::v1::Namespace;
//! use kube::api::{Api, ListParams};
//!
//! let Some(cluster) = toucan_test_harness::cluster::TestCluster::start().await? else {
//!     return Ok(()); // not built: skipped, and said so
//! };
//! let namespaces: Api<Namespace> = Api::all(cluster.client());
//! assert!(!namespaces.list(&ListParams::default()).await?.items.is_empty());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::skip::{self, Availability};

/// The context of the kubeconfig's cluster-admin user.
pub const ADMIN_CONTEXT: &str = "admin";
/// The context of the user with no rights but those of `system:authenticated`.
pub const USER_CONTEXT: &str = "user";
/// Set to `1` (as `make test` does), a test that needs the cluster fails when it is not built
/// instead of skipping.
pub const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_CLUSTER";

/// A running test cluster; dropping it stops the cluster and removes its folder.
pub struct TestCluster {
    dir: tempfile::TempDir,
    client: Client,
    user_client: Client,
}

impl TestCluster {
    /// Starts the cluster in a new temporary folder and connects to it (rebuilding it first
    /// when its sources changed since it was built). `None`, after saying which test skips and
    /// why, when it was never built and [`REQUIRE_ENV`] is not `1`; an error when it is.
    pub async fn start() -> Result<Option<Self>> {
        Self::start_with_env(&[]).await
    }

    /// Like [`TestCluster::start`], with extra environment for the cluster's processes: the
    /// node agent passes its environment to every process-mode container (for example a
    /// `PATH` on which the containers' commands are found).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Result<Option<Self>> {
        // Built: start it (a rebuild after a source change reuses Go's caches and is quick).
        // Never built (the cold build takes 15-25 minutes): skip, unless required.
        match skip::availability(is_built(), skip::required(REQUIRE_ENV).as_deref()) {
            Availability::Use => Self::up(env).await.map(Some),
            Availability::Skip => {
                skip::say(&skip_message(&skip::this_test()));
                Ok(None)
            }
            Availability::Fail => bail!(
                "{REQUIRE_ENV}=1 but the test cluster is not built (tests/cluster/bin has no \
                 finished build): run tests/cluster/build, or `make test`, which builds it"
            ),
        }
    }

    async fn up(env: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("toucan-test-cluster-")
            .tempdir()
            .context("creating the cluster's folder")?;
        let started = Instant::now();
        let output = tokio::process::Command::new(script("up"))
            .arg(dir.path())
            .env("TOUCAN_CLUSTER_OWNER_PID", std::process::id().to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {}", script("up").display()))?;
        if !output.status.success() {
            // Keep what the logs say; the folder goes with `dir`.
            bail!(
                "tests/cluster/up {} failed ({}):\n{}",
                dir.path().display(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        // From here on, dropping `cluster` stops it, whatever fails next.
        let kubeconfig = dir.path().join("kubeconfig");
        let client = connect(&kubeconfig, ADMIN_CONTEXT).await;
        let user_client = connect(&kubeconfig, USER_CONTEXT).await;
        let (client, user_client) = match (client, user_client) {
            (Ok(a), Ok(u)) => (a, u),
            (Err(e), _) | (_, Err(e)) => {
                down(dir.path());
                return Err(e);
            }
        };
        eprintln!(
            "toucan-test-harness: cluster in {} ready after {:.1?}",
            dir.path().display(),
            started.elapsed()
        );
        Ok(Self {
            dir,
            client,
            user_client,
        })
    }

    /// A client of the cluster-admin user.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// A client of the unprivileged user `user`, for RBAC tests: bind it to roles first.
    pub fn user_client(&self) -> Client {
        self.user_client.clone()
    }

    /// The cluster's folder: `kubeconfig`, `logs/`, `tokens/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The kubeconfig, with the contexts [`ADMIN_CONTEXT`] (current) and [`USER_CONTEXT`].
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// The kubectl built from the same Kubernetes release as the server.
    pub fn kubectl(&self) -> PathBuf {
        bin_dir().join("kubectl")
    }
}

fn skip_message(test: &str) -> String {
    format!(
        "skipping {test}: the test cluster is not built \
         (tests/cluster/bin; its first build takes 15-25 minutes on 2 cores). \
         `make test` builds it and runs every test with it; or run tests/cluster/build, then \
         this test again. {REQUIRE_ENV}=1 makes this skip a failure."
    )
}

/// Whether tests/cluster/build has finished at least once: it writes `bin/.inputs` last.
fn is_built() -> bool {
    let bin = bin_dir();
    bin.join(".inputs").is_file() && bin.join("toucan-cluster").is_file()
}

fn bin_dir() -> PathBuf {
    cluster_dir().join("bin")
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        down(self.dir.path());
    }
}

fn cluster_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn script(name: &str) -> PathBuf {
    cluster_dir().join(name)
}

async fn connect(kubeconfig: &Path, context: &str) -> Result<Client> {
    let file = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let options = KubeConfigOptions {
        context: Some(context.to_owned()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .with_context(|| format!("context {context} of {}", kubeconfig.display()))?;
    Client::try_from(config).context("building a kube client")
}

/// A token of the service account `account` bound to `pod` (valid 10 minutes), as the
/// kubelet mounts into the pod: what a step pod sends to the operator's API.
pub async fn pod_token(client: Client, account: &str, pod: &Pod) -> Result<String> {
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .context("the pod has no namespace")?;
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            bound_object_ref: Some(BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(600),
        },
        ..TokenRequest::default()
    };
    let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("requesting a token of {namespace}/{account}"))?;
    Ok(answer
        .status
        .context("the token request came back without a status")?
        .token)
}

/// Runs tests/cluster/down, which waits for every process of the cluster to end.
fn down(dir: &Path) {
    let status = std::process::Command::new(script("down"))
        .arg(dir)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "toucan-test-harness: tests/cluster/down {} failed: {s}",
            dir.display()
        ),
        Err(e) => eprintln!("toucan-test-harness: running tests/cluster/down: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_skip_names_the_test_and_how_to_run_it() {
        let message = skip_message("test chart_installs");
        assert!(
            message.contains("skipping test chart_installs"),
            "{message}"
        );
        assert!(message.contains("`make test`"), "{message}");
        assert!(message.contains("tests/cluster/build"), "{message}");
        assert!(message.contains(REQUIRE_ENV), "{message}");
    }
}
