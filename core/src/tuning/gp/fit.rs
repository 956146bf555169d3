//! Fitting the GP: hyperparameters by maximum a posteriori (the log marginal likelihood plus
//! weak log-normal priors on every hyperparameter), optimised with L-BFGS on their logs from
//! the best of a few starting length scales, then the posterior the acquisition reads.

use super::kernel::{Hyper, matern52, matern52_length_factor, scaled_sq_distance};
use super::linalg::{Matrix, cholesky, inverse_from_cholesky, solve_lower, solve_upper_transposed};

/// Prior on each log length scale: centre and spread (coordinates live in `[0, 1]`).
const LOG_LENGTH_PRIOR: (f64, f64) = (-0.7, 1.0);
/// Prior on the log signal variance of standardised objectives.
const LOG_SIGNAL_PRIOR: (f64, f64) = (0.0, 1.5);
/// Prior on the log noise variance: small by default, free to grow for noisy objectives.
const LOG_NOISE_PRIOR: (f64, f64) = (-7.0, 3.0);
/// Added to the noise variance: keeps the kernel matrix well conditioned.
const MIN_NOISE: f64 = 1e-6;
/// Bounds of every log hyperparameter.
const LOG_BOUNDS: (f64, f64) = (-9.0, 6.0);
/// Starting length scales tried before the optimiser runs.
const START_LENGTHS: [f64; 3] = [0.15, 0.4, 1.0];
/// L-BFGS iterations and memory.
const MAX_ITERATIONS: usize = 40;
const MEMORY: usize = 6;

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

/// θ = (log ℓ_1..d, log signal, log noise) to hyperparameters.
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

fn prior_terms(theta: &[f64], dims: usize, grad: Option<&mut [f64]>) -> f64 {
    let mut value = 0.0;
    let mut g = vec![0.0; theta.len()];
    for (i, t) in theta.iter().enumerate() {
        let (mean, sd) = if i < dims {
            LOG_LENGTH_PRIOR
        } else if i == dims {
            LOG_SIGNAL_PRIOR
        } else {
            LOG_NOISE_PRIOR
        };
        let z = (t - mean) / sd;
        value += 0.5 * z * z;
        g[i] = z / sd;
    }
    if let Some(grad) = grad {
        for (a, b) in grad.iter_mut().zip(g) {
            *a += b;
        }
    }
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
    let value = fit + log_det + prior_terms(theta, dims, Some(&mut grad));
    value.is_finite().then_some((value, grad))
}

fn clamp(theta: &mut [f64]) {
    for t in theta {
        *t = t.clamp(LOG_BOUNDS.0, LOG_BOUNDS.1);
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises the negative log posterior with L-BFGS (projected onto the bounds, Armijo
/// backtracking).
fn lbfgs(data: &Data, start: Vec<f64>) -> Vec<f64> {
    let mut x = start;
    let Some((mut fx, mut gx)) = objective(data, &x, true) else {
        return x;
    };
    let mut history: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for _ in 0..MAX_ITERATIONS {
        // Two-loop recursion: direction = −H g.
        let mut q = gx.clone();
        let mut alphas = Vec::with_capacity(history.len());
        for (s, y) in history.iter().rev() {
            let rho = 1.0 / dot(y, s);
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(y) {
                *qi -= a * yi;
            }
            alphas.push((rho, a));
        }
        if let Some((s, y)) = history.last() {
            let gamma = dot(s, y) / dot(y, y);
            for qi in &mut q {
                *qi *= gamma;
            }
        } else {
            let norm = dot(&q, &q).sqrt().max(1e-12);
            for qi in &mut q {
                *qi /= norm;
            }
        }
        for ((s, y), (rho, a)) in history.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(y, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let direction: Vec<f64> = q.iter().map(|v| -v).collect();
        let slope = dot(&direction, &gx);
        if slope >= 0.0 {
            history.clear();
            continue;
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..20 {
            let mut candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(a, d)| a + step * d)
                .collect();
            clamp(&mut candidate);
            if let Some((fc, gc)) = objective(data, &candidate, true)
                && fc <= fx + 1e-4 * step * slope
            {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((next, fn_, gn)) = accepted else {
            break;
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gn.iter().zip(&gx).map(|(a, b)| a - b).collect();
        let improvement = fx - fn_;
        x = next;
        fx = fn_;
        gx = gn;
        if dot(&s, &y) > 1e-12 {
            history.push((s, y));
            if history.len() > MEMORY {
                history.remove(0);
            }
        }
        if improvement.abs() < 1e-7 * fx.abs().max(1.0) {
            break;
        }
    }
    x
}

/// Fits hyperparameters to `data` and returns the posterior; `None` when no kernel matrix
/// could be factorised (it always can with the minimum noise, barring non-finite input).
pub(crate) fn fit(data: &Data) -> Option<Posterior> {
    let dims = data.dims;
    let start = START_LENGTHS
        .iter()
        .filter_map(|len| {
            let mut theta = vec![len.ln(); dims];
            theta.push(LOG_SIGNAL_PRIOR.0);
            theta.push(LOG_NOISE_PRIOR.0);
            objective(data, &theta, false).map(|(v, _)| (v, theta))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, theta)| theta)?;
    let theta = lbfgs(data, start);
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
        let theta = lbfgs(&data, start);
        let after = objective(&data, &theta, false).unwrap().0;
        assert!(after < before - 1.0, "{before} -> {after}");
    }
}
