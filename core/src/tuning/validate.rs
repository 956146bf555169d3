//! From a [`StudySpec`] to a [`Study`]: every rule of the spec, every problem reported with
//! its field path.

use std::collections::BTreeMap;

use super::condition::{self, Condition, ConditionValue, ParsedCondition};
use super::error::{Issue, TuningError};
use super::space::{Domain, Parameter, SearchSpace};
use super::spec::{
    AlgorithmName, AlgorithmSpec, Literal, ParameterSpec, ParameterType, Scale, StudySpec,
};
use super::study::{
    Algorithm, DEFAULT_GP_CANDIDATES, DEFAULT_REDUCTION_FACTOR, DEFAULT_STARTUP_TRIALS,
    DEFAULT_TPE_CANDIDATES, Fidelity, MedianStopping, ModelSettings, Study,
};
use super::value::ParamValue;
use crate::suggest::unknown_name_hint;

/// Dimensions the Sobol sequence's direction numbers cover.
pub(crate) const SOBOL_MAX_PARAMETERS: usize = 100;
/// A grid step must divide the range to within this fraction of a step.
const STEP_TOLERANCE: f64 = 1e-9;

impl Study {
    /// Validates `spec`; every problem is reported at once, with its field path.
    pub fn new(spec: &StudySpec) -> Result<Study, TuningError> {
        let mut issues = Vec::new();
        if spec.objective.metric.trim().is_empty() {
            issues.push(Issue::new("spec.objective.metric", "must not be empty"));
        }
        if spec.objective.target.is_some_and(|t| !t.is_finite()) {
            issues.push(Issue::new(
                "spec.objective.target",
                "must be a finite number",
            ));
        }
        let space = check_space(&spec.parameters, &mut issues);
        let algorithm = check_algorithm(spec, &mut issues);
        let budget = &spec.budget;
        if budget.max_trials == 0 {
            issues.push(Issue::new("spec.budget.maxTrials", "must be at least 1"));
        }
        if budget.parallel_trials == 0 {
            issues.push(Issue::new(
                "spec.budget.parallelTrials",
                "must be at least 1",
            ));
        } else if budget.parallel_trials > budget.max_trials && budget.max_trials > 0 {
            issues.push(Issue::new(
                "spec.budget.parallelTrials",
                format!(
                    "{} is more than maxTrials ({}): at most maxTrials trials can run",
                    budget.parallel_trials, budget.max_trials
                ),
            ));
        }
        let median_stopping = spec
            .early_stopping
            .as_ref()
            .and_then(|e| e.median.as_ref())
            .map(|m| {
                if m.min_trials == 0 {
                    issues.push(Issue::new(
                        "spec.earlyStopping.median.minTrials",
                        "must be at least 1",
                    ));
                }
                MedianStopping {
                    min_trials: m.min_trials,
                    grace_steps: m.grace_steps,
                }
            });
        match (space, algorithm) {
            (Some(space), Some(algorithm)) if issues.is_empty() => Ok(Study {
                space,
                goal: spec.objective.goal,
                target: spec.objective.target,
                algorithm,
                seed: spec.algorithm.seed,
                median_stopping,
                max_trials: budget.max_trials,
                parallel_trials: budget.parallel_trials,
                max_failed_trials: budget.max_failed_trials,
            }),
            _ => Err(TuningError::InvalidSpec { issues }),
        }
    }
}

fn path(i: usize, field: &str) -> String {
    format!("spec.parameters[{i}].{field}")
}

