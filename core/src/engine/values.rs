//! How typed values become the strings a command sees.

use serde_json::Value;

/// Renders a parameter or item value: strings as they are, everything else as compact JSON
/// (`5`, `0.5`, `true`, `["a","b"]`).
pub fn render_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Parses a `forEach` source into its items: a JSON list, given as a value or as text.
pub fn list_items(value: &Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Array(items)) => Ok(items),
            _ => Err(format!("forEach needs a JSON list, got {s:?}")),
        },
        other => Err(format!("forEach needs a list, got {other}")),
    }
}
