//! The router's errors: one enum, each variant with the context a reader needs and a short
//! stable reason (for logs, the JSON errors callers get, and the binary's exit code).
//!
//! Errors a *caller* of the proxy sees (no ready replica, body too large, an unreachable
//! replica) are not here: they are HTTP answers, built in [`crate::proxy`].

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("reading the router configuration {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the router configuration from {origin} is invalid: {detail}")]
    InvalidConfig { origin: String, detail: String },
    #[error("fetching the router configuration from {url}: {detail}")]
    FetchConfig { url: String, detail: String },
    #[error("watching EndpointSlices in namespace {namespace}: {detail}")]
    EndpointSlices { namespace: String, detail: String },
    #[error("serving on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
}

impl RouterError {
    /// A short stable reason, for logs and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            RouterError::ReadConfig { .. } => "ReadConfig",
            RouterError::InvalidConfig { .. } => "InvalidConfig",
            RouterError::FetchConfig { .. } => "FetchConfig",
            RouterError::EndpointSlices { .. } => "EndpointSlices",
            RouterError::Serve { .. } => "Serve",
        }
    }

    /// Whether the error is the user's input (exit code 2) rather than a failure to run (1).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            RouterError::ReadConfig { .. } | RouterError::InvalidConfig { .. }
        )
    }
}

/// An error answer of the router's own (no configuration, no ready replica, body too large,
/// replica unreachable, ...): `{"error": DETAIL, "reason": REASON}`.
pub fn json_error(
    status: axum::http::StatusCode,
    reason: &str,
    detail: &str,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let body = serde_json::json!({"error": detail, "reason": reason});
    (status, axum::Json(body)).into_response()
}
