//! The two-sided one-sample Kolmogorov distribution `Pr(D_n >= x)` for finite `n`, which the
//! two-sample test's asymptotic p-value is read from (SciPy's `kstwo.sf(x, n)`).
//!
//! Following Simard and L'Ecuyer (2011), each region of `(n, x)` takes the method that is exact
//! or accurate there: the Ruben–Gambino closed forms at both ends, twice the one-sided Smirnov
//! tail where only one side can cross, Durbin's matrix (in Marsaglia, Tsang and Wang's form)
//! for small `n x^2`, and the Pelz–Good expansion for large `n`. The region boundaries are
//! SciPy's, so the same method answers on both sides and the values agree to rounding.

use statrs::function::gamma::ln_gamma;
use std::f64::consts::PI;

/// Powers of two the long products are rescaled by, so that they neither overflow nor
/// underflow before the end (the exponent is kept aside and applied once).
const SCALE_EXPONENT: i32 = 128;
/// Below this a term's logarithm would underflow `exp` to zero.
const MIN_LOG: f64 = -708.0;
/// `n` up to which the small-sample rules (matrix and exact products) apply.
const SMALL_N: u64 = 140;

fn scale_up() -> f64 {
    2f64.powi(SCALE_EXPONENT)
}

fn scale_down() -> f64 {
    2f64.powi(-SCALE_EXPONENT)
}

/// `Pr(D_n >= x)`: the survival function of the two-sided Kolmogorov statistic for a sample of
/// size `n >= 1`.
pub(crate) fn kolmogorov_sf(n: u64, x: f64) -> f64 {
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben–Gambino: for 1/2n <= x <= 1/n the CDF is n! (2x - 1/n)^n.
        if t <= 0.5 {
            return 1.0;
        }
        let cdf = if n <= SMALL_N {
            (1..=n)
                .map(|i| i as f64 * (1.0 / nf) * (2.0 * t - 1.0))
                .product::<f64>()
        } else {
            (log_factorial_over_power(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - cdf);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powf(nf));
    }
    if x >= 0.5 {
        // Only one side can reach x: twice the one-sided tail is exact.
        return clip(2.0 * smirnov_sf(n, x));
    }
    let n_x_squared = t * x;
    if n <= SMALL_N {
        if n_x_squared <= 4.0 {
            return clip(1.0 - durbin_cdf(n, x));
        }
        return clip(2.0 * smirnov_sf(n, x));
    }
    if n_x_squared >= 370.0 {
        return 0.0;
    }
    if n_x_squared >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let cdf = if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        durbin_cdf(n, x)
    } else {
        pelz_good_cdf(nf, x)
    };
    clip(1.0 - cdf)
}

fn clip(p: f64) -> f64 {
    p.clamp(0.0, 1.0)
}

/// `ln(n! / n^n)` by Stirling's series, for large `n`.
fn log_factorial_over_power(n: f64) -> f64 {
    // Coefficients of the series in 1/n^2, highest power first.
    const STIRLING: [f64; 8] = [
        -3617.0 / 122_400.0,
        1.0 / 156.0,
        -691.0 / 360_360.0,
        1.0 / 1188.0,
        -1.0 / 1680.0,
        1.0 / 1260.0,
        -1.0 / 360.0,
        1.0 / 12.0,
    ];
    let rn = 1.0 / n;
    let z = rn / n;
    let series = STIRLING.iter().fold(0.0, |acc, c| acc * z + c);
    n.ln() / 2.0 - n + (2.0 * PI).ln() / 2.0 + rn * series
}

