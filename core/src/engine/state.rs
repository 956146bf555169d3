//! What has been observed of a run's nodes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::decide::Action;
use super::plan::{RunPlan, backoff_ms, is_permanent, max_attempts};
use super::{child_name, step_of};
use crate::records::{Millis, Phase, StepOutputs, StepRecord};

/// Failed nodes named in a run's summary; the rest are counted.
pub const SUMMARY_NAMES: usize = 5;
/// Longest node name shown in a summary.
const SUMMARY_NAME_CHARS: usize = 100;

/// `text` cut to `max` characters, with `…` when cut.
fn bounded(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// The observed state of every node of a run, by node name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub nodes: BTreeMap<String, NodeState>,
    /// The user asked the run to stop.
    pub cancelled: bool,
    /// Set once the run has finished.
    pub finished: Option<Phase>,
}

/// One node: a step, or one child of a fan-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    pub phase: Phase,
    /// Attempts started so far.
    pub attempts: u32,
    /// A failed attempt is retried no earlier than this.
    pub retry_at: Option<Millis>,
    pub outputs: StepOutputs,
    pub cached: bool,
    /// For a fan-out step: the items, once expanded.
    pub items: Option<Vec<Value>>,
    pub message: Option<String>,
}

impl NodeState {
    pub fn pending() -> NodeState {
        NodeState {
            phase: Phase::Pending,
            attempts: 0,
            retry_at: None,
            outputs: StepOutputs::default(),
            cached: false,
            items: None,
            message: None,
        }
    }
}

impl RunState {
    /// A fresh run: every step pending.
    pub fn new(plan: &RunPlan) -> RunState {
        let nodes = plan
            .steps()
            .map(|s| (s.step.name.clone(), NodeState::pending()))
            .collect();
        RunState {
            nodes,
            cancelled: false,
            finished: None,
        }
    }

    /// The state to resume from: nodes that succeeded keep their outputs; everything else
    /// starts over (keeping its attempt count, so attempt numbers and logs continue).
    pub fn resume(plan: &RunPlan, previous: &RunState) -> RunState {
        let mut state = RunState::new(plan);
        for (name, node) in &previous.nodes {
            let mut node = node.clone();
            let is_fan_out_parent = node.items.is_some();
            if node.phase != Phase::Succeeded
                || is_fan_out_parent && !all_children_succeeded(previous, name)
            {
                node.phase = Phase::Pending;
                node.retry_at = None;
                node.message = None;
                node.cached = false;
                node.items = None;
                node.outputs = StepOutputs::default();
            }
            state.nodes.insert(name.clone(), node);
        }
        state
    }

    /// The state to resume from, rebuilt from a run's recorded steps (see [`RunState::resume`]).
    /// A fan-out step's item count is not recorded; its children's names tell it.
    pub fn resume_from_records(plan: &RunPlan, steps: &[StepRecord]) -> RunState {
        let mut previous = RunState::default();
        for s in steps {
            let mut node = NodeState::pending();
            node.phase = s.phase;
            node.attempts = s.attempts;
            node.outputs = s.outputs.clone();
            node.cached = s.cached;
            previous.nodes.insert(s.name.clone(), node);
        }
        for s in steps {
            if let Some((parent, index)) = s.name.strip_suffix(']').and_then(|n| n.split_once('['))
                && let Ok(i) = index.parse::<usize>()
                && let Some(p) = previous.nodes.get_mut(parent)
            {
                let items = p.items.get_or_insert_with(Vec::new);
                if items.len() <= i {
                    items.resize(i + 1, Value::Null);
                }
            }
        }
        RunState::resume(plan, &previous)
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes.get(name)
    }

