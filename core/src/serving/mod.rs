//! Serving, pure: where a request goes and whether it is sampled, and the payload sample a
//! model server ships to the control-plane API.
//!
//! Every process that sees a request — the router, each replica of `toucan-worker serve` —
//! must agree on these decisions without talking to each other, so they are functions of the
//! request's key alone: the same request id is sampled (or not) by every server, and the same
//! sticky key reaches the same version however many routers there are.

pub mod autoscale;
pub mod rollout;
pub mod spec;
pub mod traffic;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where `key` falls in `[0, 1)`, for one purpose (`salt`): the first 53 bits of the SHA-256 of
/// both. Independent purposes use different salts, so being sampled says nothing about the
/// version a request was routed to.
pub fn unit_interval(key: &str, salt: &str) -> f64 {
    let mut hash = Sha256::new();
    hash.update(salt.as_bytes());
    hash.update([0]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the request `request_id` is one of the `rate` (in `[0, 1]`) whose payload is
/// recorded. The same request id gives the same answer in every process.
pub fn sampled(request_id: &str, rate: f64) -> bool {
    rate > 0.0 && unit_interval(request_id, "sample") < rate
}

/// The entry of `weights` that the point `at` (in `[0, 1)`) falls into, each entry taking a
/// share of the interval proportional to its weight, in the order given. `None` when every
/// weight is zero.
pub fn pick<T>(weights: &[(T, u32)], at: f64) -> Option<&T> {
    let total: u64 = weights.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut target = (at.clamp(0.0, 1.0) * total as f64) as u64;
    target = target.min(total - 1);
    let mut seen = 0u64;
    for (item, weight) in weights {
        seen += u64::from(*weight);
        if target < seen {
            return Some(item);
        }
    }
    None
}

/// What a model server records of one sampled request, shipped in batches
/// (`POST /api/v1/endpoints/{endpoint}/samples`, body [`SampleBatch`]).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PayloadSample {
    /// The request's `x-request-id`: how labels are joined to it later.
    pub request_id: String,
    /// The model's name as the server serves it (behind an Endpoint, the Endpoint's name).
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// RFC 3339, UTC.
    pub received_at: String,
    /// `v1` (TF Serving REST), `v2` (Open Inference Protocol REST) or `grpc`.
    pub protocol: String,
    /// Time in the server, from the request read to the response written.
    pub latency_ms: f64,
    /// One entry per instance of the request, in order.
    pub instances: Vec<SampledInstance>,
    /// Request headers the endpoint's slices name (lower-case name to value).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// One instance of a sampled request: its input's summary (or the input itself) and the
/// prediction.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SampledInstance {
    pub stats: InputStats,
    /// The image as the model took it, when the endpoint records inputs and not only their
    /// statistics: pixel values in `[0, 255]` at the model's input size, row by row with the
    /// channels last (HWC), before normalization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Vec<f32>>,
    /// The model's embedding of the input: its penultimate layer's activations, projected to
    /// [`crate::monitoring::embedding::DIMENSIONS`] numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// The predicted class's index and name, and every class's probability.
    pub label: i64,
    pub class: String,
    pub probabilities: Vec<f32>,
}

/// Summary statistics of one input image, as decoded (before resizing): what drift detection
/// compares with the training data's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputStats {
    pub width: u32,
    pub height: u32,
    pub channels: u32,
    /// Mean pixel value over every channel, in `[0, 1]`.
    pub brightness: f64,
    /// Standard deviation of the grey-level pixel values, in `[0, 1]`.
    pub contrast: f64,
    /// Mean of each channel, in `[0, 1]`.
    pub channel_means: Vec<f64>,
    /// Variance of the grey-level image's 4-neighbour Laplacian.
    pub sharpness: f64,
}

/// The body of a sample shipment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleBatch {
    pub samples: Vec<PayloadSample>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_request_is_sampled_the_same_way_and_the_rate_holds() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("req-{i}")).collect();
        let first: Vec<bool> = ids.iter().map(|id| sampled(id, 0.05)).collect();
        let again: Vec<bool> = ids.iter().map(|id| sampled(id, 0.05)).collect();
        assert_eq!(first, again);
        let n = first.iter().filter(|s| **s).count() as f64;
        // Binomial(20000, 0.05): sd ≈ 30.8; 5 sd either side.
        assert!((n - 1000.0).abs() < 155.0, "{n}");
        assert!(ids.iter().all(|id| !sampled(id, 0.0)));
        assert!(ids.iter().all(|id| sampled(id, 1.0)));
    }

    #[test]
    fn pick_splits_the_interval_by_weight_in_order() {
        let w = [("v1", 90), ("v2", 10)];
        assert_eq!(pick(&w, 0.0), Some(&"v1"));
        assert_eq!(pick(&w, 0.8999), Some(&"v1"));
        assert_eq!(pick(&w, 0.9), Some(&"v2"));
        assert_eq!(pick(&w, 0.999_999), Some(&"v2"));
        assert_eq!(pick(&[("a", 0), ("b", 5)], 0.0), Some(&"b"));
        assert_eq!(pick::<&str>(&[("a", 0)], 0.5), None);
        assert_eq!(pick::<&str>(&[], 0.5), None);
        let n = (0..10_000)
            .filter(|i| pick(&w, unit_interval(&i.to_string(), "route")) == Some(&"v2"))
            .count();
        assert!((800..1200).contains(&n), "{n}");
    }

    #[test]
    fn salts_are_independent() {
        let both = (0..10_000)
            .filter(|i| {
                let k = i.to_string();
                unit_interval(&k, "sample") < 0.1 && unit_interval(&k, "route") < 0.1
            })
            .count();
        // 10000 * 0.01 = 100, sd ≈ 10.
        assert!((50..150).contains(&both), "{both}");
    }
}
