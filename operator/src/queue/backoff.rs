//! How long a key waits after a failed reconcile: exponential growth with jitter.
//!
//! The n-th failure in a row waits `first · 2ⁿ⁻¹`, capped at `max`, of which the upper half is
//! random ("equal jitter"): a retry never comes sooner than half the nominal delay, and objects
//! that failed together (an apiserver outage) do not all retry in the same instant. A success
//! resets the count (`super::WorkQueue` keeps it per key).

use std::time::Duration;

/// The error backoff policy shared by every controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The nominal delay after the first failure.
    pub first: Duration,
    /// The nominal delay never grows past this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The nominal delay after `failures` failures in a row (at least one).
    pub fn nominal(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// The delay after `failures` failures in a row; `jitter` (in `[0, 1)`, from the caller's
    /// random source) places it between half the nominal delay and the nominal delay.
    pub fn delay(&self, failures: u32, jitter: f64) -> Duration {
        let nominal = self.nominal(failures);
        let half = nominal / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_nominal_delay_doubles_from_the_first_up_to_the_cap() {
        let b = Backoff {
            first: S(1),
            max: S(60),
        };
        let delays: Vec<u64> = (1..=8).map(|n| b.nominal(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            b.nominal(u32::MAX),
            S(60),
            "no overflow however many failures"
        );
    }

    #[test]
    fn jitter_spans_the_upper_half_of_the_nominal_delay() {
        let b = Backoff {
            first: S(4),
            max: S(60),
        };
        assert_eq!(b.delay(1, 0.0), S(2));
        assert_eq!(b.delay(1, 0.5), S(3));
        assert_eq!(b.delay(2, 0.0), S(4));
    }

    proptest! {
        #[test]
        fn a_delay_lies_between_half_the_nominal_and_the_nominal(
            first_ms in 1u64..10_000,
            max_ms in 1u64..1_000_000,
            failures in 1u32..100,
            jitter in 0.0f64..1.0,
        ) {
            let b = Backoff { first: Duration::from_millis(first_ms), max: Duration::from_millis(max_ms) };
            let nominal = b.nominal(failures);
            let d = b.delay(failures, jitter);
            prop_assert!(nominal <= b.max);
            prop_assert!(d <= nominal && d >= nominal / 2, "{d:?} vs {nominal:?}");
            prop_assert!(b.nominal(failures + 1) >= nominal, "never shrinks with more failures");
        }
    }
}
