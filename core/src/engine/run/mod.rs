//! The engine of one pipeline run: everything both shells decide about a run, in one place.
//!
//! A [`Run`] is the engine's whole record of a run — its plan, the state of every node, the
//! attempts in flight and when each node started and finished — and it is serializable: the
//! operator keeps it as the run's document, the local runtime in memory. A shell drives it
//! with [`Run::advance`]: it hands over what it observed since the last call (an attempt
//! launched or ended, a cache lookup's answer, a deleted pod, staged inputs, a cancel) and the
//! time, and gets back the [`Effect`]s to carry out in order: rows to write in one
//! transaction, events to show, cache lookups, attempts to launch or stop, claims to renew or
//! release, and when to wake up. Inside, [`decide`](super::decide) is applied until only
//! starts and waits remain; every state transition — a retry, a permanent failure, a
//! restart after a lost attempt, a cache hit (which is not an attempt), a fan-out's
//! bookkeeping, a failed staging — happens here, never in a shell.
//!
//! The shells differ only in how they carry effects out: processes and SQLite locally, pods
//! and PostgreSQL in a cluster.

mod effect;
mod event;
mod observe;
mod rows;
mod settle;

#[cfg(test)]
mod tests;

pub use effect::{
    CLAIM_POLL_MS, CLAIM_RENEW_MS, CLAIM_TTL_MS, CacheCheck, Claim, Effect, Observation,
};
pub use event::RunEvent;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Invocation, RunPlan, RunState};
use crate::records::{AttemptRecord, Millis, Phase, RunChanges, RunPhase, RunRecord, StepRecord};

/// The engine's record of one pipeline run. See the module docs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// The run's id in the metadata store.
    pub id: String,
    pub plan: RunPlan,
    pub state: RunState,
    pub created_at: Millis,
    /// Every `path:` input is in the artifact store.
    pub staged: bool,
    /// The most attempts in flight at once.
    pub parallelism: usize,
    /// Attempts in flight, by node.
    pub in_flight: BTreeMap<String, InFlight>,
    /// When each node first started, and when it finished.
    pub started: BTreeMap<String, Millis>,
    pub finished: BTreeMap<String, Millis>,
    /// Each started node's cache key and the components it was computed from.
    pub keys: BTreeMap<String, (String, serde_json::Value)>,
    /// When the claims of the attempts in flight were last renewed.
    #[serde(default)]
    pub claims_renewed_at: Option<Millis>,
}

/// One attempt in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub attempt: u32,
    pub stage: Stage,
    pub started_at: Millis,
    /// The hex cache key.
    pub key: String,
    /// A success may be written to the cache.
    pub cache_writable: bool,
    /// This attempt holds the key's claim.
    pub claimed: bool,
    /// Where the attempt's log is, once it runs.
    pub log: Option<String>,
}

/// Where an attempt in flight is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Waiting for the cache's answer.
    CheckingCache(Box<Invocation>),
    /// To be launched (a pod to create, a process to start).
    Launching(Box<Invocation>),
    Running,
}

/// The rows and effects one call produces, gathered as observations and decisions apply.
#[derive(Debug, Default)]
struct Out {
    changes: RunChanges,
    /// Nodes whose step row changed; their rows are built once, from the final state.
    touched: BTreeSet<String>,
    events: Vec<RunEvent>,
    effects: Vec<Effect>,
    wake: Option<Millis>,
}

impl Out {
    fn wake_at(&mut self, at: Millis) {
        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    fn notify(&mut self, event: RunEvent) {
        self.events.push(event);
    }
}

/// How an engine of any resource is driven: observations in, effects out. Every resource's
/// engine (pipeline runs here; training jobs, studies and endpoints as they come) has this
/// shape, so a shell is a loop that observes, advances and carries effects out.
pub trait Engine {
    type Observation;
    type Effect;
    /// Applies what was observed, decides, and returns what to carry out, in order.
    fn advance(&mut self, observed: Vec<Self::Observation>, now: Millis) -> Vec<Self::Effect>;
}

impl Engine for Run {
    type Observation = Observation;
    type Effect = Effect;

