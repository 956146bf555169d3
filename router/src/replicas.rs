//! The replicas of a version: their state (in-flight requests, readiness) and the choice of
//! one for a try.
//!
//! A replica is *ready* when its source lists it (the configuration or a ready EndpointSlice
//! endpoint: being in the table says so) and the router's own probe ([`crate::health`])
//! passes. A refused connection marks it not ready at once, until the next probe says
//! otherwise, so a replica that died between probes costs one retry, not one per request.
//! Within a version the choice is the ready replica with the fewest requests in flight, ties
//! taken in turn (round-robin from a cursor the version advances on every choice).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::http::uri::Authority;

/// One replica's base URL and live state, shared by every table that lists it.
#[derive(Debug)]
pub struct Replica {
    url: String,
    authority: Authority,
    in_flight: AtomicUsize,
    probe_ready: AtomicBool,
}

// === impl Replica ===

impl Replica {
    /// A replica the router has not probed yet: not ready until the first probe passes.
    pub fn new(url: String, authority: Authority) -> Replica {
        Replica {
            url,
            authority,
            in_flight: AtomicUsize::new(0),
            probe_ready: AtomicBool::new(false),
        }
    }

    /// Its base URL, as `http://HOST:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub fn is_ready(&self) -> bool {
        self.probe_ready.load(Ordering::Relaxed)
    }

    /// Records a probe's (or a refused connection's) verdict; true when it changed.
    pub fn set_ready(&self, ready: bool) -> bool {
        self.probe_ready.swap(ready, Ordering::Relaxed) != ready
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts one request in flight to this replica until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> ReplicaInFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        ReplicaInFlight(Arc::clone(self))
    }
}

/// One request in flight to a replica; dropped when its response body is done (or given up).
#[derive(Debug)]
pub struct ReplicaInFlight(Arc<Replica>);

impl Drop for ReplicaInFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the choice needs to know of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Ready, and not already tried by this request.
    pub available: bool,
    pub in_flight: usize,
}

/// The available replica with the fewest requests in flight; among equals, the first at or
/// after `cursor` (modulo their number), so equal replicas are taken in turn.
pub fn choose_replica(candidates: &[Candidate], cursor: usize) -> Option<usize> {
    let n = candidates.len();
    let mut best: Option<(usize, usize)> = None;
    for step in 0..n {
        let i = (cursor % n + step) % n;
        let candidate = candidates[i];
        if !candidate.available {
            continue;
        }
        if best.is_none_or(|(_, load)| candidate.in_flight < load) {
            best = Some((i, candidate.in_flight));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(available: bool, in_flight: usize) -> Candidate {
        Candidate {
            available,
            in_flight,
        }
    }

    #[test]
    fn the_least_loaded_available_replica_wins() {
        let table = [
            (vec![c(true, 3), c(true, 1), c(true, 2)], 0, Some(1)),
            (vec![c(true, 3), c(false, 0), c(true, 2)], 0, Some(2)),
            (vec![c(false, 0), c(false, 0)], 0, None),
            (vec![], 7, None),
            (vec![c(true, 5)], 3, Some(0)),
        ];
        for (candidates, cursor, expected) in table {
            assert_eq!(
                choose_replica(&candidates, cursor),
                expected,
                "{candidates:?}"
            );
        }
    }

    #[test]
    fn equal_replicas_are_taken_in_turn() {
        let candidates = [c(true, 0), c(false, 0), c(true, 0), c(true, 0)];
        let chosen: Vec<Option<usize>> = (0..6).map(|k| choose_replica(&candidates, k)).collect();
        assert_eq!(
            chosen,
            vec![Some(0), Some(2), Some(2), Some(3), Some(0), Some(2)]
        );
    }

    #[test]
    fn in_flight_is_counted_until_the_guard_is_dropped() {
        let replica = Arc::new(Replica::new(
            "http://127.0.0.1:1".into(),
            Authority::from_static("127.0.0.1:1"),
        ));
        let first = replica.begin();
        let second = replica.begin();
        assert_eq!(replica.in_flight(), 2);
        drop(first);
        drop(second);
        assert_eq!(replica.in_flight(), 0);
        assert!(!replica.is_ready());
        assert!(replica.set_ready(true));
        assert!(!replica.set_ready(true));
    }

    proptest! {
        #[test]
        fn the_choice_is_available_and_no_available_replica_is_less_loaded(
            loads in prop::collection::vec((any::<bool>(), 0usize..4), 0..8),
            cursor in 0usize..100,
        ) {
            let candidates: Vec<Candidate> = loads.iter().map(|&(a, l)| c(a, l)).collect();
            match choose_replica(&candidates, cursor) {
                Some(i) => {
                    prop_assert!(candidates[i].available);
                    prop_assert!(candidates
                        .iter()
                        .filter(|x| x.available)
                        .all(|x| x.in_flight >= candidates[i].in_flight));
                }
                None => prop_assert!(candidates.iter().all(|x| !x.available)),
            }
        }
    }
}
