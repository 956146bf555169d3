//! The trial ledger: everything observed of a study's trials, the engine's only state.
//!
//! The shell keeps the ledger in the metadata store and changes it only through the methods
//! here: [`TrialLedger::apply`] records what [`decide`](super::decide) said (starts, stops,
//! promotions), and the `record_*` methods record what the trials reported. Trials are
//! indexed `0..n` in the order they were started.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::decide::Decisions;
use super::error::TuningError;
use super::spec::{Goal, ParameterSpec};
use super::value::ParamValue;

/// Where a trial is in its life.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrialState {
    /// Decided, its child not yet running.
    Pending,
    /// Running (or resumed from its checkpoint after a promotion).
    Running,
    /// Reported its objective (for multi-fidelity algorithms: for its current budget).
    Succeeded,
    /// Failed; it counts toward `maxFailedTrials`.
    Failed,
    /// Stopped early by the engine (median stopping, or the study ended).
    Stopped,
}

impl TrialState {
    /// Its name as the status and the store write it (`Running`).
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Pending => "Pending",
            TrialState::Running => "Running",
            TrialState::Succeeded => "Succeeded",
            TrialState::Failed => "Failed",
            TrialState::Stopped => "Stopped",
        }
    }

    /// Finished: it holds no slot and will not change unless promoted.
    pub fn is_finished(self) -> bool {
        !self.is_active()
    }

    /// Pending or running: it holds one of the `parallelTrials` slots.
    pub fn is_active(self) -> bool {
        matches!(self, TrialState::Pending | TrialState::Running)
    }
}

/// The objective metric at one step (an epoch, an evaluation round).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// The step.
    pub step: u64,
    /// The objective metric's value there.
    pub value: f64,
}

/// A multi-fidelity trial's objective at the end of one budget.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RungResult {
    /// The budget (e.g. epochs) it ran to.
    pub budget: u64,
    /// Its objective there.
    pub objective: f64,
}

/// One trial.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    /// Its position in the study, from 0.
    pub index: u32,
    /// Its name (see [`trial_name`](super::trial_name)).
    pub name: String,
    /// The parameter values it received; parameters left out by `when` are absent.
    pub params: BTreeMap<String, ParamValue>,
    /// Its state.
    pub state: TrialState,
    /// Multi-fidelity: the budget it runs to now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// Hyperband: the bracket it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bracket: Option<u32>,
    /// The objective metric by step, ascending, one value per step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<MetricPoint>,
    /// The final objective (of the current budget, for multi-fidelity algorithms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// Multi-fidelity: the objective at the end of every budget it completed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rungs: Vec<RungResult>,
}

impl Trial {
    /// The objective it reached at `budget`, if it completed that budget.
    pub fn rung(&self, budget: u64) -> Option<f64> {
        self.rungs
            .iter()
            .find(|r| r.budget == budget)
            .map(|r| r.objective)
    }
}

/// An earlier study whose trials seed this one's model (`warmStart`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmStartStudy {
    /// Its name.
    pub study: String,
    /// The space it searched, as its spec wrote it.
    pub parameters: Vec<ParameterSpec>,
    /// Its trials.
    pub trials: Vec<Trial>,
}

/// Every trial of a study, and the earlier studies it learns from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialLedger {
    /// The trials, index `i` at position `i`.
    pub trials: Vec<Trial>,
    /// Earlier studies' trials (`warmStart`), read-only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_start: Vec<WarmStartStudy>,
}

