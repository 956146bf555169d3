//! Loading real files: one fixture per kind of bad input, asserting the exact line a user
//! sees, plus a file full of independent mistakes and a pipeline that uses every feature.
//!
//! Fixtures live in `core/tests/fixtures/manifests/`; tests run from the crate root, so the
//! relative paths below are also what the diagnostics print.

use std::path::PathBuf;

use serde_json::json;

use super::*;
use crate::graph::topological_order;

const FIXTURES: &str = "tests/fixtures/manifests";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(FIXTURES).join(name)
}

/// The diagnostics of loading one fixture, as printed.
fn errors(name: &str) -> Vec<String> {
    match load(&[fixture(name)]) {
        Ok(docs) => panic!("{name} loaded {} documents without errors", docs.len()),
        Err(diagnostics) => diagnostics.iter().map(ToString::to_string).collect(),
    }
}

fn loaded(name: &str) -> Vec<LoadedDocument> {
    load(&[fixture(name)]).unwrap_or_else(|e| {
        let lines: Vec<String> = e.iter().map(ToString::to_string).collect();
        panic!("{name}:\n{}", lines.join("\n"))
    })
}

fn lines(diagnostics: &[Diagnostic]) -> Vec<String> {
    diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn malformed_yaml_names_the_document_line_and_column() {
    assert_eq!(
        errors("malformed.yaml"),
        [
            "tests/fixtures/manifests/malformed.yaml[1] (document): malformed YAML: did not find \
             expected '-' indicator at line 15 column 6, while parsing a block collection at line \
             13 column 5"
        ]
    );
}

#[test]
fn unknown_field_deep_inside_a_step() {
    assert_eq!(
        errors("unknown-field.yaml"),
        [
            "tests/fixtures/manifests/unknown-field.yaml[0] spec.steps[0].retry.backof: unknown \
             field (did you mean \"backoff\"?)"
        ]
    );
}

#[test]
fn wrong_type() {
    assert_eq!(
        errors("wrong-type.yaml"),
        [
            "tests/fixtures/manifests/wrong-type.yaml[0] spec.steps[0].retry.limit: expected an \
             integer, got the string \"three\""
        ]
    );
}

#[test]
fn missing_required_field() {
    assert_eq!(
        errors("missing-required.yaml"),
        [
            "tests/fixtures/manifests/missing-required.yaml[0] spec.steps[0].image: missing required field"
        ]
    );
}

#[test]
fn duplicate_step_names() {
    assert_eq!(
        errors("duplicate-steps.yaml"),
        [
            "tests/fixtures/manifests/duplicate-steps.yaml[0] spec.steps[1].name: duplicate step \
             name \"train\" (also spec.steps[0])"
        ]
    );
}

#[test]
fn cycle_lists_its_steps() {
    assert_eq!(
        errors("cycle.yaml"),
        [
            "tests/fixtures/manifests/cycle.yaml[0] spec.steps[0]: dependency cycle: a -> c -> b -> a"
        ]
    );
}

#[test]
fn unknown_step_reference_with_hint() {
    assert_eq!(
        errors("unknown-step.yaml"),
        [
            "tests/fixtures/manifests/unknown-step.yaml[0] spec.steps[2].inputs.artifacts[0].from: \
             unknown step \"trian\" (did you mean \"train\"?)"
        ]
    );
}

#[test]
fn unknown_param() {
    assert_eq!(
        errors("unknown-param.yaml"),
        [
            "tests/fixtures/manifests/unknown-param.yaml[0] spec.steps[0].command[1]: unknown \
             parameter \"epoch\" (did you mean \"epochs\"?)"
        ]
    );
}

#[test]
fn type_mismatch_in_when() {
    assert_eq!(
        errors("when-type.yaml"),
        [
            "tests/fixtures/manifests/when-type.yaml[0] spec.steps[0].when: `>` cannot order a \
             bool ({{params.debug}}); only numbers can be ordered"
        ]
    );
}

#[test]
fn type_mismatch_in_default() {
    assert_eq!(
        errors("default-type.yaml"),
        [
            "tests/fixtures/manifests/default-type.yaml[0] spec.params[0].default: expected an \
             int, got the number 0.5"
        ]
    );
}

#[test]
fn missing_required_param_on_the_command_line() {
    let docs = loaded("missing-param.yaml");
    let pipeline_only: Vec<LoadedDocument> = docs
        .iter()
        .filter(|d| d.document.kind() == "Pipeline")
        .cloned()
        .collect();
    let target = select(&pipeline_only).unwrap();
    let errors = resolve_params(&target.spec, &target.params, &target.source).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/missing-param.yaml[0] -p dataset: missing required \
             parameter \"dataset\" (string, no default); give it with -p dataset=VALUE"
        ]
    );
    let given = [("dataset".to_string(), json!("fashion"))];
    let params = resolve_params(&target.spec, &given, &target.source).unwrap();
    assert_eq!(params["dataset"], json!("fashion"));
    assert_eq!(params["epochs"], json!(5));
}

