//! The Matérn 5/2 kernel with one length scale per parameter (automatic relevance
//! determination), over points with categorical and absent coordinates.
//!
//! Per parameter the difference of two points is: the difference of their coordinates for a
//! numeric parameter, 0 or 1 for a categorical one (same choice or not), 0 when both lack the
//! parameter and 1 when only one has it (a conditional parameter's presence is itself a
//! feature). Each squared difference is divided by its length scale squared.

use super::super::space::{Point, SearchSpace};

const SQRT5: f64 = 2.236_067_977_499_79;

/// The per-parameter differences of two points.
pub(crate) fn differences(space: &SearchSpace, a: &Point, b: &Point, out: &mut Vec<f64>) {
    out.clear();
    for ((p, x), y) in space.parameters().iter().zip(a).zip(b) {
        let d = match (x, y) {
            (None, None) => 0.0,
            (Some(_), None) | (None, Some(_)) => 1.0,
            (Some(x), Some(y)) if p.domain.is_categorical() => {
                if x == y {
                    0.0
                } else {
                    1.0
                }
            }
            (Some(x), Some(y)) => x - y,
        };
        out.push(d);
    }
}

/// Kernel hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Hyper {
    /// Inverse squared length scale per parameter.
    pub inv_sq_length: Vec<f64>,
    /// Signal variance.
    pub signal: f64,
    /// Noise variance.
    pub noise: f64,
}

/// `r²` of the kernel for the differences `d`.
#[inline]
pub(crate) fn scaled_sq_distance(d: &[f64], inv_sq_length: &[f64]) -> f64 {
    d.iter().zip(inv_sq_length).map(|(x, w)| x * x * w).sum()
}

/// The kernel's value at `r²` (without the signal variance).
#[inline]
pub(crate) fn matern52(r2: f64) -> f64 {
    let r = r2.max(0.0).sqrt();
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r2) * (-SQRT5 * r).exp()
}

/// `-d matern52 / d r²`·2 — the factor with which each `δ²/ℓ²` enters the derivative of the
/// kernel with respect to `log ℓ`: `∂k/∂log ℓ_d = signal · factor(r) · δ_d²/ℓ_d²`.
#[inline]
pub(crate) fn matern52_length_factor(r2: f64) -> f64 {
    let r = r2.max(0.0).sqrt();
    5.0 / 3.0 * (1.0 + SQRT5 * r) * (-SQRT5 * r).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_factor_is_the_derivative() {
        // k(r²) with r² = s·δ², s = 1/ℓ², log ℓ = t: d k / d t = -2 s δ² k'(r²).
        for r2 in [0.01, 0.3, 1.0, 4.0] {
            let h = 1e-6;
            let dk_dr2 = (matern52(r2 + h) - matern52(r2 - h)) / (2.0 * h);
            let want = -2.0 * dk_dr2 * r2;
            let got = matern52_length_factor(r2) * r2;
            assert!((want - got).abs() < 1e-6, "r2 {r2}: {want} vs {got}");
        }
    }
}
