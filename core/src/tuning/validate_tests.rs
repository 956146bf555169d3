//! Bad input: every rule of the spec, with the path and message a user sees.

use super::*;

const BASE: &str = r#"
objective: {metric: val_accuracy, goal: maximize}
parameters:
  - {name: learning_rate, type: double, min: 1.0e-4, max: 0.1, scale: log}
  - {name: batch_size, type: discrete, values: [32, 64, 128]}
  - {name: hidden, type: int, min: 32, max: 512, step: 32}
  - {name: optimizer, type: categorical, values: [adam, sgd]}
  - {name: momentum, type: double, min: 0.0, max: 0.9, when: "optimizer == sgd"}
algorithm: {name: tpe, seed: 7}
budget: {maxTrials: 10, parallelTrials: 2}
"#;

fn spec(edit: impl FnOnce(&mut StudySpec)) -> StudySpec {
    let mut s: StudySpec = serde_yaml_ng::from_str(BASE).unwrap();
    edit(&mut s);
    s
}

fn issues(s: &StudySpec) -> Vec<Issue> {
    match Study::new(s) {
        Err(TuningError::InvalidSpec { issues }) => issues,
        other => panic!("expected invalid spec, got {other:?}"),
    }
}

fn param(name: &str, kind: ParameterType) -> ParameterSpec {
    ParameterSpec {
        name: name.into(),
        kind,
        min: None,
        max: None,
        scale: None,
        step: None,
        values: None,
        when: None,
    }
}

#[test]
fn the_base_spec_is_valid() {
    let study = Study::new(&spec(|_| {})).unwrap();
    assert_eq!(study.space.len(), 5);
    assert_eq!(study.parallel_trials, 2);
}

#[test]
fn each_rule_reports_its_path() {
    type Edit = fn(&mut StudySpec);
    let table: Vec<(&str, Edit, &str, &str)> = vec![
        (
            "min above max",
            |s| s.parameters[2].min = Some(600.0),
            "spec.parameters[2].min",
            "greater than max",
        ),
        (
            "log with min 0",
            |s| s.parameters[0].min = Some(0.0),
            "spec.parameters[0].min",
            "scale: log needs min > 0",
        ),
        (
            "empty values",
            |s| s.parameters[1].values = Some(vec![]),
            "spec.parameters[1].values",
            "must not be empty",
        ),
        (
            "step does not divide",
            |s| s.parameters[2].step = Some(50.0),
            "spec.parameters[2].step",
            "does not divide",
        ),
        (
            "when on unknown",
            |s| s.parameters[4].when = Some("optimiser == sgd".into()),
            "spec.parameters[4].when",
            "did you mean \"optimizer\"",
        ),
        (
            "when value unknown",
            |s| s.parameters[4].when = Some("optimizer == sdg".into()),
            "spec.parameters[4].when",
            "did you mean \"sgd\"",
        ),
        (
            "parallel above max",
            |s| s.budget.parallel_trials = 20,
            "spec.budget.parallelTrials",
            "more than maxTrials",
        ),
        (
            "grid over a continuous double",
            |s| s.algorithm.name = AlgorithmName::Grid,
            "spec.parameters[0].step",
            "grid search needs a step",
        ),
        (
            "duplicate name",
            |s| s.parameters[3].name = "hidden".into(),
            "spec.parameters[3].name",
            "also the name of spec.parameters[2]",
        ),
        (
            "int with a fraction",
            |s| s.parameters[2].min = Some(1.5),
            "spec.parameters[2].min",
            "not a whole number",
        ),
        (
            "strings in discrete",
            |s| s.parameters[1].values = Some(vec![Literal::Text("a".into())]),
            "spec.parameters[1].values[0]",
            "takes numbers",
        ),
        (
            "values on a double",
            |s| s.parameters[0].values = Some(vec![Literal::Number(1.0)]),
            "spec.parameters[0].values",
            "does not take values",
        ),
        (
            "asha without resource",
            |s| s.algorithm.name = AlgorithmName::Asha,
            "spec.algorithm.resource",
            "needs a resource",
        ),
        (
            "setting of another algorithm",
            |s| s.algorithm.scrambled = Some(true),
            "spec.algorithm.scrambled",
            "tpe algorithm does not take",
        ),
        (
            "when on a continuous parent",
            |s| s.parameters[2].when = Some("learning_rate == 0.01".into()),
            "spec.parameters[2].when",
            "continuous double",
        ),
        (
            "not a condition",
            |s| s.parameters[4].when = Some("optimizer".into()),
            "spec.parameters[4].when",
            "is not a condition",
        ),
    ];
    for (what, edit, path, message) in table {
        let found = issues(&spec(edit));
        assert!(
            found
                .iter()
                .any(|i| i.path == path && i.message.contains(message)),
            "{what}: expected {path}: ...{message}..., got {found:?}"
        );
    }
}

#[test]
fn a_cycle_of_whens_is_named() {
    let s = spec(|s| {
        let mut a = param("a", ParameterType::Categorical);
        a.values = Some(vec![Literal::Text("x".into())]);
        a.when = Some("b == y".into());
        let mut b = param("b", ParameterType::Categorical);
        b.values = Some(vec![Literal::Text("y".into())]);
        b.when = Some("a == x".into());
        s.parameters.extend([a, b]);
    });
    let found = issues(&s);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "spec.parameters[5].when");
    assert!(
        found[0].message.contains("cycle: a -> b -> a"),
        "{}",
        found[0]
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let s = spec(|s| {
        s.parameters[2].min = Some(600.0);
        s.budget.parallel_trials = 20;
        s.objective.metric = String::new();
    });
    assert_eq!(issues(&s).len(), 3);
}

#[test]
fn errors_display_path_and_message() {
    let e = Study::new(&spec(|s| s.parameters[2].min = Some(600.0))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid study: spec.parameters[2].min: min (600) is greater than max (512)"
    );
    assert_eq!(e.reason(), "InvalidStudy");
}

#[test]
fn unknown_fields_are_refused_with_their_path() {
    let yaml = BASE.replace("maxTrials: 10", "maxTrial: 10");
    let de = serde_yaml_ng::Deserializer::from_str(&yaml);
    let err = serde_path_to_error::deserialize::<_, StudySpec>(de).unwrap_err();
    assert_eq!(err.path().to_string(), "budget.maxTrial");
    assert!(err.to_string().contains("maxTrial"), "{err}");
}
