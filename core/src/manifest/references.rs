//! Placeholder checks: every `{{...}}` of a step parses, is allowed where it stands, and
//! refers to something that exists; `from`, `forEach` and `when` have their required shapes.

use std::collections::BTreeMap;

use super::params::{article, declared};
use super::schema_check::{Finding, join};
use crate::api::{ParamType, PipelineSpec, Step};
use crate::echo::quote;
use crate::expr::{Condition, ExprError};
use crate::graph::template_fields;
use crate::suggest;
use crate::template::{Reference, Template};

/// The steps of a spec by name, main and `finally` apart.
pub(super) struct Scope<'a> {
    pub spec: &'a PipelineSpec,
    main: BTreeMap<&'a str, &'a Step>,
    finally: BTreeMap<&'a str, &'a Step>,
}

impl<'a> Scope<'a> {
    pub(super) fn new(spec: &'a PipelineSpec) -> Self {
        let mut main = BTreeMap::new();
        for s in &spec.steps {
            main.entry(s.name.as_str()).or_insert(s);
        }
        let mut finally = BTreeMap::new();
        for s in &spec.finally {
            finally.entry(s.name.as_str()).or_insert(s);
        }
        Scope {
            spec,
            main,
            finally,
        }
    }

    /// Whether `name` is a `finally` step (and not also a main step).
    pub(super) fn is_finally(&self, name: &str) -> bool {
        !self.main.contains_key(name) && self.finally.contains_key(name)
    }

    fn step(&self, name: &str) -> Option<&'a Step> {
        self.main
            .get(name)
            .or_else(|| self.finally.get(name))
            .copied()
    }

    /// The names a step may refer to: main steps, and for `finally` steps the others too.
    pub(super) fn visible_names(&self, from_finally: bool) -> Vec<&'a str> {
        let mut names: Vec<&str> = self.main.keys().copied().collect();
        if from_finally {
            names.extend(self.finally.keys().copied());
        }
        names
    }

    /// `Ok` if `target` exists and a step (main or `finally`) may wait for it, else why not.
    pub(super) fn check_step_target(
        &self,
        from: &Step,
        from_finally: bool,
        target: &str,
    ) -> Result<&'a Step, String> {
        if target == from.name {
            return Err(format!("step {} cannot depend on itself", quote(target)));
        }
        if !from_finally && self.is_finally(target) {
            return Err(format!(
                "{} is a finally step; main steps cannot depend on finally steps",
                quote(target)
            ));
        }
        self.step(target).ok_or_else(|| {
            let candidates: Vec<&str> = self
                .visible_names(from_finally)
                .into_iter()
                .filter(|n| *n != from.name)
                .collect();
            format!(
                "unknown step {}{}",
                quote(target),
                suggest::did_you_mean(target, candidates)
            )
        })
    }
}

/// Where a placeholder stands, which decides what it may refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `command`, `args`, `env[].value`: anything but an upstream artifact.
    Command,
    /// `inputs.params[].value`: values only (no paths, no other inputs).
    InputParam,
    /// `inputs.artifacts[].from`: exactly one upstream artifact, or a parameter naming one.
    From,
    /// `when`: values and the step's own input parameters.
    When,
    /// `forEach`: one list reference, checked on its own.
    ForEach,
}

impl Field {
    fn of(path: &str) -> Field {
        if path.starts_with("inputs.params") {
            Field::InputParam
        } else if path.starts_with("inputs.artifacts") {
            Field::From
        } else if path == "when" {
            Field::When
        } else if path == "forEach" {
            Field::ForEach
        } else {
            Field::Command
        }
    }
}

