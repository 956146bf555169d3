//! toucan's domain: the custom resource types, the pipeline engine, cache keys, and the
//! metadata and artifact stores. Pure decisions live here; no kube client and no process
//! spawning, so the local runtime and the operator run the same code.

pub mod api;
pub mod artifacts;
pub mod cache;
pub mod engine;
pub mod expr;
pub mod graph;
pub mod http;
pub mod launch;
pub mod manifest;
pub mod schedule;
pub mod store;
pub mod template;
pub mod time;
