//! Expected improvement, and where it is largest.
//!
//! EI is taken over the best posterior mean at an observed point (robust to noise), in
//! log form so that far-from-best candidates still rank instead of all scoring zero. The
//! search scores random candidates, then starts a local search from the best of them, from
//! a few more drawn in proportion to their EI (so that a second promising region gets a
//! chance too), and from the best trial so far. The local search alternates L-BFGS on the
//! continuous coordinates, with the analytic gradient of log EI and each coordinate scaled
//! by its length scale so that the steps are equally long for the kernel, with trying the
//! other values of finite ones (every choice of a categorical or small grid, nearby values of
//! a large grid), conditions re-applied at every move, until neither improves.

use statrs::function::erf::erfc;

use super::super::rng::TrialRng;
use super::super::sampler::random_point;
use super::super::space::{Point, SearchSpace};
use super::fit::Posterior;
use super::kernel::{differences, matern52, matern52_length_factor, scaled_sq_distance};
use super::lbfgs::{Problem, minimise};
use super::linalg::{solve_lower, solve_upper_transposed};

/// Local searches started from candidates drawn in proportion to their EI, besides the best
/// candidate and the best trial.
const DRAWN_STARTS: usize = 8;
/// Rounds of the local search (continuous, then finite coordinates) at most.
const MAX_ROUNDS: usize = 5;
/// L-BFGS iterations of one continuous phase.
const MAX_ITERATIONS: usize = 50;
/// The continuous phase stops once an iteration gains less than this, relatively.
const RELATIVE_TOLERANCE: f64 = 1e-9;
/// A finite coordinate with more values than this is searched near its value only.
const MAX_EXHAUSTIVE: u64 = 16;
/// The moves tried on a large grid, as coordinate offsets (one grid step is added).
const GRID_MOVES: [f64; 3] = [0.1, 0.03, 0.01];
/// Below this z, log EI uses its asymptotic series (the direct form loses every digit).
const ASYMPTOTIC_BELOW: f64 = -20.0;
/// Smallest posterior variance (numerical floor).
const MIN_VARIANCE: f64 = 1e-12;

struct Scorer<'a> {
    space: &'a SearchSpace,
    points: &'a [&'a Point],
    posterior: &'a Posterior,
    best: f64,
    /// Scratch: per training point its differences (`dims` each) and kernel values.
    diffs: Vec<f64>,
    k: Vec<f64>,
    diff: Vec<f64>,
}

impl Scorer<'_> {
    /// log EI of the point (a full point; conditions applied here), and its gradient with
    /// respect to every coordinate when `grad` is given (zero for all but the continuous
    /// coordinates the point has).
    fn log_ei(&mut self, full: &Point, grad: Option<&mut [f64]>) -> f64 {
        let mut x = full.clone();
        self.space.deactivate(&mut x);
        let h = &self.posterior.hyper;
        let dims = self.space.len();
        self.k.clear();
        self.diffs.clear();
        for p in self.points {
            differences(self.space, &x, p, &mut self.diff);
            self.k
                .push(h.signal * matern52(scaled_sq_distance(&self.diff, &h.inv_sq_length)));
            self.diffs.extend_from_slice(&self.diff);
        }
        let mean: f64 = self
            .k
            .iter()
            .zip(&self.posterior.alpha)
            .map(|(a, b)| a * b)
            .sum();
        let v = solve_lower(&self.posterior.l, &self.k);
        let raw_var = h.signal - v.iter().map(|x| x * x).sum::<f64>();
        let var = raw_var.max(MIN_VARIANCE);
        let sd = var.sqrt();
        let z = (self.best - mean) / sd;
        let value = sd.ln() + log_h(z);
        let Some(grad) = grad else {
            return value;
        };
        grad.fill(0.0);
        // ∂k_i/∂x_d = −signal · factor(r_i²) · λ_d · δ_id; mean = Σ α_i k_i and
        // var = signal − kᵀ K⁻¹ k, so ∂var = −2 (K⁻¹ k)ᵀ ∂k.
        let w = solve_upper_transposed(&self.posterior.l, &v);
        let ratio = cdf_over_h(z);
        let d_mean = -ratio / sd;
        let d_var = if raw_var > MIN_VARIANCE {
            (1.0 - ratio * z) / sd / (2.0 * sd)
        } else {
            0.0
        };
        for (i, p) in self.points.iter().enumerate() {
            let delta = &self.diffs[i * dims..(i + 1) * dims];
            let r2 = scaled_sq_distance(delta, &h.inv_sq_length);
            let e = -h.signal * matern52_length_factor(r2);
            let coefficient = e * (d_mean * self.posterior.alpha[i] - 2.0 * d_var * w[i]);
            for (d, param) in self.space.parameters().iter().enumerate() {
                if x[d].is_some() && p[d].is_some() && param.domain.choices().is_none() {
                    grad[d] += coefficient * h.inv_sq_length[d] * delta[d];
                }
            }
        }
        value
    }
}

