//! Continuous evaluation: labels joined to payload samples, and windowed quality metrics.
//!
//! Data flow: the store returns an endpoint's payload samples each with its label, if one
//! arrived ([`LabelledSample`], or [`join_labels`] over rows in memory); [`evaluate`] reads
//! the model's classes off the predictions, puts every sample in a tumbling window, groups
//! each window's samples by version and by slice value, leaves out samples too young for
//! their labels to be in (the maturity delay), and computes for each group the label
//! coverage and delay, the prediction distribution and, over the labelled samples, the
//! [`WindowMetrics`] — accuracy, macro precision, recall and F1, log loss, expected
//! calibration error, per-class precision and recall and the confusion matrix — each with a
//! confidence interval, then a moving average across windows. The result,
//! [`EvaluationReport`], is what the API returns.
//!
//! The modules, each with its definitions and choices:
//!
//! - [`classification`] and [`loss`]: the figures of hard decisions and the log loss, shared
//!   with `toucan-worker evaluate` (and checked against scikit-learn there and here);
//! - [`calibration`]: the expected calibration error and its binning;
//! - [`interval`]: Wilson score intervals and the seeded percentile bootstrap;
//! - [`join`]: labels, the join, the model's classes and what is read from a sample;
//! - [`metrics`]: the figures of one set of labelled records;
//! - [`windows`]: windows, groups, maturity, coverage and the moving average.

pub mod calibration;
pub mod classification;
pub mod interval;
pub mod join;
pub mod loss;
pub mod metrics;
pub mod windows;

pub use interval::Estimate;
pub use join::{
    Label, LabelCounts, LabelRecord, LabelledSample, ModelClasses, first_unknown_class, join_labels,
};
pub use metrics::{ClassEvaluation, ClassShare, WindowMetrics};
pub use windows::{
    EvaluationError, EvaluationOptions, EvaluationReport, EvaluationWindow, GroupEvaluation,
    LabelCoverage, SmoothedMetrics, evaluate,
};