fn check_space(specs: &[ParameterSpec], issues: &mut Vec<Issue>) -> Option<SearchSpace> {
    let before = issues.len();
    if specs.is_empty() {
        issues.push(Issue::new(
            "spec.parameters",
            "a study needs at least one parameter",
        ));
    }
    let mut index_of = BTreeMap::new();
    for (i, p) in specs.iter().enumerate() {
        if p.name.trim().is_empty() {
            issues.push(Issue::new(path(i, "name"), "must not be empty"));
        } else if let Some(first) = index_of.insert(p.name.as_str(), i) {
            issues.push(Issue::new(
                path(i, "name"),
                format!("{:?} is also the name of spec.parameters[{first}]", p.name),
            ));
            index_of.insert(p.name.as_str(), first);
        }
    }
    let domains: Vec<Option<Domain>> = specs
        .iter()
        .enumerate()
        .map(|(i, p)| check_domain(i, p, issues))
        .collect();
    let names: Vec<&str> = specs.iter().map(|p| p.name.as_str()).collect();
    let mut parents: Vec<Option<usize>> = vec![None; specs.len()];
    let mut conditions: Vec<Option<Condition>> = vec![None; specs.len()];
    for (i, p) in specs.iter().enumerate() {
        let Some(text) = &p.when else { continue };
        let parsed = match condition::parse(text) {
            Ok(parsed) => parsed,
            Err(message) => {
                issues.push(Issue::new(path(i, "when"), message));
                continue;
            }
        };
        let Some(&parent) = index_of.get(parsed.parent.as_str()) else {
            let others: Vec<&str> = names.iter().copied().filter(|n| *n != p.name).collect();
            issues.push(Issue::new(
                path(i, "when"),
                format!(
                    "unknown parameter {:?}{}",
                    parsed.parent,
                    unknown_name_hint(&parsed.parent, &others, "other parameters")
                ),
            ));
            continue;
        };
        if parent == i {
            issues.push(Issue::new(
                path(i, "when"),
                "a parameter cannot depend on itself",
            ));
            continue;
        }
        parents[i] = Some(parent);
        if let Some(Some(domain)) = domains.get(parent) {
            match resolve_value(&parsed, domain) {
                Ok(value) => {
                    conditions[i] = Some(Condition {
                        parent,
                        negated: parsed.negated,
                        value,
                    })
                }
                Err(message) => issues.push(Issue::new(path(i, "when"), message)),
            }
        }
    }
    let order = condition_order(&parents, &names, issues);
    if issues.len() > before {
        return None;
    }
    let parameters = specs
        .iter()
        .zip(domains)
        .zip(conditions)
        .filter_map(|((p, domain), when)| {
            Some(Parameter {
                name: p.name.clone(),
                domain: domain?,
                when,
            })
        })
        .collect();
    Some(SearchSpace::new(parameters, order?))
}

/// Parents before children, otherwise the spec's order; a cycle is reported on each of its
/// parameters' `when`.
fn condition_order(
    parents: &[Option<usize>],
    names: &[&str],
    issues: &mut Vec<Issue>,
) -> Option<Vec<usize>> {
    let n = parents.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !placed[i] && parents[i].is_none_or(|p| placed[p]));
        match next {
            Some(i) => {
                placed[i] = true;
                order.push(i);
            }
            None => break,
        }
    }
    if order.len() == n {
        return Some(order);
    }
    // What is left either is on a cycle or hangs below one: report each cycle once.
    let mut reported = vec![false; n];
    for start in 0..n {
        if placed[start] || reported[start] {
            continue;
        }
        let mut seen = vec![start];
        let mut at = start;
        while let Some(p) = parents[at] {
            if let Some(pos) = seen.iter().position(|&s| s == p) {
                let cycle = &seen[pos..];
                if cycle.iter().all(|&c| !reported[c]) {
                    let mut chain: Vec<&str> = cycle.iter().map(|&c| names[c]).collect();
                    chain.push(names[cycle[0]]);
                    let first = cycle.iter().copied().min().unwrap_or(start);
                    issues.push(Issue::new(
                        path(first, "when"),
                        format!("the when conditions form a cycle: {}", chain.join(" -> ")),
                    ));
                }
                for &c in cycle {
                    reported[c] = true;
                }
                break;
            }
            seen.push(p);
            at = p;
        }
    }
    None
}

/// The condition's value checked against the parent's domain.
fn resolve_value(parsed: &ParsedCondition, parent: &Domain) -> Result<ConditionValue, String> {
    let name = &parsed.parent;
    match parent {
        Domain::Categorical { values } => {
            if values.contains(&parsed.value) {
                Ok(ConditionValue::Text(parsed.value.clone()))
            } else {
                let choices: Vec<&str> = values.iter().map(String::as_str).collect();
                Err(format!(
                    "{:?} is not a value of {name:?}{}",
                    parsed.value,
                    unknown_name_hint(&parsed.value, &choices, "values")
                ))
            }
        }
        Domain::Double { step: None, .. } => Err(format!(
            "{name:?} is a continuous double: a condition needs a parameter with a finite set \
             of values (categorical, discrete, int, or a double with a step)"
        )),
        numeric => {
            let number: f64 = parsed
                .value
                .parse()
                .map_err(|_| format!("{name:?} is numeric, {:?} is not a number", parsed.value))?;
            match numeric.encode(&ParamValue::number(number)) {
                Some(_) => Ok(ConditionValue::Number(number)),
                None => Err(format!("{name:?} never takes the value {number}")),
            }
        }
    }
}

