//! An Endpoint's `spec.monitoring` as the monitoring decisions and the generated alert rules
//! read it: every default in one place, and the fields the schema keeps loose (a slice's
//! source, a drift reference's two forms, a floor's direction, a retraining parameter's
//! placeholders) in their typed form.
//!
//! The manifest checks refuse what these helpers cannot read, with the field path; the
//! decisions call them on a spec that passed, and fall back to the documented default rather
//! than panic on one that did not.

use std::fmt;

use crate::api::{
    ArtifactSource, DriftMonitoring, DriftReference, EvaluationMonitoring, MetricFloor,
    PromoteRollout, RetrainSpec, SliceSpec, TimeRange,
};
use crate::echo::quote;
use crate::template::{Piece, pieces};

/// The drift window when `drift.window` is omitted.
pub const DEFAULT_DRIFT_WINDOW_MS: u64 = 60 * 60 * 1000;
/// The fewest samples before a feature can drift, when `drift.minSamples` is omitted: with
/// fewer, a test's p-value moves with every few samples.
pub const DEFAULT_DRIFT_MIN_SAMPLES: u32 = 500;
/// The smallest effect that counts as drift when `drift.effectSize` is omitted (Evidently's
/// default threshold for its distances).
pub const DEFAULT_DRIFT_EFFECT_SIZE: f64 = 0.1;
/// The false discovery rate across features and slices when `drift.fdr` is omitted.
pub const DEFAULT_DRIFT_FDR: f64 = 0.05;
/// The evaluation window when `evaluation.window` is omitted.
pub const DEFAULT_EVALUATION_WINDOW_MS: u64 = 60 * 60 * 1000;
/// How late a label may arrive when `evaluation.maturity` is omitted.
pub const DEFAULT_LABEL_MATURITY_MS: u64 = 10 * 60 * 1000;
/// How long a condition holds before its alert fires, and the alert keeps firing after it
/// ends, when `for` is omitted: long enough that one noisy evaluation neither raises nor clears
/// an alert.
pub const DEFAULT_ALERT_HOLD_MS: u64 = 15 * 60 * 1000;
/// The least time between two retraining runs when `retrain.cooldown` is omitted.
pub const DEFAULT_RETRAIN_COOLDOWN_MS: u64 = 6 * 60 * 60 * 1000;
/// The most retraining runs in 24 hours when `retrain.maxPerDay` is omitted.
pub const DEFAULT_RETRAINS_PER_DAY: u32 = 2;
/// The most slices an endpoint may declare: each multiplies the series exported and the
/// tests the false discovery rate is controlled over.
pub const MAX_SLICES: usize = 8;

/// The features drift detection compares, by the name `drift.features` and the metrics'
/// `feature` label use: the input statistics the server records for each image
/// ([`crate::serving::InputStats`], `channel_means` exported per channel as
/// `channel_means_0`, ...), the predicted class distribution, and the model's embedding of the
/// input (exported per version as `embedding/VERSION`).
pub const FEATURES: [&str; 9] = [
    "width",
    "height",
    "channels",
    "brightness",
    "contrast",
    "channel_means",
    "sharpness",
    "prediction",
    "embedding",
];

/// Where a slice's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SliceSource {
    /// A request header, by name (lower-case).
    Header(String),
    /// An attribute the caller attached to the sample.
    Attribute(String),
}

impl fmt::Display for SliceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SliceSource::Header(name) => write!(f, "header.{name}"),
            SliceSource::Attribute(name) => write!(f, "attribute.{name}"),
        }
    }
}

impl SliceSpec {
    /// `from` split into its source and name: `header.NAME` or `attribute.NAME`. The name
    /// itself is checked when the manifest is read (a header name, an identifier).
    pub fn source(&self) -> Result<SliceSource, String> {
        let named = |kind: &str, name: &str| -> Result<String, String> {
            if name.is_empty() {
                Err(format!("{} names no {kind}", quote(&self.from)))
            } else {
                Ok(name.to_string())
            }
        };
        if let Some(name) = self.from.strip_prefix("header.") {
            return named("header", name).map(|n| SliceSource::Header(n.to_ascii_lowercase()));
        }
        if let Some(name) = self.from.strip_prefix("attribute.") {
            return named("attribute", name).map(SliceSource::Attribute);
        }
        Err(format!(
            "{} names no source: write header.NAME (a request header) or attribute.NAME (a \
             sample attribute)",
            quote(&self.from)
        ))
    }
}

