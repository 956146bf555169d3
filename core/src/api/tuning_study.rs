//! `TuningStudy`: a search over hyperparameters, run as trials (each a pipeline run or a
//! TrainingJob) whose objective metric the study reads.
//!
//! The search itself is [`crate::tuning`]'s: this resource holds what the engine needs (the
//! objective, the space, the algorithm, early stopping, the budget) and how a trial runs (the
//! template). Parameters reach a trial only through placeholders `{{trial.params.NAME}}` in
//! the template and the `TOUCAN_TRIAL_PARAMS` file, never by rewriting its command. The ledger
//! of trials lives in the metadata store; the status holds a bounded summary.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    EnvVar, Outputs, ParamValue, PipelineRef, PipelineSpec, Resources, Step, TrainingJobSpec,
};
use crate::duration::Duration;
use crate::echo::cut;
use crate::records::Millis;
use crate::tuning::spec::DEFAULT_PARALLEL_TRIALS;
use crate::tuning::{
    AlgorithmSpec, BudgetSpec, EarlyStoppingSpec, Goal, ObjectiveSpec, ParameterSpec, StudySpec,
    Trial, TrialLedger, TrialState,
};

/// A hyperparameter search.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "toucan.dev",
    version = "v1alpha1",
    kind = "TuningStudy",
    namespaced,
    status = "TuningStudyStatus",
    shortname = "ts",
    category = "toucan",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Succeeded","type":"integer","jsonPath":".status.trials.succeeded"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.trials.running"}"#,
    printcolumn = r#"{"name":"Best","type":"number","jsonPath":".status.best.objective"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TuningStudySpec {
    /// The metric to optimise, its direction, and a target that ends the study.
    pub objective: ObjectiveSpec,
    /// More metrics recorded with every trial.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<String>,
    /// The search space.
    pub parameters: Vec<ParameterSpec>,
    /// The sampler (or multi-fidelity scheduler) and its seed.
    pub algorithm: AlgorithmSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
    pub budget: StudyBudget,
    /// Earlier studies over a compatible space whose trials seed the sampler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_start: Vec<WarmStartRef>,
    /// How each trial runs.
    pub trial: TrialTemplate,
}

/// How many trials a study may run, and for how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StudyBudget {
    /// Trials (configurations) in all.
    pub max_trials: u32,
    /// Trials running at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_trials: Option<u32>,
    /// The study fails once more trials than this have failed (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_trials: Option<u32>,
    /// The study stops starting trials this long after it started (`6h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
}

/// An earlier study, by name, in the same namespace (locally: the same store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarmStartRef {
    pub study: String,
}

/// A trial: one of `pipelineRef`, `pipelineSpec`, `trainingJob` or one step inline (`image`,
/// `command`, `outputs`... as a pipeline step writes them), with placeholders
/// `{{trial.params.NAME}}` anywhere in it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrialTemplate {
    /// A run of this Pipeline per trial (in the same namespace, or the same file or directory
    /// locally).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_ref: Option<PipelineRef>,
    /// An inline pipeline per trial; a single step is the quick way to tune any program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_spec: Option<PipelineSpec>,
    /// A TrainingJob per trial (run as the one distributed step `train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_job: Option<Box<TrainingJobSpec>>,
    /// An inline trial's image: the trial is one step, named `trial`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// An inline trial's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// An inline trial's outputs: the objective is one of its params.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,
    /// The pipeline's parameter values (`pipelineRef`, `pipelineSpec`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<ParamValue>,
    /// Where the objective comes from: `{{steps.STEP.outputs.params.NAME}}`. When omitted,
    /// the output param named like the objective's metric of the pipeline's last step (a
    /// TrainingJob's `train`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective_from: Option<String>,
    /// On a cluster: how many finished trials keep their PipelineRun (and its pods), the
    /// newest by trial index; older ones are deleted once their outcome is in the ledger, and
    /// their records stay in the metadata store (`toucan get trials`, `toucan get runs`).
    /// [`DEFAULT_KEEP_RUNS`] when omitted. A local study's runs are rows of its own store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_runs: Option<u32>,
}

