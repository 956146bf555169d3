//! Runs one node: serves it from the cache when the engine's cache decision says hit, else
//! runs one attempt as a process under the launcher (`toucan-worker exec`).
//!
//! Identical nodes (same cache key) in flight at once run once: within this process through
//! a per-key async lock, across processes through a claim row in the metadata store that the
//! holder refreshes while it runs. A waiter re-checks the cache once it gets the claim.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Mutex, OwnedMutexGuard, watch};
use toucan_core::artifacts::ArtifactStore;
use toucan_core::cache::CacheKey;
use toucan_core::engine::Invocation;
use toucan_core::launch::{LaunchReport, LaunchSpec};
use toucan_core::store::{MetadataStore, Millis, StepOutputs};

use super::progress::Progress;
use crate::home::Home;

/// A claim older than this belongs to a process that died; holders refresh theirs.
const CLAIM_STALE_MS: Millis = 30_000;
const CLAIM_REFRESH: Duration = Duration::from_secs(10);
const CLAIM_POLL: Duration = Duration::from_millis(100);
/// How long a stopped step gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Shared by every node task of a run.
#[derive(Debug)]
pub struct Executor {
    pub store: Arc<dyn MetadataStore>,
    pub artifacts: ArtifactStore,
    pub home: Home,
    pub worker: PathBuf,
    pub run_id: String,
    pub progress: Arc<Progress>,
    in_flight: StdMutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// The right to compute one cache key, held until the result is recorded so an identical
/// node waiting for it finds the cache entry.
#[derive(Debug)]
pub struct Claim {
    key: String,
    owner: String,
    _local: OwnedMutexGuard<()>,
}

/// How a node ended.
#[derive(Debug)]
pub enum NodeResult {
    Cached {
        outputs: StepOutputs,
    },
    Ran {
        report: LaunchReport,
        log: PathBuf,
        started_at: Millis,
    },
    /// The runtime could not run it (an I/O error before the command started).
    Broken {
        message: String,
        started_at: Millis,
    },
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}

impl Executor {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        artifacts: ArtifactStore,
        home: Home,
        worker: PathBuf,
        run_id: String,
        progress: Arc<Progress>,
    ) -> Executor {
        Executor {
            store,
            artifacts,
            home,
            worker,
            run_id,
            progress,
            in_flight: StdMutex::new(HashMap::new()),
        }
    }

    fn key_lock(&self, key: &str) -> Arc<Mutex<()>> {
        let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(key.to_string()).or_default().clone()
    }

    /// Looks the key up and decides; a hit returns the cached outputs.
    async fn cached(&self, inv: &Invocation) -> anyhow::Result<Option<StepOutputs>> {
        Ok(toucan_core::cache::lookup(self.store.as_ref(), &self.artifacts, inv, now_ms()).await?)
    }

    /// Gives a claim back once the node's result is recorded.
    pub async fn release(&self, claim: Claim) {
        if let Err(e) = self.store.release_cache_key(&claim.key, &claim.owner).await {
            tracing::warn!("releasing cache key {}: {e}", claim.key);
        }
    }

