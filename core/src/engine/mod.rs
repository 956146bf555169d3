//! The pipeline engine: the pure decisions of a run.
//!
//! A run is a [`RunPlan`] (the validated pipeline, its resolved parameters and the digests of
//! its local inputs) and a [`RunState`] (what has been observed of every node: a step, or one
//! child `name[i]` of a fan-out). [`decide`] looks at both and returns the [`Action`]s that
//! follow: start a node (the shell then serves it from the cache or runs it), skip it, fail
//! it, fan it out, complete a fan-out, wait until a retry is due, or finish the run. The shell
//! applies each action to the state with [`RunState::apply`], records it, executes the starts,
//! and feeds results back with [`RunState::record_success`] / [`RunState::record_failure`].
//! Nothing here does I/O, so the local runtime and the operator make the same decisions, and
//! the decisions are tested directly (see the property tests).

mod decide;
mod invocation;
mod plan;
mod state;
mod values;

#[cfg(test)]
mod tests;

pub use decide::{Action, decide};
pub use invocation::{InputSource, Invocation};
pub use plan::{PlanError, RunPlan, StepPlan};
pub use state::{NodeState, RunState};
pub use values::render_value;

/// The node name of fan-out child `index` of `step`.
pub fn child_name(step: &str, index: usize) -> String {
    format!("{step}[{index}]")
}

/// The step a node belongs to: `train` for `train`, `shard` for `shard[3]`.
pub fn step_of(node: &str) -> &str {
    node.split_once('[').map_or(node, |(s, _)| s)
}
