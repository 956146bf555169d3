//! The first Wasserstein distance between two samples, normed by the reference's standard
//! deviation (Evidently's `wasserstein`): how far, in reference standard deviations, the mass
//! of one empirical distribution must move to become the other.

use super::counts::{AccurateSum, accurate_sum};

/// Smallest standard deviation the distance is divided by, so a constant reference does not
/// divide by zero.
const MIN_NORM: f64 = 0.001;

/// The normed distance between two samples, each sorted ascending.
pub(crate) fn wasserstein_normed(reference: &[f64], current: &[f64]) -> f64 {
    let norm = population_std(reference).max(MIN_NORM);
    wasserstein_sorted(reference, current) / norm
}

/// `integral |F_u - F_v|`, summed between consecutive values of the merged samples.
pub(crate) fn wasserstein_sorted(u: &[f64], v: &[f64]) -> f64 {
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut previous: Option<f64> = None;
    let mut total = AccurateSum::default();
    while i < u.len() || j < v.len() {
        let x = match (u.get(i), v.get(j)) {
            (Some(&a), Some(&b)) => a.min(b),
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        if let Some(p) = previous {
            // CDFs at p: everything <= p has been passed already.
            let diff = (i as f64 / nu - j as f64 / nv).abs();
            total.add(diff * (x - p));
        }
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        previous = Some(x);
    }
    total.value()
}

/// Standard deviation with divisor `n`, two-pass.
pub(crate) fn population_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = accurate_sum(values.iter().copied()) / n;
    (accurate_sum(values.iter().map(|x| (x - mean) * (x - mean))) / n).sqrt()
}
