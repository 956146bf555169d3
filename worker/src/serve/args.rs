//! The flags of `toucan-worker serve`, each checked while the arguments are parsed (a bad value
//! exits with [`crate::EXIT_INVALID`] before the model is loaded).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::args::{AtLeast, Range};
use crate::ml::device::DeviceChoice;

/// The default REST address: TF Serving's REST port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8501";

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The model: a file written by `export` (or a `train --out` directory), or
    /// `sha256:DIGEST` of an exported file in the artifact store at --artifacts.
    #[arg(long)]
    pub model: String,
    /// The model's name in request paths (`/v1/models/NAME`, `/v2/models/NAME`): letters,
    /// digits, `.`, `_` and `-`.
    #[arg(long, value_parser = model_name)]
    pub name: String,
    /// The version the server answers as (`/versions/V` paths must name it).
    #[arg(long, default_value = "1", value_parser = model_name)]
    pub version: String,
    /// The REST address (TF Serving and Open Inference Protocol, `/metrics`); port 0 picks a
    /// free port, printed on start.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Also serve the Open Inference Protocol over gRPC on this address.
    #[arg(long)]
    pub grpc_listen: Option<SocketAddr>,
    /// The most instances one forward pass takes.
    #[arg(long, default_value_t = 32, value_parser = AtLeast(1usize).parser())]
    pub max_batch_size: usize,
    /// How long the first instance of a batch waits for others, in milliseconds.
    #[arg(long, default_value_t = 5)]
    pub max_delay_ms: u64,
    /// The most instances waiting for the model; a request that does not fit is refused
    /// (HTTP 429, gRPC RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 256, value_parser = AtLeast(1usize).parser())]
    pub queue: usize,
    /// libtorch's threads for the forward pass (default: libtorch's choice).
    #[arg(long, value_parser = AtLeast(1i32).parser())]
    pub threads: Option<i32>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// The largest request body (REST) or message (gRPC), in bytes.
    #[arg(long, default_value_t = 16 << 20, value_parser = AtLeast(1usize).parser())]
    pub max_body_bytes: usize,
    /// The share of requests (by request id, the same in every replica) whose payload sample
    /// is shipped to --sample-sink.
    #[arg(long, default_value_t = 0.0, value_parser = Range::up_to(1.0).parser(), requires = "sample_sink")]
    pub sample_rate: f64,
    /// Samples carry the image itself as the model took it (its pixels at the model's size,
    /// before normalization), not only its statistics.
    #[arg(long)]
    pub sample_inputs: bool,
    /// The control-plane API that receives samples
    /// (`POST URL/api/v1/endpoints/NAME/samples`).
    #[arg(long, value_name = "URL")]
    pub sample_sink: Option<String>,
    /// A file holding the bearer token for --sample-sink, read again for every shipment.
    #[arg(long, value_name = "PATH", value_parser = crate::args::existing_file)]
    pub sample_token_file: Option<PathBuf>,
    /// Request headers recorded in each sample, comma-separated.
    #[arg(long, value_name = "HEADER,...", value_delimiter = ',', value_parser = header_name)]
    pub sample_attributes: Vec<String>,
    /// The most samples per shipment.
    #[arg(long, default_value_t = 64, value_parser = AtLeast(1usize).parser())]
    pub sample_batch: usize,
    /// The most samples waiting to be shipped; more are dropped (and counted).
    #[arg(long, default_value_t = 1024, value_parser = AtLeast(1usize).parser())]
    pub sample_queue: usize,
    /// The artifact store that --model sha256:DIGEST is read from (a directory, file://,
    /// s3://BUCKET[/PREFIX]).
    #[arg(long, value_name = "URL")]
    pub artifacts: Option<String>,
    /// Where a model fetched from --artifacts is kept, by digest
    /// [default: $XDG_CACHE_HOME/toucan/models, else ~/.cache/toucan/models].
    #[arg(long, value_name = "DIR")]
    pub model_cache: Option<PathBuf>,
}

/// A name that is one path segment as it is: `/v1/models/NAME:predict` must parse back.
fn model_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_string())
    } else {
        Err("must be 1 to 128 letters, digits, '.', '_' or '-'".into())
    }
}

fn header_name(s: &str) -> Result<String, String> {
    let name = s.trim().to_ascii_lowercase();
    axum::http::HeaderName::from_bytes(name.as_bytes())
        .map(|_| name)
        .map_err(|_| format!("{s:?} is not an HTTP header name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_path_segments() {
        assert!(model_name("digits-v2_1.0").is_ok());
        for bad in ["", "a/b", "a:predict", "a b", "é"] {
            assert!(model_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_names_are_lower_cased_and_checked() {
        assert_eq!(header_name("X-Tenant").as_deref(), Ok("x-tenant"));
        assert!(header_name("bad header").is_err());
    }
}
