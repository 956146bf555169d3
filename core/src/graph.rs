//! The step graph of a pipeline: which steps each step waits for.
//!
//! A step depends on every step its placeholders reference (in command, args, env, input
//! params and artifacts, `when` and `forEach`) and on every step in `dependsOn`. `finally`
//! steps additionally wait for every main step, which the engine handles.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::Step;
use crate::template::Template;

/// Every string of a step that may hold placeholders, with its field path relative to the step.
pub fn template_fields(step: &Step) -> Vec<(String, &str)> {
    let mut fields = Vec::new();
    for (i, s) in step.command.iter().enumerate() {
        fields.push((format!("command[{i}]"), s.as_str()));
    }
    for (i, s) in step.args.iter().enumerate() {
        fields.push((format!("args[{i}]"), s.as_str()));
    }
    for (i, e) in step.env.iter().enumerate() {
        fields.push((format!("env[{i}].value"), e.value.as_str()));
    }
    if let Some(inputs) = &step.inputs {
        for (i, p) in inputs.params.iter().enumerate() {
            fields.push((format!("inputs.params[{i}].value"), p.value.as_str()));
        }
        for (i, a) in inputs.artifacts.iter().enumerate() {
            if let Some(from) = &a.from {
                fields.push((format!("inputs.artifacts[{i}].from"), from.as_str()));
            }
        }
    }
    if let Some(when) = &step.when {
        fields.push(("when".to_string(), when.as_str()));
    }
    if let Some(for_each) = &step.for_each {
        fields.push(("forEach".to_string(), for_each.as_str()));
    }
    fields
}

/// The names of the steps `step` waits for. Unparsable fields contribute nothing (validation
/// reports them).
pub fn dependencies(step: &Step) -> BTreeSet<String> {
    let mut deps: BTreeSet<String> = step.depends_on.iter().cloned().collect();
    for (_, text) in template_fields(step) {
        if let Ok(t) = Template::parse(text) {
            deps.extend(t.references().filter_map(|r| r.step()).map(str::to_string));
        }
    }
    deps
}

/// Orders steps so that each comes after its dependencies (ties broken by declaration
/// order), or returns one cycle as a list of step names, first name repeated at the end.
/// Dependencies on names not in `steps` are ignored here.
pub fn topological_order(steps: &[&Step]) -> Result<Vec<usize>, Vec<String>> {
    let index: BTreeMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let deps: Vec<Vec<usize>> = steps
        .iter()
        .map(|s| {
            dependencies(s)
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; steps.len()];
    let mut order = Vec::with_capacity(steps.len());
    for root in 0..steps.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node].get(*next) {
                *next += 1;
                match state[dep] {
                    0 => {
                        state[dep] = 1;
                        stack.push((dep, 0));
                    }
                    1 => {
                        let start = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[start..]
                            .iter()
                            .map(|&(n, _)| steps[n].name.clone())
                            .collect();
                        cycle.push(steps[dep].name.clone());
                        return Err(cycle);
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                order.push(node);
                stack.pop();
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(name: &str, command: &[&str], depends_on: &[&str]) -> Step {
        Step {
            name: name.into(),
            image: "img".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            ..Step::default()
        }
    }

    #[test]
    fn dependencies_come_from_references_and_depends_on() {
        let s = step("c", &["x", "{{steps.a.outputs.params.p}}"], &["b"]);
        assert_eq!(
            dependencies(&s),
            ["a", "b"].iter().map(|s| s.to_string()).collect()
        );
    }

    #[test]
    fn orders_dependencies_first() {
        let a = step("a", &["x"], &["b"]);
        let b = step("b", &["x"], &[]);
        let c = step("c", &["{{steps.a.outputs.params.p}}"], &[]);
        let order = topological_order(&[&c, &a, &b]).unwrap();
        let names: Vec<&str> = order
            .iter()
            .map(|&i| [&c, &a, &b][i].name.as_str())
            .collect();
        assert_eq!(names, ["b", "a", "c"]);
    }

    #[test]
    fn reports_a_cycle() {
        let a = step("a", &["x"], &["c"]);
        let b = step("b", &["x"], &["a"]);
        let c = step("c", &["x"], &["b"]);
        let cycle = topological_order(&[&a, &b, &c]).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert_eq!(cycle.len(), 4);
    }
}
