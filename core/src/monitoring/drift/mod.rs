//! Drift: two-sample tests and distances between a reference and a current sample.
