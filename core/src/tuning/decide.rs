//! `decide`: from the study and its ledger to what the shell does next.
//!
//! One pass, every rule in one place, in this order:
//!
//! 1. the study is over when more trials failed than `maxFailedTrials` allows or a trial
//!    reached the objective's target: every active trial is stopped;
//! 2. median stopping stops running trials that are clearly worse;
//! 3. free slots (`parallelTrials` minus active trials) go first to promotions
//!    (ASHA, Hyperband), then to new trials while fewer than `maxTrials` have started;
//! 4. the study is over when nothing is active and nothing can start or be promoted.
//!
//! The result depends only on its inputs: a shell that crashed before carrying out a
//! decision gets the same decision again, and one that carried it out (and recorded it with
//! [`TrialLedger::apply`]) gets the next one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::TuningError;
use super::fidelity::{self, asha, hyperband};
use super::ledger::{Trial, TrialLedger, TrialState};
use super::name::trial_name;
use super::sampler::{self, grid_has};
use super::spec::StudySpec;
use super::stopping::median_stops;
use super::study::{Algorithm, Study};
use super::value::ParamValue;
use super::warm_start::check_warm_start;
use crate::records::{Millis, Phase};

/// What the shell does next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Decisions {
    /// New trials to create, by index.
    pub start: Vec<TrialStart>,
    /// Active trials to stop.
    pub stop: Vec<TrialStop>,
    /// Trials to resume from their checkpoint with a larger budget.
    pub promote: Vec<Promotion>,
    /// Set when the study is over.
    pub end: Option<StudyEnd>,
}

impl Decisions {
    /// Nothing to do (the study waits for its trials).
    pub fn is_empty(&self) -> bool {
        self.start.is_empty()
            && self.stop.is_empty()
            && self.promote.is_empty()
            && self.end.is_none()
    }
}

/// A trial to create.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialStart {
    /// Its index (the ledger's length when it is recorded).
    pub index: u32,
    /// Its name.
    pub name: String,
    /// The values it receives.
    pub params: BTreeMap<String, ParamValue>,
    /// Multi-fidelity: the budget of the resource it runs to, also passed to it as the
    /// resource's parameter.
    pub budget: Option<u64>,
    /// Hyperband: its bracket.
    pub bracket: Option<u32>,
}

/// An active trial to stop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialStop {
    /// Its index.
    pub index: u32,
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: StopReason,
}

/// Why a trial is stopped.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StopReason {
    /// Its best value by `step` is worse than the completed trials' median there.
    #[serde(rename_all = "camelCase")]
    Median {
        /// The step it reached.
        step: u64,
        /// Its best objective by then.
        best: f64,
        /// The completed trials' median by then.
        median: f64,
    },
    /// The study ended (target reached, too many failures).
    StudyEnded,
}

/// A trial to resume from its checkpoint with a larger budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// Its index.
    pub index: u32,
    /// Its name (unchanged).
    pub name: String,
    /// The budget it completed.
    pub from_budget: u64,
    /// The budget it now runs to.
    pub budget: u64,
}

/// Why and how a study ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StudyEnd {
    /// Why.
    pub reason: EndReason,
    /// The best succeeded trial, if any.
    pub best: Option<u32>,
}

impl StudyEnd {
    /// The phase of the study it ended: failed when the engine says so or when no trial
    /// succeeded (the study has no result), succeeded otherwise.
    pub fn phase(&self) -> Phase {
        if self.reason.is_failure() || self.best.is_none() {
            Phase::Failed
        } else {
            Phase::Succeeded
        }
    }

    /// What the shells say of it: why, and the best trial with its objective `metric`.
    pub fn message(&self, ledger: &TrialLedger, metric: &str) -> String {
        let best = self.best.and_then(|i| ledger.trials.get(i as usize));
        match best {
            Some(b) => format!(
                "{}; best trial {} with {metric} = {}",
                self.reason.describe(),
                b.name,
                b.objective.unwrap_or(f64::NAN)
            ),
            None => format!("{}; no trial succeeded", self.reason.describe()),
        }
    }
}

