//! Distances between binned distributions: PSI and Jensen–Shannon, on Evidently's bins (Sturges
//! histogram of both samples together when the reference has more than 20 distinct numbers,
//! one bin per value otherwise).

use super::counts::{CategoryCounts, accurate_sum};

/// Above this many distinct reference values a numeric column is binned by a histogram.
const MAX_VALUE_BINS: usize = 20;

/// The share of each sample in each bin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BinShares {
    pub reference: Vec<f64>,
    pub current: Vec<f64>,
}

/// Bins two numeric samples, each sorted ascending.
pub(crate) fn bin_numeric(reference: &[f64], current: &[f64]) -> BinShares {
    let counts = CategoryCounts::from_sorted(reference, current);
    if counts.reference_unique() > MAX_VALUE_BINS {
        histogram_shares(reference, current)
    } else {
        shares(&counts)
    }
}

/// One bin per distinct value.
pub(crate) fn shares(counts: &CategoryCounts) -> BinShares {
    let n_ref: u64 = counts.reference.iter().sum();
    let n_cur: u64 = counts.current.iter().sum();
    BinShares {
        reference: counts
            .reference
            .iter()
            .map(|&c| c as f64 / n_ref as f64)
            .collect(),
        current: counts
            .current
            .iter()
            .map(|&c| c as f64 / n_cur as f64)
            .collect(),
    }
}

/// Equal-width bins over the range of both samples, as many as Sturges' rule gives for their
/// combined size; each bin is closed on the left, the last on both sides.
fn histogram_shares(reference: &[f64], current: &[f64]) -> BinShares {
    let min = reference[0].min(current[0]);
    let max = reference[reference.len() - 1].max(current[current.len() - 1]);
    let size = (reference.len() + current.len()) as f64;
    let (first, last) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let width = (max - min) / (size.log2() + 1.0);
    let bins = if width != 0.0 {
        ((last - first) / width).ceil() as usize
    } else {
        1
    };
    let step = (last - first) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| i as f64 * step + first).collect();
    edges[bins] = last;
    let count = |sorted: &[f64]| -> Vec<f64> {
        let mut counts = vec![0u64; bins];
        for &x in sorted {
            // The last edge that is <= x; the top edge belongs to the last bin.
            let upper = edges.partition_point(|&e| e <= x);
            if upper == 0 || x > last {
                continue;
            }
            counts[(upper - 1).min(bins - 1)] += 1;
        }
        counts
            .iter()
            .map(|&c| c as f64 / sorted.len() as f64)
            .collect()
    };
    BinShares {
        reference: count(reference),
        current: count(current),
    }
}

/// Replaces empty bins by a small share, so that logarithms stay finite: a millionth of the
/// smallest non-empty share when that is at most 1e-4, else 1e-4 (Evidently's rule).
fn fill_zeroes(shares: &mut [f64]) {
    let smallest = shares
        .iter()
        .copied()
        .filter(|&s| s != 0.0)
        .fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let fill = if smallest <= 0.0001 {
        smallest / 1e6
    } else {
        0.0001
    };
    shares
        .iter_mut()
        .filter(|s| **s == 0.0)
        .for_each(|s| *s = fill);
}

/// Population stability index: `sum (r - c) ln(r / c)` over the bins, empty bins filled.
pub(crate) fn psi(mut bins: BinShares) -> f64 {
    fill_zeroes(&mut bins.reference);
    fill_zeroes(&mut bins.current);
    accurate_sum(
        bins.reference
            .iter()
            .zip(&bins.current)
            .map(|(&r, &c)| (r - c) * (r / c).ln()),
    )
}

/// Jensen–Shannon distance (natural logarithm): the square root of the mean of both
/// distributions' Kullback–Leibler divergences from their average.
pub(crate) fn jensen_shannon(bins: &BinShares) -> f64 {
    let total_ref: f64 = accurate_sum(bins.reference.iter().copied());
    let total_cur: f64 = accurate_sum(bins.current.iter().copied());
    let relative_entropy = |x: f64, y: f64| -> f64 {
        if x > 0.0 && y > 0.0 {
            x * (x / y).ln()
        } else if x == 0.0 && y >= 0.0 {
            0.0
        } else {
            f64::INFINITY
        }
    };
    let (mut left, mut right) = (Vec::new(), Vec::new());
    for (&r, &c) in bins.reference.iter().zip(&bins.current) {
        let (p, q) = (r / total_ref, c / total_cur);
        let m = (p + q) / 2.0;
        left.push(relative_entropy(p, m));
        right.push(relative_entropy(q, m));
    }
    let divergence = accurate_sum(left) + accurate_sum(right);
    (divergence / 2.0).sqrt()
}
