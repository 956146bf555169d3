//! The queue itself, as a plain value: which key to reconcile next, and when.
//!
//! No clock and no tasks here: every call is given the time, and the random source for the
//! backoff's jitter is seeded at construction, so a test replays any sequence exactly.
//!
//! A key is in at most one of two places: *waiting* (with a due time and a [`Class`]) or
//! *running* (taken by [`WorkQueue::pop`], not yet given back with [`WorkQueue::finish`]). A
//! request for a running key is held beside it and joins the waiting keys when the reconcile
//! finishes, so one key is never reconciled twice at once and no request is lost.
//!
//! Among the keys that are due, the one due first comes first (ties in the order they were
//! queued), except that a [`Class::New`] key counts as due `max_wait` later than it is: work
//! already in progress ([`Class::Active`]) goes ahead of new work, but only by that much. So a
//! new key waits at most `max_wait` plus the active work that fell due before that, however
//! much more keeps coming, and never starves.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::backoff::Backoff;

/// What a reconcile of a key is for, in the order the queue serves them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// An object's first reconcile: starting something new.
    New,
    /// Work for an object already in progress: something it waits on happened (a pod ended, a
    /// report arrived, its spec changed), its requested wake-up came, or it is retrying.
    Active,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::New => "new",
            Class::Active => "active",
        }
    }
}

/// How a reconcile ended, as the queue needs to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It succeeded; reconcile again after this long, or only on the next event.
    Done(Option<Duration>),
    /// It failed: retry after the key's backoff.
    Failed,
}

/// The queue's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The head start of active work over new work: a due [`Class::New`] key goes ahead of
    /// active keys that fell due more than this after it.
    pub max_wait: Duration,
    pub backoff: Backoff,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_wait: Duration::from_secs(5),
            backoff: Backoff::default(),
        }
    }
}

/// A key taken off the queue to be reconciled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken<K> {
    pub key: K,
    pub class: Class,
    /// How long it had been due.
    pub waited: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    class: Class,
    due: Instant,
}

impl Request {
    /// One request standing for both: the earlier due time and the higher class.
    fn merge(self, other: Request) -> Request {
        Request {
            class: self.class.max(other.class),
            due: self.due.min(other.due),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Waiting {
    request: Request,
    seq: u64,
}

/// The fair work queue; see the module docs.
#[derive(Debug)]
pub struct WorkQueue<K> {
    settings: Settings,
    waiting: HashMap<K, Waiting>,
    /// The waiting keys of each class by (due, seq): index 0 is [`Class::New`], 1 is
    /// [`Class::Active`].
    order: [BTreeMap<(Instant, u64), K>; 2],
    /// Keys being reconciled, with the request that arrived meanwhile, if any.
    running: HashMap<K, Option<Request>>,
    /// Failures in a row, per key.
    failures: HashMap<K, u32>,
    next_seq: u64,
    rng: ChaCha8Rng,
}

fn slot(class: Class) -> usize {
    match class {
        Class::New => 0,
        Class::Active => 1,
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue; `seed` seeds the backoff's jitter.
    pub fn new(settings: Settings, seed: u64) -> Self {
        WorkQueue {
            settings,
            waiting: HashMap::new(),
            order: [BTreeMap::new(), BTreeMap::new()],
            running: HashMap::new(),
            failures: HashMap::new(),
            next_seq: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Asks for `key` to be reconciled at `due` (now, for an event). A key already waiting keeps
    /// one place, with the earlier due time and the higher class; a key being reconciled is
    /// queued again when that reconcile finishes.
    pub fn push(&mut self, key: K, class: Class, due: Instant) {
        let request = Request { class, due };
        if let Some(held) = self.running.get_mut(&key) {
            *held = Some(held.map_or(request, |h| h.merge(request)));
            return;
        }
        self.wait(key, request);
    }

    fn wait(&mut self, key: K, request: Request) {
        let request = match self.waiting.get(&key) {
            Some(old) => {
                let merged = old.request.merge(request);
                if merged == old.request {
                    return;
                }
                self.order[slot(old.request.class)].remove(&(old.request.due, old.seq));
                merged
            }
            None => request,
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order[slot(request.class)].insert((request.due, seq), key.clone());
        self.waiting.insert(key, Waiting { request, seq });
    }

    /// Takes the next key to reconcile at `now`, if any is due; it counts as running until
    /// [`WorkQueue::finish`].
    pub fn pop(&mut self, now: Instant) -> Option<Taken<K>> {
        let due = |class: Class| {
            self.order[slot(class)]
                .first_key_value()
                .map(|(&(due, seq), _)| (due, seq))
                .filter(|&(due, _)| due <= now)
        };
        let class = match (due(Class::Active), due(Class::New)) {
            (None, None) => return None,
            (Some(_), None) => Class::Active,
            (None, Some(_)) => Class::New,
            (Some(active), Some((due, seq))) => {
                if (due + self.settings.max_wait, seq) < active {
                    Class::New
                } else {
                    Class::Active
                }
            }
        };
        let ((due, _), key) = self.order[slot(class)].pop_first()?;
        self.waiting.remove(&key);
        self.running.insert(key.clone(), None);
        Some(Taken {
            key,
            class,
            waited: now.saturating_duration_since(due),
        })
    }

    /// Gives back a key taken by [`WorkQueue::pop`]: schedules its requeue or its retry, and
    /// queues the request that arrived while it ran. A key not running is ignored.
    pub fn finish(&mut self, key: &K, outcome: Outcome, now: Instant) {
        let Some(held) = self.running.remove(key) else {
            return;
        };
        let next = match outcome {
            Outcome::Done(after) => {
                self.failures.remove(key);
                after.map(|d| Request {
                    class: Class::Active,
                    due: now + d,
                })
            }
            Outcome::Failed => {
                let failures = self.failures.entry(key.clone()).or_insert(0);
                *failures = failures.saturating_add(1);
                // 53 random bits: a uniform f64 in [0, 1).
                let jitter = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let delay = self.settings.backoff.delay(*failures, jitter);
                Some(Request {
                    class: Class::Active,
                    due: now + delay,
                })
            }
        };
        let request = match (next, held) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
        if let Some(request) = request {
            self.wait(key.clone(), request);
        }
    }

    /// When the next waiting key falls due (it may be past).
    pub fn next_due(&self) -> Option<Instant> {
        self.order
            .iter()
            .filter_map(|o| o.first_key_value().map(|(&(due, _), _)| due))
            .min()
    }

    /// Keys waiting, due or not.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Keys being reconciled.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Failures in a row of `key` so far.
    pub fn failures(&self, key: &K) -> u32 {
        self.failures.get(key).copied().unwrap_or(0)
    }

    /// The waiting keys with their class and due time, in no particular order.
    #[cfg(test)]
    fn snapshot(&self) -> Vec<(K, Class, Instant, u64)> {
        self.waiting
            .iter()
            .map(|(k, w)| (k.clone(), w.request.class, w.request.due, w.seq))
            .collect()
    }
}

#[cfg(test)]
#[path = "work_queue_tests.rs"]
mod tests;
