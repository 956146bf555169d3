//! The work queue and worker pool every controller runs on.
//!
//! The controllers keep kube-runtime's watches and reflector stores but not its `Controller`,
//! whose scheduler parks due requests in a hash set when all workers are busy and takes them
//! back in hash order, so under load the same objects lose every time. This queue is fair:
//!
//! - a key is queued once (a second request keeps the earlier due time and the higher class)
//!   and never reconciled twice at once (a request that comes while it runs waits for the end);
//! - the key due first comes first, but work for objects already in progress ([`Class::Active`]:
//!   a pod ended, a report arrived, a requested wake-up, a retry) has a head start of
//!   [`Settings::max_wait`] over an object's first reconcile ([`Class::New`]): it goes first
//!   under load, yet a new object waits at most that much longer than it would in plain FIFO
//!   order and never starves;
//! - a reconcile's [`Action`] asks for a wake-up, and a failed one is retried after the key's
//!   exponential [`Backoff`] with jitter, reset by a success: error policies only count and log.
//!
//! [`work_queue`] is the queue as a plain value (time passed in, unit and property tests);
//! [`runner`] is the async shell that feeds it, runs the reconciles on a bounded pool of workers
//! and stops gracefully; [`backoff`] is the retry policy; [`mod@finalizer`] adapts kube-runtime's
//! finalizer helper to the queue's [`Action`].

pub mod backoff;
pub mod finalizer;
pub mod runner;
pub mod work_queue;

use std::time::Duration;

pub use backoff::Backoff;
pub use finalizer::finalizer;
pub use runner::{Queue, QueueMetrics, run};
pub use work_queue::{Class, Outcome, Settings, WorkQueue};

/// What a successful reconcile asks of the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration`, or sooner if an event asks.
    #[must_use]
    pub const fn requeue(duration: Duration) -> Self {
        Action {
            requeue_after: Some(duration),
        }
    }

    /// Reconcile again only when an event asks.
    #[must_use]
    pub const fn await_change() -> Self {
        Action {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}