/// Checks every placeholder of `step`, found at `path`.
pub(super) fn check_step(
    scope: &Scope<'_>,
    step: &Step,
    from_finally: bool,
    path: &str,
    out: &mut Vec<Finding>,
) {
    for (field_path, text) in template_fields(step) {
        let at = join(path, &field_path);
        let template = match Template::parse(text) {
            Ok(t) => t,
            Err(e) => {
                out.push((at, e.to_string()));
                continue;
            }
        };
        let field = Field::of(&field_path);
        match field {
            Field::From => match template.as_single_reference() {
                Some(Reference::StepArtifact { .. }) => {}
                Some(Reference::Param(name)) => {
                    let declared = scope.spec.params.iter().find(|p| &p.name == name);
                    if let Some(p) = declared.filter(|p| p.kind != ParamType::String) {
                        out.push((
                            at,
                            format!(
                                "parameter {} is of type {}; an artifact named by a parameter \
                                 needs a string (a digest, a path, or empty for none)",
                                quote(name),
                                p.kind.as_str()
                            ),
                        ));
                        continue;
                    }
                }
                _ => {
                    out.push((
                        at,
                        "from must be exactly one {{steps.STEP.outputs.artifacts.NAME}} or \
                         {{params.NAME}} reference"
                            .to_string(),
                    ));
                    continue;
                }
            },
            Field::ForEach => {
                if let Err(message) = check_for_each(scope, &template, text) {
                    out.push((at, message));
                    continue;
                }
            }
            Field::Command | Field::InputParam | Field::When => {}
        }
        for reference in template.references() {
            let problem = misplaced(reference, field, step)
                .or_else(|| missing(scope, step, from_finally, reference));
            if let Some(message) = problem {
                out.push((at.clone(), message));
            }
        }
    }
    if let Some(when) = &step.when {
        check_when(scope, step, when, &join(path, "when"), out);
    }
}

/// Why `reference` may not stand in `field`, if it may not.
fn misplaced(reference: &Reference, field: Field, step: &Step) -> Option<String> {
    match reference {
        Reference::StepArtifact { .. } if field != Field::From => Some(format!(
            "{reference} can only be used as the whole of inputs.artifacts[].from; declare an \
             input artifact and use {{{{inputs.artifacts.NAME}}}}"
        )),
        Reference::Item | Reference::Index if step.for_each.is_none() => {
            Some(format!("{reference} is only defined in steps with forEach"))
        }
        Reference::InputParam(_) | Reference::InputArtifact(_) if field == Field::InputParam => {
            Some(format!(
                "{reference} cannot be used in an input parameter value"
            ))
        }
        r if r.is_path() && matches!(field, Field::InputParam | Field::When) => Some(format!(
            "{reference} is a file path, not a value; use {{{{params.*}}}}, \
             {{{{inputs.params.*}}}} or {{{{steps.*.outputs.params.*}}}} here"
        )),
        _ => None,
    }
}

/// Why `reference` refers to nothing, if it does.
fn missing(
    scope: &Scope<'_>,
    step: &Step,
    from_finally: bool,
    reference: &Reference,
) -> Option<String> {
    let names = |list: Vec<&str>, what: &str, name: &str| -> Option<String> {
        if list.contains(&name) {
            return None;
        }
        let hint = suggest::unknown_name_hint(name, &list, &format!("{what}s in this step"));
        Some(format!("unknown {what} {}{hint}", quote(name)))
    };
    let inputs = step.inputs.as_ref();
    let outputs = step.outputs.as_ref();
    match reference {
        Reference::Param(n) => {
            let list: Vec<&str> = scope.spec.params.iter().map(|p| p.name.as_str()).collect();
            if list.contains(&n.as_str()) {
                return None;
            }
            let hint = suggest::unknown_name_hint(n, &list, "declared parameters");
            Some(format!("unknown parameter {}{hint}", quote(n)))
        }
        Reference::InputParam(n) => names(
            inputs
                .map(|i| i.params.iter().map(|p| p.name.as_str()).collect())
                .unwrap_or_default(),
            "input parameter",
            n,
        ),
        Reference::InputArtifact(n) => names(
            inputs
                .map(|i| i.artifacts.iter().map(|a| a.name.as_str()).collect())
                .unwrap_or_default(),
            "input artifact",
            n,
        ),
        Reference::OutputParam(n) => names(
            outputs
                .map(|o| o.params.iter().map(|p| p.name.as_str()).collect())
                .unwrap_or_default(),
            "output parameter",
            n,
        ),
        Reference::OutputArtifact(n) => names(
            outputs
                .map(|o| o.artifacts.iter().map(|a| a.name.as_str()).collect())
                .unwrap_or_default(),
            "output artifact",
            n,
        ),
        Reference::StepParam { step: target, name }
        | Reference::StepArtifact { step: target, name } => {
            if *target == step.name {
                return Some(format!(
                    "a step cannot refer to its own outputs through {{{{steps.{target}...}}}}"
                ));
            }
            let upstream = match scope.check_step_target(step, from_finally, target) {
                Ok(s) => s,
                Err(message) => return Some(message),
            };
            let upstream_outputs = upstream.outputs.as_ref();
            let (list, what): (Vec<&str>, &str) = match reference {
                Reference::StepParam { .. } => (
                    upstream_outputs
                        .map(|o| o.params.iter().map(|p| p.name.as_str()).collect())
                        .unwrap_or_default(),
                    "output parameter",
                ),
                _ => (
                    upstream_outputs
                        .map(|o| o.artifacts.iter().map(|a| a.name.as_str()).collect())
                        .unwrap_or_default(),
                    "output artifact",
                ),
            };
            if list.contains(&name.as_str()) {
                return None;
            }
            let hint = suggest::unknown_name_hint(name, &list, &format!("{what}s"));
            Some(format!(
                "step {} has no {what} {}{hint}",
                quote(target),
                quote(name)
            ))
        }
        Reference::Item | Reference::Index => None,
    }
}