#[test]
fn missing_required_param_in_a_pipeline_run() {
    let docs = loaded("missing-param.yaml");
    let target = select(&docs).unwrap();
    assert_eq!(target.source.index, 1, "the PipelineRun is what runs");
    let Document::PipelineRun(run) = &docs[1].document else {
        panic!("not a run")
    };
    let errors = resolve_run_params(&target.spec, &run.spec.params, &target.source).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/missing-param.yaml[1] spec.params: missing required \
             parameter \"dataset\" (string, no default); give it with -p dataset=VALUE"
        ]
    );
}

#[test]
fn bad_duration() {
    assert_eq!(
        errors("bad-duration.yaml"),
        [
            "tests/fixtures/manifests/bad-duration.yaml[0] spec.steps[0].timeout: invalid \
             duration \"10 minuts\": unknown unit \" minuts\" (write e.g. 30s, 5m, 1h30m or \
             500ms; units are ns, us, ms, s, m and h)"
        ]
    );
}

#[test]
fn bad_quantity() {
    assert_eq!(
        errors("bad-quantity.yaml"),
        [
            "tests/fixtures/manifests/bad-quantity.yaml[0] spec.steps[0].resources.memory: \
             invalid quantity \"4GB\": expected a number with an optional suffix (m, k, M, G, T, \
             P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), e.g. 500m or 4Gi"
        ]
    );
}

#[test]
fn bad_cron() {
    assert_eq!(
        errors("bad-cron.yaml"),
        [
            "tests/fixtures/manifests/bad-cron.yaml[0] spec.schedule: invalid cron schedule \
             \"0 25 * * *\": hour 25 is out of range 0-23"
        ]
    );
}

#[test]
fn item_outside_for_each() {
    assert_eq!(
        errors("item-outside-foreach.yaml"),
        [
            "tests/fixtures/manifests/item-outside-foreach.yaml[0] spec.steps[0].command[1]: \
             {{item}} is only defined in steps with forEach"
        ]
    );
}

#[test]
fn both_from_and_path() {
    assert_eq!(
        errors("from-and-path.yaml"),
        [
            "tests/fixtures/manifests/from-and-path.yaml[0] spec.steps[1].inputs.artifacts[0]: \
             set exactly one of from or path, not both"
        ]
    );
}

#[test]
fn an_artifact_named_by_a_parameter_needs_a_declared_string_parameter() {
    assert_eq!(
        errors("artifact-from-param.yaml"),
        [
            "tests/fixtures/manifests/artifact-from-param.yaml[0] \
             spec.steps[0].inputs.artifacts[1].from: parameter \"epochs\" is of type int; an \
             artifact named by a parameter needs a string (a digest, a path, or empty for none)",
            "tests/fixtures/manifests/artifact-from-param.yaml[0] \
             spec.steps[0].inputs.artifacts[2].from: unknown parameter \"extra_dta\" (did you \
             mean \"extra_data\"?)",
        ]
    );
}

