//! The Parzen estimator TPE models good and bad trials with: a weighted mixture with one
//! component per observed trial plus one broad prior component.
//!
//! A component is a product over parameters (multivariate: one component draws all of a
//! candidate's coordinates together, keeping what made a trial good together). How a
//! parameter is modelled depends on its [`Axis`]:
//!
//! - a continuous range: a normal kernel truncated to `[0, 1]` whose width is the larger gap
//!   to the neighbouring observed values of that parameter (so kernels narrow where good
//!   trials crowd), clipped below so that few observations cannot collapse it (the clip
//!   loosens with the evidence the caller vouches for);
//! - a grid (integers, stepped doubles, discrete lists): the same kernel on the range widened
//!   by half a step at both ends, each value owning the cell of the values that round to it,
//!   so the end values are as likely as the inner ones and a value's probability is its
//!   cell's mass rather than a density at one point;
//! - a categorical choice: a distribution that favours the observed choice, more firmly the
//!   more trials there are.
//!
//! A parameter the observed trial did not have (its `when` failed) is uniform in that
//! component, and a candidate's density is taken over the parameters it has, so conditional
//! spaces need no special case.

use statrs::function::erf::erfc;

use super::super::rng::TrialRng;
use super::super::space::{Domain, Point, SearchSpace};

/// Weight of the prior component, relative to one observation.
const PRIOR_WEIGHT: f64 = 1.0;
/// The most observations the bandwidth's lower clip shrinks for.
const MAX_CLIP_COMPONENTS: f64 = 100.0;
/// Draws of a truncated normal before falling back to a uniform one.
const MAX_REJECTIONS: usize = 64;
/// Past this many standard deviations the normal tail is below `f64`'s resolution next to 1.
const NEGLIGIBLE_TAIL: f64 = 9.0;
/// Mixture terms this far below the largest add nothing a `f64` can hold.
const NEGLIGIBLE_LOG_TERM: f64 = -50.0;
/// log √(2π).
const LOG_SQRT_TAU: f64 = 0.918_938_533_204_672_8;

/// How the estimator treats one parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Axis {
    /// A continuous range: coordinates in `[0, 1]`, densities per unit of coordinate.
    Continuous,
    /// A grid of values whose cells cover `[low, high]`: kernels live there, and a value's
    /// probability is the mass of its cell.
    Grid { low: f64, high: f64 },
    /// A choice among `k` unordered values.
    Choice { k: usize },
}

impl Axis {
    fn of(domain: &Domain) -> Self {
        match (domain, domain.choices()) {
            (Domain::Categorical { values }, _) => Axis::Choice { k: values.len() },
            (_, None) => Axis::Continuous,
            (_, Some(k)) => {
                let low = cell(domain, domain.choice_coordinate(0)).0;
                let high = cell(domain, domain.choice_coordinate(k.saturating_sub(1))).1;
                Axis::Grid { low, high }
            }
        }
    }

    /// Where numeric kernels live.
    fn range(self) -> (f64, f64) {
        match self {
            Axis::Grid { low, high } => (low, high),
            Axis::Continuous | Axis::Choice { .. } => (0.0, 1.0),
        }
    }
}

/// The coordinates that round to the grid value at `coordinate`: half a step either side,
/// the step taken on the values (so on a log scale the cells are uneven in coordinates).
fn cell(domain: &Domain, coordinate: f64) -> (f64, f64) {
    let log_cell = |min: f64, max: f64, step: f64| {
        let value = domain.decode(coordinate).as_f64().unwrap_or(min);
        let unit = |x: f64| (x.ln() - min.ln()) / (max.ln() - min.ln());
        // A first step wider than the value itself would reach below zero: halve instead.
        let below = (value - step / 2.0).max(value / 2.0);
        (unit(below), unit(value + step / 2.0))
    };
    match *domain {
        Domain::Int {
            min,
            max,
            step,
            log: true,
        } if max > min => log_cell(min as f64, max as f64, step as f64),
        Domain::Double {
            min,
            max,
            step: Some(step),
            log: true,
        } if max > min => log_cell(min, max, step),
        _ => {
            let half = match domain.choices() {
                Some(k) if k > 1 => 0.5 / (k - 1) as f64,
                _ => 0.5,
            };
            (coordinate - half, coordinate + half)
        }
    }
}

