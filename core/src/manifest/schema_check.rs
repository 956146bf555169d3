//! The structural check: a raw YAML document walked against its CRD's `openAPIV3Schema`.
//!
//! This is what the API server would say, in the same terms, before anything is deserialized:
//! every unknown field (unless the schema says `x-kubernetes-preserve-unknown-fields`), every
//! value of the wrong type, every missing required field and every value outside an enum.
//! Checking the raw value first lets one pass report all of these at once, where serde stops
//! at the first.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use serde_yaml_ng::{Mapping, Value};

use crate::duration::{self, Duration};
use crate::echo::{cut, quote};
use crate::suggest;

/// A problem found: the field path and the message.
pub(super) type Finding = (String, String);

/// Checks a whole document. `skip` names the top-level fields checked elsewhere
/// (`apiVersion`, `kind`, `metadata`), which the CRD schema does not describe.
pub(super) fn check_document(
    document: &Mapping,
    schema: &JSONSchemaProps,
    skip: &[&str],
    out: &mut Vec<Finding>,
) {
    check_mapping(document, schema, "", skip, out);
}

/// Checks `value` at `path` against `schema`.
pub(super) fn check(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<Finding>) {
    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    if let Value::Tagged(tagged) = value {
        out.push((
            path.to_string(),
            format!("YAML tags are not supported ({})", tagged.tag),
        ));
        return;
    }
    if let Some(message) = non_finite(value) {
        out.push((path.to_string(), message));
        return;
    }
    if value.is_null() {
        if schema.nullable != Some(true)
            && !(preserve && schema.type_.is_none())
            && let Some(expected) = schema.type_.as_deref()
        {
            let message = format!("expected {}, got null", type_name(expected));
            out.push((path.to_string(), message));
        }
        return;
    }
    let matches = match schema.type_.as_deref() {
        Some("object") => {
            if let Value::Mapping(m) = value {
                check_mapping(m, schema, path, &[], out);
            }
            value.is_mapping()
        }
        Some("array") => {
            if let Value::Sequence(items) = value {
                for (i, item) in items.iter().enumerate() {
                    if let Some(item_schema) = item_schema(schema) {
                        check(item, item_schema, &format!("{path}[{i}]"), out);
                    }
                }
            }
            value.is_sequence()
        }
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_bool(),
        _ => {
            match (value, &schema.properties) {
                (Value::Mapping(m), Some(_)) => check_mapping(m, schema, path, &[], out),
                _ => check_finite_within(value, path, out),
            }
            true
        }
    };
    if !matches {
        let expected = type_name(schema.type_.as_deref().unwrap_or_default());
        let mut message = format!("expected {expected}, got {}", describe(value));
        if schema.type_.as_deref() == Some("string") && (value.is_number() || value.is_bool()) {
            message.push_str(" (quote it to make it a string)");
        }
        out.push((path.to_string(), message));
        return;
    }
    check_enum(value, schema, path, out);
    check_bounds(value, schema, path, out);
}

/// Reports every string whose schema is a duration's and that does not parse as one, at its
/// path, and removes it from `mapping`. Serde stops at the first field that fails to
/// deserialize; taking bad durations out first lets every other problem of the document be
/// reported with them.
pub(super) fn take_invalid_durations(
    mapping: &mut Mapping,
    schema: &JSONSchemaProps,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let Some(properties) = schema.properties.as_ref() else {
        return;
    };
    let mut invalid = Vec::new();
    for (key, value) in mapping.iter_mut() {
        let Some((name, field_schema)) = key.as_str().and_then(|k| properties.get_key_value(k))
        else {
            continue;
        };
        if !take_within(value, field_schema, &join(path, name), out) {
            invalid.push(key.clone());
        }
    }
    for key in invalid {
        mapping.remove(&key);
    }
}

