//! The operator on the real test cluster: a cluster whose process-mode nodes run step pods as
//! processes on this machine (so the launcher and `toucan-worker` really run), a PostgreSQL
//! database of the test's own, an artifact directory, and `toucan-operator` as a child process.

#![allow(dead_code)]

pub mod model;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Client;
use kube::api::{Api, ListParams};
use toucan_core::api::PipelineRun;
use toucan_test_harness::cluster::TestCluster;
use toucan_test_harness::net::{self, http_get};
use toucan_test_harness::postgres::Database;
use toucan_test_harness::s3;

/// Where the workspace's binaries are (`toucan`, `toucan-worker`, `toucan-operator`).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_toucan-operator"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The PATH step processes get: `TOUCAN_TEST_STEP_PATH` (the libtorch worker) first, then the
/// workspace's binaries, then this process's PATH.
pub fn step_path() -> String {
    let mut parts = Vec::new();
    if let Ok(p) = std::env::var("TOUCAN_TEST_STEP_PATH") {
        parts.push(p);
    }
    parts.push(bin_dir().display().to_string());
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

/// A pod's container statuses, which the node agent has written.
pub fn container_statuses(pod: &Pod) -> &[ContainerStatus] {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap()
}

pub struct Harness {
    pub cluster: TestCluster,
    admin_url: String,
    pub db_url: String,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// None when PostgreSQL or the test cluster is not available (and not required).
    pub async fn start(name: &str) -> Option<Harness> {
        Self::start_with_nodes(name, None).await
    }

    /// [`Harness::start`] on a cluster of the nodes `nodes` lists (a `nodes.yaml` of
    /// tests/cluster), instead of the default ones.
    pub async fn start_with_nodes(name: &str, nodes: Option<&str>) -> Option<Harness> {
        let admin = toucan_test_harness::postgres::admin_url().unwrap()?;
        let path = step_path();
        let nodes_file = nodes.map(|yaml| {
            let file = std::env::temp_dir()
                .join(format!("toucan-nodes-{name}-{}.yaml", std::process::id()));
            std::fs::write(&file, yaml).unwrap();
            file.display().to_string()
        });
        let mut env = vec![("PATH", path.as_str())];
        if let Some(file) = &nodes_file {
            env.push(("TOUCAN_CLUSTER_NODES", file.as_str()));
        }
        let cluster = TestCluster::start_with_env(&env).await.unwrap()?;
        if let Some(file) = &nodes_file {
            let _ = std::fs::remove_file(file);
        }
        let db_url = Database::create(&admin, &format!("op_{name}")).unwrap().url;
        let dir = tempfile::Builder::new()
            .prefix("toucan-op-")
            .tempdir()
            .unwrap();
        Some(Harness {
            cluster,
            admin_url: admin,
            db_url,
            dir,
        })
    }

    /// Another fresh database on the test's server; its URL.
    pub fn database(&self, name: &str) -> String {
        Database::create(&self.admin_url, &format!("op_{name}"))
            .unwrap()
            .url
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// The artifact store: the S3 server `make test` starts (`TOUCAN_TEST_S3_ARTIFACTS`, under a
    /// prefix of this test's own), else a directory (pods run on this machine).
    pub fn artifacts(&self) -> String {
        match s3::configured_location() {
            Some(base) => format!(
                "{}/operator-{}",
                base.trim_end_matches('/'),
                self.dir.path().file_name().unwrap().to_string_lossy()
            ),
            None => self.dir.path().join("artifacts").display().to_string(),
        }
    }

    /// With S3 artifacts, the Secret that gives step pods the store's credentials (the
    /// operator's `--artifacts-secret`), created in `namespace`.
    pub fn artifacts_secret(&self, namespace: &str) -> Option<&'static str> {
        s3::configured_location()?;
        let mut args = vec![
            "create".to_string(),
            "secret".into(),
            "generic".into(),
            "toucan-artifacts".into(),
            "-n".into(),
            namespace.into(),
        ];
        for key in s3::CREDENTIAL_ENVS {
            if let Ok(value) = std::env::var(key) {
                args.push(format!("--from-literal={key}={value}"));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.kubectl(&args);
        let already = String::from_utf8_lossy(&out.stderr).contains("already exists");
        assert!(
            out.status.success() || already,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some("toucan-artifacts")
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new(self.cluster.kubectl())
            .args(args)
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .output()
            .unwrap()
    }

    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn apply_crds(&self) {
        let crds = repo().join("charts/toucan/crds/toucan.dev.yaml");
        self.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()]);
        self.wait_established(&[
            "pipelines.toucan.dev",
            "pipelineruns.toucan.dev",
            "trainingjobs.toucan.dev",
            "tuningstudies.toucan.dev",
            "endpoints.toucan.dev",
        ]);
    }

    /// Applies the CRD file `path` of the Go module `module` (`PATH@VERSION`, fetched through
    /// the module cache) and waits until `crd` is established.
    pub fn install_crd_from_go_module(&self, module: &str, path: &str, crd: &str) {
        let out = Command::new("go")
            .args(["mod", "download", "-json", module])
            .current_dir(std::env::temp_dir())
            .env("GOFLAGS", "-mod=mod")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "go mod download: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let file = Path::new(found["Dir"].as_str().unwrap()).join(path);
        self.kubectl_ok(&["apply", "--server-side", "-f", file.to_str().unwrap()]);
        self.wait_established(&[crd]);
    }

    /// Waits until the CRDs `names` are established. Right after `apply` a CRD may have no
    /// conditions yet, which `kubectl wait` reports as an error rather than waiting: it is
    /// asked again.
    pub fn wait_established(&self, names: &[&str]) {
        let mut wait = vec![
            "wait".to_string(),
            "--for=condition=Established".into(),
            "--timeout=30s".into(),
        ];
        wait.extend(names.iter().map(|n| format!("crd/{n}")));
        let wait: Vec<&str> = wait.iter().map(String::as_str).collect();
        for _ in 0..20 {
            if self.kubectl(&wait).status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        self.kubectl_ok(&wait);
    }

    /// The address (`IP:8080`) of a ready router pod in `ns` (of `endpoint` alone when given),
    /// waiting a minute at most.
    pub async fn router_address(&self, ns: &str, endpoint: Option<&str>) -> String {
        let pods: Api<Pod> = Api::namespaced(self.client(), ns);
        let selector = match endpoint {
            Some(name) => format!("toucan.dev/component=router,toucan.dev/endpoint={name}"),
            None => "toucan.dev/component=router".to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .unwrap();
            let ready = list.items.iter().find_map(|p| {
                let status = p.status.as_ref()?;
                let ready = status
                    .conditions
                    .as_ref()?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                let ip = status.pod_ip.as_deref().filter(|_| ready)?;
                Some(format!("{ip}:8080"))
            });
            if let Some(address) = ready {
                return address;
            }
            assert!(
                Instant::now() < deadline,
                "the router pod never became ready"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Starts an operator; `extra` are more flags.
    pub fn operator(&self, identity: &str, extra: &[&str]) -> Operator {
        let [api_port, metrics_port] = net::free_ports().unwrap();
        let log = self.dir.path().join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_toucan-operator"))
            .args([
                "--database-url",
                &self.db_url,
                "--artifacts",
                &self.artifacts(),
                "--api-listen",
                &format!("127.0.0.1:{api_port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--api-url",
                &format!("http://127.0.0.1:{api_port}"),
                "--identity",
                identity,
                "--lease-namespace",
                "default",
            ])
            .args(extra)
            .args(
                self.artifacts_secret("default")
                    .map(|s| vec!["--artifacts-secret", s])
                    .unwrap_or_default(),
            )
            .env("KUBECONFIG", self.cluster.kubeconfig())
            .env(
                "RUST_LOG",
                "info,toucan_operator=debug,kube_runtime=debug,kube_client=debug",
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Operator {
            child: Some(child),
            api_port,
            metrics_port,
            log,
        }
    }

    /// Waits until the PipelineRun has a terminal phase.
    pub async fn wait_finished(&self, ns: &str, name: &str, timeout: Duration) -> PipelineRun {
        let api: Api<PipelineRun> = Api::namespaced(self.client(), ns);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(run) = api.get_opt(name).await.unwrap() {
                let phase = run.status.as_ref().and_then(|s| s.phase.clone());
                if matches!(phase.as_deref(), Some("Succeeded" | "Failed" | "Cancelled")) {
                    return run;
                }
            }
            assert!(
                Instant::now() < deadline,
                "PipelineRun {ns}/{name} did not finish in {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until `f` is true of the pods of a run (by the run's name label).
    pub async fn wait_pods(
        &self,
        ns: &str,
        run: &str,
        what: &str,
        f: impl Fn(&[Pod]) -> bool,
    ) -> Vec<Pod> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pods = self.pods(ns, run).await;
            if f(&pods) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "pods of {run}: {what}: never happened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn pods(&self, ns: &str, run: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client(), ns);
        api.list(&ListParams::default().labels(&format!("toucan.dev/run={run}")))
            .await
            .unwrap()
            .items
    }
}

pub struct Operator {
    child: Option<Child>,
    pub api_port: u16,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if it exited by itself within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, port: u16, path: &str) -> (u16, String) {
        http_get(port, path)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if http_get(self.metrics_port, "/readyz").0 == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "operator never ready:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
