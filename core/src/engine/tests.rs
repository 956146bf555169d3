//! Engine tests: table-driven cases and property tests over random DAGs.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::api::{
    Backoff, OutputParam, Outputs, ParamSpec, ParamType, PipelineSpec, RetryPolicy, Step,
};
use crate::records::{Phase, StepOutputs};

pub(crate) fn step(name: &str, deps: &[&str], refs: &[&str]) -> Step {
    let mut command = vec!["run".to_string(), name.to_string()];
    command.extend(
        refs.iter()
            .map(|r| format!("{{{{steps.{r}.outputs.params.out}}}}")),
    );
    Step {
        name: name.into(),
        image: "img".into(),
        command,
        depends_on: deps.iter().map(|s| s.to_string()).collect(),
        outputs: Some(Outputs {
            params: vec![OutputParam {
                name: "out".into(),
                kind: None,
            }],
            artifacts: vec![],
        }),
        ..Step::default()
    }
}

pub(crate) fn plan(steps: Vec<Step>, finally: Vec<Step>, params: Vec<ParamSpec>) -> RunPlan {
    let values = params
        .iter()
        .filter_map(|p| p.default.clone().map(|d| (p.name.clone(), d)))
        .collect();
    RunPlan::new(
        "p",
        PipelineSpec {
            params,
            steps,
            finally,
            schedule: None,
            concurrency: None,
            history_limit: None,
            cache: None,
        },
        values,
    )
}

/// What a simulated step outputs: a function of its cache key, so outputs carry their whole
/// upstream history.
pub(crate) fn simulated_outputs(inv: &Invocation) -> StepOutputs {
    let mut o = StepOutputs::default();
    o.params
        .insert("out".into(), inv.key.key().0[..16].to_string());
    o
}

/// Drives a plan to the end (or until `stop_after` completions), completing running nodes in
/// the order `picks` chooses. `fails` says which nodes fail on which attempts. Asserts that
/// nothing starts before its dependencies succeeded.
struct Sim<'a> {
    plan: &'a RunPlan,
    slots: usize,
    fails: BTreeSet<(String, u32)>,
    started: Vec<String>,
    now: i64,
}

impl Sim<'_> {
    fn drive(
        &mut self,
        state: &mut RunState,
        picks: &[usize],
        stop_after: Option<usize>,
    ) -> Option<Phase> {
        let mut running: Vec<Box<Invocation>> = Vec::new();
        let mut completions = 0;
        let mut pick = picks.iter().cycle();
        for _ in 0..10_000 {
            let mut wake = None;
            loop {
                let actions = decide(
                    self.plan,
                    state,
                    self.now,
                    self.slots.saturating_sub(running.len()),
                );
                let mut changed = false;
                for a in &actions {
                    match a {
                        Action::Finish { phase } => {
                            state.apply(a);
                            assert!(running.is_empty());
                            return Some(*phase);
                        }
                        Action::WakeAt(t) => wake = Some(*t),
                        Action::Start(inv) => {
                            self.check_deps_succeeded(state, &inv.node);
                            self.started.push(inv.node.clone());
                            state.apply(a);
                            running.push(inv.clone());
                            changed = true;
                        }
                        _ => {
                            state.apply(a);
                            changed = true;
                        }
                    }
                }
                if !changed {
                    break;
                }
            }
            if stop_after.is_some_and(|n| completions >= n) {
                return None;
            }
            if running.is_empty() {
                match wake {
                    Some(t) => {
                        self.now = t;
                        continue;
                    }
                    None => panic!("stuck: nothing running, nothing to wake for: {state:#?}"),
                }
            }
            let i = pick.next().copied().unwrap_or(0) % running.len();
            let inv = running.remove(i);
            self.now += 10;
            if self.fails.contains(&(inv.node.clone(), inv.attempt)) {
                state.record_failure(self.plan, &inv.node, self.now, "boom", Some(1));
            } else {
                state.record_success(&inv.node, simulated_outputs(&inv), false);
            }
            completions += 1;
        }
        panic!("did not finish");
    }

    /// Cancels with nodes running: they are reported as failed after the stop.
    fn cancel(&mut self, state: &mut RunState) -> Phase {
        state.cancel();
        let running: Vec<String> = state
            .nodes
            .iter()
            .filter(|(_, n)| n.phase == Phase::Running && n.items.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        for node in running {
            state.record_failure(self.plan, &node, self.now, "cancelled", None);
        }
        for a in decide(self.plan, state, self.now, 0) {
            state.apply(&a);
        }
        state.finished.expect("a cancelled run finishes")
    }

    fn check_deps_succeeded(&self, state: &RunState, node: &str) {
        let sp = self.plan.step(step_of(node)).expect("known step");
        for dep in sp.deps {
            assert_eq!(
                state.nodes[dep].phase,
                Phase::Succeeded,
                "{node} started before {dep} succeeded"
            );
        }
        if sp.is_finally {
            for m in self.plan.main_step_names() {
                assert!(
                    state.nodes[m].phase.is_terminal(),
                    "finally {node} started before {m} ended"
                );
            }
        }
    }
}

