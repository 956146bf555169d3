//! Log loss (cross-entropy) of the scores read as probabilities.
//!
//! The mean over records of `-ln(p)`, `p` the score of the record's true class clipped to
//! `[eps, 1 - eps]` (`eps` = [`f64::EPSILON`]) so that a confident mistake costs about 36, not
//! infinity. As in scikit-learn 1.9, rows are **not** renormalised (versions before 1.5 divided
//! each row by its sum).
//!
//! Only probabilities have a log loss: when a score lies outside `[0, 1]` (scikit-learn raises)
//! or a row does not sum to 1 within [`ROW_SUM_TOLERANCE`] (scikit-learn warns "The y_prob
//! values do not sum to one"), the log loss is `None`. Raw scores (logits, margins) fall there.

/// How far a row's sum may be from 1: scikit-learn's test, `isclose(sum, 1, rtol=sqrt(eps))`
/// with numpy's default absolute tolerance of 1e-8.
pub const ROW_SUM_TOLERANCE: f64 = 1e-8 + 1.490_116_119_384_765_6e-8;

/// The log loss of `scores` (`labels.len()` rows of `classes`), `None` when they are not
/// probabilities.
pub fn log_loss(labels: &[usize], scores: &[f64], classes: usize) -> Option<f64> {
    if labels.is_empty() || !are_probabilities(scores, classes) {
        return None;
    }
    let total: f64 = labels
        .iter()
        .enumerate()
        .map(|(i, &label)| record_loss(scores[i * classes + label]))
        .sum();
    Some(total / labels.len() as f64)
}

/// The loss of one record whose true class was given probability `p`: `-ln(p)`, `p` clipped
/// to `[eps, 1 - eps]`.
pub fn record_loss(p: f64) -> f64 {
    -p.clamp(f64::EPSILON, 1.0 - f64::EPSILON).ln()
}

/// Whether every score is in `[0, 1]` and every row of `classes` scores sums to 1 within
/// [`ROW_SUM_TOLERANCE`]: the scores have a log loss.
pub fn are_probabilities(scores: &[f64], classes: usize) -> bool {
    scores.iter().all(|&s| (0.0..=1.0).contains(&s))
        && scores
            .chunks(classes)
            .all(|row| (row.iter().sum::<f64>() - 1.0).abs() <= ROW_SUM_TOLERANCE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tolerance_is_sklearns() {
        assert_eq!(ROW_SUM_TOLERANCE, 1e-8 + f64::EPSILON.sqrt());
    }

    #[test]
    fn log_loss_by_hand() {
        let scores = [0.9, 0.1, 0.2, 0.8, 0.4, 0.6];
        let got = log_loss(&[0, 1, 0], &scores, 2).unwrap();
        let expected = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln()) / 3.0;
        assert!((got - expected).abs() < 1e-15);
    }

    #[test]
    fn certain_mistakes_are_clipped() {
        let got = log_loss(&[0], &[0.0, 1.0], 2).unwrap();
        assert_eq!(got, -f64::EPSILON.ln());
        let got = log_loss(&[1], &[0.0, 1.0], 2).unwrap();
        assert_eq!(got, -(1.0 - f64::EPSILON).ln());
    }

    #[test]
    fn scores_that_are_not_probabilities_have_none() {
        // Logits.
        assert_eq!(log_loss(&[0], &[2.0, -1.0], 2), None);
        // In [0, 1] but not summing to 1 (e.g. independent sigmoids).
        assert_eq!(log_loss(&[0], &[0.7, 0.7], 2), None);
        // Off by less than the tolerance is fine.
        assert!(log_loss(&[0], &[0.5, 0.5 + 1e-9], 2).is_some());
    }
}
