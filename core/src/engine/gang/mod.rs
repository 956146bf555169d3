//! The engine of one gang: the replicas of a TrainingJob (or of a pipeline step with
//! `roles`) started, watched, and restarted together.
//!
//! A [`Gang`] is the engine's record of one gang — its [`GangPlan`], which incarnation runs,
//! what each replica of it did, the restarts and preemptions so far — and, like every engine,
//! it is driven by [`Gang::advance`]: replica starts and ends in, [`GangEffect`]s out. The
//! rules, all here and in no shell:
//!
//! - A gang is all or nothing: a new incarnation starts only when every replica of the
//!   previous one has ended, so no replica ever runs twice at once.
//! - The first replica end that is not a success decides, and the rest of the gang is
//!   stopped; the ends that follow (peers losing their collective, stopped replicas) are
//!   consequences, recorded but never counted.
//! - A preempted replica (evicted, its node drained) restarts the gang without counting
//!   against `maxRestarts`; otherwise the exit code's rule decides (a signal `s` counts as
//!   `128 + s`): `Restart` while restarts remain, `Fail` at once.
//! - Success follows the success policy: the leader (chief, else worker 0) exiting 0, or every
//!   chief and worker exiting 0; the replicas still running (parameter servers, an evaluator)
//!   are then stopped.
//! - Suspending stops the gang without counting anything; resuming starts the next
//!   incarnation, which continues from the newest checkpoint.

mod env;
mod plan;

#[cfg(test)]
mod tests;

pub use env::{Address, RESERVED, contract};
pub use plan::{
    CHECKPOINTED_EXIT, CheckpointEvery, DEFAULT_MAX_RESTARTS, DEFAULT_RULES, ExitRule, GangPlan,
    GangProblem, MAX_REPLICAS, ReplicaId, Role,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::{FailureAction, MAX_LOG_TAIL_CHARS, ReplicaCounts, ReplicaFailure, SuccessPolicy};
use crate::echo::cut;
use crate::launch::LaunchReport;
use crate::records::StepOutputs;

/// The engine's record of one gang. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Gang {
    pub plan: GangPlan,
    /// The gang running now (or last): 0 first, one more at every restart, preemption or resume.
    pub incarnation: u32,
    pub restarts: u32,
    pub preemptions: u32,
    /// What each replica of the current incarnation is doing.
    pub replicas: BTreeMap<ReplicaId, ReplicaState>,
    /// Why the current incarnation is being stopped, once something decided it.
    pub ending: Option<Ending>,
    pub suspended: bool,
    pub last_failure: Option<ReplicaFailure>,
    /// The leader's outputs, once it succeeded.
    pub outputs: Option<StepOutputs>,
    pub outcome: Option<Outcome>,
    /// Every replica end of every incarnation, in the order seen: the per-replica history
    /// the metadata store keeps.
    #[serde(default)]
    pub history: Vec<ReplicaEnded>,
}

/// One replica's end, as the history keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaEnded {
    pub replica: ReplicaId,
    pub incarnation: u32,
    /// The exit code the rules saw (`128 + signal` for a signal).
    pub exit_code: Option<i32>,
    pub preempted: bool,
    /// Whether this end decided what the gang did next (a failure, a preemption).
    pub decisive: bool,
}

/// One replica of the current incarnation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReplicaState {
    /// Asked for; not yet seen running.
    Launching,
    Running,
    Succeeded,
    /// Ended otherwise (exit code, `128 + signal`, or none when it never started).
    Failed(Option<i32>),
}

impl ReplicaState {
    fn active(&self) -> bool {
        matches!(self, ReplicaState::Launching | ReplicaState::Running)
    }
}

/// Why an incarnation is being stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ending {
    Restart,
    Preempted,
    Suspend,
    Succeed,
    Fail(String),
    Cancel(String),
}

/// How a gang ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Succeeded,
    /// Why, in a sentence.
    Failed(String),
    Cancelled(String),
}

/// How one replica ended, as a shell saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaEnd {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Evicted or its node drained (a `DisruptionTarget` pod condition), not a failure of
    /// the program.
    pub preempted: bool,
    /// Why it ended, when the shell knows more than the code (`could not start: ...`).
    pub message: Option<String>,
    pub log_tail: Option<String>,
    /// The outputs the launcher stored; only the leader's are kept.
    pub outputs: Option<StepOutputs>,
}

impl ReplicaEnd {
    /// The exit code the rules see: the code, or `128 + signal`.
    pub fn code(&self) -> Option<i32> {
        self.exit_code.or(self.signal.map(|s| 128 + s))
    }

    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && !self.preempted
    }
}

