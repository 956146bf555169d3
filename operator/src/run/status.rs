//! The PipelineRun's status: a bounded summary (phase, counts, a message, one condition),
//! written by server-side apply under one field manager, and only when it changed. Per-step
//! detail stays in the metadata store (`toucan describe run --cluster`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use toucan_core::api::{PipelineRun, PipelineRunStatus, StepCounts};
use toucan_core::engine::RunState;
use toucan_core::store::{Millis, Phase};

use super::RunDocument;
use crate::context::Context;
use crate::error::Result;

/// The one field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "toucan-operator";
/// The condition that says how the run ended (`Unknown` while it runs).
pub const SUCCEEDED: &str = "Succeeded";

/// Counts of a run's steps (top-level steps; a fan-out counts once).
pub fn counts(doc: &RunDocument) -> StepCounts {
    let mut c = StepCounts::default();
    for sp in doc.plan.steps() {
        let Some(node) = doc.state.node(&sp.step.name) else {
            continue;
        };
        c.total += 1;
        match node.phase {
            Phase::Pending => c.pending += 1,
            Phase::Running => c.running += 1,
            Phase::Succeeded => {
                c.succeeded += 1;
                if node.cached || all_children_cached(&doc.state, &sp.step.name) {
                    c.cached += 1;
                }
            }
            Phase::Failed => c.failed += 1,
            Phase::Skipped | Phase::Cancelled => c.skipped += 1,
        }
    }
    c
}

fn all_children_cached(state: &RunState, step: &str) -> bool {
    let children = state.children(step);
    !children.is_empty() && children.iter().all(|(_, n)| n.cached)
}

fn time(ms: Millis) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(Time)
}

fn rfc3339(ms: Millis) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

/// The status a run should have now, keeping condition transition times that did not flip.
pub fn desired(plr: &PipelineRun, run_id: &str, doc: &RunDocument) -> PipelineRunStatus {
    let phase = match doc.state.finished {
        Some(p) => p,
        None if !doc.staged
            || doc.in_flight.is_empty()
                && doc.state.nodes.values().all(|n| n.phase == Phase::Pending) =>
        {
            Phase::Pending
        }
        None => Phase::Running,
    };
    let message = match doc.state.finished {
        Some(Phase::Succeeded) => None,
        Some(_) => doc
            .state
            .failure_summary()
            .or_else(|| first_message(&doc.state)),
        None => None,
    };
    let (status, reason) = match phase {
        Phase::Succeeded => ("True", "Succeeded"),
        Phase::Failed => ("False", "Failed"),
        Phase::Cancelled => ("False", "Cancelled"),
        Phase::Pending => ("Unknown", "Pending"),
        _ => ("Unknown", "Running"),
    };
    let finished_at = doc.state.finished.map(|_| {
        doc.finished
            .values()
            .copied()
            .max()
            .unwrap_or(doc.created_at)
    });
    let condition = condition(
        plr,
        status,
        reason,
        message.clone().unwrap_or_default(),
        finished_at.unwrap_or(doc.created_at),
    );
    PipelineRunStatus {
        phase: Some(phase.as_str().to_string()),
        run_id: Some(run_id.to_string()),
        started_at: rfc3339(doc.created_at),
        finished_at: finished_at.and_then(rfc3339),
        steps: Some(counts(doc)),
        message,
        observed_generation: plr.meta().generation,
        conditions: vec![condition],
    }
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
        message: message.chars().take(1024).collect(),
        last_transition_time,
        observed_generation: plr.meta().generation,
    }
}

/// Writes the status when it differs from what the object has.
pub async fn write(plr: &PipelineRun, ctx: &Context, doc: &RunDocument) -> Result<()> {
    let run_id = plr.uid().unwrap_or_default();
    let status = desired(plr, &run_id, doc);
    apply(plr, ctx, status).await
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
    if plr.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = plr.namespace().unwrap_or_default();
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = json!({
        "apiVersion": toucan_core::api::API_VERSION,
        "kind": "PipelineRun",
        "status": status,
    });
    api.patch_status(
        &plr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