    fn advance(&mut self, observed: Vec<Observation>, now: Millis) -> Vec<Effect> {
        Run::advance(self, observed, now)
    }
}

impl Run {
    /// A new run of `plan`: recorded, announced, nothing started yet (the first
    /// [`Run::advance`] starts what can start).
    pub fn start(
        id: &str,
        plan: RunPlan,
        now: Millis,
        parallelism: usize,
    ) -> Result<(Run, Vec<Effect>), serde_json::Error> {
        let event = RunEvent::RunStarted {
            run_id: id.to_string(),
            pipeline: plan.pipeline.clone(),
        };
        Run::created(id, plan, None, now, parallelism, event)
    }

    /// A run that was refused before anything ran: recorded as failed with `message`.
    pub fn rejected(
        id: &str,
        plan: RunPlan,
        message: &str,
        now: Millis,
    ) -> Result<(Run, Vec<Effect>), serde_json::Error> {
        let event = RunEvent::RunInvalid {
            message: message.to_string(),
        };
        Run::created(id, plan, Some(message), now, 1, event)
    }

    /// A run recorded now: running, or failed with `failure` before anything ran.
    fn created(
        id: &str,
        plan: RunPlan,
        failure: Option<&str>,
        now: Millis,
        parallelism: usize,
        event: RunEvent,
    ) -> Result<(Run, Vec<Effect>), serde_json::Error> {
        let phase = if failure.is_some() {
            Phase::Failed
        } else {
            Phase::Running
        };
        let record = RunRecord {
            id: id.to_string(),
            pipeline: plan.pipeline.clone(),
            phase,
            params: serde_json::to_value(&plan.params)?,
            spec: serde_json::to_value(&plan)?,
            created_at: now,
            finished_at: failure.map(|_| now),
            message: failure.map(str::to_string),
        };
        let mut state = RunState::new(&plan);
        if failure.is_some() {
            state.finished = Some(Phase::Failed);
        }
        let run = Run::with_state(id, plan, state, now, parallelism);
        let changes = RunChanges {
            created: Some(record),
            ..RunChanges::default()
        };
        let effects = vec![Effect::Write(Box::new(changes)), Effect::Notify(event)];
        Ok((run, effects))
    }

    /// A failed or cancelled run continued from its recorded steps: nodes that succeeded keep
    /// their outputs, everything else runs again.
    pub fn resume(
        id: &str,
        plan: RunPlan,
        steps: &[StepRecord],
        now: Millis,
        parallelism: usize,
    ) -> (Run, Vec<Effect>) {
        let state = RunState::resume_from_records(&plan, steps);
        let mut run = Run::with_state(id, plan, state, now, parallelism);
        for s in steps {
            if let Some(n) = run.state.node(&s.name)
                && n.phase == Phase::Succeeded
            {
                if let Some(at) = s.started_at {
                    run.started.insert(s.name.clone(), at);
                }
                if let Some(at) = s.finished_at {
                    run.finished.insert(s.name.clone(), at);
                }
                if let (Some(k), Some(c)) = (&s.cache_key, &s.cache_components) {
                    run.keys.insert(s.name.clone(), (k.clone(), c.clone()));
                }
            }
        }
        let changes = RunChanges {
            phase: Some(RunPhase {
                run_id: id.to_string(),
                phase: Phase::Running,
                message: None,
                finished_at: None,
            }),
            ..RunChanges::default()
        };
        let effects = vec![
            Effect::Write(Box::new(changes)),
            Effect::Notify(RunEvent::RunStarted {
                run_id: id.to_string(),
                pipeline: run.plan.pipeline.clone(),
            }),
        ];
        (run, effects)
    }

