//! Metrics of the hard decision: the predicted class of a record is the argmax of its scores.
//!
//! - **Predicted class**: the index of the highest score; on a tie the lowest index wins (what
//!   `numpy.argmax` does, so a row of equal scores predicts class 0).
//! - **Confusion matrix**: `matrix[t][p]` counts the records of true class `t` predicted as `p`.
//! - **Accuracy**: the diagonal over the number of records.
//! - **Precision** of class `c`: `tp / predicted(c)`; **recall**: `tp / support(c)`; **F1**:
//!   `2 tp / (support(c) + predicted(c))`, which is the harmonic mean of the two written in
//!   counts. A zero denominator gives 0 (scikit-learn's `zero_division=0`).
//! - **Macro average**: the unweighted mean over the classes that occur, in the truth or in the
//!   predictions (scikit-learn's `labels=None`): a class the data never mentions has no
//!   precision or recall to speak of and would only pull the mean towards 0. **Weighted
//!   average**: the mean weighted by support, so only classes in the truth count.

/// The index of the first maximum of `row`.
pub fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (j, &score) in row.iter().enumerate().skip(1) {
        if score > row[best] {
            best = j;
        }
    }
    best
}

/// `matrix[true][predicted]` over `classes` classes.
pub fn confusion_matrix(labels: &[usize], predicted: &[usize], classes: usize) -> Vec<Vec<u64>> {
    let mut matrix = vec![vec![0u64; classes]; classes];
    for (&t, &p) in labels.iter().zip(predicted) {
        matrix[t][p] += 1;
    }
    matrix
}

/// Precision, recall and F1 of one class, or an average of them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrecisionRecall {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// What the confusion matrix says about one class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassCounts {
    pub true_positives: u64,
    /// Records of this class (row sum).
    pub support: u64,
    /// Records predicted as this class (column sum).
    pub predicted: u64,
}

impl ClassCounts {
    pub fn of_every_class(matrix: &[Vec<u64>]) -> Vec<ClassCounts> {
        (0..matrix.len())
            .map(|c| ClassCounts {
                true_positives: matrix[c][c],
                support: matrix[c].iter().sum(),
                predicted: matrix.iter().map(|row| row[c]).sum(),
            })
            .collect()
    }

    pub fn precision_recall(&self) -> PrecisionRecall {
        let tp = self.true_positives;
        PrecisionRecall {
            precision: ratio_or_zero(tp, self.predicted),
            recall: ratio_or_zero(tp, self.support),
            f1: ratio_or_zero(2 * tp, self.support + self.predicted),
        }
    }
}

/// The trace of the matrix over its sum.
pub fn accuracy(matrix: &[Vec<u64>]) -> f64 {
    let correct: u64 = (0..matrix.len()).map(|c| matrix[c][c]).sum();
    let total: u64 = matrix.iter().flatten().sum();
    ratio_or_zero(correct, total)
}

/// The macro average over the classes that occur in the truth or the predictions.
pub fn macro_average(counts: &[ClassCounts]) -> PrecisionRecall {
    let occurring: Vec<PrecisionRecall> = counts
        .iter()
        .filter(|c| c.support > 0 || c.predicted > 0)
        .map(ClassCounts::precision_recall)
        .collect();
    let n = occurring.len() as f64;
    let mean = |f: fn(&PrecisionRecall) -> f64| {
        if occurring.is_empty() {
            0.0
        } else {
            occurring.iter().map(f).sum::<f64>() / n
        }
    };
    PrecisionRecall {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
    }
}

/// The average weighted by support.
pub fn weighted_average(counts: &[ClassCounts]) -> PrecisionRecall {
    let total: u64 = counts.iter().map(|c| c.support).sum();
    let mean = |f: fn(&PrecisionRecall) -> f64| {
        if total == 0 {
            return 0.0;
        }
        let sum: f64 = counts
            .iter()
            .map(|c| c.support as f64 * f(&c.precision_recall()))
            .sum();
        sum / total as f64
    };
    PrecisionRecall {
        precision: mean(|m| m.precision),
        recall: mean(|m| m.recall),
        f1: mean(|m| m.f1),
    }
}