fn check_domain(i: usize, p: &ParameterSpec, issues: &mut Vec<Issue>) -> Option<Domain> {
    let before = issues.len();
    let kind = p.kind.as_str();
    let ranged = matches!(p.kind, ParameterType::Double | ParameterType::Int);
    let refuse = |field: &str, issues: &mut Vec<Issue>| {
        issues.push(Issue::new(
            path(i, field),
            format!("a {kind} parameter does not take {field}"),
        ));
    };
    if ranged {
        if p.values.is_some() {
            refuse("values", issues);
        }
    } else {
        for (field, set) in [
            ("min", p.min.is_some()),
            ("max", p.max.is_some()),
            ("scale", p.scale.is_some()),
            ("step", p.step.is_some()),
        ] {
            if set {
                refuse(field, issues);
            }
        }
    }
    let domain = match p.kind {
        ParameterType::Double | ParameterType::Int => check_range(i, p, issues),
        ParameterType::Discrete => {
            let values = check_values(i, p, issues)?;
            let mut numbers = Vec::with_capacity(values.len());
            for (j, v) in values.iter().enumerate() {
                match v {
                    Literal::Number(x) if x.is_finite() => numbers.push(*x),
                    _ => issues.push(Issue::new(
                        format!("spec.parameters[{i}].values[{j}]"),
                        "a discrete parameter takes numbers (use categorical for strings)",
                    )),
                }
            }
            numbers.sort_by(f64::total_cmp);
            if numbers.windows(2).any(|w| w[0] == w[1]) {
                issues.push(Issue::new(path(i, "values"), "values must be distinct"));
            }
            Some(Domain::Discrete { values: numbers })
        }
        ParameterType::Categorical => {
            let values = check_values(i, p, issues)?;
            let mut texts: Vec<String> = Vec::with_capacity(values.len());
            for (j, v) in values.iter().enumerate() {
                match v {
                    Literal::Text(s) if texts.contains(s) => issues.push(Issue::new(
                        format!("spec.parameters[{i}].values[{j}]"),
                        format!("{s:?} appears twice"),
                    )),
                    Literal::Text(s) => texts.push(s.clone()),
                    Literal::Number(_) => issues.push(Issue::new(
                        format!("spec.parameters[{i}].values[{j}]"),
                        "a categorical parameter takes strings (use discrete for numbers, or \
                         quote the value)",
                    )),
                }
            }
            Some(Domain::Categorical { values: texts })
        }
    };
    if issues.len() > before { None } else { domain }
}

fn check_values<'a>(
    i: usize,
    p: &'a ParameterSpec,
    issues: &mut Vec<Issue>,
) -> Option<&'a [Literal]> {
    match p.values.as_deref() {
        None => {
            issues.push(Issue::new(
                path(i, "values"),
                format!("a {} parameter needs values", p.kind.as_str()),
            ));
            None
        }
        Some([]) => {
            issues.push(Issue::new(path(i, "values"), "must not be empty"));
            None
        }
        Some(values) => Some(values),
    }
}

fn check_range(i: usize, p: &ParameterSpec, issues: &mut Vec<Issue>) -> Option<Domain> {
    let int = p.kind == ParameterType::Int;
    let mut bound = |field: &str, value: Option<f64>| match value {
        None => {
            issues.push(Issue::new(path(i, field), "is required"));
            None
        }
        Some(x) if !x.is_finite() => {
            issues.push(Issue::new(path(i, field), "must be a finite number"));
            None
        }
        Some(x) if int && x.fract() != 0.0 => {
            issues.push(Issue::new(
                path(i, field),
                format!("{x} is not a whole number"),
            ));
            None
        }
        Some(x) => Some(x),
    };
    let min = bound("min", p.min);
    let max = bound("max", p.max);
    let (min, max) = (min?, max?);
    if min > max {
        issues.push(Issue::new(
            path(i, "min"),
            format!("min ({min}) is greater than max ({max})"),
        ));
        return None;
    }
    let log = p.scale == Some(Scale::Log);
    if log && min <= 0.0 {
        issues.push(Issue::new(
            path(i, "min"),
            format!("scale: log needs min > 0, got {min}"),
        ));
        return None;
    }
    let step = match p.step {
        None => None,
        Some(s) if !(s.is_finite() && s > 0.0) => {
            issues.push(Issue::new(path(i, "step"), "must be a positive number"));
            return None;
        }
        Some(s) if int && s.fract() != 0.0 => {
            issues.push(Issue::new(
                path(i, "step"),
                format!("{s} is not a whole number"),
            ));
            return None;
        }
        Some(s) => {
            let steps = (max - min) / s;
            if (steps - steps.round()).abs() > STEP_TOLERANCE * steps.max(1.0) {
                issues.push(Issue::new(
                    path(i, "step"),
                    format!(
                        "{s} does not divide the range {min}..{max} (width {})",
                        max - min
                    ),
                ));
                return None;
            }
            Some(s)
        }
    };
    Some(if int {
        Domain::Int {
            min: min as i64,
            max: max as i64,
            step: step.map_or(1, |s| s as i64),
            log,
        }
    } else {
        Domain::Double {
            min,
            max,
            log,
            step,
        }
    })
}

