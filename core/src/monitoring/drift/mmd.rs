//! Maximum mean discrepancy between two sets of embeddings, with a Gaussian (RBF) kernel whose
//! bandwidth is the median distance between all pooled points, and a permutation test for its
//! p-value. Deterministic: the permutations come from a ChaCha generator seeded by the caller,
//! and [`mmd_permutations`] gives them out so another implementation can replay them.
//!
//! [`mmd_test_until`] stops drawing once enough permuted statistics reached the observed one
//! (Besag and Clifford's sequential Monte Carlo test, 1991): a window like its reference is
//! judged after a few dozen permutations instead of hundreds, and only a discrepancy that
//! chance rarely reaches costs the whole budget.

use super::DriftError;
use super::Side;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// Rows of equal-length vectors, stored row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    dimension: usize,
    values: Vec<f64>,
}

impl Embeddings {
    /// `values.len() / dimension` rows of `dimension` numbers each.
    pub fn new(dimension: usize, values: Vec<f64>) -> Result<Self, DriftError> {
        if dimension == 0 || !values.len().is_multiple_of(dimension) {
            return Err(DriftError::EmbeddingShape {
                dimension,
                values: values.len(),
            });
        }
        Ok(Self { dimension, values })
    }

    /// Number of vectors.
    pub fn rows(&self) -> usize {
        self.values.len() / self.dimension
    }

    /// Length of each vector.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Vector `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dimension..(i + 1) * self.dimension]
    }

    /// At most `max` of the vectors, evenly spaced (row `k` of the result is vector
    /// `⌊k · rows / max⌋`); all of them when there are no more than `max`.
    pub fn evenly(&self, max: usize) -> Embeddings {
        let rows = self.rows();
        if rows <= max {
            return self.clone();
        }
        let values = (0..max)
            .flat_map(|k| self.row((k as u128 * rows as u128 / max as u128) as usize))
            .copied()
            .collect();
        Embeddings {
            dimension: self.dimension,
            values,
        }
    }
}

/// The squared MMD of two embedding sets and its permutation p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MmdOutcome {
    /// Biased (V-statistic) estimate of MMD²: mean kernel within the reference, plus within the
    /// current set, minus twice between them.
    pub statistic: f64,
    /// The kernel's bandwidth σ in `exp(-|x - y|² / 2σ²)`: the median pooled distance (1 when
    /// that is 0, e.g. for identical points).
    pub bandwidth: f64,
    /// `(1 + #{permuted statistic >= observed}) / (1 + permutations)`; for a test stopped
    /// after `h` permuted statistics reached the observed one, at the `l`-th permutation,
    /// `h / l`.
    pub p_value: f64,
    /// The mean of the permuted statistics: what MMD² comes to by chance between samples of
    /// these sizes from one distribution (the biased estimate's floor).
    pub null_mean: f64,
    /// Number of permutations drawn.
    pub permutations: usize,
}

/// [`mmd_test_until`] that never stops early: every one of `permutations` is drawn.
pub fn mmd_test(
    reference: &Embeddings,
    current: &Embeddings,
    permutations: usize,
    seed: u64,
) -> Result<MmdOutcome, DriftError> {
    mmd_test_until(reference, current, permutations, seed, usize::MAX)
}

