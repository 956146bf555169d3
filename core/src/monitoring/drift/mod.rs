//! Drift: two-sample tests and distances between a reference and a current sample.
//!
//! Data comes in column by column ([`Column`]: numbers or labels; [`Embeddings`] for vectors).
//! [`compare_columns`] picks a test for a column the way Evidently's defaults do
//! ([`default_test`]: by type, number of distinct values and reference size) unless one is
//! named ([`TestSpec`]), runs it and returns a [`ColumnReport`]: the statistic or distance, the
//! p-value where the test has one, the threshold and whether the column drifted.
//! [`summarize`] turns the reports into the dataset's share of drifted columns, and
//! [`alert_decisions`] applies what alerts need on top: Benjamini–Hochberg control of the
//! false discovery rate across columns and a minimum effect size.
//!
//! Every statistic and p-value is computed as SciPy and Evidently compute it, so both give the
//! same numbers on the same data (checked against them in `tests/monitoring`).

mod binned;
mod categorical;
mod counts;
mod fdr;
mod kolmogorov;
mod ks;
mod mmd;
mod report;
#[cfg(test)]
mod tests;
mod wasserstein;

pub use fdr::{AlertDecision, AlertPolicy, alert_decisions, benjamini_hochberg};
pub use ks::KsOutcome;
pub use mmd::{Embeddings, MmdOutcome, mmd_permutations, mmd_test, mmd_test_until};
pub use report::{ColumnReport, DEFAULT_DRIFT_SHARE, DriftSummary, summarize};

use counts::CategoryCounts;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One column of a table: numbers or labels. Missing values are left out before this point.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers; NaN and infinities are refused.
    Numeric(Vec<f64>),
    /// Labels, compared as categories.
    Categorical(Vec<String>),
}

impl Column {
    /// Whether the column holds numbers or labels.
    pub fn kind(&self) -> ColumnKind {
        match self {
            Column::Numeric(_) => ColumnKind::Numeric,
            Column::Categorical(_) => ColumnKind::Categorical,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Column::Numeric(values) => values.len(),
            Column::Categorical(values) => values.len(),
        }
    }

    /// Whether the column has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A column's type as the tests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ColumnKind {
    Numeric,
    Categorical,
    /// Vectors ([`Embeddings`]), compared by [`compare_embeddings`].
    Embedding,
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ColumnKind::Numeric => "numeric",
            ColumnKind::Categorical => "categorical",
            ColumnKind::Embedding => "embedding",
        })
    }
}

/// The tests and distances, named as Evidently names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StatTest {
    /// Two-sample Kolmogorov–Smirnov (numeric); drift when `p <= threshold` (default 0.05).
    #[serde(rename = "ks")]
    Ks,
    /// Chi-squared on category counts; drift when `p < threshold` (default 0.05).
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Two-proportion Z-test, first category against the rest; drift when `p < threshold`
    /// (default 0.05).
    #[serde(rename = "z")]
    Z,
    /// Population stability index; drift when `psi >= threshold` (default 0.1).
    #[serde(rename = "psi")]
    Psi,
    /// Wasserstein distance divided by the reference's standard deviation (numeric); drift
    /// when `distance >= threshold` (default 0.1).
    #[serde(rename = "wasserstein")]
    Wasserstein,
    /// Jensen–Shannon distance; drift when `distance >= threshold` (default 0.1).
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Maximum mean discrepancy with a permutation test (embeddings only, see
    /// [`compare_embeddings`]); drift when `p <= threshold` (default 0.05).
    #[serde(rename = "mmd")]
    Mmd,
}

impl StatTest {
    /// Every test, in the order `--help` lists them.
    pub const ALL: [StatTest; 6] = [
        StatTest::Ks,
        StatTest::ChiSquare,
        StatTest::Z,
        StatTest::Psi,
        StatTest::Wasserstein,
        StatTest::JensenShannon,
    ];

