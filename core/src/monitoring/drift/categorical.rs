//! Tests on category counts: Pearson's chi-squared with the reference's shares as expected
//! frequencies, and the two-proportion Z-test, both as Evidently runs them.

use super::counts::CategoryCounts;
use statrs::distribution::{ChiSquared, ContinuousCDF};
use statrs::function::erf::{erf, erfc};

/// Statistic and p-value of a test on counts, with its effect size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CountsOutcome {
    pub statistic: f64,
    pub p_value: f64,
    pub effect_size: f64,
}

/// Chi-squared goodness of fit of the current counts to the reference's shares scaled to the
/// current size (Evidently's `chisquare`). A value absent from the reference makes the
/// statistic infinite and the p-value 0; a single category gives statistic 0 and p-value 1.
pub(crate) fn chi_square(counts: &CategoryCounts) -> CountsOutcome {
    let n_ref: u64 = counts.reference.iter().sum();
    let n_cur: u64 = counts.current.iter().sum();
    let scale = n_cur as f64 / n_ref as f64;
    let categories = counts.len();
    if categories < 2 {
        return CountsOutcome {
            statistic: 0.0,
            p_value: 1.0,
            effect_size: 0.0,
        };
    }
    let statistic = super::counts::accurate_sum(counts.reference.iter().zip(&counts.current).map(
        |(&r, &c)| {
            let expected = r as f64 * scale;
            let diff = c as f64 - expected;
            diff * diff / expected
        },
    ));
    let dof = (categories - 1) as f64;
    let p_value = if statistic.is_infinite() {
        0.0
    } else {
        ChiSquared::new(dof)
            .map(|d| d.sf(statistic))
            .unwrap_or(f64::NAN)
    };
    // Cramér's V of the goodness-of-fit table: comparable across sizes and category counts.
    let effect_size = (statistic / (n_cur as f64 * dof)).sqrt().min(1.0);
    CountsOutcome {
        statistic,
        p_value,
        effect_size,
    }
}

/// The two-proportion Z-test of the first category (in sorted order) against all others,
/// with Evidently's two-sided p-value `2 (1 - Φ(|z|))`.
pub(crate) fn z_test(counts: &CategoryCounts) -> CountsOutcome {
    if counts.reference_unique() == 1
        && counts.current_unique() == 1
        && counts
            .reference
            .iter()
            .zip(&counts.current)
            .any(|(&r, &c)| r > 0 && c > 0)
    {
        return CountsOutcome {
            statistic: 0.0,
            p_value: 1.0,
            effect_size: 0.0,
        };
    }
    let n1: u64 = counts.reference.iter().sum();
    let n2: u64 = counts.current.iter().sum();
    let (first_ref, first_cur) = (counts.reference[0], counts.current[0]);
    let (n1f, n2f) = (n1 as f64, n2 as f64);
    let p1 = (n1 - first_ref) as f64 / n1f;
    let p2 = (n2 - first_cur) as f64 / n2f;
    let pooled = (p1 * n1f + p2 * n2f) / (n1f + n2f);
    let statistic = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    let p_value = 2.0 * (1.0 - normal_cdf(statistic.abs()));
    CountsOutcome {
        statistic,
        p_value,
        effect_size: (p1 - p2).abs(),
    }
}

/// The standard normal CDF, through `erf` near 0 and `erfc` in the tails (Cephes' `ndtr`).
pub(crate) fn normal_cdf(x: f64) -> f64 {
    let y = x * std::f64::consts::FRAC_1_SQRT_2;
    if y.abs() < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * erf(y)
    } else {
        let tail = 0.5 * erfc(y.abs());
        if y > 0.0 { 1.0 - tail } else { tail }
    }
}