/// Why a study ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// Every one of `maxTrials` trials is done.
    MaxTrials,
    /// A grid study ran every combination.
    SpaceExhausted,
    /// A trial reached the objective's target.
    TargetReached,
    /// More trials failed than `maxFailedTrials` allows: the study failed.
    TooManyFailures,
    /// The budget's deadline passed (the shell's clock says so: see [`Study::end_now`]).
    Deadline,
}

impl EndReason {
    /// Whether the study failed.
    pub fn is_failure(self) -> bool {
        self == EndReason::TooManyFailures
    }

    /// A condition's reason: `TargetReached`.
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::MaxTrials => "MaxTrials",
            EndReason::SpaceExhausted => "SpaceExhausted",
            EndReason::TargetReached => "TargetReached",
            EndReason::TooManyFailures => "TooManyFailures",
            EndReason::Deadline => "Deadline",
        }
    }

    /// What it means, for a message.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::MaxTrials => "every trial of maxTrials ran",
            EndReason::SpaceExhausted => "every combination of the grid ran",
            EndReason::TargetReached => "a trial reached the objective's target",
            EndReason::TooManyFailures => "more trials failed than maxFailedTrials allows",
            EndReason::Deadline => "the budget's deadline passed",
        }
    }
}

/// Validates `spec` and decides; see [`Study::decide`].
pub fn decide(spec: &StudySpec, ledger: &TrialLedger) -> Result<Decisions, TuningError> {
    Study::new(spec)?.decide(ledger)
}

impl Study {
    /// What the shell does next, given everything observed so far.
    pub fn decide(&self, ledger: &TrialLedger) -> Result<Decisions, TuningError> {
        ledger.check()?;
        for w in &ledger.warm_start {
            check_warm_start(self, w)?;
        }
        let mut d = Decisions::default();
        let best = ledger.best(self.goal).map(|t| t.index);
        if let Some(reason) = self.early_end(ledger) {
            return Ok(self.end_now(ledger, reason));
        }
        if let Some(rule) = self.median_stopping {
            d.stop = median_stops(rule, self.goal, ledger);
        }
        // What follows sees the stops as done: a stopped trial frees its slot and is the
        // same observation now as after the shell recorded it.
        let stopped;
        let ledger = if d.stop.is_empty() {
            ledger
        } else {
            let mut view = ledger.clone();
            view.apply(&Decisions {
                stop: d.stop.clone(),
                ..Decisions::default()
            })?;
            stopped = view;
            &stopped
        };
        let active = ledger.trials.iter().filter(|t| t.state.is_active()).count();
        let mut free = (self.parallel_trials as usize).saturating_sub(active);
        let started = ledger.trials.len() as u32;
        let full = started >= self.max_trials;
        d.promote = match &self.algorithm {
            Algorithm::Asha(f) => asha::promotions(f, self.goal, ledger, free),
            Algorithm::Hyperband(f) => hyperband::promotions(f, self.goal, ledger, full, free),
            _ => Vec::new(),
        };
        free -= d.promote.len();
        let mut exhausted = false;
        if free > 0 && !full {
            for index in started..self.max_trials.min(started.saturating_add(free as u32)) {
                // Waiting for an active trial: never the end.
                let Some(seen) = self.learns_from(ledger, index) else {
                    break;
                };
                let observations = sampler::observations(self, &ledger.trials[..seen], ledger);
                let Some(point) = sampler::suggest(self, &observations, index) else {
                    exhausted = true;
                    break;
                };
                d.start.push(self.trial_start(index, &point));
            }
        }
        if d.start.is_empty() && d.promote.is_empty() && active == 0 {
            exhausted |=
                self.algorithm == Algorithm::Grid && !grid_has(&self.space, started.into());
            let reason = if exhausted && !full {
                EndReason::SpaceExhausted
            } else {
                EndReason::MaxTrials
            };
            d.end = Some(StudyEnd { reason, best });
        }
        Ok(d)
    }

