//! Placeholders: the `{{...}}` references in commands, args, env values, input values, `when`
//! and `forEach`.
//!
//! A string is parsed once into a [`Template`] of literal text and [`Reference`]s. References
//! make the step graph (a step depends on every step it references), are type-checked by
//! validation, and are resolved in two stages: the engine substitutes values (parameters,
//! upstream output parameters, the fan-out item) and leaves paths (`inputs.artifacts.*`,
//! `outputs.*`) for the launcher, which knows where it put them.

use std::fmt;

use crate::echo::cut;

/// A parsed string: literal text with references in between.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Literal(String),
    Ref(Reference),
}

/// What a placeholder refers to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reference {
    /// `{{params.NAME}}`: a pipeline parameter.
    Param(String),
    /// `{{inputs.params.NAME}}`: one of the step's own input parameters.
    InputParam(String),
    /// `{{inputs.artifacts.NAME}}`: the local path of one of the step's input artifacts.
    InputArtifact(String),
    /// `{{outputs.params.NAME}}`: the path of the file the step writes an output value to.
    OutputParam(String),
    /// `{{outputs.artifacts.NAME}}`: the path the step writes an output artifact to.
    OutputArtifact(String),
    /// `{{steps.STEP.outputs.params.NAME}}`: an upstream step's output value.
    StepParam { step: String, name: String },
    /// `{{steps.STEP.outputs.artifacts.NAME}}`: an upstream step's output artifact (only in
    /// `inputs.artifacts[].from`).
    StepArtifact { step: String, name: String },
    /// `{{item}}`: the element of the `forEach` list this fan-out child runs for.
    Item,
    /// `{{index}}`: the position of that element.
    Index,
}

impl Reference {
    /// The upstream step this reference makes a dependency on, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            Reference::StepParam { step, .. } | Reference::StepArtifact { step, .. } => Some(step),
            _ => None,
        }
    }

    /// Whether the launcher, not the engine, resolves this reference (it is a local path).
    pub fn is_path(&self) -> bool {
        matches!(
            self,
            Reference::InputArtifact(_) | Reference::OutputParam(_) | Reference::OutputArtifact(_)
        )
    }

    /// The reference without its braces (`params.epochs`): how the cache key and the values
    /// handed to a command name it.
    pub fn key(&self) -> String {
        let text = self.to_string();
        text["{{".len()..text.len() - "}}".len()].to_string()
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Param(n) => write!(f, "{{{{params.{n}}}}}"),
            Reference::InputParam(n) => write!(f, "{{{{inputs.params.{n}}}}}"),
            Reference::InputArtifact(n) => write!(f, "{{{{inputs.artifacts.{n}}}}}"),
            Reference::OutputParam(n) => write!(f, "{{{{outputs.params.{n}}}}}"),
            Reference::OutputArtifact(n) => write!(f, "{{{{outputs.artifacts.{n}}}}}"),
            Reference::StepParam { step, name } => {
                write!(f, "{{{{steps.{step}.outputs.params.{name}}}}}")
            }
            Reference::StepArtifact { step, name } => {
                write!(f, "{{{{steps.{step}.outputs.artifacts.{name}}}}}")
            }
            Reference::Item => f.write_str("{{item}}"),
            Reference::Index => f.write_str("{{index}}"),
        }
    }
}

/// Why a string could not be parsed as a template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed placeholder starting at byte {at}")]
    Unclosed { at: usize },
    #[error(
        "unknown reference \"{{{{{}}}}}\" (expected params.*, inputs.*, outputs.*, steps.*.outputs.*, item or index)",
        cut(text)
    )]
    Unknown { text: String },
    #[error("empty name in reference \"{{{{{}}}}}\"", cut(text))]
    EmptyName { text: String },
}

impl Template {
    /// Parses a string. `{{ name }}` tolerates spaces inside the braces.
    pub fn parse(s: &str) -> Result<Template, TemplateError> {
        let parts = pieces(s)
            .map(|piece| match piece? {
                Piece::Text(text) => Ok(Part::Literal(text.to_string())),
                Piece::Placeholder(inner) => parse_reference(inner).map(Part::Ref),
            })
            .collect::<Result<_, _>>()?;
        Ok(Template { parts })
    }

    /// The references in order of appearance.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.parts.iter().filter_map(|p| match p {
            Part::Ref(r) => Some(r),
            Part::Literal(_) => None,
        })
    }

    /// The single reference the whole string consists of, if it is exactly one placeholder.
    pub fn as_single_reference(&self) -> Option<&Reference> {
        match self.parts.as_slice() {
            [Part::Ref(r)] => Some(r),
            _ => None,
        }
    }

    /// Substitutes every reference `resolve` returns a value for and keeps the others as
    /// placeholders.
    pub fn render(&self, mut resolve: impl FnMut(&Reference) -> Option<String>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Ref(r) => match resolve(r) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&r.to_string()),
                },
            }
        }
        out
    }
}