/// What drift is measured against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceSource<'a> {
    /// The statistics of a step's output dataset.
    Dataset(&'a ArtifactSource),
    /// The endpoint's own samples of a past period.
    Window(&'a TimeRange),
}

impl DriftReference {
    /// The one form the reference gives; the message says what is missing or extra.
    pub fn source(&self) -> Result<ReferenceSource<'_>, String> {
        match (&self.dataset, &self.window) {
            (Some(dataset), None) => Ok(ReferenceSource::Dataset(dataset)),
            (None, Some(window)) => Ok(ReferenceSource::Window(window)),
            (Some(_), Some(_)) => Err("gives both dataset and window: compare with a dataset \
                                       or with a window of production samples, not both"
                .to_string()),
            (None, None) => Err("gives neither dataset ({run, step, artifact}) nor window \
                                 ({start, end}): give one"
                .to_string()),
        }
    }
}

fn ms(duration: Option<&crate::duration::Duration>, default: u64) -> u64 {
    duration.map_or(default, crate::duration::Duration::as_millis)
}

impl DriftMonitoring {
    /// `window` in milliseconds, [`DEFAULT_DRIFT_WINDOW_MS`] when omitted.
    pub fn window_ms(&self) -> u64 {
        ms(self.window.as_ref(), DEFAULT_DRIFT_WINDOW_MS)
    }

    /// `minSamples`, [`DEFAULT_DRIFT_MIN_SAMPLES`] when omitted.
    pub fn min_samples(&self) -> u32 {
        self.min_samples.unwrap_or(DEFAULT_DRIFT_MIN_SAMPLES)
    }

    /// `effectSize`, [`DEFAULT_DRIFT_EFFECT_SIZE`] when omitted.
    pub fn effect_size(&self) -> f64 {
        self.effect_size.unwrap_or(DEFAULT_DRIFT_EFFECT_SIZE)
    }

    /// `fdr`, [`DEFAULT_DRIFT_FDR`] when omitted.
    pub fn fdr(&self) -> f64 {
        self.fdr.unwrap_or(DEFAULT_DRIFT_FDR)
    }

    /// The features compared: those listed, or every one of [`FEATURES`].
    pub fn features(&self) -> Vec<&str> {
        if self.features.is_empty() {
            FEATURES.to_vec()
        } else {
            self.features.iter().map(String::as_str).collect()
        }
    }

    /// `for` in milliseconds, [`DEFAULT_ALERT_HOLD_MS`] when omitted.
    pub fn hold_ms(&self) -> u64 {
        ms(self.hold.as_ref(), DEFAULT_ALERT_HOLD_MS)
    }
}

impl EvaluationMonitoring {
    /// `window` in milliseconds, [`DEFAULT_EVALUATION_WINDOW_MS`] when omitted.
    pub fn window_ms(&self) -> u64 {
        ms(self.window.as_ref(), DEFAULT_EVALUATION_WINDOW_MS)
    }

    /// `maturity` in milliseconds, [`DEFAULT_LABEL_MATURITY_MS`] when omitted.
    pub fn maturity_ms(&self) -> u64 {
        ms(self.maturity.as_ref(), DEFAULT_LABEL_MATURITY_MS)
    }

    /// `for` in milliseconds, [`DEFAULT_ALERT_HOLD_MS`] when omitted.
    pub fn hold_ms(&self) -> u64 {
        ms(self.hold.as_ref(), DEFAULT_ALERT_HOLD_MS)
    }
}

/// A floor read for its metric's direction.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FloorBound {
    /// The metric must stay at or above this.
    Min(f64),
    /// The metric must stay at or below this.
    Max(f64),
}

