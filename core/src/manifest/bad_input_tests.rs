//! Input a hostile or careless user writes: each is a clear error naming its field (or, for a
//! byte-order mark, is accepted), never a crash, an out-of-memory or a misleading hint.

use std::path::Path;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::api::{ParamValue, PipelineSpec};

const HEAD: &str = "apiVersion: toucan.dev/v1alpha1\nkind: Pipeline\nmetadata: {name: p}\n";

/// A pipeline with `params` (YAML flow list items) and one step with `extra` fields.
fn pipeline(params: &str, extra: &str) -> String {
    format!(
        "{HEAD}spec:\n  params: [{params}]\n  steps:\n    - {{name: a, image: i, command: [x]{extra}}}\n"
    )
}

/// Writes `text` to `p.yaml` in a new directory and loads it; the path printed is `p.yaml`
/// relative to nothing, so messages are compared without it.
fn load_text(text: &str) -> Result<Vec<LoadedDocument>, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.yaml");
    std::fs::write(&file, text).unwrap();
    load(std::slice::from_ref(&file))
        .map_err(|e| e.iter().map(|d| strip(&d.to_string(), &file)).collect())
}

fn strip(line: &str, file: &Path) -> String {
    line.replacen(&file.display().to_string(), "p.yaml", 1)
}

fn errors(text: &str) -> Vec<String> {
    match load_text(text) {
        Ok(docs) => panic!("loaded {} documents without errors", docs.len()),
        Err(e) => e,
    }
}

/// Runs `f` on a thread with the 2 MiB stack of a tokio worker, where the operator validates.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn a_deeply_nested_when_is_an_error_with_its_field_path() {
    let n = 50_000;
    let when = format!("{}true{}", "(".repeat(n), ")".repeat(n));
    let text = pipeline("", &format!(", when: '{when}'"));
    let errors = on_small_stack(move || errors(&text));
    assert_eq!(
        errors,
        [
            "p.yaml[0] spec.steps[0].when: condition nests parentheses and `!` deeper than 32 \
             levels (column 33); split it or simplify it"
        ]
    );
}

#[test]
fn a_long_when_chain_loads_on_a_small_stack() {
    let when = vec!["!true || {{params.n}} > 1"; 20_000].join(" && ");
    let text = pipeline(
        "{name: n, type: int, default: 2}",
        &format!(", when: '{when}'"),
    );
    let loaded = on_small_stack(move || load_text(&text).map(|d| d.len()));
    assert_eq!(loaded, Ok(1));
}

#[test]
fn a_byte_order_mark_is_accepted() {
    let text = format!("\u{feff}{}", pipeline("", ""));
    assert_eq!(load_text(&text).map(|d| d.len()), Ok(1));
}

#[test]
fn quadratic_alias_expansion_is_refused() {
    let anchor: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
    let text = format!(
        "{HEAD}spec:\n  params:\n    - {{name: big, type: list, default: &a [{}]}}\n    - {{name: many, type: list, default: [{}]}}\n  steps: [{{name: a, image: i, command: [x]}}]\n",
        anchor.join(", "),
        vec!["*a"; 10_000].join(", ")
    );
    assert!(text.len() < 100_000, "{}", text.len());
    assert_eq!(
        errors(&text),
        [format!(
            "p.yaml[0] (document): this file expands to more than {MAX_NODES} YAML nodes \
             (aliases count as the anchors they repeat); write fewer aliases or split the file"
        )]
    );
}

#[test]
fn nan_and_infinity_are_named() {
    let text = pipeline(
        "{name: x, type: float, default: .nan}, {name: y, type: list, default: [1, -.inf]}",
        ", retry: {limit: 1, backoff: {factor: .inf}}",
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml[0] spec.params[0].default: NaN is not allowed here (JSON has no NaN); write \
             a number",
            "p.yaml[0] spec.params[1].default[1]: infinity is not allowed here (JSON has no \
             infinity); write a number",
            "p.yaml[0] spec.steps[0].retry.backoff.factor: infinity is not allowed here (JSON has \
             no infinity); write a number",
        ]
    );
}

#[test]
fn a_quoted_list_is_told_to_be_a_yaml_list() {
    let text = pipeline("{name: tags, type: list, default: \"a,b,c\"}", "");
    assert_eq!(
        errors(&text),
        [
            "p.yaml[0] spec.params[0].default: expected a list, got the string \"a,b,c\" (write \
             a YAML list: [a, b, c])"
        ]
    );
}

