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
//! Written by hand because the language is tiny and its operands are our placeholders, which
//! no general expression crate knows how to type-check.

use std::fmt;

use crate::api::ParamType;
use crate::template::{Reference, Template, TemplateError};

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
    /// `a && b`, evaluated left to right with short-circuit.
    And(Box<Condition>, Box<Condition>),
    /// `a || b`, evaluated left to right with short-circuit.
    Or(Box<Condition>, Box<Condition>),
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

    fn is_ordering(self) -> bool {
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
    #[error("cannot compare {left:?} {op} {right:?}: `{op}` needs two numbers")]
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
        let tokens = lex(text)?;
        if tokens.is_empty() {
            return Err(ExprError::Empty);
        }
        let mut parser = Parser {
            tokens,
            pos: 0,
            text,
        };
        let condition = parser.or()?;
        match parser.tokens.get(parser.pos) {
            None => Ok(condition),
            Some(t) => Err(parser.error_at(t, format!("unexpected {}", t.token.describe()))),
        }
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
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.collect_references(out);
                b.collect_references(out);
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
            Condition::And(a, b) => Ok(a.eval(resolve)? && b.eval(resolve)?),
            Condition::Or(a, b) => Ok(a.eval(resolve)? || b.eval(resolve)?),
        }
    }

    /// Type mismatches that are visible before anything runs, as messages: ordering a bool, a
    /// list or a string literal, comparing a bool or a list with a number, a number with a
    /// word it can never equal, or using a number as a whole condition. `type_of` gives the
    /// declared type of a placeholder, `None` when unknown.
    pub fn check_types(&self, type_of: impl Fn(&Reference) -> Option<ParamType>) -> Vec<String> {
        let mut problems = Vec::new();
        self.check(&type_of, &mut problems);
        problems
    }

    fn check(&self, type_of: &dyn Fn(&Reference) -> Option<ParamType>, out: &mut Vec<String>) {
        match self {
            Condition::Operand(o) => {
                let kind = o.kind(type_of);
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
            Condition::Not(c) => c.check(type_of, out),
            Condition::And(a, b) | Condition::Or(a, b) => {
                a.check(type_of, out);
                b.check(type_of, out);
            }
        }
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
fn parse_number(s: &str) -> Option<f64> {
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

// === type checks ===

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
    let sides = [(left, left.kind(type_of)), (right, right.kind(type_of))];
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

    fn kind(&self, type_of: &dyn Fn(&Reference) -> Option<ParamType>) -> Kind {
        match self {
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

    /// The operand as the user wrote it (quotes normalized to single quotes).
    fn source_text(&self) -> String {
        match self {
            Operand::Ref(r) => r.to_string(),
            Operand::Number(n) => n.clone(),
            Operand::Bool(b) => b.to_string(),
            Operand::Text { template, quoted } => {
                let text = template.render(|_| None);
                if *quoted { format!("'{text}'") } else { text }
            }
        }
    }
}

// === lexer ===

#[derive(Clone, Debug, PartialEq)]
enum Token {
    LParen,
    RParen,
    Not,
    And,
    Or,
    Compare(CompareOp),
    Operand(Operand),
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::LParen => "`(`".into(),
            Token::RParen => "`)`".into(),
            Token::Not => "`!`".into(),
            Token::And => "`&&`".into(),
            Token::Or => "`||`".into(),
            Token::Compare(op) => format!("`{op}`"),
            Token::Operand(o) => format!("operand {}", o.source_text()),
        }
    }
}

#[derive(Debug)]
struct Spanned {
    token: Token,
    /// Byte offset in the condition.
    at: usize,
}

/// Characters that end a bare word.
const DELIMITERS: &[char] = &['(', ')', '!', '&', '|', '=', '<', '>', '\'', '"'];

fn lex(text: &str) -> Result<Vec<Spanned>, ExprError> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let rest = &text[i..];
        let two = rest.get(..2).unwrap_or("");
        let (token, len) = match (c, two) {
            (_, "&&") => (Token::And, 2),
            (_, "||") => (Token::Or, 2),
            (_, "==") => (Token::Compare(CompareOp::Eq), 2),
            (_, "!=") => (Token::Compare(CompareOp::Ne), 2),
            (_, "<=") => (Token::Compare(CompareOp::Le), 2),
            (_, ">=") => (Token::Compare(CompareOp::Ge), 2),
            ('<', _) => (Token::Compare(CompareOp::Lt), 1),
            ('>', _) => (Token::Compare(CompareOp::Gt), 1),
            ('!', _) => (Token::Not, 1),
            ('(', _) => (Token::LParen, 1),
            (')', _) => (Token::RParen, 1),
            ('&' | '|' | '=', _) => {
                let hint = match c {
                    '&' => "`&&`",
                    '|' => "`||`",
                    _ => "`==`",
                };
                return Err(syntax(
                    text,
                    i,
                    format!("unexpected `{c}`; did you mean {hint}?"),
                ));
            }
            ('\'' | '"', _) => {
                let (operand, len) = quoted(text, i, c)?;
                (Token::Operand(operand), len)
            }
            _ => {
                let len = word_len(rest);
                (Token::Operand(word(&rest[..len])?), len)
            }
        };
        tokens.push(Spanned { token, at: i });
        i += len;
    }
    Ok(tokens)
}

