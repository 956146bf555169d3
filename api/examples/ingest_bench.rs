//! The evaluation ingest-rate benchmark (`bench/ingest/run`, `make bench-ingest`).
//!
//! Serves the control-plane API in this process on loopback over the metadata store at
//! `--store`, then drives it over HTTP as a deployment does: `--concurrency` shippers (the
//! model server replicas, each with its own connection) post `--samples` payload samples in
//! batches of `--batch`, each taking the next batch as it finishes one; then they post one
//! label per sample the same way; then one evaluation (`window=10m`, `maturity=0s`) is read.
//! Prints one JSON object on one line:
//!
//! `{"store","samples","batch","concurrency","samples_s","samples_per_s","labels_s",
//! "labels_per_s","evaluation_s","evaluated","labelled","peak_rss_mib_samples",
//! "peak_rss_mib_labels","peak_rss_mib"}`
//!
//! where `evaluated` and `labelled` are what the evaluation counted (the API evaluates at most
//! its newest 50,000 stored samples) and the `peak_rss_mib` fields are this process's VmHWM
//! (the server, the store's client and the shippers together) after the samples, after the
//! labels and at the end.
//!
//! Sample `i` is a pure function of `i` (ChaCha8 seeded with `i`): a 28x28 grey image's
//! statistics, a UUID request id, class `i mod 10` of Fashion-MNIST's ten predicted with
//! softmax probabilities, two versions (90:10) and a source header, received at a time spread
//! evenly over the hour before the run; its label is the predicted class 85% of the time.
//! Every response is checked: a sample or label the store did not add (a store that was not
//! empty) fails the run rather than inflating the rate.
//!
//! Usage: `ingest_bench --store sqlite:PATH|postgres://... [--samples 100000] [--batch 1000]
//! [--concurrency 4]`, on a fresh store.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use toucan_api::{Anyone, ApiState};
use toucan_core::monitoring::evaluation::{EvaluationReport, LabelCounts};
use toucan_core::serving::{InputStats, PayloadSample, SampleBatch, SampledInstance};
use toucan_core::time::{Millis, now_ms, rfc3339};

const ENDPOINT: &str = "fashion-mnist";
const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];
/// Samples are received evenly over this long before the run starts.
const RECEIVED_OVER_MS: Millis = 3_600_000;
/// How often the label agrees with the prediction.
const PREDICTED_RIGHT: f64 = 0.85;
/// Share of the requests the canary version answers.
const CANARY_SHARE: f64 = 0.1;
/// Generous: a batch on a loaded store takes well under a second.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// What the command line asks for.
#[derive(Debug)]
struct Args {
    store: String,
    samples: u64,
    batch: u64,
    concurrency: usize,
}

/// One generated request: the server's sample of it and the right answer learned later.
#[derive(Debug)]
struct Request {
    sample: PayloadSample,
    truth: &'static str,
}

/// What the API answers to a batch of samples.
#[derive(Debug, Deserialize)]
struct SamplesStored {
    added: u64,
}

