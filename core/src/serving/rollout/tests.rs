//! The rollout's rules, each as a walk through decisions a shell would make.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::api::{EvaluationGate, EvaluationMetric, GateMetric, ModelRef, ModelVersion};
use crate::duration::Duration;

const MINUTE: Millis = 60_000;
const INTERVAL: Millis = 10 * MINUTE;
const T0: Millis = 1_700_000_000_000;

fn version(name: &str, run: &str) -> ModelVersion {
    ModelVersion {
        name: name.to_string(),
        model: ModelRef {
            run: Some(run.to_string()),
            step: Some("export".to_string()),
            artifact: Some("bundle".to_string()),
            digest: None,
        },
        ..ModelVersion::default()
    }
}

/// v1 takes everything; v2 is rolled out over 10, 25, 50, 100 with an error-rate and a p99
/// gate.
fn endpoint(on_failure: OnFailure) -> EndpointSpec {
    EndpointSpec {
        versions: vec![
            version("v1", "fashion-abc12"),
            version("v2", "fashion-def34"),
        ],
        traffic: Vec::new(),
        shadow: None,
        batching: None,
        autoscaling: None,
        rollout: Some(RolloutSpec {
            candidate: "v2".to_string(),
            steps: Some(vec![10, 25, 50, 100]),
            interval: Duration::parse("10m").unwrap(),
            gates: vec![
                GateSpec {
                    metric: GateMetric::ErrorRate,
                    max: json!(0.01),
                },
                GateSpec {
                    metric: GateMetric::LatencyP99,
                    max: json!("50ms"),
                },
            ],
            on_failure: Some(on_failure),
            min_requests: None,
            evaluation_gates: Vec::new(),
            min_labels: None,
        }),
        sampling: None,
        router: None,
        monitoring: None,
    }
}

fn seen(version: &str, requests: u64, errors: u64, p99: Option<f64>) -> Vec<VersionObservation> {
    vec![VersionObservation {
        version: version.to_string(),
        requests,
        errors,
        latency_ms: LatencyPercentiles {
            p50: p99.map(|p| p / 4.0),
            p90: p99.map(|p| p / 2.0),
            p99,
        },
        quality: None,
    }]
}

fn healthy() -> Vec<VersionObservation> {
    seen("v2", 500, 1, Some(30.0))
}

fn split(entries: &[(&str, u32)]) -> Vec<(String, u32)> {
    entries.iter().map(|(n, w)| (n.to_string(), *w)).collect()
}

/// Starts the rollout at `T0`.
fn started(spec: &EndpointSpec) -> RolloutState {
    let d = decide(spec, None, &[], T0);
    assert_eq!(d.transition, Some(RolloutTransition::Started));
    assert_eq!(d.wake_at, Some(T0 + INTERVAL));
    d.state.unwrap()
}

#[test]
fn a_good_candidate_walks_every_step_to_promotion() {
    let spec = endpoint(OnFailure::Rollback);
    let mut state = started(&spec);
    assert_eq!((state.weight, state.phase), (10, RolloutPhase::Progressing));
    let mut now = T0;
    let mut walk = vec![(state.weight, None)];
    for _ in 0..3 {
        now += INTERVAL;
        let d = decide(&spec, Some(&state), &healthy(), now);
        state = d.state.unwrap();
        walk.push((state.weight, d.transition));
        assert_eq!(d.traffic.iter().map(|(_, w)| w).sum::<u32>(), 100);
    }
    assert_eq!(
        walk,
        [
            (10, None),
            (25, Some(RolloutTransition::Advanced)),
            (50, Some(RolloutTransition::Advanced)),
            (100, Some(RolloutTransition::Promoted)),
        ]
    );
    assert_eq!(state.phase, RolloutPhase::Promoted);
    assert_eq!(state.step, 3);
    // Promoted holds: nothing moves it, and nothing wakes it.
    let d = decide(
        &spec,
        Some(&state),
        &seen("v2", 500, 500, Some(900.0)),
        now + INTERVAL,
    );
    assert_eq!((d.transition, d.wake_at), (None, None));
    assert_eq!(d.traffic, split(&[("v1", 0), ("v2", 100)]));
}

