//! The engine driven like a shell drives it: trials started, reporting, ending, and the
//! controller "restarting" (the ledger serialized and read back) at arbitrary points.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn study_yaml(algorithm: &str, max_trials: u32, parallel: u32) -> StudySpec {
    let yaml = format!(
        r#"
objective: {{metric: loss, goal: minimize}}
parameters:
  - {{name: x, type: double, min: -5.0, max: 5.0}}
  - {{name: y, type: double, min: -5.0, max: 5.0}}
algorithm: {algorithm}
budget: {{maxTrials: {max_trials}, parallelTrials: {parallel}}}
"#
    );
    serde_yaml_ng::from_str(&yaml).unwrap()
}

fn num(params: &BTreeMap<String, ParamValue>, name: &str) -> f64 {
    params.get(name).and_then(ParamValue::as_f64).unwrap_or(0.0)
}

/// A 2-D quadratic with its minimum 0 at (1, -2).
fn quadratic(p: &BTreeMap<String, ParamValue>) -> f64 {
    (num(p, "x") - 1.0).powi(2) + (num(p, "y") + 2.0).powi(2)
}

fn round_trip(ledger: &TrialLedger) -> TrialLedger {
    serde_json::from_str(&serde_json::to_string(ledger).unwrap()).unwrap()
}

/// Drives a study to its end. Each tick: decide; on an interrupted tick the controller
/// "crashes" before carrying the decisions out (the ledger is reloaded from its JSON and
/// nothing happens); otherwise the decisions are applied and the oldest running trial
/// reports (its series, then its objective; multi-fidelity objectives improve with the budget).
fn drive(
    spec: &StudySpec,
    objective: &dyn Fn(&BTreeMap<String, ParamValue>) -> f64,
    interrupted: &dyn Fn(usize) -> bool,
) -> (TrialLedger, StudyEnd) {
    drive_reporting(spec, objective, interrupted, &|_, _| 0)
}

/// [`drive`], where `reporter(tick, active)` picks which of the active trials reports on a
/// tick (by position, wrapped).
fn drive_reporting(
    spec: &StudySpec,
    objective: &dyn Fn(&BTreeMap<String, ParamValue>) -> f64,
    interrupted: &dyn Fn(usize) -> bool,
    reporter: &dyn Fn(usize, usize) -> usize,
) -> (TrialLedger, StudyEnd) {
    let mut ledger = TrialLedger::new();
    for tick in 0..10_000 {
        let d = decide(spec, &ledger).unwrap();
        if interrupted(tick) {
            ledger = round_trip(&ledger);
            assert_eq!(
                decide(spec, &ledger).unwrap(),
                d,
                "a reloaded ledger decides alike"
            );
            continue;
        }
        if let Some(end) = d.end {
            return (ledger, end);
        }
        ledger.apply(&d).unwrap();
        let active: Vec<u32> = ledger
            .trials
            .iter()
            .filter(|t| t.state.is_active())
            .map(|t| t.index)
            .collect();
        let parallel = Study::new(spec).unwrap().parallel_trials as usize;
        assert!(
            active.len() <= parallel,
            "{} active > {parallel}",
            active.len()
        );
        for &i in &active {
            ledger.record_running(i).unwrap();
        }
        if let Some(&i) = active.get(reporter(tick, active.len()) % active.len().max(1)) {
            let trial = ledger.trial(i).unwrap().clone();
            let value = objective(&trial.params) + trial.budget.map_or(0.0, |b| 1.0 / b as f64);
            for step in 1..=3 {
                ledger
                    .record_metric(i, step, value + (3 - step) as f64)
                    .unwrap();
            }
            ledger.record_success(i, value).unwrap();
        }
    }
    panic!("the study did not end");
}

fn params_of(ledger: &TrialLedger) -> Vec<(String, BTreeMap<String, ParamValue>)> {
    ledger
        .trials
        .iter()
        .map(|t| (t.name.clone(), t.params.clone()))
        .collect()
}

