#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::*;
use crate::api::{CheckpointPolicy, ExitCodeRule, FailurePolicy, Gang as GangFields, RoleSpec};

fn roles(spec: &[(&str, u32)]) -> BTreeMap<String, RoleSpec> {
    spec.iter()
        .map(|(r, n)| {
            (
                r.to_string(),
                RoleSpec {
                    replicas: *n,
                    ..RoleSpec::default()
                },
            )
        })
        .collect()
}

fn plan_of(
    layout: &[(&str, u32)],
    success: Option<SuccessPolicy>,
    failure: Option<&FailurePolicy>,
) -> Result<GangPlan, Vec<GangProblem>> {
    let roles = roles(layout);
    GangPlan::new(GangFields {
        roles: &roles,
        success_policy: success,
        failure_policy: failure,
        checkpoint: None,
    })
}

fn plan(layout: &[(&str, u32)]) -> GangPlan {
    plan_of(layout, None, None).unwrap()
}

fn w(index: u32) -> ReplicaId {
    ReplicaId {
        role: Role::Worker,
        index,
    }
}

fn exited(replica: ReplicaId, incarnation: u32, code: i32) -> GangObservation {
    GangObservation::Ended {
        replica,
        incarnation,
        end: ReplicaEnd {
            exit_code: Some(code),
            ..ReplicaEnd::default()
        },
    }
}

fn killed(replica: ReplicaId, incarnation: u32, signal: i32) -> GangObservation {
    GangObservation::Ended {
        replica,
        incarnation,
        end: ReplicaEnd {
            signal: Some(signal),
            ..ReplicaEnd::default()
        },
    }
}

fn launches(effects: &[GangEffect]) -> Vec<(u32, usize)> {
    effects
        .iter()
        .filter_map(|e| match e {
            GangEffect::Launch {
                incarnation,
                replicas,
            } => Some((*incarnation, replicas.len())),
            _ => None,
        })
        .collect()
}

fn stops(effects: &[GangEffect]) -> Vec<u32> {
    effects
        .iter()
        .filter_map(|e| match e {
            GangEffect::Stop { incarnation, .. } => Some(*incarnation),
            _ => None,
        })
        .collect()
}

fn finished(effects: &[GangEffect]) -> Option<&Outcome> {
    effects.iter().find_map(|e| match e {
        GangEffect::Finished(o) => Some(o),
        _ => None,
    })
}

/// Starts a gang and marks every replica running.
fn running(plan: GangPlan) -> Gang {
    let mut gang = Gang::new(plan, false);
    let effects = gang.advance(vec![]);
    assert_eq!(launches(&effects).len(), 1);
    let started = gang
        .plan
        .replicas()
        .map(|replica| GangObservation::Started {
            replica,
            incarnation: gang.incarnation,
        })
        .collect();
    gang.advance(started);
    gang
}

#[test]
fn a_killed_replica_restarts_the_whole_gang_after_every_peer_has_ended() {
    let mut gang = running(plan(&[("worker", 3)]));
    assert_eq!(gang.ready(), "3/3");
    let effects = gang.advance(vec![killed(w(1), 0, 9)]);
    assert_eq!(stops(&effects), vec![0]);
    assert!(
        launches(&effects).is_empty(),
        "relaunched before the peers ended"
    );
    // The peers' ends are consequences: not counted, not decisive.
    let effects = gang.advance(vec![exited(w(0), 0, 1)]);
    assert!(launches(&effects).is_empty());
    let effects = gang.advance(vec![exited(w(2), 0, 75)]);
    assert_eq!(launches(&effects), vec![(1, 3)]);
    assert_eq!(
        (gang.restarts, gang.preemptions, gang.incarnation),
        (1, 0, 1)
    );
    let failure = gang.last_failure.as_ref().unwrap();
    assert_eq!(
        (
            failure.role.as_str(),
            failure.index,
            failure.exit_code,
            failure.reason.as_str()
        ),
        ("worker", 1, Some(137), "Killed")
    );
    // Ends from the old incarnation that arrive late change nothing.
    let effects = gang.advance(vec![exited(w(0), 0, 0)]);
    assert!(effects.is_empty());
    // The history keeps every end, and which one decided.
    let history: Vec<(String, Option<i32>, bool)> = gang
        .history
        .iter()
        .map(|h| (h.replica.to_string(), h.exit_code, h.decisive))
        .collect();
    assert_eq!(
        history,
        [
            ("worker-1".to_string(), Some(137), true),
            ("worker-0".to_string(), Some(1), false),
            ("worker-2".to_string(), Some(75), false),
        ]
    );
    assert_eq!(gang.phase(), "Pending");
}

