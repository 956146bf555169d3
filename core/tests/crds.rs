//! The generated CRDs: names, printer columns, status subresource, and structural schemas
//! (the API server rejects non-structural ones; the cluster tests apply them for real).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use toucan_core::api::crds;

/// Checks the structural-schema rules, collecting violations with their JSON paths.
fn check_structural(node: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        errors.push(format!("{path}: not an object"));
        return;
    };
    for forbidden in [
        "$ref",
        "definitions",
        "$defs",
        "oneOf",
        "anyOf",
        "allOf",
        "not",
    ] {
        if obj.contains_key(forbidden) {
            errors.push(format!("{path}: uses {forbidden}"));
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if !t.is_empty() => {}
        _ if preserve || int_or_string => {}
        _ => errors.push(format!("{path}: no type")),
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        errors.push(format!("{path}: both properties and additionalProperties"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), errors);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(extra, &format!("{path}{{}}"), errors);
    }
}

#[test]
fn schemas_are_structural() {
    for crd in crds() {
        let crd = serde_json::to_value(&crd).unwrap();
        for version in crd["spec"]["versions"].as_array().unwrap() {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut errors = Vec::new();
            check_structural(
                schema,
                crd["spec"]["names"]["kind"].as_str().unwrap(),
                &mut errors,
            );
            assert!(
                errors.is_empty(),
                "non-structural schema:\n{}",
                errors.join("\n")
            );
        }
    }
}

#[test]
fn the_checker_catches_non_structural_schemas() {
    let bad = serde_json::json!({
        "type": "object",
        "properties": {
            "a": {},
            "b": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            "c": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "ok": {"x-kubernetes-preserve-unknown-fields": true}
        }
    });
    let mut errors = Vec::new();
    check_structural(&bad, "X", &mut errors);
    assert_eq!(errors.len(), 4, "{errors:?}");
}

/// A CRD version's printer columns: each column's `field` (`name`, `jsonPath`).
fn columns<'a>(version: &'a Value, field: &str) -> Vec<&'a str> {
    version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[field].as_str().unwrap())
        .collect()
}

#[test]
fn names_columns_and_subresources() {
    let all = crds();
    let expected = [
        ("Pipeline", "pipelines", "pl"),
        ("PipelineRun", "pipelineruns", "plr"),
        ("TrainingJob", "trainingjobs", "tj"),
        ("TuningStudy", "tuningstudies", "ts"),
        ("Endpoint", "endpoints", "ep"),
    ];
    assert_eq!(all.len(), expected.len());
    for (crd, (kind, plural, short)) in all.iter().zip(expected) {
        let c = serde_json::to_value(crd).unwrap();
        assert_eq!(c["spec"]["group"], "toucan.dev");
        assert_eq!(c["spec"]["scope"], "Namespaced");
        assert_eq!(c["spec"]["names"]["kind"], kind);
        assert_eq!(c["spec"]["names"]["plural"], plural);
        assert_eq!(c["spec"]["names"]["shortNames"], serde_json::json!([short]));
        assert_eq!(
            c["spec"]["names"]["categories"],
            serde_json::json!(["toucan"])
        );
        let v = &c["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert!(
            v["subresources"]["status"].is_object(),
            "{kind} has a status subresource"
        );
        let columns = columns(v, "name");
        assert!(columns.contains(&"Age"), "{kind}: {columns:?}");
    }
    let run = serde_json::to_value(&all[1]).unwrap();
    assert_eq!(
        columns(&run["spec"]["versions"][0], "name"),
        ["Pipeline", "Phase", "Succeeded", "Cached", "Total", "Age"]
    );
    let job = serde_json::to_value(&all[2]).unwrap();
    assert_eq!(
        columns(&job["spec"]["versions"][0], "jsonPath"),
        [
            ".status.phase",
            ".status.ready",
            ".status.restarts",
            ".status.progress.epoch",
            ".status.progress.objective",
            ".metadata.creationTimestamp"
        ]
    );
    // Exit codes are numbers or ranges, as Kubernetes' int-or-string.
    let codes = &job["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["failurePolicy"]["properties"]["rules"]["items"]["properties"]["exitCodes"]["items"];
    assert_eq!(codes["x-kubernetes-int-or-string"], true, "{codes}");
    let study = serde_json::to_value(&all[3]).unwrap();
    let version = &study["spec"]["versions"][0];
    assert_eq!(
        columns(version, "jsonPath"),
        [
            ".status.phase",
            ".status.trials.succeeded",
            ".status.trials.running",
            ".status.best.objective",
            ".metadata.creationTimestamp"
        ]
    );
    // A discrete parameter's values are numbers, a categorical one's strings: one list.
    let values = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["parameters"]
        ["items"]["properties"]["values"]["items"];
    assert_eq!(
        values["x-kubernetes-preserve-unknown-fields"], true,
        "{values}"
    );
    let endpoint = serde_json::to_value(&all[4]).unwrap();
    let version = &endpoint["spec"]["versions"][0];
    assert_eq!(
        columns(version, "name"),
        ["Ready", "Traffic", "Candidate", "URL", "Age"]
    );
    assert_eq!(
        columns(version, "jsonPath"),
        [
            ".status.ready",
            ".status.trafficSummary",
            ".status.rollout.candidate",
            ".status.url",
            ".metadata.creationTimestamp"
        ]
    );
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    // A model is one object with optional fields (run, step, artifact | digest), not a
    // union, and a gate's bound is a number or a string.
    let model = &spec["versions"]["items"]["properties"]["model"];
    assert_eq!(model["type"], "object", "{model}");
    assert!(model.get("required").is_none(), "{model}");
    let gate = &spec["rollout"]["properties"]["gates"]["items"]["properties"];
    assert_eq!(
        gate["max"]["x-kubernetes-preserve-unknown-fields"], true,
        "{gate}"
    );
    assert_eq!(
        gate["metric"]["enum"],
        serde_json::json!(["error_rate", "latency_p50", "latency_p90", "latency_p99"])
    );
    let interval = &spec["rollout"]["properties"]["interval"];
    assert!(interval["pattern"].is_string(), "{interval}");
}
