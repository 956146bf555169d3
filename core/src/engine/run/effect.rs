//! The two vocabularies of the seam between a run's engine and its shells: what a shell
//! observed ([`Observation`]) and what it must carry out ([`Effect`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::RunEvent;
use crate::engine::Invocation;
use crate::launch::LaunchReport;
use crate::records::{ArtifactRef, Millis, RunChanges, StepOutputs};

/// How long a cache claim holds without being renewed: a holder that died frees its key
/// after this long.
pub const CLAIM_TTL_MS: Millis = 5 * 60 * 1000;
/// A holder renews its claims this often, well inside [`CLAIM_TTL_MS`].
pub const CLAIM_RENEW_MS: Millis = 60 * 1000;
/// A node whose key another run is computing looks again after this long.
pub const CLAIM_POLL_MS: Millis = 1000;

/// The right to compute one cache key while identical steps elsewhere wait (single-flight
/// across runs sharing a store). Within a run the engine never starts two nodes with the same
/// key at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub key: String,
    /// `RUN_ID/NODE`.
    pub owner: String,
}

/// What came of looking an invocation's key up in the cache.
#[derive(Clone, Debug, PartialEq)]
pub enum CacheCheck {
    /// A usable entry: these outputs, their blobs present.
    Hit(StepOutputs),
    /// No usable entry; the claim, when one was asked for, is now held.
    Miss,
    /// No usable entry, and another run holds the key's claim: it is computing the same thing.
    Busy,
    /// The cache could not be read.
    Failed(String),
}

/// What a shell saw happen to a run.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// The cache was consulted for an attempt, as [`Effect::CheckCache`] asked.
    CacheChecked {
        node: String,
        attempt: u32,
        result: CacheCheck,
    },
    /// An attempt is running (its process started, its pod exists); its log is at `log`.
    Launched {
        node: String,
        attempt: u32,
        log: Option<String>,
    },
    /// An attempt could not be started (the pod was refused): it failed.
    LaunchFailed {
        node: String,
        attempt: u32,
        message: String,
    },
    /// An attempt ended with this report (the launcher's, or one the shell wrote for it:
    /// a timeout, a launcher that died).
    Ended {
        node: String,
        attempt: u32,
        report: LaunchReport,
    },
    /// An attempt stopped without a result of its own (someone deleted its pod): the node
    /// starts again as a new attempt.
    Lost {
        node: String,
        attempt: u32,
        reason: String,
    },
    /// The run's `path:` inputs are in the artifact store: digests by step and input name.
    Staged {
        inputs: BTreeMap<String, BTreeMap<String, ArtifactRef>>,
    },
    /// The run's `path:` inputs could not be stored.
    StagingFailed { message: String },
    /// The user asked the run to stop.
    CancelRequested,
}

/// What a shell must carry out, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Write these rows in one transaction (before anything after this effect).
    Write(Box<RunChanges>),
    /// Tell people.
    Notify(RunEvent),
    /// Look the invocation's key up (`toucan_store::cache::check`), taking `claim` on a miss,
    /// and report [`Observation::CacheChecked`].
    CheckCache {
        invocation: Box<Invocation>,
        claim: Option<Claim>,
    },
    /// Run one attempt; report [`Observation::Launched`] (or `LaunchFailed`), then `Ended`
    /// (or `Lost`).
    Launch(Box<Invocation>),
    /// Stop a running attempt; it still reports how it ended.
    Stop { node: String, attempt: u32 },
    /// Renew claims still in use.
    RenewClaims(Vec<Claim>),
    /// Give a claim back: its result is recorded (or there is none).
    ReleaseClaim(Claim),
    /// Nothing will change before this time unless something is observed.
    WakeAt(Millis),
}
