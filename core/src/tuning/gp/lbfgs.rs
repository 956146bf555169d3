//! A small box-bounded L-BFGS minimiser: the fit minimises the negative log posterior of the
//! kernel's hyperparameters with it, and the acquisition maximises expected improvement over
//! the continuous coordinates with it.
//!
//! Steps are projected onto the box and accepted by Armijo backtracking; curvature pairs that
//! a projection spoilt (`sᵀy ≤ 0`) are dropped. Written here for the same reason as
//! [`linalg`](super::linalg): this loop is all the GP needs of an optimisation crate.

/// Curvature pairs kept.
const MEMORY: usize = 6;
/// Halvings of a step before the search gives up.
const MAX_BACKTRACKS: usize = 20;
/// Sufficient decrease (Armijo) constant.
const ARMIJO: f64 = 1e-4;

/// What to minimise, where, and for how long.
pub(crate) struct Problem<'a> {
    /// Lower and upper bound of every variable.
    pub bounds: &'a [(f64, f64)],
    /// Iterations at most.
    pub max_iterations: usize,
    /// Stop once an iteration improves the value by less than this, relative to it.
    pub relative_tolerance: f64,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Minimises `f` (value and gradient, `None` where it cannot be evaluated) from `start`;
/// returns the best point found and its value.
pub(crate) fn minimise<F>(problem: &Problem<'_>, start: Vec<f64>, mut f: F) -> (Vec<f64>, f64)
where
    F: FnMut(&[f64]) -> Option<(f64, Vec<f64>)>,
{
    let project = |x: &mut [f64]| {
        for (v, (lo, hi)) in x.iter_mut().zip(problem.bounds) {
            *v = v.clamp(*lo, *hi);
        }
    };
    let mut x = start;
    project(&mut x);
    let Some((mut fx, mut gx)) = f(&x) else {
        return (x, f64::INFINITY);
    };
    let mut history: Vec<(Vec<f64>, Vec<f64>)> = Vec::new();
    for _ in 0..problem.max_iterations {
        let direction = direction(&history, &gx);
        let slope = dot(&direction, &gx);
        if slope >= 0.0 {
            if history.is_empty() {
                break;
            }
            history.clear();
            continue;
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..MAX_BACKTRACKS {
            let mut candidate: Vec<f64> = x
                .iter()
                .zip(&direction)
                .map(|(a, d)| a + step * d)
                .collect();
            project(&mut candidate);
            if let Some((fc, gc)) = f(&candidate)
                && fc <= fx + ARMIJO * step * slope
            {
                accepted = Some((candidate, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((next, f_next, g_next)) = accepted else {
            break;
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = g_next.iter().zip(&gx).map(|(a, b)| a - b).collect();
        let improvement = fx - f_next;
        x = next;
        fx = f_next;
        gx = g_next;
        if dot(&s, &y) > 1e-12 {
            history.push((s, y));
            if history.len() > MEMORY {
                history.remove(0);
            }
        }
        if improvement.abs() < problem.relative_tolerance * fx.abs().max(1.0) {
            break;
        }
    }
    (x, fx)
}

/// The two-loop recursion: `−H g` with the inverse Hessian estimate of `history`, or the
/// unit-length steepest descent without one.
fn direction(history: &[(Vec<f64>, Vec<f64>)], g: &[f64]) -> Vec<f64> {
    let mut q = g.to_vec();
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
    q.iter().map(|v| -v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_minimum_inside_and_on_the_bounds() {
        // (x − 0.3)² + 10 (y − 2)², y bounded above by 1: the minimum is (0.3, 1).
        let f = |x: &[f64]| {
            let value = (x[0] - 0.3).powi(2) + 10.0 * (x[1] - 2.0).powi(2);
            Some((value, vec![2.0 * (x[0] - 0.3), 20.0 * (x[1] - 2.0)]))
        };
        let problem = Problem {
            bounds: &[(0.0, 1.0), (0.0, 1.0)],
            max_iterations: 100,
            relative_tolerance: 1e-12,
        };
        let (x, value) = minimise(&problem, vec![0.9, 0.1], f);
        assert!(
            (x[0] - 0.3).abs() < 1e-4 && (x[1] - 1.0).abs() < 1e-9,
            "{x:?}"
        );
        assert!((value - 10.0).abs() < 1e-6);
    }
}
