//! `decide`: from a plan and the observed state to the next actions.

use std::collections::BTreeMap;

use serde_json::Value;

use super::child_name;
use super::invocation::{Invocation, Resolver, build};
use super::plan::{RunPlan, StepPlan};
use super::state::{NodeState, RunState};
use super::values::list_items;
use crate::expr::Condition;
use crate::records::{Millis, Phase, StepOutputs};
use crate::template::{Reference, Template};

/// What the shell should do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Serve the node from the cache or run it.
    Start(Box<Invocation>),
    Skip {
        node: String,
        reason: String,
    },
    Fail {
        node: String,
        reason: String,
    },
    Cancel {
        node: String,
    },
    /// Create the children of a `forEach` step.
    FanOut {
        step: String,
        items: Vec<Value>,
    },
    /// Every child of a fan-out is done: the step takes this phase and the collected outputs.
    CompleteFanOut {
        step: String,
        phase: Phase,
        outputs: StepOutputs,
        cached: bool,
    },
    /// Nothing can start before this time (a retry is waiting for its backoff).
    WakeAt(Millis),
    /// Every node is done.
    Finish {
        phase: Phase,
    },
}

/// The next actions for a run, given `free_slots` processes that may start now.
///
/// Starts come in declaration order (main steps before `finally` steps, fan-out children by
/// index), never before every dependency succeeded. State-changing actions other than starts
/// may enable more actions: the shell applies them and calls `decide` again until it returns
/// only starts and waits.
pub fn decide(plan: &RunPlan, state: &RunState, now: Millis, free_slots: usize) -> Vec<Action> {
    if state.finished.is_some() {
        return Vec::new();
    }
    let mut actions = Vec::new();
    if state.cancelled {
        let mut running = false;
        for (name, node) in &state.nodes {
            match node.phase {
                Phase::Running if node.items.is_none() => running = true,
                p if p.is_terminal() => {}
                _ => actions.push(Action::Cancel { node: name.clone() }),
            }
        }
        if !running {
            actions.push(Action::Finish {
                phase: Phase::Cancelled,
            });
        }
        return actions;
    }

    let mut slots = free_slots;
    let mut wake: Option<Millis> = None;
    let main_done = plan
        .main_step_names()
        .all(|n| state.nodes.get(n).is_some_and(|s| s.phase.is_terminal()));

    for sp in plan.steps() {
        let name = sp.step.name.as_str();
        let Some(node) = state.nodes.get(name) else {
            continue;
        };
        match node.phase {
            Phase::Running if node.items.is_some() => {
                fan_out_children(
                    plan,
                    state,
                    &sp,
                    node,
                    now,
                    &mut slots,
                    &mut wake,
                    &mut actions,
                );
            }
            Phase::Pending => {
                pending_step(
                    plan,
                    state,
                    &sp,
                    node,
                    main_done,
                    now,
                    &mut slots,
                    &mut wake,
                    &mut actions,
                );
            }
            _ => {}
        }
    }

    if actions.is_empty() {
        if let Some(at) = wake {
            actions.push(Action::WakeAt(at));
        } else if state.nodes.values().all(|n| n.phase.is_terminal()) {
            let failed = state.nodes.values().any(|n| n.phase == Phase::Failed);
            let phase = if failed {
                Phase::Failed
            } else {
                Phase::Succeeded
            };
            actions.push(Action::Finish { phase });
        }
    } else if let Some(at) = wake {
        actions.push(Action::WakeAt(at));
    }
    actions
}

#[allow(clippy::too_many_arguments)]
fn pending_step(
    plan: &RunPlan,
    state: &RunState,
    sp: &StepPlan<'_>,
    node: &NodeState,
    main_done: bool,
    now: Millis,
    slots: &mut usize,
    wake: &mut Option<Millis>,
    actions: &mut Vec<Action>,
) {
    let name = sp.step.name.as_str();
    if sp.is_finally && !main_done {
        return;
    }
    for dep in sp.deps {
        let Some(d) = state.nodes.get(dep) else {
            actions.push(Action::Fail {
                node: name.into(),
                reason: format!("unknown step {dep:?}"),
            });
            return;
        };
        if !d.phase.is_terminal() {
            return;
        }
        if d.phase != Phase::Succeeded {
            let reason = format!("upstream step {dep} {}", d.phase.as_str().to_lowercase());
            actions.push(Action::Skip {
                node: name.into(),
                reason,
            });
            return;
        }
    }
    let resolver = Resolver {
        plan,
        state,
        step: sp.step,
        item: None,
    };
    if let Some(when) = &sp.step.when
        && !mentions_item(when)
    {
        match evaluate_when(when, &resolver) {
            Ok(true) => {}
            Ok(false) => {
                let reason = format!(
                    "when condition is false: {}",
                    render_for_message(when, &resolver)
                );
                actions.push(Action::Skip {
                    node: name.into(),
                    reason,
                });
                return;
            }
            Err(reason) => {
                actions.push(Action::Fail {
                    node: name.into(),
                    reason,
                });
                return;
            }
        }
    }
    if let Some(for_each) = &sp.step.for_each {
        match for_each_items(for_each, &resolver) {
            Ok(items) => actions.push(Action::FanOut {
                step: name.into(),
                items,
            }),
            Err(reason) => actions.push(Action::Fail {
                node: name.into(),
                reason,
            }),
        }
        return;
    }
    start_node(plan, state, name, node, sp, None, now, slots, wake, actions);
}

