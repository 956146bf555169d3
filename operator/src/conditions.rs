//! Status conditions, kept as Kubernetes expects: one per type, its transition time moved only
//! when its status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The longest condition message.
const MAX_MESSAGE_CHARS: usize = 1024;

/// Sets the condition `type_` to `value` (`True`, `False`), replacing the one of that type.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let previous = conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == value => p.last_transition_time.clone(),
        _ => Time(k8s_openapi::jiff::Timestamp::now()),
    };
    conditions.retain(|c| c.type_ != type_);
    conditions.push(Condition {
        type_: type_.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.chars().take(MAX_MESSAGE_CHARS).collect(),
        last_transition_time,
        observed_generation: generation,
    });
}