/// The candidate's and the incumbent's requests, each with `labelled` samples scored at
/// `accuracy` (an interval of ±0.05).
fn scored(candidate: f64, incumbent: f64, labelled: u64) -> Vec<VersionObservation> {
    let quality = |accuracy: f64| {
        Some(QualityObservation {
            labelled,
            metrics: vec![(
                EvaluationMetric::Accuracy,
                Estimate {
                    value: accuracy,
                    lower: accuracy - 0.05,
                    upper: accuracy + 0.05,
                },
            )],
        })
    };
    let mut observed = healthy();
    observed[0].quality = quality(candidate);
    observed.push(VersionObservation {
        version: "v1".to_string(),
        requests: 1000,
        quality: quality(incumbent),
        ..VersionObservation::default()
    });
    observed
}

#[test]
fn evaluation_gates_compare_the_candidate_with_the_incumbent_once_both_have_labels() {
    let mut spec = endpoint(OnFailure::Rollback);
    if let Some(r) = spec.rollout.as_mut() {
        r.gates.clear();
        r.evaluation_gates = vec![EvaluationGate {
            metric: EvaluationMetric::Accuracy,
            min_delta: 0.0,
        }];
    }
    let state = started(&spec);
    let later = T0 + INTERVAL;
    // Too few labels on either side: the step waits past its interval.
    for (candidate, incumbent) in [(99, 100), (100, 99)] {
        let mut observed = scored(0.9, 0.9, 100);
        observed[0].quality.as_mut().unwrap().labelled = candidate;
        observed[1].quality.as_mut().unwrap().labelled = incumbent;
        let d = decide(&spec, Some(&state), &observed, later);
        assert_eq!(d.transition, None, "{}", d.reason);
        assert!(d.reason.contains("waiting for labels"), "{}", d.reason);
    }
    // As good within its interval: the step advances.
    let d = decide(&spec, Some(&state), &scored(0.88, 0.9, 100), later);
    assert_eq!(
        d.transition,
        Some(RolloutTransition::Advanced),
        "{}",
        d.reason
    );
    // Wholly worse than the incumbent: rolled back at once, before the interval is over.
    let d = decide(&spec, Some(&state), &scored(0.1, 0.9, 100), T0 + MINUTE);
    assert_eq!(
        d.transition,
        Some(RolloutTransition::RolledBack),
        "{}",
        d.reason
    );
    assert!(
        d.reason.contains("evaluation gate accuracy failed"),
        "{}",
        d.reason
    );
    assert_eq!(d.traffic, split(&[("v1", 100), ("v2", 0)]));
    // A required improvement the candidate cannot show fails too.
    if let Some(r) = spec.rollout.as_mut() {
        r.evaluation_gates[0].min_delta = 0.1;
    }
    let d = decide(&spec, Some(&state), &scored(0.9, 0.9, 100), T0 + MINUTE);
    assert_eq!(
        d.transition,
        Some(RolloutTransition::RolledBack),
        "{}",
        d.reason
    );
}

#[test]
fn each_step_is_held_for_its_interval_without_changing_the_state() {
    let spec = endpoint(OnFailure::Rollback);
    let state = started(&spec);
    let d = decide(&spec, Some(&state), &healthy(), T0 + INTERVAL - 1);
    assert_eq!(d.transition, None);
    assert_eq!(d.state.as_ref(), Some(&state));
    assert_eq!(d.wake_at, Some(T0 + INTERVAL));
    assert_eq!(d.traffic, split(&[("v1", 90), ("v2", 10)]));
    assert_eq!(
        d.reason,
        "gates hold; step 10% holds until its interval is over"
    );
}

