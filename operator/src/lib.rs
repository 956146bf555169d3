//! toucan-operator: the Kubernetes shell around toucan's engine.
//!
//! [`run`] reconciles PipelineRuns into step pods with the same engine, cache keys and store
//! rows as `toucan run` (a distributed step as a gang of pods, [`run::gang`]); [`pipeline`]
//! starts PipelineRuns on a Pipeline's schedule; [`job`] runs a TrainingJob as a PipelineRun of
//! one distributed step and reports its status; [`study`] runs a TuningStudy's trials as
//! PipelineRuns, as the tuning engine decides; [`endpoint`] serves an Endpoint's model versions
//! as Deployments behind toucan's router, with rollouts and autoscaling decided by core. The
//! control-plane API (`toucan_core::http`) is served with [`auth::ClusterAuth`]; [`admin`]
//! serves metrics and health; [`leader`] makes sure only one replica reconciles; [`objects`]
//! holds the API calls they share. [`serve`]
//! wires it all together.

pub mod admin;
pub mod auth;
pub mod conditions;
pub mod config;
pub mod context;
pub mod endpoint;
pub mod error;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod notes;
pub mod objects;
pub mod pipeline;
pub mod queue;
pub mod run;
mod serve;
pub mod status;
pub mod study;
pub mod telemetry;
pub mod triggers;

pub use serve::serve;
