//! Hyperparameter tuning, pure: the engine of a `TuningStudy`.
//!
//! # How data flows
//!
//! A shell (the local runtime, the operator) holds a study's [`StudySpec`] and its
//! [`TrialLedger`] (every trial: parameters, state, objective series, final objective,
//! rung results). On every pass it calls [`decide`] (or [`Study::new`] once and then
//! [`Study::decide`]) and gets [`Decisions`]: the trials to start with their parameters and
//! names, the ones to stop early, the ones to promote to a larger budget, and whether the
//! study is over. It carries them out, records them with [`TrialLedger::apply`], and records
//! what trials report with `record_running`, `record_metric`, `record_success` and
//! `record_failure`. Nothing here reads a clock, a file or a global random generator: the
//! suggestion for trial `i` is drawn from a generator seeded by the study's seed and `i`, so
//! the same spec and ledger give the same decisions in every process, and a study
//! interrupted any number of times runs the same trials as one that never was.
//!
//! # Pieces
//!
//! - [`spec`] what the user writes; [`Study::new`] validates it into a [`Study`] with a
//!   [`SearchSpace`], reporting every problem at its field path ([`Issue`]).
//! - [`space`] coordinates: how values map to the unit cube samplers work in.
//! - `sampler`: grid, random, Sobol, TPE; `gp`: Gaussian process with expected
//!   improvement. `fidelity`: ASHA and Hyperband promotions; `stopping`: median stopping.
//! - `warm_start`: which earlier studies' trials a study may learn from.
//!
//! # Libraries
//!
//! - `sobol` gives the Sobol sequence (Joe and Kuo's direction numbers); scrambling on top
//!   of it is a seeded digital shift.
//! - `statrs` gives the error function behind the normal CDF of TPE's truncated kernels
//!   and of expected improvement (without its default features, so no linear-algebra crate).
//! - `rand_chacha` gives the seeded generators (the workspace already uses it).
//! - `tpe` (crate) is not used: it is univariate and has no conditional parameters.
//! - `egobox` is not used: its GP brings ndarray, linfa and an optimiser stack into the
//!   crate every binary links, fits continuous spaces only (no categorical or conditional
//!   parameters), and is built for a long-lived model rather than a pure function of a
//!   ledger. The GP here is small: a Matérn 5/2 kernel, a Cholesky factorisation and a
//!   maximum-a-posteriori fit of its hyperparameters (see `gp`).

mod condition;
mod decide;
mod error;
mod fidelity;
mod gp;
mod importance;
mod ledger;
mod name;
mod rng;
mod sampler;
pub mod space;
pub mod spec;
mod stopping;
mod study;
mod validate;
mod value;
mod warm_start;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod validate_tests;

pub use condition::{Condition, ConditionValue};
pub use decide::{
    Decisions, EndReason, Promotion, StopReason, StudyEnd, TrialStart, TrialStop, decide,
};
pub use error::{Issue, TuningError};
pub use importance::importances;
pub use ledger::{MetricPoint, RungResult, Trial, TrialLedger, TrialState, WarmStartStudy};
pub use name::{child_name, trial_name};
pub use space::{Domain, Parameter, SearchSpace};
pub use spec::{
    AlgorithmName, AlgorithmSpec, BudgetSpec, EarlyStoppingSpec, Goal, Literal, MedianStoppingSpec,
    ObjectiveSpec, ParameterSpec, ParameterType, ResourceSpec, Scale, StudySpec,
};
pub use study::{Algorithm, Fidelity, MedianStopping, ModelSettings, Study};
pub use value::ParamValue;