#[test]
fn gate_breaches_roll_back_or_pause_at_once() {
    struct Case {
        name: &'static str,
        on_failure: OnFailure,
        observed: Vec<VersionObservation>,
        phase: RolloutPhase,
        transition: RolloutTransition,
        traffic: &'static [(&'static str, u32)],
        reason: &'static str,
    }
    let cases = [
        Case {
            name: "error rate, rollback",
            on_failure: OnFailure::Rollback,
            observed: seen("v2", 400, 20, Some(30.0)),
            phase: RolloutPhase::RolledBack,
            transition: RolloutTransition::RolledBack,
            traffic: &[("v1", 100), ("v2", 0)],
            reason: "gate error_rate failed: 0.0500 > 0.0100 over 400 requests at 10%",
        },
        Case {
            name: "latency, rollback",
            on_failure: OnFailure::Rollback,
            observed: seen("v2", 400, 0, Some(72.0)),
            phase: RolloutPhase::RolledBack,
            transition: RolloutTransition::RolledBack,
            traffic: &[("v1", 100), ("v2", 0)],
            reason: "gate latency_p99 failed: 72.0ms > 50.0ms over 400 requests at 10%",
        },
        Case {
            name: "both, the first gate decides",
            on_failure: OnFailure::Rollback,
            observed: seen("v2", 400, 400, Some(72.0)),
            phase: RolloutPhase::RolledBack,
            transition: RolloutTransition::RolledBack,
            traffic: &[("v1", 100), ("v2", 0)],
            reason: "gate error_rate failed: 1.0000 > 0.0100 over 400 requests at 10%",
        },
        Case {
            name: "error rate, pause",
            on_failure: OnFailure::Pause,
            observed: seen("v2", 400, 20, Some(30.0)),
            phase: RolloutPhase::Paused,
            transition: RolloutTransition::Paused,
            traffic: &[("v1", 90), ("v2", 10)],
            reason: "gate error_rate failed: 0.0500 > 0.0100 over 400 requests at 10%",
        },
    ];
    for case in cases {
        let spec = endpoint(case.on_failure);
        let state = started(&spec);
        // Before the interval is over: a breach on enough requests does not wait.
        let now = T0 + MINUTE;
        let d = decide(&spec, Some(&state), &case.observed, now);
        let next = d.state.clone().unwrap();
        assert_eq!(next.phase, case.phase, "{}", case.name);
        assert_eq!(d.transition, Some(case.transition), "{}", case.name);
        assert_eq!(d.traffic, split(case.traffic), "{}", case.name);
        assert_eq!(d.reason, case.reason, "{}", case.name);
        assert_eq!(next.reason.as_deref(), Some(case.reason), "{}", case.name);
        assert_eq!((next.since, d.wake_at), (now, None), "{}", case.name);
        // It holds afterwards, however good the candidate looks.
        let later = decide(&spec, Some(&next), &healthy(), now + 10 * INTERVAL);
        assert_eq!(later.transition, None, "{}", case.name);
        assert_eq!(later.state, Some(next), "{}", case.name);
        assert_eq!(later.traffic, split(case.traffic), "{}", case.name);
    }
}

#[test]
fn too_little_traffic_waits_instead_of_promoting() {
    let spec = endpoint(OnFailure::Rollback);
    let state = started(&spec);
    let now = T0 + INTERVAL;
    for (observed, reason) in [
        (
            Vec::new(),
            "waiting for traffic: 0 of the 20 requests gates need",
        ),
        (
            seen("v2", 19, 19, Some(900.0)),
            "waiting for traffic: 19 of the 20 requests gates need",
        ),
        // Enough requests, but no p99 yet: neither pass nor fail.
        (
            seen("v2", 100, 0, None),
            "waiting for a latency_p99 estimate",
        ),
        // The incumbent's requests say nothing about the candidate.
        (
            seen("v1", 10_000, 0, Some(1.0)),
            "waiting for traffic: 0 of the 20 requests gates need",
        ),
    ] {
        let d = decide(&spec, Some(&state), &observed, now);
        assert_eq!(d.transition, None, "{reason}");
        assert_eq!(d.state.as_ref(), Some(&state), "{reason}");
        assert_eq!(d.reason, reason);
        assert_eq!(d.wake_at, Some(now + EVIDENCE_RECHECK_MS));
        assert_eq!(d.traffic, split(&[("v1", 90), ("v2", 10)]));
    }
}

