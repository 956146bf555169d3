//! Tumbling windows over joined samples, per version and per slice, smoothed across windows.
//!
//! - **Windows** are tumbling and aligned to the epoch: a sample at time `t` belongs to the
//!   window starting at `t - t mod window`, so the same sample falls in the same window on
//!   every call. Only windows holding a sample are reported, oldest first; the one still open
//!   at `now` is marked `complete: false`.
//! - **Groups**: in each window, all samples, each version's, and with a slice named, each
//!   value's and each version and value's. A slice is a sample attribute (the request headers
//!   the endpoint records, lower-case), named as it is or as `header.NAME`; a sample without
//!   it has the value `""`.
//! - **Maturity**: a sample younger than the maturity delay at `now` is *pending*: labels may
//!   still come, so it counts in no metric and no coverage, only in the prediction
//!   distribution (what a model predicts is known at once). A matured sample counts in the
//!   coverage (labelled / matured, with its Wilson interval) and, when labelled, in the
//!   metrics. The label delay (labelled at − sample time) is reported as its median and 90th
//!   percentile over the labelled matured samples.
//! - **Smoothing**: an exponentially weighted moving average across the windows in which a
//!   group has metrics, `s₁ = x₁`, `sᵢ = α xᵢ + (1 − α) sᵢ₋₁`, with
//!   `α = 1 − 2^(−1/h)` for a half-life of `h` windows (a window `h` windows back weighs half
//!   as much as the current one); windows without metrics are skipped, not counted as zero.
//!   The interval of a smoothed figure is the same average of the windows' bounds: a band
//!   that follows the per-window intervals, not an interval of the average itself.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::calibration::CALIBRATION_BINS;
use super::interval::{
    Bootstrap, DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Estimate, percentile, wilson,
};
use super::join::{LabelState, LabelledSample, ModelClasses, Scored, score};
use super::metrics::{ClassShare, Labelled, WindowMetrics, prediction_distribution};
use crate::records::Millis;

/// The half-life of the moving average when the caller names none, in windows.
pub const DEFAULT_HALF_LIFE_WINDOWS: f64 = 4.0;

/// What to evaluate and how.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluationOptions {
    /// The time of the evaluation: maturity and the open window are judged against it.
    pub now: Millis,
    /// The length of a window, at least 1 ms.
    pub window_ms: Millis,
    /// How old a sample must be before it counts (labels are waited for that long).
    pub maturity_ms: Millis,
    /// The sample attribute to slice by, if any.
    pub slice: Option<String>,
    /// The moving average's half-life, in windows (> 0).
    pub half_life_windows: f64,
    /// The confidence level of every interval, in `(0, 1)`.
    pub confidence: f64,
    /// Bootstrap resamples per window and group.
    pub resamples: u32,
    /// The bootstrap's seed.
    pub seed: u64,
}

impl EvaluationOptions {
    /// Windows of `window_ms` at `now`, no maturity delay, no slice, and the defaults.
    pub fn new(now: Millis, window_ms: Millis) -> EvaluationOptions {
        EvaluationOptions {
            now,
            window_ms,
            maturity_ms: 0,
            slice: None,
            half_life_windows: DEFAULT_HALF_LIFE_WINDOWS,
            confidence: DEFAULT_CONFIDENCE,
            resamples: DEFAULT_RESAMPLES,
            seed: 0,
        }
    }

    /// The smoothing factor of the moving average: `1 − 2^(−1/h)`.
    pub fn ewma_alpha(&self) -> f64 {
        1.0 - 0.5f64.powf(1.0 / self.half_life_windows)
    }
}