impl TrialLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        TrialLedger::default()
    }

    /// Checks that trial `i` sits at position `i`.
    pub fn check(&self) -> Result<(), TuningError> {
        for (i, t) in self.trials.iter().enumerate() {
            if t.index as usize != i {
                return Err(TuningError::ledger(format!(
                    "trial {} ({}) is at position {i}: trials must be indexed 0..n in order",
                    t.index, t.name
                )));
            }
        }
        Ok(())
    }

    /// The finished trials whose runs may go once the newest `keep` finished trials (by
    /// index) keep theirs: a study of thousands of trials leaves a bounded number of runs
    /// (and their pods) behind. Their outcomes are in the ledger; a promoted trial trains on
    /// from its previous run's checkpoints, which outlive the run.
    pub fn expired_runs(&self, keep: u32) -> impl Iterator<Item = u32> + '_ {
        let finished = self.trials.iter().filter(|t| t.state.is_finished());
        let expired = finished.clone().count().saturating_sub(keep as usize);
        finished.take(expired).map(|t| t.index)
    }

    /// The trial with this index.
    pub fn trial(&self, index: u32) -> Result<&Trial, TuningError> {
        self.trials
            .get(index as usize)
            .ok_or_else(|| TuningError::ledger(format!("there is no trial {index}")))
    }

    fn trial_mut(&mut self, index: u32) -> Result<&mut Trial, TuningError> {
        self.trials
            .get_mut(index as usize)
            .ok_or_else(|| TuningError::ledger(format!("there is no trial {index}")))
    }

    /// Records the decisions: new trials as pending, stopped trials as stopped, promoted
    /// trials as running with their new budget. Applying the same decisions twice changes
    /// nothing the second time.
    pub fn apply(&mut self, decisions: &Decisions) -> Result<(), TuningError> {
        for start in &decisions.start {
            let next = self.trials.len() as u32;
            if start.index < next {
                continue;
            }
            if start.index != next {
                return Err(TuningError::ledger(format!(
                    "trial {} cannot start before trial {next}",
                    start.index
                )));
            }
            self.trials.push(Trial {
                index: start.index,
                name: start.name.clone(),
                params: start.params.clone(),
                state: TrialState::Pending,
                budget: start.budget,
                bracket: start.bracket,
                series: Vec::new(),
                objective: None,
                rungs: Vec::new(),
            });
        }
        for stop in &decisions.stop {
            let trial = self.trial_mut(stop.index)?;
            if trial.state.is_active() {
                trial.state = TrialState::Stopped;
            }
        }
        for promotion in &decisions.promote {
            let trial = self.trial_mut(promotion.index)?;
            if trial.state == TrialState::Succeeded && trial.budget == Some(promotion.from_budget) {
                trial.state = TrialState::Pending;
                trial.budget = Some(promotion.budget);
                trial.objective = None;
            }
        }
        Ok(())
    }

    /// The trial's child is running.
    pub fn record_running(&mut self, index: u32) -> Result<(), TuningError> {
        let trial = self.trial_mut(index)?;
        if trial.state == TrialState::Pending {
            trial.state = TrialState::Running;
        }
        Ok(())
    }

    /// The objective metric at `step`; a repeated push of the same step replaces the value.
    pub fn record_metric(&mut self, index: u32, step: u64, value: f64) -> Result<(), TuningError> {
        let trial = self.trial_mut(index)?;
        match trial.series.binary_search_by_key(&step, |p| p.step) {
            Ok(i) => trial.series[i].value = value,
            Err(i) => trial.series.insert(i, MetricPoint { step, value }),
        }
        Ok(())
    }

    /// A series of objective metrics, point by point ([`TrialLedger::record_metric`]);
    /// whether the trial's series changed.
    pub fn record_series(
        &mut self,
        index: u32,
        points: &[MetricPoint],
    ) -> Result<bool, TuningError> {
        let before = self.trial(index)?.series.clone();
        for p in points {
            self.record_metric(index, p.step, p.value)?;
        }
        Ok(self.trial(index)?.series != before)
    }

    /// The trial finished its budget with this objective.
    pub fn record_success(&mut self, index: u32, objective: f64) -> Result<(), TuningError> {
        let trial = self.trial_mut(index)?;
        if !objective.is_finite() {
            return Err(TuningError::ledger(format!(
                "trial {index} reported a non-finite objective {objective}"
            )));
        }
        trial.state = TrialState::Succeeded;
        trial.objective = Some(objective);
        if let Some(budget) = trial.budget {
            match trial.rungs.iter_mut().find(|r| r.budget == budget) {
                Some(r) => r.objective = objective,
                None => trial.rungs.push(RungResult { budget, objective }),
            }
        }
        Ok(())
    }

    /// The trial failed.
    pub fn record_failure(&mut self, index: u32) -> Result<(), TuningError> {
        self.trial_mut(index)?.state = TrialState::Failed;
        Ok(())
    }

    /// The succeeded trial with the best objective (the earliest among equals).
    pub fn best(&self, goal: Goal) -> Option<&Trial> {
        self.trials
            .iter()
            .filter(|t| t.state == TrialState::Succeeded)
            .filter_map(|t| t.objective.map(|o| (goal.loss(o), t)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, t)| t)
    }
}
