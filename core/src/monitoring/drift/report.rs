//! What a drift comparison returns: one [`ColumnReport`] per column and a [`DriftSummary`] of
//! the dataset, in the shape `toucan drift -o json` and the API carry.

use super::{ColumnKind, StatTest};
use serde::{Deserialize, Serialize};

/// Share of drifted columns at which the dataset as a whole counts as drifted (Evidently's
/// default `drift_share`).
pub const DEFAULT_DRIFT_SHARE: f64 = 0.5;

/// One column's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ColumnReport {
    pub column: String,
    #[serde(rename = "type")]
    pub kind: ColumnKind,
    pub test: StatTest,
    /// The test's statistic or the distance (`"inf"` in JSON when infinite, e.g. chi-squared
    /// with a category the reference never saw).
    #[serde(with = "float_or_text")]
    pub statistic: f64,
    /// The p-value, for the tests that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The size of the difference, independent of sample size (see `TestOutcome`).
    #[serde(with = "float_or_text")]
    pub effect_size: f64,
    pub threshold: f64,
    /// What the threshold was compared with: the p-value, or the distance.
    #[serde(with = "float_or_text")]
    pub score: f64,
    pub drifted: bool,
    /// Number of values compared on each side (missing values left out).
    pub reference_size: usize,
    pub current_size: usize,
}

/// The dataset-level view of a set of column reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftSummary {
    pub columns: usize,
    pub drifted_columns: usize,
    pub share_of_drifted_columns: f64,
    /// The share at which the dataset counts as drifted.
    pub drift_share: f64,
    pub dataset_drift: bool,
}

/// Counts the drifted columns; the dataset drifted when their share reaches `drift_share`.
pub fn summarize(reports: &[ColumnReport], drift_share: f64) -> DriftSummary {
    let drifted_columns = reports.iter().filter(|r| r.drifted).count();
    let share = if reports.is_empty() {
        0.0
    } else {
        drifted_columns as f64 / reports.len() as f64
    };
    DriftSummary {
        columns: reports.len(),
        drifted_columns,
        share_of_drifted_columns: share,
        drift_share,
        dataset_drift: !reports.is_empty() && share >= drift_share,
    }
}

/// JSON has no infinities: they are written as the strings `"inf"` and `"-inf"` (and NaN as
/// `"nan"`), and read back from them.
mod float_or_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
        if value.is_finite() {
            serializer.serialize_f64(*value)
        } else if value.is_nan() {
            serializer.serialize_str("nan")
        } else if *value > 0.0 {
            serializer.serialize_str("inf")
        } else {
            serializer.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum FloatOrText {
        Float(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
        match FloatOrText::deserialize(deserializer)? {
            FloatOrText::Float(v) => Ok(v),
            FloatOrText::Text(text) => match text.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                "nan" => Ok(f64::NAN),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"inf\", \"-inf\" or \"nan\", got {other:?}"
                ))),
            },
        }
    }
}