/// Runs the test: MMD² of `reference` against `current`, compared with its value under up to
/// `permutations` random relabellings of the pooled rows drawn from `seed`, stopping once
/// `enough` of them reached it.
pub fn mmd_test_until(
    reference: &Embeddings,
    current: &Embeddings,
    permutations: usize,
    seed: u64,
    enough: usize,
) -> Result<MmdOutcome, DriftError> {
    check(reference, Side::Reference)?;
    check(current, Side::Current)?;
    if reference.dimension != current.dimension {
        return Err(DriftError::EmbeddingDimensions {
            reference: reference.dimension,
            current: current.dimension,
        });
    }
    let (n, total) = (reference.rows(), reference.rows() + current.rows());
    let row = |i: usize| {
        if i < n {
            reference.row(i)
        } else {
            current.row(i - n)
        }
    };
    let mut squared = vec![0.0f64; total * total];
    for i in 0..total {
        for j in (i + 1)..total {
            let d: f64 = row(i)
                .iter()
                .zip(row(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            squared[i * total + j] = d;
            squared[j * total + i] = d;
        }
    }
    let mut distances: Vec<f64> = (0..total)
        .flat_map(|i| ((i + 1)..total).map(move |j| (i, j)))
        .map(|(i, j)| squared[i * total + j].sqrt())
        .collect();
    let median = median(&mut distances);
    let bandwidth = if median > 0.0 { median } else { 1.0 };
    let kernel: Vec<f64> = squared
        .iter()
        .map(|d| (-d / (2.0 * bandwidth * bandwidth)).exp())
        .collect();

    let sums = KernelSums::new(&kernel, total);
    let identity: Vec<usize> = (0..total).collect();
    let statistic = sums.mmd_squared(&kernel, &identity, n);
    let (mut at_least, mut drawn, mut null_sum) = (0usize, 0usize, 0.0);
    for order in Permutations::new(total, seed).take(permutations) {
        let permuted = sums.mmd_squared(&kernel, &order, n);
        null_sum += permuted;
        drawn += 1;
        if permuted >= statistic {
            at_least += 1;
            if at_least >= enough {
                break;
            }
        }
    }
    let p_value = if at_least >= enough {
        at_least as f64 / drawn as f64
    } else {
        (1 + at_least) as f64 / (1 + drawn) as f64
    };
    Ok(MmdOutcome {
        statistic,
        bandwidth,
        p_value,
        null_mean: if drawn > 0 {
            null_sum / drawn as f64
        } else {
            f64::NAN
        },
        permutations: drawn,
    })
}

fn check(embeddings: &Embeddings, side: Side) -> Result<(), DriftError> {
    if embeddings.rows() == 0 {
        return Err(DriftError::EmptyEmbeddings { side });
    }
    if let Some(index) = embeddings.values.iter().position(|v| !v.is_finite()) {
        return Err(DriftError::NonFiniteEmbedding {
            side,
            row: index / embeddings.dimension,
            value: embeddings.values[index],
        });
    }
    Ok(())
}

/// The permutations the test draws: each a shuffled order of `0..total` (Fisher–Yates, indices
/// drawn by the widening-multiply rule from a ChaCha8 stream seeded with `seed`); the first
/// `reference.rows()` entries of an order are the relabelled reference.
pub fn mmd_permutations(total: usize, permutations: usize, seed: u64) -> Vec<Vec<usize>> {
    Permutations::new(total, seed).take(permutations).collect()
}

/// The endless stream of [`mmd_permutations`], drawn as they are needed.
struct Permutations {
    rng: ChaCha8Rng,
    total: usize,
}

impl Permutations {
    fn new(total: usize, seed: u64) -> Permutations {
        Permutations {
            rng: ChaCha8Rng::seed_from_u64(seed),
            total,
        }
    }
}

impl Iterator for Permutations {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.total).collect();
        for i in (1..self.total).rev() {
            let bound = (i + 1) as u128;
            let j = ((u128::from(self.rng.next_u64()) * bound) >> 64) as usize;
            order.swap(i, j);
        }
        Some(order)
    }
}

/// What every relabelling shares: the kernel matrix's row sums and total. With them, MMD² of
/// a split needs only the sum within the reference side (`xx`): the reference's row sums give
/// `xx + xy`, and the total `xx + 2xy + yy`. That is a quarter of the work of summing the
/// whole matrix per permutation, when the two sides are of equal size.
struct KernelSums {
    total: usize,
    rows: Vec<f64>,
    all: f64,
}

impl KernelSums {
    fn new(kernel: &[f64], total: usize) -> KernelSums {
        let rows: Vec<f64> = kernel
            .chunks(total.max(1))
            .map(|r| r.iter().sum())
            .collect();
        let all = rows.iter().sum();
        KernelSums { total, rows, all }
    }

    /// MMD² of the first `n` entries of `order` against the rest.
    fn mmd_squared(&self, kernel: &[f64], order: &[usize], n: usize) -> f64 {
        let side = &order[..n];
        let mut xx = 0.0;
        for &i in side {
            let row = &kernel[i * self.total..(i + 1) * self.total];
            xx += side.iter().map(|&j| row[j]).sum::<f64>();
        }
        let to_any: f64 = side.iter().map(|&i| self.rows[i]).sum();
        let xy = to_any - xx;
        let yy = self.all - 2.0 * to_any + xx;
        let (nx, ny) = (n as f64, (self.total - n) as f64);
        xx / (nx * nx) + yy / (ny * ny) - 2.0 * xy / (nx * ny)
    }
}

/// The median (the mean of the two middle values for an even count).
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let (_, upper, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if !values.len().is_multiple_of(2) {
        return upper;
    }
    let lower = values[..mid]
        .iter()
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    (lower + upper) / 2.0
}