    /// The name users write (Evidently's).
    pub fn name(self) -> &'static str {
        match self {
            StatTest::Ks => "ks",
            StatTest::ChiSquare => "chisquare",
            StatTest::Z => "z",
            StatTest::Psi => "psi",
            StatTest::Wasserstein => "wasserstein",
            StatTest::JensenShannon => "jensenshannon",
            StatTest::Mmd => "mmd",
        }
    }

    /// Evidently's default threshold.
    pub fn default_threshold(self) -> f64 {
        match self {
            StatTest::Ks | StatTest::ChiSquare | StatTest::Z | StatTest::Mmd => 0.05,
            StatTest::Psi | StatTest::Wasserstein | StatTest::JensenShannon => 0.1,
        }
    }

    /// Whether the test gives a p-value (compared below the threshold) rather than a distance
    /// (compared above it).
    pub fn has_p_value(self) -> bool {
        matches!(
            self,
            StatTest::Ks | StatTest::ChiSquare | StatTest::Z | StatTest::Mmd
        )
    }

    /// Whether the test applies to columns of this kind.
    pub fn applies_to(self, kind: ColumnKind) -> bool {
        match self {
            StatTest::Ks | StatTest::Wasserstein => kind == ColumnKind::Numeric,
            StatTest::ChiSquare | StatTest::Z | StatTest::Psi | StatTest::JensenShannon => {
                kind != ColumnKind::Embedding
            }
            StatTest::Mmd => kind == ColumnKind::Embedding,
        }
    }

    /// Whether `score` (the p-value, or the distance) means drift at `threshold`, with
    /// Evidently's comparison for each test.
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            StatTest::Ks | StatTest::Mmd => score <= threshold,
            StatTest::ChiSquare | StatTest::Z => score < threshold,
            StatTest::Psi | StatTest::Wasserstein | StatTest::JensenShannon => score >= threshold,
        }
    }
}

impl fmt::Display for StatTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StatTest {
    type Err = DriftError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StatTest::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| DriftError::UnknownTest {
                name: s.to_string(),
            })
    }
}

/// A test named for a column, with its threshold (the test's default when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestSpec {
    pub test: StatTest,
    pub threshold: Option<f64>,
}

/// Which sample a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Reference,
    Current,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Reference => "reference",
            Side::Current => "current",
        })
    }
}

/// Why a column could not be compared.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    #[error("column {column:?} has no values in the {side} sample")]
    EmptyColumn { column: String, side: Side },
    #[error("column {column:?}: {side} value #{index} is {value}, not a finite number")]
    NotFinite {
        column: String,
        side: Side,
        index: usize,
        value: f64,
    },
    #[error(
        "column {column:?} is {reference} in the reference but {current} in the current sample"
    )]
    KindMismatch {
        column: String,
        reference: ColumnKind,
        current: ColumnKind,
    },
    #[error("column {column:?}: test {test} does not apply to {kind} columns")]
    TestNotApplicable {
        column: String,
        test: StatTest,
        kind: ColumnKind,
    },
    #[error("column {column:?}: threshold {threshold} for {test} must be {expected}")]
    InvalidThreshold {
        column: String,
        test: StatTest,
        threshold: f64,
        expected: &'static str,
    },
    #[error(
        "unknown drift test {name:?} (expected one of: ks, chisquare, z, psi, wasserstein, jensenshannon)"
    )]
    UnknownTest { name: String },
    #[error("embeddings of dimension {dimension} cannot hold {values} values")]
    EmbeddingShape { dimension: usize, values: usize },
    #[error("the {side} embeddings have no rows")]
    EmptyEmbeddings { side: Side },
    #[error("the reference embeddings have dimension {reference}, the current ones {current}")]
    EmbeddingDimensions { reference: usize, current: usize },
    #[error("{side} embedding row {row} holds {value}, not a finite number")]
    NonFiniteEmbedding { side: Side, row: usize, value: f64 },
}

