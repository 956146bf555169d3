//! Applying what a shell observed to a [`Run`]. An observation about an attempt that is no
//! longer in flight (a repeated report, a pod seen again after its result was recorded) is
//! ignored, so shells may report at least once.

use super::{CacheCheck, Effect, InFlight, Observation, Out, Run, RunEvent, Stage};
use crate::launch::LaunchReport;
use crate::records::{CacheEntry, Millis, Phase, RunPhase};

impl Run {
    pub(super) fn observe(&mut self, observation: Observation, now: Millis, out: &mut Out) {
        match observation {
            Observation::CacheChecked {
                node,
                attempt,
                result,
            } => self.cache_checked(&node, attempt, result, now, out),
            Observation::Launched { node, attempt, log } => {
                let Some(flight) = self.flight_mut(&node, attempt) else {
                    return;
                };
                flight.stage = Stage::Running;
                flight.log = log;
                let flight = flight.clone();
                let row = self.attempt_row(&node, &flight, Phase::Running);
                out.changes.attempts.push(row);
                out.notify(RunEvent::StepStarted { node, attempt });
            }
            Observation::LaunchFailed {
                node,
                attempt,
                message,
            } => {
                let report = LaunchReport {
                    succeeded: false,
                    exit_code: None,
                    signal: None,
                    outputs: Default::default(),
                    error: Some(message),
                    duration_ms: 0,
                };
                self.ended(&node, attempt, report, now, out);
            }
            Observation::Ended {
                node,
                attempt,
                report,
            } => self.ended(&node, attempt, report, now, out),
            Observation::Lost {
                node,
                attempt,
                reason,
            } => self.lost(&node, attempt, &reason, now, out),
            Observation::Staged { inputs } => {
                for (step, by_input) in inputs {
                    self.plan
                        .local_inputs
                        .entry(step)
                        .or_default()
                        .extend(by_input);
                }
                let missing = self.plan.unstaged_inputs();
                match missing.first() {
                    None => self.staged = true,
                    Some(u) => self.staging_failed(
                        &format!(
                            "no digest was reported for input {:?} of step {:?}",
                            u.input, u.step
                        ),
                        now,
                        out,
                    ),
                }
            }
            Observation::StagingFailed { message } => self.staging_failed(&message, now, out),
            Observation::CancelRequested => {
                if self.state.cancelled || self.state.finished.is_some() {
                    return;
                }
                self.state.cancel();
                out.notify(RunEvent::Cancelling);
                for (node, flight) in &self.in_flight {
                    if !matches!(flight.stage, Stage::CheckingCache(_)) {
                        out.effects.push(Effect::Stop {
                            node: node.clone(),
                            attempt: flight.attempt,
                        });
                    }
                }
            }
        }
    }

    fn flight_mut(&mut self, node: &str, attempt: u32) -> Option<&mut InFlight> {
        self.in_flight
            .get_mut(node)
            .filter(|f| f.attempt == attempt)
    }

    fn cache_checked(
        &mut self,
        node: &str,
        attempt: u32,
        result: CacheCheck,
        now: Millis,
        out: &mut Out,
    ) {
        let Some((inv, writable)) = self.flight_mut(node, attempt).and_then(|f| match &f.stage {
            Stage::CheckingCache(inv) => Some((inv.clone(), f.cache_writable)),
            _ => None,
        }) else {
            return;
        };
        match result {
            CacheCheck::Hit(outputs) => {
                self.take_flight(node, out);
                self.state.record_success(node, outputs, true);
                // Serving from the cache is not an attempt.
                self.state.set_attempts(node, attempt.saturating_sub(1));
                self.finished.insert(node.to_string(), now);
                out.touched.insert(node.to_string());
                out.notify(RunEvent::StepCached {
                    node: node.to_string(),
                });
            }
            CacheCheck::Miss | CacheCheck::Failed(_) => {
                if let CacheCheck::Failed(error) = &result {
                    out.notify(RunEvent::CacheUnavailable {
                        node: node.to_string(),
                        error: error.clone(),
                    });
                }
                if let Some(f) = self.in_flight.get_mut(node) {
                    f.claimed = result == CacheCheck::Miss && writable;
                    f.stage = Stage::Launching(inv.clone());
                }
                if self.state.cancelled {
                    // Cancelled while the cache was consulted: it never runs.
                    self.take_flight(node, out);
                    self.state.record_cancelled(node, "run cancelled");
                    self.finished.insert(node.to_string(), now);
                    out.touched.insert(node.to_string());
                    return;
                }
                out.effects.push(Effect::Launch(inv));
            }
            CacheCheck::Busy => {
                self.take_flight(node, out);
                self.state.wait(
                    node,
                    attempt.saturating_sub(1),
                    now + super::CLAIM_POLL_MS,
                    "waiting for an identical step in another run",
                );
                out.touched.insert(node.to_string());
            }
        }
    }

