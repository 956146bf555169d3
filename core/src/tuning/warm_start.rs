//! Warm start: the trials of earlier studies seed this study's model (TPE and GP observe
//! them like their own; see [`super::sampler`]). An earlier study qualifies when it searched
//! the same parameters, of the same types, scales and conditions; its ranges and value lists
//! may differ, and its trials whose values fall outside this study's space are left out.

use super::error::TuningError;
use super::ledger::WarmStartStudy;
use super::spec::{ParameterSpec, Scale};
use super::study::Study;

/// Checks that `earlier` searched a space compatible with `study`'s; the error names the
/// first parameter that differs and how.
pub(crate) fn check_warm_start(study: &Study, earlier: &WarmStartStudy) -> Result<(), TuningError> {
    let incompatible = |parameter: &str, reason: String| TuningError::IncompatibleWarmStart {
        study: earlier.study.clone(),
        parameter: parameter.to_string(),
        reason,
    };
    let find = |name: &str| earlier.parameters.iter().find(|p| p.name == name);
    for p in study.space.parameters() {
        let Some(then) = find(&p.name) else {
            return Err(incompatible(&p.name, "is not in its space".into()));
        };
        let kind = kind_of(&p.domain);
        if then.kind.as_str() != kind {
            return Err(incompatible(
                &p.name,
                format!("is {kind} here and {} there", then.kind.as_str()),
            ));
        }
        let log_here = matches!(
            p.domain,
            super::space::Domain::Double { log: true, .. }
                | super::space::Domain::Int { log: true, .. }
        );
        if log_here != (then.scale == Some(Scale::Log)) {
            return Err(incompatible(
                &p.name,
                format!(
                    "is searched on a {} scale here and a {} one there",
                    if log_here { "log" } else { "linear" },
                    if log_here { "linear" } else { "log" }
                ),
            ));
        }
        if let Err(reason) = same_condition(study, p.when.as_ref(), then) {
            return Err(incompatible(&p.name, reason));
        }
    }
    if let Some(extra) = earlier
        .parameters
        .iter()
        .find(|then| !study.space.parameters().iter().any(|p| p.name == then.name))
    {
        return Err(incompatible(
            &extra.name,
            "is not in this study's space".into(),
        ));
    }
    Ok(())
}

fn kind_of(domain: &super::space::Domain) -> &'static str {
    use super::space::Domain;
    match domain {
        Domain::Double { .. } => "double",
        Domain::Int { .. } => "int",
        Domain::Discrete { .. } => "discrete",
        Domain::Categorical { .. } => "categorical",
    }
}

/// Both unconditional, or both conditional on the same parameter.
fn same_condition(
    study: &Study,
    here: Option<&super::condition::Condition>,
    then: &ParameterSpec,
) -> Result<(), String> {
    let parent_then = then
        .when
        .as_deref()
        .and_then(|w| super::condition::parse(w).ok())
        .map(|c| c.parent);
    let parent_here = here.map(|c| study.space.parameters()[c.parent].name.clone());
    if parent_here == parent_then {
        Ok(())
    } else {
        Err(format!(
            "depends on {} here and on {} there",
            parent_here.map_or("nothing".into(), |p| format!("{p:?}")),
            parent_then.map_or("nothing".into(), |p| format!("{p:?}"))
        ))
    }
}
