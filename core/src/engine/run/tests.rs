//! The run engine through a simulated shell: a cache and claim table in memory, attempts that
//! end as each test says, and every row written kept as a store would keep it.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use serde_json::json;

use crate::api::{ParamSpec, RetryPolicy};
use crate::engine::tests::{arb_plan, plan, simulated_outputs, step};
use crate::engine::{InputSource, Unstaged};
use crate::launch::LaunchReport;
use crate::records::{ArtifactRef, CacheEntry, StepOutputs};

/// A shell in memory: it carries effects out like both real shells do.
#[derive(Default)]
struct Shell {
    now: Millis,
    /// The store: rows by key, as upserts leave them.
    steps: BTreeMap<String, StepRecord>,
    attempts: BTreeMap<(String, u32), AttemptRecord>,
    cache: BTreeMap<String, CacheEntry>,
    claims: BTreeMap<String, String>,
    run_phase: Option<RunPhase>,
    writes: Vec<RunChanges>,
    events: Vec<RunEvent>,
    /// Attempts launched and not yet ended.
    running: Vec<Invocation>,
    stopped: Vec<(String, u32)>,
    renewed: usize,
    wake: Option<Millis>,
    /// The cache cannot be read.
    cache_down: bool,
    /// Keys another run is computing.
    busy: BTreeSet<String>,
}

impl Shell {
    /// Carries out effects; cache checks are answered at once, launches report `Launched`.
    fn carry_out(&mut self, effects: Vec<Effect>) -> Vec<Observation> {
        let mut observed = Vec::new();
        self.wake = None;
        for effect in effects {
            match effect {
                Effect::Write(changes) => {
                    for s in &changes.steps {
                        self.steps.insert(s.name.clone(), s.clone());
                    }
                    for a in &changes.attempts {
                        self.attempts.insert((a.step.clone(), a.attempt), a.clone());
                    }
                    for e in &changes.cache_entries {
                        self.cache.insert(e.key.clone(), e.clone());
                    }
                    if let Some(p) = &changes.phase {
                        self.run_phase = Some(p.clone());
                    }
                    self.writes.push(*changes);
                }
                Effect::Notify(e) => self.events.push(e),
                Effect::CheckCache { invocation, claim } => {
                    let key = invocation.key.key().0;
                    let result = if self.cache_down {
                        CacheCheck::Failed("connection refused".into())
                    } else if let Some(e) = self.cache.get(&key) {
                        CacheCheck::Hit(e.outputs.clone())
                    } else if self.busy.contains(&key) {
                        CacheCheck::Busy
                    } else {
                        if let Some(c) = claim {
                            self.claims.insert(c.key, c.owner);
                        }
                        CacheCheck::Miss
                    };
                    observed.push(Observation::CacheChecked {
                        node: invocation.node.clone(),
                        attempt: invocation.attempt,
                        result,
                    });
                }
                Effect::Launch(inv) => {
                    observed.push(Observation::Launched {
                        node: inv.node.clone(),
                        attempt: inv.attempt,
                        log: Some(format!("logs/{}/{}", inv.node, inv.attempt)),
                    });
                    self.running.push(*inv);
                }
                Effect::Stop { node, attempt } => self.stopped.push((node, attempt)),
                Effect::RenewClaims(c) => self.renewed += c.len(),
                Effect::ReleaseClaim(c) => {
                    if self.claims.get(&c.key) == Some(&c.owner) {
                        self.claims.remove(&c.key);
                    }
                }
                Effect::WakeAt(t) => self.wake = Some(t),
            }
        }
        observed
    }

    /// Advances until nothing more happens without an attempt ending or time passing.
    fn settle(&mut self, run: &mut Run, mut observed: Vec<Observation>) {
        for _ in 0..100 {
            let effects = run.advance(observed, self.now);
            observed = self.carry_out(effects);
            if observed.is_empty() {
                return;
            }
        }
        panic!("the engine kept asking for more");
    }

    fn end(&mut self, run: &mut Run, node: &str, report: LaunchReport) {
        let i = self
            .running
            .iter()
            .position(|inv| inv.node == node)
            .unwrap_or_else(|| panic!("{node} is not running: {:?}", self.running));
        let inv = self.running.remove(i);
        self.now += 10;
        let ended = Observation::Ended {
            node: inv.node.clone(),
            attempt: inv.attempt,
            report,
        };
        self.settle(run, vec![ended]);
    }

