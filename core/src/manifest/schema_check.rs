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

use super::hint;

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
            if let (Value::Mapping(m), Some(_)) = (value, &schema.properties) {
                check_mapping(m, schema, path, &[], out);
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
        let field_path = join(path, key);
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
            let hint = hint::unknown_name_hint(key, &known, "fields here");
            out.push((field_path, format!("unknown field{hint}")));
        }
    }
    for required in schema.required.iter().flatten() {
        if !mapping.contains_key(required.as_str()) {
            out.push((join(path, required), "missing required field".to_string()));
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
        .map_or_else(|| as_json.to_string(), |s| format!("{s:?}"));
    let close = as_json
        .as_str()
        .and_then(|s| hint::closest(s, names.iter().map(String::as_str)));
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
    const LONGEST: usize = 40;
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.chars().count() > LONGEST => {
            let short: String = s.chars().take(LONGEST).collect();
            format!("the string {:?}", format!("{short}..."))
        }
        Value::String(s) => format!("the string {s:?}"),
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