impl MetricFloor {
    /// The bound, in the direction the metric allows: `min` for a metric where higher is
    /// better, `max` for one where lower is better, one of them, within the metric's range.
    pub fn bound(&self) -> Result<FloorBound, String> {
        let metric = self.metric;
        let name = metric.as_str();
        let (bound, value) = match (self.min, self.max) {
            (Some(_), Some(_)) => {
                return Err(format!("gives both min and max: bound {name} on one side"));
            }
            (None, None) => {
                let side = if metric.higher_is_better() {
                    "min"
                } else {
                    "max"
                };
                return Err(format!("gives no bound: give {side}"));
            }
            (Some(min), None) if !metric.higher_is_better() => {
                return Err(format!(
                    "{name} is better when lower, so a floor on it is a max: write max: {min}"
                ));
            }
            (None, Some(max)) if metric.higher_is_better() => {
                return Err(format!(
                    "{name} is better when higher, so a floor on it is a min: write min: {max}"
                ));
            }
            (Some(min), None) => (FloorBound::Min(min), min),
            (None, Some(max)) => (FloorBound::Max(max), max),
        };
        let in_range = value.is_finite()
            && if metric.is_fraction() {
                (0.0..=1.0).contains(&value)
            } else {
                value >= 0.0
            };
        if in_range {
            Ok(bound)
        } else if metric.is_fraction() {
            Err(format!("{value} is not a fraction from 0 to 1"))
        } else {
            Err(format!("{value} is not a log loss (0 or more)"))
        }
    }
}

impl RetrainSpec {
    /// `cooldown` in milliseconds, [`DEFAULT_RETRAIN_COOLDOWN_MS`] when omitted.
    pub fn cooldown_ms(&self) -> u64 {
        ms(self.cooldown.as_ref(), DEFAULT_RETRAIN_COOLDOWN_MS)
    }

    /// `maxPerDay`, [`DEFAULT_RETRAINS_PER_DAY`] when omitted.
    pub fn max_per_day(&self) -> u32 {
        self.max_per_day.unwrap_or(DEFAULT_RETRAINS_PER_DAY)
    }
}

impl PromoteRollout {
    /// The candidate's successive weights: the spec's, or the serving default when omitted
    /// (or, against the checks, empty).
    pub fn steps(&self) -> Vec<u32> {
        match &self.steps {
            Some(steps) if !steps.is_empty() => steps.clone(),
            _ => crate::serving::spec::DEFAULT_ROLLOUT_STEPS.to_vec(),
        }
    }

    /// How long each step is held: `interval`, or one evaluation window plus its maturity.
    pub fn interval_ms(&self, evaluation: Option<&EvaluationMonitoring>) -> u64 {
        let matured = evaluation.map_or(
            DEFAULT_EVALUATION_WINDOW_MS + DEFAULT_LABEL_MATURITY_MS,
            |e| e.window_ms().saturating_add(e.maturity_ms()),
        );
        ms(self.interval.as_ref(), matured)
    }
}

/// A variable of an alert that a retraining parameter may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertVariable {
    /// `{{alert.window.samples}}`: the labelled production samples of the alerting window,
    /// as a dataset.
    WindowSamples,
    /// `{{alert.window.start}}`: when the alerting window began, RFC 3339.
    WindowStart,
    /// `{{alert.window.end}}`: when it ended, RFC 3339.
    WindowEnd,
    /// `{{alert.reason}}`: which alert fired and why, one line.
    Reason,
}

impl AlertVariable {
    /// Every variable, in the order messages list them.
    pub const ALL: [AlertVariable; 4] = [
        AlertVariable::WindowSamples,
        AlertVariable::WindowStart,
        AlertVariable::WindowEnd,
        AlertVariable::Reason,
    ];

    /// The name inside the braces.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertVariable::WindowSamples => "alert.window.samples",
            AlertVariable::WindowStart => "alert.window.start",
            AlertVariable::WindowEnd => "alert.window.end",
            AlertVariable::Reason => "alert.reason",
        }
    }
}