    fn succeed(&mut self, run: &mut Run, node: &str) {
        let inv = self
            .running
            .iter()
            .find(|inv| inv.node == node)
            .cloned()
            .unwrap_or_else(|| panic!("{node} is not running"));
        self.end(run, node, success(simulated_outputs(&inv)));
    }

    fn running_nodes(&self) -> Vec<&str> {
        self.running.iter().map(|i| i.node.as_str()).collect()
    }

    fn reasons(&self) -> Vec<&'static str> {
        self.events.iter().map(RunEvent::reason).collect()
    }
}

fn success(outputs: StepOutputs) -> LaunchReport {
    LaunchReport {
        succeeded: true,
        exit_code: Some(0),
        signal: None,
        outputs,
        error: None,
        duration_ms: 10,
    }
}

fn failure(code: i32) -> LaunchReport {
    LaunchReport {
        succeeded: false,
        exit_code: Some(code),
        signal: None,
        outputs: StepOutputs::default(),
        error: Some(format!("exit code {code}")),
        duration_ms: 10,
    }
}

fn started(plan: RunPlan, shell: &mut Shell) -> Run {
    let (mut run, effects) = Run::start("r1", plan, shell.now, 4).unwrap();
    let observed = shell.carry_out(effects);
    shell.settle(&mut run, observed);
    run
}

fn chain() -> RunPlan {
    plan(
        vec![step("a", &[], &[]), step("b", &[], &["a"])],
        vec![],
        vec![],
    )
}

#[test]
fn a_run_records_itself_runs_in_order_and_ends() {
    let mut shell = Shell::default();
    let mut run = started(chain(), &mut shell);
    assert!(shell.writes[0].created.is_some(), "the run row comes first");
    assert_eq!(shell.running_nodes(), ["a"]);
    shell.succeed(&mut run, "a");
    assert_eq!(shell.running_nodes(), ["b"]);
    shell.succeed(&mut run, "b");
    assert_eq!(run.finished(), Some(Phase::Succeeded));
    let phase = shell.run_phase.clone().unwrap();
    assert_eq!((phase.phase, phase.message), (Phase::Succeeded, None));
    for node in ["a", "b"] {
        let row = &shell.steps[node];
        assert_eq!(
            (row.phase, row.attempts, row.cached),
            (Phase::Succeeded, 1, false)
        );
        assert_eq!(
            shell.attempts[&(node.to_string(), 1)].phase,
            Phase::Succeeded
        );
        assert_eq!(
            shell.attempts[&(node.to_string(), 1)].log_ref.as_deref(),
            Some(format!("logs/{node}/1").as_str())
        );
    }
    assert_eq!(shell.cache.len(), 2, "both results are cached");
    assert_eq!(
        shell.reasons(),
        [
            "RunStarted",
            "StepStarted",
            "StepSucceeded",
            "StepStarted",
            "StepSucceeded",
            "RunSucceeded"
        ]
    );
}

#[test]
fn a_cache_hit_is_not_an_attempt() {
    let mut shell = Shell::default();
    let mut first = started(chain(), &mut shell);
    shell.succeed(&mut first, "a");
    shell.succeed(&mut first, "b");

    let mut again = Shell {
        cache: shell.cache.clone(),
        ..Shell::default()
    };
    let run = started(chain(), &mut again);
    assert_eq!(run.finished(), Some(Phase::Succeeded));
    assert!(again.running.is_empty(), "nothing ran");
    for node in ["a", "b"] {
        let row = &again.steps[node];
        assert_eq!(
            (row.phase, row.attempts, row.cached),
            (Phase::Succeeded, 0, true)
        );
    }
    assert!(again.attempts.is_empty(), "no attempt rows for hits");
    assert_eq!(run.step_counts().cached, 2);
}

#[test]
fn identical_steps_in_one_run_run_once() {
    // Same image, command and inputs: the same cache key.
    let twins = plan(
        vec![step("a", &[], &[]), step("a", &[], &[])],
        vec![],
        vec![],
    );
    let mut spec = twins.spec.clone();
    spec.steps[1].name = "b".into();
    spec.steps[1].command = spec.steps[0].command.clone();
    let twins = RunPlan::new("p", spec, BTreeMap::new());
    let mut shell = Shell::default();
    let mut run = started(twins, &mut shell);
    assert_eq!(shell.running_nodes(), ["a"], "the twin waits");
    shell.succeed(&mut run, "a");
    assert!(shell.running.is_empty());
    assert_eq!(run.finished(), Some(Phase::Succeeded));
    assert!(
        shell.steps["b"].cached,
        "the twin was served from the cache"
    );
}