/// Options that cannot be evaluated; each names the option as the API's query does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvaluationError {
    #[error("window: {window_ms} ms; a window must last at least 1 ms")]
    Window { window_ms: Millis },
    #[error("maturity: {maturity_ms} ms; the maturity delay cannot be negative")]
    Maturity { maturity_ms: Millis },
    #[error("halfLife: {half_life} windows; the half-life must be a positive number")]
    HalfLife { half_life: f64 },
    #[error("confidence: {confidence}; the confidence level must lie strictly between 0 and 1")]
    Confidence { confidence: f64 },
    #[error("slice: the slice must name an attribute")]
    Slice,
}

impl EvaluationError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            EvaluationError::Window { .. } => "InvalidWindow",
            EvaluationError::Maturity { .. } => "InvalidMaturity",
            EvaluationError::HalfLife { .. } => "InvalidHalfLife",
            EvaluationError::Confidence { .. } => "InvalidConfidence",
            EvaluationError::Slice => "InvalidSlice",
        }
    }
}

/// The evaluation of an endpoint's samples.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationReport {
    /// The model's classes by index (`#INDEX` for one never predicted yet).
    pub classes: Vec<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub now: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub window_ms: Millis,
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub maturity_ms: Millis,
    /// The attribute the groups are sliced by.
    pub slice: Option<String>,
    pub confidence: f64,
    /// The moving average's smoothing factor.
    pub ewma_alpha: f64,
    pub calibration_bins: u32,
    pub bootstrap_resamples: u32,
    /// Label coverage over every sample given.
    pub coverage: LabelCoverage,
    /// Windows holding a sample, oldest first.
    pub windows: Vec<EvaluationWindow>,
    /// Set when the samples were read up to a limit (the newest ones): some of those stored
    /// at or before this time were left out, so the windows reaching back to it are judged
    /// on part of their samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>))]
    pub partial_through: Option<Millis>,
}

/// One tumbling window.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EvaluationWindow {
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub start: Millis,
    /// Exclusive.
    #[cfg_attr(feature = "openapi", schema(value_type = i64))]
    pub end: Millis,
    /// Whether the window had ended at `now`.
    pub complete: bool,
    /// All samples first, then by version and slice value.
    pub groups: Vec<GroupEvaluation>,
}

/// The samples of one window that share a version, a slice value, both or neither.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupEvaluation {
    /// `None`: every version.
    pub version: Option<String>,
    /// `None`: every slice value.
    pub slice_value: Option<String>,
    pub coverage: LabelCoverage,
    /// Predictions of every sample of the group, pending ones included.
    pub prediction_distribution: Vec<ClassShare>,
    /// `None` without a labelled matured sample.
    pub metrics: Option<WindowMetrics>,
    /// The moving average up to this window, once the group has had metrics.
    pub smoothed: Option<SmoothedMetrics>,
}

/// How many samples have labels, and how late the labels came.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelCoverage {
    pub samples: u64,
    /// Younger than the maturity delay: waiting for labels, not counted below.
    pub pending: u64,
    pub matured: u64,
    /// Matured samples with a usable label.
    pub labelled: u64,
    /// Matured samples whose label names no class of the model, or whose prediction does not
    /// fit the model's classes.
    pub unusable: u64,
    /// `labelled / matured`; `None` with nothing matured.
    pub coverage: Option<Estimate>,
    pub delay_median_ms: Option<f64>,
    pub delay_p90_ms: Option<f64>,
}

/// The moving averages of a group's figures (see the module docs).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmoothedMetrics {
    /// Windows averaged so far.
    pub windows: u32,
    pub accuracy: Estimate,
    pub macro_precision: Estimate,
    pub macro_recall: Estimate,
    pub macro_f1: Estimate,
    pub log_loss: Option<Estimate>,
    pub expected_calibration_error: Estimate,
}

type GroupKey = (Option<String>, Option<String>);

