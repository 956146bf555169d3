//! The two-sample Kolmogorov–Smirnov test, two-sided, as SciPy's `ks_2samp(method="auto")`
//! computes it: the exact null distribution when neither sample has more than 10,000 values
//! (Hodges' lattice-path counting), the finite-`n` Kolmogorov distribution at the effective
//! sample size otherwise, or when the exact computation fails numerically.

use super::kolmogorov::kolmogorov_sf;

/// Largest sample size for which the exact distribution is used.
const MAX_EXACT_N: usize = 10_000;

/// The statistic `D` and its two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsOutcome {
    /// The largest distance between the two empirical CDFs (in exact mode rounded to the
    /// lattice `h / lcm(n1, n2)` the distribution is defined on).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Runs the test on two samples sorted ascending, neither empty, without NaN.
pub(crate) fn ks_2samp_sorted(a: &[f64], b: &[f64]) -> KsOutcome {
    let (n1, n2) = (a.len(), b.len());
    let d = max_cdf_distance(a, b);
    let g = gcd(n1 as u64, n2 as u64);
    if n1.max(n2) <= MAX_EXACT_N {
        let lcm = (n1 as u64 / g) * n2 as u64;
        let h = (d * lcm as f64).round_ties_even() as u64;
        let d_lattice = h as f64 / lcm as f64;
        if h == 0 {
            return KsOutcome {
                statistic: d_lattice,
                p_value: 1.0,
            };
        }
        let p = if n1 == n2 {
            prob_outside_square(n1 as u64, h)
        } else {
            prob_outside_band(n1 as u64, n2 as u64, g, h)
        };
        if p.is_finite() && (0.0..=1.0).contains(&p) {
            return KsOutcome {
                statistic: d_lattice,
                p_value: p,
            };
        }
        return asymptotic(n1, n2, d_lattice);
    }
    asymptotic(n1, n2, d)
}

fn asymptotic(n1: usize, n2: usize, d: f64) -> KsOutcome {
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let effective_n = (m * n / (m + n)).round_ties_even().max(1.0) as u64;
    KsOutcome {
        statistic: d,
        p_value: kolmogorov_sf(effective_n, d).clamp(0.0, 1.0),
    }
}

/// `max |F_a(x) - F_b(x)|` over every observed `x`, with each difference computed as
/// `i/n1 - j/n2` in floating point, exactly as the reference does, so that the lattice rounding
/// that follows sees the same value.
fn max_cdf_distance(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let (mut max_diff, mut min_diff) = (f64::NEG_INFINITY, f64::INFINITY);
    while i < a.len() || j < b.len() {
        // The next distinct value, and every copy of it on both sides.
        let x = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_diff = max_diff.max(diff);
        min_diff = min_diff.min(diff);
    }
    let min_side = (-min_diff).clamp(0.0, 1.0);
    if min_side > max_diff {
        min_side
    } else {
        max_diff
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// `Pr(D >= h/n)` for two samples of the same size `n`: the reflection-principle alternating
/// sum, each term divided by `C(2n, n)` and nested Horner-style so nothing cancels.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    let mut k = n / h;
    loop {
        let mut term = 1.0;
        // Once a factor reaches 0 the term is 0; later factors may be negative.
        for j in 0..h {
            term = (n - k * h - j) as f64 * term / (n + k * h + j + 1) as f64;
        }
        p = term * (1.0 - p);
        if k == 0 {
            break;
        }
        k -= 1;
    }
    2.0 * p
}

/// `Pr(D >= h/lcm)` for sizes `m != n`: the share of monotone lattice paths from `(0, 0)` to
/// `(m, n)` that leave the band `|x/m - y/n| < h/lcm`, computed column by column over the
/// band's sliding window with the recursion for the complement (Viehmann, 2021), which keeps
/// every entry a probability.
fn prob_outside_band(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n { (n, m) } else { (m, n) };
    let (mg, ng) = ((m / g) as i64, (n / g) as i64);
    let (m, n, h) = (m as i64, n as i64, h as i64);
    let mut min_j: i64 = 0;
    let mut max_j: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut current_len = max_j - min_j;
    let len = (2 * max_j + 2).min(n + 1) as usize;
    let mut column = vec![1.0f64; len];
    for value in column.iter_mut().take(max_j as usize) {
        *value = 0.0;
    }
    for i in 1..=m {
        let (last_min_j, last_len) = (min_j, current_len);
        min_j = ((((ng * i - h) as f64 / mg as f64).floor() as i64) + 1)
            .max(0)
            .min(n);
        max_j = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if max_j <= min_j {
            return 1.0;
        }
        let mut value = if min_j == 0 { 0.0 } else { 1.0 };
        for jj in 0..(max_j - min_j) {
            let j = jj + min_j;
            let previous = column
                .get((jj + min_j - last_min_j) as usize)
                .copied()
                .unwrap_or(1.0);
            value = (previous * i as f64 + value * j as f64) / (i + j) as f64;
            if let Some(slot) = column.get_mut(jj as usize) {
                *slot = value;
            }
        }
        current_len = max_j - min_j;
        if last_len > current_len {
            let start = (max_j - min_j) as usize;
            let end = (start + (last_len - current_len) as usize).min(column.len());
            for slot in &mut column[start.min(end)..end] {
                *slot = 1.0;
            }
        }
    }
    column
        .get((max_j - min_j - 1) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}
