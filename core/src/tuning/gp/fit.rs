//! Fitting the GP: hyperparameters by maximum a posteriori (the log marginal likelihood plus
//! weak priors on every hyperparameter), optimised with L-BFGS on their logs from the best of
//! a few starting points, then the posterior the acquisition reads.
//!
//! The priors: on each inverse squared length scale `λ` a penalty `0.1 / λ + 0.1 λ`, which
//! keeps length scales near the unit cube's size unless the data say otherwise and rules out
//! both a kernel that varies faster than the trials can show and one that ignores a parameter
//! altogether; on the signal variance (objectives are standardised) a Gamma(2, 1); on the
//! noise variance a Gamma(1.1, 30), so that noise is assumed small (about 0.04 of the
//! objective's variance) until repeated disagreement between near trials says otherwise.

use super::kernel::{Hyper, matern52, matern52_length_factor, scaled_sq_distance};
use super::lbfgs::{Problem, minimise};
use super::linalg::{Matrix, cholesky, inverse_from_cholesky, solve_lower, solve_upper_transposed};

/// Weight of both terms of the penalty on each inverse squared length scale.
const LENGTH_PENALTY: f64 = 0.1;
/// Gamma(shape, rate) prior on the signal variance.
const SIGNAL_PRIOR: (f64, f64) = (2.0, 1.0);
/// Gamma(shape, rate) prior on the noise variance.
const NOISE_PRIOR: (f64, f64) = (1.1, 30.0);
/// Added to the noise variance: keeps the kernel matrix well conditioned.
const MIN_NOISE: f64 = 1e-6;
/// Bounds of the log length scales and the log signal variance.
const LOG_BOUNDS: (f64, f64) = (-9.0, 6.0);
/// Bounds of the log of the noise variance above the minimum: low enough that a noiseless
/// objective's fit is limited by the minimum alone.
const LOG_NOISE_BOUNDS: (f64, f64) = (-25.0, 6.0);
/// Starting length scales tried before the optimiser runs.
const START_LENGTHS: [f64; 3] = [0.2, 0.5, 1.0];
/// Starting noise variances tried with each of them.
const START_NOISES: [f64; 2] = [1e-4, 0.05];
/// The starting signal variance (the objectives' own, once standardised).
const START_SIGNAL: f64 = 1.0;
/// L-BFGS iterations.
const MAX_ITERATIONS: usize = 60;
/// L-BFGS stops once an iteration gains less than this, relatively.
const RELATIVE_TOLERANCE: f64 = 1e-8;

/// Training data: per pair of points, the per-parameter differences; and the standardised
/// objectives.
pub(crate) struct Data {
    pub n: usize,
    pub dims: usize,
    /// `diffs[(i * n + j) * dims + d]`, for `j < i`.
    pub diffs: Vec<f64>,
    pub y: Vec<f64>,
}

impl Data {
    #[inline]
    fn diff(&self, i: usize, j: usize) -> &[f64] {
        let at = (i * self.n + j) * self.dims;
        &self.diffs[at..at + self.dims]
    }
}

/// A fitted GP: hyperparameters, the Cholesky factor of the kernel matrix and `α = K⁻¹ y`.
pub(crate) struct Posterior {
    pub hyper: Hyper,
    pub l: Matrix,
    pub alpha: Vec<f64>,
}

/// θ = (log ℓ_1..d, log signal, log (noise − minimum)) to hyperparameters.
fn hyper_of(theta: &[f64], dims: usize) -> Hyper {
    Hyper {
        inv_sq_length: theta[..dims].iter().map(|t| (-2.0 * t).exp()).collect(),
        signal: theta[dims].exp(),
        noise: theta[dims + 1].exp() + MIN_NOISE,
    }
}

fn kernel_matrix(data: &Data, h: &Hyper) -> Matrix {
    let n = data.n;
    let mut k = Matrix::zeros(n);
    for i in 0..n {
        k.set(i, i, h.signal + h.noise);
        for j in 0..i {
            let v = h.signal * matern52(scaled_sq_distance(data.diff(i, j), &h.inv_sq_length));
            k.set(i, j, v);
            k.set(j, i, v);
        }
    }
    k
}

/// The negative log prior of θ (up to a constant), its gradient added to `grad`.
fn prior_terms(theta: &[f64], h: &Hyper, grad: &mut [f64]) -> f64 {
    let dims = h.inv_sq_length.len();
    let mut value = 0.0;
    for (g, lambda) in grad[..dims].iter_mut().zip(&h.inv_sq_length) {
        // λ = exp(−2 log ℓ).
        value += LENGTH_PENALTY * (1.0 / lambda + lambda);
        *g += 2.0 * LENGTH_PENALTY * (1.0 / lambda - lambda);
    }
    // −log Gamma(x; shape, rate) = rate x − (shape − 1) log x, for x = exp(θ) (+ minimum).
    let (shape, rate) = SIGNAL_PRIOR;
    value += rate * h.signal - (shape - 1.0) * theta[dims];
    grad[dims] += rate * h.signal - (shape - 1.0);
    let (shape, rate) = NOISE_PRIOR;
    value += rate * h.noise - (shape - 1.0) * h.noise.ln();
    grad[dims + 1] += (rate - (shape - 1.0) / h.noise) * (h.noise - MIN_NOISE);
    value
}