/// One kernel of one component on one parameter.
#[derive(Clone, Copy, Debug)]
enum Kernel {
    /// Uniform over the parameter's values (the trial lacked the parameter).
    Uniform,
    /// Normal(mu, sigma) truncated to the axis's range; `log_norm` is the log of its mass
    /// there, `log_peak` the log of its density at `mu`.
    Normal {
        mu: f64,
        sigma: f64,
        log_norm: f64,
        log_peak: f64,
    },
    /// A categorical distribution: `log_hit` for choice `observed`, `log_miss` for the others.
    Choice {
        observed: usize,
        log_hit: f64,
        log_miss: f64,
    },
}

/// A weighted mixture over the space.
#[derive(Clone, Debug)]
pub(crate) struct Parzen<'a> {
    space: &'a SearchSpace,
    axes: Vec<Axis>,
    /// Per component, the log of its normalized weight; the prior is the last.
    log_weights: Vec<f64>,
    /// `kernels[d][j]`: component `j`'s kernel on parameter `d`.
    kernels: Vec<Vec<Kernel>>,
}

impl<'a> Parzen<'a> {
    /// The estimator of `points` with their `weights`; continuous kernels are clipped as if
    /// there were at least `evidence` kernels (see [`widths`]).
    pub(crate) fn new(
        space: &'a SearchSpace,
        points: &[&Point],
        weights: &[f64],
        evidence: usize,
    ) -> Self {
        let total: f64 = weights.iter().sum::<f64>() + PRIOR_WEIGHT;
        let mut log_weights: Vec<f64> = weights.iter().map(|w| (w / total).ln()).collect();
        log_weights.push((PRIOR_WEIGHT / total).ln());
        let axes: Vec<Axis> = space
            .parameters()
            .iter()
            .map(|p| Axis::of(&p.domain))
            .collect();
        let kernels = axes
            .iter()
            .enumerate()
            .map(|(d, axis)| axis_kernels(*axis, points, d, evidence))
            .collect();
        Parzen {
            space,
            axes,
            log_weights,
            kernels,
        }
    }

    /// A draw: one component by weight, each coordinate from its kernel, snapped to the
    /// parameter's values, then conditions applied.
    pub(crate) fn sample(&self, rng: &mut TrialRng) -> Point {
        let u = rng.uniform();
        let mut acc = 0.0;
        let mut chosen = self.log_weights.len() - 1;
        for (j, log_w) in self.log_weights.iter().enumerate() {
            acc += log_w.exp();
            if u < acc {
                chosen = j;
                break;
            }
        }
        let mut point: Point = self
            .space
            .parameters()
            .iter()
            .zip(&self.axes)
            .zip(&self.kernels)
            .map(|((p, axis), kernels)| Some(draw(&p.domain, *axis, &kernels[chosen], rng)))
            .collect();
        self.space.deactivate(&mut point);
        point
    }

    /// The log density of `point` over the parameters it has.
    pub(crate) fn log_density(&self, point: &Point) -> f64 {
        let mut terms = self.log_weights.clone();
        for ((p, (axis, kernels)), c) in self
            .space
            .parameters()
            .iter()
            .zip(self.axes.iter().zip(&self.kernels))
            .zip(point)
        {
            let Some(c) = *c else { continue };
            match axis {
                Axis::Continuous => {
                    for (t, k) in terms.iter_mut().zip(kernels) {
                        *t += log_density_at(k, c);
                    }
                }
                Axis::Grid { .. } => {
                    let (left, right) = cell(&p.domain, c);
                    let uniform = -(p.domain.choices().unwrap_or(1).max(1) as f64).ln();
                    for (t, k) in terms.iter_mut().zip(kernels) {
                        *t += match k {
                            Kernel::Normal {
                                mu,
                                sigma,
                                log_norm,
                                ..
                            } => {
                                log_gauss_mass((left - mu) / sigma, (right - mu) / sigma) - log_norm
                            }
                            _ => uniform,
                        };
                    }
                }
                Axis::Choice { k: choices } => {
                    let choice = c as usize;
                    for (t, k) in terms.iter_mut().zip(kernels) {
                        *t += match k {
                            Kernel::Choice {
                                observed,
                                log_hit,
                                log_miss,
                            } => {
                                if *observed == choice {
                                    *log_hit
                                } else {
                                    *log_miss
                                }
                            }
                            _ => -(*choices as f64).ln(),
                        };
                    }
                }
            }
        }
        log_sum_exp(&terms)
    }
}