/// The alert variables a retraining parameter's text uses, in order; an unknown placeholder
/// or an unclosed `{{` is an error that lists the known ones.
pub fn alert_variables(text: &str) -> Result<Vec<AlertVariable>, String> {
    let mut found = Vec::new();
    for piece in pieces(text) {
        match piece.map_err(|e| e.to_string())? {
            Piece::Text(_) => {}
            Piece::Placeholder(inner) => {
                let Some(variable) = AlertVariable::ALL.into_iter().find(|v| v.as_str() == inner)
                else {
                    let names: Vec<&str> = AlertVariable::ALL.iter().map(|v| v.as_str()).collect();
                    let hint = crate::suggest::did_you_mean_clause(inner, names.iter().copied());
                    return Err(format!(
                        "unknown variable {} (expected one of: {}{hint})",
                        quote(&format!("{{{{{inner}}}}}")),
                        names.join(", ")
                    ));
                };
                found.push(variable);
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::EvaluationMetric;

    fn slice(from: &str) -> SliceSpec {
        SliceSpec {
            name: "s".into(),
            from: from.into(),
        }
    }

    #[test]
    fn a_slice_comes_from_a_header_or_an_attribute() {
        assert_eq!(
            slice("header.X-Source").source(),
            Ok(SliceSource::Header("x-source".into()))
        );
        assert_eq!(
            slice("attribute.region").source(),
            Ok(SliceSource::Attribute("region".into()))
        );
        assert_eq!(
            slice("header.").source(),
            Err("\"header.\" names no header".to_string())
        );
        assert_eq!(
            slice("cookie.x").source(),
            Err(
                "\"cookie.x\" names no source: write header.NAME (a request header) or \
                 attribute.NAME (a sample attribute)"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_floor_is_bounded_in_its_metrics_direction() {
        let floor = |metric, min, max| MetricFloor { metric, min, max };
        let cases = [
            (
                floor(EvaluationMetric::Accuracy, Some(0.85), None),
                Ok(FloorBound::Min(0.85)),
            ),
            (
                floor(EvaluationMetric::LogLoss, None, Some(2.5)),
                Ok(FloorBound::Max(2.5)),
            ),
            (
                floor(EvaluationMetric::Ece, Some(0.1), None),
                Err("ece is better when lower, so a floor on it is a max: write max: 0.1".into()),
            ),
            (
                floor(EvaluationMetric::MacroF1, None, Some(0.5)),
                Err(
                    "macro_f1 is better when higher, so a floor on it is a min: write min: 0.5"
                        .into(),
                ),
            ),
            (
                floor(EvaluationMetric::Accuracy, Some(1.2), None),
                Err("1.2 is not a fraction from 0 to 1".into()),
            ),
            (
                floor(EvaluationMetric::LogLoss, None, Some(-1.0)),
                Err("-1 is not a log loss (0 or more)".into()),
            ),
            (
                floor(EvaluationMetric::Accuracy, None, None),
                Err("gives no bound: give min".into()),
            ),
        ];
        for (floor, want) in cases {
            assert_eq!(floor.bound(), want, "{floor:?}");
        }
    }

    #[test]
    fn retraining_parameters_use_only_the_alerts_variables() {
        assert_eq!(
            alert_variables("--data={{alert.window.samples}} {{ alert.reason }}"),
            Ok(vec![AlertVariable::WindowSamples, AlertVariable::Reason])
        );
        assert_eq!(alert_variables("plain"), Ok(vec![]));
        assert_eq!(
            alert_variables("{{alert.window.sample}}"),
            Err(
                "unknown variable \"{{alert.window.sample}}\" (expected one of: \
                 alert.window.samples, alert.window.start, alert.window.end, alert.reason; \
                 did you mean \"alert.window.samples\"?)"
                    .to_string()
            )
        );
        assert_eq!(
            alert_variables("x {{alert.reason"),
            Err("unclosed placeholder starting at byte 2".to_string())
        );
    }

    #[test]
    fn defaults() {
        let drift = DriftMonitoring {
            reference: DriftReference::default(),
            window: None,
            min_samples: None,
            effect_size: None,
            fdr: None,
            features: vec![],
            hold: None,
        };
        assert_eq!(drift.window_ms(), 3_600_000);
        assert_eq!(drift.min_samples(), 500);
        assert_eq!(drift.features().len(), FEATURES.len());
        assert!(drift.reference.source().is_err());
        let promote = PromoteRollout::default();
        assert_eq!(promote.steps(), [10, 25, 50, 100]);
        assert_eq!(promote.interval_ms(None), 70 * 60 * 1000);
    }
}