fn main() -> anyhow::Result<()> {
    // The API answers a store error with its reason only and logs the error itself.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    let args = parse_args()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    let api = runtime.block_on(serve(&args.store))?;
    let base = format!("http://{api}/api/v1/endpoints/{ENDPOINT}");
    let start = now_ms();

    let (samples_took, stored) =
        ship::<SamplesStored>(&format!("{base}/samples"), &args, &|range| {
            sample_batch(range, args.samples, start)
        })?;
    let peak_after_samples = peak_rss_mib()?;
    let added: u64 = stored.iter().map(|s| s.added).sum();
    if added != args.samples {
        bail!(
            "the store added {added} of {} samples: it was not empty (give a fresh one)",
            args.samples
        );
    }

    let (labels_took, counts) = ship::<LabelCounts>(&format!("{base}/labels"), &args, &|range| {
        label_batch(range, args.samples, start)
    })?;
    let peak_after_labels = peak_rss_mib()?;
    let labelled: u64 = counts.iter().map(|c| c.added).sum();
    if labelled != args.samples {
        bail!(
            "the store added {labelled} of {} labels: {:?}",
            args.samples,
            counts.iter().fold(LabelCounts::default(), sum_counts)
        );
    }

    let agent = agent();
    let evaluating = Instant::now();
    let report: EvaluationReport =
        get(&agent, &format!("{base}/evaluation?window=10m&maturity=0s"))?;
    let evaluation_took = evaluating.elapsed();

    let line = json!({
        "store": store_kind(&args.store),
        "samples": args.samples,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "samples_s": round(samples_took.as_secs_f64(), 3),
        "samples_per_s": round(args.samples as f64 / samples_took.as_secs_f64(), 1),
        "labels_s": round(labels_took.as_secs_f64(), 3),
        "labels_per_s": round(args.samples as f64 / labels_took.as_secs_f64(), 1),
        "evaluation_s": round(evaluation_took.as_secs_f64(), 3),
        "evaluated": report.coverage.samples,
        "labelled": report.coverage.labelled,
        "peak_rss_mib_samples": round(peak_after_samples, 1),
        "peak_rss_mib_labels": round(peak_after_labels, 1),
        "peak_rss_mib": round(peak_rss_mib()?, 1),
    });
    println!("{line}");
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        store: String::new(),
        samples: 100_000,
        batch: 1000,
        concurrency: 4,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value"))?;
        let number = || -> anyhow::Result<u64> {
            match value.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => bail!("{flag}: expected a whole number above 0, got {value:?}"),
            }
        };
        match flag.as_str() {
            "--store" => args.store = value.clone(),
            "--samples" => args.samples = number()?,
            "--batch" => args.batch = number()?,
            "--concurrency" => args.concurrency = usize::try_from(number()?)?,
            other => bail!("unknown argument {other}"),
        }
    }
    if args.samples < CLASSES.len() as u64 {
        bail!(
            "--samples: at least {} (one per class), got {}",
            CLASSES.len(),
            args.samples
        );
    }
    if args.store.is_empty() {
        bail!("--store is required: sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE");
    }
    Ok(args)
}

/// Serves the API over the store at `url` on a free loopback port.
async fn serve(url: &str) -> anyhow::Result<SocketAddr> {
    let store = toucan_store::metadata::open(url)
        .await
        .with_context(|| format!("opening the {} store", store_kind(url)))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the API")?;
    let addr = listener.local_addr()?;
    let app = toucan_api::router(ApiState {
        store,
        auth: Arc::new(Anyone),
        reports: None,
        gauges: None,
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("ingest_bench: the API stopped: {e}");
        }
    });
    Ok(addr)
}

fn store_kind(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else {
        "sqlite"
    }
}

// === shipping ===

