//! What a run looks like from outside: the store row of each node, the counts a status
//! shows, and when a node became ready (for start-latency metrics).

use super::Run;
use crate::api::StepCounts;
use crate::engine::{NodeState, step_of};
use crate::records::{Millis, Phase, StepRecord};

impl Run {
    /// The store row of `node` as the run has it now; `now` is its finish time if it ended
    /// without one recorded.
    pub fn step_row(&self, node: &str, now: Millis) -> StepRecord {
        let n = self
            .state
            .node(node)
            .cloned()
            .unwrap_or_else(NodeState::pending);
        let (cache_key, cache_components) = match self.keys.get(node) {
            Some((k, c)) => (Some(k.clone()), Some(c.clone())),
            None => (None, None),
        };
        StepRecord {
            run_id: self.id.clone(),
            name: node.to_string(),
            phase: n.phase,
            cache_key,
            cache_components,
            cached: n.cached,
            attempts: n.attempts,
            started_at: self.started.get(node).copied(),
            finished_at: n
                .phase
                .is_terminal()
                .then(|| self.finished.get(node).copied().unwrap_or(now)),
            outputs: n.outputs,
            message: n.message,
        }
    }

    /// How many of the run's steps are in each phase (a fan-out counts once, as its step).
    pub fn step_counts(&self) -> StepCounts {
        let mut c = StepCounts::default();
        for sp in self.plan.steps() {
            let Some(node) = self.state.node(&sp.step.name) else {
                continue;
            };
            c.total += 1;
            match node.phase {
                Phase::Pending => c.pending += 1,
                Phase::Running => c.running += 1,
                Phase::Succeeded => {
                    c.succeeded += 1;
                    if node.cached {
                        c.cached += 1;
                    }
                }
                Phase::Failed => c.failed += 1,
                Phase::Skipped | Phase::Cancelled => c.skipped += 1,
            }
        }
        c
    }

    /// When `node` became ready to start: its last dependency's end, its retry time, or the
    /// run's start.
    pub fn ready_at(&self, node: &str) -> Millis {
        let deps = self
            .plan
            .step(step_of(node))
            .and_then(|sp| sp.deps.iter().filter_map(|d| self.finished.get(d)).max())
            .copied();
        let retry = self.state.node(node).and_then(|n| n.retry_at);
        deps.into_iter()
            .chain(retry)
            .max()
            .unwrap_or(self.created_at)
    }

    /// When the run ended: its last node's end.
    pub fn finished_at(&self) -> Option<Millis> {
        self.state.finished.map(|_| {
            self.finished
                .values()
                .copied()
                .max()
                .unwrap_or(self.created_at)
        })
    }
}