/// What a shell observed of a gang.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GangObservation {
    Started {
        replica: ReplicaId,
        incarnation: u32,
    },
    Ended {
        replica: ReplicaId,
        incarnation: u32,
        end: ReplicaEnd,
    },
    Suspend,
    Resume,
    /// Stop everything and end (the run was cancelled, the deadline passed).
    Cancel(String),
}

/// What a shell carries out for a gang, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GangEffect {
    /// Start these replicas of `incarnation`, each with its env contract.
    Launch {
        incarnation: u32,
        replicas: Vec<ReplicaId>,
    },
    /// Stop every replica of `incarnation` still running (SIGTERM, then SIGKILL).
    Stop {
        incarnation: u32,
        reason: String,
    },
    Notify(GangEvent),
    /// The gang is over; its leader's outputs are in [`Gang::outputs`] when it succeeded.
    Finished(Outcome),
}

/// What happened, for progress lines, Kubernetes events and the job's conditions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GangEvent {
    Launched {
        incarnation: u32,
        replicas: u32,
    },
    ReplicaEnded {
        replica: ReplicaId,
        incarnation: u32,
        exit_code: Option<i32>,
        /// Whether this end decided what the gang does next.
        decisive: bool,
    },
    Restarting {
        incarnation: u32,
        reason: String,
    },
    Preempted {
        replica: ReplicaId,
        incarnation: u32,
    },
    Suspended,
    Resumed,
    Succeeded,
    Failed(String),
}

/// The key of a gang attempt's record among its run's documents: `NODE/ATTEMPT`.
pub fn record_key(node: &str, attempt: u32) -> String {
    format!("{node}/{attempt}")
}

/// The node and attempt of a record key, when it is one.
pub fn parse_record_key(key: &str) -> Option<(&str, u32)> {
    let (node, attempt) = key.rsplit_once('/')?;
    Some((node, attempt.parse().ok()?))
}

impl Gang {
    /// The attempt's report once the gang ended with `outcome`: the leader's outputs on
    /// success, the deciding failure's exit code otherwise.
    pub fn report(&self, outcome: Outcome, duration_ms: u64) -> LaunchReport {
        let (succeeded, exit_code, outputs, error) = match outcome {
            Outcome::Succeeded => (
                true,
                Some(0),
                self.outputs.clone().unwrap_or_default(),
                None,
            ),
            Outcome::Failed(why) | Outcome::Cancelled(why) => (
                false,
                self.last_failure.as_ref().and_then(|f| f.exit_code),
                StepOutputs::default(),
                Some(why),
            ),
        };
        LaunchReport {
            succeeded,
            exit_code,
            signal: None,
            outputs,
            error,
            duration_ms,
        }
    }

    /// A gang of `plan`; the first [`Gang::advance`] launches it unless `suspended`.
    pub fn new(plan: GangPlan, suspended: bool) -> Gang {
        Gang {
            plan,
            incarnation: 0,
            restarts: 0,
            preemptions: 0,
            replicas: BTreeMap::new(),
            ending: None,
            suspended,
            last_failure: None,
            outputs: None,
            outcome: None,
            history: Vec::new(),
        }
    }

