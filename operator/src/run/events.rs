//! The run engine's notable events as Kubernetes Events on the PipelineRun.

use kube::Resource;
use kube::runtime::events::{Event, EventType};
use toucan_core::api::PipelineRun;
use toucan_core::engine::run::RunEvent;

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

/// Publishes the notable events of one reconcile; a failure to publish is logged, never
/// fatal.
pub async fn publish(plr: &PipelineRun, ctx: &Context, events: &[RunEvent]) {
    let reference = plr.object_ref(&());
    for e in events.iter().filter_map(to_kube) {
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