    fn with_state(
        id: &str,
        plan: RunPlan,
        state: RunState,
        now: Millis,
        parallelism: usize,
    ) -> Run {
        let staged = plan.unstaged_inputs().is_empty();
        Run {
            id: id.to_string(),
            plan,
            state,
            created_at: now,
            staged,
            parallelism: parallelism.max(1),
            in_flight: BTreeMap::new(),
            started: BTreeMap::new(),
            finished: BTreeMap::new(),
            keys: BTreeMap::new(),
            claims_renewed_at: None,
        }
    }

    /// Whether the run has ended.
    pub fn finished(&self) -> Option<Phase> {
        self.state.finished
    }

    /// Applies `observed` at `now`, decides, and returns the effects to carry out, in order:
    /// the rows to write first, then events, then lookups, launches, stops and claims, and
    /// last the time to wake up at.
    pub fn advance(&mut self, observed: Vec<Observation>, now: Millis) -> Vec<Effect> {
        let mut out = Out::default();
        for observation in observed {
            self.observe(observation, now, &mut out);
        }
        if self.staged && self.state.finished.is_none() {
            self.settle(now, &mut out);
        }
        self.renew_claims(now, &mut out);
        self.finish(out, now)
    }

    /// The effects that carry on after a shell restarted with this record: attempts that were
    /// to be looked up or launched are asked for again (launching is idempotent: a pod is
    /// found again by name).
    pub fn pending_effects(&self) -> Vec<Effect> {
        self.in_flight
            .iter()
            .filter_map(|(node, f)| match &f.stage {
                Stage::CheckingCache(inv) => Some(Effect::CheckCache {
                    invocation: inv.clone(),
                    claim: f.cache_writable.then(|| self.claim(node, &f.key)),
                }),
                Stage::Launching(inv) => Some(Effect::Launch(inv.clone())),
                Stage::Running => None,
            })
            .collect()
    }

    fn claim(&self, node: &str, key: &str) -> Claim {
        Claim {
            key: key.to_string(),
            owner: format!("{}/{node}", self.id),
        }
    }

    /// Claims held by attempts in flight are renewed every [`CLAIM_RENEW_MS`].
    fn renew_claims(&mut self, now: Millis, out: &mut Out) {
        let held: Vec<Claim> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.claimed)
            .map(|(node, f)| self.claim(node, &f.key))
            .collect();
        if held.is_empty() {
            self.claims_renewed_at = None;
            return;
        }
        let last = *self.claims_renewed_at.get_or_insert(now);
        if now - last >= CLAIM_RENEW_MS {
            out.effects.push(Effect::RenewClaims(held));
            self.claims_renewed_at = Some(now);
        }
        out.wake_at(self.claims_renewed_at.unwrap_or(now) + CLAIM_RENEW_MS);
    }

    /// Turns what was gathered into the ordered effects.
    fn finish(&self, mut out: Out, now: Millis) -> Vec<Effect> {
        let touched = std::mem::take(&mut out.touched);
        out.changes
            .steps
            .extend(touched.iter().map(|node| self.step_row(node, now)));
        let mut effects = Vec::new();
        if !out.changes.is_empty() {
            effects.push(Effect::Write(Box::new(out.changes)));
        }
        effects.extend(out.events.into_iter().map(Effect::Notify));
        effects.extend(out.effects);
        if let Some(at) = out.wake {
            effects.push(Effect::WakeAt(at));
        }
        effects
    }

    /// The attempt row of an attempt in flight, as it stands.
    fn attempt_row(&self, node: &str, flight: &InFlight, phase: Phase) -> AttemptRecord {
        AttemptRecord {
            run_id: self.id.clone(),
            step: node.to_string(),
            attempt: flight.attempt,
            phase,
            exit_code: None,
            started_at: flight.started_at,
            finished_at: None,
            log_ref: flight.log.clone(),
            message: None,
        }
    }
}
