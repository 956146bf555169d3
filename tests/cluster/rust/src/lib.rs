//! The test services of toucan's integration tests, shared by every crate's tests: the
//! Kubernetes test cluster ([`cluster`]), a PostgreSQL database of a test's own ([`postgres`]),
//! the S3 server's location ([`s3`]), Prometheus and Alertmanager ([`alerting`]), toucan's container images for the cluster's container
//! nodes ([`images`]) and loopback ports and requests ([`net`]).
//!
//! A service that is not there is skipped, not failed, so that a plain `cargo test` passes on a
//! machine without it: the helper says on stderr which test it skips and why (past the test
//! harness's capture, so it shows in a passing run) and returns `None`, and the test returns
//! early. `make test` starts every service and sets `TOUCAN_REQUIRE_CLUSTER=1`,
//! `TOUCAN_REQUIRE_POSTGRES=1`, `TOUCAN_REQUIRE_S3=1` and `TOUCAN_REQUIRE_IMAGES=1`, which turn
//! those skips into errors.

pub mod alerting;
pub mod cluster;
pub mod images;
pub mod net;
pub mod postgres;
pub mod s3;
mod skip;
