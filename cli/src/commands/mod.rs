//! One module per command.

pub mod alerts;
pub mod cache;
pub mod crds;
pub mod drift;
pub mod inspect;
pub mod jobs;
pub mod label;
pub mod predict;
pub mod replica;
pub mod run;
pub mod serve;
pub mod study;
pub mod submit;
pub mod summary;
pub mod validate;

use toucan_core::manifest::Diagnostic;

use crate::Outcome;

/// Prints every diagnostic of invalid input and their count (with `then`, what that means,
/// e.g. "nothing was run"): the exit of a command whose manifests did not load.
pub(crate) fn invalid_input(diagnostics: &[Diagnostic], then: Option<&str>) -> Outcome {
    for d in diagnostics {
        eprintln!("{d}");
    }
    match then {
        Some(then) => eprintln!("{} error(s); {then}", diagnostics.len()),
        None => eprintln!("{} error(s)", diagnostics.len()),
    }
    Outcome::InvalidInput
}
