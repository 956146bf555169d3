//! The PipelineRun's status: a bounded summary (phase, counts, a message, one condition),
//! written by server-side apply under one field manager, and only when it changed. Per-step
//! detail stays in the metadata store (`toucan describe run --cluster`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Resource, ResourceExt};
use toucan_core::api::{PipelineRun, PipelineRunStatus};
use toucan_core::engine::{Run, RunState};
use toucan_core::records::{Millis, Phase};

use crate::context::Context;
use crate::error::Result;

/// The one field manager of the operator's status writes.
/// The condition that says how the run ended (`Unknown` while it runs).
pub const SUCCEEDED: &str = "Succeeded";
/// The longest status message; the CRD says the same (`maxLength`).
pub const MAX_MESSAGE_CHARS: usize = toucan_core::api::MAX_STATUS_MESSAGE_CHARS;

fn time(ms: Millis) -> Option<Time> {
    toucan_core::time::timestamp(ms).ok().map(Time)
}

fn rfc3339(ms: Millis) -> Option<String> {
    toucan_core::time::rfc3339(ms).ok()
}

/// The status a run should have now, keeping condition transition times that did not flip.
pub fn desired(plr: &PipelineRun, run: &Run) -> PipelineRunStatus {
    let phase = match run.state.finished {
        Some(p) => p,
        None if !run.staged
            || run.in_flight.is_empty()
                && run.state.nodes.values().all(|n| n.phase == Phase::Pending) =>
        {
            Phase::Pending
        }
        None => Phase::Running,
    };
    let message = match run.state.finished {
        Some(Phase::Succeeded) => None,
        Some(_) => run
            .state
            .failure_summary()
            .or_else(|| first_message(&run.state))
            .map(|m| bounded(&m)),
        None => None,
    };
    let (status, reason) = match phase {
        Phase::Succeeded => ("True", "Succeeded"),
        Phase::Failed => ("False", "Failed"),
        Phase::Cancelled => ("False", "Cancelled"),
        Phase::Pending => ("Unknown", "Pending"),
        _ => ("Unknown", "Running"),
    };
    let finished_at = run.finished_at();
    let condition = condition(
        plr,
        status,
        reason,
        message.clone().unwrap_or_default(),
        finished_at.unwrap_or(run.created_at),
    );
    PipelineRunStatus {
        phase: Some(phase.as_str().to_string()),
        run_id: Some(run.id.clone()),
        started_at: rfc3339(run.created_at),
        finished_at: finished_at.and_then(rfc3339),
        steps: Some(run.step_counts()),
        message,
        observed_generation: plr.meta().generation,
        conditions: vec![condition],
    }
}

/// `text` within [`MAX_MESSAGE_CHARS`] (the CRD's `maxLength` for status messages), cut with
/// `…`.
fn bounded(text: &str) -> String {
    if text.chars().count() <= MAX_MESSAGE_CHARS {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(MAX_MESSAGE_CHARS - 1).collect();
    cut.push('…');
    cut
}

fn first_message(state: &RunState) -> Option<String> {
    state.nodes.values().find_map(|n| n.message.clone())
}

/// The `Succeeded` condition; its transition time moves only when its status flips.
fn condition(
    plr: &PipelineRun,
    status: &str,
    reason: &str,
    message: String,
    now: Millis,
) -> Condition {
    let previous = plr
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == SUCCEEDED));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => time(now).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
    };
    Condition {
        type_: SUCCEEDED.into(),
        status: status.into(),
        reason: reason.into(),
        message: bounded(&message),
        last_transition_time,
        observed_generation: plr.meta().generation,
    }
}

/// Writes the status when it differs from what the object has.
pub async fn write(plr: &PipelineRun, ctx: &Context, run: &Run) -> Result<()> {
    apply(plr, ctx, desired(plr, run)).await
}

/// The status of a run waiting for its Pipeline to be created.
pub async fn waiting_for_pipeline(plr: &PipelineRun, ctx: &Context, name: &str) -> Result<()> {
    let message = format!("waiting for Pipeline {name:?} to exist");
    let status = PipelineRunStatus {
        phase: Some(Phase::Pending.as_str().to_string()),
        message: Some(message.clone()),
        observed_generation: plr.meta().generation,
        conditions: vec![condition(
            plr,
            "Unknown",
            "PipelineNotFound",
            message,
            super::now_ms(),
        )],
        ..PipelineRunStatus::default()
    };
    apply(plr, ctx, status).await
}

async fn apply(plr: &PipelineRun, ctx: &Context, status: PipelineRunStatus) -> Result<()> {
    let namespace = plr.namespace().unwrap_or_default();
    crate::status::apply::<PipelineRun, _>(
        &ctx.client,
        &namespace,
        &plr.name_any(),
        plr.status.as_ref(),
        &status,
    )
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use toucan_core::api::{PipelineRunSpec, PipelineSpec, Step};
    use toucan_core::engine::RunPlan;

    use super::*;

    fn run_of(steps: Vec<Step>) -> Run {
        let spec = PipelineSpec {
            steps,
            ..PipelineSpec::default()
        };
        let plan = RunPlan::new("ns/p", spec, BTreeMap::new());
        Run::start("uid-1", plan, 1_000, 10).unwrap().0
    }

    fn step(name: &str) -> Step {
        Step {
            name: name.into(),
            image: "img".into(),
            command: vec!["true".into()],
            ..Step::default()
        }
    }

    fn plr() -> PipelineRun {
        PipelineRun::new(
            "daily",
            PipelineRunSpec {
                pipeline_ref: None,
                pipeline_spec: None,
                params: Vec::new(),
            },
        )
    }

    #[test]
    fn a_run_that_has_not_started_anything_is_pending() {
        let run = run_of(vec![step("a")]);
        let status = desired(&plr(), &run);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        assert_eq!(status.run_id.as_deref(), Some("uid-1"));
        assert_eq!(status.conditions[0].status, "Unknown");
        assert_eq!(status.steps.unwrap().total, 1);
    }

    #[test]
    fn a_failure_message_stays_within_the_crd_bound() {
        let names: Vec<String> = (0..300)
            .map(|i| format!("{}-{i}", "x".repeat(90)))
            .collect();
        let mut run = run_of(names.iter().map(|n| step(n)).collect());
        for name in &names {
            run.state.record_skipped(name, "");
            run.state.nodes.get_mut(name).unwrap().phase = Phase::Failed;
        }
        run.state.finished = Some(Phase::Failed);
        let status = desired(&plr(), &run);
        let message = status.message.unwrap();
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS, "{message}");
        assert!(message.ends_with("and 295 more"), "{message}");
        assert_eq!(status.conditions[0].reason, "Failed");
        assert!(status.conditions[0].message.chars().count() <= MAX_MESSAGE_CHARS);
        assert!(bounded(&"y".repeat(5000)).chars().count() <= MAX_MESSAGE_CHARS);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_it_flips() {
        let run = run_of(vec![step("a")]);
        let mut object = plr();
        let first = desired(&object, &run);
        let mut later = run.clone();
        later.created_at += 60_000;
        object.status = Some(first.clone());
        let again = desired(&object, &later);
        assert_eq!(
            again.conditions[0].last_transition_time, first.conditions[0].last_transition_time,
            "still Unknown: no transition"
        );
        later.state.finished = Some(Phase::Succeeded);
        let done = desired(&object, &later);
        assert_eq!(done.conditions[0].status, "True");
        assert_ne!(
            done.conditions[0].last_transition_time,
            first.conditions[0].last_transition_time
        );
    }
}