/// Evaluates `samples` (each with its label, if any) in windows, groups and moving averages.
pub fn evaluate(
    samples: &[LabelledSample],
    options: &EvaluationOptions,
) -> Result<EvaluationReport, EvaluationError> {
    validate(options)?;
    let slice = options.slice.as_deref().map(attribute_name);
    let classes = ModelClasses::of(samples.iter().map(|s| &s.sample.sample));
    let names = classes.names();
    let scored = score(samples, &classes);
    let settings = Bootstrap {
        resamples: options.resamples,
        confidence: options.confidence,
        seed: options.seed,
    };

    let mut windows: BTreeMap<Millis, BTreeMap<GroupKey, Vec<&Scored<'_>>>> = BTreeMap::new();
    for s in &scored {
        let start = s.at - s.at.rem_euclid(options.window_ms);
        let groups = windows.entry(start).or_default();
        let version = Some(s.version.to_string());
        let mut keys: Vec<GroupKey> = vec![(None, None), (version.clone(), None)];
        if let Some(name) = &slice {
            let value = Some(s.attributes.get(name).cloned().unwrap_or_default());
            keys.push((None, value.clone()));
            keys.push((version, value));
        }
        for key in keys {
            groups.entry(key).or_default().push(s);
        }
    }

    let alpha = options.ewma_alpha();
    let mut smoothers: HashMap<GroupKey, SmoothedMetrics> = HashMap::new();
    let mut report_windows = Vec::with_capacity(windows.len());
    for (start, groups) in windows {
        let end = start.saturating_add(options.window_ms);
        let mut evaluated = Vec::with_capacity(groups.len());
        for (key, members) in groups {
            let bootstrap_key = format!("{start}\0{:?}\0{:?}", key.0, key.1);
            let (coverage, metrics, predictions) =
                evaluate_group(&members, options, &names, &settings, &bootstrap_key);
            let smoothed = match &metrics {
                Some(m) => {
                    let next = smooth(smoothers.get(&key), m, alpha);
                    smoothers.insert(key.clone(), next.clone());
                    Some(next)
                }
                None => smoothers.get(&key).cloned(),
            };
            evaluated.push(GroupEvaluation {
                version: key.0,
                slice_value: key.1,
                coverage,
                prediction_distribution: prediction_distribution(
                    &predictions,
                    &names,
                    options.confidence,
                ),
                metrics,
                smoothed,
            });
        }
        report_windows.push(EvaluationWindow {
            start,
            end,
            complete: end <= options.now,
            groups: evaluated,
        });
    }

    let all: Vec<&Scored<'_>> = scored.iter().collect();
    Ok(EvaluationReport {
        classes: names,
        now: options.now,
        window_ms: options.window_ms,
        maturity_ms: options.maturity_ms,
        slice,
        confidence: options.confidence,
        ewma_alpha: alpha,
        calibration_bins: CALIBRATION_BINS as u32,
        bootstrap_resamples: options.resamples,
        coverage: coverage(&all, options),
        windows: report_windows,
        partial_through: None,
    })
}

fn validate(options: &EvaluationOptions) -> Result<(), EvaluationError> {
    if options.window_ms < 1 {
        return Err(EvaluationError::Window {
            window_ms: options.window_ms,
        });
    }
    if options.maturity_ms < 0 {
        return Err(EvaluationError::Maturity {
            maturity_ms: options.maturity_ms,
        });
    }
    if !(options.half_life_windows.is_finite() && options.half_life_windows > 0.0) {
        return Err(EvaluationError::HalfLife {
            half_life: options.half_life_windows,
        });
    }
    if !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(EvaluationError::Confidence {
            confidence: options.confidence,
        });
    }
    if options
        .slice
        .as_deref()
        .is_some_and(|s| attribute_name(s).is_empty())
    {
        return Err(EvaluationError::Slice);
    }
    Ok(())
}

/// The attribute a slice names: `header.X-Source` and `x-source` both name `x-source`.
fn attribute_name(slice: &str) -> String {
    slice
        .strip_prefix("header.")
        .unwrap_or(slice)
        .trim()
        .to_ascii_lowercase()
}