/// [`take_invalid_durations`] for any value; false when the value itself is an invalid
/// duration, which its mapping then removes.
fn take_within(
    value: &mut Value,
    schema: &JSONSchemaProps,
    path: &str,
    out: &mut Vec<Finding>,
) -> bool {
    match value {
        Value::String(text) if schema.pattern.as_deref() == Some(duration::PATTERN) => {
            if let Err(e) = Duration::parse(text) {
                out.push((path.to_string(), e.to_string()));
                return false;
            }
        }
        Value::Mapping(m) => take_invalid_durations(m, schema, path, out),
        Value::Sequence(items) => {
            if let Some(item_schema) = item_schema(schema) {
                for (i, item) in items.iter_mut().enumerate() {
                    // A list item cannot be removed without renumbering the rest; no list
                    // holds durations itself, only mappings that do.
                    take_within(item, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
    true
}

fn check_mapping(
    mapping: &Mapping,
    schema: &JSONSchemaProps,
    path: &str,
    skip: &[&str],
    out: &mut Vec<Finding>,
) {
    let properties = schema.properties.as_ref();
    let preserve = schema.x_kubernetes_preserve_unknown_fields == Some(true);
    for (key, value) in mapping {
        let Some(key) = key.as_str() else {
            out.push((
                path_or_document(path),
                format!("keys must be strings, got {}", describe(key)),
            ));
            continue;
        };
        if skip.contains(&key) {
            continue;
        }
        let field_path = join(path, &cut(key));
        if let Some(field_schema) = properties.and_then(|p| p.get(key)) {
            check(value, field_schema, &field_path, out);
        } else if let Some(JSONSchemaPropsOrBool::Schema(values)) = &schema.additional_properties {
            check(value, values, &field_path, out);
        } else if !preserve
            && !matches!(
                schema.additional_properties,
                Some(JSONSchemaPropsOrBool::Bool(true))
            )
        {
            let known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            out.push((field_path, unknown_field_message(key, &known)));
        }
    }
    for required in schema.required.iter().flatten() {
        if !mapping.contains_key(required.as_str()) {
            out.push((join(path, required), "missing required field".to_string()));
        }
    }
}

/// Fields of a Kubernetes container or pod that a step has no equivalent for.
const KUBERNETES_ONLY: &[&str] = &[
    "imagePullPolicy",
    "imagePullSecrets",
    "workingDir",
    "envFrom",
    "ports",
    "volumeMounts",
    "volumes",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "restartPolicy",
    "serviceAccountName",
    "initContainers",
    "containers",
    "affinity",
    "priorityClassName",
    "hostNetwork",
    "stdin",
    "tty",
];

/// Pod fields a step sets under `pod:` rather than at its top level.
const POD_SETTINGS: &[&str] = &["nodeSelector", "tolerations", "annotations", "labels"];

/// Why `key` is not a field here: it belongs under a step's `pod:`, it is a Kubernetes field
/// toucan does not support, or it is a likely typo of a field that exists.
fn unknown_field_message(key: &str, known: &[&str]) -> String {
    let name = quote(key);
    if known.contains(&"pod") && POD_SETTINGS.contains(&key) {
        return format!("unknown field; a step sets {name} under pod: (pod.{key})");
    }
    if KUBERNETES_ONLY.contains(&key) {
        let pod = if known.contains(&"pod") {
            "; a step's pod: sets only nodeSelector, tolerations, annotations and labels"
        } else {
            ""
        };
        return format!("{name} is a Kubernetes field that toucan does not support{pod}");
    }
    let hint = suggest::unknown_name_hint(key, known, "fields here");
    format!("unknown field{hint}")
}

/// The message for a NaN or infinite number, which JSON (and so the API server) cannot hold.
fn non_finite(value: &Value) -> Option<String> {
    let f = match value {
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    if f.is_nan() {
        Some("NaN is not allowed here (JSON has no NaN); write a number".to_string())
    } else if f.is_infinite() {
        Some("infinity is not allowed here (JSON has no infinity); write a number".to_string())
    } else {
        None
    }
}

/// Reports every NaN or infinity inside a value the schema does not describe (a parameter
/// default or value of any type), at its own path.
fn check_finite_within(value: &Value, path: &str, out: &mut Vec<Finding>) {
    match value {
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check_finite_within(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(entries) => {
            for (key, item) in entries {
                let key = key.as_str().map_or_else(|| describe(key), str::to_string);
                check_finite_within(item, &join(path, &key), out);
            }
        }
        Value::Tagged(tagged) => check_finite_within(&tagged.value, path, out),
        _ => {
            if let Some(message) = non_finite(value) {
                out.push((path.to_string(), message));
            }
        }
    }
}

fn item_schema(schema: &JSONSchemaProps) -> Option<&JSONSchemaProps> {
    match schema.items.as_ref()? {
        JSONSchemaPropsOrArray::Schema(s) => Some(s),
        JSONSchemaPropsOrArray::Schemas(list) => list.first(),
    }
}

fn check_enum(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<Finding>) {
    let Some(allowed) = &schema.enum_ else { return };
    let Ok(as_json) = serde_json::to_value(value) else {
        return;
    };
    if allowed.iter().any(|a| a.0 == as_json) {
        return;
    }
    let names: Vec<String> = allowed
        .iter()
        .filter(|a| !a.0.is_null())
        .map(|a| a.0.as_str().map_or_else(|| a.0.to_string(), str::to_string))
        .collect();
    let shown = as_json
        .as_str()
        .map_or_else(|| quote(&as_json.to_string()), quote);
    let close = as_json
        .as_str()
        .and_then(|s| suggest::closest(s, names.iter().map(String::as_str)));
    let hint = close
        .map(|c| format!("; did you mean {c:?}?"))
        .unwrap_or_default();
    out.push((
        path.to_string(),
        format!(
            "unknown value {shown} (expected one of: {}{hint})",
            names.join(", ")
        ),
    ));
}

fn check_bounds(value: &Value, schema: &JSONSchemaProps, path: &str, out: &mut Vec<Finding>) {
    let Some(number) = value.as_f64() else { return };
    if let Some(minimum) = schema.minimum
        && number < minimum
    {
        out.push((
            path.to_string(),
            format!("must be at least {minimum}, got {number}"),
        ));
        return;
    }
    let maximum = match schema.format.as_deref() {
        Some("uint32") => Some(f64::from(u32::MAX)),
        Some("int32") => Some(f64::from(i32::MAX)),
        _ => schema.maximum,
    };
    if let Some(maximum) = maximum
        && number > maximum
    {
        out.push((
            path.to_string(),
            format!("must be at most {maximum}, got {number}"),
        ));
    }
}

/// `spec` + `steps` = `spec.steps`; the root path is empty.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn path_or_document(path: &str) -> String {
    if path.is_empty() {
        super::DOCUMENT_PATH.to_string()
    } else {
        path.to_string()
    }
}

/// An OpenAPI type in the user's words.
pub(super) fn type_name(openapi: &str) -> &str {
    match openapi {
        "object" => "a mapping",
        "array" => "a list",
        "string" => "a string",
        "integer" => "an integer",
        "number" => "a number",
        "boolean" => "a boolean (true or false)",
        other => other,
    }
}

/// A YAML value as a message shows it: `the string "abc"`, `a list`.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Sequence(_) => "a list".into(),
        Value::Mapping(_) => "a mapping".into(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Pipeline;
    use kube::CustomResourceExt;

    fn schema() -> JSONSchemaProps {
        let crd = Pipeline::crd();
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .clone()
            .unwrap()
    }

    fn findings(yaml: &str) -> Vec<String> {
        let value: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let mut out = Vec::new();
        check_document(
            value.as_mapping().unwrap(),
            &schema(),
            &["apiVersion", "kind", "metadata"],
            &mut out,
        );
        out.into_iter().map(|(p, m)| format!("{p}: {m}")).collect()
    }

    #[test]
    fn accepts_a_valid_spec() {
        let yaml = "spec:\n  params: [{name: a, type: int, default: {x: [1]}}]\n  steps:\n    - {name: s, image: i, command: [x], outputs: {params: [{name: o, type: ~}]}}\n";
        assert_eq!(findings(yaml), Vec::<String>::new());
    }

    #[test]
    fn reports_every_structural_problem() {
        let yaml = r#"
spec:
  concurrency: forbid
  extra: 1
  steps:
    - name: s
      command: python train.py
      retry: {limit: -1}
      resources: {gpus: 1, cpu: 2}
      env: [{name: A, value: 1}]
    - 7
"#;
        assert_eq!(
            findings(yaml),
            [
                "spec.concurrency: unknown value \"forbid\" (expected one of: Allow, Forbid, Replace; did you mean \"Forbid\"?)",
                "spec.extra: unknown field (expected one of: cache, concurrency, finally, historyLimit, params, schedule, steps)",
                "spec.steps[0].command: expected a list, got the string \"python train.py\"",
                "spec.steps[0].retry.limit: must be at least 0, got -1",
                "spec.steps[0].resources.gpus: unknown field (did you mean \"gpu\"?)",
                "spec.steps[0].resources.cpu: expected a string, got the number 2 (quote it to make it a string)",
                "spec.steps[0].env[0].value: expected a string, got the number 1 (quote it to make it a string)",
                "spec.steps[0].image: missing required field",
                "spec.steps[1]: expected a mapping, got the number 7",
            ]
        );
    }
}
