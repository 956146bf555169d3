//! The ML runtime of `toucan-worker`, as a library so that tests and benchmarks reach it:
//! datasets ([`dataset`]), ingest ([`ingest`]) and, with the `torch` feature, training on
//! libtorch ([`ml`]). The launcher (`exec`) lives in the binary.

pub mod control_plane;
pub mod dataset;
pub mod ingest;
pub mod metrics;
#[cfg(feature = "torch")]
pub mod ml;
pub mod staged;
