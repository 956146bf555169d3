//! toucan-store: where runs and artifacts are kept.
//!
//! - [`metadata`]: the metadata store over sqlx (SQLite locally, PostgreSQL in a cluster) and
//!   its migrations (`migrations/{sqlite,postgres}` at the workspace root);
//! - [`artifacts`]: the content-addressed artifact store over object_store (a directory
//!   locally, an S3-compatible bucket in a cluster);
//! - [`cache`]: serving a step from the cache, which reads both.
//!
//! Each part is a feature (`metadata`, `artifacts`; both by default) so that the launcher,
//! which only moves artifacts, links no database.

#[cfg(feature = "artifacts")]
pub mod artifacts;
#[cfg(all(feature = "metadata", feature = "artifacts"))]
pub mod cache;
#[cfg(feature = "metadata")]
pub mod metadata;