/// A piece of a string with placeholders: literal text, or what a `{{...}}` holds (trimmed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Splits a string into literal text and placeholders, in order, without reading what the
/// placeholders say; an unclosed `{{` ends it with an error. The one scanner behind
/// [`Template::parse`] and the other places placeholders are written with their own
/// vocabulary (an Endpoint's retraining parameters name an alert's variables).
pub fn pieces(s: &str) -> impl Iterator<Item = Result<Piece<'_>, TemplateError>> {
    let mut rest = s;
    let mut offset = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || rest.is_empty() {
            return None;
        }
        match rest.find("{{") {
            None => {
                let text = rest;
                rest = "";
                Some(Ok(Piece::Text(text)))
            }
            Some(start) if start > 0 => {
                let text = &rest[..start];
                offset += start;
                rest = &rest[start..];
                Some(Ok(Piece::Text(text)))
            }
            Some(_) => {
                let after = &rest[2..];
                let Some(end) = after.find("}}") else {
                    failed = true;
                    return Some(Err(TemplateError::Unclosed { at: offset }));
                };
                let inner = after[..end].trim();
                let consumed = 2 + end + 2;
                offset += consumed;
                rest = &rest[consumed..];
                Some(Ok(Piece::Placeholder(inner)))
            }
        }
    })
}

fn parse_reference(text: &str) -> Result<Reference, TemplateError> {
    let segments: Vec<&str> = text.split('.').collect();
    let name = |s: &str| -> Result<String, TemplateError> {
        if s.is_empty() {
            Err(TemplateError::EmptyName {
                text: text.to_string(),
            })
        } else {
            Ok(s.to_string())
        }
    };
    match segments.as_slice() {
        ["item"] => Ok(Reference::Item),
        ["index"] => Ok(Reference::Index),
        ["params", n] => Ok(Reference::Param(name(n)?)),
        ["inputs", "params", n] => Ok(Reference::InputParam(name(n)?)),
        ["inputs", "artifacts", n] => Ok(Reference::InputArtifact(name(n)?)),
        ["outputs", "params", n] => Ok(Reference::OutputParam(name(n)?)),
        ["outputs", "artifacts", n] => Ok(Reference::OutputArtifact(name(n)?)),
        ["steps", s, "outputs", "params", n] => Ok(Reference::StepParam {
            step: name(s)?,
            name: name(n)?,
        }),
        ["steps", s, "outputs", "artifacts", n] => Ok(Reference::StepArtifact {
            step: name(s)?,
            name: name(n)?,
        }),
        _ => Err(TemplateError::Unknown {
            text: text.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_literals_and_references() {
        let t =
            Template::parse("--lr={{params.lr}} {{ steps.train.outputs.params.acc }}!").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Literal("--lr=".into()),
                Part::Ref(Reference::Param("lr".into())),
                Part::Literal(" ".into()),
                Part::Ref(Reference::StepParam {
                    step: "train".into(),
                    name: "acc".into()
                }),
                Part::Literal("!".into()),
            ]
        );
    }

    #[test]
    fn rejects_bad_placeholders() {
        assert_eq!(
            Template::parse("a {{params.x"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert!(matches!(
            Template::parse("{{param.x}}"),
            Err(TemplateError::Unknown { .. })
        ));
        assert!(matches!(
            Template::parse("{{params.}}"),
            Err(TemplateError::EmptyName { .. })
        ));
    }

    #[test]
    fn render_keeps_unresolved_references_verbatim() {
        let t = Template::parse("{{inputs.artifacts.data}}/x --n {{params.n}}").unwrap();
        let out = t.render(|r| match r {
            Reference::Param(_) => Some("3".into()),
            _ => None,
        });
        assert_eq!(out, "{{inputs.artifacts.data}}/x --n 3");
        assert_eq!(Template::parse(&out).unwrap().references().count(), 1);
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "{{params.a}}",
            "{{inputs.params.b}}",
            "{{inputs.artifacts.c}}",
            "{{outputs.params.d}}",
            "{{outputs.artifacts.e}}",
            "{{steps.s.outputs.params.f}}",
            "{{steps.s.outputs.artifacts.g}}",
            "{{item}}",
            "{{index}}",
        ] {
            let t = Template::parse(s).unwrap();
            assert_eq!(t.as_single_reference().unwrap().to_string(), s);
        }
    }

    #[test]
    fn a_long_reference_is_not_echoed_whole() {
        let text = format!("{{{{{}}}}}", "x".repeat(1 << 20));
        let message = Template::parse(&text).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
        assert!(message.contains("(1048576 bytes)"), "{message}");
    }

    /// A template made of `parts` pieces: literals, references, stray braces.
    fn template_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("{{params.a}}"),
            Just("{{ steps.s.outputs.params.o }}"),
            Just("{{item}}"),
            Just("{{"),
            Just("}}"),
            Just("{{params.}}"),
            Just("{{x.y}}"),
            Just("text "),
            Just("{"),
        ];
        (proptest::collection::vec(piece, 0..64), 1usize..500)
            .prop_map(|(pieces, repeat)| pieces.concat().repeat(repeat))
    }

    proptest::proptest! {
        /// Long and wide templates parse or give an error, on a 2 MiB stack; what parses
        /// renders back to itself.
        #[test]
        fn parsing_never_panics(text in template_text()) {
            let result = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || Template::parse(&text).map(|t| t.render(|_| None)))
                .unwrap()
                .join()
                .unwrap();
            if let Ok(rendered) = result {
                let reparsed = Template::parse(&rendered).unwrap();
                proptest::prop_assert_eq!(reparsed.render(|_| None), rendered);
            }
        }
    }
}
