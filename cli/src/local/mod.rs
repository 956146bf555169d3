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
use toucan_core::engine::{Action, Invocation, RunPlan, RunState, decide};
use toucan_core::store::{
    ArtifactRecord, AttemptRecord, CacheEntry, Millis, Phase, StepCompletion, StepRecord,
};

use executor::{Claim, Executor, NodeResult, now_ms};
use progress::Progress;

/// Runs a plan from `state` to the end. Returns the run's final phase.
pub async fn drive(
    exec: Arc<Executor>,
    plan: &RunPlan,
    mut state: RunState,
    parallelism: usize,
) -> anyhow::Result<Phase> {
    let progress = exec.progress.clone();
    let progress = progress.as_ref();
    let (done_tx, mut done_rx) =
        mpsc::unbounded_channel::<(Box<Invocation>, NodeResult, Option<Claim>)>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut running = 0usize;
    let mut started: BTreeMap<String, Millis> = BTreeMap::new();
    let mut keys: BTreeMap<String, (String, serde_json::Value)> = BTreeMap::new();
    let mut signals = Signals::new()?;
    let run_id = exec.run_id.clone();

    loop {
        let mut wake: Option<Millis> = None;
        loop {
            let actions = decide(plan, &state, now_ms(), parallelism.saturating_sub(running));
            let mut changed = false;
            for action in actions {
                match &action {
                    Action::WakeAt(at) => wake = Some(*at),
                    Action::Finish { phase } => {
                        state.apply(&action);
                        let message = summary_message(&state);
                        exec.store
                            .set_run_phase(&run_id, *phase, message.as_deref(), Some(now_ms()))
                            .await?;
                        return Ok(*phase);
                    }
                    Action::Start(inv) => {
                        state.apply(&action);
                        changed = true;
                        running += 1;
                        let key = inv.key.key().0;
                        let components = serde_json::to_value(&inv.key)?;
                        keys.insert(inv.node.clone(), (key, components));
                        let start = *started.entry(inv.node.clone()).or_insert_with(now_ms);
                        exec.store
                            .upsert_step(&record(
                                &run_id,
                                &inv.node,
                                &state,
                                &keys,
                                Some(start),
                                None,
                            ))
                            .await?;
                        let exec = exec.clone();
                        let tx = done_tx.clone();
                        let stop = stop_rx.clone();
                        let inv = inv.clone();
                        tokio::spawn(async move {
                            let (result, claim) = exec.execute(&inv, stop).await;
                            let _ = tx.send((inv, result, claim));
                        });
                    }
                    Action::Skip { node, reason } => {
                        state.apply(&action);
                        changed = true;
                        progress.skipped(node, reason);
                        let now = now_ms();
                        exec.store
                            .upsert_step(&record(
                                &run_id,
                                node,
                                &state,
                                &keys,
                                started.get(node).copied(),
                                Some(now),
                            ))
                            .await?;
                    }
                    Action::Fail { node, reason } => {
                        state.apply(&action);
                        changed = true;
                        progress.failed(node, reason, None);
                        let now = now_ms();
                        exec.store
                            .upsert_step(&record(
                                &run_id,
                                node,
                                &state,
                                &keys,
                                started.get(node).copied(),
                                Some(now),
                            ))
                            .await?;
                    }
                    Action::Cancel { node } => {
                        state.apply(&action);
                        changed = true;
                        let now = now_ms();
                        exec.store
                            .upsert_step(&record(
                                &run_id,
                                node,
                                &state,
                                &keys,
                                started.get(node).copied(),
                                Some(now),
                            ))
                            .await?;
                    }
                    Action::FanOut { step, items } => {
                        state.apply(&action);
                        changed = true;
                        let now = now_ms();
                        started.entry(step.clone()).or_insert(now);
                        progress.fanned_out(step, items.len());
                        exec.store
                            .upsert_step(&record(&run_id, step, &state, &keys, Some(now), None))
                            .await?;
                        for i in 0..items.len() {
                            let child = toucan_core::engine::child_name(step, i);
                            if state
                                .node(&child)
                                .is_some_and(|n| n.phase == Phase::Pending)
                            {
                                exec.store
                                    .upsert_step(&record(
                                        &run_id, &child, &state, &keys, None, None,
                                    ))
                                    .await?;
                            }
                        }
                    }
                    Action::CompleteFanOut { step, .. } => {
                        state.apply(&action);
                        changed = true;
                        let now = now_ms();
                        exec.store
                            .upsert_step(&record(
                                &run_id,
                                step,
                                &state,
                                &keys,
                                started.get(step).copied(),
                                Some(now),
                            ))
                            .await?;
                    }
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
                let recorded = finish_node(&exec, plan, &mut state, &keys, &started, &inv, result, progress).await;
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

/// Records a finished node in one transaction and updates the state.
#[allow(clippy::too_many_arguments)]
async fn finish_node(
    exec: &Executor,
    plan: &RunPlan,
    state: &mut RunState,
    keys: &BTreeMap<String, (String, serde_json::Value)>,
    started: &BTreeMap<String, Millis>,
    inv: &Invocation,
    result: NodeResult,
    progress: &Progress,
) -> anyhow::Result<()> {
    let run_id = &exec.run_id;
    let now = now_ms();
    let step_started = started.get(&inv.node).copied();
    match result {
        NodeResult::Cached { outputs } => {
            state.record_success(&inv.node, outputs, true);
            if let Some(n) = state.nodes.get_mut(&inv.node) {
                n.attempts = inv.attempt.saturating_sub(1);
            }
            progress.cached(&inv.node);
            let completion = StepCompletion {
                step: record(run_id, &inv.node, state, keys, step_started, Some(now)),
                attempt: None,
                artifacts: Vec::new(),
                cache_entry: None,
            };
            exec.store.complete_step(&completion).await?;
        }
        NodeResult::Ran {
            report,
            log,
            started_at,
        } => {
            let attempt_phase = if report.succeeded {
                Phase::Succeeded
            } else {
                Phase::Failed
            };
            let attempt = AttemptRecord {
                run_id: run_id.clone(),
                step: inv.node.clone(),
                attempt: inv.attempt,
                phase: if state.cancelled && !report.succeeded {
                    Phase::Cancelled
                } else {
                    attempt_phase
                },
                exit_code: report.exit_code,
                started_at,
                finished_at: Some(now),
                log_ref: Some(log.to_string_lossy().into_owned()),
                message: report.error.clone(),
            };
            if report.succeeded {
                state.record_success(&inv.node, report.outputs.clone(), false);
                progress.succeeded(&inv.node, now - started_at);
                let artifacts = report
                    .outputs
                    .artifacts
                    .iter()
                    .map(|(name, a)| ArtifactRecord {
                        digest: a.digest.clone(),
                        size: a.size,
                        kind: a.kind,
                        run_id: run_id.clone(),
                        step: inv.node.clone(),
                        output: name.clone(),
                        created_at: now,
                    })
                    .collect();
                let cache_entry = inv.cache_writable.then(|| CacheEntry {
                    key: inv.key.key().0,
                    outputs: report.outputs.clone(),
                    run_id: run_id.clone(),
                    step: inv.node.clone(),
                    created_at: now,
                });
                let completion = StepCompletion {
                    step: record(run_id, &inv.node, state, keys, step_started, Some(now)),
                    attempt: Some(attempt),
                    artifacts,
                    cache_entry,
                };
                exec.store.complete_step(&completion).await?;
            } else {
                let message = report.error.clone().unwrap_or_else(|| "failed".into());
                let phase = state.record_failure(plan, &inv.node, now, &message);
                match phase {
                    Phase::Pending => {
                        let delay = state
                            .node(&inv.node)
                            .and_then(|n| n.retry_at)
                            .map_or(0, |t| t - now);
                        progress.retrying(&inv.node, inv.attempt, &message, delay);
                    }
                    Phase::Cancelled => progress.cancelled(&inv.node),
                    _ => progress.failed(&inv.node, &message, Some(&log)),
                }
                let finished = phase.is_terminal().then_some(now);
                let completion = StepCompletion {
                    step: record(run_id, &inv.node, state, keys, step_started, finished),
                    attempt: Some(attempt),
                    artifacts: Vec::new(),
                    cache_entry: None,
                };
                exec.store.complete_step(&completion).await?;
            }
        }
        NodeResult::Broken {
            message,
            started_at,
        } => {
            let phase = state.record_failure(plan, &inv.node, now, &message);
            if phase == Phase::Cancelled {
                progress.cancelled(&inv.node);
            } else {
                progress.failed(&inv.node, &message, None);
            }
            let attempt = AttemptRecord {
                run_id: run_id.clone(),
                step: inv.node.clone(),
                attempt: inv.attempt,
                phase: if phase == Phase::Cancelled {
                    Phase::Cancelled
                } else {
                    Phase::Failed
                },
                exit_code: None,
                started_at,
                finished_at: Some(now),
                log_ref: None,
                message: Some(message),
            };
            let finished = phase.is_terminal().then_some(now);
            let completion = StepCompletion {
                step: record(run_id, &inv.node, state, keys, step_started, finished),
                attempt: Some(attempt),
                artifacts: Vec::new(),
                cache_entry: None,
            };
            exec.store.complete_step(&completion).await?;
        }
    }
    Ok(())
}

/// The store row of a node as the state has it now.
fn record(
    run_id: &str,
    node: &str,
    state: &RunState,
    keys: &BTreeMap<String, (String, serde_json::Value)>,
    started_at: Option<Millis>,
    finished_at: Option<Millis>,
) -> StepRecord {
    let n = state
        .node(node)
        .cloned()
        .unwrap_or_else(toucan_core::engine::NodeState::pending);
    let (cache_key, cache_components) = match keys.get(node) {
        Some((k, c)) => (Some(k.clone()), Some(c.clone())),
        None => (None, None),
    };
    StepRecord {
        run_id: run_id.to_string(),
        name: node.to_string(),
        phase: n.phase,
        cache_key,
        cache_components,
        cached: n.cached,
        attempts: n.attempts,
        started_at,
        finished_at: if n.phase.is_terminal() {
            finished_at
        } else {
            None
        },
        outputs: n.outputs,
        message: n.message,
    }
}

fn summary_message(state: &RunState) -> Option<String> {
    let failed: Vec<&str> = state
        .nodes
        .iter()
        .filter(|(_, n)| n.phase == Phase::Failed)
        .map(|(name, _)| name.as_str())
        .collect();
    (!failed.is_empty()).then(|| format!("failed: {}", failed.join(", ")))
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
