//! Monitoring, pure: what toucan measures of a served model once it is live.
//!
//! [`evaluation`] joins labels to payload samples and computes windowed quality metrics with
//! their confidence intervals; [`drift`] compares the inputs and predictions a model sees now
//! with a reference and says, column by column, whether they moved. The shells feed them rows
//! they read from the metadata store and act on what they return. [`spec`] reads an
//! Endpoint's `spec.monitoring` with its defaults; [`rules`] names the gauges toucan exports
//! and generates the Prometheus alerting rules over them; [`assess`] is one pass of an
//! endpoint's monitoring (the figures exported and the breaches seen), [`alerts`] turns
//! breaches into alerts that fire and resolve with hysteresis, and [`retrain`] decides whether
//! an alert starts a retraining run; [`retention`] says which samples and alerts have been kept
//! long enough. [`embedding`] is how a model's embeddings of its inputs
//! are recorded and where their reference lives.

pub mod alerts;
pub mod assess;
pub mod drift;
pub mod embedding;
pub mod evaluation;
pub mod export;
pub mod retention;
pub mod retrain;
pub mod rules;
pub mod spec;
