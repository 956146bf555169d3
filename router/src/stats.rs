//! A rolling window of what one version answered: requests, server errors and latency
//! percentiles over the last seconds, served as JSON at `/router/v1/stats` for the autoscaler
//! and the rollout gates.
//!
//! The window is a ring of one-second buckets (the last [`WINDOW_SECONDS`]); each bucket holds
//! counts and a latency histogram on a logarithmic scale ([`LATENCY_GROWTH`] per bucket), so
//! memory is bounded whatever the request rate and a percentile is exact to within one
//! histogram bucket. A summary merges the buckets of the seconds asked for. Time comes in as
//! whole seconds from the caller, which keeps this module pure and testable.

/// How many seconds the window remembers.
pub const WINDOW_SECONDS: u64 = 60;
/// The smallest latency the histogram tells apart, in milliseconds.
const LATENCY_FLOOR_MS: f64 = 0.1;
/// Each histogram bucket's upper bound over the previous one: percentiles are within 8 %.
const LATENCY_GROWTH: f64 = 1.08;
/// 0.1 ms · 1.08^183 ≈ 130 s; anything slower lands in the last bucket.
const LATENCY_BUCKETS: usize = 184;

/// One second of one version.
#[derive(Debug, Clone, Default)]
struct SecondBucket {
    second: u64,
    requests: u64,
    errors: u64,
    mirrored: u64,
    /// Empty until the first request of the second.
    latency: Vec<u32>,
}

/// The last [`WINDOW_SECONDS`] seconds of one version.
#[derive(Debug, Clone)]
pub struct StatsWindow {
    ring: Vec<SecondBucket>,
}

/// A summary of the last seconds of one version.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WindowSummary {
    pub requests: u64,
    /// Answers with a 5xx status (the router's own included).
    pub errors: u64,
    /// Of `requests`, the copies sent by the shadow.
    pub mirrored: u64,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn latency_bucket(latency_ms: f64) -> usize {
    if latency_ms <= LATENCY_FLOOR_MS {
        return 0;
    }
    let i = ((latency_ms / LATENCY_FLOOR_MS).ln() / LATENCY_GROWTH.ln()).ceil();
    (i as usize).min(LATENCY_BUCKETS - 1)
}

fn bucket_upper_bound_ms(i: usize) -> f64 {
    LATENCY_FLOOR_MS * LATENCY_GROWTH.powi(i as i32)
}

// === impl StatsWindow ===

impl Default for StatsWindow {
    fn default() -> Self {
        StatsWindow {
            ring: vec![SecondBucket::default(); WINDOW_SECONDS as usize],
        }
    }
}

impl StatsWindow {
    /// Records one answer at `now` (seconds on any monotonic clock).
    pub fn record(&mut self, now: u64, latency_ms: f64, status: u16, mirrored: bool) {
        let slot = &mut self.ring[(now % WINDOW_SECONDS) as usize];
        if slot.second != now || slot.requests == 0 {
            *slot = SecondBucket {
                second: now,
                latency: vec![0; LATENCY_BUCKETS],
                ..SecondBucket::default()
            };
        }
        slot.requests += 1;
        if status >= 500 {
            slot.errors += 1;
        }
        if mirrored {
            slot.mirrored += 1;
        }
        slot.latency[latency_bucket(latency_ms)] += 1;
    }

    /// The last `seconds` (at most [`WINDOW_SECONDS`]) up to and including `now`.
    pub fn summary(&self, now: u64, seconds: u64) -> WindowSummary {
        let seconds = seconds.clamp(1, WINDOW_SECONDS);
        let oldest = now.saturating_sub(seconds - 1);
        let mut summary = WindowSummary::default();
        let mut latency = vec![0u64; LATENCY_BUCKETS];
        for slot in &self.ring {
            if slot.requests == 0 || slot.second < oldest || slot.second > now {
                continue;
            }
            summary.requests += slot.requests;
            summary.errors += slot.errors;
            summary.mirrored += slot.mirrored;
            for (total, count) in latency.iter_mut().zip(&slot.latency) {
                *total += u64::from(*count);
            }
        }
        summary.p50_ms = percentile(&latency, summary.requests, 0.50);
        summary.p90_ms = percentile(&latency, summary.requests, 0.90);
        summary.p99_ms = percentile(&latency, summary.requests, 0.99);
        summary
    }
}

/// The upper bound of the histogram bucket holding the `q`-quantile of `total` observations.
fn percentile(histogram: &[u64], total: u64, q: f64) -> Option<f64> {
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_upper_bound_ms(i));
        }
    }
    Some(bucket_upper_bound_ms(histogram.len() - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: Option<f64>, expected: f64) -> bool {
        actual.is_some_and(|a| a >= expected && a <= expected * LATENCY_GROWTH)
    }

    #[test]
    fn percentiles_are_within_one_bucket() {
        let mut window = StatsWindow::default();
        for ms in 1..=1000 {
            window.record(100, f64::from(ms), 200, false);
        }
        let s = window.summary(100, 60);
        assert_eq!(s.requests, 1000);
        assert!(within(s.p50_ms, 500.0), "{s:?}");
        assert!(within(s.p90_ms, 900.0), "{s:?}");
        assert!(within(s.p99_ms, 990.0), "{s:?}");
    }

    #[test]
    fn old_seconds_fall_out_of_the_window() {
        let mut window = StatsWindow::default();
        window.record(10, 5.0, 200, false);
        window.record(11, 5.0, 503, true);
        window.record(12, 50.0, 200, false);
        let s = window.summary(12, 60);
        assert_eq!((s.requests, s.errors, s.mirrored), (3, 1, 1));
        let last_two = window.summary(12, 2);
        assert_eq!((last_two.requests, last_two.errors), (2, 1));
        // 60 s later the ring slot of second 10 is reused and the rest has aged out.
        window.record(70, 1.0, 200, false);
        let s = window.summary(70, 60);
        assert_eq!((s.requests, s.errors, s.mirrored), (3, 1, 1));
        let s = window.summary(72, 60);
        assert_eq!((s.requests, s.errors), (1, 0));
        assert!(within(s.p99_ms, 1.0));
    }

    #[test]
    fn an_empty_window_has_no_percentiles_and_extremes_are_clamped() {
        let mut window = StatsWindow::default();
        assert_eq!(window.summary(5, 60), WindowSummary::default());
        window.record(5, 0.0, 200, false);
        window.record(5, 1e9, 200, false);
        let s = window.summary(5, 60);
        assert_eq!(s.p50_ms, Some(LATENCY_FLOOR_MS));
        assert_eq!(s.p99_ms, Some(bucket_upper_bound_ms(LATENCY_BUCKETS - 1)));
    }
}