/// `forEach` is one reference to a list parameter or an upstream output parameter, or a
/// literal JSON list.
fn check_for_each(scope: &Scope<'_>, template: &Template, text: &str) -> Result<(), String> {
    let shape = "forEach must be one {{params.NAME}} list parameter, one \
                 {{steps.STEP.outputs.params.NAME}} output, or a JSON list like [\"a\", \"b\"]";
    match template.as_single_reference() {
        Some(Reference::Param(n)) => match declared(scope.spec, n) {
            Some(p) if p.kind != ParamType::List => Err(format!(
                "forEach needs a list: parameter {} is {}",
                quote(n),
                article(p.kind)
            )),
            _ => Ok(()),
        },
        Some(Reference::StepParam { step, name }) => {
            let upstream = scope.step(step);
            let kind = upstream
                .filter(|s| s.for_each.is_none())
                .and_then(|s| s.outputs.as_ref())
                .and_then(|o| o.params.iter().find(|p| &p.name == name))
                .and_then(|p| p.kind);
            match kind {
                Some(k) if k != ParamType::List && k != ParamType::String => Err(format!(
                    "forEach needs a list: output parameter {} of step {step:?} is {}",
                    quote(name),
                    article(k)
                )),
                _ => Ok(()),
            }
        }
        Some(_) => Err(shape.to_string()),
        None if template.references().next().is_some() => Err(shape.to_string()),
        None => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(_)) => Ok(()),
            _ => Err(shape.to_string()),
        },
    }
}

/// `when` parses and its comparisons make sense for the types of what they compare.
fn check_when(scope: &Scope<'_>, step: &Step, when: &str, path: &str, out: &mut Vec<Finding>) {
    let condition = match Condition::parse(when) {
        Ok(c) => c,
        // Placeholder errors are reported with the other placeholders of the step.
        Err(ExprError::Template(_)) => return,
        Err(e) => {
            out.push((path.to_string(), e.to_string()));
            return;
        }
    };
    for message in condition.check_types(|r| type_of(scope, step, r, 0)) {
        out.push((path.to_string(), message));
    }
}

/// The declared type of what a placeholder refers to, when known. The outputs of a fan-out
/// step are lists (one value per child); an input parameter whose value is a single
/// reference has that reference's type.
fn type_of(scope: &Scope<'_>, step: &Step, reference: &Reference, depth: u8) -> Option<ParamType> {
    match reference {
        Reference::Param(n) => declared(scope.spec, n).map(|p| p.kind),
        Reference::StepParam { step: target, name } => {
            let upstream = scope.step(target)?;
            let output = upstream
                .outputs
                .as_ref()?
                .params
                .iter()
                .find(|p| &p.name == name)?;
            if upstream.for_each.is_some() {
                Some(ParamType::List)
            } else {
                Some(output.kind.unwrap_or_default())
            }
        }
        Reference::Index => Some(ParamType::Int),
        Reference::InputParam(n) if depth == 0 => {
            let input = step.inputs.as_ref()?.params.iter().find(|p| &p.name == n)?;
            let template = Template::parse(&input.value).ok()?;
            type_of(scope, step, template.as_single_reference()?, depth + 1)
        }
        _ => None,
    }
}