    /// `Pending`, `Running`, `Restarting`, `Suspended`, `Succeeded` or `Failed` (a cancelled
    /// gang is `Failed`).
    pub fn phase(&self) -> &'static str {
        match (&self.outcome, &self.ending) {
            (Some(Outcome::Succeeded), _) => "Succeeded",
            (Some(_), _) => "Failed",
            (None, Some(Ending::Restart | Ending::Preempted)) => "Restarting",
            (None, _) if self.suspended => "Suspended",
            (None, _) if self.replicas.values().any(|s| *s == ReplicaState::Running) => "Running",
            (None, _) => "Pending",
        }
    }

    /// Applies what was observed and returns what to carry out.
    pub fn advance(&mut self, observed: Vec<GangObservation>) -> Vec<GangEffect> {
        let mut out = Vec::new();
        if self.outcome.is_some() {
            return out;
        }
        for o in observed {
            self.observe(o, &mut out);
        }
        self.settle(&mut out);
        out
    }

    fn observe(&mut self, observation: GangObservation, out: &mut Vec<GangEffect>) {
        match observation {
            GangObservation::Started {
                replica,
                incarnation,
            } => {
                if incarnation == self.incarnation
                    && let Some(state @ ReplicaState::Launching) = self.replicas.get_mut(&replica)
                {
                    *state = ReplicaState::Running;
                }
            }
            GangObservation::Ended {
                replica,
                incarnation,
                end,
            } => self.ended(replica, incarnation, end, out),
            GangObservation::Suspend => {
                if !self.suspended {
                    self.suspended = true;
                    if self.any_active() {
                        self.end_with(Ending::Suspend, "suspended", out);
                    }
                }
            }
            GangObservation::Resume => {
                if self.suspended {
                    self.suspended = false;
                    out.push(GangEffect::Notify(GangEvent::Resumed));
                }
            }
            GangObservation::Cancel(why) => {
                if !matches!(self.ending, Some(Ending::Cancel(_))) {
                    let stop_reason = why.clone();
                    self.end_with(Ending::Cancel(why), &stop_reason, out);
                }
            }
        }
    }

    fn ended(
        &mut self,
        replica: ReplicaId,
        incarnation: u32,
        end: ReplicaEnd,
        out: &mut Vec<GangEffect>,
    ) {
        if incarnation != self.incarnation {
            return;
        }
        let Some(state) = self.replicas.get_mut(&replica) else {
            return;
        };
        if !state.active() {
            return;
        }
        *state = if end.succeeded() {
            ReplicaState::Succeeded
        } else {
            ReplicaState::Failed(end.code())
        };
        let decisive = self.ending.is_none();
        self.history.push(ReplicaEnded {
            replica,
            incarnation,
            exit_code: end.code(),
            preempted: end.preempted,
            decisive: decisive && !end.succeeded(),
        });
        out.push(GangEffect::Notify(GangEvent::ReplicaEnded {
            replica,
            incarnation,
            exit_code: end.code(),
            decisive: decisive && !end.succeeded(),
        }));
        if !decisive {
            return;
        }
        if end.succeeded() {
            if replica == self.plan.leader() {
                self.outputs = end.outputs.clone();
            }
            if self.success_reached() {
                self.end_with(Ending::Succeed, "the job succeeded", out);
            }
            return;
        }
        let failure = |reason: &str| ReplicaFailure {
            role: replica.role.as_str().to_string(),
            index: replica.index,
            incarnation,
            exit_code: end.code(),
            reason: reason.to_string(),
            message: end.message.as_deref().map(|m| cut(m).into_owned()),
            log_tail: end.log_tail.as_deref().map(tail),
        };
        if end.preempted {
            self.last_failure = Some(failure("Preempted"));
            out.push(GangEffect::Notify(GangEvent::Preempted {
                replica,
                incarnation,
            }));
            self.end_with(Ending::Preempted, &format!("{replica} was preempted"), out);
            return;
        }
        let Some(code) = end.code() else {
            let why = end
                .message
                .clone()
                .unwrap_or_else(|| "ended without an exit code".into());
            self.last_failure = Some(failure("LaunchFailed"));
            self.end_with(Ending::Fail(format!("{replica}: {why}")), &why, out);
            return;
        };
        let reason = if end.exit_code.is_none() {
            "Killed"
        } else {
            "Error"
        };
        self.last_failure = Some(failure(reason));
        let how = match (end.exit_code, end.signal) {
            (None, Some(s)) => format!("{replica} was killed by signal {s} (code {code})"),
            _ => format!("{replica} exited with code {code}"),
        };
        match self.plan.action(code) {
            FailureAction::Fail => {
                self.end_with(
                    Ending::Fail(format!("{how}, which the failure policy says is permanent")),
                    &how,
                    out,
                );
            }
            FailureAction::Restart if self.restarts < self.plan.max_restarts => {
                self.end_with(Ending::Restart, &how, out);
            }
            FailureAction::Restart => {
                let max = self.plan.max_restarts;
                self.end_with(
                    Ending::Fail(format!("{how}, after {max} restarts (maxRestarts {max})")),
                    &how,
                    out,
                );
            }
        }
    }

    /// Whether the success policy is met by the current incarnation.
    fn success_reached(&self) -> bool {
        let succeeded = |r: &ReplicaId| self.replicas.get(r) == Some(&ReplicaState::Succeeded);
        match self.plan.success_policy {
            SuccessPolicy::ChiefOrWorker0 => succeeded(&self.plan.leader()),
            SuccessPolicy::AllWorkers => self
                .plan
                .replicas()
                .filter(|r| r.role.trains())
                .all(|r| succeeded(&r)),
        }
    }

    fn any_active(&self) -> bool {
        self.replicas.values().any(ReplicaState::active)
    }

    /// Decides how the current incarnation ends and stops what still runs of it.
    fn end_with(&mut self, ending: Ending, reason: &str, out: &mut Vec<GangEffect>) {
        let first = self.ending.is_none();
        // A cancel overrides what was decided before; nothing else does.
        if first || matches!(ending, Ending::Cancel(_)) {
            self.ending = Some(ending);
        }
        if self.any_active() {
            out.push(GangEffect::Stop {
                incarnation: self.incarnation,
                reason: reason.to_string(),
            });
        }
    }

    /// Once nothing of the current incarnation runs: acts on how it ended, or starts the
    /// first one.
    fn settle(&mut self, out: &mut Vec<GangEffect>) {
        if self.any_active() {
            return;
        }
        match self.ending.take() {
            None if self.suspended => {}
            // The first incarnation, or the next one after a suspension.
            None if self.replicas.is_empty() => self.launch(out),
            None => self.next_incarnation(out),
            Some(Ending::Restart) => {
                self.restarts += 1;
                out.push(GangEffect::Notify(GangEvent::Restarting {
                    incarnation: self.incarnation + 1,
                    reason: self.restart_reason(),
                }));
                self.next_incarnation(out);
            }
            Some(Ending::Preempted) => {
                self.preemptions += 1;
                out.push(GangEffect::Notify(GangEvent::Restarting {
                    incarnation: self.incarnation + 1,
                    reason: "preempted".into(),
                }));
                self.next_incarnation(out);
            }
            Some(Ending::Suspend) if self.suspended => {
                out.push(GangEffect::Notify(GangEvent::Suspended))
            }
            // Resumed before the suspended gang had stopped.
            Some(Ending::Suspend) => self.next_incarnation(out),
            Some(Ending::Succeed) => {
                out.push(GangEffect::Notify(GangEvent::Succeeded));
                self.finish(Outcome::Succeeded, out);
            }
            Some(Ending::Fail(why)) => {
                out.push(GangEffect::Notify(GangEvent::Failed(why.clone())));
                self.finish(Outcome::Failed(why), out);
            }
            Some(Ending::Cancel(why)) => self.finish(Outcome::Cancelled(why), out),
        }
    }

    fn restart_reason(&self) -> String {
        match &self.last_failure {
            Some(f) if f.incarnation == self.incarnation => match f.exit_code {
                Some(code) => format!("{}-{} ended with code {code}", f.role, f.index),
                None => format!("{}-{} ended", f.role, f.index),
            },
            _ => "restarted".into(),
        }
    }

    fn next_incarnation(&mut self, out: &mut Vec<GangEffect>) {
        self.incarnation += 1;
        if self.suspended {
            self.replicas.clear();
            return;
        }
        self.launch(out);
    }

    fn launch(&mut self, out: &mut Vec<GangEffect>) {
        self.replicas = self
            .plan
            .replicas()
            .map(|r| (r, ReplicaState::Launching))
            .collect();
        out.push(GangEffect::Notify(GangEvent::Launched {
            incarnation: self.incarnation,
            replicas: self.plan.total(),
        }));
        out.push(GangEffect::Launch {
            incarnation: self.incarnation,
            replicas: self.replicas.keys().copied().collect(),
        });
    }

    fn finish(&mut self, outcome: Outcome, out: &mut Vec<GangEffect>) {
        self.outcome = Some(outcome.clone());
        out.push(GangEffect::Finished(outcome));
    }

    /// Per role: the current incarnation's active, succeeded and failed replicas.
    pub fn counts(&self) -> BTreeMap<String, ReplicaCounts> {
        let mut counts: BTreeMap<String, ReplicaCounts> = BTreeMap::new();
        for (r, s) in &self.replicas {
            let c = counts.entry(r.role.as_str().to_string()).or_default();
            match s {
                ReplicaState::Launching | ReplicaState::Running => c.active += 1,
                ReplicaState::Succeeded => c.succeeded += 1,
                ReplicaState::Failed(_) => c.failed += 1,
            }
        }
        counts
    }

    /// Running replicas over all replicas: `2/3`.
    pub fn ready(&self) -> String {
        let running = self
            .replicas
            .values()
            .filter(|s| **s == ReplicaState::Running)
            .count();
        format!("{running}/{}", self.plan.total())
    }
}

/// The end of a log, at most [`MAX_LOG_TAIL_CHARS`] characters, cut at a line start.
fn tail(log: &str) -> String {
    let chars = log.chars().count();
    if chars <= MAX_LOG_TAIL_CHARS {
        return log.to_string();
    }
    let start: String = log.chars().skip(chars - MAX_LOG_TAIL_CHARS).collect();
    match start.split_once('\n') {
        Some((_, rest)) if !rest.is_empty() => rest.to_string(),
        _ => start,
    }
}
