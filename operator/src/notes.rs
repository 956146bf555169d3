//! Events on toucan's resources: what a controller's pass found worth telling the user
//! ([`Note`]s), published on the object after its status is written.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use crate::context::Context;

/// The longest note an Event carries.
const MAX_NOTE_CHARS: usize = 1000;

/// A user-visible happening, published as an Event on the object.
#[derive(Clone, Debug)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub text: String,
}

impl Note {
    pub fn warning(reason: &'static str, text: String) -> Self {
        Note {
            warning: true,
            reason,
            text,
        }
    }

    pub fn normal(reason: &'static str, text: String) -> Self {
        Note {
            warning: false,
            reason,
            text,
        }
    }
}

/// Publishes `notes` as Events on `object`; a failure is logged, never fatal.
pub async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K, notes: &[Note]) {
    let reference = object.object_ref(&());
    for note in notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.text.chars().take(MAX_NOTE_CHARS).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(reason = note.reason, "publishing an event: {err}");
        }
    }
}