#[test]
fn a_new_candidate_or_model_starts_over_and_a_removed_rollout_ends() {
    let spec = endpoint(OnFailure::Rollback);
    let mut state = started(&spec);
    state.phase = RolloutPhase::RolledBack;
    state.weight = 0;
    // The same candidate with a new model: a new rollout.
    let mut fixed = spec.clone();
    fixed.versions[1] = version("v2", "fashion-ghi56");
    let d = decide(&fixed, Some(&state), &[], T0 + INTERVAL);
    assert_eq!(d.transition, Some(RolloutTransition::Started));
    let next = d.state.unwrap();
    assert_eq!((next.weight, next.phase), (10, RolloutPhase::Progressing));
    assert_eq!(next.model, "fashion-ghi56/export/bundle");
    // No rollout any more: the declared split, and the state is dropped.
    let mut done = spec.clone();
    done.rollout = None;
    let d = decide(&done, Some(&next), &[], T0 + INTERVAL);
    assert_eq!(
        (d.state, d.transition),
        (None, Some(RolloutTransition::Ended))
    );
    assert_eq!(d.traffic, split(&[("v1", 100)]));
    // A candidate that is no version moves nothing.
    let mut unknown = spec.clone();
    if let Some(r) = unknown.rollout.as_mut() {
        r.candidate = "v9".into();
    }
    let d = decide(&unknown, Some(&next), &healthy(), T0 + 2 * INTERVAL);
    assert_eq!((d.state.as_ref(), d.transition), (Some(&next), None));
    assert_eq!(d.traffic, split(&[("v1", 100)]));
    // A single step of 100 is a cut-over.
    let mut cut_over = spec;
    if let Some(r) = cut_over.rollout.as_mut() {
        r.steps = Some(vec![100]);
    }
    let d = decide(&cut_over, None, &[], T0);
    assert_eq!(d.state.unwrap().phase, RolloutPhase::Promoted);
    assert_eq!(d.traffic, split(&[("v1", 0), ("v2", 100)]));
}

#[test]
fn the_state_survives_the_status() {
    let spec = endpoint(OnFailure::Rollback);
    let state = started(&spec);
    let status = state.to_status();
    assert_eq!(status.since.as_deref(), Some("2023-11-14T22:13:20Z"));
    assert_eq!(RolloutState::from_status(&status, T0 + 5), state);
    let mut unreadable = status;
    unreadable.since = Some("yesterday".into());
    assert_eq!(RolloutState::from_status(&unreadable, T0 + 5).since, T0 + 5);
}

proptest! {
    /// Whatever the candidate's requests look like: the split sums to 100, the candidate's
    /// weight is a step's (or 0 after a rollback), it never moves on fewer than the minimum
    /// requests, and it reaches 100 only through every step.
    #[test]
    fn rollouts_only_move_on_evidence(
        windows in prop::collection::vec((0u64..60, 0u64..3, 0.0f64..80.0, 1i64..25), 1..40),
    ) {
        let spec = endpoint(OnFailure::Rollback);
        let mut state = started(&spec);
        let mut now = T0;
        let mut visited = vec![state.weight];
        for (requests, errors, p99, minutes) in windows {
            now += minutes * MINUTE;
            let d = decide(&spec, Some(&state), &seen("v2", requests, errors.min(requests), Some(p99)), now);
            prop_assert_eq!(d.traffic.iter().map(|(_, w)| w).sum::<u32>(), 100);
            let next = d.state.unwrap();
            prop_assert!([0, 10, 25, 50, 100].contains(&next.weight));
            if next.weight != state.weight {
                prop_assert!(requests >= 20, "moved on {} requests", requests);
                if next.weight > 0 {
                    visited.push(next.weight);
                }
            } else {
                prop_assert_eq!(&next, &state);
            }
            state = next;
        }
        if state.phase == RolloutPhase::Promoted {
            prop_assert_eq!(visited, vec![10, 25, 50, 100]);
        }
    }
}