#[test]
fn several_independent_errors_are_all_reported() {
    let file = "tests/fixtures/manifests/several-errors.yaml";
    let expected: Vec<String> = [
        "[0] spec.params[2].name: duplicate parameter name \"epochs\" (also spec.params[0])",
        "[0] spec.params[0].default: expected an int, got the string \"5\" (write it without quotes)",
        "[0] spec.steps[0].name: invalid step name \"Ingest\": use at most 63 lowercase letters, \
         digits, \"-\" and \"_\", starting with a letter or digit",
        "[0] spec.steps[0].env[1].name: duplicate environment variable name \"MODE\" (also \
         spec.steps[0].env[0])",
        "[0] spec.steps[1].dependsOn[0]: step \"train\" cannot depend on itself",
        "[0] spec.steps[1].dependsOn[1]: \"cleanup\" is a finally step; main steps cannot depend \
         on finally steps",
        "[0] spec.steps[1].command[1]: {{steps.Ingest.outputs.artifacts.data}} can only be used \
         as the whole of inputs.artifacts[].from; declare an input artifact and use \
         {{inputs.artifacts.NAME}}",
        "[0] spec.steps[1].command[2]: unknown parameter \"epochz\" (did you mean \"epochs\"?)",
        "[0] spec.steps[1].forEach: forEach needs a list: parameter \"epochs\" is an int",
        "[0] spec.steps[1].when: expected an operand at the end (column 24)",
        "[0] spec.steps[1].resources.cpu: invalid quantity \"2 cores\": expected a number with an \
         optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), e.g. \
         500m or 4Gi",
        "[0] spec.steps[1].retry.backoff.initial: duration must be greater than zero, got \"0s\"",
        "[0] spec.steps[1].retry.backoff.factor: must be a number of at least 1, got 0.5",
        "[0] spec.steps[2].image: must not be empty",
        "[0] spec.steps[2].command: a step needs a command",
        "[0] spec.steps[2].inputs.artifacts[1]: set one of from (an upstream output artifact) or \
         path (a local file)",
        "[0] spec.steps[2].inputs.artifacts[0].from: from must be exactly one \
         {{steps.STEP.outputs.artifacts.NAME}} or {{params.NAME}} reference",
        "[0] spec.finally[0].command[1]: unknown input parameter \"what\" (there are no input \
         parameters in this step)",
        "[0] spec.schedule: invalid cron schedule \"every day\": expected 5 fields (minute hour \
         day-of-month month day-of-week), got 2",
        "[1] apiVersion: unknown apiVersion \"toucan.dev/v1\" (expected \"toucan.dev/v1alpha1\")",
        "[1] kind: unknown kind \"Pipline\" (expected Pipeline, PipelineRun, TrainingJob, TuningStudy or \
         Endpoint; did you mean \"Pipeline\"?)",
        "[2] spec.params[2].name: duplicate parameter \"epochs\" (also spec.params[0])",
        "[3] metadata.labels.attempt: expected a string, got the number 1",
        "[3] spec.concurrency: unknown value \"Sometimes\" (expected one of: Allow, Forbid, \
         Replace)",
        "[3] spec.steps[0].command: expected a list, got the string \"run\"",
        "[3] spec.steps[0].resources.gpu: must be at least 0, got -1",
        "[3] spec.steps[0].resources.disk: unknown field (expected one of: cpu, gpu, memory)",
        "[3] spec.steps[0].image: missing required field",
        "[4] (document): malformed YAML: did not find expected ',' or '}' at line 64 column 5, \
         while parsing a flow mapping at line 63 column 11",
        "[2] spec.params[0].value: expected an int, got the string \"five\"",
        "[2] spec.params[1].name: unknown parameter \"lr\" (expected one of: epochs, tags)",
    ]
    .iter()
    .map(|line| format!("{file}{line}"))
    .collect();
    assert_eq!(errors("several-errors.yaml"), expected);
}

#[test]
fn every_feature_loads_and_runs() {
    let docs = loaded("every-feature.yaml");
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0].source.to_string(),
        "tests/fixtures/manifests/every-feature.yaml[0]"
    );
    assert_eq!(
        docs[1].source.index, 2,
        "the empty document keeps its place"
    );
    assert_eq!(docs[0].base_dir, PathBuf::from(FIXTURES));
    let Document::Pipeline(pipeline) = &docs[0].document else {
        panic!("not a pipeline")
    };
    let spec = &pipeline.spec;
    assert_eq!(spec.steps.len(), 7);
    assert_eq!(spec.finally.len(), 2);
    assert_eq!(spec.params.len(), 7);
    let steps: Vec<&crate::api::Step> = spec.steps.iter().collect();
    let order: Vec<&str> = topological_order(&steps)
        .unwrap()
        .iter()
        .map(|&i| steps[i].name.as_str())
        .collect();
    assert_eq!(
        order,
        [
            "ingest",
            "train",
            "evaluate",
            "sweep",
            "per-class",
            "smoke",
            "export"
        ]
    );

    let target = select(&docs).unwrap();
    assert_eq!(target.pipeline_name, "every-feature");
    assert_eq!(target.source.index, 2);
    assert_eq!(target.base_dir, PathBuf::from(FIXTURES));
    let params = resolve_params(&target.spec, &target.params, &target.source).unwrap();
    assert_eq!(
        serde_json::to_value(&params).unwrap(),
        json!({
            "augment": true,
            "dataset_version": "2024-06",
            "epochs": 10,
            "learning_rate": 0.002,
            "min_accuracy": 0.8,
            "model": "resnet",
            "seeds": [7, 8],
        })
    );
}