fn best_of(spec: &StudySpec, seed: u64) -> f64 {
    let mut spec = spec.clone();
    spec.algorithm.seed = seed;
    let (ledger, _) = drive(&spec, &quadratic, &|_| false);
    ledger
        .best(Goal::Minimize)
        .and_then(|t| t.objective)
        .unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn tpe_beats_random_search_on_a_quadratic() {
    let tpe = study_yaml("{name: tpe}", 60, 1);
    let random = study_yaml("{name: random}", 60, 1);
    let tpe_best = median((0..10).map(|s| best_of(&tpe, s)).collect());
    let random_best = median((0..10).map(|s| best_of(&random, s)).collect());
    assert!(
        tpe_best < random_best / 2.0,
        "TPE median best {tpe_best} vs random {random_best}"
    );
}

#[test]
fn gp_beats_random_search_on_a_quadratic() {
    let gp = study_yaml("{name: gp, candidates: 200}", 25, 1);
    let random = study_yaml("{name: random}", 25, 1);
    let gp_best = median((0..5).map(|s| best_of(&gp, s)).collect());
    let random_best = median((0..5).map(|s| best_of(&random, s)).collect());
    assert!(
        gp_best < random_best / 4.0,
        "GP median best {gp_best} vs random {random_best}"
    );
}

#[test]
fn grid_enumerates_exactly_the_product_then_ends() {
    let spec: StudySpec = serde_yaml_ng::from_str(
        r#"
objective: {metric: loss, goal: minimize}
parameters:
  - {name: lr, type: double, min: 0.1, max: 0.3, step: 0.1}
  - {name: layers, type: int, min: 1, max: 2}
  - {name: optimizer, type: categorical, values: [adam, sgd]}
  - {name: momentum, type: discrete, values: [0.5, 0.9], when: "optimizer == sgd"}
algorithm: {name: grid}
budget: {maxTrials: 100, parallelTrials: 3}
"#,
    )
    .unwrap();
    let (ledger, end) = drive(&spec, &|_| 1.0, &|_| false);
    // 3 learning rates × 2 layer counts × (adam + sgd with 2 momentums) = 18.
    assert_eq!(ledger.trials.len(), 18);
    assert_eq!(end.reason, EndReason::SpaceExhausted);
    let unique: BTreeSet<String> = ledger
        .trials
        .iter()
        .map(|t| format!("{:?}", t.params))
        .collect();
    assert_eq!(unique.len(), 18);
    let first: Vec<String> = ledger.trials[..4]
        .iter()
        .map(|t| {
            t.params
                .values()
                .map(|v| v.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    // BTreeMap order: layers, lr, momentum, optimizer; the last parameter changes fastest.
    assert_eq!(
        first,
        ["1,0.1,adam", "1,0.1,0.5,sgd", "1,0.1,0.9,sgd", "2,0.1,adam"]
    );
    assert!(ledger.trials.iter().all(|t| {
        (t.params.get("optimizer") == Some(&ParamValue::Text("sgd".into())))
            == t.params.contains_key("momentum")
    }));
}

#[test]
fn a_study_stops_at_max_trials_and_respects_parallelism() {
    for algorithm in [
        "{name: random}",
        "{name: sobol}",
        "{name: tpe}",
        "{name: gp, candidates: 50}",
    ] {
        let spec = study_yaml(algorithm, 14, 3);
        let (ledger, end) = drive(&spec, &quadratic, &|_| false);
        assert_eq!(ledger.trials.len(), 14, "{algorithm}");
        assert_eq!(end.reason, EndReason::MaxTrials);
        assert_eq!(end.best, ledger.best(Goal::Minimize).map(|t| t.index));
        let names: BTreeSet<&String> = ledger.trials.iter().map(|t| &t.name).collect();
        assert_eq!(names.len(), 14, "{algorithm}: names are unique");
    }
}

#[test]
fn only_the_oldest_finished_trials_runs_expire() {
    let spec = study_yaml("{name: random}", 14, 3);
    let (mut ledger, _) = drive(&spec, &quadratic, &|_| false);
    assert_eq!(ledger.expired_runs(20).count(), 0, "fewer than kept");
    assert_eq!(
        ledger.expired_runs(4).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    // Active trials keep their runs and do not count; the newest finished ones are kept.
    ledger.trials[2].state = TrialState::Running;
    ledger.trials[12].state = TrialState::Pending;
    assert_eq!(
        ledger.expired_runs(4).collect::<Vec<_>>(),
        [0, 1, 3, 4, 5, 6, 7, 8]
    );
    assert_eq!(ledger.expired_runs(0).count(), 12);
}

#[test]
fn sobol_points_depend_on_the_seed_when_scrambled() {
    let run = |alg: &str| params_of(&drive(&study_yaml(alg, 8, 1), &quadratic, &|_| false).0);
    assert_eq!(run("{name: sobol, seed: 1}"), run("{name: sobol, seed: 1}"));
    assert_ne!(run("{name: sobol, seed: 1}"), run("{name: sobol, seed: 2}"));
    assert_eq!(
        run("{name: sobol, seed: 1, scrambled: false}"),
        run("{name: sobol, seed: 2, scrambled: false}")
    );
    // Unscrambled, the sequence starts at the centre of the cube.
    let first = &run("{name: sobol, scrambled: false}")[0].1;
    assert_eq!((num(first, "x"), num(first, "y")), (0.0, 0.0));
}

#[test]
fn the_target_ends_the_study_and_stops_running_trials() {
    let mut spec = study_yaml("{name: random}", 50, 2);
    spec.objective.target = Some(8.0);
    let (ledger, end) = drive(&spec, &quadratic, &|_| false);
    assert_eq!(end.reason, EndReason::TargetReached);
    let best = ledger.trial(end.best.unwrap()).unwrap();
    assert!(best.objective.unwrap() <= 8.0);
    assert!(ledger.trials.len() < 50);
    // The one still running when the target was reached is stopped by the decision.
    let d = decide(&spec, &ledger).unwrap();
    assert!(d.stop.iter().all(|s| s.reason == StopReason::StudyEnded));
    assert_eq!(
        d.stop.len(),
        ledger.trials.iter().filter(|t| t.state.is_active()).count()
    );
}

#[test]
fn too_many_failures_fail_the_study() {
    let mut spec = study_yaml("{name: random}", 20, 1);
    spec.budget.max_failed_trials = Some(2);
    let mut ledger = TrialLedger::new();
    for i in 0..3 {
        let d = decide(&spec, &ledger).unwrap();
        assert!(d.end.is_none());
        ledger.apply(&d).unwrap();
        ledger.record_failure(i).unwrap();
    }
    let end = decide(&spec, &ledger).unwrap().end.unwrap();
    assert_eq!(end.reason, EndReason::TooManyFailures);
    assert!(end.reason.is_failure());
}

#[test]
fn suggestions_depend_on_the_ledger_not_on_how_often_decide_ran() {
    let spec = study_yaml("{name: tpe, startupTrials: 3, seed: 5}", 30, 4);
    let (ledger, _) = drive(&spec, &quadratic, &|_| false);
    // Recompute each trial's start from the ledger as it was before it started.
    for n in [0, 3, 11, 20] {
        let before = TrialLedger {
            trials: ledger.trials[..n].to_vec(),
            warm_start: vec![],
        };
        let again = decide(&spec, &before).unwrap();
        assert_eq!(decide(&spec, &before).unwrap(), again);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn an_interrupted_study_runs_the_same_trials(
        algorithm in prop::sample::select(vec![
            "{name: random, seed: 3}",
            "{name: sobol, seed: 3}",
            "{name: tpe, seed: 3, startupTrials: 4}",
            "{name: gp, seed: 3, startupTrials: 4, candidates: 30}",
            "{name: asha, seed: 3, resource: {name: epochs, min: 1, max: 9}}",
            "{name: hyperband, seed: 3, resource: {name: epochs, min: 1, max: 9}}",
        ]),
        parallel in 1u32..4,
        crashes in prop::collection::btree_set(0usize..60, 0..15),
    ) {
        let spec = study_yaml(algorithm, 12, parallel);
        let (calm, calm_end) = drive(&spec, &quadratic, &|_| false);
        let (bumpy, bumpy_end) = drive(&spec, &quadratic, &|tick| crashes.contains(&tick));
        prop_assert_eq!(params_of(&calm), params_of(&bumpy));
        prop_assert_eq!(calm_end, bumpy_end);
        prop_assert_eq!(calm, bumpy);
    }

    /// Trials finish in whatever order they finish; a model-based study still runs the same
    /// trials, because trial i learns from exactly trials 0..=i-parallelTrials.
    #[test]
    fn the_order_trials_finish_in_does_not_change_the_trials(
        algorithm in prop::sample::select(vec![
            "{name: tpe, seed: 9, startupTrials: 3}",
            "{name: gp, seed: 9, startupTrials: 3, candidates: 30}",
        ]),
        parallel in 2u32..4,
        order in prop::collection::vec(0usize..4, 64),
    ) {
        let spec = study_yaml(algorithm, 12, parallel);
        let (oldest_first, _) = drive(&spec, &quadratic, &|_| false);
        let (shuffled, _) = drive_reporting(&spec, &quadratic, &|_| false, &|tick, _| {
            order[tick % order.len()]
        });
        prop_assert_eq!(params_of(&oldest_first), params_of(&shuffled));
    }

    #[test]
    fn every_suggestion_lies_in_the_space(seed in 0u64..1000, name in prop::sample::select(vec!["random", "sobol", "tpe", "gp"])) {
        let algorithm = match name {
            "tpe" | "gp" => format!("{{name: {name}, seed: {seed}, startupTrials: 3, candidates: 20}}"),
            _ => format!("{{name: {name}, seed: {seed}}}"),
        };
        let spec: StudySpec = serde_yaml_ng::from_str(&format!(r#"
objective: {{metric: loss, goal: maximize}}
parameters:
  - {{name: lr, type: double, min: 1.0e-4, max: 1.0, scale: log}}
  - {{name: units, type: int, min: 16, max: 256, step: 16, scale: log}}
  - {{name: batch, type: discrete, values: [32, 64, 128]}}
  - {{name: opt, type: categorical, values: [adam, sgd, rmsprop]}}
  - {{name: momentum, type: double, min: 0.0, max: 0.99, step: 0.01, when: "opt != adam"}}
algorithm: {algorithm}
budget: {{maxTrials: 8}}
"#)).unwrap();
        let study = Study::new(&spec).unwrap();
        let objective = |p: &BTreeMap<String, ParamValue>| num(p, "lr") * num(p, "units");
        let (ledger, _) = drive(&spec, &objective, &|_| false);
        for t in &ledger.trials {
            prop_assert!(study.space.encode(&t.params).is_some(), "{:?}", t.params);
        }
    }
}

fn running_with_series(ledger: &mut TrialLedger, spec: &StudySpec, series: &[f64]) -> u32 {
    let d = decide(spec, ledger).unwrap();
    let index = d.start[0].index;
    ledger.apply(&d).unwrap();
    ledger.record_running(index).unwrap();
    for (step, v) in series.iter().enumerate() {
        ledger.record_metric(index, step as u64 + 1, *v).unwrap();
    }
    index
}

#[test]
fn median_stopping_stops_a_clearly_worse_trial_at_its_grace_step_not_before() {
    let mut spec = study_yaml("{name: random}", 20, 1);
    spec.early_stopping = Some(EarlyStoppingSpec {
        median: Some(MedianStoppingSpec {
            min_trials: 3,
            grace_steps: 3,
        }),
    });
    let mut ledger = TrialLedger::new();
    for finals in [
        [3.0, 2.0, 1.0, 0.5],
        [3.5, 2.5, 1.5, 1.0],
        [2.5, 1.5, 1.0, 0.8],
    ] {
        let i = running_with_series(&mut ledger, &spec, &finals);
        ledger.record_success(i, finals[3]).unwrap();
    }
    let bad = running_with_series(&mut ledger, &spec, &[9.0, 9.0]);
    assert!(
        decide(&spec, &ledger).unwrap().stop.is_empty(),
        "step 2 is within grace"
    );
    ledger.record_metric(bad, 3, 8.0).unwrap();
    let d = decide(&spec, &ledger).unwrap();
    assert_eq!(d.stop.len(), 1);
    assert_eq!(d.stop[0].index, bad);
    assert_eq!(
        d.stop[0].reason,
        StopReason::Median {
            step: 3,
            best: 8.0,
            median: 1.0
        }
    );
    // A stopped trial frees its slot for the next one in the same decision.
    assert_eq!(d.start.len(), 1);
    ledger.apply(&d).unwrap();
    assert_eq!(ledger.trial(bad).unwrap().state, TrialState::Stopped);
}

/// TPE learns from trials 0..=i-parallelTrials; a trial stopped in the same decision counts as
/// finished there, so the next trials start at once and the study does not end early.
#[test]
fn a_trial_stopped_by_median_stopping_frees_its_slot_for_a_model_based_study() {
    let mut spec = study_yaml("{name: tpe, seed: 4, startupTrials: 2}", 12, 2);
    spec.early_stopping = Some(EarlyStoppingSpec {
        median: Some(MedianStoppingSpec {
            min_trials: 2,
            grace_steps: 1,
        }),
    });
    let mut ledger = TrialLedger::new();
    let d = decide(&spec, &ledger).unwrap();
    ledger.apply(&d).unwrap();
    for (i, series) in [(0, [2.0, 1.0]), (1, [2.5, 1.5])] {
        ledger.record_running(i).unwrap();
        for (step, v) in series.iter().enumerate() {
            ledger.record_metric(i, step as u64 + 1, *v).unwrap();
        }
        ledger.record_success(i, series[1]).unwrap();
    }
    let d = decide(&spec, &ledger).unwrap();
    assert_eq!(d.start.len(), 2);
    ledger.apply(&d).unwrap();
    // Trial 2 falls behind; trial 3 finishes.
    ledger.record_running(2).unwrap();
    ledger.record_metric(2, 1, 9.0).unwrap();
    ledger.record_metric(2, 2, 9.0).unwrap();
    ledger.record_running(3).unwrap();
    ledger.record_success(3, 0.5).unwrap();
    let d = decide(&spec, &ledger).unwrap();
    assert_eq!(d.stop.iter().map(|s| s.index).collect::<Vec<_>>(), [2]);
    assert_eq!(d.start.iter().map(|s| s.index).collect::<Vec<_>>(), [4, 5]);
    assert_eq!(d.end, None);
    // Decided again after the shell recorded the stop: the same trials.
    let starts = d.start.clone();
    ledger
        .apply(&Decisions {
            stop: d.stop,
            ..Decisions::default()
        })
        .unwrap();
    assert_eq!(decide(&spec, &ledger).unwrap().start, starts);
}

#[test]
fn median_stopping_spares_good_trials_and_waits_for_min_trials() {
    let mut spec = study_yaml("{name: random}", 20, 1);
    spec.early_stopping = Some(EarlyStoppingSpec {
        median: Some(MedianStoppingSpec {
            min_trials: 3,
            grace_steps: 1,
        }),
    });
    let mut ledger = TrialLedger::new();
    for finals in [[3.0, 2.0], [3.5, 2.5]] {
        let i = running_with_series(&mut ledger, &spec, &finals);
        ledger.record_success(i, finals[1]).unwrap();
    }
    running_with_series(&mut ledger, &spec, &[9.0, 9.0]);
    assert!(
        decide(&spec, &ledger).unwrap().stop.is_empty(),
        "only 2 completed trials"
    );
    let mut ledger = TrialLedger::new();
    for finals in [[3.0, 2.0], [3.5, 2.5], [3.2, 2.2]] {
        let i = running_with_series(&mut ledger, &spec, &finals);
        ledger.record_success(i, finals[1]).unwrap();
    }
    running_with_series(&mut ledger, &spec, &[2.9, 2.0]);
    assert!(
        decide(&spec, &ledger).unwrap().stop.is_empty(),
        "better than the median"
    );
}

fn asha_spec(parallel: u32) -> StudySpec {
    study_yaml(
        "{name: asha, seed: 1, resource: {name: epochs, min: 1, max: 9}, reductionFactor: 3}",
        9,
        parallel,
    )
}

#[test]
fn asha_promotes_the_top_third_to_the_next_rung_with_the_larger_budget() {
    let spec = asha_spec(9);
    let mut ledger = TrialLedger::new();
    let d = decide(&spec, &ledger).unwrap();
    assert_eq!(d.start.len(), 9);
    assert!(d.start.iter().all(|s| s.budget == Some(1)));
    ledger.apply(&d).unwrap();
    // Losses 9, 8, ..., 1: trials 8, 7, 6 are the best third.
    for i in 0..9u32 {
        ledger.record_success(i, f64::from(9 - i)).unwrap();
    }
    let d = decide(&spec, &ledger).unwrap();
    let promoted: Vec<(u32, u64, u64)> = d
        .promote
        .iter()
        .map(|p| (p.index, p.from_budget, p.budget))
        .collect();
    assert_eq!(promoted, [(8, 1, 3), (7, 1, 3), (6, 1, 3)]);
    assert!(d.start.is_empty() && d.end.is_none());
    ledger.apply(&d).unwrap();
    let study = Study::new(&spec).unwrap();
    let t8 = ledger.trial(8).unwrap();
    assert_eq!((t8.state, t8.budget), (TrialState::Pending, Some(3)));
    assert_eq!(t8.name, d.promote[0].name, "a promotion keeps the trial");
    assert_eq!(
        study.trial_values(t8).get("epochs"),
        Some(&ParamValue::Int(3))
    );
    // At rung 3 only one of three goes on, to the full budget.
    for (i, loss) in [(8, 0.5), (7, 0.7), (6, 0.2)] {
        ledger.record_success(i, loss).unwrap();
    }
    let d = decide(&spec, &ledger).unwrap();
    let promoted: Vec<(u32, u64)> = d.promote.iter().map(|p| (p.index, p.budget)).collect();
    assert_eq!(promoted, [(6, 9)]);
    ledger.apply(&d).unwrap();
    ledger.record_success(6, 0.1).unwrap();
    assert_eq!(
        ledger.trial(6).unwrap().rungs.len(),
        3,
        "the rung history is kept"
    );
    let end = decide(&spec, &ledger).unwrap().end.unwrap();
    assert_eq!((end.reason, end.best), (EndReason::MaxTrials, Some(6)));
}

#[test]
fn asha_promotes_asynchronously() {
    let spec = asha_spec(1);
    let mut ledger = TrialLedger::new();
    // Three trials done on rung 1: the best of them goes on before a fourth starts.
    for loss in [5.0, 1.0, 3.0] {
        let d = decide(&spec, &ledger).unwrap();
        assert_eq!(d.start.len(), 1);
        ledger.apply(&d).unwrap();
        ledger.record_success(d.start[0].index, loss).unwrap();
    }
    let d = decide(&spec, &ledger).unwrap();
    assert_eq!(d.promote.len(), 1);
    assert_eq!((d.promote[0].index, d.promote[0].budget), (1, 3));
    assert!(d.start.is_empty(), "the slot goes to the promotion");
}

#[test]
fn hyperband_runs_its_brackets_to_the_end() {
    let spec = study_yaml(
        "{name: hyperband, seed: 2, resource: {name: epochs, min: 1, max: 9}}",
        15,
        2,
    );
    let (ledger, end) = drive(&spec, &quadratic, &|_| false);
    assert_eq!(end.reason, EndReason::MaxTrials);
    assert_eq!(ledger.trials.len(), 15);
    // Brackets of 9 (budgets 1, 3, 9), 5 (3, 9) and 3 (9) trials.
    let budgets: BTreeSet<(u32, u64)> = ledger
        .trials
        .iter()
        .map(|t| (t.bracket.unwrap(), t.rungs[0].budget))
        .collect();
    assert_eq!(budgets, BTreeSet::from([(0, 1), (1, 3), (2, 9)]));
    let full: Vec<usize> = (0..3)
        .map(|b| {
            ledger
                .trials
                .iter()
                .filter(|t| t.bracket == Some(b) && t.budget == Some(9))
                .count()
        })
        .collect();
    assert_eq!(
        full,
        [1, 1, 1],
        "each bracket ends with one trial on the full budget"
    );
}

#[test]
fn warm_start_seeds_the_model_and_refuses_an_incompatible_space() {
    let spec = study_yaml("{name: tpe, seed: 4, startupTrials: 10}", 20, 1);
    let earlier: StudySpec = spec.clone();
    let (warm, _) = drive(
        &study_yaml("{name: tpe, seed: 9}", 40, 1),
        &quadratic,
        &|_| false,
    );
    let mut ledger = TrialLedger {
        trials: vec![],
        warm_start: vec![WarmStartStudy {
            study: "before".into(),
            parameters: earlier.parameters.clone(),
            trials: warm.trials,
        }],
    };
    // With 40 earlier trials the model is used from the first trial on, where a cold study
    // draws its first 10 at random: over ten seeds its best of 10 is far better.
    let best_of_ten = |start: &TrialLedger, seed: u64| {
        let mut spec = spec.clone();
        spec.algorithm.seed = seed;
        let mut ledger = start.clone();
        for _ in 0..10 {
            let d = decide(&spec, &ledger).unwrap();
            let (index, value) = (d.start[0].index, quadratic(&d.start[0].params));
            ledger.apply(&d).unwrap();
            ledger.record_success(index, value).unwrap();
        }
        ledger
            .best(Goal::Minimize)
            .and_then(|t| t.objective)
            .unwrap()
    };
    let cold = median(
        (0..10)
            .map(|s| best_of_ten(&TrialLedger::new(), s))
            .collect(),
    );
    let seeded = median((0..10).map(|s| best_of_ten(&ledger, s)).collect());
    assert!(seeded < cold / 4.0, "warm {seeded} vs cold {cold}");
    ledger.warm_start[0].parameters[1].scale = Some(Scale::Log);
    ledger.warm_start[0].parameters[1].min = Some(0.1);
    let err = decide(&spec, &ledger).unwrap_err();
    assert_eq!(
        err.to_string(),
        "warm-start study \"before\" is incompatible: parameter \"y\" is searched on a linear \
         scale here and a log one there"
    );
    ledger.warm_start[0].parameters.remove(1);
    let err = decide(&spec, &ledger).unwrap_err();
    assert!(
        err.to_string()
            .contains("parameter \"y\" is not in its space"),
        "{err}"
    );
}

#[test]
fn a_ledger_out_of_order_is_refused() {
    let spec = study_yaml("{name: random}", 5, 1);
    let mut ledger = TrialLedger::new();
    ledger.apply(&decide(&spec, &ledger).unwrap()).unwrap();
    ledger.trials[0].index = 3;
    assert_eq!(
        decide(&spec, &ledger).unwrap_err().reason(),
        "InconsistentLedger"
    );
}