/// The kernels of every component (the prior last) on parameter `d`.
fn axis_kernels(axis: Axis, points: &[&Point], d: usize, evidence: usize) -> Vec<Kernel> {
    let present = points.iter().filter(|p| p[d].is_some()).count();
    let mut kernels = Vec::with_capacity(points.len() + 1);
    match axis {
        Axis::Choice { k } => {
            // Every choice gets the prior's share, spread over the kernels; the observed one
            // gets a whole observation on top, so it dominates once there are many trials.
            let base = PRIOR_WEIGHT / (present as f64 + 1.0);
            let row = 1.0 + k as f64 * base;
            let (log_hit, log_miss) = (((1.0 + base) / row).ln(), (base / row).ln());
            kernels.extend(points.iter().map(|p| match p[d] {
                Some(c) => Kernel::Choice {
                    observed: c as usize,
                    log_hit,
                    log_miss,
                },
                None => Kernel::Uniform,
            }));
            kernels.push(Kernel::Uniform);
        }
        Axis::Continuous | Axis::Grid { .. } => {
            let (low, high) = axis.range();
            let evidence = if matches!(axis, Axis::Continuous) {
                evidence
            } else {
                0
            };
            let widths = widths(points, d, low, high, evidence);
            kernels.extend(points.iter().zip(widths).map(|(p, w)| match p[d] {
                Some(c) => normal(c, w, low, high),
                None => Kernel::Uniform,
            }));
            kernels.push(normal(0.5 * (low + high), high - low, low, high));
        }
    }
    kernels
}

/// Each point's kernel width on parameter `d`: the larger of the gaps to its neighbours among
/// the points that have the parameter, with the range's ends as outer neighbours (the
/// outermost points take the gap on their inner side only), clipped to
/// `[range / min(100, kernels + 1), range]` with the prior counted as a kernel and at least
/// `evidence` kernels counted.
fn widths(points: &[&Point], d: usize, low: f64, high: f64, evidence: usize) -> Vec<f64> {
    let mut present: Vec<(f64, usize)> = points
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p[d].map(|c| (c, i)))
        .collect();
    present.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let range = high - low;
    let kernels = (present.len() as f64 + 1.0).max(evidence as f64);
    let min = range / MAX_CLIP_COMPONENTS.min(kernels + 1.0);
    let mut out = vec![range; points.len()];
    let m = present.len();
    for (k, &(c, i)) in present.iter().enumerate() {
        let left = if k == 0 { low } else { present[k - 1].0 };
        let right = if k + 1 == m { high } else { present[k + 1].0 };
        let width = match (k, m) {
            (_, 1) => (c - left).max(right - c),
            (0, _) => right - c,
            (k, m) if k + 1 == m => c - left,
            _ => (c - left).max(right - c),
        };
        out[i] = width.clamp(min, range);
    }
    out
}

fn normal(mu: f64, sigma: f64, low: f64, high: f64) -> Kernel {
    let log_norm = log_gauss_mass((low - mu) / sigma, (high - mu) / sigma);
    Kernel::Normal {
        mu,
        sigma,
        log_norm,
        log_peak: -sigma.ln() - LOG_SQRT_TAU - log_norm,
    }
}

/// The log density of a continuous coordinate under a kernel.
#[inline]
fn log_density_at(kernel: &Kernel, c: f64) -> f64 {
    match kernel {
        Kernel::Normal {
            mu,
            sigma,
            log_peak,
            ..
        } => {
            let z = (c - mu) / sigma;
            log_peak - 0.5 * z * z
        }
        _ => 0.0,
    }
}