#[test]
fn directories_load_their_yaml_files_in_order() {
    let docs = load(&[fixture("split")]).unwrap();
    let sources: Vec<String> = docs.iter().map(|d| d.source.to_string()).collect();
    assert_eq!(
        sources,
        [
            "tests/fixtures/manifests/split/pipeline.yaml[0]",
            "tests/fixtures/manifests/split/run.yml[0]"
        ]
    );
    let target = select(&docs).unwrap();
    assert_eq!(target.pipeline_name, "fashion");
    assert_eq!(target.params, [("epochs".to_string(), json!(2))]);
    assert_eq!(target.base_dir, fixture("split"));
    assert_eq!(
        target.source.to_string(),
        "tests/fixtures/manifests/split/run.yml[0]"
    );
}

#[test]
fn missing_files_and_empty_files_are_named() {
    let errors = load(&[fixture("nope.yaml"), fixture("empty.yaml")]).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/nope.yaml[0] (file): no such file or directory",
            "tests/fixtures/manifests/empty.yaml[0] (file): no documents: expected a Pipeline or \
             a PipelineRun",
        ]
    );
}

#[test]
fn duplicate_names_across_documents() {
    assert_eq!(
        errors("duplicate-pipelines.yaml"),
        [
            "tests/fixtures/manifests/duplicate-pipelines.yaml[1] metadata.name: duplicate \
             Pipeline \"demo\" (also in tests/fixtures/manifests/duplicate-pipelines.yaml[0])"
        ]
    );
    let docs = load(&[fixture("split"), fixture("split/pipeline.yaml")]).unwrap();
    assert_eq!(docs.len(), 2, "a file named twice is read once");
    let errors = load(&[fixture("split"), fixture("dangling-run.yaml")]).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/dangling-run.yaml[0] metadata.name: duplicate Pipeline \
             \"fashion\" (also in tests/fixtures/manifests/split/pipeline.yaml[0])"
        ]
    );
}

#[test]
fn pipeline_run_values_are_checked_against_their_pipeline() {
    assert_eq!(
        errors("run-bad-params.yaml"),
        [
            "tests/fixtures/manifests/run-bad-params.yaml[1] spec.params[0].value: expected an \
             int, got the string \"5\" (write it without quotes)",
            "tests/fixtures/manifests/run-bad-params.yaml[1] spec.params[1].value: expected a \
             list, got the string \"a,b\" (write a YAML list: [a, b])",
            "tests/fixtures/manifests/run-bad-params.yaml[1] spec.params[2].name: unknown \
             parameter \"epoch\" (did you mean \"epochs\"?)",
        ]
    );
}

#[test]
fn select_reports_a_dangling_reference() {
    let docs = loaded("dangling-run.yaml");
    let errors = select(&docs).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/dangling-run.yaml[1] spec.pipelineRef.name: no Pipeline \
             \"fashon\" in the loaded files (did you mean \"fashion\"?)"
        ]
    );
}

#[test]
fn select_reports_ambiguity() {
    let docs = loaded("two-pipelines.yaml");
    let errors = select(&docs).unwrap_err();
    assert_eq!(
        lines(&errors),
        [
            "tests/fixtures/manifests/two-pipelines.yaml[0] (document): 2 Pipelines to choose \
             from (also tests/fixtures/manifests/two-pipelines.yaml[1]); run a single file, or a \
             PipelineRun naming the Pipeline to run"
        ]
    );
}

