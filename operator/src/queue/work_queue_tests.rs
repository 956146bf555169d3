#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const MS: fn(u64) -> Duration = Duration::from_millis;
const S: fn(u64) -> Duration = Duration::from_secs;

fn queue() -> (WorkQueue<&'static str>, Instant) {
    (WorkQueue::new(Settings::default(), 7), Instant::now())
}

fn drain(q: &mut WorkQueue<&'static str>, now: Instant) -> Vec<&'static str> {
    std::iter::from_fn(|| q.pop(now).map(|t| t.key)).collect()
}

#[test]
fn a_key_queued_twice_is_reconciled_once_at_its_earliest_due_time() {
    let (mut q, t0) = queue();
    q.push("a", Class::Active, t0 + S(10));
    q.push("a", Class::Active, t0 + S(2));
    q.push("a", Class::Active, t0 + S(5));
    assert_eq!(q.waiting(), 1);
    assert_eq!(q.next_due(), Some(t0 + S(2)));
    assert_eq!(q.pop(t0 + S(1)), None, "not due yet");
    assert_eq!(drain(&mut q, t0 + S(2)), ["a"]);
}

#[test]
fn a_key_queued_as_new_and_then_as_active_is_active() {
    let (mut q, t0) = queue();
    q.push("new", Class::New, t0);
    q.push("b", Class::New, t0 + MS(1));
    q.push("b", Class::Active, t0 + MS(2));
    let first = q.pop(t0 + MS(2)).unwrap();
    assert_eq!((first.key, first.class), ("b", Class::Active));
}

#[test]
fn active_work_comes_before_new_work_and_each_class_is_first_in_first_out() {
    let (mut q, t0) = queue();
    q.push("new-1", Class::New, t0);
    q.push("active-1", Class::Active, t0 + MS(1));
    q.push("new-2", Class::New, t0 + MS(2));
    q.push("active-2", Class::Active, t0 + MS(3));
    assert_eq!(
        drain(&mut q, t0 + MS(10)),
        ["active-1", "active-2", "new-1", "new-2"]
    );
}

#[test]
fn keys_due_at_the_same_time_keep_the_order_they_were_queued_in() {
    let (mut q, t0) = queue();
    let keys = ["k3", "k1", "k4", "k0", "k2"];
    for k in keys {
        q.push(k, Class::Active, t0);
    }
    assert_eq!(drain(&mut q, t0), keys);
}

#[test]
fn active_work_has_a_head_start_of_max_wait_over_new_work_and_no_more() {
    let (mut q, t0) = queue();
    let max_wait = Settings::default().max_wait;
    q.push("new", Class::New, t0);
    q.push("active-before", Class::Active, t0 - S(1));
    q.push("active-within", Class::Active, t0 + max_wait - MS(1));
    q.push("active-after", Class::Active, t0 + max_wait + MS(1));
    let now = t0 + max_wait + S(1);
    assert_eq!(
        drain(&mut q, now),
        ["active-before", "active-within", "new", "active-after"]
    );
}

#[test]
fn a_key_is_never_taken_twice_at_once_and_a_request_during_its_reconcile_runs_after_it() {
    let (mut q, t0) = queue();
    q.push("a", Class::Active, t0);
    assert_eq!(q.pop(t0).unwrap().key, "a");
    q.push("a", Class::Active, t0 + MS(1));
    assert_eq!(q.pop(t0 + MS(1)), None, "a is running");
    assert_eq!((q.waiting(), q.running()), (0, 1));
    q.finish(&"a", Outcome::Done(None), t0 + MS(5));
    assert_eq!(q.waiting(), 1);
    assert_eq!(q.pop(t0 + MS(5)).unwrap().key, "a");
}

#[test]
fn requeue_after_is_due_that_long_after_the_reconcile_and_await_change_is_not_due() {
    let (mut q, t0) = queue();
    q.push("later", Class::New, t0);
    q.push("never", Class::New, t0);
    assert_eq!(drain(&mut q, t0), ["later", "never"]);
    q.finish(&"later", Outcome::Done(Some(S(30))), t0 + S(1));
    q.finish(&"never", Outcome::Done(None), t0 + S(1));
    assert_eq!(q.next_due(), Some(t0 + S(31)));
    let taken = q.pop(t0 + S(31)).unwrap();
    assert_eq!((taken.key, taken.class), ("later", Class::Active));
    assert_eq!(q.next_due(), None);
}

#[test]
fn an_event_during_a_reconcile_that_asks_for_a_requeue_wins_if_earlier() {
    let (mut q, t0) = queue();
    q.push("a", Class::Active, t0);
    q.pop(t0).unwrap();
    q.push("a", Class::Active, t0 + MS(1));
    q.finish(&"a", Outcome::Done(Some(S(60))), t0 + MS(2));
    assert_eq!(q.next_due(), Some(t0 + MS(1)));
}

#[test]
fn failures_back_off_exponentially_with_jitter_and_a_success_resets_them() {
    let (mut q, t0) = queue();
    let backoff = Settings::default().backoff;
    let mut now = t0;
    q.push("a", Class::New, now);
    for failures in 1..=5 {
        q.pop(now).unwrap();
        q.finish(&"a", Outcome::Failed, now);
        assert_eq!(q.failures(&"a"), failures);
        let delay = q.next_due().unwrap() - now;
        let nominal = backoff.nominal(failures);
        assert!(
            delay >= nominal / 2 && delay <= nominal,
            "failure {failures}: {delay:?} outside [{:?}, {nominal:?}]",
            nominal / 2
        );
        assert_eq!(q.pop(now + delay - MS(1)), None, "retried early");
        now += delay;
    }
    q.pop(now).unwrap();
    q.finish(&"a", Outcome::Done(None), now);
    assert_eq!(q.failures(&"a"), 0);
    q.push("a", Class::Active, now);
    q.pop(now).unwrap();
    q.finish(&"a", Outcome::Failed, now);
    assert!(
        q.next_due().unwrap() - now <= backoff.first,
        "back to the first delay"
    );
}

#[test]
fn keys_failing_together_retry_at_different_times() {
    let (mut q, t0) = queue();
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    for k in keys {
        q.push(k, Class::Active, t0);
    }
    drain(&mut q, t0);
    for k in keys {
        q.finish(&k, Outcome::Failed, t0);
    }
    let dues: HashSet<Instant> = q.snapshot().into_iter().map(|(_, _, due, _)| due).collect();
    assert!(dues.len() > 1, "every retry at the same instant: {dues:?}");
}

#[test]
fn finishing_a_key_that_is_not_running_changes_nothing() {
    let (mut q, t0) = queue();
    q.push("a", Class::Active, t0 + S(1));
    q.finish(&"a", Outcome::Failed, t0);
    q.finish(&"b", Outcome::Done(Some(S(1))), t0);
    assert_eq!((q.waiting(), q.running(), q.failures(&"a")), (1, 0, 0));
    assert_eq!(q.next_due(), Some(t0 + S(1)));
}

// --- properties ---

#[derive(Clone, Debug)]
enum Op {
    Push {
        key: u8,
        class: Class,
        delay_ms: u64,
    },
    Pop,
    Finish {
        nth: usize,
        outcome: Outcome,
    },
    Advance {
        ms: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![Just(Class::New), Just(Class::Active)];
    let outcome = prop_oneof![
        Just(Outcome::Done(None)),
        (0u64..20_000).prop_map(|ms| Outcome::Done(Some(MS(ms)))),
        Just(Outcome::Failed),
    ];
    prop_oneof![
        4 => (0u8..8, class, prop_oneof![Just(0u64), 0u64..3_000])
            .prop_map(|(key, class, delay_ms)| Op::Push { key, class, delay_ms }),
        4 => Just(Op::Pop),
        3 => (any::<usize>(), outcome).prop_map(|(nth, outcome)| Op::Finish { nth, outcome }),
        2 => (0u64..8_000).prop_map(|ms| Op::Advance { ms }),
    ]
}

/// Checks the key `pop` took against what was waiting just before.
fn check_choice(
    taken: &Taken<u8>,
    before: &[(u8, Class, Instant, u64)],
    now: Instant,
    max_wait: Duration,
) -> Result<(), TestCaseError> {
    let (_, class, due, seq) = *before
        .iter()
        .find(|w| w.0 == taken.key)
        .ok_or_else(|| TestCaseError::fail("took a key that was not waiting"))?;
    prop_assert_eq!(class, taken.class);
    prop_assert!(due <= now, "took a key before it was due");
    prop_assert_eq!(taken.waited, now - due);
    // A new key counts as due `max_wait` later than it is.
    let rank = |class: Class, due: Instant, seq: u64| match class {
        Class::New => (due + max_wait, seq),
        Class::Active => (due, seq),
    };
    for &(other, other_class, other_due, other_seq) in before {
        if other == taken.key || other_due > now {
            continue;
        }
        if other_class == class {
            prop_assert!(
                (due, seq) < (other_due, other_seq),
                "FIFO within a class: {} taken before {}",
                taken.key,
                other
            );
        } else {
            prop_assert!(
                rank(class, due, seq) < rank(other_class, other_due, other_seq),
                "{:?} {} taken before {:?} {} that ranks first",
                class,
                taken.key,
                other_class,
                other
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever the events, reconciles and outcomes: a key is taken only when due and in the
    /// order of the module docs, never while it runs, each key waits in one place, and every
    /// request is served by a later reconcile of its key.
    #[test]
    fn the_queue_is_fair_deduplicated_exclusive_and_loses_nothing(
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let settings = Settings::default();
        let mut q = WorkQueue::new(settings, 1);
        let t0 = Instant::now();
        let mut now = t0;
        let mut running: Vec<u8> = Vec::new();
        // Keys with a request not yet served by a reconcile that started after it.
        let mut owed: HashSet<u8> = HashSet::new();
        for op in ops {
            match op {
                Op::Push { key, class, delay_ms } => {
                    q.push(key, class, now + MS(delay_ms));
                    owed.insert(key);
                }
                Op::Pop => {
                    let before = q.snapshot();
                    if let Some(taken) = q.pop(now) {
                        check_choice(&taken, &before, now, settings.max_wait)?;
                        prop_assert!(!running.contains(&taken.key), "{} taken twice at once", taken.key);
                        prop_assert!(owed.remove(&taken.key), "{} taken with no request", taken.key);
                        running.push(taken.key);
                    } else {
                        prop_assert!(before.iter().all(|w| w.2 > now), "a due key was not taken");
                    }
                }
                Op::Finish { nth, outcome } => {
                    if !running.is_empty() {
                        let key = running.remove(nth % running.len());
                        q.finish(&key, outcome, now);
                        if outcome != Outcome::Done(None) {
                            owed.insert(key);
                        }
                    }
                }
                Op::Advance { ms } => now += MS(ms),
            }
            let snapshot = q.snapshot();
            prop_assert_eq!(q.order[0].len() + q.order[1].len(), snapshot.len());
            prop_assert_eq!(q.running(), running.len());
            for (key, ..) in &snapshot {
                prop_assert!(!running.contains(key), "{} both waiting and running", key);
            }
        }
        // Let everything run to the end, each reconcile succeeding with no requeue.
        for key in running.drain(..) {
            q.finish(&key, Outcome::Done(None), now);
        }
        let mut served: HashMap<u8, usize> = HashMap::new();
        while let Some(due) = q.next_due() {
            now = now.max(due);
            while let Some(taken) = q.pop(now) {
                *served.entry(taken.key).or_default() += 1;
                owed.remove(&taken.key);
                q.finish(&taken.key, Outcome::Done(None), now);
            }
        }
        prop_assert!(owed.is_empty(), "requests never served: {:?}", owed);
        prop_assert!(served.values().all(|&n| n == 1), "a key reconciled twice for one request: {:?}", served);
        prop_assert_eq!((q.waiting(), q.running()), (0, 0));
    }

    /// A new key is taken before any active key that fell due more than `max_wait` after it,
    /// however much active work keeps arriving: it never starves.
    #[test]
    fn new_keys_do_not_starve_behind_a_stream_of_active_work(
        arrivals in prop::collection::vec(0usize..4, 1..300),
        service_ms in 1u64..500,
    ) {
        const NEW: u32 = u32::MAX;
        let settings = Settings::default();
        let mut q = WorkQueue::new(settings, 3);
        let t0 = Instant::now();
        q.push(NEW, Class::New, t0);
        // On one worker, active keys keep arriving, up to three per reconcile.
        let mut now = t0;
        let mut next_key = 0u32;
        let mut due = HashMap::new();
        for count in arrivals {
            for _ in 0..count {
                q.push(next_key, Class::Active, now);
                due.insert(next_key, now);
                next_key += 1;
            }
            let Some(taken) = q.pop(now) else { continue };
            if taken.key == NEW {
                return Ok(());
            }
            prop_assert!(
                due[&taken.key] <= t0 + settings.max_wait,
                "active work due {:?} after the new key went first",
                due[&taken.key] - t0
            );
            now += MS(service_ms);
            q.finish(&taken.key, Outcome::Done(None), now);
        }
    }
}
