//! Bad input: `toucan validate` and `toucan run` exit 2, name the file, document and field,
//! report every error, and write nothing.

mod common;

use common::Sandbox;

const GOOD_STEP: &str = "    - {name: ok, image: busybox, command: [echo, hi]}\n";

fn pipeline(steps: &str) -> String {
    format!(
        "apiVersion: toucan.dev/v1alpha1\nkind: Pipeline\nmetadata: {{name: p}}\nspec:\n  params:\n    - {{name: epochs, type: int, default: 3}}\n    - {{name: needed, type: string}}\n  steps:\n{steps}"
    )
}

/// Runs both commands on the manifest and checks exit code 2, the message, and an untouched
/// store.
fn rejects(manifest: &str, expected: &[&str]) {
    let sb = Sandbox::new();
    let file = sb.write("pipeline.yaml", manifest);
    for args in [
        vec!["validate", "pipeline.yaml"],
        vec!["run", "pipeline.yaml", "-p", "needed=x"],
    ] {
        let out = sb.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should exit 2; stderr:\n{stderr}"
        );
        for e in expected {
            assert!(stderr.contains(e), "{args:?}: expected {e:?} in:\n{stderr}");
        }
        assert!(!sb.home().exists(), "{args:?} wrote to the store");
    }
    assert!(file.exists());
}

#[test]
fn malformed_yaml() {
    rejects(
        &pipeline("    - {name: a, image: x, command: [echo\n"),
        &["pipeline.yaml[0]"],
    );
}

#[test]
fn unknown_field_deep_in_a_step() {
    rejects(
        &pipeline(&format!(
            "{GOOD_STEP}    - {{name: b, image: x, command: [echo], retry: {{limit: 1, backof: {{}}}}}}\n"
        )),
        &["pipeline.yaml[0] spec.steps[1].retry.backof"],
    );
}

#[test]
fn wrong_type() {
    rejects(
        &pipeline("    - {name: a, image: x, command: echo}\n"),
        &["pipeline.yaml[0] spec.steps[0].command"],
    );
}

#[test]
fn duplicate_step_names() {
    rejects(
        &pipeline(&format!("{GOOD_STEP}{GOOD_STEP}")),
        &["pipeline.yaml[0] spec.steps[1].name"],
    );
}

#[test]
fn cycle() {
    rejects(
        &pipeline(
            "    - {name: a, image: x, command: [echo], dependsOn: [b]}\n    - {name: b, image: x, command: [echo], dependsOn: [a]}\n",
        ),
        &["pipeline.yaml[0] spec.steps", "cycle"],
    );
}

#[test]
fn unknown_step_reference_with_field_path() {
    rejects(
        &pipeline(
            "    - {name: train, image: x, command: [echo], outputs: {artifacts: [{name: model}]}}\n    - name: eval\n      image: x\n      command: [echo]\n      inputs: {artifacts: [{name: m, from: \"{{steps.trian.outputs.artifacts.model}}\"}]}\n",
        ),
        &[
            "pipeline.yaml[0] spec.steps[1].inputs.artifacts[0].from",
            "unknown step \"trian\"",
        ],
    );
}

#[test]
fn unknown_param_reference() {
    rejects(
        &pipeline("    - {name: a, image: x, command: [echo, \"{{params.epoch}}\"]}\n"),
        &["pipeline.yaml[0] spec.steps[0].command[1]", "epoch"],
    );
}

#[test]
fn default_of_the_wrong_type() {
    let manifest = "apiVersion: toucan.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  params:\n    - {name: epochs, type: int, default: many}\n  steps:\n    - {name: a, image: x, command: [echo]}\n";
    rejects(manifest, &["pipeline.yaml[0] spec.params[0].default"]);
}

#[test]
fn bad_duration_and_quantity_are_both_reported() {
    rejects(
        &pipeline(
            "    - {name: a, image: x, command: [echo], timeout: 5 parsecs, resources: {memory: 4Gb}}\n",
        ),
        &[
            "pipeline.yaml[0] spec.steps[0].timeout",
            "pipeline.yaml[0] spec.steps[0].resources.memory",
        ],
    );
}

#[test]
fn missing_local_input_file() {
    rejects(
        &pipeline(
            "    - {name: a, image: x, command: [cat, \"{{inputs.artifacts.d}}\"], inputs: {artifacts: [{name: d, path: nowhere.csv}]}}\n",
        ),
        &[
            "pipeline.yaml[0] spec.steps[0].inputs.artifacts[0].path",
            "nowhere.csv",
        ],
    );
}

#[test]
fn missing_required_param_and_bad_param_value() {
    let sb = Sandbox::new();
    sb.write("pipeline.yaml", &pipeline(GOOD_STEP));
    let out = sb.run(&["run", "pipeline.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("needed"), "{stderr}");
    let out = sb.run(&[
        "run",
        "pipeline.yaml",
        "-p",
        "needed=x",
        "-p",
        "epochs=lots",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("epochs"), "{stderr}");
    assert!(!sb.home().exists());
}

#[test]
fn every_error_in_every_document_is_reported() {
    let sb = Sandbox::new();
    let two = format!(
        "{}---\n{}",
        pipeline("    - {name: a, image: x, command: [echo], timeout: soon}\n"),
        "apiVersion: toucan.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: q}\nspec:\n  steps:\n    - {name: B!, image: x, command: []}\n"
    );
    sb.write("many.yaml", &two);
    let out = sb.run(&["validate", "many.yaml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("many.yaml[0] spec.steps[0].timeout"),
        "{stderr}"
    );
    assert!(
        stderr.contains("many.yaml[1] spec.steps[0].name"),
        "{stderr}"
    );
    assert!(
        stderr.contains("many.yaml[1] spec.steps[0].command"),
        "{stderr}"
    );
}

#[test]
fn valid_examples_pass() {
    let sb = Sandbox::new();
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fashion-mnist");
    let out = sb.run(&["validate", examples.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!sb.home().exists());
}

#[test]
fn a_pipeline_run_naming_no_loaded_pipeline_is_rejected_by_both() {
    let run = "---\napiVersion: toucan.dev/v1alpha1\nkind: PipelineRun\nmetadata: {name: r}\nspec:\n  pipelineRef: {name: q}\n  params: [{name: needed, value: x}]\n";
    let sb = Sandbox::new();
    sb.write("pipeline.yaml", &format!("{}{run}", pipeline(GOOD_STEP)));
    for args in [
        vec!["validate", "pipeline.yaml"],
        vec!["run", "pipeline.yaml"],
    ] {
        let out = sb.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("pipeline.yaml[1] spec.pipelineRef.name: no Pipeline \"q\""),
            "{args:?}: {stderr}"
        );
    }
    assert!(!sb.home().exists());
}

#[test]
fn param_bounds_are_checked_on_the_command_line() {
    let manifest = "apiVersion: toucan.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  params:\n    - {name: epochs, type: int, default: 3, min: 1}\n  steps:\n    - {name: a, image: x, command: [echo]}\n";
    let sb = Sandbox::new();
    sb.write("pipeline.yaml", manifest);
    let out = sb.run(&["run", "pipeline.yaml", "-p", "epochs=0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("-p epochs: must be at least 1, got 0"),
        "{stderr}"
    );
    assert!(!sb.home().exists());
}

#[test]
fn a_go_duration_is_required() {
    rejects(
        &pipeline("    - {name: a, image: x, command: [echo], timeout: 30M}\n"),
        &["pipeline.yaml[0] spec.steps[0].timeout: invalid duration \"30M\": unknown unit \"M\""],
    );
}