#[allow(clippy::too_many_arguments)]
fn fan_out_children(
    plan: &RunPlan,
    state: &RunState,
    sp: &StepPlan<'_>,
    parent: &NodeState,
    now: Millis,
    slots: &mut usize,
    wake: &mut Option<Millis>,
    actions: &mut Vec<Action>,
) {
    let name = sp.step.name.as_str();
    let items = parent.items.as_deref().unwrap_or_default();
    let mut all_done = true;
    for (i, item) in items.iter().enumerate() {
        let child = child_name(name, i);
        let Some(node) = state.nodes.get(&child) else {
            all_done = false;
            continue;
        };
        if node.phase.is_terminal() {
            continue;
        }
        all_done = false;
        if node.phase != Phase::Pending {
            continue;
        }
        if let Some(when) = &sp.step.when
            && mentions_item(when)
        {
            let resolver = Resolver {
                plan,
                state,
                step: sp.step,
                item: Some((i, item)),
            };
            match evaluate_when(when, &resolver) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!(
                        "when condition is false: {}",
                        render_for_message(when, &resolver)
                    );
                    actions.push(Action::Skip {
                        node: child,
                        reason,
                    });
                    continue;
                }
                Err(reason) => {
                    actions.push(Action::Fail {
                        node: child,
                        reason,
                    });
                    continue;
                }
            }
        }
        start_node(
            plan,
            state,
            &child,
            node,
            sp,
            Some((i, item)),
            now,
            slots,
            wake,
            actions,
        );
    }
    if all_done {
        actions.push(complete_fan_out(state, sp, items.len()));
    }
}

#[allow(clippy::too_many_arguments)]
fn start_node(
    plan: &RunPlan,
    state: &RunState,
    node_name: &str,
    node: &NodeState,
    sp: &StepPlan<'_>,
    item: Option<(usize, &Value)>,
    now: Millis,
    slots: &mut usize,
    wake: &mut Option<Millis>,
    actions: &mut Vec<Action>,
) {
    if let Some(at) = node.retry_at
        && at > now
    {
        *wake = Some(wake.map_or(at, |w| w.min(at)));
        return;
    }
    if *slots == 0 {
        return;
    }
    match build(plan, state, node_name, sp.step, item, node.attempts + 1) {
        Ok(inv) => {
            *slots -= 1;
            actions.push(Action::Start(Box::new(inv)));
        }
        Err(reason) => actions.push(Action::Fail {
            node: node_name.into(),
            reason,
        }),
    }
}

fn complete_fan_out(state: &RunState, sp: &StepPlan<'_>, count: usize) -> Action {
    let name = sp.step.name.as_str();
    let children = state.children(name);
    let phases: Vec<Phase> = children.iter().map(|(_, n)| n.phase).collect();
    let phase = if phases.contains(&Phase::Failed) {
        Phase::Failed
    } else if phases.contains(&Phase::Cancelled) {
        Phase::Cancelled
    } else if count > 0 && phases.iter().all(|p| *p == Phase::Skipped) {
        Phase::Skipped
    } else {
        Phase::Succeeded
    };
    let mut params: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in sp.step.outputs.iter().flat_map(|o| &o.params) {
        let values = children
            .iter()
            .filter(|(_, n)| n.phase == Phase::Succeeded)
            .filter_map(|(_, n)| n.outputs.params.get(&p.name))
            .map(|v| Value::String(v.clone()))
            .collect();
        params.insert(p.name.clone(), values);
    }
    let outputs = StepOutputs {
        params: params
            .into_iter()
            .map(|(k, v)| (k, Value::Array(v).to_string()))
            .collect(),
        artifacts: BTreeMap::new(),
    };
    let cached = !children.is_empty()
        && children
            .iter()
            .all(|(_, n)| n.cached || n.phase == Phase::Skipped)
        && children.iter().any(|(_, n)| n.cached);
    Action::CompleteFanOut {
        step: name.into(),
        phase,
        outputs,
        cached,
    }
}

fn mentions_item(text: &str) -> bool {
    Template::parse(text)
        .map(|t| {
            t.references()
                .any(|r| matches!(r, Reference::Item | Reference::Index))
        })
        .unwrap_or(false)
}

fn evaluate_when(when: &str, resolver: &Resolver<'_>) -> Result<bool, String> {
    let condition = Condition::parse(when).map_err(|e| format!("when {when:?}: {e}"))?;
    condition
        .evaluate(|r| resolver.value(r))
        .map_err(|e| format!("when {when:?}: {e}"))
}

fn render_for_message(text: &str, resolver: &Resolver<'_>) -> String {
    match Template::parse(text) {
        Ok(t) => t.render(|r| resolver.value(r)),
        Err(_) => text.to_string(),
    }
}

fn for_each_items(source: &str, resolver: &Resolver<'_>) -> Result<Vec<Value>, String> {
    let template = Template::parse(source).map_err(|e| format!("forEach {source:?}: {e}"))?;
    let value = match template.as_single_reference() {
        Some(Reference::Param(n)) => resolver
            .plan
            .params
            .get(n)
            .cloned()
            .ok_or_else(|| format!("forEach: parameter {n:?} has no value"))?,
        Some(r) => Value::String(
            resolver
                .value(r)
                .ok_or_else(|| format!("forEach: {r} has no value"))?,
        ),
        None => Value::String(template.render(|r| resolver.value(r))),
    };
    list_items(&value).map_err(|e| format!("forEach {source:?}: {e}"))
}
