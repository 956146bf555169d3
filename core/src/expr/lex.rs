//! Splitting a condition into tokens: operators, parentheses and operands.

use super::{CompareOp, ExprError, Operand, parse_number};
use crate::template::Template;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Token {
    LParen,
    RParen,
    Not,
    And,
    Or,
    Compare(CompareOp),
    Operand(Operand),
}

impl Token {
    pub(super) fn describe(&self) -> String {
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
pub(super) struct Spanned {
    pub(super) token: Token,
    /// Byte offset in the condition.
    pub(super) at: usize,
}

/// Characters that end a bare word.
const DELIMITERS: &[char] = &['(', ')', '!', '&', '|', '=', '<', '>', '\'', '"'];

pub(super) fn lex(text: &str) -> Result<Vec<Spanned>, ExprError> {
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

pub(super) fn syntax(text: &str, at: usize, message: String) -> ExprError {
    ExprError::Syntax {
        column: text[..at].chars().count() + 1,
        message,
    }
}
