//! What `report.json` holds, and how one set of records becomes a [`Metrics`].
//!
//! Every number that can be undefined is an `Option` (`null` in JSON); the others are finite by
//! construction, so no NaN or infinity is ever serialized. Field order is declaration order.

use serde::Serialize;

use super::classification::{self, ClassCounts, PrecisionRecall};
use super::{loss, ranking};

/// The value of `format` in `report.json`.
pub const REPORT_FORMAT: &str = "toucan.evaluation/v1";

/// `report.json`: the metrics of every record, then of every slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub format: String,
    pub classes: Vec<String>,
    pub overall: Metrics,
    /// One entry per slice column, by column name.
    pub slices: Vec<SliceColumn>,
}

/// All metrics of one set of records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub records: usize,
    pub accuracy: f64,
    /// One entry per requested k, in increasing k.
    pub top_k_accuracy: Vec<TopKAccuracy>,
    /// `None` when the scores are not probabilities (see [`super::loss`]).
    pub log_loss: Option<f64>,
    /// One entry per class, in class order.
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: AverageMetrics,
    pub weighted_avg: AverageMetrics,
    /// `confusion_matrix[true][predicted]`.
    pub confusion_matrix: Vec<Vec<u64>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TopKAccuracy {
    pub k: usize,
    pub accuracy: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub class: String,
    /// Records of this class.
    pub support: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// One-vs-rest; `None` when the class has no positives or no negatives here.
    pub roc_auc: Option<f64>,
    /// One-vs-rest; `None` when the class has no positives here.
    pub average_precision: Option<f64>,
}

/// Precision, recall and F1 averaged as in [`super::classification`]; ROC AUC and average
/// precision averaged over the classes where they are defined, `None` when there is none.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AverageMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: Option<f64>,
    pub average_precision: Option<f64>,
}

/// The records grouped by the values of one slice column.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceColumn {
    pub column: String,
    /// One entry per distinct value, sorted by value.
    pub values: Vec<SliceValue>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceValue {
    pub value: String,
    pub metrics: Metrics,
}

// === impl Metrics ===

impl Metrics {
    /// The metrics of `labels` (valid class indices, at least one) against `scores`
    /// (`labels.len()` rows of `class_names.len()` finite values).
    pub(crate) fn evaluate(
        labels: &[usize],
        scores: &[f64],
        class_names: &[String],
        top_k: &[usize],
    ) -> Metrics {
        let classes = class_names.len();
        let rows: Vec<&[f64]> = scores.chunks(classes).collect();
        let predicted: Vec<usize> = rows.iter().map(|row| classification::argmax(row)).collect();
        let confusion_matrix = classification::confusion_matrix(labels, &predicted, classes);
        let counts = ClassCounts::of_every_class(&confusion_matrix);

        let mut per_class = Vec::with_capacity(classes);
        for (c, name) in class_names.iter().enumerate() {
            let is_positive: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            let column: Vec<f64> = rows.iter().map(|row| row[c]).collect();
            let thresholds = ranking::thresholds(&is_positive, &column);
            let PrecisionRecall {
                precision,
                recall,
                f1,
            } = counts[c].precision_recall();
            per_class.push(ClassMetrics {
                class: name.clone(),
                support: counts[c].support,
                precision,
                recall,
                f1,
                roc_auc: ranking::roc_auc(&thresholds),
                average_precision: ranking::average_precision(&thresholds),
            });
        }

        let positions: Vec<usize> = labels
            .iter()
            .zip(&rows)
            .map(|(&label, row)| ranking::top_k_position(row, label))
            .collect();
        let top_k_accuracy = top_k
            .iter()
            .map(|&k| TopKAccuracy {
                k,
                accuracy: positions.iter().filter(|&&p| p < k).count() as f64 / labels.len() as f64,
            })
            .collect();

        let macro_prf = classification::macro_average(&counts);
        let weighted_prf = classification::weighted_average(&counts);
        let macro_avg = AverageMetrics {
            precision: macro_prf.precision,
            recall: macro_prf.recall,
            f1: macro_prf.f1,
            roc_auc: mean_where_defined(&per_class, |m| m.roc_auc, |_| 1.0),
            average_precision: mean_where_defined(&per_class, |m| m.average_precision, |_| 1.0),
        };
        let support = |m: &ClassMetrics| m.support as f64;
        let weighted_avg = AverageMetrics {
            precision: weighted_prf.precision,
            recall: weighted_prf.recall,
            f1: weighted_prf.f1,
            roc_auc: mean_where_defined(&per_class, |m| m.roc_auc, support),
            average_precision: mean_where_defined(&per_class, |m| m.average_precision, support),
        };

        Metrics {
            records: labels.len(),
            accuracy: classification::accuracy(&confusion_matrix),
            top_k_accuracy,
            log_loss: loss::log_loss(labels, scores, classes),
            per_class,
            macro_avg,
            weighted_avg,
            confusion_matrix,
        }
    }
}

/// The weighted mean of a per-class metric over the classes where it is defined; `None` when it
/// is defined nowhere or the weights add up to 0.
fn mean_where_defined(
    per_class: &[ClassMetrics],
    value: impl Fn(&ClassMetrics) -> Option<f64>,
    weight: impl Fn(&ClassMetrics) -> f64,
) -> Option<f64> {
    let (mut sum, mut weights) = (0.0, 0.0);
    for m in per_class {
        if let Some(v) = value(m) {
            sum += weight(m) * v;
            weights += weight(m);
        }
    }
    (weights > 0.0).then(|| sum / weights)
}
