//! The local runtime: drives the engine's decisions with processes on this machine.
//!
//! The loop: ask the engine what to do ([`decide`]), apply and record every action, start a
//! task per `Start` (served from the cache or run under the launcher, see [`executor`]), then
//! wait for a task to finish, a retry to come due, or a signal. Each result is recorded in one
//! store transaction before the next decision, so a crash loses at most the attempts that were
//! running, and `toucan run --resume` picks up from what was recorded.

pub mod executor;
pub mod progress;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use toucan_core::engine::{Action, Invocation, NodeState, RunPlan, RunState, child_name, decide};
use toucan_core::store::{AttemptRecord, CacheEntry, Millis, Phase, StepCompletion, StepRecord};

use executor::{Claim, Executor, NodeResult, now_ms};
use progress::Progress;

/// What the runtime remembers about nodes beyond the engine's state, to write store rows: when
/// each node first started and the cache key it resolved to.
#[derive(Debug)]
struct StepLedger {
    run_id: String,
    started: BTreeMap<String, Millis>,
    keys: BTreeMap<String, (String, serde_json::Value)>,
}

impl StepLedger {
    /// The store row of a node as the state has it now; `now` becomes its finish time when
    /// the node is done.
    fn row(&self, state: &RunState, node: &str, now: Millis) -> StepRecord {
        let n = state.node(node).cloned().unwrap_or_else(NodeState::pending);
        let (cache_key, cache_components) = match self.keys.get(node) {
            Some((k, c)) => (Some(k.clone()), Some(c.clone())),
            None => (None, None),
        };
        StepRecord {
            run_id: self.run_id.clone(),
            name: node.to_string(),
            phase: n.phase,
            cache_key,
            cache_components,
            cached: n.cached,
            attempts: n.attempts,
            started_at: self.started.get(node).copied(),
            finished_at: n.phase.is_terminal().then_some(now),
            outputs: n.outputs,
            message: n.message,
        }
    }

    async fn save(&self, exec: &Executor, state: &RunState, node: &str) -> anyhow::Result<()> {
        exec.store
            .upsert_step(&self.row(state, node, now_ms()))
            .await?;
        Ok(())
    }
}