impl DriftError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            DriftError::EmptyColumn { .. } => "EmptyColumn",
            DriftError::NotFinite { .. } => "NotFinite",
            DriftError::KindMismatch { .. } => "KindMismatch",
            DriftError::TestNotApplicable { .. } => "TestNotApplicable",
            DriftError::InvalidThreshold { .. } => "InvalidThreshold",
            DriftError::UnknownTest { .. } => "UnknownTest",
            DriftError::EmbeddingShape { .. }
            | DriftError::EmptyEmbeddings { .. }
            | DriftError::EmbeddingDimensions { .. }
            | DriftError::NonFiniteEmbedding { .. } => "InvalidEmbeddings",
        }
    }
}

/// Evidently's default test for a column: with a reference of at most 1,000 values,
/// Kolmogorov–Smirnov for numbers with more than 5 distinct values, else chi-squared (more
/// than 2 categories) or the Z-test; with a larger reference, the normed Wasserstein distance
/// for numbers with more than 5 distinct values, else Jensen–Shannon. `unique_values` counts
/// the distinct values of both samples together.
pub fn default_test(kind: ColumnKind, reference_len: usize, unique_values: usize) -> StatTest {
    let few_values = kind == ColumnKind::Categorical || unique_values <= 5;
    match (reference_len <= 1000, few_values) {
        (true, false) => StatTest::Ks,
        (true, true) if unique_values > 2 => StatTest::ChiSquare,
        (true, true) => StatTest::Z,
        (false, false) => StatTest::Wasserstein,
        (false, true) => StatTest::JensenShannon,
    }
}

/// What a test measured on one column, before its threshold is applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestOutcome {
    /// The test's statistic (D, chi-squared, z) or the distance.
    pub statistic: f64,
    /// The p-value, for tests that have one.
    pub p_value: Option<f64>,
    /// The size of the difference whatever the sample size: D for Kolmogorov–Smirnov,
    /// Cramér's V for chi-squared, the difference of proportions for Z, the distance itself
    /// for the others.
    pub effect_size: f64,
}

impl TestOutcome {
    /// The number the threshold is compared with: the p-value, or the distance.
    pub fn score(&self) -> f64 {
        self.p_value.unwrap_or(self.statistic)
    }
}

/// Compares one column of the reference with the same column of the current sample, with the
/// named test or Evidently's default.
pub fn compare_columns(
    column: &str,
    reference: Column,
    current: Column,
    spec: Option<TestSpec>,
) -> Result<ColumnReport, DriftError> {
    let kind = reference.kind();
    if current.kind() != kind {
        return Err(DriftError::KindMismatch {
            column: column.to_string(),
            reference: kind,
            current: current.kind(),
        });
    }
    for (side, data) in [(Side::Reference, &reference), (Side::Current, &current)] {
        if data.is_empty() {
            return Err(DriftError::EmptyColumn {
                column: column.to_string(),
                side,
            });
        }
        if let Column::Numeric(values) = data
            && let Some(index) = values.iter().position(|v| !v.is_finite())
        {
            return Err(DriftError::NotFinite {
                column: column.to_string(),
                side,
                index,
                value: values[index],
            });
        }
    }
    let (reference_size, current_size) = (reference.len(), current.len());
    let prepared = Prepared::new(reference, current);
    let test = match spec {
        Some(spec) => spec.test,
        None => default_test(kind, reference_size, prepared.unique_values()),
    };
    if !test.applies_to(kind) {
        return Err(DriftError::TestNotApplicable {
            column: column.to_string(),
            test,
            kind,
        });
    }
    let threshold = spec
        .and_then(|s| s.threshold)
        .unwrap_or(test.default_threshold());
    check_threshold(column, test, threshold)?;
    let outcome = prepared.run(test);
    Ok(ColumnReport {
        column: column.to_string(),
        kind,
        test,
        statistic: outcome.statistic,
        p_value: outcome.p_value,
        effect_size: outcome.effect_size,
        threshold,
        score: outcome.score(),
        drifted: test.drifted(outcome.score(), threshold),
        reference_size,
        current_size,
    })
}