fn check_algorithm(spec: &StudySpec, issues: &mut Vec<Issue>) -> Option<Algorithm> {
    let a: &AlgorithmSpec = &spec.algorithm;
    let name = a.name.as_str();
    let before = issues.len();
    let model = matches!(a.name, AlgorithmName::Tpe | AlgorithmName::Gp);
    let fidelity = matches!(a.name, AlgorithmName::Hyperband | AlgorithmName::Asha);
    for (field, set, allowed) in [
        ("startupTrials", a.startup_trials.is_some(), model),
        ("candidates", a.candidates.is_some(), model),
        (
            "scrambled",
            a.scrambled.is_some(),
            a.name == AlgorithmName::Sobol,
        ),
        ("resource", a.resource.is_some(), fidelity),
        ("reductionFactor", a.reduction_factor.is_some(), fidelity),
    ] {
        if set && !allowed {
            issues.push(Issue::new(
                format!("spec.algorithm.{field}"),
                format!("the {name} algorithm does not take {field}"),
            ));
        }
    }
    if a.candidates == Some(0) {
        issues.push(Issue::new(
            "spec.algorithm.candidates",
            "must be at least 1",
        ));
    }
    let algorithm = match a.name {
        AlgorithmName::Grid => {
            for (i, p) in spec.parameters.iter().enumerate() {
                if p.kind == ParameterType::Double && p.step.is_none() {
                    issues.push(Issue::new(
                        path(i, "step"),
                        format!(
                            "grid search needs a step for the double parameter {:?}",
                            p.name
                        ),
                    ));
                }
            }
            Algorithm::Grid
        }
        AlgorithmName::Random => Algorithm::Random,
        AlgorithmName::Sobol => {
            if spec.parameters.len() > SOBOL_MAX_PARAMETERS {
                issues.push(Issue::new(
                    "spec.parameters",
                    format!("sobol supports at most {SOBOL_MAX_PARAMETERS} parameters"),
                ));
            }
            Algorithm::Sobol {
                scrambled: a.scrambled.unwrap_or(true),
            }
        }
        AlgorithmName::Tpe | AlgorithmName::Gp => {
            let defaults = if a.name == AlgorithmName::Tpe {
                DEFAULT_TPE_CANDIDATES
            } else {
                DEFAULT_GP_CANDIDATES
            };
            let settings = ModelSettings {
                startup_trials: a.startup_trials.unwrap_or(DEFAULT_STARTUP_TRIALS),
                candidates: a.candidates.unwrap_or(defaults),
            };
            if a.name == AlgorithmName::Tpe {
                Algorithm::Tpe(settings)
            } else {
                Algorithm::Gp(settings)
            }
        }
        AlgorithmName::Hyperband | AlgorithmName::Asha => {
            let f = check_fidelity(spec, issues)?;
            if a.name == AlgorithmName::Asha {
                Algorithm::Asha(f)
            } else {
                Algorithm::Hyperband(f)
            }
        }
    };
    (issues.len() == before).then_some(algorithm)
}

fn check_fidelity(spec: &StudySpec, issues: &mut Vec<Issue>) -> Option<Fidelity> {
    let a = &spec.algorithm;
    let eta = a.reduction_factor.unwrap_or(DEFAULT_REDUCTION_FACTOR);
    if eta < 2 {
        issues.push(Issue::new(
            "spec.algorithm.reductionFactor",
            format!("must be at least 2, got {eta}"),
        ));
    }
    let Some(r) = &a.resource else {
        issues.push(Issue::new(
            "spec.algorithm.resource",
            format!(
                "the {} algorithm needs a resource, e.g. {{name: epochs, min: 1, max: 27}}",
                a.name.as_str()
            ),
        ));
        return None;
    };
    if r.name.trim().is_empty() {
        issues.push(Issue::new(
            "spec.algorithm.resource.name",
            "must not be empty",
        ));
    } else if let Some(i) = spec.parameters.iter().position(|p| p.name == r.name) {
        issues.push(Issue::new(
            "spec.algorithm.resource.name",
            format!(
                "{:?} is also spec.parameters[{i}]: the resource is set by the algorithm",
                r.name
            ),
        ));
    }
    if r.min == 0 {
        issues.push(Issue::new(
            "spec.algorithm.resource.min",
            "must be at least 1",
        ));
    } else if r.min >= r.max {
        issues.push(Issue::new(
            "spec.algorithm.resource.min",
            format!("min ({}) must be less than max ({})", r.min, r.max),
        ));
    }
    (eta >= 2).then(|| Fidelity {
        resource: r.name.clone(),
        min: r.min,
        max: r.max,
        eta,
    })
}