    /// Serves or runs one node. `stop` turns true when the run is cancelled. The claim, when
    /// one is returned, must be released after the result is recorded.
    pub async fn execute(
        &self,
        inv: &Invocation,
        mut stop: watch::Receiver<bool>,
    ) -> (NodeResult, Option<Claim>) {
        let key = inv.key.key();
        if inv.cache.enabled {
            match self.cached(inv).await {
                Ok(Some(outputs)) => return (NodeResult::Cached { outputs }, None),
                Ok(None) => {}
                Err(e) => tracing::warn!(node = %inv.node, "cache lookup failed: {e:#}"),
            }
            let guard = self.key_lock(&key.0).lock_owned().await;
            let owner = format!("{}/{}", self.run_id, inv.node);
            loop {
                match self
                    .store
                    .claim_cache_key(&key.0, &owner, now_ms(), now_ms() - CLAIM_STALE_MS)
                    .await
                {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!("claiming cache key: {e}");
                        break;
                    }
                }
                if *stop.borrow() {
                    let broken = NodeResult::Broken {
                        message: "cancelled".into(),
                        started_at: now_ms(),
                    };
                    return (broken, None);
                }
                tokio::select! {
                    _ = tokio::time::sleep(CLAIM_POLL) => {}
                    _ = stop.changed() => {}
                }
            }
            let claim = Claim {
                key: key.0.clone(),
                owner: owner.clone(),
                _local: guard,
            };
            // Another node may have finished the same work while we waited.
            if let Ok(Some(outputs)) = self.cached(inv).await {
                return (NodeResult::Cached { outputs }, Some(claim));
            }
            let result = self.run_with_claim(inv, &key, &owner, stop).await;
            (result, Some(claim))
        } else {
            (self.run_attempt(inv, stop).await, None)
        }
    }

    async fn run_with_claim(
        &self,
        inv: &Invocation,
        key: &CacheKey,
        owner: &str,
        stop: watch::Receiver<bool>,
    ) -> NodeResult {
        let refresh = async {
            loop {
                tokio::time::sleep(CLAIM_REFRESH).await;
                let now = now_ms();
                let _ = self
                    .store
                    .claim_cache_key(&key.0, owner, now, now - CLAIM_STALE_MS)
                    .await;
            }
        };
        tokio::select! {
            result = self.run_attempt(inv, stop) => result,
            _ = refresh => NodeResult::Broken { message: "claim refresh ended".into(), started_at: now_ms() },
        }
    }

    /// Runs one attempt as a process group under the launcher.
    async fn run_attempt(&self, inv: &Invocation, mut stop: watch::Receiver<bool>) -> NodeResult {
        let started_at = now_ms();
        let dir = self.home.attempt_dir(&self.run_id, &inv.node, inv.attempt);
        let broken = |message: String| NodeResult::Broken {
            message,
            started_at,
        };
        if dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&dir)
        {
            return broken(format!("clearing {}: {e}", dir.display()));
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            return broken(format!("creating {}: {e}", dir.display()));
        }
        let spec = LaunchSpec {
            run_id: self.run_id.clone(),
            node: inv.node.clone(),
            attempt: inv.attempt,
            argv: inv.argv.clone(),
            env: inv.env.clone(),
            inputs: inv.inputs.clone(),
            outputs: inv.outputs.clone(),
            artifacts: self.artifacts.location().to_string(),
            dir: dir.clone(),
        };
        let spec_path = LaunchSpec::spec_path(&dir);
        let written = serde_json::to_vec_pretty(&spec)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&spec_path, b).map_err(|e| e.to_string()));
        if let Err(e) = written {
            return broken(format!("writing {}: {e}", spec_path.display()));
        }
        let log_path = Home::log_path(&dir);
        let log = match std::fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => return broken(format!("creating {}: {e}", log_path.display())),
        };
        let log_err = match log.try_clone() {
            Ok(f) => f,
            Err(e) => return broken(format!("{}: {e}", log_path.display())),
        };
        self.progress.started(&inv.node, inv.attempt);
        let child = tokio::process::Command::new(&self.worker)
            .arg("exec")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => return broken(format!("starting {}: {e}", self.worker.display())),
        };
        let pid = child.id().map(|id| Pid::from_raw(id as i32));
        let deadline = inv
            .timeout_ms
            .map(|ms| Instant::now() + Duration::from_millis(ms));
        let timeout = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        let cancelled = async {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        let mut stopped: Option<String> = None;
        let status = tokio::select! {
            status = child.wait() => status,
            _ = timeout => {
                stopped = Some(format!("timed out after {}", crate::output::duration(inv.timeout_ms.unwrap_or(0) as i64)));
                terminate(&mut child, pid).await
            }
            _ = cancelled => {
                stopped = Some("cancelled".to_string());
                terminate(&mut child, pid).await
            }
        };
        // Whatever the command left running in its process group goes with it, as in a pod.
        if let Some(pid) = pid {
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let report_path = spec.report_path();
        let report = std::fs::read(&report_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LaunchReport>(&b).ok());
        let report = match (report, stopped) {
            (Some(r), None) => r,
            (_, stopped) => {
                use std::os::unix::process::ExitStatusExt;
                let (code, signal) = match &status {
                    Ok(s) => (s.code(), s.signal()),
                    Err(_) => (None, None),
                };
                let error = stopped.unwrap_or_else(|| match &status {
                    Ok(s) => format!("launcher exited without a report ({s})"),
                    Err(e) => format!("waiting for the launcher: {e}"),
                });
                LaunchReport {
                    succeeded: false,
                    exit_code: code,
                    signal,
                    outputs: StepOutputs::default(),
                    error: Some(error),
                    duration_ms: (now_ms() - started_at).max(0) as u64,
                }
            }
        };
        // Outputs are in the artifact store now; keep only the log, spec and report. Empty
        // directories stay: removing them costs more than they weigh.
        for sub in ["inputs", "outputs", "work"] {
            let path = dir.join(sub);
            if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
        NodeResult::Ran {
            report,
            log: log_path,
            started_at,
        }
    }
}

/// Stops a launcher's process group: SIGTERM, then SIGKILL after a grace period.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: Option<Pid>,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pid) = pid {
        let _ = killpg(pid, Signal::SIGTERM);
    }
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = killpg(pid, Signal::SIGKILL);
            }
            child.wait().await
        }
    }
}
