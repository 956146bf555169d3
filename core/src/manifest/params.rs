//! Parameter values: checking them against declared types and resolving the final map.
//!
//! Values arrive two ways. From the command line (`-p name=value`) they are text and are
//! coerced to the declared type (`"5"` becomes 5 for an int, `a,b` a list). From a
//! PipelineRun they are typed YAML and must already have the declared type. Defaults fill
//! the rest; a parameter without a default that no one gives is an error.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{Diagnostic, Source};
use crate::api::{ParamSpec, ParamType, ParamValue, PipelineSpec};
use crate::echo::quote;
use crate::suggest;

/// Resolves the values given on the command line (or any text-first source) against the
/// declared parameters: text is coerced to the declared type, typed values are checked, later
/// values win over earlier ones, defaults fill the rest. Diagnostics use the path
/// `-p NAME`.
pub fn resolve_params(
    spec: &PipelineSpec,
    given: &[(String, Value)],
    source: &Source,
) -> Result<BTreeMap<String, Value>, Vec<Diagnostic>> {
    let given: Vec<Given<'_>> = given
        .iter()
        .map(|(name, value)| Given {
            name,
            value,
            name_path: format!("-p {name}"),
            value_path: format!("-p {name}"),
            coerce_text: true,
        })
        .collect();
    resolve(spec, &given, source, |name| format!("-p {name}"))
}

/// Resolves a PipelineRun's `spec.params` against the declared parameters: values must have
/// the declared type, defaults fill the rest. Diagnostics use the paths
/// `spec.params[i].name`, `spec.params[i].value` and `spec.params` (for a missing one).
pub fn resolve_run_params(
    spec: &PipelineSpec,
    given: &[ParamValue],
    source: &Source,
) -> Result<BTreeMap<String, Value>, Vec<Diagnostic>> {
    let given = run_values(given, "spec.params");
    resolve(spec, &given, source, |_| "spec.params".to_string())
}

/// Parameter names a PipelineRun gives more than once, reported at `PREFIX[i].name`.
pub(super) fn check_run_value_names(
    given: &[ParamValue],
    source: &Source,
    prefix: &str,
) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, p) in given.iter().enumerate() {
        if let Some(first) = seen.get(p.name.as_str()) {
            let message = format!("duplicate parameter {:?} (also {prefix}[{first}])", p.name);
            out.push(Diagnostic::new(
                source,
                format!("{prefix}[{i}].name"),
                message,
            ));
        } else {
            seen.insert(&p.name, i);
        }
    }
    out
}

/// Problems with a PipelineRun's values that no later value can fix: unknown names and
/// values of the wrong type. Missing values are left to [`resolve_run_params`], since the
/// command line may still give them.
pub(super) fn check_run_values(
    spec: &PipelineSpec,
    given: &[ParamValue],
    source: &Source,
    prefix: &str,
) -> Vec<Diagnostic> {
    run_values(given, prefix)
        .iter()
        .filter_map(|g| check_one(spec, g, source).err())
        .collect()
}

/// Why `value` does not have type `kind`, if it does not.
pub(super) fn type_mismatch(value: &Value, kind: ParamType) -> Option<String> {
    let ok = match kind {
        ParamType::String => value.is_string(),
        ParamType::Int => value.is_i64() || value.is_u64(),
        ParamType::Float => value.is_number(),
        ParamType::Bool => value.is_boolean(),
        ParamType::List => value.is_array(),
    };
    if ok {
        return None;
    }
    let hint = match (kind, value) {
        (ParamType::String, Value::Number(_) | Value::Bool(_)) => {
            format!(" (quote it: \"{value}\")")
        }
        (ParamType::List, Value::String(s)) => list_hint(s),
        (_, Value::String(s)) if coerce(s, kind).is_ok() => " (write it without quotes)".into(),
        _ => String::new(),
    };
    Some(format!(
        "expected {}, got {}{hint}",
        article(kind),
        describe(value)
    ))
}

