//! `when` conditions: a small expression language over placeholders.
//!
//! A condition is parsed once with [`Condition::parse`], checked statically by validation with
//! [`Condition::check_types`] (parameter and output types are known before anything runs), and
//! evaluated by the engine with [`Condition::evaluate`] once the values it references exist.
//!
//! Grammar, loosest first:
//!
//! ```text
//! condition  := and ( "||" and )*
//! and        := unary ( "&&" unary )*
//! unary      := "!" unary | primary            -- `!a == b` is `!(a == b)`
//! primary    := "(" condition ")" | operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=") operand ]
//! operand    := {{placeholder}} | number | 'quoted' | "quoted" | true | false | bare-word
//! ```
//!
//! Quoted strings and bare words may contain placeholders (`'{{params.env}}-eu'`). A lone
//! operand is true iff its value is `true` (any case). After substitution, a comparison is
//! numeric when both sides are numbers; otherwise `==`/`!=` compare text (with `true`/`True`
//! normalized and surrounding whitespace ignored) and the ordering operators are an error.
//!
//! Text flows through `lex` (tokens) and `parse` (the tree below); `types` holds the static
//! checks. Written by hand because the language is tiny and its operands are our
//! placeholders, which no general expression crate knows how to type-check.

mod lex;
mod parse;
mod types;

#[cfg(test)]
mod tests;

use std::fmt;

use crate::api::ParamType;
use crate::echo::quote;
use crate::template::{Reference, Template, TemplateError};

/// How deeply parentheses and `!` may nest in a condition. Parsing, checking and evaluating
/// recurse once per level, so the limit bounds the stack they use: the operator validates on
/// 2 MiB worker stacks, and a hostile condition of thousands of `(` must be an error there,
/// not an overflow. Real conditions nest two or three levels; chains of `&&` and `||` are
/// flat and do not count.
pub const MAX_NESTING: usize = 32;

/// A parsed `when` condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// A lone operand: true iff its value is `true` (any case).
    Operand(Operand),
    /// `left op right`.
    Compare {
        /// The left-hand operand.
        left: Operand,
        /// The operator.
        op: CompareOp,
        /// The right-hand operand.
        right: Operand,
    },
    /// `!condition`.
    Not(Box<Condition>),
    /// `a && b && ...` (two or more), evaluated left to right with short-circuit. A chain is
    /// one node, however long, so that its length costs no depth.
    All(Vec<Condition>),
    /// `a || b || ...` (two or more), evaluated left to right with short-circuit.
    Any(Vec<Condition>),
}

/// One side of a comparison, or a lone operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A placeholder standing alone: `{{params.epochs}}`.
    Ref(Reference),
    /// A number literal, as written: `0.9`, `-3`, `1e-4`.
    Number(String),
    /// `true` or `false`, in any case.
    Bool(bool),
    /// A quoted string or a bare word; it may contain placeholders.
    Text {
        /// The text, parsed for placeholders.
        template: Template,
        /// Whether it was written in quotes (as opposed to a bare word).
        quoted: bool,
    },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CompareOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    pub(super) fn is_ordering(self) -> bool {
        !matches!(self, CompareOp::Eq | CompareOp::Ne)
    }

    fn holds(self, ordering: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CompareOp::Eq => ordering == Equal,
            CompareOp::Ne => ordering != Equal,
            CompareOp::Lt => ordering == Less,
            CompareOp::Le => ordering != Greater,
            CompareOp::Gt => ordering == Greater,
            CompareOp::Ge => ordering != Less,
        }
    }
}

impl fmt::Display for CompareOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a condition could not be parsed or evaluated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// Nothing but whitespace.
    #[error("empty condition")]
    Empty,
    /// Parentheses and `!` nested deeper than [`MAX_NESTING`].
    #[error(
        "condition nests parentheses and `!` deeper than {MAX_NESTING} levels (column {column}); \
         split it or simplify it"
    )]
    TooDeep { column: usize },
    /// Not a condition; `column` counts characters from 1.
    #[error("{message} (column {column})")]
    Syntax { column: usize, message: String },
    /// A placeholder that does not parse.
    #[error("{0}")]
    Template(#[from] TemplateError),
    /// A placeholder the resolver gave no value for.
    #[error("{reference} has no value")]
    Unresolved { reference: String },
    /// An ordering operator between values that are not both numbers.
    #[error(
        "cannot compare {} {op} {}: `{op}` needs two numbers",
        quote(left),
        quote(right)
    )]
    NotNumbers {
        op: CompareOp,
        left: String,
        right: String,
    },
}

impl ExprError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            ExprError::Empty => "EmptyCondition",
            ExprError::TooDeep { .. } => "ConditionTooDeep",
            ExprError::Syntax { .. } => "ConditionSyntax",
            ExprError::Template(_) => "ConditionPlaceholder",
            ExprError::Unresolved { .. } => "ConditionUnresolved",
            ExprError::NotNumbers { .. } => "ConditionNotNumbers",
        }
    }
}

// === impl Condition ===

