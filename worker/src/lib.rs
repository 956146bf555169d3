//! The ML runtime of `toucan-worker`, as a library so that tests and benchmarks reach it:
//! datasets ([`dataset`]), ingest ([`ingest`]), the image statistics of drift detection
//! ([`stats`]) and, with the `torch` feature, training on libtorch ([`ml`]), collectives across
//! data-parallel replicas on libtorch's c10d ([`collectives`]) and the model server of `serve`
//! ([`serve`]). The launcher's subcommands
//! (`exec`, `stage`, `install-launcher`) come from the `toucan-launcher` crate; the value
//! parsers of the flags are [`args`].

pub mod args;
#[cfg(feature = "torch")]
pub mod collectives;
pub mod dataset;
pub mod ingest;
pub mod metrics;
#[cfg(feature = "torch")]
pub mod ml;
#[cfg(feature = "torch")]
pub mod serve;
pub mod staged;
pub mod stats;

/// The exit code for invalid arguments, configuration or input data: a usage error that gives
/// the same result every time, so never worth retrying. clap's own usage errors (an unknown
/// flag, a value a flag's parser refuses) exit with it too.
pub const EXIT_INVALID: u8 = 2;

/// The exit code for every other failure (I/O, libtorch): one that a retry may not meet.
pub const EXIT_FAILURE: u8 = 1;
