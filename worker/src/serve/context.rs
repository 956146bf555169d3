//! The one [`Context`] every protocol's handlers share (by `Arc`): the served model, the
//! batcher, the sampler, the metrics and the limits; and [`Context::predict`], the path every
//! protocol's inference request takes once it has parsed its payload:
//!
//! raw instances → decoded and checked ([`super::input`], on a blocking thread) → the
//! batcher's queue → predictions → a payload sample when the request id is sampled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use toucan_core::serving::{PayloadSample, SampledInstance};

use super::batcher::{Batcher, Keep, Prediction};
use super::error::RequestError;
use super::input::{self, RawInstance};
use super::metrics::Metrics;
use super::model::ServedModel;
use super::samples::Sampler;

/// The protocols, as metrics and samples name them.
pub const V1: &str = "v1";
pub const V2: &str = "v2";
pub const GRPC: &str = "grpc";

/// What every handler shares.
#[derive(Debug)]
pub struct Context {
    pub model: ServedModel,
    pub batcher: Batcher,
    pub sampler: Sampler,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
}

/// One inference request, as far as the server's bookkeeping goes.
#[derive(Debug, Clone)]
pub struct Call {
    pub request_id: String,
    pub protocol: &'static str,
    pub started: Instant,
    /// The headers (or gRPC metadata) that samples record.
    pub attributes: BTreeMap<String, String>,
}

impl Context {
    /// Decodes `raw`, runs it through the model, and records a sample if the call is sampled.
    pub async fn predict(
        &self,
        call: &Call,
        raw: Vec<RawInstance>,
    ) -> Result<Vec<Prediction>, RequestError> {
        let sampled = self.sampler.wants(&call.request_id);
        let shape = self.model.image;
        let instances = tokio::task::spawn_blocking(move || input::prepare(raw, shape, sampled))
            .await
            .map_err(|_| RequestError::internal("decoding the inputs failed"))??;
        let count = instances.len();
        let mut pixels = Vec::with_capacity(count * shape.pixels());
        let mut stats = Vec::with_capacity(if sampled { count } else { 0 });
        for instance in instances {
            pixels.extend_from_slice(&instance.pixels);
            stats.extend(instance.stats);
        }
        let keep = Keep {
            inputs: sampled && self.sampler.inputs,
            embeddings: sampled,
        };
        let predictions = self.batcher.infer(pixels, count, keep).await?;
        if sampled {
            self.record(call, stats, &predictions);
        }
        Ok(predictions)
    }

    fn record(
        &self,
        call: &Call,
        stats: Vec<toucan_core::serving::InputStats>,
        predictions: &[Prediction],
    ) {
        let in_server = call.started.elapsed();
        let received_ms =
            toucan_core::time::now_ms() - i64::try_from(in_server.as_millis()).unwrap_or_default();
        let received_at = toucan_core::time::rfc3339(received_ms)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
        let instances = stats
            .into_iter()
            .zip(predictions)
            .map(|(stats, p)| SampledInstance {
                stats,
                input: p.input.clone(),
                embedding: p.embedding.clone(),
                label: p.label,
                class: p.class.clone(),
                probabilities: p.probabilities.clone(),
            })
            .collect();
        self.sampler.offer(PayloadSample {
            request_id: call.request_id.clone(),
            model: self.model.name.clone(),
            version: self.model.version.clone(),
            received_at,
            protocol: call.protocol.to_string(),
            latency_ms: in_server.as_secs_f64() * 1e3,
            instances,
            attributes: call.attributes.clone(),
        });
    }
}

/// A request id for a request that brought none: a ULID (time-ordered, unique).
pub fn new_request_id() -> String {
    ulid::Ulid::new().to_string()
}

/// The request's own id when it is usable as one (1 to 128 visible ASCII characters).
pub fn usable_request_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        assert!(usable_request_id("abc-123"));
        assert!(!usable_request_id(""));
        assert!(!usable_request_id("has space"));
        assert!(!usable_request_id(&"x".repeat(129)));
        let a = new_request_id();
        assert!(usable_request_id(&a));
        assert_ne!(a, new_request_id());
    }
}
