//! Classification metrics of `toucan-worker evaluate`, in pure Rust and checked against
//! scikit-learn 1.9 (`worker/tests/metrics_sklearn.rs`).
//!
//! Data flow: a model's [`Predictions`] (true labels, an n x k score matrix, class names and
//! optional slice columns) go through [`report()`], which validates them and computes
//! [`Metrics`] for all records and again for the records of every value of every slice column.
//! [`plot::confusion_matrix_png`] draws the overall confusion matrix, and [`write_report`]
//! writes `report.json` and `confusion_matrix.png`.
//!
//! The definitions, and how each one treats ties and undefined cases, are in the modules:
//! [`classification`] (argmax, confusion matrix, accuracy, precision, recall, F1 and their
//! averages), [`ranking`] (one-vs-rest ROC AUC and average precision, top-k accuracy) and
//! [`loss`] (log loss). `classification` and `loss` are core's
//! (`toucan_core::monitoring::evaluation`), shared with the continuous evaluation of served
//! models, so an offline report and a live window compute each figure the same way. In short:
//!
//! - the predicted class is the argmax with ties to the **lowest** index, but top-k ranks ties
//!   with the **highest** index first, as scikit-learn does for each;
//! - a class without positives (or, for ROC AUC, without negatives) in the records at hand has
//!   no ROC AUC or average precision (`null`) and is left out of their averages, where
//!   scikit-learn would give NaN or 0 with a warning;
//! - the log loss is `null` when the scores are not probabilities.

pub mod error;
pub mod plot;
pub mod ranking;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use error::MetricsError;
pub use report::{
    AverageMetrics, ClassMetrics, Metrics, REPORT_FORMAT, Report, SliceColumn, SliceValue,
    TopKAccuracy,
};
pub use toucan_core::monitoring::evaluation::{classification, loss};

pub const REPORT_FILE: &str = "report.json";
pub const CONFUSION_MATRIX_FILE: &str = "confusion_matrix.png";

/// What a model said about a set of records.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Predictions {
    /// The true class index of each record.
    pub labels: Vec<usize>,
    /// Row-major, one row of `classes.len()` scores per record: probabilities or raw scores
    /// (higher means more likely).
    pub scores: Vec<f64>,
    pub classes: Vec<String>,
    /// Slice columns by name: one value per record, e.g. the source or the capture device.
    pub slices: BTreeMap<String, Vec<String>>,
}

/// What to compute besides the fixed set of metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportOptions {
    /// The k of each top-k accuracy (any order, repeats ignored; k >= the number of classes
    /// gives 1).
    pub top_k: Vec<usize>,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions { top_k: vec![1, 5] }
    }
}

/// Validates `input` and computes the metrics of all its records and of each slice.
pub fn report(input: &Predictions, options: &ReportOptions) -> Result<Report, MetricsError> {
    validate(input)?;
    let top_k: Vec<usize> = options
        .top_k
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(&k) = top_k.first().filter(|&&k| k == 0) {
        return Err(MetricsError::InvalidTopK { k });
    }
    let k = input.classes.len();
    let overall = Metrics::evaluate(&input.labels, &input.scores, &input.classes, &top_k);

    let mut slices = Vec::with_capacity(input.slices.len());
    for (column, values) in &input.slices {
        let mut records_by_value: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, value) in values.iter().enumerate() {
            records_by_value.entry(value).or_default().push(i);
        }
        let values = records_by_value
            .into_iter()
            .map(|(value, records)| {
                let labels: Vec<usize> = records.iter().map(|&i| input.labels[i]).collect();
                let scores: Vec<f64> = records
                    .iter()
                    .flat_map(|&i| &input.scores[i * k..(i + 1) * k])
                    .copied()
                    .collect();
                SliceValue {
                    value: value.to_string(),
                    metrics: Metrics::evaluate(&labels, &scores, &input.classes, &top_k),
                }
            })
            .collect();
        slices.push(SliceColumn {
            column: column.clone(),
            values,
        });
    }

    Ok(Report {
        format: REPORT_FORMAT.to_string(),
        classes: input.classes.clone(),
        overall,
        slices,
    })
}

fn validate(input: &Predictions) -> Result<(), MetricsError> {
    let records = input.labels.len();
    let classes = input.classes.len();
    if records == 0 {
        return Err(MetricsError::Empty);
    }
    if classes < 2 {
        return Err(MetricsError::TooFewClasses { classes });
    }
    let expected = records.saturating_mul(classes);
    if input.scores.len() != expected {
        return Err(MetricsError::ScoreShape {
            records,
            classes,
            expected,
            actual: input.scores.len(),
        });
    }
    if let Some((record, &label)) = input
        .labels
        .iter()
        .enumerate()
        .find(|(_, l)| **l >= classes)
    {
        return Err(MetricsError::LabelOutOfRange {
            record,
            label,
            classes,
        });
    }
    if let Some((i, &value)) = input
        .scores
        .iter()
        .enumerate()
        .find(|(_, s)| !s.is_finite())
    {
        return Err(MetricsError::NonFiniteScore {
            record: i / classes,
            class: i % classes,
            name: input.classes[i % classes].clone(),
            value,
        });
    }
    for (column, values) in &input.slices {
        if values.len() != records {
            return Err(MetricsError::SliceLength {
                column: column.clone(),
                records,
                actual: values.len(),
            });
        }
    }
    Ok(())
}

/// Writes `report.json` (pretty, with a trailing newline) and `confusion_matrix.png` into `dir`,
/// creating it if needed.
pub fn write_report(dir: &Path, report: &Report, png: &[u8]) -> Result<(), MetricsError> {
    std::fs::create_dir_all(dir).map_err(MetricsError::io(dir))?;
    let json_path = dir.join(REPORT_FILE);
    let mut json = serde_json::to_string_pretty(report).map_err(|source| MetricsError::Json {
        path: json_path.clone(),
        source,
    })?;
    json.push('\n');
    std::fs::write(&json_path, json).map_err(MetricsError::io(&json_path))?;
    let png_path = dir.join(CONFUSION_MATRIX_FILE);
    std::fs::write(&png_path, png).map_err(MetricsError::io(&png_path))?;
    Ok(())
}

#[cfg(test)]
mod tests;