/// A quoted string starting at `start`; `\` escapes the quote and itself.
fn quoted(text: &str, start: usize, quote: char) -> Result<(Operand, usize), ExprError> {
    let mut content = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((j, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e)) if e == quote || e == '\\' => content.push(e),
                Some((_, e)) => {
                    content.push('\\');
                    content.push(e);
                }
                None => content.push('\\'),
            },
            c if c == quote => {
                let template = Template::parse(&content)?;
                return Ok((
                    Operand::Text {
                        template,
                        quoted: true,
                    },
                    j + 2,
                ));
            }
            c => content.push(c),
        }
    }
    Err(syntax(
        text,
        start,
        format!("unterminated string starting with {quote}"),
    ))
}

/// The length of the bare word at the start of `rest`; placeholders inside it may contain
/// spaces and operator characters.
fn word_len(rest: &str) -> usize {
    let mut i = 0;
    while let Some(c) = rest[i..].chars().next() {
        if rest[i..].starts_with("{{") {
            match rest[i..].find("}}") {
                Some(end) => i += end + 2,
                None => return rest.len(),
            }
            continue;
        }
        if c.is_whitespace() || DELIMITERS.contains(&c) {
            break;
        }
        i += c.len_utf8();
    }
    i
}

fn word(text: &str) -> Result<Operand, ExprError> {
    let template = Template::parse(text)?;
    if let Some(r) = template.as_single_reference() {
        return Ok(Operand::Ref(r.clone()));
    }
    if template.references().next().is_none() {
        if parse_number(text).is_some() {
            return Ok(Operand::Number(text.to_string()));
        }
        if text.eq_ignore_ascii_case("true") {
            return Ok(Operand::Bool(true));
        }
        if text.eq_ignore_ascii_case("false") {
            return Ok(Operand::Bool(false));
        }
    }
    Ok(Operand::Text {
        template,
        quoted: false,
    })
}

fn syntax(text: &str, at: usize, message: String) -> ExprError {
    ExprError::Syntax {
        column: text[..at].chars().count() + 1,
        message,
    }
}

// === parser ===

