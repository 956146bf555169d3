//! Confidence intervals of the evaluation's figures.
//!
//! - **Proportions** (accuracy, a class's precision or recall, a class's share of the
//!   predictions) get the **Wilson score interval**: with `p = k / n` and `z` the two-sided
//!   normal quantile of the confidence level,
//!   `(p + z²/2n ± z √(p(1-p)/n + z²/4n²)) / (1 + z²/n)`. Unlike the normal approximation it
//!   stays inside `[0, 1]` and does not collapse to a point at `p = 0` or `p = 1`, which small
//!   slices and rare classes reach all the time. It is statsmodels'
//!   `proportion_confint(method="wilson")`. With `n = 0` nothing is known: `[0, 1]`.
//! - **Everything else** (macro precision, recall and F1, log loss, expected calibration error)
//!   has no closed form worth trusting and gets a **percentile bootstrap**: the records are
//!   resampled with replacement [`Bootstrap::resamples`] times, the figure is computed on each
//!   resample, and the interval runs between the `(1 - c)/2` and `(1 + c)/2` percentiles of
//!   those figures (linear interpolation between order statistics, numpy's default). The
//!   generator is ChaCha8 seeded from the caller's seed and a key naming what is resampled (a
//!   window and a group), so the same data always gives the same interval and two groups never
//!   share draws. A percentile interval need not contain the point estimate when the
//!   statistic is biased (log loss on few records); it is reported as computed.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use statrs::function::erf::erfc_inv;

/// The confidence level used when the caller names none.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
/// Bootstrap resamples used when the caller names none.
pub const DEFAULT_RESAMPLES: u32 = 200;

/// A figure and its confidence interval.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Estimate {
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

/// The `z` of a two-sided interval at `confidence` (in `(0, 1)`): the normal quantile at
/// `(1 + confidence) / 2`, e.g. 1.959963984540054 at 0.95.
pub fn two_sided_z(confidence: f64) -> f64 {
    std::f64::consts::SQRT_2 * erfc_inv(1.0 - confidence)
}

/// The proportion `successes / trials` with its Wilson score interval (see the module docs).
pub fn wilson(successes: u64, trials: u64, confidence: f64) -> Estimate {
    if trials == 0 {
        return Estimate {
            value: 0.0,
            lower: 0.0,
            upper: 1.0,
        };
    }
    let n = trials as f64;
    let p = successes as f64 / n;
    let z = two_sided_z(confidence);
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denominator;
    // The interval always holds p; min and max only undo rounding at p = 0 and p = 1.
    Estimate {
        value: p,
        lower: (center - half).max(0.0).min(p),
        upper: (center + half).min(1.0).max(p),
    }
}

/// How to bootstrap an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    pub resamples: u32,
    pub confidence: f64,
    pub seed: u64,
}

/// Percentile bootstrap intervals of `N` statistics of `records` records whose values on all
/// of them are `values`. `statistics` gets the indices of one resample (with repeats) and
/// returns each figure, or `None` where it is undefined on that resample (left out of that
/// figure's percentiles). `key` names what is resampled, so independent groups draw
/// independently. With no records, no resamples or no defined resample, a figure's interval
/// is the point itself.
pub fn bootstrap<const N: usize>(
    records: usize,
    values: [f64; N],
    settings: &Bootstrap,
    key: &str,
    mut statistics: impl FnMut(&[usize]) -> [Option<f64>; N],
) -> [Estimate; N] {
    let mut figures: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    if records > 0 && settings.resamples > 0 {
        let mut rng = rng(settings.seed, key);
        let mut indices = vec![0usize; records];
        for _ in 0..settings.resamples {
            for slot in &mut indices {
                *slot = below(&mut rng, records);
            }
            for (figure, all) in statistics(&indices).into_iter().zip(&mut figures) {
                all.extend(figure);
            }
        }
    }
    let tail = (1.0 - settings.confidence) / 2.0;
    std::array::from_fn(|i| {
        let value = values[i];
        let all = &mut figures[i];
        if all.is_empty() {
            return Estimate {
                value,
                lower: value,
                upper: value,
            };
        }
        all.sort_by(f64::total_cmp);
        Estimate {
            value,
            lower: percentile(all, tail),
            upper: percentile(all, 1.0 - tail),
        }
    })
}

/// The `q`-quantile (`q` in `[0, 1]`) of sorted, non-empty `values`, interpolating linearly
/// between order statistics as numpy's `percentile` does by default.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(sorted.len() - 1);
    let fraction = position - below as f64;
    sorted[below] + (sorted[above] - sorted[below]) * fraction
}

