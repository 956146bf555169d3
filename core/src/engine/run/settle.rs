//! Applying [`decide`]'s actions until only starts and waits remain.

use super::{Effect, InFlight, Out, Run, RunEvent, Stage};
use crate::engine::{Action, Invocation, child_name, decide};
use crate::records::{Millis, RunPhase};

impl Run {
    pub(super) fn settle(&mut self, now: Millis, out: &mut Out) {
        loop {
            let free = self.parallelism.saturating_sub(self.in_flight.len());
            let actions = decide(&self.plan, &self.state, now, free);
            let mut changed = false;
            for action in actions {
                if let Action::WakeAt(at) = action {
                    out.wake_at(at);
                    continue;
                }
                if let Action::Start(inv) = &action
                    && self.twin_in_flight(inv)
                {
                    // Single-flight: an identical node is computing this key; once it is
                    // recorded, this one is served from the cache.
                    continue;
                }
                self.state.apply(&action);
                changed = true;
                self.record(action, now, out);
            }
            if !changed || self.state.finished.is_some() {
                break;
            }
        }
    }

    /// Whether another node of this run with the same cache key is in flight.
    fn twin_in_flight(&self, inv: &Invocation) -> bool {
        if !inv.cache.enabled {
            return false;
        }
        let key = inv.key.key().0;
        self.in_flight
            .iter()
            .any(|(node, f)| *node != inv.node && f.key == key)
    }

    /// The rows, events and effects of one applied action.
    fn record(&mut self, action: Action, now: Millis, out: &mut Out) {
        match action {
            Action::Start(inv) => self.start_attempt(inv, now, out),
            Action::FanOut { step, items } => {
                self.started.entry(step.clone()).or_insert(now);
                out.touched.insert(step.clone());
                out.touched
                    .extend((0..items.len()).map(|i| child_name(&step, i)));
                out.notify(RunEvent::FannedOut {
                    step,
                    count: items.len(),
                });
            }
            Action::Skip { node, reason } => {
                self.finished.entry(node.clone()).or_insert(now);
                out.touched.insert(node.clone());
                out.notify(RunEvent::StepSkipped { node, reason });
            }
            Action::Fail { node, reason } => {
                self.finished.entry(node.clone()).or_insert(now);
                out.touched.insert(node.clone());
                out.notify(RunEvent::StepFailed {
                    node,
                    message: reason,
                    log: None,
                });
            }
            Action::Cancel { node } => {
                self.finished.entry(node.clone()).or_insert(now);
                out.touched.insert(node.clone());
                out.notify(RunEvent::StepCancelled { node });
            }
            Action::CompleteFanOut { step, .. } => {
                self.finished.entry(step.clone()).or_insert(now);
                out.touched.insert(step);
            }
            Action::Finish { phase } => {
                let message = self.state.failure_summary();
                out.changes.phase = Some(RunPhase {
                    run_id: self.id.clone(),
                    phase,
                    message: message.clone(),
                    finished_at: Some(now),
                });
                out.notify(RunEvent::RunFinished { phase, message });
            }
            Action::WakeAt(at) => out.wake_at(at),
        }
    }

    fn start_attempt(&mut self, inv: Box<Invocation>, now: Millis, out: &mut Out) {
        let key = inv.key.key().0;
        // Strings and string-keyed maps: serializing them cannot fail.
        let components = serde_json::to_value(&inv.key).unwrap_or(serde_json::Value::Null);
        self.keys
            .insert(inv.node.clone(), (key.clone(), components));
        self.started.entry(inv.node.clone()).or_insert(now);
        out.touched.insert(inv.node.clone());
        let checks_cache = inv.cache.enabled;
        let flight = InFlight {
            attempt: inv.attempt,
            stage: if checks_cache {
                Stage::CheckingCache(inv.clone())
            } else {
                Stage::Launching(inv.clone())
            },
            started_at: now,
            key: key.clone(),
            cache_writable: inv.cache_writable,
            claimed: false,
            log: None,
        };
        let node = inv.node.clone();
        let effect = if checks_cache {
            Effect::CheckCache {
                claim: inv.cache_writable.then(|| self.claim(&node, &key)),
                invocation: inv,
            }
        } else {
            Effect::Launch(inv)
        };
        self.in_flight.insert(node, flight);
        out.effects.push(effect);
    }
}