#[test]
fn a_key_another_run_computes_waits_without_using_an_attempt() {
    let mut shell = Shell::default();
    let key = {
        let (mut probe, _) = Run::start("probe", chain(), 0, 4).unwrap();
        let effects = probe.advance(vec![], 0);
        match &effects
            .iter()
            .find(|e| matches!(e, Effect::CheckCache { .. }))
        {
            Some(Effect::CheckCache { invocation, .. }) => invocation.key.key().0,
            _ => panic!("no cache check: {effects:?}"),
        }
    };
    shell.busy.insert(key.clone());
    let mut run = started(chain(), &mut shell);
    assert!(shell.running.is_empty());
    assert_eq!(shell.steps["a"].attempts, 0);
    assert_eq!(shell.steps["a"].phase, Phase::Pending);
    let wake = shell.wake.unwrap();
    assert_eq!(wake, CLAIM_POLL_MS);

    // The other run finished: at the wake-up the step is looked up again and runs.
    shell.busy.clear();
    shell.now = wake;
    shell.settle(&mut run, vec![]);
    assert_eq!(shell.running_nodes(), ["a"]);
    assert_eq!(shell.running[0].attempt, 1);
    assert_eq!(shell.claims.get(&key), Some(&"r1/a".to_string()));
    shell.succeed(&mut run, "a");
    assert!(
        !shell.claims.contains_key(&key),
        "released once the result is recorded"
    );
}

#[test]
fn claims_are_renewed_while_an_attempt_runs() {
    let mut shell = Shell::default();
    let mut run = started(chain(), &mut shell);
    assert_eq!(shell.wake, Some(CLAIM_RENEW_MS));
    shell.now = CLAIM_RENEW_MS;
    shell.settle(&mut run, vec![]);
    assert_eq!(shell.renewed, 1);
    assert_eq!(shell.wake, Some(2 * CLAIM_RENEW_MS));
}

#[test]
fn an_unreadable_cache_runs_the_step_and_says_so() {
    let mut shell = Shell {
        cache_down: true,
        ..Shell::default()
    };
    let run = started(chain(), &mut shell);
    assert_eq!(shell.running_nodes(), ["a"]);
    assert!(shell.reasons().contains(&"CacheUnavailable"));
    assert!(shell.claims.is_empty(), "no claim without a cache");
    assert!(run.finished().is_none());
}

#[test]
fn a_lost_attempt_starts_again_as_a_new_attempt() {
    let mut shell = Shell::default();
    let mut run = started(chain(), &mut shell);
    let lost = Observation::Lost {
        node: "a".into(),
        attempt: 1,
        reason: "its pod was deleted".into(),
    };
    shell.running.clear();
    shell.settle(&mut run, vec![lost.clone()]);
    let first = &shell.attempts[&("a".to_string(), 1)];
    assert_eq!(first.phase, Phase::Failed);
    assert_eq!(first.message.as_deref(), Some("its pod was deleted"));
    assert_eq!(shell.running_nodes(), ["a"]);
    assert_eq!(shell.running[0].attempt, 2);
    assert!(shell.reasons().contains(&"AttemptLost"));
    // The same observation again changes nothing.
    let before = shell.writes.len();
    shell.settle(&mut run, vec![lost]);
    assert_eq!(shell.writes.len(), before);
}

#[test]
fn a_permanent_exit_code_is_not_retried() {
    let mut p = chain();
    p.spec.steps[0].retry = Some(RetryPolicy {
        limit: 3,
        ..RetryPolicy::default()
    });
    let p = RunPlan::new("p", p.spec, BTreeMap::new());
    let mut shell = Shell::default();
    let mut run = started(p.clone(), &mut shell);
    shell.end(&mut run, "a", failure(1));
    assert!(
        shell.reasons().contains(&"StepRetrying"),
        "exit 1 is retried"
    );

    let mut shell = Shell::default();
    let mut run = started(p.clone(), &mut shell);
    shell.end(&mut run, "a", failure(2));
    assert_eq!(run.finished(), Some(Phase::Failed));
    assert_eq!(shell.steps["a"].attempts, 1);
    let message = shell.steps["a"].message.clone().unwrap();
    assert!(message.contains("permanent"), "{message}");

    // A step may declare its own permanent codes; an empty list retries everything.
    let mut spec = p.spec.clone();
    spec.steps[0].retry = Some(RetryPolicy {
        limit: 1,
        permanent_exit_codes: Some(vec![]),
        ..RetryPolicy::default()
    });
    let mut shell = Shell::default();
    let mut run = started(RunPlan::new("p", spec, BTreeMap::new()), &mut shell);
    shell.end(&mut run, "a", failure(2));
    assert!(shell.reasons().contains(&"StepRetrying"));
}

