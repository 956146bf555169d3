//! Carries out the engine's cache lookups and attempts on this machine: a lookup through the
//! store crate's `cache::check` (the same one the operator uses), an attempt as a process
//! group under the launcher (`toucan-launcher exec`), reporting back to the runtime's loop as
//! observations.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};
use toucan_core::engine::Invocation;
use toucan_core::engine::run::{CLAIM_TTL_MS, CacheCheck, Claim, Observation};
use toucan_core::launch::{LaunchReport, LaunchSpec};
use toucan_core::records::StepOutputs;
use toucan_core::time::now_ms;
use toucan_store::artifacts::ArtifactStore;
use toucan_store::metadata::MetadataStore;

use super::progress::Progress;
use crate::home::Home;

/// How long a stopped step gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Shared by every task of a run.
#[derive(Debug)]
pub struct Executor {
    pub store: Arc<dyn MetadataStore>,
    pub artifacts: ArtifactStore,
    pub home: Home,
    /// The launcher that wraps each attempt (see `commands::run::launcher_binary`).
    pub launcher: PathBuf,
    pub run_id: String,
    pub progress: Arc<Progress>,
    /// Where the steps keep their checkpoints (one folder per step), when not beside their
    /// attempts: a study's multi-fidelity trial keeps them across the runs of its budgets,
    /// so that a promoted trial trains on from its last epoch.
    pub checkpoints: Option<PathBuf>,
}

impl Executor {
    /// Looks an invocation up in the cache, taking `claim` on a miss.
    pub async fn check_cache(&self, inv: &Invocation, claim: Option<&Claim>) -> CacheCheck {
        toucan_store::cache::check(self.store.as_ref(), &self.artifacts, inv, claim, now_ms()).await
    }

    pub async fn renew_claims(&self, claims: &[Claim]) {
        let now = now_ms();
        for c in claims {
            if let Err(e) = self
                .store
                .claim_cache_key(&c.key, &c.owner, now, now - CLAIM_TTL_MS)
                .await
            {
                tracing::warn!("renewing the claim on cache key {}: {e}", c.key);
            }
        }
    }

    pub async fn release_claim(&self, claim: &Claim) {
        if let Err(e) = self.store.release_cache_key(&claim.key, &claim.owner).await {
            tracing::warn!("releasing cache key {}: {e}", claim.key);
        }
    }

    /// Runs one attempt and reports it: `Launched` once its process runs, then `Ended`
    /// (or `LaunchFailed` when it could not start).
    pub async fn run_attempt(
        &self,
        inv: &Invocation,
        stop: watch::Receiver<bool>,
        observed: &mpsc::UnboundedSender<Observation>,
    ) {
        let result = match &inv.gang {
            Some(gang) => self.gang_attempt(inv, gang, stop, observed).await,
            None => self.attempt(inv, stop, observed).await,
        };
        let report = match result {
            Ok(report) => Observation::Ended {
                node: inv.node.clone(),
                attempt: inv.attempt,
                report,
            },
            Err(message) => Observation::LaunchFailed {
                node: inv.node.clone(),
                attempt: inv.attempt,
                message,
            },
        };
        let _ = observed.send(report);
    }

    /// Runs one attempt as a process group under the launcher; an error is an attempt that
    /// could not start.
    async fn attempt(
        &self,
        inv: &Invocation,
        stop: watch::Receiver<bool>,
        observed: &mpsc::UnboundedSender<Observation>,
    ) -> Result<LaunchReport, String> {
        let dir = self.home.attempt_dir(&self.run_id, &inv.node, inv.attempt);
        fresh_dir(&dir)?;
        let mut spec =
            LaunchSpec::for_attempt(&self.run_id, inv, self.artifacts.location(), dir.clone());
        spec.checkpoints = self.checkpoints.as_ref().map(|root| root.join(&inv.node));
        let deadline = inv
            .timeout_ms
            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms));
        run_launcher(&self.launcher, &spec, stop, deadline, |log| {
            let _ = observed.send(Observation::Launched {
                node: inv.node.clone(),
                attempt: inv.attempt,
                log: Some(log.to_string_lossy().into_owned()),
            });
        })
        .await
    }
}

/// Runs the launcher `launcher` on `spec` in its own process group until it ends, `stop` turns
/// true, or `deadline` (with the timeout it came from, in ms) passes; `started` is called
/// with the log's path once it runs. An error is a launcher that could not start.
pub(super) async fn run_launcher(
    launcher: &std::path::Path,
    spec: &LaunchSpec,
    mut stop: watch::Receiver<bool>,
    deadline: Option<(Instant, u64)>,
    started: impl FnOnce(&std::path::Path),
) -> Result<LaunchReport, String> {
    let started_at = now_ms();
    let broken = Err::<LaunchReport, String>;
    let spec_path = LaunchSpec::spec_path(&spec.dir);
    let written = serde_json::to_vec_pretty(spec)
        .map_err(|e| e.to_string())
        .and_then(|b| std::fs::write(&spec_path, b).map_err(|e| e.to_string()));
    if let Err(e) = written {
        return broken(format!("writing {}: {e}", spec_path.display()));
    }
    let log_path = Home::log_path(&spec.dir);
    let log = match std::fs::File::create(&log_path) {
        Ok(f) => f,
        Err(e) => return broken(format!("creating {}: {e}", log_path.display())),
    };
    let log_err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return broken(format!("{}: {e}", log_path.display())),
    };
    let child = tokio::process::Command::new(launcher)
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
        Err(e) => return broken(format!("starting {}: {e}", launcher.display())),
    };
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    started(&log_path);
    let timeout = async {
        match deadline {
            Some((d, _)) => tokio::time::sleep_until(d.into()).await,
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
            let ms = deadline.map_or(0, |(_, ms)| ms);
            stopped = Some(format!("timed out after {}", crate::output::duration(ms as i64)));
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
    let report = match std::fs::read(&report_path) {
        Ok(bytes) => serde_json::from_slice::<LaunchReport>(&bytes).map_err(|e| {
            format!(
                "the launcher's report {} is unreadable: {e}",
                report_path.display()
            )
        }),
        Err(_) => Err(match &status {
            Ok(s) => format!("launcher exited without a report ({s})"),
            Err(e) => format!("waiting for the launcher: {e}"),
        }),
    };
    let report = match (report, stopped) {
        (Ok(r), None) => r,
        (report, stopped) => {
            use std::os::unix::process::ExitStatusExt;
            let (code, signal) = match &status {
                Ok(s) => (s.code(), s.signal()),
                Err(_) => (None, None),
            };
            // Stopped (timeout, cancel) says why first; else why the report is missing.
            let error = stopped.or(report.err()).unwrap_or_default();
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
        let path = spec.dir.join(sub);
        if std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_some()) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
    Ok(report)
}

/// Empties (or makes) an attempt's directory.
pub(super) fn fresh_dir(dir: &std::path::Path) -> Result<(), String> {
    if dir.exists()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        return Err(format!("clearing {}: {e}", dir.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
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