fn ratio_or_zero(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        0.0
    } else {
        numerator as f64 / denominator as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_breaks_ties_towards_the_lowest_index() {
        assert_eq!(argmax(&[0.2, 0.5, 0.3]), 1);
        assert_eq!(argmax(&[0.4, 0.4, 0.2]), 0);
        assert_eq!(argmax(&[0.1, 0.45, 0.45]), 1);
        assert_eq!(argmax(&[1.0, 1.0, 1.0]), 0);
        // -0.0 == 0.0, as for numpy.
        assert_eq!(argmax(&[-0.0, 0.0]), 0);
    }

    /// truth 0 0 0 1 1 2, predicted 0 0 1 1 0 0: class 2 is never predicted.
    fn small_matrix() -> Vec<Vec<u64>> {
        confusion_matrix(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 0, 0], 3)
    }

    #[test]
    fn the_confusion_matrix_has_truth_in_rows() {
        assert_eq!(
            small_matrix(),
            vec![vec![2, 1, 0], vec![1, 1, 0], vec![1, 0, 0]]
        );
        assert_eq!(accuracy(&small_matrix()), 3.0 / 6.0);
    }

    #[test]
    fn per_class_figures_by_hand() {
        let counts = ClassCounts::of_every_class(&small_matrix());
        let prf: Vec<PrecisionRecall> = counts.iter().map(|c| c.precision_recall()).collect();
        // Class 0: tp 2, predicted 4, support 3.
        assert_eq!(prf[0].precision, 2.0 / 4.0);
        assert_eq!(prf[0].recall, 2.0 / 3.0);
        assert_eq!(prf[0].f1, 4.0 / 7.0);
        // Class 1: tp 1, predicted 2, support 2.
        assert_eq!(prf[1].precision, 0.5);
        assert_eq!(prf[1].recall, 0.5);
        assert_eq!(prf[1].f1, 0.5);
        // Class 2 is never predicted: precision 0/0 is 0, recall 0/1.
        assert_eq!(
            prf[2],
            PrecisionRecall {
                precision: 0.0,
                recall: 0.0,
                f1: 0.0
            }
        );
    }

    #[test]
    fn averages_by_hand() {
        let counts = ClassCounts::of_every_class(&small_matrix());
        let m = macro_average(&counts);
        assert!((m.precision - (0.5 + 0.5 + 0.0) / 3.0).abs() < 1e-15);
        assert!((m.recall - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-15);
        assert!((m.f1 - (4.0 / 7.0 + 0.5) / 3.0).abs() < 1e-15);
        let w = weighted_average(&counts);
        assert!((w.precision - (3.0 * 0.5 + 2.0 * 0.5) / 6.0).abs() < 1e-15);
        assert!((w.recall - (3.0 * 2.0 / 3.0 + 2.0 * 0.5) / 6.0).abs() < 1e-15);
        assert!((w.f1 - (3.0 * 4.0 / 7.0 + 2.0 * 0.5) / 6.0).abs() < 1e-15);
    }

    #[test]
    fn a_class_absent_from_truth_and_predictions_is_left_out_of_the_macro_average() {
        // Four classes; class 3 never occurs anywhere.
        let matrix = confusion_matrix(&[0, 1, 2], &[0, 1, 1], 4);
        let counts = ClassCounts::of_every_class(&matrix);
        let m = macro_average(&counts);
        // Over classes 0, 1, 2: precision 1, 1/2, 0.
        assert!((m.precision - 0.5).abs() < 1e-15);
        // A class predicted but absent from the truth still counts (precision 0, recall 0).
        let matrix = confusion_matrix(&[0, 0], &[0, 1], 2);
        let m = macro_average(&ClassCounts::of_every_class(&matrix));
        assert_eq!(m.precision, 0.5);
        assert_eq!(m.recall, 0.25);
        let w = weighted_average(&ClassCounts::of_every_class(&matrix));
        assert_eq!(w.recall, 0.5);
    }
}