/// Compares a model's embeddings of the current inputs with its embeddings of the reference's
/// by the maximum mean discrepancy ([`mmd_test_until`]: up to `permutations` relabellings
/// drawn from `seed`, stopping once `enough` reached the observed discrepancy). The effect
/// size is the discrepancy beyond chance, `√max(0, MMD² − E₀[MMD²])` with the null's mean
/// from the permutations: the biased MMD² of two samples of one distribution is not 0 but
/// shrinks with their size, and the effect should not.
pub fn compare_embeddings(
    column: &str,
    reference: &Embeddings,
    current: &Embeddings,
    permutations: usize,
    seed: u64,
    enough: usize,
) -> Result<ColumnReport, DriftError> {
    let outcome = mmd_test_until(reference, current, permutations, seed, enough)?;
    let threshold = StatTest::Mmd.default_threshold();
    Ok(ColumnReport {
        column: column.to_string(),
        kind: ColumnKind::Embedding,
        test: StatTest::Mmd,
        statistic: outcome.statistic,
        p_value: Some(outcome.p_value),
        effect_size: (outcome.statistic - outcome.null_mean).max(0.0).sqrt(),
        threshold,
        score: outcome.p_value,
        drifted: StatTest::Mmd.drifted(outcome.p_value, threshold),
        reference_size: reference.rows(),
        current_size: current.rows(),
    })
}

fn check_threshold(column: &str, test: StatTest, threshold: f64) -> Result<(), DriftError> {
    let (ok, expected) = if test.has_p_value() {
        ((0.0..=1.0).contains(&threshold), "between 0 and 1")
    } else {
        (
            threshold.is_finite() && threshold >= 0.0,
            "a finite number >= 0",
        )
    };
    if ok {
        Ok(())
    } else {
        Err(DriftError::InvalidThreshold {
            column: column.to_string(),
            test,
            threshold,
            expected,
        })
    }
}

/// A column's two samples in the form the tests read: numbers sorted, labels counted.
enum Prepared {
    Numeric {
        reference: Vec<f64>,
        current: Vec<f64>,
    },
    Categorical(CategoryCounts),
}

impl Prepared {
    fn new(reference: Column, current: Column) -> Self {
        match (reference, current) {
            (Column::Numeric(reference), Column::Numeric(current)) => Prepared::Numeric {
                reference: sorted(reference),
                current: sorted(current),
            },
            (Column::Categorical(reference), Column::Categorical(current)) => {
                Prepared::Categorical(CategoryCounts::from_labels(&reference, &current))
            }
            // Kinds were checked equal before; label both as categories if they ever differ.
            (reference, current) => Prepared::Categorical(CategoryCounts::from_labels(
                &labels(reference),
                &labels(current),
            )),
        }
    }

    fn unique_values(&self) -> usize {
        match self {
            Prepared::Numeric { reference, current } => count_unique(reference, current),
            Prepared::Categorical(counts) => counts.len(),
        }
    }

    fn run(&self, test: StatTest) -> TestOutcome {
        let counts = || match self {
            Prepared::Numeric { reference, current } => {
                CategoryCounts::from_sorted(reference, current)
            }
            Prepared::Categorical(counts) => counts.clone(),
        };
        let bins = || match self {
            Prepared::Numeric { reference, current } => binned::bin_numeric(reference, current),
            Prepared::Categorical(counts) => binned::shares(counts),
        };
        match (test, self) {
            (StatTest::Ks, Prepared::Numeric { reference, current }) => {
                let outcome = ks::ks_2samp_sorted(reference, current);
                TestOutcome {
                    statistic: outcome.statistic,
                    p_value: Some(outcome.p_value),
                    effect_size: outcome.statistic,
                }
            }
            (StatTest::Wasserstein, Prepared::Numeric { reference, current }) => {
                let distance = wasserstein::wasserstein_normed(reference, current);
                TestOutcome {
                    statistic: distance,
                    p_value: None,
                    effect_size: distance,
                }
            }
            (StatTest::ChiSquare, _) => counts_outcome(categorical::chi_square(&counts())),
            (StatTest::Z, _) => counts_outcome(categorical::z_test(&counts())),
            (StatTest::Psi, _) => {
                let psi = binned::psi(bins());
                TestOutcome {
                    statistic: psi,
                    p_value: None,
                    effect_size: psi,
                }
            }
            (StatTest::JensenShannon, _) => {
                let distance = binned::jensen_shannon(&bins());
                TestOutcome {
                    statistic: distance,
                    p_value: None,
                    effect_size: distance,
                }
            }
            // Applicability was checked before; a numeric-only test on labels, or the
            // embeddings' test on a column, measures nothing.
            (StatTest::Ks | StatTest::Wasserstein, Prepared::Categorical(_))
            | (StatTest::Mmd, _) => TestOutcome {
                statistic: f64::NAN,
                p_value: None,
                effect_size: f64::NAN,
            },
        }
    }
}

