//! The two kinds of error of `serve`: [`ServeError`] stops the server before it serves (a bad
//! flag, a model that does not load, a port in use); [`RequestError`] is one request refused,
//! answered in the protocol's own error shape (`{"error": "..."}` with an HTTP status, or a
//! gRPC status) while the server goes on.

use std::path::PathBuf;

use crate::ml::MlError;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Model(#[from] MlError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("fetching the model {digest} from {store}: {detail}")]
    Fetch {
        digest: String,
        store: String,
        detail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl ServeError {
    /// A short stable reason, printed with the error.
    pub fn reason(&self) -> &'static str {
        match self {
            ServeError::Model(e) => e.reason(),
            ServeError::InvalidArgument(_) => "InvalidArgument",
            ServeError::Bind { .. } => "BindFailed",
            ServeError::Read { .. } => "IoError",
            ServeError::Fetch { .. } => "ModelFetchFailed",
            ServeError::Io { .. } => "IoError",
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Model(e) => e.exit_code(),
            ServeError::InvalidArgument(_) | ServeError::Read { .. } => crate::EXIT_INVALID,
            ServeError::Bind { .. } | ServeError::Fetch { .. } | ServeError::Io { .. } => {
                crate::EXIT_FAILURE
            }
        }
    }
}

/// What kind of refusal a [`RequestError`] is; each maps to one HTTP status and one gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed body, wrong shape or type, undecodable image.
    BadRequest,
    /// No such model, version or path.
    NotFound,
    /// The body is over --max-body-bytes, or has more instances than the queue holds.
    TooLarge,
    /// The queue is full: try again later.
    Overloaded,
    /// The server is stopping.
    Unavailable,
    /// libtorch failed on an input that passed every check.
    Internal,
}

/// One request refused, with a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    pub refusal: Refusal,
    pub message: String,
}

impl RequestError {
    pub fn bad_request(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::BadRequest,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::NotFound,
            message: message.into(),
        }
    }

    pub fn too_large(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::TooLarge,
            message: message.into(),
        }
    }

    pub fn overloaded(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::Overloaded,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::Unavailable,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> RequestError {
        RequestError {
            refusal: Refusal::Internal,
            message: message.into(),
        }
    }

    /// The same error with `context: ` in front of its message.
    pub fn context(self, context: impl std::fmt::Display) -> RequestError {
        RequestError {
            refusal: self.refusal,
            message: format!("{context}: {}", self.message),
        }
    }

    pub fn http_status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self.refusal {
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self.refusal {
            Refusal::BadRequest => tonic::Code::InvalidArgument,
            Refusal::NotFound => tonic::Code::NotFound,
            Refusal::TooLarge | Refusal::Overloaded => tonic::Code::ResourceExhausted,
            Refusal::Unavailable => tonic::Code::Unavailable,
            Refusal::Internal => tonic::Code::Internal,
        }
    }
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl axum::response::IntoResponse for RequestError {
    /// The error shape both TF Serving and the Open Inference Protocol use.
    fn into_response(self) -> axum::response::Response {
        let body = axum::Json(serde_json::json!({ "error": self.message }));
        (self.http_status(), body).into_response()
    }
}