/// log(z Φ(z) + φ(z)), accurate far into the left tail.
fn log_h(z: f64) -> f64 {
    let log_phi = -0.5 * z * z - 0.5 * std::f64::consts::TAU.ln();
    if z > ASYMPTOTIC_BELOW {
        let cdf = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
        (z * cdf + log_phi.exp()).max(f64::MIN_POSITIVE).ln()
    } else {
        // z Φ(z) + φ(z) = φ(z) (1/z² − 3/z⁴ + 15/z⁶ − ...) as z → −∞.
        let w = 1.0 / (z * z);
        log_phi + (w * (1.0 - 3.0 * w + 15.0 * w * w)).ln()
    }
}

/// Φ(z) / (z Φ(z) + φ(z)): the derivative of `log_h`.
fn cdf_over_h(z: f64) -> f64 {
    if z > ASYMPTOTIC_BELOW {
        let cdf = 0.5 * erfc(-z / std::f64::consts::SQRT_2);
        let phi = (-0.5 * z * z).exp() / std::f64::consts::TAU.sqrt();
        cdf / (z * cdf + phi).max(f64::MIN_POSITIVE)
    } else {
        // Φ(z) = φ(z)/(−z) (1 − 1/z² + 3/z⁴ − ...) over the series of `log_h`.
        let w = 1.0 / (z * z);
        -z * (1.0 - w + 3.0 * w * w) / (1.0 - 3.0 * w + 15.0 * w * w)
    }
}

/// The point with the largest expected improvement found.
pub(crate) fn maximise(
    space: &SearchSpace,
    points: &[&Point],
    y: &[f64],
    posterior: &Posterior,
    candidates: usize,
    rng: &mut TrialRng,
) -> Point {
    // The best posterior mean at an observed point: y − noise·α.
    let noise = posterior.hyper.noise;
    let best = y
        .iter()
        .zip(&posterior.alpha)
        .map(|(y, a)| y - noise * a)
        .fold(f64::INFINITY, f64::min);
    let mut scorer = Scorer {
        space,
        points,
        posterior,
        best,
        diffs: Vec::with_capacity(points.len() * space.len()),
        k: Vec::with_capacity(points.len()),
        diff: Vec::with_capacity(space.len()),
    };
    let mut scored: Vec<(f64, Point)> = (0..candidates.max(1))
        .map(|_| {
            let full = full_random(space, rng);
            (scorer.log_ei(&full, None), full)
        })
        .collect();
    let mut starts = Vec::with_capacity(DRAWN_STARTS + 2);
    let top = (0..scored.len())
        .max_by(|&a, &b| scored[a].0.total_cmp(&scored[b].0).then(b.cmp(&a)))
        .unwrap_or(0);
    starts.push(scored.swap_remove(top));
    for _ in 0..DRAWN_STARTS {
        let Some(i) = draw_by_ei(&scored, starts[0].0, rng) else {
            break;
        };
        starts.push(scored.swap_remove(i));
    }
    if let Some(best_trial) = (0..points.len()).min_by(|&a, &b| y[a].total_cmp(&y[b])) {
        let full = fill_absent(space, points[best_trial], rng);
        starts.push((scorer.log_ei(&full, None), full));
    }
    let lengths: Vec<f64> = posterior
        .hyper
        .inv_sq_length
        .iter()
        .map(|l| 1.0 / l.sqrt())
        .collect();
    let mut best_point: Option<(f64, Point)> = None;
    for (score, start) in starts {
        let (s, p) = local_search(&mut scorer, &lengths, start, score);
        if best_point.as_ref().is_none_or(|(b, _)| s > *b) {
            best_point = Some((s, p));
        }
    }
    let mut point = best_point.map_or_else(|| random_point(space, rng), |(_, p)| p);
    space.deactivate(&mut point);
    point
}