fn is_pending(s: &Scored<'_>, options: &EvaluationOptions) -> bool {
    options.now.saturating_sub(s.at) < options.maturity_ms
}

fn coverage(members: &[&Scored<'_>], options: &EvaluationOptions) -> LabelCoverage {
    let matured: Vec<&&Scored<'_>> = members.iter().filter(|s| !is_pending(s, options)).collect();
    let mut delays: Vec<f64> = Vec::new();
    let mut unusable = 0;
    for s in &matured {
        match s.label {
            LabelState::Class { labelled_at, .. } => delays.push((labelled_at - s.at) as f64),
            LabelState::Unusable => unusable += 1,
            LabelState::None => {}
        }
    }
    delays.sort_by(f64::total_cmp);
    let (labelled, matured_count) = (delays.len() as u64, matured.len() as u64);
    LabelCoverage {
        samples: members.len() as u64,
        pending: members.len() as u64 - matured_count,
        matured: matured_count,
        labelled,
        unusable,
        coverage: (matured_count > 0).then(|| wilson(labelled, matured_count, options.confidence)),
        delay_median_ms: (!delays.is_empty()).then(|| percentile(&delays, 0.5)),
        delay_p90_ms: (!delays.is_empty()).then(|| percentile(&delays, 0.9)),
    }
}

/// The coverage, metrics and predicted classes of one group.
fn evaluate_group(
    members: &[&Scored<'_>],
    options: &EvaluationOptions,
    names: &[String],
    settings: &Bootstrap,
    key: &str,
) -> (LabelCoverage, Option<WindowMetrics>, Vec<usize>) {
    let predictions: Vec<usize> = members
        .iter()
        .filter_map(|s| s.prediction.as_ref().map(|(p, _)| *p))
        .collect();
    let (mut labels, mut predicted, mut probabilities) = (Vec::new(), Vec::new(), Vec::new());
    for s in members.iter().filter(|s| !is_pending(s, options)) {
        if let (LabelState::Class { class, .. }, Some((p, row))) = (s.label, &s.prediction) {
            labels.push(class);
            predicted.push(*p);
            probabilities.extend_from_slice(row);
        }
    }
    let metrics = (!labels.is_empty()).then(|| {
        WindowMetrics::compute(
            Labelled {
                labels: &labels,
                predicted: &predicted,
                probabilities: &probabilities,
                class_names: names,
            },
            settings,
            key,
        )
    });
    (coverage(members, options), metrics, predictions)
}

fn smooth(previous: Option<&SmoothedMetrics>, m: &WindowMetrics, alpha: f64) -> SmoothedMetrics {
    let Some(p) = previous else {
        return SmoothedMetrics {
            windows: 1,
            accuracy: m.accuracy,
            macro_precision: m.macro_precision,
            macro_recall: m.macro_recall,
            macro_f1: m.macro_f1,
            log_loss: m.log_loss,
            expected_calibration_error: m.expected_calibration_error,
        };
    };
    let blend = |s: Estimate, x: Estimate| Estimate {
        value: alpha * x.value + (1.0 - alpha) * s.value,
        lower: alpha * x.lower + (1.0 - alpha) * s.lower,
        upper: alpha * x.upper + (1.0 - alpha) * s.upper,
    };
    SmoothedMetrics {
        windows: p.windows + 1,
        accuracy: blend(p.accuracy, m.accuracy),
        macro_precision: blend(p.macro_precision, m.macro_precision),
        macro_recall: blend(p.macro_recall, m.macro_recall),
        macro_f1: blend(p.macro_f1, m.macro_f1),
        log_loss: match (p.log_loss, m.log_loss) {
            (Some(s), Some(x)) => Some(blend(s, x)),
            (s, x) => x.or(s),
        },
        expected_calibration_error: blend(
            p.expected_calibration_error,
            m.expected_calibration_error,
        ),
    }
}

#[cfg(test)]
mod tests;