/// `Pr(D_n < x)` by Durbin's matrix: the `(k, k)` entry of `H^n`, times `n!/n^n`.
fn durbin_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powf(j as f64)).collect();
    let mut w = vec![0.0; m];
    let mut fac = 1.0;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powf(m as f64) - 2.0 * h.powf(m as f64);
    v[m - 1] = (1.0 + tt) * fac;

    let mut matrix = Matrix::zeros(m);
    for i in 1..m {
        for row in (i - 1)..m {
            matrix.set(row, i, w[row + 1 - i]);
        }
    }
    for (row, value) in v.iter().enumerate() {
        matrix.set(row, 0, *value);
    }
    for col in 0..m {
        matrix.set(m - 1, col, v[m - 1 - col]);
    }

    // Square-and-multiply, rescaling the square whenever its watched entry grows too big.
    let mut power = Matrix::identity(m);
    let mut exponent: i64 = 0;
    let mut matrix_exponent: i64 = 0;
    let mut remaining = n;
    while remaining > 0 {
        if !remaining.is_multiple_of(2) {
            power = power.mul(&matrix);
            exponent += matrix_exponent;
        }
        matrix = matrix.mul(&matrix);
        matrix_exponent *= 2;
        if matrix.get(k - 1, k - 1).abs() > scale_up() {
            matrix.scale(scale_down());
            matrix_exponent += i64::from(SCALE_EXPONENT);
        }
        remaining /= 2;
    }
    let mut p = power.get(k - 1, k - 1);
    let nf = n as f64;
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < scale_down() {
            p *= scale_up();
            exponent -= i64::from(SCALE_EXPONENT);
        }
    }
    if exponent != 0 {
        p *= 2f64.powi(exponent.clamp(-2000, 2000) as i32);
    }
    p.clamp(0.0, 1.0)
}

/// A small dense square matrix, row-major.
struct Matrix {
    size: usize,
    values: Vec<f64>,
}

impl Matrix {
    fn zeros(size: usize) -> Self {
        Self {
            size,
            values: vec![0.0; size * size],
        }
    }

    fn identity(size: usize) -> Self {
        let mut matrix = Self::zeros(size);
        for i in 0..size {
            matrix.set(i, i, 1.0);
        }
        matrix
    }

    fn get(&self, row: usize, col: usize) -> f64 {
        self.values[row * self.size + col]
    }

    fn set(&mut self, row: usize, col: usize, value: f64) {
        self.values[row * self.size + col] = value;
    }

    fn scale(&mut self, factor: f64) {
        self.values.iter_mut().for_each(|v| *v *= factor);
    }

    fn mul(&self, other: &Matrix) -> Matrix {
        let size = self.size;
        let mut out = Matrix::zeros(size);
        for i in 0..size {
            for k in 0..size {
                let a = self.get(i, k);
                if a == 0.0 {
                    continue;
                }
                let row = &other.values[k * size..(k + 1) * size];
                let out_row = &mut out.values[i * size..(i + 1) * size];
                for (o, b) in out_row.iter_mut().zip(row) {
                    *o += a * b;
                }
            }
        }
        out
    }
}

/// The Pelz–Good asymptotic expansion of `Pr(D_n <= x)` in powers of `1/sqrt(n)`, with each
/// term transformed by Jacobi's theta identities into a series that converges fast for small
/// `z = x sqrt(n)`.
fn pelz_good_cdf(n: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let pi2 = PI * PI;
    let pi4 = pi2 * pi2;
    let pi6 = pi4 * pi2;
    let sqrt_2pi = (2.0 * PI).sqrt();
    let z = n.sqrt() * x;
    let z2 = z * z;
    let z3 = z2 * z;
    let z4 = z2 * z2;
    let z6 = z4 * z2;
    let q_log = -pi2 / 8.0 / z2;
    if q_log < MIN_LOG {
        return 0.0;
    }
    let q = q_log.exp();
    let k1a = -z2;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);

    let max_k = (16.0 * z / PI).ceil() as i64;
    let mut terms = [0.0f64; 4];
    for k in (1..=max_k).rev() {
        let m = (2 * k - 1) as f64;
        let m2 = m * m;
        let m4 = m2 * m2;
        let m6 = m4 * m2;
        let q_power = q.powf((8 * k) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (t, c) in terms.iter_mut().zip(coeffs) {
            *t = *t * q_power + c;
        }
    }
    let divisors = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (t, divisor) in terms.iter_mut().zip(divisors) {
        *t = *t * q * sqrt_2pi / divisor;
    }
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let mut k2_extra = 0.0;
    let mut k3_extra = 0.0;
    for k in (1..=max_k).rev() {
        let kf = k as f64;
        let k2 = kf * kf;
        let q_power = q.powf(k2);
        let kpi = PI * kf;
        k2_extra += k2 * q_power;
        k3_extra += (sqrt3z + kpi) * (sqrt3z - kpi) * k2 * q_power;
    }
    terms[2] += k2_extra * pi2 * sqrt_2pi / (-36.0 * z3);
    terms[3] += k3_extra * pi2 * sqrt_2pi / (216.0 * z6);
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| t / n.powf(i as f64 / 2.0))
        .sum()
}