/// One of `scored`, drawn with probability proportional to its EI (relative to `top`, the
/// best score); `None` when every EI is nil next to the best.
fn draw_by_ei(scored: &[(f64, Point)], top: f64, rng: &mut TrialRng) -> Option<usize> {
    let weight = |s: f64| (s - top).exp();
    let total: f64 = scored.iter().map(|(s, _)| weight(*s)).sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let target = rng.uniform() * total;
    let mut acc = 0.0;
    for (i, (s, _)) in scored.iter().enumerate() {
        acc += weight(*s);
        if target < acc {
            return Some(i);
        }
    }
    scored.iter().rposition(|(s, _)| weight(*s) > 0.0)
}

/// A uniform point with every coordinate present (conditions applied when scoring).
fn full_random(space: &SearchSpace, rng: &mut TrialRng) -> Point {
    space
        .parameters()
        .iter()
        .map(|p| Some(p.domain.uniform(rng.uniform())))
        .collect()
}

/// `point` with its absent coordinates drawn uniformly (they matter once a move of the
/// local search brings their parameter in).
fn fill_absent(space: &SearchSpace, point: &Point, rng: &mut TrialRng) -> Point {
    space
        .parameters()
        .iter()
        .zip(point)
        .map(|(p, c)| Some(c.unwrap_or_else(|| p.domain.uniform(rng.uniform()))))
        .collect()
}

/// Local search from `start` (scored `score`): continuous then finite coordinates, in
/// rounds, until a round changes nothing.
fn local_search(
    scorer: &mut Scorer<'_>,
    lengths: &[f64],
    start: Point,
    score: f64,
) -> (f64, Point) {
    let mut x = start;
    let mut fx = score;
    for _ in 0..MAX_ROUNDS {
        let continuous = continuous_phase(scorer, lengths, &mut x, &mut fx);
        let finite = finite_phase(scorer, &mut x, &mut fx);
        if !continuous && !finite {
            break;
        }
    }
    (fx, x)
}

/// L-BFGS over the continuous coordinates `x` has, in units of their length scales;
/// whether it improved `fx`.
fn continuous_phase(scorer: &mut Scorer<'_>, lengths: &[f64], x: &mut Point, fx: &mut f64) -> bool {
    let space = scorer.space;
    let mut active = x.clone();
    space.deactivate(&mut active);
    let free: Vec<usize> = (0..space.len())
        .filter(|&d| active[d].is_some() && space.parameters()[d].domain.choices().is_none())
        .collect();
    if free.is_empty() {
        return false;
    }
    let bounds: Vec<(f64, f64)> = free.iter().map(|&d| (0.0, 1.0 / lengths[d])).collect();
    let start: Vec<f64> = free
        .iter()
        .map(|&d| x[d].unwrap_or(0.5) / lengths[d])
        .collect();
    let problem = Problem {
        bounds: &bounds,
        max_iterations: MAX_ITERATIONS,
        relative_tolerance: RELATIVE_TOLERANCE,
    };
    let mut trial = x.clone();
    let mut grad = vec![0.0; space.len()];
    let (u, negative) = minimise(&problem, start, |u| {
        for (&d, v) in free.iter().zip(u) {
            trial[d] = Some((v * lengths[d]).clamp(0.0, 1.0));
        }
        let value = scorer.log_ei(&trial, Some(&mut grad));
        let g = free.iter().map(|&d| -grad[d] * lengths[d]).collect();
        value.is_finite().then_some((-value, g))
    });
    if -negative > *fx {
        for (&d, v) in free.iter().zip(&u) {
            x[d] = Some((v * lengths[d]).clamp(0.0, 1.0));
        }
        *fx = -negative;
        true
    } else {
        false
    }
}

