//! Static type checks of a condition: what validation can tell before anything runs.

use super::{CompareOp, Condition, Operand, parse_number};
use crate::api::ParamType;
use crate::template::Reference;

/// Appends the type mismatches of `condition` to `out`.
pub(super) fn check(
    condition: &Condition,
    type_of: &dyn Fn(&Reference) -> Option<ParamType>,
    out: &mut Vec<String>,
) {
    match condition {
        Condition::Operand(o) => {
            let kind = kind(o, type_of);
            let text = o.source_text();
            match kind {
                Kind::Number | Kind::List => out.push(format!(
                    "{text} is {}, not a condition; compare it (e.g. `{text} > 0`)",
                    kind.describe()
                )),
                Kind::Literal => out.push(format!(
                    "{text} is not a condition: a lone operand is true only when it is `true`"
                )),
                Kind::Bool | Kind::Text | Kind::Unknown => {}
            }
        }
        Condition::Compare { left, op, right } => {
            check_comparison(left, *op, right, type_of, out);
        }
        Condition::Not(c) => check(c, type_of, out),
        Condition::All(all) | Condition::Any(all) => {
            for c in all {
                check(c, type_of, out);
            }
        }
    }
}

/// What is statically known about an operand's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Number,
    Bool,
    List,
    /// A string-typed placeholder: it may hold anything, digits included.
    Text,
    /// A literal word that is neither a number nor a bool.
    Literal,
    /// A placeholder of unknown type, or text built from placeholders.
    Unknown,
}

impl Kind {
    fn describe(self) -> &'static str {
        match self {
            Kind::Number => "a number",
            Kind::Bool => "a bool",
            Kind::List => "a list",
            Kind::Text => "a string",
            Kind::Literal => "a string literal",
            Kind::Unknown => "a value",
        }
    }
}

fn check_comparison(
    left: &Operand,
    op: CompareOp,
    right: &Operand,
    type_of: &dyn Fn(&Reference) -> Option<ParamType>,
    out: &mut Vec<String>,
) {
    let sides = [(left, kind(left, type_of)), (right, kind(right, type_of))];
    if op.is_ordering() {
        for (operand, kind) in sides {
            if matches!(kind, Kind::Bool | Kind::List | Kind::Literal) {
                out.push(format!(
                    "`{op}` cannot order {} ({}); only numbers can be ordered",
                    kind.describe(),
                    operand.source_text()
                ));
            }
        }
        return;
    }
    let [(l, lk), (r, rk)] = sides;
    let mismatch = matches!(
        (lk, rk),
        (Kind::Bool, Kind::Number)
            | (Kind::Number, Kind::Bool)
            | (Kind::List, Kind::Number | Kind::Bool | Kind::Literal)
            | (Kind::Number | Kind::Bool | Kind::Literal, Kind::List)
            | (Kind::Number | Kind::Bool, Kind::Literal)
            | (Kind::Literal, Kind::Number | Kind::Bool)
    );
    if mismatch {
        out.push(format!(
            "`{op}` compares {} ({}) with {} ({}), which can never be equal",
            lk.describe(),
            l.source_text(),
            rk.describe(),
            r.source_text()
        ));
    }
}

fn kind(operand: &Operand, type_of: &dyn Fn(&Reference) -> Option<ParamType>) -> Kind {
    match operand {
        Operand::Ref(r) => match type_of(r) {
            Some(ParamType::Int | ParamType::Float) => Kind::Number,
            Some(ParamType::Bool) => Kind::Bool,
            Some(ParamType::List) => Kind::List,
            Some(ParamType::String) => Kind::Text,
            None => Kind::Unknown,
        },
        Operand::Number(_) => Kind::Number,
        Operand::Bool(_) => Kind::Bool,
        Operand::Text { template, .. } => {
            if template.references().next().is_some() {
                return Kind::Unknown;
            }
            let text = template.render(|_| None);
            let text = text.trim();
            if parse_number(text).is_some() {
                Kind::Number
            } else if text.eq_ignore_ascii_case("true") || text.eq_ignore_ascii_case("false") {
                Kind::Bool
            } else {
                Kind::Literal
            }
        }
    }
}