/// `Pr(D+_n >= d)`: the one-sided Smirnov tail, by the Birnbaum–Tingey sum, whose terms are all
/// positive. Products of binomials and powers for moderate `n`; logarithms beyond, where the
/// binomial coefficients no longer fit a double.
pub(crate) fn smirnov_sf(n: u64, d: f64) -> f64 {
    if d <= 0.0 {
        return 1.0;
    }
    if d >= 1.0 {
        return 0.0;
    }
    if n == 1 {
        return 1.0 - d;
    }
    let nf = n as f64;
    let last = ((nf * (1.0 - d)).floor() as u64).min(n - 1);
    let mut sum = 0.0;
    if n < 1013 {
        let first = ((-d).ln_1p() * nf).exp();
        let mut binomial = nf;
        for v in 1..=last {
            let vf = v as f64;
            let at = d + vf / nf;
            let rest = 1.0 - at;
            if rest > 0.0 {
                let mut term = binomial * at.powf(vf - 1.0) * ((-at).ln_1p() * (nf - vf)).exp();
                if term == 0.0 || term.is_nan() {
                    // One factor underflowed alone although the product would not: halve both
                    // exponents and square.
                    let half =
                        at.powf((vf - 1.0) / 2.0) * rest.powf((nf - vf) / 2.0) * binomial.sqrt();
                    if half != 0.0 && half.is_finite() {
                        term = half * half;
                    }
                }
                sum += term;
            }
            binomial *= (nf - vf) / (vf + 1.0);
        }
        sum = sum * d + first;
    } else {
        let log_n_factorial = log_gamma(nf + 1.0);
        for v in 0..=last {
            let vf = v as f64;
            let at = d + vf / nf;
            let rest = 1.0 - at;
            if rest <= 0.0 {
                continue;
            }
            let log_binomial = log_n_factorial - log_gamma(vf + 1.0) - log_gamma(nf - vf + 1.0);
            let log_term = log_binomial + (vf - 1.0) * at.ln() + (nf - vf) * rest.abs().ln();
            if log_term >= -MAX_LOG {
                sum += log_term.exp();
            }
        }
        sum *= d;
    }
    clip(sum)
}

/// Largest argument of `exp` that does not overflow (as Cephes names it).
const MAX_LOG: f64 = 7.097_827_128_933_84e2;

/// `ln Γ(x)`: Stirling's series for large arguments (the same terms Cephes uses, so the
/// rounding of the large logarithms matches), statrs below.
fn log_gamma(x: f64) -> f64 {
    if x < 1000.0 {
        return ln_gamma(x);
    }
    let ln_sqrt_2pi = 0.918_938_533_204_672_8;
    let mut q = (x - 0.5) * x.ln() - x + ln_sqrt_2pi;
    if x > 1.0e8 {
        return q;
    }
    let p = 1.0 / (x * x);
    q += ((1.0 / 1260.0 * p - 1.0 / 360.0) * p + 1.0 / 12.0) / x;
    q
}
