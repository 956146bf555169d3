//! Serving a node from the cache: the one impure step of the cache-hit decision.
//!
//! [`lookup`] reads the entry of an invocation's key and checks that its blobs still exist,
//! then applies core's pure [`toucan_core::cache::decide`]. Both runtimes serve hits through
//! it.

use toucan_core::cache::{CacheDecision, MissReason, decide};
use toucan_core::engine::Invocation;
use toucan_core::engine::run::{CLAIM_TTL_MS, CacheCheck, Claim};
use toucan_core::records::{Millis, StepOutputs};

use crate::artifacts::ArtifactStore;
use crate::metadata::MetadataStore;

/// Looks `inv`'s key up and decides: a hit returns the cached outputs. The blobs are checked
/// only when everything else says hit; outputs that are gone make a miss, never a failure.
pub async fn lookup(
    store: &dyn MetadataStore,
    artifacts: &ArtifactStore,
    inv: &Invocation,
    now: Millis,
) -> Result<Option<StepOutputs>, LookupError> {
    let key = inv.key.key();
    let entry = store.get_cache_entry(&key.0).await?;
    let first = decide(&inv.cache, entry.as_ref(), &inv.outputs, now, &[]);
    if first != CacheDecision::Hit {
        if let CacheDecision::Miss(reason) = &first {
            tracing::debug!(node = %inv.node, %reason, "cache miss");
        }
        return Ok(None);
    }
    let Some(entry) = entry else { return Ok(None) };
    let missing = artifacts.missing(entry.outputs.artifacts.values()).await?;
    match decide(&inv.cache, Some(&entry), &inv.outputs, now, &missing) {
        CacheDecision::Hit => Ok(Some(entry.outputs)),
        CacheDecision::Miss(MissReason::MissingBlobs(_)) => {
            tracing::info!(node = %inv.node, "cached outputs are gone; running again");
            Ok(None)
        }
        CacheDecision::Miss(_) => Ok(None),
    }
}

/// Why a cache lookup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("cache lookup: {0}")]
    Store(#[from] crate::metadata::StoreError),
    #[error("cache lookup: {0}")]
    Artifacts(#[from] crate::artifacts::ArtifactError),
}

/// Looks `inv`'s key up for the engine (`Effect::CheckCache`) and, on a miss, takes `claim`
/// so that identical steps elsewhere wait for this one. A holder that just got the claim
/// looks again: the step may have been computed while it waited. Both shells call this, so
/// cache errors and single-flight follow one policy: an unreadable cache is reported as
/// `Failed` (the engine runs the step and says so), a key claimed by another run is `Busy`.
pub async fn check(
    store: &dyn MetadataStore,
    artifacts: &ArtifactStore,
    inv: &Invocation,
    claim: Option<&Claim>,
    now: Millis,
) -> CacheCheck {
    match check_inner(store, artifacts, inv, claim, now).await {
        Ok(check) => check,
        Err(e) => CacheCheck::Failed(e.to_string()),
    }
}

async fn check_inner(
    store: &dyn MetadataStore,
    artifacts: &ArtifactStore,
    inv: &Invocation,
    claim: Option<&Claim>,
    now: Millis,
) -> Result<CacheCheck, LookupError> {
    if let Some(outputs) = lookup(store, artifacts, inv, now).await? {
        return Ok(CacheCheck::Hit(outputs));
    }
    let Some(claim) = claim else {
        return Ok(CacheCheck::Miss);
    };
    if !store
        .claim_cache_key(&claim.key, &claim.owner, now, now - CLAIM_TTL_MS)
        .await?
    {
        return Ok(CacheCheck::Busy);
    }
    match lookup(store, artifacts, inv, now).await? {
        Some(outputs) => {
            store.release_cache_key(&claim.key, &claim.owner).await?;
            Ok(CacheCheck::Hit(outputs))
        }
        None => Ok(CacheCheck::Miss),
    }
}
