//! Recursive descent over the tokens, loosest operator first: `||`, `&&`, `!`, comparison.
//! Each `(` and `!` is one level deeper; past [`MAX_NESTING`] levels parsing stops with
//! [`ExprError::TooDeep`] before the recursion can exhaust the stack.

use super::lex::{Spanned, Token, lex, syntax};
use super::{Condition, ExprError, MAX_NESTING, Operand};

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
        depth: 0,
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
    /// How many `(` and `!` enclose the current position.
    depth: usize,
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
        let mut any = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            any.push(self.and()?);
        }
        Ok(flatten(any, Condition::Any))
    }

    fn and(&mut self) -> Result<Condition, ExprError> {
        let mut all = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            all.push(self.unary()?);
        }
        Ok(flatten(all, Condition::All))
    }

    fn unary(&mut self) -> Result<Condition, ExprError> {
        if self.peek() == Some(&Token::Not) {
            self.deeper()?;
            self.pos += 1;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    /// Enters one more level of nesting at the current token, or refuses to.
    fn deeper(&mut self) -> Result<(), ExprError> {
        if self.depth >= MAX_NESTING {
            let at = self.tokens.get(self.pos).map_or(self.text.len(), |t| t.at);
            return Err(ExprError::TooDeep {
                column: self.text[..at].chars().count() + 1,
            });
        }
        self.depth += 1;
        Ok(())
    }

    fn primary(&mut self) -> Result<Condition, ExprError> {
        match self.peek() {
            Some(Token::LParen) => {
                self.deeper()?;
                self.pos += 1;
                let inner = self.or()?;
                if self.peek() != Some(&Token::RParen) {
                    return Err(self.expected("`)`"));
                }
                self.pos += 1;
                self.depth -= 1;
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

/// One condition stays itself; two or more become one `All` or `Any` node.
fn flatten(mut conditions: Vec<Condition>, many: fn(Vec<Condition>) -> Condition) -> Condition {
    match conditions.len() {
        1 => conditions.remove(0),
        _ => many(conditions),
    }
}
