//! The quality figures of one set of labelled records, each with its interval.
//!
//! Every figure is computed by the same building blocks as `toucan-worker evaluate`'s report
//! ([`classification`](super::classification), [`loss`](super::loss)) and
//! [`calibration`](super::calibration); the intervals are those of [`interval`](super::interval):
//! Wilson for accuracy and each class's precision, recall and share of the predictions, a
//! percentile bootstrap for the macro averages, the log loss and the expected calibration error.

use serde::{Deserialize, Serialize};

use super::calibration::{CALIBRATION_BINS, expected_calibration_error};
use super::classification::{ClassCounts, confusion_matrix, macro_average};
use super::interval::{Bootstrap, Estimate, bootstrap, wilson};
use super::loss::{log_loss, record_loss};

/// The figures of one window of one group.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowMetrics {
    /// Labelled records the figures are computed over.
    pub records: u64,
    pub accuracy: Estimate,
    pub macro_precision: Estimate,
    pub macro_recall: Estimate,
    pub macro_f1: Estimate,
    /// `None` when the probabilities are not probabilities (see `loss`).
    pub log_loss: Option<Estimate>,
    pub expected_calibration_error: Estimate,
    /// One entry per class, in class order.
    pub per_class: Vec<ClassEvaluation>,
    /// `confusionMatrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

/// Precision and recall of one class, as proportions with Wilson intervals (over the records
/// predicted as the class and the records of the class respectively).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassEvaluation {
    pub class: String,
    /// Labelled records of this class.
    pub support: u64,
    /// Labelled records predicted as this class.
    pub predicted: u64,
    pub precision: Estimate,
    pub recall: Estimate,
}

/// How often the model predicted one class.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClassShare {
    pub class: String,
    pub count: u64,
    /// `count` over all predictions, with its Wilson interval.
    pub share: Estimate,
}

/// Labelled records: true class, predicted class and the probability rows (`classes` each).
#[derive(Debug, Clone, Copy)]
pub struct Labelled<'a> {
    pub labels: &'a [usize],
    pub predicted: &'a [usize],
    /// Row-major, one row of `class_names.len()` probabilities per record.
    pub probabilities: &'a [f64],
    pub class_names: &'a [String],
}

impl WindowMetrics {
    /// The figures of `records` (at least one; class indices below the number of classes),
    /// with bootstrap intervals drawn as `settings` and `key` say.
    pub fn compute(records: Labelled<'_>, settings: &Bootstrap, key: &str) -> WindowMetrics {
        let Labelled {
            labels,
            predicted,
            probabilities,
            class_names,
        } = records;
        let k = class_names.len();
        let n = labels.len();
        let matrix = confusion_matrix(labels, predicted, k);
        let counts = ClassCounts::of_every_class(&matrix);
        let macro_prf = macro_average(&counts);
        let correct: Vec<bool> = labels.iter().zip(predicted).map(|(t, p)| t == p).collect();
        let confidence: Vec<f64> = predicted
            .iter()
            .enumerate()
            .map(|(i, &p)| probabilities[i * k + p])
            .collect();
        let loss_value = log_loss(labels, probabilities, k);
        let losses: Option<Vec<f64>> = loss_value.map(|_| {
            labels
                .iter()
                .enumerate()
                .map(|(i, &t)| record_loss(probabilities[i * k + t]))
                .collect()
        });
        let ece = expected_calibration_error(&correct, &confidence, CALIBRATION_BINS);

        let [macro_precision, macro_recall, macro_f1, loss, calibration] = bootstrap(
            n,
            [
                macro_prf.precision,
                macro_prf.recall,
                macro_prf.f1,
                loss_value.unwrap_or(0.0),
                ece,
            ],
            settings,
            key,
            |idx| {
                let t: Vec<usize> = idx.iter().map(|&i| labels[i]).collect();
                let p: Vec<usize> = idx.iter().map(|&i| predicted[i]).collect();
                let m = macro_average(&ClassCounts::of_every_class(&confusion_matrix(&t, &p, k)));
                let c: Vec<bool> = idx.iter().map(|&i| correct[i]).collect();
                let conf: Vec<f64> = idx.iter().map(|&i| confidence[i]).collect();
                let loss = losses
                    .as_ref()
                    .map(|l| idx.iter().map(|&i| l[i]).sum::<f64>() / idx.len() as f64);
                [
                    Some(m.precision),
                    Some(m.recall),
                    Some(m.f1),
                    loss,
                    Some(expected_calibration_error(&c, &conf, CALIBRATION_BINS)),
                ]
            },
        );

        let correct_count = correct.iter().filter(|c| **c).count() as u64;
        WindowMetrics {
            records: n as u64,
            accuracy: wilson(correct_count, n as u64, settings.confidence),
            macro_precision,
            macro_recall,
            macro_f1,
            log_loss: loss_value.map(|_| loss),
            expected_calibration_error: calibration,
            per_class: class_names
                .iter()
                .zip(&counts)
                .map(|(class, c)| ClassEvaluation {
                    class: class.clone(),
                    support: c.support,
                    predicted: c.predicted,
                    precision: wilson(c.true_positives, c.predicted, settings.confidence),
                    recall: wilson(c.true_positives, c.support, settings.confidence),
                })
                .collect(),
            confusion_matrix: matrix,
        }
    }
}

