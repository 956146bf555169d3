//! The run engine's notable events as Kubernetes Events on the PipelineRun.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use toucan_core::api::PipelineRun;
use toucan_core::engine::gang::GangEvent;
use toucan_core::engine::run::RunEvent;

use super::execute::Turn;
use crate::context::Context;

/// The longest note an Event carries; the rest is cut.
const MAX_NOTE_CHARS: usize = 1000;

/// The Kubernetes Event for an engine event, when it is notable (see
/// [`RunEvent::is_notable`]).
pub fn to_kube(event: &RunEvent) -> Option<Event> {
    event.is_notable().then(|| Event {
        type_: if event.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: event.reason().into(),
        note: Some(event.message().chars().take(MAX_NOTE_CHARS).collect()),
        action: "Reconcile".into(),
        secondary: None,
    })
}

/// The Kubernetes Event for a gang's event, when it says more than the run's own.
pub fn gang_to_kube(node: &str, event: &GangEvent) -> Option<Event> {
    let (warning, reason, note) = match event {
        GangEvent::Launched {
            incarnation,
            replicas,
        } => (
            false,
            "GangStarted",
            format!("{node}: {replicas} replicas created (incarnation {incarnation})"),
        ),
        GangEvent::ReplicaEnded {
            replica,
            incarnation,
            exit_code,
            decisive: true,
        } => (
            true,
            "ReplicaFailed",
            match exit_code {
                Some(code) => {
                    format!("{node}: {replica} of incarnation {incarnation} exited {code}")
                }
                None => format!("{node}: {replica} of incarnation {incarnation} ended"),
            },
        ),
        GangEvent::Restarting { reason, .. } => (
            true,
            "GangRestarting",
            format!("{node}: restarting the gang from its newest checkpoint ({reason})"),
        ),
        GangEvent::Preempted {
            replica,
            incarnation,
        } => (
            true,
            "GangPreempted",
            format!("{node}: {replica} of incarnation {incarnation} was preempted"),
        ),
        GangEvent::Suspended => (false, "GangSuspended", format!("{node}: suspended")),
        GangEvent::Resumed => (false, "GangResumed", format!("{node}: resumed")),
        // The run's own events say it.
        GangEvent::ReplicaEnded { .. } | GangEvent::Succeeded | GangEvent::Failed(_) => {
            return None;
        }
    };
    Some(Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note.chars().take(MAX_NOTE_CHARS).collect()),
        action: "Reconcile".into(),
        secondary: None,
    })
}

/// Publishes the notable events of one reconcile; a failure to publish is logged, never
/// fatal.
pub async fn publish(plr: &PipelineRun, ctx: &Context, turn: &Turn) {
    let reference = plr.object_ref(&());
    let gangs = turn
        .gang_events
        .iter()
        .filter_map(|(n, e)| gang_to_kube(n, e));
    let waiting = turn.gangs_waiting.iter().map(|(node, why)| Event {
        type_: EventType::Normal,
        reason: "GangWaiting".into(),
        note: Some(
            format!("{node}: {why}")
                .chars()
                .take(MAX_NOTE_CHARS)
                .collect(),
        ),
        action: "Reconcile".into(),
        secondary: None,
    });
    for e in turn
        .events
        .iter()
        .filter_map(to_kube)
        .chain(gangs)
        .chain(waiting)
    {
        if let Err(err) = ctx.recorder.publish(&e, &reference).await {
            tracing::warn!(reason = %e.reason, "publishing an event: {err}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use toucan_core::records::Phase;

    #[test]
    fn only_notable_events_become_kubernetes_events() {
        let started = RunEvent::StepStarted {
            node: "train".into(),
            attempt: 1,
        };
        assert!(to_kube(&started).is_none(), "routine progress stays out");
        let failed = to_kube(&RunEvent::StepFailed {
            node: "train".into(),
            message: "x".repeat(5000),
            log: None,
        })
        .unwrap();
        assert_eq!(failed.type_, EventType::Warning);
        assert_eq!(failed.reason, "StepFailed");
        assert!(failed.note.unwrap().chars().count() <= MAX_NOTE_CHARS);
        let done = to_kube(&RunEvent::RunFinished {
            phase: Phase::Succeeded,
            message: None,
        })
        .unwrap();
        assert_eq!(
            (done.type_, done.reason.as_str()),
            (EventType::Normal, "RunSucceeded")
        );
    }
}
