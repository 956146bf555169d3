//! The study as a user writes it: the plain, serializable input of the engine.
//!
//! These types mirror the `spec` of a `TuningStudy` manifest (camelCase fields, unknown
//! fields refused). Nothing here is checked yet: [`super::Study::new`] validates a
//! [`StudySpec`] and reports every problem with its field path.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a study optimises, over which space, how, and within which budget.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StudySpec {
    /// The metric to optimise, its direction and an optional target that ends the study.
    pub objective: ObjectiveSpec,
    /// The search space.
    pub parameters: Vec<ParameterSpec>,
    /// The sampler (or multi-fidelity scheduler) and its seed.
    pub algorithm: AlgorithmSpec,
    /// Stopping running trials that are clearly worse than the completed ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStoppingSpec>,
    /// How many trials, how many at once, how many may fail.
    pub budget: BudgetSpec,
}

/// The objective metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// The metric's name, as trials report it.
    pub metric: String,
    /// Whether smaller or larger is better.
    pub goal: Goal,
    /// A value that, once reached by a trial, ends the study.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
}

/// The direction of the objective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Goal {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Goal {
    /// The objective as a loss: smaller is always better.
    pub fn loss(self, objective: f64) -> f64 {
        match self {
            Goal::Minimize => objective,
            Goal::Maximize => -objective,
        }
    }
}

/// The kind of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ParameterType {
    /// A real number in `[min, max]`, optionally on a `step` grid.
    Double,
    /// A whole number in `[min, max]` on a `step` grid (default 1).
    Int,
    /// One of a list of numbers (`values`), ordered.
    Discrete,
    /// One of a list of strings (`values`), unordered.
    Categorical,
}

impl ParameterType {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::Double => "double",
            ParameterType::Int => "int",
            ParameterType::Discrete => "discrete",
            ParameterType::Categorical => "categorical",
        }
    }
}

/// How a numeric range is searched.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Evenly over the range.
    #[default]
    Linear,
    /// Evenly over the logarithm of the range (`min` must be positive).
    Log,
}

/// A value in a `discrete` or `categorical` list: a number or a string as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
// Structural in a CRD: a number or a string, which an untagged enum's schema is not.
#[schemars(schema_with = "crate::api::schema::any_value")]
pub enum Literal {
    /// A number (`32`, `0.5`).
    Number(f64),
    /// A string (`adam`).
    Text(String),
}

/// One parameter of the search space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParameterSpec {
    /// The name trials see (`{{trial.params.NAME}}`).
    pub name: String,
    /// Its kind.
    #[serde(rename = "type")]
    pub kind: ParameterType,
    /// The lower bound (`double`, `int`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The upper bound (`double`, `int`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Linear or log (`double`, `int`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<Scale>,
    /// The grid spacing from `min` (`double`, `int`); it must divide `max - min`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<f64>,
    /// The choices (`discrete`: numbers, `categorical`: strings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<Literal>>,
    /// `"PARAM == value"` or `"PARAM != value"`: the parameter exists only in trials where
    /// the condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

/// The search algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlgorithmName {
    /// Every combination, in a stable order.
    Grid,
    /// Independent uniform draws.
    Random,
    /// A quasi-random Sobol sequence.
    Sobol,
    /// Multivariate tree-structured Parzen estimator.
    Tpe,
    /// Gaussian process with expected improvement.
    Gp,
    /// Hyperband: successive halving over brackets of different aggressiveness.
    Hyperband,
    /// Asynchronous successive halving.
    Asha,
}

impl AlgorithmName {
    /// The name as written in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            AlgorithmName::Grid => "grid",
            AlgorithmName::Random => "random",
            AlgorithmName::Sobol => "sobol",
            AlgorithmName::Tpe => "tpe",
            AlgorithmName::Gp => "gp",
            AlgorithmName::Hyperband => "hyperband",
            AlgorithmName::Asha => "asha",
        }
    }
}

/// The algorithm and its settings; settings an algorithm does not use are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlgorithmSpec {
    /// Which algorithm.
    pub name: AlgorithmName,
    /// The seed every suggestion derives from (with the trial's index).
    #[serde(default)]
    pub seed: u64,
    /// `tpe`, `gp`: how many trials are drawn at random before the model is used (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_trials: Option<u32>,
    /// `tpe`: candidates drawn from the good trials' density per suggestion (default 24);
    /// `gp`: random candidates scored by expected improvement (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidates: Option<u32>,
    /// `sobol`: scramble the sequence with a seeded digital shift (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scrambled: Option<bool>,
    /// `hyperband`, `asha`: the resource a trial's budget is counted in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceSpec>,
    /// `hyperband`, `asha`: keep the best 1/eta at each rung (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reduction_factor: Option<u32>,
}

/// The resource of multi-fidelity algorithms, e.g. epochs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSpec {
    /// Its name, as trials receive it (`{{trial.params.NAME}}`), e.g. `epochs`.
    pub name: String,
    /// The budget of the lowest rung.
    pub min: u64,
    /// The budget of the highest rung.
    pub max: u64,
}

/// Early stopping rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EarlyStoppingSpec {
    /// Median stopping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median: Option<MedianStoppingSpec>,
}

/// Stop a running trial whose best value so far is worse than the median of the completed
/// trials' values at the same step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MedianStoppingSpec {
    /// Completed trials needed at a step before any trial is stopped there (default 5).
    #[serde(default = "default_min_trials")]
    pub min_trials: u32,
    /// Steps a trial always runs before it can be stopped (default 0).
    #[serde(default)]
    pub grace_steps: u64,
}

fn default_min_trials() -> u32 {
    5
}

/// How many trials a study may run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BudgetSpec {
    /// Trials (configurations) in all.
    pub max_trials: u32,
    /// Trials running at once (default 1).
    #[serde(default = "default_parallel_trials")]
    pub parallel_trials: u32,
    /// The study fails once more trials than this have failed (default: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_trials: Option<u32>,
}

/// Trials running at once when `parallelTrials` is omitted.
pub const DEFAULT_PARALLEL_TRIALS: u32 = 1;

fn default_parallel_trials() -> u32 {
    DEFAULT_PARALLEL_TRIALS
}
