//! Tree-structured Parzen estimator, multivariate (one joint density over all parameters,
//! conditional ones included), the algorithm of Optuna's `TPESampler(multivariate=True)`.
//!
//! The observations are split into the best `gamma(n)` (losses ascending; trials stopped
//! early always count among the rest) and the rest. Each group becomes a [`Parzen`]
//! estimator, `l` for the good and `g` for the rest, with older trials weighing less once
//! there are many. Candidates are drawn from `l`; the one with the highest `l(x) / g(x)`
//! (the expected-improvement maximiser under TPE's model) is the suggestion.
//!
//! One departure from Optuna's estimator: the lower clip on the width of continuous kernels
//! (at least the range over the number of kernels plus one) counts half of all observations
//! rather than only the group's own, which never exceeds 25 in the good group. The good
//! group's kernels can then keep narrowing as a study goes on, which refines an optimum
//! that Optuna's TPE only circles; grids and choices keep the group's count, since a kernel
//! narrower than a grid cell could no longer move to the next value.
//!
//! Why not the `tpe` crate: it samples each parameter on its own (univariate) and has no
//! notion of conditional parameters, both of which the issue asks for.

use super::super::rng::TrialRng;
use super::super::space::{Point, SearchSpace};
use super::Observation;
use super::parzen::Parzen;

/// The share of observations that count as good.
const GOOD_FRACTION: f64 = 0.1;
/// The most observations that count as good.
const MAX_GOOD: usize = 25;
/// The most recent observations that keep full weight.
const FULL_WEIGHT_RECENT: usize = 25;
/// The lower clip of continuous kernels counts one in this many of all observations (at
/// least; a larger group counts its own).
const CLIP_EVIDENCE_DIVISOR: usize = 2;

/// How many of `n` observations count as good: 10 %, at least 1, at most 25.
fn good_count(n: usize) -> usize {
    ((GOOD_FRACTION * n as f64).ceil() as usize).clamp(1, MAX_GOOD)
}

/// Weights of a group of `n` observations, oldest first: the newest 25 weigh 1, older ones
/// ramp linearly from `1 / n` (the oldest) up to 1. The good group (at most 25) always
/// weighs evenly.
fn recency_weights(n: usize) -> Vec<f64> {
    if n <= FULL_WEIGHT_RECENT {
        return vec![1.0; n];
    }
    let ramp = n - FULL_WEIGHT_RECENT;
    let lo = 1.0 / n as f64;
    let slope = if ramp > 1 {
        (1.0 - lo) / (ramp - 1) as f64
    } else {
        0.0
    };
    (0..n)
        .map(|p| {
            if p >= ramp {
                1.0
            } else {
                lo + slope * p as f64
            }
        })
        .collect()
}

/// The suggestion from `observations` (at least one completed), scoring `candidates` draws.
pub(crate) fn tpe_point(
    space: &SearchSpace,
    observations: &[Observation],
    candidates: usize,
    rng: &mut TrialRng,
) -> Point {
    let mut ranked: Vec<usize> = (0..observations.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (la, lb) = (observations[a].loss, observations[b].loss);
        match (la, lb) {
            (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(&b)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.cmp(&b),
        }
    });
    let completed = observations.iter().filter(|o| o.loss.is_some()).count();
    let n_good = good_count(observations.len()).min(completed);
    let (good, bad) = ranked.split_at(n_good);
    let evidence = observations.len() / CLIP_EVIDENCE_DIVISOR;
    let estimator = |idx: &[usize]| {
        let mut sorted = idx.to_vec();
        sorted.sort_unstable();
        let points: Vec<&Point> = sorted.iter().map(|&i| &observations[i].point).collect();
        let weights = recency_weights(sorted.len());
        Parzen::new(space, &points, &weights, evidence)
    };
    let l = estimator(good);
    let g = estimator(bad);
    let mut best: Option<(f64, Point)> = None;
    for _ in 0..candidates.max(1) {
        let x = l.sample(rng);
        let score = l.log_density(&x) - g.log_density(&x);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, x));
        }
    }
    best.map(|(_, x)| x).unwrap_or_else(|| l.sample(rng))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_share_is_ten_percent_within_bounds() {
        let table = [(1, 1), (9, 1), (10, 1), (11, 2), (100, 10), (1000, 25)];
        for (n, want) in table {
            assert_eq!(good_count(n), want, "n = {n}");
        }
    }

    #[test]
    fn recent_trials_weigh_more() {
        let w = recency_weights(50);
        assert!(w[0] < w[10] && w[10] < w[24]);
        assert_eq!(w[0], 1.0 / 50.0);
        assert!(w[25..].iter().all(|x| *x == 1.0));
        assert_eq!(recency_weights(20), vec![1.0; 20]);
    }
}