    /// The children of a fan-out step, in order, once expanded.
    pub fn children<'a>(&'a self, step: &str) -> Vec<(String, &'a NodeState)> {
        let Some(items) = self.nodes.get(step).and_then(|n| n.items.as_ref()) else {
            return Vec::new();
        };
        (0..items.len())
            .filter_map(|i| {
                let name = child_name(step, i);
                self.nodes.get(&name).map(|n| (name, n))
            })
            .collect()
    }

    /// Applies a state-changing action (`Start` marks the node running).
    pub fn apply(&mut self, action: &Action) {
        match action {
            Action::Start(inv) => {
                if let Some(n) = self.nodes.get_mut(&inv.node) {
                    n.phase = Phase::Running;
                    n.attempts = n.attempts.max(inv.attempt);
                    n.retry_at = None;
                    n.message = None;
                }
            }
            Action::Skip { node, reason } => self.set_terminal(node, Phase::Skipped, reason),
            Action::Fail { node, reason } => self.set_terminal(node, Phase::Failed, reason),
            Action::Cancel { node } => self.set_terminal(node, Phase::Cancelled, "run cancelled"),
            Action::FanOut { step, items } => {
                for i in 0..items.len() {
                    self.nodes
                        .entry(child_name(step, i))
                        .or_insert_with(NodeState::pending);
                }
                if let Some(n) = self.nodes.get_mut(step) {
                    n.items = Some(items.clone());
                    n.phase = Phase::Running;
                }
            }
            Action::CompleteFanOut {
                step,
                phase,
                outputs,
                cached,
            } => {
                if let Some(n) = self.nodes.get_mut(step) {
                    n.phase = *phase;
                    n.outputs = outputs.clone();
                    n.cached = *cached;
                }
            }
            Action::WakeAt(_) => {}
            Action::Finish { phase } => self.finished = Some(*phase),
        }
    }

    fn set_terminal(&mut self, node: &str, phase: Phase, reason: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.phase = phase;
            n.retry_at = None;
            n.message = Some(reason.to_string());
        }
    }

    /// A node succeeded: ran, or was served from the cache.
    pub fn record_success(&mut self, node: &str, outputs: StepOutputs, cached: bool) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.phase = Phase::Succeeded;
            n.outputs = outputs;
            n.cached = cached;
            n.retry_at = None;
            n.message = None;
        }
    }

    /// An attempt failed at `now` (with `exit_code`, when its command exited). The node goes
    /// back to pending with a retry time while it has attempts left and the failure is not
    /// permanent (an exit code the step declares so), else it fails. Returns the phase it is
    /// in afterwards.
    pub fn record_failure(
        &mut self,
        plan: &RunPlan,
        node: &str,
        now: Millis,
        message: &str,
        exit_code: Option<i32>,
    ) -> Phase {
        let Some(step) = plan.step(step_of(node)) else {
            return Phase::Failed;
        };
        let Some(n) = self.nodes.get_mut(node) else {
            return Phase::Failed;
        };
        n.message = Some(message.to_string());
        let permanent = exit_code.is_some_and(|code| is_permanent(step.step, code));
        if self.cancelled {
            n.phase = Phase::Cancelled;
        } else if n.attempts < max_attempts(step.step) && !permanent {
            n.phase = Phase::Pending;
            n.retry_at = Some(now + backoff_ms(step.step, n.attempts));
        } else {
            n.phase = Phase::Failed;
            n.retry_at = None;
            if permanent && n.attempts < max_attempts(step.step) {
                n.message = Some(format!(
                    "{message} (exit code {} is permanent: not retried)",
                    exit_code.unwrap_or_default()
                ));
            }
        }
        n.phase
    }

    /// Sets how many attempts a node has used (a cache hit or a wait is not an attempt).
    pub fn set_attempts(&mut self, node: &str, attempts: u32) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.attempts = attempts;
        }
    }

    /// The node waits until `until` without using an attempt (another run is computing the
    /// same key).
    pub fn wait(&mut self, node: &str, attempts: u32, until: Millis, why: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.phase = Phase::Pending;
            n.attempts = attempts;
            n.retry_at = Some(until);
            n.message = Some(why.to_string());
        }
    }

    /// The node starts over at once as a new attempt (its last one was lost, not failed).
    pub fn restart(&mut self, node: &str, why: &str) {
        if let Some(n) = self.nodes.get_mut(node) {
            n.phase = Phase::Pending;
            n.retry_at = None;
            n.message = Some(why.to_string());
        }
    }

    pub fn record_cancelled(&mut self, node: &str, why: &str) {
        self.set_terminal(node, Phase::Cancelled, why);
    }

    pub fn record_skipped(&mut self, node: &str, why: &str) {
        self.set_terminal(node, Phase::Skipped, why);
    }

    /// `failed: a, b` naming the failed nodes, or None when none failed. Bounded: at most
    /// [`SUMMARY_NAMES`] names, then `and N more`, so a large fan-out cannot grow a status.
    pub fn failure_summary(&self) -> Option<String> {
        let failed: Vec<&str> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.phase == Phase::Failed)
            .map(|(name, _)| name.as_str())
            .collect();
        if failed.is_empty() {
            return None;
        }
        let shown: Vec<String> = failed
            .iter()
            .take(SUMMARY_NAMES)
            .map(|name| bounded(name, SUMMARY_NAME_CHARS))
            .collect();
        let mut text = format!("failed: {}", shown.join(", "));
        if failed.len() > shown.len() {
            text.push_str(&format!(" and {} more", failed.len() - shown.len()));
        }
        Some(text)
    }

    /// Records that the user cancelled the run (running nodes are stopped by the shell and
    /// reported through `record_failure`, which then marks them cancelled).
    pub fn cancel(&mut self) {
        self.cancelled = true;
    }
}

fn all_children_succeeded(state: &RunState, step: &str) -> bool {
    state
        .children(step)
        .iter()
        .all(|(_, n)| n.phase == Phase::Succeeded)
}
