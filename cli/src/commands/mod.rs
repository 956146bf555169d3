//! One module per command.

pub mod cache;
pub mod crds;
pub mod inspect;
pub mod run;
pub mod submit;
pub mod summary;
pub mod validate;
