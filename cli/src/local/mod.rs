//! The local runtime: the run engine's effects carried out with processes on this machine.
//!
//! The loop: hand the engine what was observed ([`Run::advance`]), carry out the effects it
//! returns in order — rows written in one SQLite transaction, events shown as progress
//! lines, cache lookups and attempts started as tasks (see [`executor`]), stops sent,
//! claims renewed or released — then wait for a task to report, the engine's wake-up time,
//! or a signal. Every result is recorded before the next decision, so a crash loses at most
//! the attempts that were running, and `toucan run --resume` picks up from what was recorded.
//! Nothing here decides anything about the run: that is the engine's job, shared with the
//! operator.

pub mod endpoint;
pub mod executor;
mod gang;
pub mod progress;
pub mod study;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use toucan_core::engine::Run;
use toucan_core::engine::run::{Effect, Observation};
use toucan_core::records::{Millis, Phase};
use toucan_core::time::now_ms;

use executor::Executor;

/// Drives `run` to its end from the effects its creation returned; Ctrl-C (or SIGTERM)
/// cancels it. Returns the final phase.
pub async fn drive(exec: Arc<Executor>, run: Run, initial: Vec<Effect>) -> anyhow::Result<Phase> {
    let (cancel_tx, cancel) = watch::channel(false);
    let mut signals = Signals::new()?;
    let listener = tokio::spawn(async move {
        signals.next().await;
        let _ = cancel_tx.send(true);
        // Held until the run ends: a dropped sender would read as no cancellation.
        std::future::pending::<()>().await;
    });
    let phase = drive_until(exec, run, initial, cancel).await;
    listener.abort();
    phase
}

/// [`drive`], cancelled when `cancel` turns true instead of on a signal: a study stops its
/// trials this way.
pub async fn drive_until(
    exec: Arc<Executor>,
    mut run: Run,
    initial: Vec<Effect>,
    mut cancel: watch::Receiver<bool>,
) -> anyhow::Result<Phase> {
    let (observed_tx, mut observed_rx) = mpsc::unbounded_channel::<Observation>();
    let mut stops: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let mut effects = initial;
    let first = if *cancel.borrow_and_update() {
        vec![Observation::CancelRequested]
    } else {
        Vec::new()
    };
    effects.extend(run.advance(first, now_ms()));
    loop {
        let wake = carry_out(&exec, effects, &observed_tx, &mut stops).await?;
        if let Some(phase) = run.finished() {
            return Ok(phase);
        }
        let sleep = async {
            match wake {
                Some(at) => {
                    let ms = (at - now_ms()).max(0) as u64;
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await
                }
                None => std::future::pending().await,
            }
        };
        let mut observed = Vec::new();
        tokio::select! {
            Some(first) = observed_rx.recv() => {
                observed.push(first);
                while let Ok(more) = observed_rx.try_recv() {
                    observed.push(more);
                }
            }
            _ = sleep => {}
            Ok(()) = cancel.changed(), if !run.state.cancelled => {
                if *cancel.borrow_and_update() {
                    observed.push(Observation::CancelRequested);
                }
            }
        }
        effects = run.advance(observed, now_ms());
    }
}

/// Carries out effects in order; returns when the engine wants to be woken without news.
async fn carry_out(
    exec: &Arc<Executor>,
    effects: Vec<Effect>,
    observed: &mpsc::UnboundedSender<Observation>,
    stops: &mut HashMap<String, watch::Sender<bool>>,
) -> anyhow::Result<Option<Millis>> {
    let mut wake = None;
    for effect in effects {
        match effect {
            Effect::Write(changes) => exec.store.record(&changes).await?,
            Effect::Notify(event) => exec.progress.event(&event),
            Effect::CheckCache { invocation, claim } => {
                let (exec, tx) = (exec.clone(), observed.clone());
                tokio::spawn(async move {
                    let result = exec.check_cache(&invocation, claim.as_ref()).await;
                    let _ = tx.send(Observation::CacheChecked {
                        node: invocation.node.clone(),
                        attempt: invocation.attempt,
                        result,
                    });
                });
            }
            Effect::Launch(invocation) => {
                let (stop_tx, stop_rx) = watch::channel(false);
                stops.insert(invocation.node.clone(), stop_tx);
                let (exec, tx) = (exec.clone(), observed.clone());
                tokio::spawn(async move {
                    exec.run_attempt(&invocation, stop_rx, &tx).await;
                });
            }
            Effect::Stop { node, .. } => {
                if let Some(stop) = stops.get(&node) {
                    let _ = stop.send(true);
                }
            }
            Effect::RenewClaims(claims) => exec.renew_claims(&claims).await,
            Effect::ReleaseClaim(claim) => exec.release_claim(&claim).await,
            Effect::WakeAt(at) => wake = Some(at),
        }
    }
    Ok(wake)
}

/// The program `name`: the path in the environment variable `env` when set, else next to
/// this executable (or one folder up, where `cargo test` puts test binaries), else `name`
/// itself, found on PATH.
pub(crate) fn sibling_binary(name: &str, env: &str) -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    if let Some(p) = std::env::var_os(env) {
        return Ok(p.into());
    }
    let exe = std::env::current_exe().context("locating the toucan executable")?;
    for dir in exe
        .parent()
        .into_iter()
        .chain(exe.parent().and_then(|d| d.parent()))
    {
        let candidate = dir.join(name);
        if candidate.exists() {
            return Ok(candidate);
        }
    }
    Ok(name.into())
}

/// Whether the bare program name `name` is found in a folder of PATH.
pub(crate) fn on_path(name: &std::path::Path) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}

/// SIGINT (Ctrl-C) and SIGTERM.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    pub(crate) fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