impl Condition {
    /// Parses a condition.
    pub fn parse(text: &str) -> Result<Condition, ExprError> {
        parse::parse(text)
    }

    /// Every placeholder in the condition, in order of appearance.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        self.collect_references(&mut out);
        out
    }

    fn collect_references<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Condition::Operand(o) => o.collect_references(out),
            Condition::Compare { left, right, .. } => {
                left.collect_references(out);
                right.collect_references(out);
            }
            Condition::Not(c) => c.collect_references(out),
            Condition::All(all) | Condition::Any(all) => {
                for c in all {
                    c.collect_references(out);
                }
            }
        }
    }

    /// Evaluates the condition with the values `resolve` gives for its placeholders; a
    /// placeholder without a value is an error.
    pub fn evaluate(
        &self,
        resolve: impl Fn(&Reference) -> Option<String>,
    ) -> Result<bool, ExprError> {
        self.eval(&resolve)
    }

    fn eval(&self, resolve: &dyn Fn(&Reference) -> Option<String>) -> Result<bool, ExprError> {
        match self {
            Condition::Operand(o) => Ok(o.value(resolve)?.trim().eq_ignore_ascii_case("true")),
            Condition::Compare { left, op, right } => {
                compare(&left.value(resolve)?, *op, &right.value(resolve)?)
            }
            Condition::Not(c) => Ok(!c.eval(resolve)?),
            Condition::All(all) => {
                for c in all {
                    if !c.eval(resolve)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Condition::Any(any) => {
                for c in any {
                    if c.eval(resolve)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
        }
    }

    /// Type mismatches that are visible before anything runs, as messages: ordering a bool, a
    /// list or a string literal, comparing a bool or a list with a number, a number with a
    /// word it can never equal, or using a number as a whole condition. `type_of` gives the
    /// declared type of a placeholder, `None` when unknown.
    pub fn check_types(&self, type_of: impl Fn(&Reference) -> Option<ParamType>) -> Vec<String> {
        let mut problems = Vec::new();
        types::check(self, &type_of, &mut problems);
        problems
    }
}

fn compare(left: &str, op: CompareOp, right: &str) -> Result<bool, ExprError> {
    let (l, r) = (left.trim(), right.trim());
    if let (Some(a), Some(b)) = (parse_number(l), parse_number(r)) {
        return Ok(a.partial_cmp(&b).is_some_and(|o| op.holds(o)));
    }
    if op.is_ordering() {
        return Err(ExprError::NotNumbers {
            op,
            left: left.to_string(),
            right: right.to_string(),
        });
    }
    Ok(op.holds(normalize(l).cmp(&normalize(r))))
}

/// `true`/`True`/`TRUE` compare equal; everything else compares as written.
fn normalize(s: &str) -> String {
    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") {
        s.to_ascii_lowercase()
    } else {
        s.to_string()
    }
}

/// A decimal number (`5`, `-0.5`, `.5`, `1e-3`); not `inf`, `nan` or hex, which `f64`'s own
/// parser would accept.
pub(super) fn parse_number(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(i) => (&digits[..i], Some(&digits[i + 1..])),
        None => (digits, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        all_digits(whole) && all_digits(fraction) && (!whole.is_empty() || !fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && all_digits(e)
    });
    if mantissa_ok && exponent_ok {
        s.parse().ok().filter(|f: &f64| f.is_finite())
    } else {
        None
    }
}

// === impl Operand ===

impl Operand {
    fn collect_references<'a>(&'a self, out: &mut Vec<&'a Reference>) {
        match self {
            Operand::Ref(r) => out.push(r),
            Operand::Text { template, .. } => out.extend(template.references()),
            Operand::Number(_) | Operand::Bool(_) => {}
        }
    }

    fn value(&self, resolve: &dyn Fn(&Reference) -> Option<String>) -> Result<String, ExprError> {
        match self {
            Operand::Ref(r) => resolve(r).ok_or_else(|| ExprError::Unresolved {
                reference: r.to_string(),
            }),
            Operand::Number(n) => Ok(n.clone()),
            Operand::Bool(b) => Ok(b.to_string()),
            Operand::Text { template, .. } => {
                let mut missing = None;
                let text = template.render(|r| {
                    let v = resolve(r);
                    if v.is_none() && missing.is_none() {
                        missing = Some(r.to_string());
                    }
                    v
                });
                match missing {
                    Some(reference) => Err(ExprError::Unresolved { reference }),
                    None => Ok(text),
                }
            }
        }
    }

    /// The operand as the user wrote it (quotes normalized to single quotes), for messages:
    /// cut to its first [`crate::echo::SHOWN_CHARS`] characters when longer.
    pub(super) fn source_text(&self) -> String {
        let text = match self {
            Operand::Ref(r) => r.to_string(),
            Operand::Number(n) => n.clone(),
            Operand::Bool(b) => b.to_string(),
            Operand::Text { template, quoted } => {
                let text = template.render(|_| None);
                if *quoted { format!("'{text}'") } else { text }
            }
        };
        crate::echo::cut(&text).into_owned()
    }
}