#[test]
fn kubernetes_fields_are_named_unsupported() {
    let text = pipeline(
        "",
        ", imagePullPolicy: Always, nodeSelector: {gpu: a100}, imag: x",
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml[0] spec.steps[0].imagePullPolicy: \"imagePullPolicy\" is a Kubernetes field \
             that toucan does not support; a step's pod: sets only nodeSelector, tolerations, \
             annotations and labels",
            "p.yaml[0] spec.steps[0].nodeSelector: unknown field; a step sets \"nodeSelector\" \
             under pod: (pod.nodeSelector)",
            "p.yaml[0] spec.steps[0].imag: unknown field (did you mean \"image\"?)",
        ]
    );
}

#[test]
fn a_huge_value_is_not_echoed_back() {
    let huge = "x".repeat(1 << 20);
    for (what, text) in [
        (
            "a step name",
            pipeline("", "").replace("name: a,", &format!("name: {huge},")),
        ),
        ("a duration", pipeline("", &format!(", timeout: 1{huge}"))),
        (
            "a quantity",
            pipeline("", &format!(", resources: {{cpu: '{huge}'}}")),
        ),
        ("a kind", text_with_kind(&huge)),
        (
            "an enum value",
            pipeline("", "").replace("spec:\n", &format!("spec:\n  concurrency: {huge}\n")),
        ),
        (
            "a field name",
            // A key longer than 1024 characters must be written explicitly in YAML.
            pipeline("", "").replace("spec:\n", &format!("spec:\n  ? {huge}\n  : 1\n")),
        ),
        (
            "a placeholder",
            pipeline("", &format!(", args: ['{{{{{huge}}}}}']")),
        ),
        (
            "a parameter value",
            pipeline(&format!("{{name: n, type: int, default: '{huge}'}}"), ""),
        ),
    ] {
        let errors = errors(&text);
        let total: usize = errors.iter().map(String::len).sum();
        assert!(total < 2_000, "{what}: {} bytes of errors", total);
        assert!(
            errors.iter().any(|e| e.contains(&format!(
                "({} bytes)",
                huge.len() + usize::from(what == "a duration")
            ))),
            "{what}: {errors:?}"
        );
    }
}

fn text_with_kind(kind: &str) -> String {
    pipeline("", "").replace("kind: Pipeline", &format!("kind: {kind}"))
}

#[test]
fn durations_are_go_durations() {
    for (bad, problem) in [
        ("5 minutes", "unknown unit \" minutes\""),
        ("30M", "unknown unit \"M\""),
        ("1d", "unknown unit \"d\""),
        ("90", "a number needs a unit"),
    ] {
        let text = pipeline("", &format!(", timeout: '{bad}'"));
        let errors = errors(&text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!(
                "p.yaml[0] spec.steps[0].timeout: invalid duration \"{bad}\": {problem}"
            )),
            "{errors:?}"
        );
    }
    let text = pipeline(
        "",
        ", cache: {maxAge: 1w}, retry: {limit: 1, backoff: {initial: 1h30m, max: 2h45m30s}}",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("p.yaml[0] spec.steps[0].cache.maxAge: invalid duration \"1w\""));
    let good = pipeline(
        "",
        ", timeout: 1.5h, cache: {maxAge: 168h}, retry: {limit: 1, backoff: {initial: 500ms, max: 2h45m30s}}",
    );
    assert_eq!(load_text(&good).map(|d| d.len()), Ok(1));
}

#[test]
fn param_bounds_and_enums_are_checked_where_declared() {
    let text = pipeline(
        "{name: a, type: int, default: 0, min: 1}, \
         {name: b, type: float, min: 2, max: 1}, \
         {name: c, type: string, min: 1}, \
         {name: d, type: int, min: 1.5}, \
         {name: e, type: string, default: sdg, enum: [adam, sgd, 3]}, \
         {name: f, type: int, enum: []}, \
         {name: g, type: int, max: 10, enum: [5, 50]}",
        "",
    );
    assert_eq!(
        errors(&text),
        [
            "p.yaml[0] spec.params[0].default: must be at least 1, got 0",
            "p.yaml[0] spec.params[1].max: is less than min (1 < 2)",
            "p.yaml[0] spec.params[2].min: min applies only to int and float parameters, and \
             this one is a string",
            "p.yaml[0] spec.params[3].min: expected an int, got the number 1.5",
            "p.yaml[0] spec.params[4].enum[2]: expected a string, got the number 3 (quote it: \
             \"3\")",
            "p.yaml[0] spec.params[5].enum: must list at least one value",
            "p.yaml[0] spec.params[6].enum[1]: must be at most 10, got 50",
        ]
    );
}

