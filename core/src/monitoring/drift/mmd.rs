//! Maximum mean discrepancy between two sets of embeddings, with a Gaussian (RBF) kernel whose
//! bandwidth is the median distance between all pooled points, and a permutation test for its
//! p-value. Deterministic: the permutations come from a ChaCha generator seeded by the caller,
//! and [`mmd_permutations`] gives them out so another implementation can replay them.

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

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.dimension..(i + 1) * self.dimension]
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
    /// `(1 + #{permuted statistic >= observed}) / (1 + permutations)`.
    pub p_value: f64,
    /// Number of permutations drawn.
    pub permutations: usize,
}

/// Runs the test: MMD² of `reference` against `current`, compared with its value under
/// `permutations` random relabellings of the pooled rows drawn from `seed`.
pub fn mmd_test(
    reference: &Embeddings,
    current: &Embeddings,
    permutations: usize,
    seed: u64,
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

    let identity: Vec<usize> = (0..total).collect();
    let statistic = mmd_squared(&kernel, total, &identity, n);
    let mut at_least = 0usize;
    for order in mmd_permutations(total, permutations, seed) {
        if mmd_squared(&kernel, total, &order, n) >= statistic {
            at_least += 1;
        }
    }
    let p_value = (1 + at_least) as f64 / (1 + permutations) as f64;
    Ok(MmdOutcome {
        statistic,
        bandwidth,
        p_value,
        permutations,
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
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..permutations)
        .map(|_| {
            let mut order: Vec<usize> = (0..total).collect();
            for i in (1..total).rev() {
                let bound = (i + 1) as u128;
                let j = ((u128::from(rng.next_u64()) * bound) >> 64) as usize;
                order.swap(i, j);
            }
            order
        })
        .collect()
}

/// MMD² of the first `n` entries of `order` against the rest.
fn mmd_squared(kernel: &[f64], total: usize, order: &[usize], n: usize) -> f64 {
    let mut in_reference = vec![false; total];
    for &i in &order[..n] {
        in_reference[i] = true;
    }
    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
    for i in 0..total {
        let row = &kernel[i * total..(i + 1) * total];
        let (mut to_x, mut to_y) = (0.0, 0.0);
        for (value, &x) in row.iter().zip(&in_reference) {
            if x {
                to_x += value;
            } else {
                to_y += value;
            }
        }
        if in_reference[i] {
            xx += to_x;
            xy += to_y;
        } else {
            yy += to_y;
        }
    }
    let (nx, ny) = (n as f64, (total - n) as f64);
    xx / (nx * nx) + yy / (ny * ny) - 2.0 * xy / (nx * ny)
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
