//! Where the router's configuration comes from, each source a task that publishes every
//! valid, changed [`RouterConfig`] on a watch channel ([`ConfigUpdates`]) which
//! [`crate::serve`] applies:
//!
//! - [`file`]: a file, re-read every 500 ms (JSON or YAML);
//! - [`url`]: a URL polled every second — how the operator's or the local runtime's API
//!   feeds a router;
//! - [`endpointslices`]: either of the above for the weights, with every version's replicas
//!   taken from the Endpoint's Kubernetes EndpointSlices instead.
//!
//! A source never publishes an invalid document: it logs why (once per distinct error) and
//! the previous configuration stays in force. A source's task ends when the receiver is
//! dropped.

pub mod endpointslices;
pub mod file;
pub mod url;

use tokio::sync::watch;

use crate::config::RouterConfig;

/// The configurations a source publishes; `None` until the first valid one.
pub type ConfigUpdates = watch::Receiver<Option<RouterConfig>>;

/// Publishes `config` unless it is the one in force (a poll that finds nothing new wakes
/// nobody up).
fn publish_if_changed(updates: &watch::Sender<Option<RouterConfig>>, config: RouterConfig) {
    updates.send_if_modified(|current| {
        if current.as_ref() == Some(&config) {
            false
        } else {
            *current = Some(config);
            true
        }
    });
}

/// Logs a source's problem the first time it is seen, not on every poll.
#[derive(Debug, Default)]
struct ProblemLog {
    last: Option<String>,
}

impl ProblemLog {
    fn problem(&mut self, message: String) {
        if self.last.as_ref() != Some(&message) {
            tracing::warn!("{message}; the configuration in force stays");
            self.last = Some(message);
        }
    }

    fn solved(&mut self) {
        self.last = None;
    }
}
