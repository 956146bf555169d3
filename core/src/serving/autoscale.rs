//! The concurrency autoscaler, pure: how many replicas a version should run, from the
//! in-flight requests its replicas reported, after Knative's KPA (`pkg/autoscaler/scaling`).
//!
//! Each call takes the recent samples of a version's total in-flight requests (across its
//! replicas) and the state the previous call returned, and gives the desired replica count,
//! the state to carry to the next call and the reason in words. The rules, with Knative's
//! defaults:
//!
//! - The **stable** desire is the average concurrency over the last stable window (the
//!   spec's `window`, [`STABLE_WINDOW_MS`] by default) divided by the target per replica,
//!   rounded up; the **panic** desire the same over the last tenth of it (Knative's
//!   `panic-window-percentage`), which sees a burst ten times sooner.
//! - One decision grows the count at most [`MAX_SCALE_UP_RATE`] times and shrinks it at most
//!   [`MAX_SCALE_DOWN_RATE`] times (halves it), measured on the ready replicas.
//! - When the panic desire reaches [`PANIC_THRESHOLD`] times the ready replicas, the
//!   autoscaler **panics**: it follows the larger of the two desires and never scales down.
//!   It leaves panic once a whole stable window has passed without the panic condition, by
//!   then the burst is in the stable average.
//! - The result is kept within the version's `replicas` bounds. Scale to zero is not
//!   supported (the minimum is at least 1).
//!
//! Unlike Knative, the target is used as given: no `target-utilization-percentage` (70%)
//! is applied on top of it, so `target: {concurrency: 8}` aims at 8 in flight per replica.
//! Samples are averaged as given, which assumes the shell samples at a steady rate (every
//! second, as Knative's collector does).

use crate::records::Millis;

/// Knative's default `stable-window`: the average the autoscaler follows in calm times.
pub const STABLE_WINDOW_MS: Millis = 60_000;
/// The shortest and longest stable windows a spec may ask for (Knative's bounds).
pub const MIN_STABLE_WINDOW_MS: Millis = 6_000;
pub const MAX_STABLE_WINDOW_MS: Millis = 3_600_000;
/// Knative's `panic-window-percentage`: the panic window is this share of the stable one.
pub const PANIC_WINDOW_SHARE: f64 = 0.1;
/// Knative's `panic-threshold-percentage` (200%): panic when the panic window wants at least
/// twice the ready replicas.
pub const PANIC_THRESHOLD: f64 = 2.0;
/// Knative's `max-scale-up-rate`: at most this many times the ready replicas per decision.
pub const MAX_SCALE_UP_RATE: f64 = 1000.0;
/// Knative's `max-scale-down-rate`: at most divide the ready replicas by this per decision.
pub const MAX_SCALE_DOWN_RATE: f64 = 2.0;

/// One reading of a version's load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConcurrencySample {
    /// When it was taken.
    pub at: Millis,
    /// Requests in flight across all the version's replicas.
    pub in_flight: f64,
    /// Replicas ready to serve when it was taken.
    pub ready: u32,
}

/// What one decision is asked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaleInput<'a> {
    /// Recent samples, in any order; those older than the stable window are ignored.
    pub samples: &'a [ConcurrencySample],
    /// In-flight requests per replica to aim at (`autoscaling.target.concurrency`).
    pub target: f64,
    /// The stable window (`autoscaling.target.window`, [`STABLE_WINDOW_MS`] by default).
    pub stable_window: Millis,
    /// The replica count asked for now.
    pub current: u32,
    /// The version's `replicas.min` (at least 1) and `replicas.max`.
    pub min: u32,
    pub max: u32,
    pub now: Millis,
}

/// What the autoscaler remembers between decisions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoscalerState {
    /// The last time the panic condition held; set while in panic mode.
    pub last_panic: Option<Millis>,
    /// The most replicas asked for in the current panic: panic never asks for fewer.
    pub max_panic_replicas: u32,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaleDecision {
    /// The replica count to ask for.
    pub desired: u32,
    /// The state to pass to the next decision.
    pub state: AutoscalerState,
    /// Whether the autoscaler is in panic mode.
    pub panicking: bool,
    /// Why, in words.
    pub reason: String,
}

