//! The processes of a local endpoint: model server replicas (`toucan-worker serve`) and the
//! router (`toucan-router`). Each prints one JSON line once it listens, which is how its port
//! (bound as port 0) is learnt; its stderr goes to a log file in the endpoint's directory.
//! A process is killed when its handle is dropped, so nothing outlives `toucan serve`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use toucan_core::api::EndpointSpec;
use toucan_router::admin::EndpointStats;

/// How long a replica may take to load its model and listen.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a stopped process has to finish its requests before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Where the two programs are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub worker: PathBuf,
    pub router: PathBuf,
}

impl Binaries {
    /// Next to this executable, else on PATH; `TOUCAN_WORKER` and `TOUCAN_ROUTER` override.
    pub fn locate() -> anyhow::Result<Binaries> {
        Ok(Binaries {
            worker: crate::local::sibling_binary("toucan-worker", "TOUCAN_WORKER")?,
            router: crate::local::sibling_binary("toucan-router", "TOUCAN_ROUTER")?,
        })
    }
}

/// The model server flags every replica of the endpoint shares.
#[derive(Clone, Debug)]
pub struct ServerSettings {
    args: Vec<String>,
}

impl ServerSettings {
    pub fn of(name: &str, spec: &EndpointSpec, api: &str) -> ServerSettings {
        let mut args = vec!["--name".to_string(), name.to_string()];
        // The local API binds loopback and admits anyone: no token.
        args.extend(spec.server_flags(Some((api, None))));
        ServerSettings { args }
    }
}

/// One model server process.
#[derive(Debug)]
pub struct Replica {
    pub index: u32,
    pub addr: SocketAddr,
    child: Child,
}

impl Replica {
    pub async fn start(
        binaries: &Binaries,
        settings: &ServerSettings,
        version: &str,
        index: u32,
        model: &Path,
        dir: &Path,
    ) -> anyhow::Result<Replica> {
        let log = dir.join("logs").join(format!("{version}-{index}.log"));
        let mut command = Command::new(&binaries.worker);
        command
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(&settings.args)
            .args(["--version", version, "--listen", "127.0.0.1:0"]);
        let (child, line) = spawn_listening(command, &log, START_TIMEOUT)
            .await
            .with_context(|| format!("starting replica {index} of version {version}"))?;
        let addr = listening(&line, "listening")
            .with_context(|| format!("replica {index} of version {version} printed {line:?}"))?;
        Ok(Replica { index, addr, child })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub async fn stop(self) {
        stop(self.child).await;
    }
}

/// The router process.
#[derive(Debug)]
pub struct RouterProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl RouterProcess {
    pub async fn start(
        binaries: &Binaries,
        config: &Path,
        listen: SocketAddr,
        dir: &Path,
    ) -> anyhow::Result<RouterProcess> {
        let mut command = Command::new(&binaries.router);
        command
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen.to_string());
        let log = dir.join("logs").join("router.log");
        let (child, line) = spawn_listening(command, &log, Duration::from_secs(30))
            .await
            .context("starting the router")?;
        let addr = listening(&line, "listening")
            .with_context(|| format!("the router printed {line:?}"))?;
        Ok(RouterProcess { addr, child })
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the router counted over its window.
    pub async fn stats(&self) -> anyhow::Result<EndpointStats> {
        router_stats(&format!("http://{}", self.addr)).await
    }

    pub async fn stop(self) {
        stop(self.child).await;
    }
}

/// Starts `command` with stderr to `log`, and waits for its first stdout line.
async fn spawn_listening(
    mut command: Command,
    log: &Path,
    timeout: Duration,
) -> anyhow::Result<(Child, String)> {
    let stderr =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .with_context(|| format!("running {:?}", command.as_std().get_program()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(timeout, lines.next_line()).await;
    let tail = || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    };
    match line {
        Ok(Ok(Some(line))) => {
            // Keep draining stdout so the process never blocks on a full pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok((child, line))
        }
        Ok(_) => anyhow::bail!("it exited before listening:\n{}", tail()),
        Err(_) => anyhow::bail!("it did not listen within {timeout:?}:\n{}", tail()),
    }
}

fn listening(line: &str, field: &str) -> anyhow::Result<SocketAddr> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    value[field]
        .as_str()
        .context("no address")?
        .parse()
        .context("not an address")
}

/// SIGTERM, then SIGKILL after the grace period.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

/// What the router at `url` counted over its window.
pub async fn router_stats(url: &str) -> anyhow::Result<EndpointStats> {
    let url = format!("{url}/router/v1/stats");
    tokio::task::spawn_blocking(move || -> anyhow::Result<EndpointStats> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        Ok(agent.get(&url).call()?.body_mut().read_json()?)
    })
    .await?
}