fn bounded() -> PipelineSpec {
    serde_json::from_value(json!({
        "params": [
            {"name": "epochs", "type": "int", "default": 3, "min": 1, "max": 100},
            {"name": "lr", "type": "float", "default": 0.1, "min": 0},
            {"name": "model", "default": "cnn", "enum": ["cnn", "resnet"]},
            {"name": "size", "type": "float", "default": 1, "enum": [1, 2.5]},
        ],
        "steps": [{"name": "a", "image": "i", "command": ["x"]}],
    }))
    .unwrap()
}

fn source() -> Source {
    Source {
        file: "p.yaml".into(),
        index: 0,
    }
}

#[test]
fn every_given_value_is_checked_against_bounds_and_enums() {
    let cli = |pairs: &[(&str, &str)]| -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Value::String(v.to_string())))
            .collect()
    };
    let errors = resolve_params(
        &bounded(),
        &cli(&[
            ("epochs", "-1"),
            ("lr", "-0.5"),
            ("model", "vit"),
            ("size", "3"),
        ]),
        &source(),
    )
    .unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "p.yaml[0] -p epochs: must be at least 1, got -1",
            "p.yaml[0] -p lr: must be at least 0, got -0.5",
            "p.yaml[0] -p model: must be one of \"cnn\", \"resnet\", got \"vit\"",
            "p.yaml[0] -p size: must be one of 1, 2.5, got 3.0",
        ]
    );
    let ok = resolve_params(
        &bounded(),
        &cli(&[("epochs", "100"), ("model", "resnet"), ("size", "2.5")]),
        &source(),
    )
    .unwrap();
    assert_eq!(ok["epochs"], json!(100));
    let given: Vec<ParamValue> = serde_json::from_value(
        json!([{"name": "epochs", "value": 101}, {"name": "size", "value": 1}]),
    )
    .unwrap();
    let errors = resolve_run_params(&bounded(), &given, &source()).unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["p.yaml[0] spec.params[0].value: must be at most 100, got 101"]
    );
}

#[test]
fn a_pipeline_run_in_the_files_is_checked_against_bounds() {
    let text = format!(
        "{}---\napiVersion: toucan.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: r}}\nspec:\n  pipelineRef: {{name: p}}\n  params: [{{name: n, value: 0}}]\n",
        pipeline("{name: n, type: int, default: 1, min: 1}", "")
    );
    assert_eq!(
        errors(&text),
        ["p.yaml[1] spec.params[0].value: must be at least 1, got 0"]
    );
}

#[test]
fn dangling_pipeline_refs_are_found_in_every_run() {
    let run = |name: &str, target: &str| {
        format!(
            "---\napiVersion: toucan.dev/v1alpha1\nkind: PipelineRun\nmetadata: {{name: {name}}}\nspec:\n  pipelineRef: {{name: {target}}}\n"
        )
    };
    let text = format!("{}{}{}", pipeline("", ""), run("r1", "p"), run("r2", "q"));
    let docs = load_text(&text).unwrap();
    let found: Vec<String> = check_pipeline_refs(&docs)
        .iter()
        .map(|d| d.path.clone() + ": " + &d.message)
        .collect();
    assert_eq!(
        found,
        [
            "spec.pipelineRef.name: no Pipeline \"q\" in the loaded files (give its file too, e.g. \
          the directory holding both)"
        ]
    );
    assert_eq!(docs[2].source.index, 2);
}

/// YAML text of nested flow sequences and mappings, some very deep, some very wide, some
/// with anchors and aliases.
fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("1".to_string()),
        Just("x".to_string()),
        Just("'{{params.n}}'".to_string()),
        Just(".nan".to_string()),
        Just("~".to_string()),
    ];
    leaf.prop_recursive(8, 256, 16, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..16).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(inner, 0..16).prop_map(|v| {
                let entries: Vec<String> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| format!("k{i}: {x}"))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Deep, wide and aliased documents load or give errors; none crashes a 2 MiB stack.
    #[test]
    fn the_loader_never_crashes(
        value in yaml_value(),
        depth in 0usize..3000,
        aliases in 0usize..3000,
        field in prop_oneof![Just("default"), Just("description"), Just("enum"), Just("min")],
    ) {
        let nested = format!("{}{value}{}", "[".repeat(depth), "]".repeat(depth));
        let text = format!(
            "{HEAD}spec:\n  params:\n    - {{name: a, {field}: &a {nested}}}\n    - {{name: b, default: [{}]}}\n  steps: [{{name: s, image: i, command: [x], when: '{}true{}'}}]\n",
            vec!["*a"; aliases].join(", "),
            "(".repeat(depth),
            ")".repeat(depth),
        );
        let result = on_small_stack(move || load_text(&text).map(|d| d.len()));
        if let Err(errors) = result {
            prop_assert!(!errors.is_empty());
        }
    }
}
