//! The autoscaler's rules as the load a version sees changes.

use proptest::prelude::*;

use super::*;

const NOW: Millis = 1_700_000_000_000;
const SECOND: Millis = 1_000;

/// One sample a second over the last minute before `now`: `load(age_in_seconds)` in flight.
fn minute(now: Millis, ready: u32, load: impl Fn(i64) -> f64) -> Vec<ConcurrencySample> {
    (0..60)
        .map(|age| ConcurrencySample {
            at: now - age * SECOND,
            in_flight: load(age),
            ready,
        })
        .collect()
}

fn input(
    samples: &[ConcurrencySample],
    current: u32,
    min: u32,
    max: u32,
    now: Millis,
) -> ScaleInput<'_> {
    ScaleInput {
        samples,
        target: 8.0,
        stable_window: STABLE_WINDOW_MS,
        current,
        min,
        max,
        now,
    }
}

#[test]
fn steady_load_keeps_the_count() {
    let samples = minute(NOW, 3, |_| 24.0);
    let d = decide(&input(&samples, 3, 1, 10, NOW), &AutoscalerState::default());
    assert_eq!((d.desired, d.panicking), (3, false));
    assert_eq!(d.state, AutoscalerState::default());
    assert_eq!(
        d.reason,
        "stable: 24.0 in flight over 60s, 24.0 over 6s, target 8 per replica: keeping 3"
    );
}

#[test]
fn a_burst_panics_and_the_count_only_comes_down_a_stable_window_later() {
    // 16 in flight for a minute, then 80 for the last 6 seconds, on 2 replicas.
    let burst = minute(NOW, 2, |age| if age < 6 { 80.0 } else { 16.0 });
    let d = decide(&input(&burst, 2, 1, 20, NOW), &AutoscalerState::default());
    // The stable average (22.4) wants 3; the panic window (80) wants 10, 5x the ready 2.
    assert_eq!((d.desired, d.panicking), (10, true));
    assert_eq!(
        d.state,
        AutoscalerState {
            last_panic: Some(NOW),
            max_panic_replicas: 10
        }
    );
    assert_eq!(
        d.reason,
        "panic: 22.4 in flight over 60s, 80.0 over 6s, target 8 per replica: 2 -> 10"
    );
    // The load is gone. Within a stable window of the last panic condition: no scale-down.
    let later = NOW + 30 * SECOND;
    let idle = minute(later, 10, |_| 0.0);
    let held = decide(&input(&idle, 10, 1, 20, later), &d.state);
    assert_eq!((held.desired, held.panicking), (10, true));
    assert_eq!(held.state, d.state);
    assert!(
        held.reason.ends_with("keeping 10 (no scale-down in panic)"),
        "{}",
        held.reason
    );
    // A whole stable window after it: calm again, and down by at most half per decision.
    let mut now = NOW + 60 * SECOND;
    let mut state = held.state;
    let mut current = 10;
    let mut walk = Vec::new();
    for _ in 0..4 {
        let idle = minute(now, current, |_| 0.0);
        let d = decide(&input(&idle, current, 1, 20, now), &state);
        assert!(!d.panicking);
        walk.push(d.desired);
        (state, current, now) = (d.state, d.desired, now + 2 * SECOND);
    }
    assert_eq!(walk, [5, 2, 1, 1]);
    assert_eq!(state, AutoscalerState::default());
}

#[test]
fn a_panic_goes_on_while_the_burst_does() {
    let state = AutoscalerState {
        last_panic: Some(NOW - 59 * SECOND),
        max_panic_replicas: 10,
    };
    // Still 5x the ready replicas: the panic is extended from now.
    let burst = minute(NOW, 10, |_| 400.0);
    let d = decide(&input(&burst, 10, 1, 100, NOW), &state);
    assert_eq!((d.desired, d.panicking), (50, true));
    assert_eq!(d.state.last_panic, Some(NOW));
}

