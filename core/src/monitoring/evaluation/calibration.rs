//! Expected calibration error: how far a model's confidence is from how often it is right.
//!
//! The binning is the common one (Guo et al., 2017, and most libraries since): the
//! **confidence** of a record is the probability the model gave its predicted class (the
//! top-class probability); records go into [`CALIBRATION_BINS`] **equal-width** bins over
//! `(0, 1]`, bin `b` holding confidences in `(b/B, (b+1)/B]` (a confidence of exactly 0 goes
//! to the first bin). Then
//!
//! `ECE = Σ_b (n_b / n) · |accuracy_b − mean confidence_b|`
//!
//! over the non-empty bins. 0 is perfectly calibrated; it is at most 1.

/// Bins used for the expected calibration error: 15, as is common.
pub const CALIBRATION_BINS: usize = 15;

/// The bin of `confidence` among `bins` equal-width bins (see the module docs).
pub fn bin_of(confidence: f64, bins: usize) -> usize {
    let upper = (confidence * bins as f64).ceil();
    if upper < 1.0 {
        0
    } else {
        (upper as usize - 1).min(bins - 1)
    }
}

/// The expected calibration error of records whose predicted class had probability
/// `confidences[i]` and was right when `correct[i]`, over `bins` bins (at least one). 0 with no
/// records.
pub fn expected_calibration_error(correct: &[bool], confidences: &[f64], bins: usize) -> f64 {
    let bins = bins.max(1);
    let mut count = vec![0u64; bins];
    let mut right = vec![0u64; bins];
    let mut confidence_sum = vec![0.0f64; bins];
    for (&c, &p) in correct.iter().zip(confidences) {
        let b = bin_of(p, bins);
        count[b] += 1;
        right[b] += u64::from(c);
        confidence_sum[b] += p;
    }
    let n = correct.len().min(confidences.len());
    if n == 0 {
        return 0.0;
    }
    (0..bins)
        .filter(|&b| count[b] > 0)
        .map(|b| {
            let nb = count[b] as f64;
            (nb / n as f64) * (right[b] as f64 / nb - confidence_sum[b] / nb).abs()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bins_are_open_below_and_closed_above() {
        assert_eq!(bin_of(0.0, 15), 0);
        assert_eq!(bin_of(1e-9, 15), 0);
        assert_eq!(bin_of(1.0 / 15.0 + 1e-12, 15), 1);
        assert_eq!(bin_of(0.5, 2), 0);
        assert_eq!(bin_of(0.500_001, 2), 1);
        assert_eq!(bin_of(1.0, 15), 14);
    }

    #[test]
    fn ece_by_hand() {
        // Two bins. Bin 0 (conf 0.3, 0.4): 1 of 2 right, mean conf 0.35 -> |0.5 - 0.35| = 0.15.
        // Bin 1 (conf 0.9, 0.8, 0.7): 3 of 3 right, mean conf 0.8 -> 0.2.
        let ece = expected_calibration_error(
            &[true, false, true, true, true],
            &[0.3, 0.4, 0.9, 0.8, 0.7],
            2,
        );
        let expected = 2.0 / 5.0 * 0.15 + 3.0 / 5.0 * 0.2;
        assert!((ece - expected).abs() < 1e-12, "{ece}");
        assert_eq!(expected_calibration_error(&[], &[], 15), 0.0);
    }

    proptest! {
        #[test]
        fn ece_is_between_0_and_1(
            records in prop::collection::vec((any::<bool>(), 0.0f64..=1.0), 1..200)
        ) {
            let (correct, conf): (Vec<bool>, Vec<f64>) = records.into_iter().unzip();
            let ece = expected_calibration_error(&correct, &conf, CALIBRATION_BINS);
            prop_assert!((0.0..=1.0 + 1e-12).contains(&ece));
        }

        #[test]
        fn a_model_right_exactly_as_often_as_it_says_is_calibrated(bin in 0usize..15) {
            // A thousand records of one confidence, right exactly that often.
            let p = (bin as f64 + 0.5) / 15.0;
            let right = (p * 1000.0).round() as usize;
            let correct: Vec<bool> = (0..1000).map(|i| i < right).collect();
            let conf = vec![right as f64 / 1000.0; 1000];
            prop_assert!(expected_calibration_error(&correct, &conf, 15) < 1e-12);
        }
    }
}