struct Parser<'a> {
    tokens: Vec<Spanned>,
    pos: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|s| &s.token)
    }

    fn error_at(&self, at: &Spanned, message: String) -> ExprError {
        syntax(self.text, at.at, message)
    }

    /// An error at the current token, or at the end of the condition.
    fn expected(&self, what: &str) -> ExprError {
        match self.tokens.get(self.pos) {
            Some(t) => self.error_at(t, format!("expected {what}, found {}", t.token.describe())),
            None => syntax(
                self.text,
                self.text.len(),
                format!("expected {what} at the end"),
            ),
        }
    }

    fn or(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            left = Condition::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, ExprError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            left = Condition::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Condition, ExprError> {
        if self.peek() == Some(&Token::Not) {
            self.pos += 1;
            return Ok(Condition::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, ExprError> {
        match self.peek() {
            Some(Token::LParen) => {
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::RParen) {
                    return Err(self.expected("`)`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Operand(_)) => {
                let left = self.operand()?;
                let Some(Token::Compare(op)) = self.peek().cloned() else {
                    return Ok(Condition::Operand(left));
                };
                self.pos += 1;
                let right = self.operand()?;
                if let Some(Token::Compare(_)) = self.peek() {
                    let message = "comparisons cannot be chained; join them with `&&`";
                    return Err(self.expected_message(message));
                }
                Ok(Condition::Compare { left, op, right })
            }
            _ => Err(self.expected("an operand")),
        }
    }

    fn expected_message(&self, message: &str) -> ExprError {
        match self.tokens.get(self.pos) {
            Some(t) => self.error_at(t, message.to_string()),
            None => syntax(self.text, self.text.len(), message.to_string()),
        }
    }

    fn operand(&mut self) -> Result<Operand, ExprError> {
        match self.peek() {
            Some(Token::Operand(o)) => {
                let o = o.clone();
                self.pos += 1;
                Ok(o)
            }
            _ => Err(self.expected("an operand")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(r: &Reference) -> Option<String> {
        let v = match r.to_string().as_str() {
            "{{params.epochs}}" => "5",
            "{{params.lr}}" => "0.01",
            "{{params.flag}}" => "True",
            "{{params.off}}" => "false",
            "{{params.name}}" => "resnet",
            "{{params.region}}" => "eu",
            "{{steps.train.outputs.params.accuracy}}" => "0.91\n",
            "{{item}}" => "3",
            _ => return None,
        };
        Some(v.to_string())
    }

    #[test]
    fn evaluates() {
        let cases: &[(&str, bool)] = &[
            ("true", true),
            ("TRUE", true),
            ("false", false),
            ("{{params.flag}}", true),
            ("{{params.off}}", false),
            ("{{params.name}}", false),
            ("!{{params.off}}", true),
            ("{{params.epochs}} == 5", true),
            ("{{params.epochs}} == 5.0", true),
            ("{{params.epochs}} != 5", false),
            ("{{params.epochs}} > 4", true),
            ("{{params.epochs}} >= 5", true),
            ("{{params.epochs}} < 10", true),
            ("{{params.epochs}} <= 4", false),
            ("{{params.lr}} < 1e-1", true),
            ("{{steps.train.outputs.params.accuracy}} >= 0.9", true),
            ("{{params.epochs}} > 10", false),
            ("'5' == 5", true),
            ("{{params.name}} == resnet", true),
            ("{{params.name}} == 'resnet'", true),
            ("{{params.name}} == \"resnet\"", true),
            ("{{params.name}} != vit", true),
            ("{{params.flag}} == true", true),
            ("{{params.flag}} == 'TRUE'", true),
            ("'{{params.region}}-west' == eu-west", true),
            ("{{params.region}}-west == 'eu-west'", true),
            ("{{params.epochs}} > 1 && {{params.name}} == resnet", true),
            ("{{params.epochs}} > 10 || {{params.name}} == resnet", true),
            ("{{params.epochs}} > 10 || {{params.name}} == vit", false),
            ("false && true || true", true),
            ("false && (true || true)", false),
            ("!({{params.epochs}} > 1)", false),
            ("!{{params.epochs}} == 4", true),
            ("!!true", true),
            ("{{ item }} == 3", true),
            ("'a b' == 'a b'", true),
            ("'it\\'s' == \"it's\"", true),
        ];
        for (text, expected) in cases {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.evaluate(values), Ok(*expected), "{text}");
        }
    }

    #[test]
    fn evaluation_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "{{params.name}} > 3",
                "cannot compare \"resnet\" > \"3\": `>` needs two numbers",
            ),
            (
                "abc <= def",
                "cannot compare \"abc\" <= \"def\": `<=` needs two numbers",
            ),
            ("{{params.missing}} == 1", "{{params.missing}} has no value"),
            (
                "'x{{params.missing}}' == 1",
                "{{params.missing}} has no value",
            ),
        ];
        for (text, message) in cases {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let err = c.evaluate(values).expect_err(text);
            assert_eq!(err.to_string(), *message, "{text}");
        }
    }

    #[test]
    fn short_circuits() {
        let c = Condition::parse("false && {{params.missing}} == 1").unwrap();
        assert_eq!(c.evaluate(values), Ok(false));
        let c = Condition::parse("true || {{params.missing}} == 1").unwrap();
        assert_eq!(c.evaluate(values), Ok(true));
    }

    #[test]
    fn syntax_errors() {
        let cases: &[(&str, &str)] = &[
            ("", "empty condition"),
            ("   ", "empty condition"),
            ("a = b", "unexpected `=`; did you mean `==`? (column 3)"),
            ("a & b", "unexpected `&`; did you mean `&&`? (column 3)"),
            ("a | b", "unexpected `|`; did you mean `||`? (column 3)"),
            ("a ==", "expected an operand at the end (column 5)"),
            ("a == && b", "expected an operand, found `&&` (column 6)"),
            ("(a == b", "expected `)` at the end (column 8)"),
            ("a == b)", "unexpected `)` (column 7)"),
            ("a b", "unexpected operand b (column 3)"),
            (
                "1 < 2 < 3",
                "comparisons cannot be chained; join them with `&&` (column 7)",
            ),
            (
                "'abc == 1",
                "unterminated string starting with ' (column 1)",
            ),
            ("&& a", "expected an operand, found `&&` (column 1)"),
            ("|| a", "expected an operand, found `||` (column 1)"),
            ("!", "expected an operand at the end (column 2)"),
            ("{{params.x", "unclosed placeholder starting at byte 0"),
            (
                "{{param.x}} == 1",
                "unknown reference \"{{param.x}}\" (expected params.*, inputs.*, outputs.*, steps.*.outputs.*, item or index)",
            ),
        ];
        for (text, message) in cases {
            let err = Condition::parse(text).expect_err(text);
            assert_eq!(err.to_string(), *message, "{text}");
        }
    }

    #[test]
    fn references_in_order() {
        let c = Condition::parse(
            "{{params.a}} > 1 && ('{{steps.s.outputs.params.b}}/x' == y || !{{item}})",
        )
        .unwrap();
        let refs: Vec<String> = c.references().iter().map(|r| r.to_string()).collect();
        assert_eq!(
            refs,
            ["{{params.a}}", "{{steps.s.outputs.params.b}}", "{{item}}"]
        );
    }

    fn types(r: &Reference) -> Option<ParamType> {
        match r {
            Reference::Param(n) => match n.as_str() {
                "epochs" => Some(ParamType::Int),
                "lr" => Some(ParamType::Float),
                "flag" => Some(ParamType::Bool),
                "tags" => Some(ParamType::List),
                "name" => Some(ParamType::String),
                _ => None,
            },
            Reference::StepParam { .. } => Some(ParamType::Float),
            _ => None,
        }
    }

    #[test]
    fn type_checks() {
        let cases: &[(&str, &[&str])] = &[
            ("{{params.epochs}} > 3", &[]),
            ("{{params.lr}} <= {{steps.t.outputs.params.acc}}", &[]),
            ("{{params.flag}}", &[]),
            ("!{{params.flag}} && {{params.name}} == x", &[]),
            ("{{params.name}} > 3", &[]),
            ("{{params.unknown}} == abc", &[]),
            ("{{params.flag}} == true", &[]),
            ("{{params.epochs}} == '5'", &[]),
            ("{{item}} > 2", &[]),
            (
                "{{params.flag}} > 1",
                &["`>` cannot order a bool ({{params.flag}}); only numbers can be ordered"],
            ),
            (
                "{{params.tags}} < 3",
                &["`<` cannot order a list ({{params.tags}}); only numbers can be ordered"],
            ),
            (
                "{{params.epochs}} >= 'abc'",
                &["`>=` cannot order a string literal ('abc'); only numbers can be ordered"],
            ),
            (
                "{{params.flag}} == 1",
                &[
                    "`==` compares a bool ({{params.flag}}) with a number (1), which can never be equal",
                ],
            ),
            (
                "{{params.epochs}} != true",
                &[
                    "`!=` compares a number ({{params.epochs}}) with a bool (true), which can never be equal",
                ],
            ),
            (
                "{{params.epochs}} == five",
                &[
                    "`==` compares a number ({{params.epochs}}) with a string literal (five), which can never be equal",
                ],
            ),
            (
                "{{params.tags}} == 1",
                &[
                    "`==` compares a list ({{params.tags}}) with a number (1), which can never be equal",
                ],
            ),
            (
                "{{params.epochs}}",
                &[
                    "{{params.epochs}} is a number, not a condition; compare it (e.g. `{{params.epochs}} > 0`)",
                ],
            ),
            (
                "yes",
                &["yes is not a condition: a lone operand is true only when it is `true`"],
            ),
            (
                "{{params.flag}} > 1 || !({{params.tags}} == true)",
                &[
                    "`>` cannot order a bool ({{params.flag}}); only numbers can be ordered",
                    "`==` compares a list ({{params.tags}}) with a bool (true), which can never be equal",
                ],
            ),
        ];
        for (text, expected) in cases {
            let c = Condition::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.check_types(types), *expected, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "[ a1.=!<>&|()'\"{}-]{0,40}|\\PC{0,40}") {
            let _ = Condition::parse(&text);
        }

        #[test]
        fn numeric_comparisons_agree_with_f64(a in -1e6f64..1e6, b in -1e6f64..1e6) {
            for (op, expected) in [("<", a < b), ("<=", a <= b), (">", a > b), ("==", a == b)] {
                let c = Condition::parse(&format!("{a} {op} {b}")).unwrap();
                proptest::prop_assert_eq!(c.evaluate(|_| None), Ok(expected));
            }
        }
    }

    #[test]
    fn numbers_are_strict() {
        for (text, number) in [
            ("5", true),
            ("-5", true),
            ("+0.5", true),
            (".5", true),
            ("5.", true),
            ("1e3", true),
            ("1E-3", true),
            ("inf", false),
            ("NaN", false),
            ("0x10", false),
            ("1e", false),
            ("-", false),
            (".", false),
            ("1.2.3", false),
            ("", false),
        ] {
            assert_eq!(parse_number(text).is_some(), number, "{text}");
        }
    }
}