#[test]
fn the_count_stays_within_the_version_s_bounds() {
    let cases = [
        // 200 in flight wants 25 replicas; at most 4.
        (minute(NOW, 4, |_| 200.0), 4, 1, 4, 4, "(at the maximum)"),
        // Nothing in flight; at least 3 (and halving 3 gives 1).
        (
            minute(NOW, 3, |_| 0.0),
            3,
            3,
            6,
            3,
            "keeping 3 (at the minimum)",
        ),
        // A bound lowered under the current count.
        (
            minute(NOW, 8, |_| 64.0),
            8,
            1,
            5,
            5,
            "8 -> 5 (at the maximum)",
        ),
    ];
    for (samples, current, min, max, want, reason) in cases {
        let d = decide(
            &input(&samples, current, min, max, NOW),
            &AutoscalerState::default(),
        );
        assert_eq!(d.desired, want, "{}", d.reason);
        assert!(d.reason.ends_with(reason), "{}", d.reason);
    }
}

#[test]
fn without_samples_the_count_is_kept() {
    let stale = minute(NOW - 61 * SECOND, 3, |_| 500.0);
    for samples in [Vec::new(), stale] {
        let d = decide(&input(&samples, 3, 1, 10, NOW), &AutoscalerState::default());
        assert_eq!((d.desired, d.panicking), (3, false));
        assert_eq!(d.reason, "no load reported in the last 60s: keeping 3");
        // Still within bounds.
        let d = decide(
            &input(&samples, 12, 1, 10, NOW),
            &AutoscalerState::default(),
        );
        assert_eq!(d.desired, 10);
    }
}

proptest! {
    /// Whatever the load: the count is within the bounds, never falls below half the ready
    /// replicas in one decision, and never falls at all while panicking.
    #[test]
    fn scaling_is_bounded_and_gradual(
        loads in prop::collection::vec(0.0f64..2_000.0, 1..60),
        ready in 0u32..50,
        current in 0u32..60,
        min in 1u32..5,
        extra in 0u32..40,
        last_panic in prop::option::of(0i64..120),
        max_panic_replicas in 0u32..60,
    ) {
        let max = min + extra;
        let samples: Vec<ConcurrencySample> = loads
            .iter()
            .enumerate()
            .map(|(i, l)| ConcurrencySample { at: NOW - i as i64 * SECOND, in_flight: *l, ready })
            .collect();
        let state = AutoscalerState {
            last_panic: last_panic.map(|age| NOW - age * SECOND),
            max_panic_replicas,
        };
        let d = decide(&input(&samples, current, min, max, NOW), &state);
        prop_assert!((min..=max).contains(&d.desired), "{}", d.reason);
        prop_assert!(d.desired >= (ready.max(1) / 2).clamp(min, max), "{}", d.reason);
        if d.panicking && state.last_panic.is_some() {
            prop_assert!(d.desired >= max_panic_replicas.clamp(min, max), "{}", d.reason);
        }
        prop_assert_eq!(d.panicking, d.state.last_panic.is_some());
    }
}

#[test]
fn a_shorter_window_forgets_a_burst_sooner() {
    // Busy (8 per replica, 3 replicas) until 10 s ago, idle since.
    let samples = minute(NOW, 3, |age| if age >= 10 { 24.0 } else { 0.0 });
    let long = decide(&input(&samples, 3, 1, 3, NOW), &AutoscalerState::default());
    assert_eq!(long.desired, 3, "{}", long.reason);
    let short = ScaleInput {
        stable_window: 6 * SECOND,
        ..input(&samples, 3, 1, 3, NOW)
    };
    let d = decide(&short, &AutoscalerState::default());
    assert_eq!(d.desired, 1, "{}", d.reason);
    assert!(
        d.reason.contains("over 6s") && d.reason.contains("over 600ms"),
        "{}",
        d.reason
    );
    // A window below Knative's 6 s is taken as 6 s.
    let shorter = ScaleInput {
        stable_window: SECOND,
        ..input(&samples, 3, 1, 3, NOW)
    };
    assert_eq!(
        decide(&shorter, &AutoscalerState::default()).reason,
        d.reason
    );
}