#[test]
fn select_runs_an_inline_pipeline_spec() {
    let docs = loaded("inline-run.yaml");
    let target = select(&docs).unwrap();
    assert_eq!(target.pipeline_name, "quick");
    assert_eq!(target.spec.steps[0].name, "say");
    let params = resolve_params(&target.spec, &target.params, &target.source).unwrap();
    assert_eq!(params["greeting"], json!("hello"));
}

#[test]
fn diagnostics_display_as_file_index_path_message() {
    let d = Diagnostic::new(
        &Source {
            file: "pipeline.yaml".into(),
            index: 0,
        },
        "spec.steps[2].inputs.artifacts[0].from",
        "unknown step \"trian\"",
    );
    assert_eq!(
        d.to_string(),
        "pipeline.yaml[0] spec.steps[2].inputs.artifacts[0].from: unknown step \"trian\""
    );
}

#[test]
fn the_shipped_examples_are_valid() {
    for (dir, name, param, default) in [
        ("fashion-mnist", "fashion-mnist", "epochs", json!(3)),
        (
            "transfer-learning",
            "transfer-learning",
            "per_class",
            json!(100),
        ),
    ] {
        let docs = load(&[PathBuf::from("../examples").join(dir)]).unwrap_or_else(|e| {
            panic!("{}", lines(&e).join("\n"));
        });
        let target = select(&docs).unwrap();
        assert_eq!(target.pipeline_name, name);
        let params = resolve_params(&target.spec, &[], &target.source).unwrap();
        assert_eq!(params[param], default);
    }
    let example = PathBuf::from("../examples/distributed-training");
    for (file, name) in [
        ("pipeline.yaml", "distributed-training"),
        ("job.yaml", "fmnist-ddp"),
    ] {
        let docs = load(&[example.join(file)]).unwrap_or_else(|e| {
            panic!("{}", lines(&e).join("\n"));
        });
        let target = select(&docs).unwrap();
        assert_eq!(target.pipeline_name, name);
        let gang = target.spec.steps.iter().find_map(|s| s.gang()).unwrap();
        assert_eq!(gang.roles["worker"].replicas, 2);
    }
}

/// The diagnostics of validating an inline spec, as printed. Lines are unindented first, so
/// top-level keys and block list items may be indented like the code around them.
fn spec_errors(yaml: &str) -> Vec<String> {
    let yaml: Vec<&str> = yaml.lines().map(str::trim_start).collect();
    let spec: crate::api::PipelineSpec = serde_yaml_ng::from_str(&yaml.join("\n")).unwrap();
    let source = Source {
        file: "p.yaml".into(),
        index: 0,
    };
    lines(&validate_spec(&spec, &source, "spec"))
}