/// Posts the batches `body` builds for `0..args.samples` to `url` from `args.concurrency`
/// threads; returns the wall time from the first request to the last response, and every
/// response. The first failure stops every shipper.
fn ship<R: DeserializeOwned + Send>(
    url: &str,
    args: &Args,
    body: &(dyn Fn(Range<u64>) -> anyhow::Result<Vec<u8>> + Sync),
) -> anyhow::Result<(Duration, Vec<R>)> {
    let batches = args.samples.div_ceil(args.batch);
    let next = AtomicU64::new(0);
    let shipper = || -> anyhow::Result<Vec<R>> {
        let agent = agent();
        let mut responses = Vec::new();
        loop {
            let index = next.fetch_add(1, Ordering::Relaxed);
            if index >= batches {
                return Ok(responses);
            }
            let range = index * args.batch..((index + 1) * args.batch).min(args.samples);
            match body(range).and_then(|payload| post(&agent, url, &payload)) {
                Ok(response) => responses.push(response),
                Err(e) => {
                    next.store(batches, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }
    };
    let started = Instant::now();
    let per_shipper = std::thread::scope(|scope| {
        let shippers: Vec<_> = (0..args.concurrency)
            .map(|_| scope.spawn(shipper))
            .collect();
        shippers
            .into_iter()
            .map(|s| s.join().map_err(|_| anyhow!("a shipper panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    Ok((
        started.elapsed(),
        per_shipper.into_iter().flatten().collect(),
    ))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .new_agent()
}

fn post<R: DeserializeOwned>(agent: &ureq::Agent, url: &str, body: &[u8]) -> anyhow::Result<R> {
    let response = agent
        .post(url)
        .header("content-type", "application/json")
        .send(body)
        .with_context(|| format!("POST {url}"))?;
    read(response, "POST", url)
}

fn get<R: DeserializeOwned>(agent: &ureq::Agent, url: &str) -> anyhow::Result<R> {
    let response = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    read(response, "GET", url)
}

fn read<R: DeserializeOwned>(
    mut response: ureq::http::Response<ureq::Body>,
    method: &str,
    url: &str,
) -> anyhow::Result<R> {
    let status = response.status();
    if !status.is_success() {
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| format!("(unreadable body: {e})"));
        bail!("{method} {url}: {status}: {text}");
    }
    response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_json()
        .with_context(|| format!("{method} {url}: reading the response"))
}

fn sum_counts(total: LabelCounts, c: &LabelCounts) -> LabelCounts {
    LabelCounts {
        added: total.added + c.added,
        updated: total.updated + c.updated,
        unchanged: total.unchanged + c.unchanged,
        unknown: total.unknown + c.unknown,
    }
}

// === the generated requests ===

fn sample_batch(range: Range<u64>, samples: u64, start: Millis) -> anyhow::Result<Vec<u8>> {
    let samples = range
        .map(|i| request(i, samples, start).map(|r| r.sample))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(serde_json::to_vec(&SampleBatch { samples })?)
}

fn label_batch(range: Range<u64>, samples: u64, start: Millis) -> anyhow::Result<Vec<u8>> {
    let labels = range
        .map(|i| {
            let r = request(i, samples, start)?;
            Ok(json!({ "requestId": r.sample.request_id, "label": r.truth }))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(serde_json::to_vec(&json!({ "labels": labels }))?)
}

/// Request `index` of `count`, received between an hour before `start` and `start`.
fn request(index: u64, count: u64, start: Millis) -> anyhow::Result<Request> {
    let mut rng = ChaCha8Rng::seed_from_u64(index);
    let request_id = uuid(&mut rng);

    // The classes take turns, so any ten consecutive samples name every class (labels must
    // name a class the stored predictions name); the predicted class's logit leads the others.
    let predicted = usize::try_from(index % CLASSES.len() as u64)?;
    let mut logits: Vec<f64> = (0..CLASSES.len()).map(|_| normal(&mut rng)).collect();
    let runner_up = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    logits[predicted] = runner_up + 0.5 + 3.5 * unit(&mut rng);
    let top = logits[predicted];
    let exp: Vec<f64> = logits.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = exp.iter().sum();
    let probabilities: Vec<f32> = exp.iter().map(|e| (e / total) as f32).collect();
    let truth = if unit(&mut rng) < PREDICTED_RIGHT {
        predicted
    } else {
        let other = 1 + (rng.next_u32() % (CLASSES.len() as u32 - 1)) as usize;
        (predicted + other) % CLASSES.len()
    };

    let brightness = (0.286 + 0.08 * normal(&mut rng)).clamp(0.0, 1.0);
    let stats = InputStats {
        width: 28,
        height: 28,
        channels: 1,
        brightness,
        contrast: (0.35 + 0.05 * normal(&mut rng)).clamp(0.0, 1.0),
        channel_means: vec![brightness],
        sharpness: (0.12 + 0.03 * normal(&mut rng)).abs(),
    };
    let version = if unit(&mut rng) < CANARY_SHARE {
        "v2"
    } else {
        "v1"
    };
    let source = if rng.next_u32() % 3 == 0 {
        "mobile"
    } else {
        "web"
    };
    let latency_ms = 1.5 - 3.0 * (1.0 - unit(&mut rng)).ln();
    let ago = RECEIVED_OVER_MS * i64::try_from(count - 1 - index)? / i64::try_from(count)?;
    let sample = PayloadSample {
        request_id,
        model: ENDPOINT.to_string(),
        version: version.to_string(),
        received_at: rfc3339(start - ago)?,
        protocol: "v1".to_string(),
        latency_ms: round(latency_ms, 3),
        instances: vec![SampledInstance {
            stats,
            input: None,
            embedding: None,
            label: i64::try_from(predicted)?,
            class: CLASSES[predicted].to_string(),
            probabilities,
        }],
        attributes: BTreeMap::from([("x-source".to_string(), source.to_string())]),
    };
    Ok(Request {
        sample,
        truth: CLASSES[truth],
    })
}

/// A random (version 4) UUID, as `x-request-id` headers usually carry.
fn uuid(rng: &mut ChaCha8Rng) -> String {
    let (high, low) = (rng.next_u64(), rng.next_u64());
    let high = (high & !0xf000) | 0x4000;
    let low = (low & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// Uniform in `[0, 1)`.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Standard normal (Box-Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u = 1.0 - unit(rng);
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * unit(rng)).cos()
}

fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// This process's peak resident set size (VmHWM), in MiB.
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .ok_or_else(|| anyhow!("/proc/self/status has no readable VmHWM"))?;
    Ok(kib / 1024.0)
}
