//! Recursive descent over the tokens, loosest operator first: `||`, `&&`, `!`, comparison.

use super::lex::{Spanned, Token, lex, syntax};
use super::{Condition, ExprError, Operand};

/// Parses a whole condition.
pub(super) fn parse(text: &str) -> Result<Condition, ExprError> {
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
