//! Payload samples: which requests are recorded, and how the records reach the control plane.
//!
//! A request is sampled when `toucan_core::serving::sampled(request_id, rate)` says so: the
//! same request id is sampled by every replica, so a label that arrives later can be joined
//! to it. The request path only offers a finished [`PayloadSample`] to a bounded queue and
//! never waits: when the queue is full the sample is dropped and counted
//! (`sample_drops_total{reason="queue_full"}`).
//!
//! One shipper task takes samples off the queue, up to `--sample-batch` at a time or what
//! came within [`FLUSH_INTERVAL`] of the first, and `POST`s them as a [`SampleBatch`] to
//! `{sink}/api/v1/endpoints/{name}/samples` with a bounded timeout (ureq on a blocking
//! thread). A shipment that fails is dropped and counted (`reason="sink_error"`), not retried:
//! a sink that is down or slow makes the queue fill and samples drop, and costs requests
//! nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use tokio::sync::mpsc;
use toucan_core::serving::{PayloadSample, SampleBatch, sampled};

use super::metrics::{DROP_QUEUE_FULL, DROP_SINK_ERROR, Metrics};

/// How long the shipper waits for more samples after the first before it ships.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// The most time one shipment may take.
const SHIP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where samples go.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The full URL of the endpoint's samples.
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub batch: usize,
}

impl SinkConfig {
    pub fn new(
        base: &str,
        endpoint: &str,
        token_file: Option<PathBuf>,
        batch: usize,
    ) -> SinkConfig {
        SinkConfig {
            url: format!(
                "{}/api/v1/endpoints/{}/samples",
                base.trim_end_matches('/'),
                toucan_core::url::path_segment(endpoint)
            ),
            token_file,
            batch,
        }
    }
}

/// The request path's side: decides and offers.
#[derive(Debug)]
pub struct Sampler {
    rate: f64,
    /// Whether samples carry the preprocessed input.
    pub inputs: bool,
    /// Lower-case header names recorded as attributes.
    attributes: Vec<String>,
    queue: Option<mpsc::Sender<PayloadSample>>,
    metrics: Arc<Metrics>,
}

impl Sampler {
    /// A sampler that never samples.
    pub fn off(metrics: Arc<Metrics>) -> Sampler {
        Sampler {
            rate: 0.0,
            inputs: false,
            attributes: Vec::new(),
            queue: None,
            metrics,
        }
    }

    /// A sampler of `rate` feeding a queue of `capacity` samples, and the queue's other end
    /// for [`ship`].
    pub fn new(
        rate: f64,
        inputs: bool,
        attributes: Vec<String>,
        capacity: usize,
        metrics: Arc<Metrics>,
    ) -> (Sampler, mpsc::Receiver<PayloadSample>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let sampler = Sampler {
            rate,
            inputs,
            attributes,
            queue: Some(tx),
            metrics,
        };
        (sampler, rx)
    }

    /// Whether the request `request_id` is recorded.
    pub fn wants(&self, request_id: &str) -> bool {
        self.queue.is_some() && sampled(request_id, self.rate)
    }

    /// The values of the recorded headers that the request has.
    pub fn attributes(&self, headers: &HeaderMap) -> std::collections::BTreeMap<String, String> {
        self.attributes
            .iter()
            .filter_map(|name| {
                let value = headers.get(name.as_str())?.to_str().ok()?;
                Some((name.clone(), value.to_string()))
            })
            .collect()
    }

    /// Queues a sample for shipping, or drops it when the queue is full. Never waits.
    pub fn offer(&self, sample: PayloadSample) {
        if let Some(queue) = &self.queue
            && queue.try_send(sample).is_err()
        {
            self.metrics.dropped(DROP_QUEUE_FULL, 1);
        }
    }
}

/// Ships what the queue receives until every [`Sampler`] is dropped and the queue is empty.
pub async fn ship(
    mut queue: mpsc::Receiver<PayloadSample>,
    sink: SinkConfig,
    metrics: Arc<Metrics>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(SHIP_TIMEOUT))
        .http_status_as_error(true)
        .build()
        .new_agent();
    let sink = Arc::new(sink);
    let mut batch = Vec::with_capacity(sink.batch);
    while let Some(first) = queue.recv().await {
        batch.push(first);
        let flush = tokio::time::sleep(FLUSH_INTERVAL);
        tokio::pin!(flush);
        while batch.len() < sink.batch {
            tokio::select! {
                more = queue.recv() => match more {
                    Some(sample) => batch.push(sample),
                    None => break,
                },
                () = &mut flush => break,
            }
        }
        let samples = std::mem::take(&mut batch);
        let count = samples.len() as u64;
        let (agent, to) = (agent.clone(), Arc::clone(&sink));
        let shipped = tokio::task::spawn_blocking(move || post(&agent, &to, samples)).await;
        match shipped {
            Ok(Ok(())) => {
                metrics.samples_shipped.inc_by(count);
            }
            Ok(Err(e)) => {
                metrics.dropped(DROP_SINK_ERROR, count);
                eprintln!(
                    "toucan-worker serve: dropped {count} samples: {}: {e}",
                    sink.url
                );
            }
            Err(_) => metrics.dropped(DROP_SINK_ERROR, count),
        }
    }
}

fn post(agent: &ureq::Agent, sink: &SinkConfig, samples: Vec<PayloadSample>) -> Result<(), String> {
    let mut request = agent.post(&sink.url);
    if let Some(path) = &sink.token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("reading the token {}: {e}", path.display()))?;
        request = request.header("Authorization", &format!("Bearer {}", token.trim()));
    }
    request
        .send_json(&SampleBatch { samples })
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_url_escapes_the_endpoint() {
        let sink = SinkConfig::new("http://api:8080/", "a b", None, 8);
        assert_eq!(sink.url, "http://api:8080/api/v1/endpoints/a%20b/samples");
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let metrics = Arc::new(Metrics::new());
        let (sampler, _rx) = Sampler::new(1.0, false, vec![], 1, Arc::clone(&metrics));
        assert!(sampler.wants("any"));
        let sample = PayloadSample {
            request_id: "r".into(),
            model: "m".into(),
            version: "1".into(),
            received_at: "2025-01-01T00:00:00Z".into(),
            protocol: "v1".into(),
            latency_ms: 1.0,
            instances: vec![],
            attributes: Default::default(),
        };
        sampler.offer(sample.clone());
        sampler.offer(sample);
        assert!(
            metrics
                .encode()
                .contains(r#"toucan_serve_sample_drops_total{reason="queue_full"} 1"#)
        );
        assert!(!Sampler::off(metrics).wants("any"));
    }

    #[test]
    fn attributes_are_the_named_headers_present() {
        let (sampler, _rx) = Sampler::new(
            1.0,
            false,
            vec!["x-tenant".into(), "x-absent".into()],
            1,
            Arc::new(Metrics::new()),
        );
        let mut headers = HeaderMap::new();
        headers.insert("x-tenant", "acme".parse().unwrap());
        headers.insert("x-other", "no".parse().unwrap());
        let attrs = sampler.attributes(&headers);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs["x-tenant"], "acme");
    }
}