#[test]
fn failed_staging_skips_every_node_and_fails_the_run() {
    let mut p = chain();
    p.spec.steps[0].inputs = Some(crate::api::Inputs {
        artifacts: vec![crate::api::InputArtifact {
            name: "data".into(),
            path: Some("data/".into()),
            ..Default::default()
        }],
        ..Default::default()
    });
    let mut shell = Shell::default();
    let mut run = started(RunPlan::new("p", p.spec, BTreeMap::new()), &mut shell);
    assert!(!run.staged);
    assert!(shell.running.is_empty(), "nothing starts before staging");
    shell.settle(
        &mut run,
        vec![Observation::StagingFailed {
            message: "exit code 1".into(),
        }],
    );
    assert_eq!(run.finished(), Some(Phase::Failed));
    assert!(shell.steps.values().all(|s| s.phase == Phase::Skipped));
    assert_eq!(shell.run_phase.as_ref().unwrap().phase, Phase::Failed);
    assert!(shell.reasons().contains(&"StagingFailed"));
}

#[test]
fn an_artifact_a_parameter_names_is_staged_when_given_and_absent_when_empty() {
    let with_extra = |value: &str| {
        let mut spec = chain().spec;
        spec.params.push(ParamSpec {
            name: "extra".into(),
            default: Some(json!("")),
            ..ParamSpec::default()
        });
        spec.steps[0]
            .command
            .push("{{inputs.artifacts.extra}}".into());
        spec.steps[0].inputs = Some(crate::api::Inputs {
            artifacts: vec![crate::api::InputArtifact {
                name: "extra".into(),
                from: Some("{{params.extra}}".into()),
                ..Default::default()
            }],
            ..Default::default()
        });
        RunPlan::new("p", spec, [("extra".to_string(), json!(value))].into())
    };

    // Empty: nothing to stage, and the step runs with no artifact.
    let mut shell = Shell::default();
    let run = started(with_extra(""), &mut shell);
    assert!(run.staged);
    let a = &shell.running[0];
    assert_eq!(a.inputs["extra"], InputSource::Absent);
    assert_eq!(a.key.inputs["extra"], "none");

    // A digest: staged first (the shell finds it in the store), then keyed by content.
    let digest = format!("sha256:{}", "ab".repeat(32));
    let plan = with_extra(&digest);
    let unstaged = plan.unstaged_inputs();
    assert_eq!(
        unstaged,
        [Unstaged {
            step: "a".into(),
            input: "extra".into(),
            path: digest.clone(),
            param: Some("extra".into()),
        }]
    );
    let mut shell = Shell::default();
    let mut run = started(plan, &mut shell);
    assert!(!run.staged && shell.running.is_empty());
    let artifact = ArtifactRef {
        digest: digest.clone(),
        size: 3,
        kind: crate::records::ArtifactKind::File,
    };
    let staged = [(
        "a".to_string(),
        [("extra".to_string(), artifact.clone())].into(),
    )]
    .into();
    shell.settle(&mut run, vec![Observation::Staged { inputs: staged }]);
    let a = &shell.running[0];
    assert_eq!(a.inputs["extra"], InputSource::Artifact(artifact));
    assert_eq!(a.key.inputs["extra"], digest);

    // Another run repeating this one keeps its path: inputs, never what a parameter named.
    let mut inputs = run.plan.local_inputs.clone();
    inputs.entry("a".into()).or_default().insert(
        "data".into(),
        ArtifactRef {
            digest: "sha256:cd".into(),
            size: 1,
            kind: crate::records::ArtifactKind::Dir,
        },
    );
    let mut spec = run.plan.spec.clone();
    if let Some(i) = spec.steps[0].inputs.as_mut() {
        i.artifacts.push(crate::api::InputArtifact {
            name: "data".into(),
            path: Some("data/".into()),
            ..Default::default()
        });
    }
    let next = RunPlan::new("p", spec, BTreeMap::new());
    let kept = next.path_inputs_only(inputs);
    assert_eq!(kept["a"].keys().collect::<Vec<_>>(), ["data"]);
}

#[test]
fn a_fan_out_writes_all_its_rows_at_once() {
    let mut fan = step("shard", &[], &[]);
    fan.for_each = Some(serde_json::to_string(&(0..50).collect::<Vec<_>>()).unwrap());
    fan.command.push("{{item}}".into());
    let mut shell = Shell::default();
    started(plan(vec![fan], vec![], vec![]), &mut shell);
    let batch = shell
        .writes
        .iter()
        .find(|w| w.steps.len() > 1)
        .expect("a batch with the fan-out's rows");
    assert_eq!(batch.steps.len(), 51, "the step and its 50 children");
}