fn rng(seed: u64, key: &str) -> ChaCha8Rng {
    let mut hash = Sha256::new();
    hash.update(b"toucan.evaluation.bootstrap.v1");
    hash.update(seed.to_be_bytes());
    hash.update(key.as_bytes());
    ChaCha8Rng::from_seed(hash.finalize().into())
}

/// A uniform index in `0..n` (`n > 0`), without modulo bias worth mentioning: the high half of
/// a 64 x 64-bit product (Lemire's method without the rejection step; the bias is below
/// `n / 2^64`).
fn below(rng: &mut ChaCha8Rng, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn z_at_95_percent() {
        assert!((two_sided_z(0.95) - 1.959_963_984_540_054_5).abs() < 1e-12);
        assert!((two_sided_z(0.99) - 2.575_829_303_548_901).abs() < 1e-12);
    }

    #[test]
    fn wilson_by_hand() {
        // 8 of 10 at 95 %: the textbook figures.
        let e = wilson(8, 10, 0.95);
        assert_eq!(e.value, 0.8);
        assert!((e.lower - 0.490_162_471_536_641_8).abs() < 1e-12, "{e:?}");
        assert!((e.upper - 0.943_317_848_545_624_7).abs() < 1e-12, "{e:?}");
        // Nothing observed: nothing known.
        assert_eq!(
            wilson(0, 0, 0.95),
            Estimate {
                value: 0.0,
                lower: 0.0,
                upper: 1.0
            }
        );
        // All or none still has width.
        assert!(wilson(10, 10, 0.95).lower < 1.0);
        assert!(wilson(0, 10, 0.95).upper > 0.0);
    }

    #[test]
    fn bootstrap_is_seeded_and_keyed() {
        let data: Vec<f64> = (0..50).map(|i| f64::from(i % 7)).collect();
        let mean = |idx: &[usize]| Some(idx.iter().map(|&i| data[i]).sum::<f64>() / 50.0);
        let settings = Bootstrap {
            resamples: 300,
            confidence: 0.9,
            seed: 7,
        };
        let value = mean(&(0..50).collect::<Vec<_>>()).unwrap();
        let [a] = bootstrap(50, [value], &settings, "w1", |idx| [mean(idx)]);
        let [b] = bootstrap(50, [value], &settings, "w1", |idx| [mean(idx)]);
        let [c] = bootstrap(50, [value], &settings, "w2", |idx| [mean(idx)]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.lower < value && value < a.upper, "{a:?}");
        // A constant statistic has a zero-width interval; an undefined one the point.
        let [constant, undefined] =
            bootstrap(50, [1.0, 2.0], &settings, "k", |_| [Some(1.0), None]);
        assert_eq!((constant.lower, constant.upper), (1.0, 1.0));
        assert_eq!((undefined.lower, undefined.upper), (2.0, 2.0));
        // Several statistics share the resamples: the same draws as one alone.
        let [alone] = bootstrap(50, [value], &settings, "w1", |idx| [mean(idx)]);
        let [together, _] = bootstrap(50, [value, 0.0], &settings, "w1", |idx| {
            [mean(idx), Some(0.0)]
        });
        assert_eq!(alone, together);
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 8.0);
        // numpy.percentile([1, 2, 4, 8], 50) == 3.0; 25 -> 1.75.
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.25), 1.75);
        assert_eq!(percentile(&[5.0], 0.3), 5.0);
    }

    proptest! {
        #[test]
        fn wilson_contains_the_estimate_and_stays_in_the_unit_interval(
            n in 1u64..100_000, frac in 0.0f64..=1.0, confidence in 0.5f64..0.999,
        ) {
            let k = ((n as f64) * frac).floor() as u64;
            let e = wilson(k, n, confidence);
            prop_assert!(0.0 <= e.lower && e.lower <= e.value + 1e-12);
            prop_assert!(e.value <= e.upper + 1e-12 && e.upper <= 1.0);
        }

        #[test]
        fn wilson_shrinks_with_more_trials_at_the_same_proportion(
            n in 1u64..10_000, k_frac in 0.0f64..=1.0, factor in 2u64..20,
        ) {
            let k = ((n as f64) * k_frac).floor() as u64;
            let small = wilson(k, n, 0.95);
            let large = wilson(k * factor, n * factor, 0.95);
            prop_assert!(large.upper - large.lower < small.upper - small.lower);
        }

        #[test]
        fn wilson_widens_with_confidence(n in 1u64..10_000, k_frac in 0.0f64..=1.0) {
            let k = ((n as f64) * k_frac).floor() as u64;
            let narrow = wilson(k, n, 0.8);
            let wide = wilson(k, n, 0.99);
            prop_assert!(wide.upper - wide.lower > narrow.upper - narrow.lower);
        }
    }
}