/// Each finite coordinate `x` has in turn: every value of a categorical or small grid, a
/// few nearby values of a large one; whether any move improved `fx`.
fn finite_phase(scorer: &mut Scorer<'_>, x: &mut Point, fx: &mut f64) -> bool {
    let space = scorer.space;
    let mut improved = false;
    for (d, p) in space.parameters().iter().enumerate() {
        let Some(k) = p.domain.choices() else {
            continue;
        };
        let mut active = x.clone();
        space.deactivate(&mut active);
        let Some(current) = active[d] else { continue };
        let moves: Vec<f64> = if p.domain.is_categorical() || k <= MAX_EXHAUSTIVE {
            (0..k).map(|c| p.domain.choice_coordinate(c)).collect()
        } else {
            let grid_step = 1.0 / (k - 1) as f64;
            GRID_MOVES
                .iter()
                .chain(&[grid_step])
                .flat_map(|s| [current - s, current + s])
                .map(|c| p.domain.snap(c))
                .collect()
        };
        for m in moves {
            if m == current {
                continue;
            }
            let mut y = x.clone();
            y[d] = Some(m);
            let fy = scorer.log_ei(&y, None);
            if fy > *fx {
                *x = y;
                *fx = fy;
                improved = true;
            }
        }
    }
    improved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_h_is_continuous_at_the_switch() {
        let left = log_h(ASYMPTOTIC_BELOW - 1e-9);
        let right = log_h(ASYMPTOTIC_BELOW + 1e-9);
        assert!((left - right).abs() < 1e-5, "{left} vs {right}");
        assert!(log_h(-40.0).is_finite() && log_h(-40.0) < log_h(-30.0));
        assert!(log_h(1.0) > log_h(0.0) && log_h(0.0) > log_h(-3.0));
    }

    #[test]
    fn the_gradient_of_log_ei_matches_finite_differences() {
        use super::super::fit::{Data, fit};
        use crate::tuning::space::{Domain, Parameter};
        let double = |name: &str| Parameter {
            name: name.into(),
            domain: Domain::Double {
                min: 0.0,
                max: 1.0,
                log: false,
                step: None,
            },
            when: None,
        };
        let space = SearchSpace::new(vec![double("a"), double("b")], vec![0, 1]);
        let xs: Vec<Point> = (0..8)
            .map(|i| {
                let t = i as f64 / 7.0;
                vec![Some(t), Some((3.0 * t).fract())]
            })
            .collect();
        let y: Vec<f64> = xs
            .iter()
            .map(|p| (p[0].unwrap() - 0.4).powi(2) + (p[1].unwrap() - 0.7).powi(2) - 0.2)
            .collect();
        let n = xs.len();
        let mut diffs = vec![0.0; n * n * 2];
        let mut d = Vec::new();
        for i in 0..n {
            for j in 0..i {
                differences(&space, &xs[i], &xs[j], &mut d);
                diffs[(i * n + j) * 2..(i * n + j) * 2 + 2].copy_from_slice(&d);
            }
        }
        let posterior = fit(&Data {
            n,
            dims: 2,
            diffs,
            y: y.clone(),
        })
        .unwrap();
        let points: Vec<&Point> = xs.iter().collect();
        let mut scorer = Scorer {
            space: &space,
            points: &points,
            posterior: &posterior,
            best: -0.3,
            diffs: Vec::new(),
            k: Vec::new(),
            diff: Vec::new(),
        };
        for at in [[0.3, 0.6], [0.9, 0.1], [0.5, 0.5]] {
            let x = vec![Some(at[0]), Some(at[1])];
            let mut grad = vec![0.0; 2];
            scorer.log_ei(&x, Some(&mut grad));
            for k in 0..2 {
                let e = 1e-6;
                let mut up = x.clone();
                up[k] = Some(at[k] + e);
                let mut down = x.clone();
                down[k] = Some(at[k] - e);
                let numeric = (scorer.log_ei(&up, None) - scorer.log_ei(&down, None)) / (2.0 * e);
                assert!(
                    (numeric - grad[k]).abs() < 1e-4 * numeric.abs().max(1.0),
                    "at {at:?}, d{k}: analytic {} numeric {numeric}",
                    grad[k]
                );
            }
        }
    }

    #[test]
    fn cdf_over_h_is_the_slope_of_log_h() {
        for z in [-30.0, -19.0, -5.0, -1.0, 0.0, 2.0] {
            let e = 1e-6;
            let numeric = (log_h(z + e) - log_h(z - e)) / (2.0 * e);
            let analytic = cdf_over_h(z);
            assert!(
                (numeric - analytic).abs() < 1e-4 * analytic.abs().max(1.0),
                "z {z}: {numeric} vs {analytic}"
            );
        }
    }
}