#[test]
fn cancelling_stops_what_runs_and_ends_cancelled() {
    let p = plan(
        vec![
            step("a", &[], &[]),
            step("b", &[], &[]),
            step("c", &["a"], &[]),
        ],
        vec![],
        vec![],
    );
    let mut shell = Shell::default();
    let mut run = started(p, &mut shell);
    assert_eq!(shell.running_nodes(), ["a", "b"]);
    shell.settle(&mut run, vec![Observation::CancelRequested]);
    assert_eq!(shell.stopped, [("a".to_string(), 1), ("b".to_string(), 1)]);
    assert!(run.finished().is_none(), "waits for what runs");
    shell.end(&mut run, "a", failure(143));
    shell.end(&mut run, "b", failure(143));
    assert_eq!(run.finished(), Some(Phase::Cancelled));
    assert_eq!(shell.steps["c"].phase, Phase::Cancelled);
}

#[test]
fn a_large_failure_is_summarized_within_bounds() {
    let mut fan = step("shard", &[], &[]);
    fan.for_each = Some(serde_json::to_string(&(0..200).collect::<Vec<_>>()).unwrap());
    fan.command.push("{{item}}".into());
    let mut shell = Shell::default();
    let mut run = Run::start("r1", plan(vec![fan], vec![], vec![]), 0, 1000)
        .map(|(run, effects)| {
            shell.carry_out(effects);
            run
        })
        .unwrap();
    shell.settle(&mut run, vec![]);
    while let Some(inv) = shell.running.first().cloned() {
        shell.end(&mut run, &inv.node, failure(1));
    }
    let message = shell.run_phase.clone().unwrap().message.unwrap();
    assert!(message.ends_with("and 196 more"), "{message}");
    assert!(message.len() < 200, "{message}");
}

#[test]
fn a_shell_restarted_mid_launch_launches_again() {
    let (mut run, _) = Run::start("r1", chain(), 0, 4).unwrap();
    let effects = run.advance(vec![], 0);
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::CheckCache { .. }))
    );
    // The record survives (the operator's document), the effects do not.
    let saved: Run = serde_json::from_value(serde_json::to_value(&run).unwrap()).unwrap();
    assert_eq!(saved, run);
    let again = saved.pending_effects();
    assert!(
        matches!(&again[..], [Effect::CheckCache { invocation, .. }] if invocation.node == "a")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// Whatever the graph and the order attempts end in, the rows written are the run's final
    /// state, the run ends once, and nothing is left in flight.
    #[test]
    fn the_rows_written_are_the_final_state(
        plan in arb_plan(),
        parallelism in 1usize..4,
        picks in proptest::collection::vec(0usize..8, 1..20),
        failing in proptest::collection::vec(0usize..12, 0..3),
    ) {
        let mut shell = Shell::default();
        let (mut run, effects) = Run::start("r1", plan, 0, parallelism).unwrap();
        let observed = shell.carry_out(effects);
        shell.settle(&mut run, observed);
        let mut pick = picks.iter().cycle();
        let mut ended = 0usize;
        while run.finished().is_none() {
            prop_assert!(ended < 10_000, "did not finish");
            if shell.running.is_empty() {
                let wake = shell.wake.expect("something to wait for");
                shell.now = shell.now.max(wake);
                shell.settle(&mut run, vec![]);
                continue;
            }
            let i = pick.next().copied().unwrap_or(0) % shell.running.len();
            let inv = shell.running[i].clone();
            let report = if failing.contains(&ended) {
                failure(1)
            } else {
                success(simulated_outputs(&inv))
            };
            shell.end(&mut run, &inv.node, report);
            ended += 1;
        }
        prop_assert!(run.in_flight.is_empty());
        let phase = shell.run_phase.clone().expect("the run's end is recorded");
        prop_assert_eq!(Some(phase.phase), run.finished());
        for (node, row) in &shell.steps {
            prop_assert_eq!(row, &run.step_row(node, shell.now), "row of {}", node);
        }
        for node in run.state.nodes.keys() {
            prop_assert!(shell.steps.contains_key(node), "no row for {}", node);
        }
        let finishes = shell.events.iter().filter(|e| matches!(e, RunEvent::RunFinished { .. })).count();
        prop_assert_eq!(finishes, 1);
    }
}