/// How many finished trials keep their PipelineRun when `trial.keepRuns` is omitted.
pub const DEFAULT_KEEP_RUNS: u32 = 50;

/// The step name of an inline trial.
pub const INLINE_TRIAL_STEP: &str = "trial";

impl TrialTemplate {
    /// How many finished trials keep their run: `keepRuns`, else [`DEFAULT_KEEP_RUNS`].
    pub fn keep_runs(&self) -> u32 {
        self.keep_runs.unwrap_or(DEFAULT_KEEP_RUNS)
    }

    /// Whether it writes one step inline (an image or a command).
    pub fn is_inline(&self) -> bool {
        self.image.is_some() || !self.command.is_empty()
    }

    /// The pipeline a trial runs when the template holds it (`pipelineSpec`, a
    /// `trainingJob`'s one step `train`, an inline step `trial`); `None` for a `pipelineRef`.
    pub fn pipeline(&self) -> Option<PipelineSpec> {
        if let Some(spec) = &self.pipeline_spec {
            return Some(spec.clone());
        }
        let step = if let Some(job) = &self.training_job {
            job.step(crate::manifest::JOB_STEP)
        } else if self.is_inline() {
            Step {
                name: INLINE_TRIAL_STEP.to_string(),
                image: self.image.clone().unwrap_or_default(),
                command: self.command.clone(),
                args: self.args.clone(),
                env: self.env.clone(),
                resources: self.resources.clone(),
                outputs: self.outputs.clone(),
                ..Step::default()
            }
        } else {
            return None;
        };
        Some(PipelineSpec {
            steps: vec![step],
            ..PipelineSpec::default()
        })
    }
}

impl TuningStudySpec {
    /// The engine's input: the study without its trial template.
    pub fn engine_spec(&self) -> StudySpec {
        StudySpec {
            objective: self.objective.clone(),
            parameters: self.parameters.clone(),
            algorithm: self.algorithm.clone(),
            early_stopping: self.early_stopping.clone(),
            budget: BudgetSpec {
                max_trials: self.budget.max_trials,
                parallel_trials: self
                    .budget
                    .parallel_trials
                    .unwrap_or(DEFAULT_PARALLEL_TRIALS),
                max_failed_trials: self.budget.max_failed_trials,
            },
        }
    }
}

/// How many trials of the study are in each state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialCounts {
    pub pending: u32,
    pub running: u32,
    pub succeeded: u32,
    pub failed: u32,
    /// Stopped early (median stopping, or the study ended).
    pub stopped: u32,
}

/// One trial in the status: the best, or one of the latest few.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialSummary {
    pub name: String,
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Stopped`.
    pub state: String,
    /// Its parameter values, as text.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
}

/// How many trials the status lists besides the best.
pub const STATUS_RECENT_TRIALS: usize = 5;

/// A bounded summary of a study, whatever its number of trials: counts, the best trial and
/// the latest few. Every trial is in the metadata store.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningStudyStatus {
    /// `Running`, `Succeeded` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The study's id in the metadata store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trials: Option<TrialCounts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialSummary>,
    /// The latest trials, newest first (at most [`STATUS_RECENT_TRIALS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent: Vec<TrialSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl TrialCounts {
    /// The ledger's trials, counted by state.
    pub fn of(ledger: &TrialLedger) -> TrialCounts {
        let mut counts = TrialCounts::default();
        for trial in &ledger.trials {
            let count = match trial.state {
                TrialState::Pending => &mut counts.pending,
                TrialState::Running => &mut counts.running,
                TrialState::Succeeded => &mut counts.succeeded,
                TrialState::Failed => &mut counts.failed,
                TrialState::Stopped => &mut counts.stopped,
            };
            *count += 1;
        }
        counts
    }
}