/// The replica count a version should run; see the module docs for the rules.
pub fn decide(input: &ScaleInput<'_>, state: &AutoscalerState) -> ScaleDecision {
    let min = input.min.max(1);
    let max = input.max.max(min);
    let bound = |n: f64| -> u32 {
        // `n` is a whole, non-negative count here; the cast saturates at u32::MAX.
        (n as u32).clamp(min, max)
    };
    let recent = |window: Millis| {
        input
            .samples
            .iter()
            .filter(move |s| s.at > input.now.saturating_sub(window) && s.at <= input.now)
            .filter(|s| s.in_flight.is_finite() && s.in_flight >= 0.0)
    };
    let stable_window = input
        .stable_window
        .clamp(MIN_STABLE_WINDOW_MS, MAX_STABLE_WINDOW_MS);
    let panic_window = (stable_window as f64 * PANIC_WINDOW_SHARE) as Millis;
    let stable: Vec<&ConcurrencySample> = recent(stable_window).collect();
    let Some(latest) = stable.iter().max_by_key(|s| s.at) else {
        let desired = input.current.clamp(min, max);
        return ScaleDecision {
            desired,
            state: *state,
            panicking: state.last_panic.is_some(),
            reason: format!(
                "no load reported in the last {}: keeping {desired}",
                seconds(stable_window)
            ),
        };
    };
    let average = |samples: &[&ConcurrencySample]| {
        samples.iter().map(|s| s.in_flight).sum::<f64>() / samples.len() as f64
    };
    let stable_load = average(&stable);
    let panic_samples: Vec<&ConcurrencySample> = recent(panic_window).collect();
    let panic_load = if panic_samples.is_empty() {
        stable_load
    } else {
        average(&panic_samples)
    };
    let target = if input.target.is_finite() && input.target > 0.0 {
        input.target
    } else {
        1.0
    };
    let ready = f64::from(latest.ready.max(1));
    let max_up = (MAX_SCALE_UP_RATE * ready).ceil();
    let max_down = (ready / MAX_SCALE_DOWN_RATE).floor();
    let stable_wants = (stable_load / target).ceil();
    let panic_wants = (panic_load / target).ceil();
    let stable_desired = stable_wants.max(max_down).min(max_up);
    let panic_desired = panic_wants.max(max_down).min(max_up);
    let over_threshold = panic_wants / ready >= PANIC_THRESHOLD;

    let mut next = *state;
    if over_threshold {
        next.last_panic = Some(input.now);
    } else if let Some(last) = next.last_panic
        && last.saturating_add(stable_window) <= input.now
    {
        next = AutoscalerState::default();
    }
    let panicking = next.last_panic.is_some();
    let (desired, note) = if panicking {
        let wanted = bound(stable_desired.max(panic_desired));
        let desired = wanted.max(next.max_panic_replicas.clamp(min, max));
        next.max_panic_replicas = desired;
        let note = if desired > wanted {
            " (no scale-down in panic)"
        } else if f64::from(desired) < stable_wants.max(panic_wants) {
            " (at the maximum)"
        } else {
            ""
        };
        (desired, note)
    } else {
        let desired = bound(stable_desired);
        let note = if f64::from(desired) > stable_wants && desired > min {
            " (at most halving per decision)"
        } else if f64::from(desired) > stable_wants {
            " (at the minimum)"
        } else if f64::from(desired) < stable_wants {
            " (at the maximum)"
        } else {
            ""
        };
        (desired, note)
    };
    let mode = if panicking { "panic" } else { "stable" };
    let action = if desired == input.current {
        format!("keeping {desired}")
    } else {
        format!("{} -> {desired}", input.current)
    };
    let reason = format!(
        "{mode}: {stable_load:.1} in flight over {}, {panic_load:.1} over {}, target \
         {target} per replica: {action}{note}",
        seconds(stable_window),
        seconds(panic_window),
    );
    ScaleDecision {
        desired,
        state: next,
        panicking,
        reason,
    }
}

/// A window in whole seconds, or milliseconds below one: `60s`, `6s`, `600ms`.
fn seconds(ms: Millis) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests;