    /// Removes an attempt from flight, releasing its claim.
    fn take_flight(&mut self, node: &str, out: &mut Out) -> Option<InFlight> {
        let flight = self.in_flight.remove(node)?;
        if flight.claimed {
            out.effects
                .push(Effect::ReleaseClaim(self.claim(node, &flight.key)));
        }
        Some(flight)
    }

    fn ended(
        &mut self,
        node: &str,
        attempt: u32,
        report: LaunchReport,
        now: Millis,
        out: &mut Out,
    ) {
        if self.flight_mut(node, attempt).is_none() {
            return;
        }
        let Some(flight) = self.take_flight(node, out) else {
            return;
        };
        let mut row = self.attempt_row(node, &flight, Phase::Succeeded);
        row.exit_code = report.exit_code;
        row.finished_at = Some(now);
        out.touched.insert(node.to_string());
        if report.succeeded {
            self.state
                .record_success(node, report.outputs.clone(), false);
            self.finished.insert(node.to_string(), now);
            out.changes
                .artifacts
                .extend(report.outputs.artifact_records(&self.id, node, now));
            if flight.cache_writable {
                out.changes.cache_entries.push(CacheEntry {
                    key: flight.key.clone(),
                    outputs: report.outputs,
                    run_id: self.id.clone(),
                    step: node.to_string(),
                    created_at: now,
                });
            }
            out.changes.attempts.push(row);
            out.notify(RunEvent::StepSucceeded {
                node: node.to_string(),
                attempt,
                duration_ms: (now - flight.started_at).max(0),
            });
            return;
        }
        let message = report.error.unwrap_or_else(|| "failed".into());
        let phase = self
            .state
            .record_failure(&self.plan, node, now, &message, report.exit_code);
        row.phase = if phase == Phase::Cancelled {
            Phase::Cancelled
        } else {
            Phase::Failed
        };
        row.message = Some(message.clone());
        out.changes.attempts.push(row);
        match phase {
            Phase::Pending => {
                let delay_ms = self
                    .state
                    .node(node)
                    .and_then(|n| n.retry_at)
                    .map_or(0, |t| t - now);
                out.notify(RunEvent::StepRetrying {
                    node: node.to_string(),
                    attempt,
                    message,
                    delay_ms,
                });
            }
            Phase::Cancelled => {
                self.finished.insert(node.to_string(), now);
                out.notify(RunEvent::StepCancelled {
                    node: node.to_string(),
                });
            }
            _ => {
                self.finished.insert(node.to_string(), now);
                out.notify(RunEvent::StepFailed {
                    node: node.to_string(),
                    message,
                    log: flight.log,
                });
            }
        }
    }

    /// An attempt that ended without a result of its own: recorded as failed, and the node
    /// starts over as a new attempt without using up a retry.
    fn lost(&mut self, node: &str, attempt: u32, reason: &str, now: Millis, out: &mut Out) {
        if self.flight_mut(node, attempt).is_none() {
            return;
        }
        let Some(flight) = self.take_flight(node, out) else {
            return;
        };
        let mut row = self.attempt_row(node, &flight, Phase::Failed);
        row.finished_at = Some(now);
        row.message = Some(reason.to_string());
        out.changes.attempts.push(row);
        if self.state.cancelled {
            self.state.record_cancelled(node, "run cancelled");
            self.finished.insert(node.to_string(), now);
        } else {
            self.state
                .restart(node, &format!("{reason}; starting a new attempt"));
        }
        out.touched.insert(node.to_string());
        out.notify(RunEvent::AttemptLost {
            node: node.to_string(),
            attempt,
            reason: reason.to_string(),
        });
    }

    /// Nothing can run without its inputs: every node is skipped and the run fails.
    fn staging_failed(&mut self, message: &str, now: Millis, out: &mut Out) {
        if self.state.finished.is_some() {
            return;
        }
        let nodes: Vec<String> = self.state.nodes.keys().cloned().collect();
        for node in nodes {
            self.state
                .record_skipped(&node, "inputs could not be staged");
            self.finished.insert(node.clone(), now);
            out.touched.insert(node);
        }
        self.state.finished = Some(Phase::Failed);
        let event = RunEvent::StagingFailed {
            message: message.to_string(),
        };
        out.changes.phase = Some(RunPhase {
            run_id: self.id.clone(),
            phase: Phase::Failed,
            message: Some(event.message()),
            finished_at: Some(now),
        });
        out.notify(event);
    }
}