fn counts_outcome(outcome: categorical::CountsOutcome) -> TestOutcome {
    TestOutcome {
        statistic: outcome.statistic,
        p_value: Some(outcome.p_value),
        effect_size: outcome.effect_size,
    }
}

fn labels(column: Column) -> Vec<String> {
    match column {
        Column::Numeric(values) => values.iter().map(f64::to_string).collect(),
        Column::Categorical(values) => values,
    }
}

/// Sorts ascending, with `-0.0` made `0.0` so that equal numbers sit together. Large samples
/// go through a least-significant-digit radix sort on the numbers' bits (linear time, a few
/// times faster than a comparison sort at a million values); small ones through the standard
/// sort.
fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    /// Below this many values the comparison sort is as fast.
    const RADIX_MIN: usize = 1 << 14;
    values.iter_mut().for_each(|v| *v += 0.0);
    if values.len() < RADIX_MIN {
        values.sort_unstable_by(f64::total_cmp);
        return values;
    }
    // Map each number to an unsigned key with the same order: flip every bit of a negative
    // number, only the sign bit of a positive one.
    let mut keys: Vec<u64> = values
        .iter()
        .map(|v| {
            let bits = v.to_bits();
            if bits >> 63 == 1 {
                !bits
            } else {
                bits | (1 << 63)
            }
        })
        .collect();
    drop(values);
    const DIGIT_BITS: usize = 16;
    const BUCKETS: usize = 1 << DIGIT_BITS;
    let mut counts = vec![[0usize; 4]; BUCKETS];
    for key in &keys {
        for (digit, bucket) in digits(*key, DIGIT_BITS).into_iter().enumerate() {
            counts[bucket][digit] += 1;
        }
    }
    let mut scratch = vec![0u64; keys.len()];
    for digit in 0..4 {
        // A digit every key shares leaves the order as it is.
        if counts.iter().any(|c| c[digit] == keys.len()) {
            continue;
        }
        let mut offsets = vec![0usize; BUCKETS];
        let mut total = 0;
        for (bucket, offset) in offsets.iter_mut().enumerate() {
            *offset = total;
            total += counts[bucket][digit];
        }
        for key in &keys {
            let bucket = ((key >> (digit * DIGIT_BITS)) as usize) & (BUCKETS - 1);
            scratch[offsets[bucket]] = *key;
            offsets[bucket] += 1;
        }
        std::mem::swap(&mut keys, &mut scratch);
    }
    keys.into_iter()
        .map(|key| {
            f64::from_bits(if key >> 63 == 1 {
                key & !(1 << 63)
            } else {
                !key
            })
        })
        .collect()
}

/// The four 16-bit digits of a key, least significant first.
fn digits(key: u64, digit_bits: usize) -> [usize; 4] {
    let mask = (1u64 << digit_bits) - 1;
    std::array::from_fn(|digit| ((key >> (digit * digit_bits)) & mask) as usize)
}

/// Distinct values over two sorted samples.
fn count_unique(a: &[f64], b: &[f64]) -> usize {
    let (mut i, mut j, mut unique) = (0, 0, 0);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(&u), Some(&v)) => u.min(v),
            (Some(&u), None) => u,
            (None, Some(&v)) => v,
            (None, None) => break,
        };
        while i < a.len() && a[i] == x {
            i += 1;
        }
        while j < b.len() && b[j] == x {
            j += 1;
        }
        unique += 1;
    }
    unique
}