/// Why `value`, already of the declared type, is not one the declaration allows: outside
/// `min`/`max` or not in `enum`.
pub(super) fn not_allowed(value: &Value, declared: &ParamSpec) -> Option<String> {
    if let Some(allowed) = &declared.allowed
        && !allowed.iter().any(|a| same_value(a, value))
    {
        let listed: Vec<String> = allowed.iter().map(shown).collect();
        return Some(format!(
            "must be one of {}, got {}",
            crate::echo::cut(&listed.join(", ")),
            shown(value)
        ));
    }
    let number = value.as_f64()?;
    if let Some(min) = &declared.min
        && min.as_f64().is_some_and(|min| number < min)
    {
        return Some(format!("must be at least {min}, got {}", shown(value)));
    }
    if let Some(max) = &declared.max
        && max.as_f64().is_some_and(|max| number > max)
    {
        return Some(format!("must be at most {max}, got {}", shown(value)));
    }
    None
}

/// What is wrong with a declaration's own `min`, `max` and `enum`, as (field, message):
/// bounds on a type that has no order, bounds of the wrong type, `min` above `max`, and
/// `enum` values of the wrong type or outside the bounds.
pub(super) fn declaration_problems(declared: &ParamSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let numeric = matches!(declared.kind, ParamType::Int | ParamType::Float);
    for (field, bound) in [("min", &declared.min), ("max", &declared.max)] {
        let Some(bound) = bound else { continue };
        if !numeric {
            let message = format!(
                "{field} applies only to int and float parameters, and this one is {}",
                article(declared.kind)
            );
            out.push((field.to_string(), message));
        } else if let Some(message) = type_mismatch(&Value::Number(bound.clone()), declared.kind) {
            out.push((field.to_string(), message));
        }
    }
    if let (Some(min), Some(max)) = (&declared.min, &declared.max)
        && let (Some(low), Some(high)) = (min.as_f64(), max.as_f64())
        && low > high
    {
        out.push(("max".into(), format!("is less than min ({max} < {min})")));
    }
    match declared.allowed.as_deref() {
        Some([]) => out.push(("enum".into(), "must list at least one value".into())),
        Some(allowed) => {
            let bounds_only = ParamSpec {
                allowed: None,
                ..declared.clone()
            };
            for (i, value) in allowed.iter().enumerate() {
                let problem = type_mismatch(value, declared.kind)
                    .or_else(|| not_allowed(value, &bounds_only));
                if let Some(message) = problem {
                    out.push((format!("enum[{i}]"), message));
                }
            }
        }
        None => {}
    }
    out
}

/// Equal values, numbers compared by value (`1` equals `1.0`).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A value in a message: strings quoted and cut, the rest as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => quote(s),
        other => crate::echo::cut(&other.to_string()).into_owned(),
    }
}

/// How to write a string that looks like a list as a YAML list: `"a,b"` becomes `[a, b]`.
fn list_hint(text: &str) -> String {
    let items: Vec<&str> = text.split(',').map(str::trim).collect();
    let shown = if items.len() > 1 && text.chars().count() <= crate::echo::SHOWN_CHARS {
        format!("[{}]", items.join(", "))
    } else {
        "[a, b, c]".to_string()
    };
    format!(" (write a YAML list: {shown})")
}

/// A parameter type with its article: "an int", "a list".
pub(super) fn article(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "a string",
        ParamType::Int => "an int",
        ParamType::Float => "a float",
        ParamType::Bool => "a bool",
        ParamType::List => "a list",
    }
}

/// A value as a message shows it: `the number 0.5`, `the string "abc"`.
pub(super) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the bool {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {}", quote(s)),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

struct Given<'a> {
    name: &'a str,
    value: &'a Value,
    name_path: String,
    value_path: String,
    /// Text is coerced to the declared type rather than required to have it.
    coerce_text: bool,
}