#[test]
fn a_permanent_exit_code_fails_at_once_and_restarts_are_bounded() {
    let mut gang = running(plan(&[("worker", 2)]));
    gang.advance(vec![exited(w(0), 0, 3)]);
    let effects = gang.advance(vec![exited(w(1), 0, 1)]);
    match finished(&effects) {
        Some(Outcome::Failed(why)) => assert!(why.contains("worker-0 exited with code 3"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gang.restarts, 0);

    let failure = FailurePolicy {
        max_restarts: Some(1),
        rules: vec![],
    };
    let mut gang = running(plan_of(&[("worker", 1)], None, Some(&failure)).unwrap());
    let effects = gang.advance(vec![exited(w(0), 0, 137)]);
    assert_eq!(launches(&effects), vec![(1, 1)]);
    let effects = gang.advance(vec![exited(w(0), 1, 137)]);
    match finished(&effects) {
        Some(Outcome::Failed(why)) => assert!(why.contains("maxRestarts 1"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gang.restarts, 1);
}

#[test]
fn preemption_restarts_without_counting_a_restart() {
    let mut gang = running(plan(&[("worker", 2)]));
    let evicted = GangObservation::Ended {
        replica: w(1),
        incarnation: 0,
        end: ReplicaEnd {
            exit_code: Some(75),
            preempted: true,
            ..ReplicaEnd::default()
        },
    };
    gang.advance(vec![evicted]);
    let effects = gang.advance(vec![exited(w(0), 0, 75)]);
    assert_eq!(launches(&effects), vec![(1, 2)]);
    assert_eq!((gang.restarts, gang.preemptions), (0, 1));
    assert_eq!(gang.last_failure.as_ref().unwrap().reason, "Preempted");
}

#[test]
fn success_policies() {
    // ChiefOrWorker0: worker 0 decides; the others are stopped.
    let mut gang = running(plan(&[("worker", 2)]));
    let effects = gang.advance(vec![exited(w(0), 0, 0)]);
    assert_eq!(stops(&effects), vec![0]);
    assert_eq!(gang.phase(), "Running");
    let effects = gang.advance(vec![killed(w(1), 0, 15)]);
    assert_eq!(finished(&effects), Some(&Outcome::Succeeded));
    assert_eq!(gang.restarts, 0);
    assert_eq!(gang.phase(), "Succeeded");

    // With a chief, the chief decides, whatever worker 0 does.
    let mut gang = running(plan(&[("chief", 1), ("worker", 2)]));
    let effects = gang.advance(vec![exited(w(0), 0, 0)]);
    assert!(stops(&effects).is_empty());
    let chief = ReplicaId {
        role: Role::Chief,
        index: 0,
    };
    let effects = gang.advance(vec![exited(chief, 0, 0)]);
    assert_eq!(stops(&effects), vec![0]);

    // AllWorkers waits for every worker; a parameter server is stopped at the end.
    let mut gang = running(
        plan_of(
            &[("worker", 2), ("ps", 1)],
            Some(SuccessPolicy::AllWorkers),
            None,
        )
        .unwrap(),
    );
    let effects = gang.advance(vec![exited(w(0), 0, 0)]);
    assert!(stops(&effects).is_empty());
    let effects = gang.advance(vec![exited(w(1), 0, 0)]);
    assert_eq!(stops(&effects), vec![0]);
    let ps = ReplicaId {
        role: Role::Ps,
        index: 0,
    };
    let effects = gang.advance(vec![killed(ps, 0, 15)]);
    assert_eq!(finished(&effects), Some(&Outcome::Succeeded));
}

#[test]
fn the_leaders_outputs_are_the_gangs() {
    let mut gang = running(plan(&[("worker", 2)]));
    let mut outputs = crate::records::StepOutputs::default();
    outputs.params.insert("accuracy".into(), "0.9".into());
    let mut other = crate::records::StepOutputs::default();
    other.params.insert("accuracy".into(), "0.1".into());
    let end = |outputs| ReplicaEnd {
        exit_code: Some(0),
        outputs: Some(outputs),
        ..ReplicaEnd::default()
    };
    gang.advance(vec![
        GangObservation::Ended {
            replica: w(1),
            incarnation: 0,
            end: end(other),
        },
        GangObservation::Ended {
            replica: w(0),
            incarnation: 0,
            end: end(outputs.clone()),
        },
    ]);
    assert_eq!(gang.outcome, Some(Outcome::Succeeded));
    assert_eq!(gang.outputs, Some(outputs));
}

#[test]
fn suspend_stops_the_gang_and_resume_starts_the_next_incarnation() {
    let mut gang = running(plan(&[("worker", 2)]));
    let effects = gang.advance(vec![GangObservation::Suspend]);
    assert_eq!(stops(&effects), vec![0]);
    let effects = gang.advance(vec![exited(w(0), 0, 75), exited(w(1), 0, 75)]);
    assert!(launches(&effects).is_empty());
    assert!(effects.contains(&GangEffect::Notify(GangEvent::Suspended)));
    assert_eq!(gang.counts()["worker"].active, 0);
    let effects = gang.advance(vec![GangObservation::Resume]);
    assert_eq!(launches(&effects), vec![(1, 2)]);
    assert_eq!((gang.restarts, gang.preemptions), (0, 0));

    // Resumed before the suspended gang had stopped.
    let mut gang = running(plan(&[("worker", 1)]));
    gang.advance(vec![GangObservation::Suspend, GangObservation::Resume]);
    let effects = gang.advance(vec![exited(w(0), 0, 75)]);
    assert_eq!(launches(&effects), vec![(1, 1)]);
    assert_eq!(gang.restarts, 0);

    // A job created suspended starts nothing until resumed.
    let mut gang = Gang::new(plan(&[("worker", 1)]), true);
    assert!(launches(&gang.advance(vec![])).is_empty());
    assert_eq!(
        launches(&gang.advance(vec![GangObservation::Resume])),
        vec![(0, 1)]
    );
}

#[test]
fn cancel_overrides_a_restart_and_ends_the_gang() {
    let mut gang = running(plan(&[("worker", 2)]));
    gang.advance(vec![killed(w(0), 0, 9)]);
    gang.advance(vec![GangObservation::Cancel("timed out after 2h".into())]);
    let effects = gang.advance(vec![exited(w(1), 0, 75)]);
    assert_eq!(
        finished(&effects),
        Some(&Outcome::Cancelled("timed out after 2h".into()))
    );
    assert!(launches(&effects).is_empty());
}

#[test]
fn a_replica_that_cannot_start_fails_the_job() {
    let mut gang = running(plan(&[("worker", 2)]));
    let end = ReplicaEnd {
        message: Some("could not start: no such file".into()),
        ..ReplicaEnd::default()
    };
    gang.advance(vec![GangObservation::Ended {
        replica: w(1),
        incarnation: 0,
        end,
    }]);
    let effects = gang.advance(vec![exited(w(0), 0, 1)]);
    match finished(&effects) {
        Some(Outcome::Failed(why)) => assert!(why.contains("no such file"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gang.last_failure.as_ref().unwrap().reason, "LaunchFailed");
}

#[test]
fn rules_take_precedence_over_the_defaults() {
    let failure = FailurePolicy {
        max_restarts: None,
        rules: vec![ExitCodeRule {
            exit_codes: vec![IntOrString::Int(3), IntOrString::String("137-140".into())],
            action: FailureAction::Restart,
        }],
    };
    let plan = plan_of(&[("worker", 1)], None, Some(&failure)).unwrap();
    assert_eq!(plan.action(3), FailureAction::Restart);
    assert_eq!(plan.action(4), FailureAction::Fail);
    assert_eq!(plan.action(75), FailureAction::Restart);
    assert_eq!(plan.action(139), FailureAction::Restart);
    assert_eq!(plan.action(143), FailureAction::Restart);
    assert_eq!(plan.action(300), FailureAction::Fail);
    assert_eq!(plan.max_restarts, DEFAULT_MAX_RESTARTS);
}

#[test]
fn bad_gangs_are_refused_with_paths() {
    let problems = |layout: &[(&str, u32)], success, failure: Option<&FailurePolicy>| {
        plan_of(layout, success, failure).unwrap_err()
    };
    assert_eq!(
        problems(&[("wrker", 2)], None, None),
        vec![(
            "roles.wrker".to_string(),
            "unknown role \"wrker\" (did you mean \"worker\"?)".to_string()
        )]
    );
    let p = problems(&[("worker", 0), ("chief", 2)], None, None);
    assert_eq!(p[0].0, "roles.chief.replicas");
    assert_eq!(p[1].0, "roles.worker.replicas");
    assert_eq!(
        problems(&[("worker", 1025)], None, None)[0].0,
        "roles.worker.replicas"
    );
    assert_eq!(
        problems(&[("ps", 1), ("chief", 1)], None, None)[0].0,
        "roles.ps"
    );
    assert_eq!(problems(&[("evaluator", 1)], None, None)[0].0, "roles");
    assert_eq!(problems(&[], None, None)[0].0, "roles");
    assert_eq!(
        problems(&[("chief", 1)], Some(SuccessPolicy::AllWorkers), None)[0].0,
        "successPolicy"
    );
    let rules = FailurePolicy {
        max_restarts: None,
        rules: vec![
            ExitCodeRule {
                exit_codes: vec![IntOrString::String("1-127".into())],
                action: FailureAction::Fail,
            },
            ExitCodeRule {
                exit_codes: vec![
                    IntOrString::Int(3),
                    IntOrString::Int(0),
                    IntOrString::Int(256),
                    IntOrString::String("20-10".into()),
                    IntOrString::String("x".into()),
                    IntOrString::String("200-210".into()),
                ],
                action: FailureAction::Restart,
            },
            ExitCodeRule {
                exit_codes: vec![],
                action: FailureAction::Restart,
            },
        ],
    };
    let p = problems(&[("worker", 1)], None, Some(&rules));
    let paths: Vec<&str> = p.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "failurePolicy.rules[1].exitCodes[0]",
            "failurePolicy.rules[1].exitCodes[1]",
            "failurePolicy.rules[1].exitCodes[2]",
            "failurePolicy.rules[1].exitCodes[3]",
            "failurePolicy.rules[1].exitCodes[4]",
            "failurePolicy.rules[2].exitCodes",
        ]
    );
    assert!(
        p[0].1
            .contains("overlaps 1-127 at failurePolicy.rules[0].exitCodes[0]"),
        "{}",
        p[0].1
    );
    assert!(p[1].1.contains("0 is success"), "{}", p[1].1);

    let roles = roles(&[("worker", 1)]);
    let bad_every = GangPlan::new(GangFields {
        roles: &roles,
        success_policy: None,
        failure_policy: None,
        checkpoint: Some(&CheckpointPolicy {
            every: Some("often".into()),
        }),
    })
    .unwrap_err();
    assert_eq!(bad_every[0].0, "checkpoint.every");
}

#[test]
fn checkpoint_intervals_parse() {
    assert_eq!(
        CheckpointEvery::parse("1 epoch"),
        Ok(CheckpointEvery::Epochs(1))
    );
    assert_eq!(
        CheckpointEvery::parse("500 steps"),
        Ok(CheckpointEvery::Steps(500))
    );
    assert!(CheckpointEvery::parse("0 epochs").is_err());
    assert!(CheckpointEvery::parse("epoch").is_err());
    assert_eq!(CheckpointEvery::Steps(5).env_value(), "5 steps");
}

#[test]
fn the_env_contract_has_kubeflows_and_torchs_shape() {
    let plan = plan(&[("chief", 1), ("worker", 2), ("ps", 1), ("evaluator", 1)]);
    let address = |r: ReplicaId| Address {
        host: format!("job-{r}.job"),
        port: 2222,
    };
    let worker1 = contract(&plan, w(1), 4, address);
    let tf: serde_json::Value = serde_json::from_str(&worker1["TF_CONFIG"]).unwrap();
    assert_eq!(
        tf,
        serde_json::json!({
            "cluster": {
                "chief": ["job-chief-0.job:2222"],
                "worker": ["job-worker-0.job:2222", "job-worker-1.job:2222"],
                "ps": ["job-ps-0.job:2222"],
            },
            "task": {"type": "worker", "index": 1},
            "environment": "cloud",
        })
    );
    assert_eq!(worker1["MASTER_ADDR"], "job-chief-0.job");
    assert_eq!(worker1["MASTER_PORT"], "2222");
    assert_eq!(worker1["WORLD_SIZE"], "3");
    assert_eq!(worker1["RANK"], "2");
    assert_eq!(worker1["LOCAL_RANK"], "0");
    assert_eq!(worker1["TOUCAN_REPLICA"], "worker-1");
    assert_eq!(worker1["TOUCAN_INCARNATION"], "4");
    // Parameter servers and the evaluator are not in torch's world.
    let ps = contract(
        &plan,
        ReplicaId {
            role: Role::Ps,
            index: 0,
        },
        0,
        address,
    );
    assert!(!ps.contains_key("RANK") && !ps.contains_key("WORLD_SIZE"));
    for name in worker1.keys() {
        assert!(RESERVED.contains(&name.as_str()), "{name} is not reserved");
    }
    assert_eq!(plan.layout(), "chief=1,worker=2,ps=1,evaluator=1");
    assert_eq!("worker-12".parse::<ReplicaId>(), Ok(w(12)));
    // The engine's record is JSON: replicas by name, the map of the current ones included.
    let gang = running(plan);
    let json = serde_json::to_value(&gang).unwrap();
    assert_eq!(json["replicas"]["worker-1"], "running");
    assert_eq!(serde_json::from_value::<Gang>(json).unwrap(), gang);
    assert!("boss-1".parse::<ReplicaId>().is_err());
}

#[test]
fn record_keys_read_back() {
    let key = super::record_key("shard[3]", 2);
    assert_eq!(key, "shard[3]/2");
    assert_eq!(super::parse_record_key(&key), Some(("shard[3]", 2)));
    assert_eq!(super::parse_record_key("train"), None);
    assert_eq!(super::parse_record_key("train/x"), None);
}