    /// [`Study::decide`] under the budget's deadline (`deadline`, from
    /// `TuningStudySpec::deadline_after`): once `now` is past it, a study that does not end
    /// anyway ends with [`EndReason::Deadline`]. The shell reads the clock; this decides.
    pub fn decide_at(
        &self,
        ledger: &TrialLedger,
        deadline: Option<Millis>,
        now: Millis,
    ) -> Result<Decisions, TuningError> {
        let decisions = self.decide(ledger)?;
        Ok(match deadline {
            Some(at) if decisions.end.is_none() && now >= at => {
                self.end_now(ledger, EndReason::Deadline)
            }
            _ => decisions,
        })
    }

    /// Ends the study now, for a reason only the shell knows (its deadline): every active
    /// trial stops, and the best succeeded trial is the study's.
    pub fn end_now(&self, ledger: &TrialLedger, reason: EndReason) -> Decisions {
        Decisions {
            stop: ledger
                .trials
                .iter()
                .filter(|t| t.state.is_active())
                .map(|t| TrialStop {
                    index: t.index,
                    name: t.name.clone(),
                    reason: StopReason::StudyEnded,
                })
                .collect(),
            end: Some(StudyEnd {
                reason,
                best: ledger.best(self.goal).map(|t| t.index),
            }),
            ..Decisions::default()
        }
    }

    /// The values trial `trial` receives: its parameters and, for multi-fidelity algorithms,
    /// the resource (e.g. `epochs`) set to its current budget. The resource is not part of
    /// the trial's name: a promotion changes it and the trial stays the same.
    pub fn trial_values(&self, trial: &Trial) -> BTreeMap<String, ParamValue> {
        let mut values = trial.params.clone();
        if let (Some(b), Algorithm::Asha(f) | Algorithm::Hyperband(f)) =
            (trial.budget, &self.algorithm)
        {
            values.insert(
                f.resource.clone(),
                ParamValue::Int(i64::try_from(b).unwrap_or(i64::MAX)),
            );
        }
        values
    }

    /// How many of the first trials trial `index` learns from, or `None` while one of them
    /// is still active. A model-based sampler (TPE, GP) suggests trial `i` from trials
    /// `0..=i-parallelTrials` exactly, waiting for the last of them if needed: which trials
    /// had finished when a slot came free depends on timing, and what a trial learns from
    /// must not, so that a study gives the same trials whether or not its shell restarted,
    /// locally as in a cluster. The other algorithms draw points that depend on no result.
    fn learns_from(&self, ledger: &TrialLedger, index: u32) -> Option<usize> {
        if !matches!(self.algorithm, Algorithm::Tpe(_) | Algorithm::Gp(_)) {
            return Some(0);
        }
        let seen = (index as usize + 1).saturating_sub(self.parallel_trials as usize);
        let seen = seen.min(ledger.trials.len());
        ledger.trials[..seen]
            .iter()
            .all(|t| t.state.is_finished())
            .then_some(seen)
    }

    /// Too many failures or the target reached.
    fn early_end(&self, ledger: &TrialLedger) -> Option<EndReason> {
        let failed = ledger
            .trials
            .iter()
            .filter(|t| t.state == TrialState::Failed)
            .count();
        if self
            .max_failed_trials
            .is_some_and(|max| failed > max as usize)
        {
            return Some(EndReason::TooManyFailures);
        }
        let target = self.target?;
        let goal = self.goal;
        let reached = ledger.trials.iter().any(|t| {
            t.state == TrialState::Succeeded
                && t.objective
                    .is_some_and(|o| goal.loss(o) <= goal.loss(target))
        });
        reached.then_some(EndReason::TargetReached)
    }

    fn trial_start(&self, index: u32, point: &[Option<f64>]) -> TrialStart {
        let params = self.space.decode(point);
        let (budget, bracket) = match &self.algorithm {
            Algorithm::Asha(f) => (Some(fidelity::first_budget(f, false, index).0), None),
            Algorithm::Hyperband(f) => {
                let (b, bracket) = fidelity::first_budget(f, true, index);
                (Some(b), bracket)
            }
            _ => (None, None),
        };
        let name = trial_name(index, &params);
        TrialStart {
            index,
            name,
            params,
            budget,
            bracket,
        }
    }
}