fn outputs_of(state: &RunState) -> BTreeMap<String, (Phase, StepOutputs)> {
    state
        .nodes
        .iter()
        .map(|(k, n)| (k.clone(), (n.phase, n.outputs.clone())))
        .collect()
}

/// A random DAG: step i may depend on any earlier step, by reference or by `dependsOn`; some
/// steps fan out over a literal list.
pub(crate) fn arb_plan() -> impl Strategy<Value = RunPlan> {
    (1usize..10).prop_flat_map(|n| {
        let deps = proptest::collection::vec(
            proptest::collection::vec((any::<bool>(), any::<bool>()), n),
            n,
        );
        let fans = proptest::collection::vec(0usize..4, n);
        (Just(n), deps, fans).prop_map(|(n, deps, fans)| {
            let mut steps = Vec::new();
            for i in 0..n {
                let name = format!("s{i}");
                let mut by_ref = Vec::new();
                let mut by_dep = Vec::new();
                for (j, (on, as_ref)) in deps[i].iter().enumerate().take(i) {
                    if *on {
                        if *as_ref {
                            by_ref.push(format!("s{j}"))
                        } else {
                            by_dep.push(format!("s{j}"))
                        }
                    }
                }
                let by_ref: Vec<&str> = by_ref.iter().map(String::as_str).collect();
                let by_dep: Vec<&str> = by_dep.iter().map(String::as_str).collect();
                let mut s = step(&name, &by_dep, &by_ref);
                if fans[i] > 0 {
                    let items: Vec<usize> = (0..fans[i]).collect();
                    s.for_each = Some(serde_json::to_string(&items).unwrap());
                    s.command.push("{{item}}".into());
                }
                steps.push(s);
            }
            plan(steps, vec![step("cleanup", &[], &[])], vec![])
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn never_starts_a_step_before_its_dependencies(plan in arb_plan(), slots in 1usize..5, picks in proptest::collection::vec(0usize..8, 1..20)) {
        let mut sim = Sim { plan: &plan, slots, fails: BTreeSet::new(), started: vec![], now: 0 };
        let mut state = RunState::new(&plan);
        let phase = sim.drive(&mut state, &picks, None);
        prop_assert_eq!(phase, Some(Phase::Succeeded));
        let unique: BTreeSet<&String> = sim.started.iter().collect();
        prop_assert_eq!(unique.len(), sim.started.len(), "a node started twice");
        prop_assert!(state.nodes.values().all(|n| n.phase == Phase::Succeeded));
    }

    #[test]
    fn cancel_and_resume_reach_the_same_outputs(
        plan in arb_plan(),
        slots in 1usize..5,
        picks in proptest::collection::vec(0usize..8, 1..20),
        stop_after in 0usize..12,
    ) {
        let mut straight = RunState::new(&plan);
        let mut sim = Sim { plan: &plan, slots, fails: BTreeSet::new(), started: vec![], now: 0 };
        prop_assert_eq!(sim.drive(&mut straight, &picks, None), Some(Phase::Succeeded));

        let mut interrupted = RunState::new(&plan);
        let mut sim = Sim { plan: &plan, slots, fails: BTreeSet::new(), started: vec![], now: 0 };
        if sim.drive(&mut interrupted, &picks, Some(stop_after)).is_none() {
            prop_assert_eq!(sim.cancel(&mut interrupted), Phase::Cancelled);
            let before = sim.started.len();
            let mut resumed = RunState::resume(&plan, &interrupted);
            prop_assert_eq!(sim.drive(&mut resumed, &picks, None), Some(Phase::Succeeded));
            // Nodes that had succeeded before the cancel are not run again.
            let rerun: BTreeSet<&String> = sim.started[before..].iter().collect();
            for (name, node) in &interrupted.nodes {
                if node.phase == Phase::Succeeded && node.items.is_none() {
                    prop_assert!(!rerun.contains(name), "{} ran again after resume", name);
                }
            }
            interrupted = resumed;
        }
        prop_assert_eq!(outputs_of(&interrupted), outputs_of(&straight));
    }
}

#[test]
fn retries_with_exponential_backoff_then_succeeds() {
    let mut s = step("flaky", &[], &[]);
    s.retry = Some(RetryPolicy {
        limit: 2,
        backoff: Some(Backoff {
            initial: Some("5s".parse().unwrap()),
            factor: Some(3.0),
            max: None,
        }),
        permanent_exit_codes: None,
    });
    let plan = plan(vec![s], vec![], vec![]);
    let fails = BTreeSet::from([("flaky".to_string(), 1), ("flaky".to_string(), 2)]);
    let mut sim = Sim {
        plan: &plan,
        slots: 1,
        fails,
        started: vec![],
        now: 0,
    };
    let mut state = RunState::new(&plan);
    assert_eq!(sim.drive(&mut state, &[0], None), Some(Phase::Succeeded));
    assert_eq!(state.nodes["flaky"].attempts, 3);
    // Two failures 10ms after each start; waits of 5s then 15s.
    assert_eq!(sim.now, 10 + 5_000 + 10 + 15_000 + 10);
}

#[test]
fn failure_skips_dependents_and_still_runs_finally() {
    let plan = plan(
        vec![
            step("a", &[], &[]),
            step("b", &[], &["a"]),
            step("c", &[], &[]),
        ],
        vec![step("report", &[], &[])],
        vec![],
    );
    let fails = BTreeSet::from([("a".to_string(), 1)]);
    let mut sim = Sim {
        plan: &plan,
        slots: 4,
        fails,
        started: vec![],
        now: 0,
    };
    let mut state = RunState::new(&plan);
    assert_eq!(sim.drive(&mut state, &[0], None), Some(Phase::Failed));
    assert_eq!(state.nodes["a"].phase, Phase::Failed);
    assert_eq!(state.nodes["b"].phase, Phase::Skipped);
    assert_eq!(state.nodes["c"].phase, Phase::Succeeded);
    assert_eq!(state.nodes["report"].phase, Phase::Succeeded);
    assert_eq!(sim.started.last().map(String::as_str), Some("report"));
}

#[test]
fn when_gates_on_upstream_outputs_and_params() {
    let mut gate = step("export", &[], &[]);
    gate.when = Some("{{steps.train.outputs.params.out}} >= {{params.min}}".into());
    let params = vec![ParamSpec {
        name: "min".into(),
        kind: ParamType::Float,
        default: Some(json!(0.5)),
        description: None,
        ..Default::default()
    }];
    let plan = plan(vec![step("train", &[], &[]), gate], vec![], params);
    let mut state = RunState::new(&plan);
    state.apply(&Action::Start(Box::new(
        invocation::build(&plan, &state, "train", &plan.spec.steps[0], None, 1).unwrap(),
    )));
    let mut o = StepOutputs::default();
    o.params.insert("out".into(), "0.4".into());
    state.record_success("train", o, false);
    let actions = decide(&plan, &state, 0, 4);
    assert!(
        matches!(&actions[0], Action::Skip { node, reason } if node == "export" && reason.contains("0.4 >= 0.5")),
        "{actions:?}"
    );

    let mut state = RunState::new(&plan);
    let mut o = StepOutputs::default();
    o.params.insert("out".into(), "0.9".into());
    state.record_success("train", o, false);
    let actions = decide(&plan, &state, 0, 4);
    assert!(
        matches!(&actions[0], Action::Start(inv) if inv.node == "export"),
        "{actions:?}"
    );
}

#[test]
fn fan_out_and_fan_in() {
    let mut fan = step("shard", &[], &[]);
    fan.for_each = Some("{{params.items}}".into());
    fan.command.push("{{item}}".into());
    let sink = step("sink", &[], &["shard"]);
    let params = vec![ParamSpec {
        name: "items".into(),
        kind: ParamType::List,
        default: Some(json!(["a", "b", "c"])),
        description: None,
        ..Default::default()
    }];
    let plan = plan(vec![fan, sink], vec![], params);
    let mut sim = Sim {
        plan: &plan,
        slots: 2,
        fails: BTreeSet::new(),
        started: vec![],
        now: 0,
    };
    let mut state = RunState::new(&plan);
    assert_eq!(sim.drive(&mut state, &[1, 0], None), Some(Phase::Succeeded));
    assert_eq!(state.children("shard").len(), 3);
    let fan_in: Vec<String> =
        serde_json::from_str(&state.nodes["shard"].outputs.params["out"]).unwrap();
    let children: Vec<String> = (0..3)
        .map(|i| state.nodes[&child_name("shard", i)].outputs.params["out"].clone())
        .collect();
    assert_eq!(fan_in, children);
    // Children differ by item, so their keys (and simulated outputs) differ.
    assert_eq!(children.iter().collect::<BTreeSet<_>>().len(), 3);
    assert!(
        sim.started.iter().position(|s| s == "sink")
            > sim.started.iter().position(|s| s == "shard[2]")
    );
}

#[test]
fn parallelism_limits_starts() {
    let plan = plan(
        (0..6).map(|i| step(&format!("s{i}"), &[], &[])).collect(),
        vec![],
        vec![],
    );
    let state = RunState::new(&plan);
    let starts = decide(&plan, &state, 0, 2)
        .into_iter()
        .filter(|a| matches!(a, Action::Start(_)))
        .count();
    assert_eq!(starts, 2);
    assert!(decide(&plan, &state, 0, 0).is_empty());
}

#[test]
fn cache_key_ignores_paths_and_follows_values() {
    let mut s = step("train", &[], &[]);
    s.command.push("--out={{outputs.artifacts.model}}".into());
    s.command.push("--epochs={{params.epochs}}".into());
    s.outputs
        .as_mut()
        .unwrap()
        .artifacts
        .push(crate::api::OutputArtifact {
            name: "model".into(),
        });
    let params = vec![ParamSpec {
        name: "epochs".into(),
        kind: ParamType::Int,
        default: Some(json!(3)),
        description: None,
        ..Default::default()
    }];
    let mut p = plan(vec![s], vec![], params);
    let state = RunState::new(&p);
    let inv = invocation::build(&p, &state, "train", &p.spec.steps[0], None, 1).unwrap();
    assert_eq!(inv.argv[2], "--out={{outputs.artifacts.model}}");
    assert_eq!(inv.argv[3], "--epochs=3");
    assert_eq!(inv.key.values["params.epochs"], "3");
    let k3 = inv.key.key();
    p.params.insert("epochs".into(), json!(4));
    let inv4 = invocation::build(&p, &state, "train", &p.spec.steps[0], None, 1).unwrap();
    assert_ne!(inv4.key.key(), k3);
    assert_eq!(
        inv4.key.command, inv.key.command,
        "the key holds the command as written"
    );
}

#[test]
fn invocation_values_keep_their_types() {
    let mut s = step("train", &[], &[]);
    s.command = vec!["train".into(), "--epochs={{params.epochs}}".into()];
    s.env.push(crate::api::EnvVar {
        name: "LR".into(),
        value: "{{inputs.params.lr}}".into(),
    });
    s.inputs = Some(crate::api::Inputs {
        params: vec![
            crate::api::InputParam {
                name: "lr".into(),
                value: "{{params.lr}}".into(),
            },
            crate::api::InputParam {
                name: "tag".into(),
                value: "e{{params.epochs}}".into(),
            },
        ],
        artifacts: vec![],
    });
    let param = |name: &str, kind, default| ParamSpec {
        name: name.into(),
        kind,
        default: Some(default),
        ..Default::default()
    };
    let p = plan(
        vec![s],
        vec![],
        vec![
            param("epochs", ParamType::Int, json!(3)),
            param("lr", ParamType::Float, json!(0.5)),
        ],
    );
    let state = RunState::new(&p);
    let inv = invocation::build(&p, &state, "train", &p.spec.steps[0], None, 1).unwrap();
    assert_eq!(inv.argv[1], "--epochs=3");
    assert_eq!(inv.env["LR"], "0.5");
    assert_eq!(
        inv.values,
        BTreeMap::from([
            ("params.epochs".to_string(), json!(3)),
            ("params.lr".to_string(), json!(0.5)),
            ("inputs.params.lr".to_string(), json!(0.5)),
            ("inputs.params.tag".to_string(), json!("e3")),
        ])
    );
    assert_eq!(
        inv.key.values["inputs.params.lr"], "0.5",
        "the cache key keeps the rendered text"
    );

    let item = json!({"size": 224, "name": "a"});
    let mut child = step("resize", &[], &[]);
    child.command = vec!["resize".into(), "{{item}}".into(), "{{index}}".into()];
    let p = plan(vec![child], vec![], vec![]);
    let state = RunState::new(&p);
    let inv = invocation::build(
        &p,
        &state,
        "resize[1]",
        &p.spec.steps[0],
        Some((1, &item)),
        1,
    )
    .unwrap();
    assert_eq!(inv.argv[1], r#"{"name":"a","size":224}"#);
    assert_eq!(inv.values["item"], item);
    assert_eq!(inv.values["index"], json!(1));
}