#[test]
fn reference_rules() {
    let cases: &[(&str, &str)] = &[
        (
            "steps: [{name: a, image: i, command: [x, '{{steps.f.outputs.params.o}}']}]
             finally: [{name: f, image: i, command: [x], outputs: {params: [{name: o}]}}]",
            "spec.steps[0].command[1]: \"f\" is a finally step; main steps cannot depend on \
             finally steps",
        ),
        (
            "steps:
               - {name: a, image: i, command: [x], outputs: {params: [{name: accuracy}]}}
               - {name: b, image: i, command: [x, '{{steps.a.outputs.params.acc}}']}",
            "spec.steps[1].command[1]: step \"a\" has no output parameter \"acc\" (did you mean \
             \"accuracy\"?)",
        ),
        (
            "steps: [{name: a, image: i, command: [x, '{{steps.a.outputs.params.o}}'],
                      outputs: {params: [{name: o}]}}]",
            "spec.steps[0].command[1]: a step cannot refer to its own outputs through \
             {{steps.a...}}",
        ),
        (
            "steps: [{name: a, image: i, command: [x, '{{outputs.artifacts.modle}}'],
                      outputs: {artifacts: [{name: model}]}}]",
            "spec.steps[0].command[1]: unknown output artifact \"modle\" (did you mean \"model\"?)",
        ),
        (
            "steps:
               - {name: a, image: i, command: [x], outputs: {params: [{name: n, type: int}]}}
               - {name: b, image: i, command: [x], forEach: '{{steps.a.outputs.params.n}}'}",
            "spec.steps[1].forEach: forEach needs a list: output parameter \"n\" of step \"a\" is \
             an int",
        ),
        (
            "steps: [{name: a, image: i, command: [x], forEach: '[1, 2'}]",
            "spec.steps[0].forEach: forEach must be one {{params.NAME}} list parameter, one \
             {{steps.STEP.outputs.params.NAME}} output, or a JSON list like [\"a\", \"b\"]",
        ),
        (
            "steps:
               - {name: fan, image: i, command: [x], forEach: '[1, 2]',
                  outputs: {params: [{name: score, type: float}]}}
               - {name: b, image: i, command: [x], when: '{{steps.fan.outputs.params.score}} > 0.5'}",
            "spec.steps[1].when: `>` cannot order a list ({{steps.fan.outputs.params.score}}); \
             only numbers can be ordered",
        ),
        (
            "steps:
               - {name: a, image: i, command: [x], outputs: {artifacts: [{name: m}]}}
               - {name: b, image: i, command: [x], when: '{{steps.a.outputs.artifacts.m}} == x'}",
            "spec.steps[1].when: {{steps.a.outputs.artifacts.m}} can only be used as the whole of \
             inputs.artifacts[].from; declare an input artifact and use {{inputs.artifacts.NAME}}",
        ),
        (
            "steps: [{name: a, image: i, command: [x], outputs: {params: [{name: o}]},
                      inputs: {params: [{name: p, value: '{{outputs.params.o}}'}]}}]",
            "spec.steps[0].inputs.params[0].value: {{outputs.params.o}} is a file path, not a \
             value; use {{params.*}}, {{inputs.params.*}} or {{steps.*.outputs.params.*}} here",
        ),
        (
            "steps: [{name: a, image: i, command: [x],
                      inputs: {params: [{name: p, value: '{{inputs.params.p}}'}]}}]",
            "spec.steps[0].inputs.params[0].value: {{inputs.params.p}} cannot be used in an input \
             parameter value",
        ),
        (
            "steps: [{name: a, image: i, command: [x], dependsOn: [b]}]",
            "spec.steps[0].dependsOn[0]: unknown step \"b\"",
        ),
        ("steps: []", "spec.steps: a pipeline needs at least one step"),
        (
            "steps: [{name: a, image: i, command: [x], retry: {limit: 1, backoff: {initial: 1m, max: 5s}}}]",
            "spec.steps[0].retry.backoff.max: is shorter than initial (5s < 1m)",
        ),
        (
            "params: [{name: 'learning.rate', type: float}]
             steps: [{name: a, image: i, command: [x]}]",
            "spec.params[0].name: invalid parameter name \"learning.rate\": use letters, digits, \
             \"-\" and \"_\", starting with a letter or \"_\"",
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(
            spec_errors(yaml),
            [format!("p.yaml[0] {expected}")],
            "{yaml}"
        );
    }
}

#[test]
fn a_training_job_runs_as_one_distributed_step() {
    let docs = loaded("training-job.yaml");
    let target = select(&docs).unwrap();
    assert_eq!(target.pipeline_name, "fmnist-ddp");
    let [step] = target.spec.steps.as_slice() else {
        panic!("{:?}", target.spec.steps)
    };
    assert_eq!(step.name, JOB_STEP);
    assert_eq!(step.timeout.as_ref().map(|d| d.get().as_secs()), Some(7200));
    let gang = crate::engine::gang::GangPlan::new(step.gang().unwrap()).unwrap();
    assert_eq!(gang.layout(), "worker=2");
    assert_eq!(gang.max_restarts, 2);
    assert_eq!(gang.action(15), crate::api::FailureAction::Restart);
    assert_eq!(
        gang.checkpoint_every,
        Some(crate::engine::gang::CheckpointEvery::Epochs(1))
    );
}

