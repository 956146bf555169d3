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
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use k8s_openapi::api::core::v1::Namespace;
//! use kube::api::{Api, ListParams};
//!
//! let cluster = toucan_test_cluster::TestCluster::start().await?;
//! let namespaces: Api<Namespace> = Api::all(cluster.client());
//! assert!(!namespaces.list(&ListParams::default()).await?.items.is_empty());
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The context of the kubeconfig's cluster-admin user.
pub const ADMIN_CONTEXT: &str = "admin";
/// The context of the user with no rights but those of `system:authenticated`.
pub const USER_CONTEXT: &str = "user";

/// A running test cluster; dropping it stops the cluster and removes its folder.
pub struct TestCluster {
    dir: tempfile::TempDir,
    client: Client,
    user_client: Client,
}

impl TestCluster {
    /// Builds the cluster if needed, starts it in a new temporary folder and connects to it.
    pub async fn start() -> Result<Self> {
        Self::start_with_env(&[]).await
    }

    /// Like [`TestCluster::start`], with extra environment for the cluster's processes: the
    /// node agent passes its environment to every process-mode container (for example a
    /// `PATH` on which the containers' commands are found).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Result<Self> {
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
            "toucan-test-cluster: cluster in {} ready after {:.1?}",
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
        cluster_dir().join("bin").join("kubectl")
    }
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

/// Runs tests/cluster/down, which waits for every process of the cluster to end.
fn down(dir: &Path) {
    let status = std::process::Command::new(script("down"))
        .arg(dir)
        .stdin(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!(
            "toucan-test-cluster: tests/cluster/down {} failed: {s}",
            dir.display()
        ),
        Err(e) => eprintln!("toucan-test-cluster: running tests/cluster/down: {e}"),
    }
}
