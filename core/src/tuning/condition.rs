//! `when` conditions: a parameter that exists only when another has a given value
//! (`momentum` only `when: "optimizer == sgd"`).
//!
//! The syntax is one comparison, `NAME == VALUE` or `NAME != VALUE`, the value bare or quoted.
//! The crate's expression language ([`crate::expr`]) compares `{{...}}` references of a
//! pipeline; a condition here names a sibling parameter directly, so it has its own tiny
//! parser.

use super::value::ParamValue;

/// Numbers this close (relative) compare equal in a condition.
const SAME_NUMBER: f64 = 1e-9;

/// A parsed `when`, not yet resolved against the space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ParsedCondition {
    pub parent: String,
    pub negated: bool,
    pub value: String,
}

/// Parses `NAME == VALUE` / `NAME != VALUE`; the error says what was expected.
pub(crate) fn parse(text: &str) -> Result<ParsedCondition, String> {
    let (parent, negated, value) = if let Some((l, r)) = text.split_once("==") {
        (l, false, r)
    } else if let Some((l, r)) = text.split_once("!=") {
        (l, true, r)
    } else {
        return Err(format!(
            "{text:?} is not a condition: expected \"PARAM == value\" or \"PARAM != value\""
        ));
    };
    let parent = parent.trim();
    let value = unquote(value.trim());
    let name_ok = !parent.is_empty()
        && parent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    if !name_ok {
        return Err(format!(
            "{text:?}: the left side must be a parameter name, got {parent:?}"
        ));
    }
    if value.is_empty() || value.contains("==") || value.contains("!=") {
        return Err(format!("{text:?}: expected one value after the operator"));
    }
    Ok(ParsedCondition {
        parent: parent.to_string(),
        negated,
        value: value.to_string(),
    })
}

fn unquote(s: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q).and_then(|s| s.strip_suffix(q)) {
            return inner;
        }
    }
    s
}

/// The value a condition compares with.
#[derive(Clone, Debug, PartialEq)]
pub enum ConditionValue {
    /// A categorical choice.
    Text(String),
    /// A number (`int` and `discrete` parents).
    Number(f64),
}

/// A resolved condition: parameter `parent` (an index into the space) equals, or does not
/// equal, `value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// The parameter the condition reads.
    pub parent: usize,
    /// `!=` rather than `==`.
    pub negated: bool,
    /// The value compared with.
    pub value: ConditionValue,
}

impl Condition {
    /// Whether the condition holds for the parent's value.
    pub fn holds(&self, parent_value: &ParamValue) -> bool {
        let equal = match (&self.value, parent_value) {
            (ConditionValue::Text(want), ParamValue::Text(got)) => want == got,
            (ConditionValue::Number(want), got) => got
                .as_f64()
                .is_some_and(|g| (g - want).abs() <= SAME_NUMBER * want.abs().max(1.0)),
            _ => false,
        };
        equal != self.negated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_operators_and_quotes() {
        let table = [
            ("optimizer == sgd", "optimizer", false, "sgd"),
            ("optimizer=='sgd'", "optimizer", false, "sgd"),
            (" layers != \"3\" ", "layers", true, "3"),
        ];
        for (text, parent, negated, value) in table {
            let c = parse(text).unwrap();
            assert_eq!(
                (c.parent.as_str(), c.negated, c.value.as_str()),
                (parent, negated, value),
                "{text}"
            );
        }
    }

    #[test]
    fn refuses_what_is_not_one_comparison() {
        for text in [
            "optimizer",
            "== sgd",
            "optimizer ==",
            "a b == c",
            "a == b == c",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn numbers_compare_by_value() {
        let c = Condition {
            parent: 0,
            negated: false,
            value: ConditionValue::Number(3.0),
        };
        assert!(c.holds(&ParamValue::Int(3)));
        assert!(!c.holds(&ParamValue::Int(4)));
        assert!(!c.holds(&ParamValue::Text("3".into())));
    }
}
