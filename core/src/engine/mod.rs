//! The engines: the pure decisions of every resource, and the one seam their shells use.
//!
//! # The pattern every resource follows
//!
//! A resource's engine is a serializable record of what has been observed of one object (a
//! run, a training job, a study, an endpoint) and one entry point, [`Engine::advance`]:
//! observations in, effects out. A shell — the local runtime or a controller — does only
//! I/O: it watches processes, pods, reports and the clock, hands what it saw to `advance`
//! with the time, and carries out the returned effects in order (write these rows in one
//! transaction, show this event, start or stop this child, wake at T). Every rule lives in
//! the engine: shells never edit its state and never re-derive a decision, so the same
//! observations give the same effects in both places, and the engine is tested without
//! either shell. New resources add an engine module here with the same shape.
//!
//! # Pipeline runs
//!
//! [`run::Run`] is the pipeline run's engine. Inside it, a run is a [`RunPlan`] (the
//! validated pipeline, its resolved parameters and the digests of its local inputs) and a
//! [`RunState`] (what has been observed of every node: a step, or one child `name[i]` of a
//! fan-out). [`decide`] looks at both and returns the [`Action`]s that follow: start a node,
//! skip it, fail it, fan it out, complete a fan-out, wait until a retry is due, or finish the
//! run; [`Run::advance`] applies them until only starts and waits remain and turns them into
//! effects. The decisions are tested directly (see the property tests).

mod decide;
pub mod gang;
mod invocation;
mod plan;
pub mod run;
mod state;
mod values;

#[cfg(test)]
mod tests;

pub use decide::{Action, decide};
pub use invocation::{GangInvocation, InputSource, Invocation};
pub use plan::{
    DEFAULT_PERMANENT_EXIT_CODES, PlanError, RunPlan, StagedInputs, StepPlan, Unstaged,
};
pub use run::{Engine, Run};
pub use state::{NodeState, RunState, SUMMARY_NAMES};
pub use values::render_value;

/// The node name of fan-out child `index` of `step`.
pub fn child_name(step: &str, index: usize) -> String {
    format!("{step}[{index}]")
}

/// The step a node belongs to: `train` for `train`, `shard` for `shard[3]`.
pub fn step_of(node: &str) -> &str {
    node.split_once('[').map_or(node, |(s, _)| s)
}