/// log of the standard normal's mass on `[a, b]`, accurate in both tails.
fn log_gauss_mass(a: f64, b: f64) -> f64 {
    let upper_tail = |z: f64| {
        if z > NEGLIGIBLE_TAIL {
            0.0
        } else {
            0.5 * erfc(z / std::f64::consts::SQRT_2)
        }
    };
    let mass = if a >= 0.0 {
        upper_tail(a) - upper_tail(b)
    } else if b <= 0.0 {
        upper_tail(-b) - upper_tail(-a)
    } else {
        1.0 - upper_tail(-a) - upper_tail(b)
    };
    mass.max(f64::MIN_POSITIVE).ln()
}

fn draw(domain: &Domain, axis: Axis, kernel: &Kernel, rng: &mut TrialRng) -> f64 {
    match (kernel, axis) {
        (Kernel::Normal { mu, sigma, .. }, _) => {
            let (low, high) = axis.range();
            let x = (0..MAX_REJECTIONS)
                .map(|_| mu + sigma * rng.normal())
                .find(|x| (low..=high).contains(x))
                .unwrap_or_else(|| low + (high - low) * rng.uniform());
            domain.snap(x)
        }
        (
            Kernel::Choice {
                observed,
                log_hit,
                log_miss,
            },
            Axis::Choice { k },
        ) => {
            let u = rng.uniform();
            let mut acc = 0.0;
            for j in 0..k {
                acc += if j == *observed { log_hit } else { log_miss }.exp();
                if u < acc {
                    return j as f64;
                }
            }
            (k - 1) as f64
        }
        _ => domain.uniform(rng.uniform()),
    }
}

/// log(sum(exp(terms))) without overflow.
pub(crate) fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    let sum: f64 = terms
        .iter()
        .map(|t| t - max)
        .filter(|d| *d > NEGLIGIBLE_LOG_TERM)
        .map(f64::exp)
        .sum();
    max + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::space::Parameter;

    fn space_of(domain: Domain) -> SearchSpace {
        let parameter = Parameter {
            name: "p".into(),
            domain,
            when: None,
        };
        SearchSpace::new(vec![parameter], vec![0])
    }

    #[test]
    fn grid_cells_tile_the_widened_range() {
        let int = Domain::Int {
            min: 1,
            max: 5,
            step: 1,
            log: false,
        };
        assert_eq!(
            Axis::of(&int),
            Axis::Grid {
                low: -0.125,
                high: 1.125
            }
        );
        let log = Domain::Int {
            min: 1,
            max: 100,
            step: 1,
            log: true,
        };
        let Axis::Grid { low, high } = Axis::of(&log) else {
            panic!("a log-scaled int is a grid");
        };
        assert!(low < 0.0 && high > 1.0);
        // Neighbouring cells meet.
        let (a, b) = (log.choice_coordinate(3), log.choice_coordinate(4));
        assert!((cell(&log, a).1 - cell(&log, b).0).abs() < 1e-12);
    }

    #[test]
    fn end_values_of_a_grid_are_as_likely_as_inner_ones_under_the_prior() {
        let space = space_of(Domain::Int {
            min: 0,
            max: 2,
            step: 1,
            log: false,
        });
        let parzen = Parzen::new(&space, &[], &[], 0);
        let p: Vec<f64> = [0.0, 0.5, 1.0]
            .iter()
            .map(|c| parzen.log_density(&vec![Some(*c)]).exp())
            .collect();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{p:?}");
        assert!(p[0] > 0.25 && p[2] > 0.25, "{p:?}");
    }

    #[test]
    fn the_observed_choice_firms_up_with_more_trials() {
        let space = space_of(Domain::Categorical {
            values: vec!["a".into(), "b".into(), "c".into()],
        });
        let share_of_a = |n: usize| {
            let points: Vec<Point> = vec![vec![Some(0.0)]; n];
            let refs: Vec<&Point> = points.iter().collect();
            let parzen = Parzen::new(&space, &refs, &vec![1.0; n], 0);
            parzen.log_density(&vec![Some(0.0)]).exp()
        };
        assert!(share_of_a(2) < share_of_a(20));
        assert!(share_of_a(40) > 0.9);
    }
}