#[test]
fn a_bad_training_job_is_refused_at_its_own_paths() {
    let file = "tests/fixtures/manifests/training-job-errors.yaml";
    assert_eq!(
        errors("training-job-errors.yaml"),
        [
            format!(
                "{file}[0] spec.command[1]: unknown input artifact \"data\" (there are no input artifacts in this step)"
            ),
            format!("{file}[0] spec.roles.ps.replicas: 0 replicas: give 1 to 1024"),
            format!(
                "{file}[0] spec.roles.wrker: unknown role \"wrker\" (did you mean \"worker\"?)"
            ),
            format!("{file}[0] spec.roles.ps: parameter servers serve workers: add a worker role"),
            format!(
                "{file}[0] spec.successPolicy: AllWorkers waits for the worker role, which this job lacks (use ChiefOrWorker0)"
            ),
            format!(
                "{file}[0] spec.failurePolicy.rules[1].exitCodes[0]: 3 overlaps 1-127 at failurePolicy.rules[0].exitCodes[0]: the first match wins, so write each code once"
            ),
            format!(
                "{file}[0] spec.failurePolicy.rules[1].exitCodes[1]: exit code 0 is success, not a failure"
            ),
            format!(
                "{file}[0] spec.checkpoint.every: \"often\" is not an interval: write `N epochs` or `N steps`"
            ),
            format!(
                "{file}[0] spec.env[0].name: TF_CONFIG is set by toucan for every replica (the env contract); remove it"
            ),
            format!(
                "{file}[0] spec.roles.chief.resources.cpu: invalid quantity \"lots\": expected a number with an optional suffix (m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei) or exponent (e3), e.g. 500m or 4Gi"
            ),
            format!("{file}[1] spec.steps[0].roles.worker.replicas: 2000 replicas: give 1 to 1024"),
            format!(
                "{file}[1] spec.steps[1].failurePolicy: applies to a distributed step only: add roles"
            ),
        ]
    );
}

#[test]
fn a_study_and_the_pipeline_its_trials_run_load_together() {
    let docs = loaded("study.yaml");
    let Document::TuningStudy(study) = &docs[1].document else {
        panic!("expected a TuningStudy, got {}", docs[1].document.kind());
    };
    assert_eq!(study.spec.engine_spec().budget.parallel_trials, 2);
    // One trial's template: the placeholders hold that trial's values.
    let values = std::collections::BTreeMap::from([
        ("learning_rate".to_string(), "0.003".to_string()),
        ("optimizer".to_string(), "sgd".to_string()),
    ]);
    let (trial, unknown) = instantiate(&study.spec.trial, &values);
    assert!(unknown.is_empty(), "{unknown:?}");
    assert_eq!(trial.params[0].value, json!("0.003"));
    assert_eq!(trial.params[1].value, json!("sgd"));
    // `toucan run` runs the study, with the Pipeline it references, not the pipeline alone.
    assert!(select(&docs).is_err());
    let target = select_study(&docs).unwrap().unwrap();
    assert_eq!(target.name, "lr");
    assert_eq!(target.pipeline.unwrap().0, "objective");
    // Its reference to a Pipeline missing from the files is an error at its path.
    let alone: Vec<_> = docs
        .into_iter()
        .filter(|d| matches!(d.document, Document::TuningStudy(_)))
        .collect();
    let err = select_study(&alone).unwrap().unwrap_err();
    assert_eq!(err[0].path, "spec.trial.pipelineRef.name", "{err:?}");
}

#[test]
fn a_study_s_mistakes_are_reported_at_their_paths() {
    let file = "tests/fixtures/manifests/study-errors.yaml";
    let expected: Vec<String> = [
        "[0] spec.parameters[0].min: min (0.5) is greater than max (0.1)",
        "[0] spec.parameters[1].step: 50 does not divide the range 32..512 (width 480)",
        "[0] spec.budget.parallelTrials: 8 is more than maxTrials (4): at most maxTrials trials \
         can run",
        "[0] spec.trial.pipelineSpec.steps[0].command[3]: {{trial.params.hiden}} names no \
         parameter of the study (it has lr, hidden); did you mean \"hidden\"?",
        "[0] spec.objective.metric: no trial can produce the objective: step \"fit\" declares no \
         output param \"loss\" (it declares value)",
        "[1] spec.parameters[0].step: grid search needs a step for the double parameter \"lr\"",
        "[1] spec.trial: says nothing to run: give one of pipelineRef, pipelineSpec, \
         trainingJob or an inline step (image, command)",
    ]
    .iter()
    .map(|line| format!("{file}{line}"))
    .collect();
    assert_eq!(errors("study-errors.yaml"), expected);
}
