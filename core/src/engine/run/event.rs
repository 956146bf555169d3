//! What the engine tells people about a run: the CLI prints these as progress lines, the
//! operator publishes the notable ones as Kubernetes Events. Both read the same reason and
//! text from here, so a run reads the same in both places.

use crate::records::{Millis, Phase};

/// A user-visible transition of a run or one of its nodes.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEvent {
    RunStarted {
        run_id: String,
        pipeline: String,
    },
    /// The run was refused before anything ran (its manifest or parameters are invalid).
    RunInvalid {
        message: String,
    },
    /// The run's `path:` inputs could not be stored; nothing ran.
    StagingFailed {
        message: String,
    },
    StepStarted {
        node: String,
        attempt: u32,
    },
    StepCached {
        node: String,
    },
    StepSucceeded {
        node: String,
        attempt: u32,
        duration_ms: Millis,
    },
    /// An attempt failed and the node will run again after `delay_ms`.
    StepRetrying {
        node: String,
        attempt: u32,
        message: String,
        delay_ms: Millis,
    },
    StepFailed {
        node: String,
        message: String,
        /// Where the failed attempt's log is, when it ran.
        log: Option<String>,
    },
    StepSkipped {
        node: String,
        reason: String,
    },
    StepCancelled {
        node: String,
    },
    FannedOut {
        step: String,
        count: usize,
    },
    /// An attempt ended without a result of its own (its pod was deleted); the node starts
    /// again.
    AttemptLost {
        node: String,
        attempt: u32,
        reason: String,
    },
    /// The cache could not be read; the step runs instead of being served from it.
    CacheUnavailable {
        node: String,
        error: String,
    },
    Cancelling,
    RunFinished {
        phase: Phase,
        message: Option<String>,
    },
}

impl RunEvent {
    /// A short stable reason (CamelCase), for Kubernetes Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            RunEvent::RunStarted { .. } => "RunStarted",
            RunEvent::RunInvalid { .. } => "InvalidRun",
            RunEvent::StagingFailed { .. } => "StagingFailed",
            RunEvent::StepStarted { .. } => "StepStarted",
            RunEvent::StepCached { .. } => "StepCached",
            RunEvent::StepSucceeded { .. } => "StepSucceeded",
            RunEvent::StepRetrying { .. } => "StepRetrying",
            RunEvent::StepFailed { .. } => "StepFailed",
            RunEvent::StepSkipped { .. } => "StepSkipped",
            RunEvent::StepCancelled { .. } => "StepCancelled",
            RunEvent::FannedOut { .. } => "FannedOut",
            RunEvent::AttemptLost { .. } => "AttemptLost",
            RunEvent::CacheUnavailable { .. } => "CacheUnavailable",
            RunEvent::Cancelling => "Cancelling",
            RunEvent::RunFinished {
                phase: Phase::Succeeded,
                ..
            } => "RunSucceeded",
            RunEvent::RunFinished {
                phase: Phase::Cancelled,
                ..
            } => "RunCancelled",
            RunEvent::RunFinished { .. } => "RunFailed",
        }
    }

    /// Whether something went wrong (a Warning Event).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            RunEvent::RunInvalid { .. }
                | RunEvent::StagingFailed { .. }
                | RunEvent::StepRetrying { .. }
                | RunEvent::StepFailed { .. }
                | RunEvent::AttemptLost { .. }
                | RunEvent::CacheUnavailable { .. }
        ) || matches!(self, RunEvent::RunFinished { phase, .. } if *phase != Phase::Succeeded)
    }

    /// Whether the event is worth an object of its own in a cluster: the run's start and end
    /// and everything that went wrong, not every step's routine progress (a large fan-out
    /// would flood the Events API).
    pub fn is_notable(&self) -> bool {
        matches!(
            self,
            RunEvent::RunStarted { .. } | RunEvent::RunFinished { .. }
        ) || self.is_warning()
    }

    /// One sentence for people.
    pub fn message(&self) -> String {
        match self {
            RunEvent::RunStarted { run_id, pipeline } => format!("run {run_id} of {pipeline}"),
            RunEvent::RunInvalid { message } => message.clone(),
            RunEvent::StagingFailed { message } => {
                format!("storing the run's path: inputs failed: {message}")
            }
            RunEvent::StepStarted { node, attempt } => format!("{node} attempt {attempt} started"),
            RunEvent::StepCached { node } => format!("{node} served from the cache"),
            RunEvent::StepSucceeded {
                node,
                attempt,
                duration_ms,
            } => format!("{node} attempt {attempt} succeeded in {duration_ms} ms"),
            RunEvent::StepRetrying {
                node,
                attempt,
                message,
                ..
            } => format!("{node} attempt {attempt} failed ({message}); retrying"),
            RunEvent::StepFailed { node, message, .. } => format!("{node} failed: {message}"),
            RunEvent::StepSkipped { node, reason } => format!("{node} skipped: {reason}"),
            RunEvent::StepCancelled { node } => format!("{node} cancelled"),
            RunEvent::FannedOut { step, count } => format!("{step} fanned out into {count}"),
            RunEvent::AttemptLost {
                node,
                attempt,
                reason,
            } => format!("{node} attempt {attempt} was lost ({reason}); starting a new attempt"),
            RunEvent::CacheUnavailable { node, error } => {
                format!("{node}: the cache could not be read ({error}); running the step")
            }
            RunEvent::Cancelling => "cancelling the run".to_string(),
            RunEvent::RunFinished { phase, message } => match message {
                Some(m) => format!("run {phase}: {m}"),
                None => format!("run {phase}"),
            },
        }
    }
}