impl TuningStudySpec {
    /// When the study's deadline (`budget.deadline`) passes, for a study started at
    /// `started_at`; see [`crate::tuning::Study::decide_at`].
    pub fn deadline_after(&self, started_at: Millis) -> Option<Millis> {
        self.budget
            .deadline
            .as_ref()
            .map(|d| started_at.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
}

impl TuningStudyStatus {
    /// Sets the ledger's part of the status: the counts by state, the best succeeded trial
    /// and the latest few, newest first. Its size does not grow with the number of trials.
    pub fn record_ledger(&mut self, ledger: &TrialLedger, goal: Goal) {
        self.trials = Some(TrialCounts::of(ledger));
        self.best = ledger.best(goal).map(TrialSummary::of);
        self.recent = ledger
            .trials
            .iter()
            .rev()
            .take(STATUS_RECENT_TRIALS)
            .map(TrialSummary::of)
            .collect();
    }
}

impl TrialSummary {
    /// A trial as the status shows it, a long value cut as error messages cut theirs.
    pub fn of(trial: &Trial) -> Self {
        TrialSummary {
            name: trial.name.clone(),
            state: trial.state.as_str().to_string(),
            params: trial
                .params
                .iter()
                .map(|(name, value)| (name.clone(), cut(&value.to_string()).into_owned()))
                .collect(),
            objective: trial.objective,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::{MetricPoint, ParamValue};

    fn trial(index: u32, state: TrialState, objective: Option<f64>) -> Trial {
        Trial {
            index,
            name: format!("{index}-trial"),
            params: BTreeMap::from([
                (
                    "learning_rate".into(),
                    ParamValue::Float(1e-3 * f64::from(index)),
                ),
                ("optimizer".into(), ParamValue::Text("x".repeat(500))),
            ]),
            state,
            budget: None,
            bracket: None,
            series: (0..20)
                .map(|step| MetricPoint {
                    step,
                    value: f64::from(index),
                })
                .collect(),
            objective,
            rungs: Vec::new(),
        }
    }

    #[test]
    fn the_status_of_a_ten_thousand_trial_study_stays_small() {
        let mut ledger = TrialLedger::new();
        for i in 0..10_000u32 {
            let state = match i % 4 {
                0 => TrialState::Failed,
                1 => TrialState::Stopped,
                _ => TrialState::Succeeded,
            };
            // Trial 4,242 is the best; the last two are still going.
            let objective =
                (state == TrialState::Succeeded).then_some(if i == 4_242 { 0.99 } else { 0.5 });
            ledger.trials.push(trial(i, state, objective));
        }
        ledger.trials[9_998].state = TrialState::Running;
        ledger.trials[9_999].state = TrialState::Pending;
        let mut status = TuningStudyStatus::default();
        status.record_ledger(&ledger, Goal::Maximize);
        let counts = status.trials.clone().unwrap();
        assert_eq!(
            (
                counts.pending,
                counts.running,
                counts.succeeded,
                counts.failed,
                counts.stopped
            ),
            (1, 1, 4_998, 2_500, 2_500)
        );
        let best = status.best.clone().unwrap();
        assert_eq!(
            (best.name.as_str(), best.objective),
            ("4242-trial", Some(0.99))
        );
        let recent: Vec<&str> = status.recent.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            recent,
            [
                "9999-trial",
                "9998-trial",
                "9997-trial",
                "9996-trial",
                "9995-trial"
            ]
        );
        assert!(
            best.params["optimizer"].len() < 200,
            "{}",
            best.params["optimizer"]
        );
        let bytes = serde_json::to_vec(&status).unwrap().len();
        assert!(bytes < 100 * 1024, "{bytes} bytes");
        // Minimising, the best is another trial.
        status.record_ledger(&ledger, Goal::Minimize);
        assert_ne!(status.best.unwrap().name, "4242-trial");
    }
}
