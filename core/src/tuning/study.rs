//! A validated study: the engine's view of a [`StudySpec`](super::StudySpec), built once by
//! [`Study::new`](super::Study::new) and read by every decision.

use super::space::SearchSpace;
use super::spec::Goal;

/// Defaults shared with the spec's documentation.
pub(crate) const DEFAULT_STARTUP_TRIALS: u32 = 10;
pub(crate) const DEFAULT_TPE_CANDIDATES: u32 = 24;
pub(crate) const DEFAULT_GP_CANDIDATES: u32 = 1000;
pub(crate) const DEFAULT_REDUCTION_FACTOR: u32 = 3;

/// A study whose spec passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct Study {
    /// The search space.
    pub space: SearchSpace,
    /// The objective's direction.
    pub goal: Goal,
    /// The objective value that ends the study.
    pub target: Option<f64>,
    /// How trials are chosen.
    pub algorithm: Algorithm,
    /// The seed every suggestion derives from.
    pub seed: u64,
    /// Median stopping, when enabled.
    pub median_stopping: Option<MedianStopping>,
    /// Trials (configurations) in all.
    pub max_trials: u32,
    /// Trials active at once.
    pub parallel_trials: u32,
    /// The study fails once more trials than this have failed.
    pub max_failed_trials: Option<u32>,
}

/// A validated algorithm with its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Algorithm {
    /// Every combination in a stable order.
    Grid,
    /// Independent uniform draws.
    Random,
    /// A Sobol sequence, scrambled or not.
    Sobol {
        /// Apply a seeded digital shift.
        scrambled: bool,
    },
    /// Multivariate TPE.
    Tpe(ModelSettings),
    /// Gaussian process with expected improvement.
    Gp(ModelSettings),
    /// Hyperband.
    Hyperband(Fidelity),
    /// Asynchronous successive halving.
    Asha(Fidelity),
}

/// Settings of the model-based samplers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSettings {
    /// Random trials before the model is used.
    pub startup_trials: u32,
    /// Candidates scored per suggestion.
    pub candidates: u32,
}

/// The resource of a multi-fidelity algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fidelity {
    /// Its name, e.g. `epochs`.
    pub resource: String,
    /// The lowest rung's budget.
    pub min: u64,
    /// The highest rung's budget.
    pub max: u64,
    /// The reduction factor eta (at least 2).
    pub eta: u32,
}

/// Median stopping's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MedianStopping {
    /// Completed trials needed at a step before any trial is stopped there.
    pub min_trials: u32,
    /// Steps a trial always runs.
    pub grace_steps: u64,
}