/// How often each class was predicted among `predicted`, with Wilson intervals.
pub fn prediction_distribution(
    predicted: &[usize],
    class_names: &[String],
    confidence: f64,
) -> Vec<ClassShare> {
    let mut counts = vec![0u64; class_names.len()];
    for &p in predicted {
        if let Some(c) = counts.get_mut(p) {
            *c += 1;
        }
    }
    let total = counts.iter().sum();
    class_names
        .iter()
        .zip(counts)
        .map(|(class, count)| ClassShare {
            class: class.clone(),
            count,
            share: wilson(count, total, confidence),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    const SETTINGS: Bootstrap = Bootstrap {
        resamples: 100,
        confidence: 0.95,
        seed: 1,
    };

    #[test]
    fn figures_by_hand() {
        // truth 0 0 1 1, predicted 0 1 1 1.
        let probabilities = [0.9, 0.1, 0.4, 0.6, 0.2, 0.8, 0.3, 0.7];
        let m = WindowMetrics::compute(
            Labelled {
                labels: &[0, 0, 1, 1],
                predicted: &[0, 1, 1, 1],
                probabilities: &probabilities,
                class_names: &names(2),
            },
            &SETTINGS,
            "k",
        );
        assert_eq!(m.records, 4);
        assert_eq!(m.accuracy.value, 0.75);
        assert_eq!(m.confusion_matrix, [[1, 1], [0, 2]]);
        // Class 0: precision 1/1, recall 1/2; class 1: precision 2/3, recall 2/2.
        assert_eq!(m.per_class[0].precision.value, 1.0);
        assert_eq!(m.per_class[0].recall.value, 0.5);
        assert!((m.macro_precision.value - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-15);
        let loss = -(0.9f64.ln() + 0.4f64.ln() + 0.8f64.ln() + 0.7f64.ln()) / 4.0;
        assert!((m.log_loss.unwrap().value - loss).abs() < 1e-15);
        for e in [
            m.macro_precision,
            m.macro_recall,
            m.macro_f1,
            m.log_loss.unwrap(),
        ] {
            assert!(e.lower <= e.upper, "{e:?}");
        }
        // Scores that are not probabilities have no log loss.
        let m = WindowMetrics::compute(
            Labelled {
                labels: &[0],
                predicted: &[0],
                probabilities: &[0.7, 0.7],
                class_names: &names(2),
            },
            &SETTINGS,
            "k",
        );
        assert_eq!(m.log_loss, None);
    }

    #[test]
    fn the_distribution_counts_predictions() {
        let d = prediction_distribution(&[0, 2, 2, 2], &names(3), 0.95);
        let counts: Vec<u64> = d.iter().map(|s| s.count).collect();
        assert_eq!(counts, [1, 0, 3]);
        assert_eq!(d[2].share.value, 0.75);
        assert!(d[1].share.upper > 0.0);
    }
}