/// The negative log posterior of θ (up to a constant), and its gradient when asked.
fn objective(data: &Data, theta: &[f64], want_grad: bool) -> Option<(f64, Vec<f64>)> {
    let dims = data.dims;
    let h = hyper_of(theta, dims);
    let k = kernel_matrix(data, &h);
    let l = cholesky(&k)?;
    let alpha = solve_upper_transposed(&l, &solve_lower(&l, &data.y));
    let fit: f64 = 0.5 * data.y.iter().zip(&alpha).map(|(a, b)| a * b).sum::<f64>();
    let log_det: f64 = (0..data.n).map(|i| l.at(i, i).ln()).sum();
    let mut grad = vec![0.0; theta.len()];
    if want_grad {
        let inv = inverse_from_cholesky(&l);
        let n = data.n;
        // ∂/∂θ = ½ Σ_ij (K⁻¹ − ααᵀ)_ij ∂K_ij/∂θ.
        for i in 0..n {
            let w_ii = inv.at(i, i) - alpha[i] * alpha[i];
            grad[dims] += 0.5 * w_ii * h.signal;
            grad[dims + 1] += 0.5 * w_ii * (h.noise - MIN_NOISE);
            for j in 0..i {
                let w = 2.0 * (inv.at(i, j) - alpha[i] * alpha[j]);
                let d = data.diff(i, j);
                let r2 = scaled_sq_distance(d, &h.inv_sq_length);
                grad[dims] += 0.5 * w * h.signal * matern52(r2);
                let f = 0.5 * w * h.signal * matern52_length_factor(r2);
                for (g, (x, s)) in grad[..dims].iter_mut().zip(d.iter().zip(&h.inv_sq_length)) {
                    *g += f * x * x * s;
                }
            }
        }
    }
    let value = fit + log_det + prior_terms(theta, &h, &mut grad);
    value.is_finite().then_some((value, grad))
}

/// Minimises the negative log posterior from `start`.
fn optimise(data: &Data, start: Vec<f64>) -> Vec<f64> {
    let mut bounds = vec![LOG_BOUNDS; start.len()];
    if let Some(noise) = bounds.last_mut() {
        *noise = LOG_NOISE_BOUNDS;
    }
    let problem = Problem {
        bounds: &bounds,
        max_iterations: MAX_ITERATIONS,
        relative_tolerance: RELATIVE_TOLERANCE,
    };
    minimise(&problem, start, |theta| objective(data, theta, true)).0
}

/// Fits hyperparameters to `data` and returns the posterior; `None` when no kernel matrix
/// could be factorised (it always can with the minimum noise, barring non-finite input).
pub(crate) fn fit(data: &Data) -> Option<Posterior> {
    let dims = data.dims;
    let start = START_LENGTHS
        .iter()
        .flat_map(|len| START_NOISES.iter().map(move |noise| (len, noise)))
        .filter_map(|(len, noise)| {
            let mut theta = vec![len.ln(); dims];
            theta.push(START_SIGNAL.ln());
            theta.push(noise.ln());
            objective(data, &theta, false).map(|(v, _)| (v, theta))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, theta)| theta)?;
    let theta = optimise(data, start);
    let hyper = hyper_of(&theta, dims);
    let l = cholesky(&kernel_matrix(data, &hyper))?;
    let alpha = solve_upper_transposed(&l, &solve_lower(&l, &data.y));
    Some(Posterior { hyper, l, alpha })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_1d(xs: &[f64], ys: &[f64]) -> Data {
        let n = xs.len();
        let mut diffs = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                diffs[i * n + j] = xs[i] - xs[j];
            }
        }
        Data {
            n,
            dims: 1,
            diffs,
            y: ys.to_vec(),
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let xs = [0.0, 0.2, 0.35, 0.6, 0.9];
        let ys = [0.5, -0.3, 1.2, -1.0, 0.2];
        let data = data_1d(&xs, &ys);
        let theta = vec![-1.2, 0.3, -3.0];
        let (_, grad) = objective(&data, &theta, true).unwrap();
        for k in 0..theta.len() {
            let h = 1e-5;
            let mut up = theta.clone();
            up[k] += h;
            let mut down = theta.clone();
            down[k] -= h;
            let numeric = (objective(&data, &up, false).unwrap().0
                - objective(&data, &down, false).unwrap().0)
                / (2.0 * h);
            assert!(
                (numeric - grad[k]).abs() < 1e-4 * numeric.abs().max(1.0),
                "θ[{k}]: analytic {} numeric {numeric}",
                grad[k]
            );
        }
    }

    #[test]
    fn fitting_improves_the_posterior() {
        let xs: Vec<f64> = (0..12).map(|i| i as f64 / 11.0).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (6.0 * x).sin()).collect();
        let data = data_1d(&xs, &ys);
        let start = vec![1.0_f64.ln(), 0.0, -7.0];
        let before = objective(&data, &start, false).unwrap().0;
        let theta = optimise(&data, start);
        let after = objective(&data, &theta, false).unwrap().0;
        assert!(after < before - 1.0, "{before} -> {after}");
    }
}
