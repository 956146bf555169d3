//! Expected improvement, and where it is largest.
//!
//! EI is taken over the best posterior mean at an observed point (robust to noise), in
//! log form so that far-from-best candidates still rank instead of all scoring zero. The
//! search scores random candidates (a tenth of them perturbations of the best trials), then
//! refines the best few by coordinate search: halving steps along numeric coordinates and
//! every choice of categorical and other finite ones, conditions re-applied at every move.

use statrs::function::erf::erfc;

use super::super::rng::TrialRng;
use super::super::sampler::random_point;
use super::super::space::{Point, SearchSpace};
use super::fit::Posterior;
use super::kernel::{differences, matern52, scaled_sq_distance};
use super::linalg::solve_lower;

/// Candidates refined by coordinate search.
const REFINED: usize = 5;
/// Coordinate-search rounds (the numeric step halves each round).
const ROUNDS: usize = 6;
/// The first numeric step of coordinate search.
const FIRST_STEP: f64 = 0.1;
/// Spread of the perturbations of the best trials.
const LOCAL_SPREAD: f64 = 0.05;
/// Below this z, log EI uses its asymptotic series (the direct form loses every digit).
const ASYMPTOTIC_BELOW: f64 = -20.0;
/// Best trials perturbed.
const LOCAL_CENTRES: usize = 5;

struct Scorer<'a> {
    space: &'a SearchSpace,
    points: &'a [&'a Point],
    posterior: &'a Posterior,
    best: f64,
    diff: Vec<f64>,
    k: Vec<f64>,
}

impl Scorer<'_> {
    /// log EI of the point (a full point; conditions applied here).
    fn log_ei(&mut self, full: &Point) -> f64 {
        let mut x = full.clone();
        self.space.deactivate(&mut x);
        let h = &self.posterior.hyper;
        self.k.clear();
        for p in self.points {
            differences(self.space, &x, p, &mut self.diff);
            self.k
                .push(h.signal * matern52(scaled_sq_distance(&self.diff, &h.inv_sq_length)));
        }
        let mean: f64 = self
            .k
            .iter()
            .zip(&self.posterior.alpha)
            .map(|(a, b)| a * b)
            .sum();
        let v = solve_lower(&self.posterior.l, &self.k);
        let var = (h.signal - v.iter().map(|x| x * x).sum::<f64>()).max(1e-12);
        let sd = var.sqrt();
        let z = (self.best - mean) / sd;
        sd.ln() + log_h(z)
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
        diff: Vec::new(),
        k: Vec::with_capacity(points.len()),
    };
    let mut ranked_obs: Vec<usize> = (0..points.len()).collect();
    ranked_obs.sort_by(|&a, &b| y[a].total_cmp(&y[b]).then(a.cmp(&b)));
    let local = (candidates / 10).max(1);
    let mut scored: Vec<(f64, Point)> = Vec::with_capacity(candidates + local);
    for _ in 0..candidates.max(1) {
        let full = full_random(space, rng);
        scored.push((scorer.log_ei(&full), full));
    }
    for c in 0..local {
        let centre = points[ranked_obs[c % ranked_obs.len().min(LOCAL_CENTRES)]];
        let full = perturb(space, centre, rng);
        scored.push((scorer.log_ei(&full), full));
    }
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best_point: Option<(f64, Point)> = None;
    for (score, start) in scored.into_iter().take(REFINED) {
        let (s, p) = refine(&mut scorer, space, start, score);
        if best_point.as_ref().is_none_or(|(b, _)| s > *b) {
            best_point = Some((s, p));
        }
    }
    let mut point = best_point.map_or_else(|| random_point(space, rng), |(_, p)| p);
    space.deactivate(&mut point);
    point
}

/// A uniform point with every coordinate present (conditions applied when scoring).
fn full_random(space: &SearchSpace, rng: &mut TrialRng) -> Point {
    space
        .parameters()
        .iter()
        .map(|p| Some(p.domain.uniform(rng.uniform())))
        .collect()
}

/// A point near `centre`: numeric coordinates moved by a small normal step, categorical
/// ones kept, absent ones drawn uniformly.
fn perturb(space: &SearchSpace, centre: &Point, rng: &mut TrialRng) -> Point {
    space
        .parameters()
        .iter()
        .zip(centre)
        .map(|(p, c)| {
            let u = rng.uniform();
            let step = rng.normal() * LOCAL_SPREAD;
            Some(match c {
                None => p.domain.uniform(u),
                Some(c) if p.domain.is_categorical() => *c,
                Some(c) => p.domain.snap(c + step),
            })
        })
        .collect()
}

/// Coordinate search from `start`.
fn refine(scorer: &mut Scorer<'_>, space: &SearchSpace, start: Point, score: f64) -> (f64, Point) {
    let mut x = start;
    let mut fx = score;
    let mut step = FIRST_STEP;
    for _ in 0..ROUNDS {
        for (d, p) in space.parameters().iter().enumerate() {
            let Some(current) = x[d] else { continue };
            let moves: Vec<f64> = match p.domain.choices() {
                Some(k) if p.domain.is_categorical() || k <= 16 => {
                    (0..k).map(|c| p.domain.choice_coordinate(c)).collect()
                }
                _ => vec![p.domain.snap(current - step), p.domain.snap(current + step)],
            };
            for m in moves {
                if m == current {
                    continue;
                }
                let mut y = x.clone();
                y[d] = Some(m);
                let fy = scorer.log_ei(&y);
                if fy > fx {
                    x = y;
                    fx = fy;
                }
            }
        }
        step *= 0.5;
    }
    (fx, x)
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
}