/// Runs a plan from `state` to the end. Returns the run's final phase.
pub async fn drive(
    exec: Arc<Executor>,
    plan: &RunPlan,
    mut state: RunState,
    parallelism: usize,
) -> anyhow::Result<Phase> {
    let progress = exec.progress.clone();
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(Box<Invocation>, NodeResult, Option<Claim>)>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = 0usize;
    let mut ledger = StepLedger {
        run_id: exec.run_id.clone(),
        started: BTreeMap::new(),
        keys: BTreeMap::new(),
    };
    let mut signals = Signals::new()?;

    loop {
        // Apply decisions until only starts and waits remain.
        let mut wake: Option<Millis> = None;
        loop {
            let actions = decide(plan, &state, now_ms(), parallelism.saturating_sub(running));
            let mut changed = false;
            for action in actions {
                if let Action::WakeAt(at) = action {
                    wake = Some(at);
                    continue;
                }
                state.apply(&action);
                changed = true;
                match &action {
                    Action::Finish { phase } => {
                        let message = state.failure_summary();
                        exec.store
                            .set_run_phase(&exec.run_id, *phase, message.as_deref(), Some(now_ms()))
                            .await?;
                        return Ok(*phase);
                    }
                    Action::Start(inv) => {
                        running += 1;
                        let components = serde_json::to_value(&inv.key)?;
                        ledger
                            .keys
                            .insert(inv.node.clone(), (inv.key.key().0, components));
                        ledger
                            .started
                            .entry(inv.node.clone())
                            .or_insert_with(now_ms);
                        ledger.save(&exec, &state, &inv.node).await?;
                        let (exec, tx, stop, inv) =
                            (exec.clone(), done_tx.clone(), stop_rx.clone(), inv.clone());
                        tokio::spawn(async move {
                            let (result, claim) = exec.execute(&inv, stop).await;
                            let _ = tx.send((inv, result, claim));
                        });
                    }
                    Action::FanOut { step, items } => {
                        ledger.started.entry(step.clone()).or_insert_with(now_ms);
                        progress.fanned_out(step, items.len());
                        ledger.save(&exec, &state, step).await?;
                        for i in 0..items.len() {
                            let child = child_name(step, i);
                            if state
                                .node(&child)
                                .is_some_and(|n| n.phase == Phase::Pending)
                            {
                                ledger.save(&exec, &state, &child).await?;
                            }
                        }
                    }
                    Action::Skip { node, reason } => {
                        progress.skipped(node, reason);
                        ledger.save(&exec, &state, node).await?;
                    }
                    Action::Fail { node, reason } => {
                        progress.failed(node, reason, None);
                        ledger.save(&exec, &state, node).await?;
                    }
                    Action::Cancel { node } | Action::CompleteFanOut { step: node, .. } => {
                        ledger.save(&exec, &state, node).await?;
                    }
                    Action::WakeAt(_) => {}
                }
            }
            if !changed {
                break;
            }
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
        tokio::select! {
            Some((inv, result, claim)) = done_rx.recv() => {
                running -= 1;
                let recorded = finish_node(&exec, plan, &mut state, &ledger, &inv, result).await;
                if let Some(claim) = claim {
                    exec.release(claim).await;
                }
                recorded?;
            }
            _ = sleep => {}
            _ = signals.next(), if !state.cancelled => {
                progress.cancelling();
                state.cancel();
                let _ = stop_tx.send(true);
            }
        }
    }
}

/// Updates the state with a node's result and records it, its attempt, its artifacts and its
/// cache entry in one transaction.
async fn finish_node(
    exec: &Executor,
    plan: &RunPlan,
    state: &mut RunState,
    ledger: &StepLedger,
    inv: &Invocation,
    result: NodeResult,
) -> anyhow::Result<()> {
    let progress = &exec.progress;
    let now = now_ms();
    let node = inv.node.as_str();
    let attempt = |phase, exit_code, started_at, log_ref, message| AttemptRecord {
        run_id: ledger.run_id.clone(),
        step: node.to_string(),
        attempt: inv.attempt,
        phase,
        exit_code,
        started_at,
        finished_at: Some(now),
        log_ref,
        message,
    };
    let mut completion = StepCompletion {
        step: ledger.row(state, node, now),
        attempt: None,
        artifacts: Vec::new(),
        cache_entry: None,
    };
    match result {
        NodeResult::Cached { outputs } => {
            state.record_success(node, outputs, true);
            // Serving from the cache is not an attempt.
            if let Some(n) = state.nodes.get_mut(node) {
                n.attempts = inv.attempt.saturating_sub(1);
            }
            progress.cached(node);
        }
        NodeResult::Ran {
            report,
            log,
            started_at,
        } if report.succeeded => {
            state.record_success(node, report.outputs.clone(), false);
            progress.succeeded(node, now - started_at);
            let log_ref = Some(log.to_string_lossy().into_owned());
            completion.attempt = Some(attempt(
                Phase::Succeeded,
                report.exit_code,
                started_at,
                log_ref,
                None,
            ));
            completion.artifacts = report.outputs.artifact_records(&ledger.run_id, node, now);
            completion.cache_entry = inv.cache_writable.then(|| CacheEntry {
                key: inv.key.key().0,
                outputs: report.outputs.clone(),
                run_id: ledger.run_id.clone(),
                step: node.to_string(),
                created_at: now,
            });
        }
        NodeResult::Ran {
            report,
            log,
            started_at,
        } => {
            let message = report.error.clone().unwrap_or_else(|| "failed".into());
            let phase = state.record_failure(plan, node, now, &message);
            report_failure(progress, state, inv, phase, &message, Some(&log), now);
            let log_ref = Some(log.to_string_lossy().into_owned());
            let attempt_phase = if phase == Phase::Cancelled {
                Phase::Cancelled
            } else {
                Phase::Failed
            };
            completion.attempt = Some(attempt(
                attempt_phase,
                report.exit_code,
                started_at,
                log_ref,
                Some(message),
            ));
        }
        NodeResult::Broken {
            message,
            started_at,
        } => {
            let phase = state.record_failure(plan, node, now, &message);
            report_failure(progress, state, inv, phase, &message, None, now);
            let attempt_phase = if phase == Phase::Cancelled {
                Phase::Cancelled
            } else {
                Phase::Failed
            };
            completion.attempt = Some(attempt(
                attempt_phase,
                None,
                started_at,
                None,
                Some(message),
            ));
        }
    }
    completion.step = ledger.row(state, node, now);
    exec.store.complete_step(&completion).await?;
    Ok(())
}

/// Tells the user what a failed attempt leads to: a retry, a cancelled or a failed step.
fn report_failure(
    progress: &Progress,
    state: &RunState,
    inv: &Invocation,
    phase: Phase,
    message: &str,
    log: Option<&std::path::Path>,
    now: Millis,
) {
    match phase {
        Phase::Pending => {
            let delay = state
                .node(&inv.node)
                .and_then(|n| n.retry_at)
                .map_or(0, |t| t - now);
            progress.retrying(&inv.node, inv.attempt, message, delay);
        }
        Phase::Cancelled => progress.cancelled(&inv.node),
        _ => progress.failed(&inv.node, message, log),
    }
}

/// SIGINT (Ctrl-C) and SIGTERM.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
