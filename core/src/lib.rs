//! toucan's domain, pure: the custom resource types, manifests and their validation,
//! expressions and templates, cache keys, the launcher's contract, the records a run is kept
//! as, and one engine per resource.
//!
//! Nothing here does I/O: no async runtime, no database, no kube client, no processes. The
//! shells — the local runtime in the `toucan` CLI and the operator — observe the world, hand
//! what they saw to an engine, and carry out the effects it returns (see [`engine`] for the
//! pattern every resource follows). Storage is the `toucan-store` crate; the control-plane
//! HTTP API is `toucan-api`.

pub mod api;
pub mod cache;
pub mod duration;
pub mod echo;
pub mod engine;
pub mod expr;
pub mod graph;
pub mod launch;
pub mod manifest;
pub mod monitoring;
pub mod records;
pub mod schedule;
pub mod serving;
pub mod suggest;
pub mod template;
pub mod time;
pub mod tuning;
pub mod url;