fn run_values<'a>(given: &'a [ParamValue], prefix: &str) -> Vec<Given<'a>> {
    given
        .iter()
        .enumerate()
        .map(|(i, p)| Given {
            name: &p.name,
            value: &p.value,
            name_path: format!("{prefix}[{i}].name"),
            value_path: format!("{prefix}[{i}].value"),
            coerce_text: false,
        })
        .collect()
}

fn resolve(
    spec: &PipelineSpec,
    given: &[Given<'_>],
    source: &Source,
    missing_path: impl Fn(&str) -> String,
) -> Result<BTreeMap<String, Value>, Vec<Diagnostic>> {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    let given_names: BTreeSet<&str> = given.iter().map(|g| g.name).collect();
    for g in given {
        match check_one(spec, g, source) {
            Ok(v) => {
                values.insert(g.name.to_string(), v);
            }
            Err(d) => errors.push(d),
        }
    }
    for p in &spec.params {
        if given_names.contains(p.name.as_str()) {
            continue;
        }
        match &p.default {
            Some(default) => {
                values.insert(p.name.clone(), default.clone());
            }
            None => errors.push(Diagnostic::new(
                source,
                missing_path(&p.name),
                format!(
                    "missing required parameter {:?} ({}, no default); give it with -p {}=VALUE",
                    p.name,
                    p.kind.as_str(),
                    p.name
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(errors)
    }
}

/// The value of one given parameter, coerced or checked against its declaration.
fn check_one(spec: &PipelineSpec, g: &Given<'_>, source: &Source) -> Result<Value, Diagnostic> {
    let Some(declared) = spec.params.iter().find(|p| p.name == g.name) else {
        let names: Vec<&str> = spec.params.iter().map(|p| p.name.as_str()).collect();
        let hint = suggest::unknown_name_hint(g.name, &names, "declared parameters");
        let message = format!("unknown parameter {}{hint}", quote(g.name));
        return Err(Diagnostic::new(source, &g.name_path, message));
    };
    let result = match g.value {
        Value::String(text) if g.coerce_text => coerce(text, declared.kind),
        value => match type_mismatch(value, declared.kind) {
            None => Ok(value.clone()),
            Some(message) => Err(message),
        },
    };
    let result = result.and_then(|value| match not_allowed(&value, declared) {
        None => Ok(value),
        Some(message) => Err(message),
    });
    result.map_err(|message| Diagnostic::new(source, &g.value_path, message))
}

/// Text from the command line as a value of the declared type.
fn coerce(text: &str, kind: ParamType) -> Result<Value, String> {
    let trimmed = text.trim();
    let fail = || format!("expected {}, got {}", article(kind), quote(text));
    match kind {
        ParamType::String => Ok(Value::String(text.to_string())),
        ParamType::Int => trimmed.parse::<i64>().map(Value::from).map_err(|_| fail()),
        ParamType::Float => trimmed
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(fail),
        ParamType::Bool => match trimmed.to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(fail()),
        },
        ParamType::List if trimmed.starts_with('[') => match serde_json::from_str(trimmed) {
            Ok(Value::Array(items)) => Ok(Value::Array(items)),
            Ok(_) => Err(fail()),
            Err(e) => Err(format!("expected a list, got {}: {e}", quote(text))),
        },
        ParamType::List if trimmed.is_empty() => Ok(Value::Array(Vec::new())),
        ParamType::List => Ok(Value::Array(
            trimmed
                .split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .collect(),
        )),
    }
}

/// The declared parameter called `name`.
pub(super) fn declared<'a>(spec: &'a PipelineSpec, name: &str) -> Option<&'a ParamSpec> {
    spec.params.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> PipelineSpec {
        serde_json::from_value(json!({
            "params": [
                {"name": "epochs", "type": "int", "default": 5},
                {"name": "lr", "type": "float"},
                {"name": "debug", "type": "bool", "default": false},
                {"name": "tags", "type": "list", "default": []},
                {"name": "model", "default": "resnet"},
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

    fn cli(pairs: &[(&str, &str)]) -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn coerces_command_line_text() {
        let got = resolve_params(
            &spec(),
            &cli(&[
                ("epochs", "7"),
                ("lr", "0.5"),
                ("debug", "True"),
                ("tags", "a, b"),
                ("model", "7"),
            ]),
            &source(),
        )
        .unwrap();
        assert_eq!(got["epochs"], json!(7));
        assert_eq!(got["lr"], json!(0.5));
        assert_eq!(got["debug"], json!(true));
        assert_eq!(got["tags"], json!(["a", "b"]));
        assert_eq!(got["model"], json!("7"));
        let got = resolve_params(
            &spec(),
            &cli(&[("lr", "1"), ("tags", "[1, \"x\"]")]),
            &source(),
        )
        .unwrap();
        assert_eq!(got["lr"], json!(1.0));
        assert_eq!(got["tags"], json!([1, "x"]));
        assert_eq!(got["epochs"], json!(5), "defaults fill the rest");
    }

    #[test]
    fn reports_bad_command_line_values() {
        let errors = resolve_params(
            &spec(),
            &cli(&[
                ("epochs", "5.5"),
                ("lr", "inf"),
                ("debug", "yes"),
                ("epoch", "3"),
            ]),
            &source(),
        )
        .unwrap_err();
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "p.yaml[0] -p epochs: expected an int, got \"5.5\"",
                "p.yaml[0] -p lr: expected a float, got \"inf\"",
                "p.yaml[0] -p debug: expected a bool, got \"yes\"",
                "p.yaml[0] -p epoch: unknown parameter \"epoch\" (did you mean \"epochs\"?)",
            ]
        );
    }

    #[test]
    fn missing_required_parameter() {
        let errors = resolve_params(&spec(), &[], &source()).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "p.yaml[0] -p lr: missing required parameter \"lr\" (float, no default); give it with -p lr=VALUE"
            ]
        );
    }

    #[test]
    fn run_values_must_be_typed() {
        let given: Vec<ParamValue> = serde_json::from_value(json!([
            {"name": "lr", "value": 0.1},
            {"name": "epochs", "value": "5"},
            {"name": "model", "value": 7},
            {"name": "tags", "value": ["a"]},
        ]))
        .unwrap();
        let errors = resolve_run_params(&spec(), &given, &source()).unwrap_err();
        let lines: Vec<String> = errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "p.yaml[0] spec.params[1].value: expected an int, got the string \"5\" (write it without quotes)",
                "p.yaml[0] spec.params[2].value: expected a string, got the number 7 (quote it: \"7\")",
            ]
        );
        let ok = resolve_run_params(&spec(), &given[..1], &source()).unwrap();
        assert_eq!(ok["lr"], json!(0.1));
        assert_eq!(ok["model"], json!("resnet"));
    }

    #[test]
    fn type_table() {
        let cases = [
            (json!(5), ParamType::Int, true),
            (json!(-5), ParamType::Int, true),
            (json!(5.0), ParamType::Int, false),
            (json!(5), ParamType::Float, true),
            (json!(0.5), ParamType::Float, true),
            (json!("0.5"), ParamType::Float, false),
            (json!(true), ParamType::Bool, true),
            (json!("true"), ParamType::Bool, false),
            (json!([1, 2]), ParamType::List, true),
            (json!("a,b"), ParamType::List, false),
            (json!("x"), ParamType::String, true),
            (json!(1), ParamType::String, false),
            (json!({"a": 1}), ParamType::String, false),
        ];
        for (value, kind, ok) in cases {
            assert_eq!(
                type_mismatch(&value, kind).is_none(),
                ok,
                "{value} as {kind:?}"
            );
        }
    }
}
