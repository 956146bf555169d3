//! Per-value counts on both sides, the input of the tests that treat a column as categories
//! (chi-squared, Z) and of PSI and Jensen–Shannon when a column has few distinct values.

use std::collections::HashMap;

/// How often each distinct value occurs in the reference and in the current sample, keys in
/// ascending order (numbers by value, strings by code point).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CategoryCounts {
    pub reference: Vec<u64>,
    pub current: Vec<u64>,
}

impl CategoryCounts {
    /// Counts of two numeric samples, each sorted ascending (`-0.0` and `0.0` are one value).
    pub fn from_sorted(reference: &[f64], current: &[f64]) -> Self {
        let (mut i, mut j) = (0, 0);
        let mut counts = Self {
            reference: Vec::new(),
            current: Vec::new(),
        };
        while i < reference.len() || j < current.len() {
            let x = match (reference.get(i), current.get(j)) {
                (Some(&u), Some(&v)) => u.min(v),
                (Some(&u), None) => u,
                (None, Some(&v)) => v,
                (None, None) => break,
            };
            let (start_i, start_j) = (i, j);
            while i < reference.len() && reference[i] == x {
                i += 1;
            }
            while j < current.len() && current[j] == x {
                j += 1;
            }
            counts.reference.push((i - start_i) as u64);
            counts.current.push((j - start_j) as u64);
        }
        counts
    }

    /// Counts of two samples of labels.
    pub fn from_labels(reference: &[String], current: &[String]) -> Self {
        let mut map: HashMap<&str, (u64, u64)> = HashMap::new();
        for label in reference {
            map.entry(label.as_str()).or_default().0 += 1;
        }
        for label in current {
            map.entry(label.as_str()).or_default().1 += 1;
        }
        let mut keys: Vec<(&str, (u64, u64))> = map.into_iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Self {
            reference: keys.iter().map(|(_, (r, _))| *r).collect(),
            current: keys.iter().map(|(_, (_, c))| *c).collect(),
        }
    }

    /// Number of distinct values over both samples.
    pub fn len(&self) -> usize {
        self.reference.len()
    }

    /// Number of distinct values in the reference.
    pub fn reference_unique(&self) -> usize {
        self.reference.iter().filter(|&&c| c > 0).count()
    }

    /// Number of distinct values in the current sample.
    pub fn current_unique(&self) -> usize {
        self.current.iter().filter(|&&c| c > 0).count()
    }
}

/// A running sum accurate to the last bits whatever the order and length (Neumaier's
/// compensation), so that long sums agree with the reference's pairwise ones far below the
/// tolerance.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AccurateSum {
    sum: f64,
    compensation: f64,
}

impl AccurateSum {
    pub fn add(&mut self, v: f64) {
        let t = self.sum + v;
        if self.sum.abs() >= v.abs() {
            self.compensation += (self.sum - t) + v;
        } else {
            self.compensation += (v - t) + self.sum;
        }
        self.sum = t;
    }

    pub fn value(&self) -> f64 {
        if !self.sum.is_finite() {
            // An infinite term: the compensation is meaningless (inf - inf).
            return self.sum;
        }
        self.sum + self.compensation
    }
}

/// [`AccurateSum`] of a sequence.
pub(crate) fn accurate_sum(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut sum = AccurateSum::default();
    values.into_iter().for_each(|v| sum.add(v));
    sum.value()
}
