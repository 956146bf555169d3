//! `toucan-worker serve`: a model server for one exported model, over TF Serving's REST API,
//! the Open Inference Protocol (KServe v2) over REST and over gRPC, with dynamic batching,
//! Prometheus metrics and payload samples for drift detection.
//!
//! How a request flows:
//!
//! 1. A protocol parses it: [`rest_v1`], [`rest_v2`] (both routed by [`rest`], which gives
//!    each request its `x-request-id` and counts it) or [`grpc`]; the Open Inference
//!    Protocol's tensors are [`tensors`]. They check the model's name and version against
//!    [`model`] and turn the payload into raw instances.
//! 2. [`context::Context::predict`] decodes and checks the instances ([`input`]; the image
//!    statistics of a sampled request, [`stats`]), queues them in the [`batcher`], whose one
//!    inference thread runs them through libtorch with other requests' instances, and offers a
//!    payload sample to [`samples`] when the request id is sampled.
//! 3. The protocol writes the predictions in its own shape; [`metrics`] counts it.
//!
//! Start-up ([`run`]): fetch the model if it is a digest ([`fetch`]), load it on the
//! inference thread, bind the sockets, then print one JSON line on stdout —
//! `{"model", "version", "listening", "grpc"}` with the bound addresses — which is how a
//! caller learns the ports when it asked for port 0. SIGTERM or SIGINT stops accepting,
//! finishes the requests in flight, flushes the samples (for a few seconds at most) and exits
//! 0.

pub mod args;
pub mod batcher;
pub mod context;
pub mod error;
pub mod fetch;
pub mod grpc;
pub mod input;
pub mod metrics;
pub mod model;
pub mod rest;
pub mod rest_v1;
pub mod rest_v2;
pub mod samples;
pub use crate::stats;
pub mod tensors;

use std::future::IntoFuture;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

pub use args::ServeArgs;
use batcher::BatchPolicy;
use context::Context;
use error::ServeError;
use metrics::Metrics;
use model::ServedModel;
use samples::{Sampler, SinkConfig};

/// How long a stopping server waits for the last samples to ship.
const SAMPLE_FLUSH_GRACE: Duration = Duration::from_secs(5);
/// How long a stopping server waits for the inference thread to finish its queue.
const INFERENCE_GRACE: Duration = Duration::from_secs(30);

/// The line printed once the server is ready: how a caller learns the bound ports.
#[derive(Debug, serde::Serialize)]
struct Ready<'a> {
    model: &'a str,
    version: &'a str,
    listening: Option<String>,
    grpc: Option<String>,
}

/// `toucan-worker serve`.
pub fn main(args: &ServeArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toucan-worker serve: {e} ({})", e.reason());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Serves until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs) -> Result<(), ServeError> {
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let device = args.device.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()
        .map_err(|source| ServeError::Io {
            context: "starting the runtime".into(),
            source,
        })?;
    runtime.block_on(serve(args, device))
}

async fn serve(args: &ServeArgs, device: tch::Device) -> Result<(), ServeError> {
    let path = fetch::model_file(args).await?;
    let metrics = Arc::new(Metrics::new());
    let policy = BatchPolicy {
        max_batch_size: args.max_batch_size,
        max_delay: Duration::from_millis(args.max_delay_ms),
        queue: args.queue,
    };
    let thread_metrics = Arc::clone(&metrics);
    let (batcher, card, inference) =
        tokio::task::spawn_blocking(move || batcher::start(path, device, policy, thread_metrics))
            .await
            .map_err(|e| ServeError::InvalidArgument(format!("loading the model: {e}")))??;

    let (sampler, shipper) = match &args.sample_sink {
        Some(sink) if args.sample_rate > 0.0 => {
            let (sampler, queue) = Sampler::new(
                args.sample_rate,
                args.sample_inputs,
                args.sample_attributes.clone(),
                args.sample_queue,
                Arc::clone(&metrics),
            );
            let config = SinkConfig::new(
                sink,
                &args.name,
                args.sample_token_file.clone(),
                args.sample_batch,
            );
            let task = tokio::spawn(samples::ship(queue, config, Arc::clone(&metrics)));
            (sampler, Some(task))
        }
        _ => (Sampler::off(Arc::clone(&metrics)), None),
    };
    let ctx = Arc::new(Context {
        model: ServedModel {
            name: args.name.clone(),
            version: args.version.clone(),
            classes: card.classes,
            image: card.image,
        },
        batcher,
        sampler,
        metrics,
        max_body_bytes: args.max_body_bytes,
    });

    let rest_listener = bind(args.listen).await?;
    let grpc_listener = match args.grpc_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    let local = |l: &TcpListener| l.local_addr().map(|a| a.to_string()).ok();
    let ready = Ready {
        model: &args.name,
        version: &args.version,
        listening: local(&rest_listener),
        grpc: grpc_listener.as_ref().and_then(local),
    };
    let line = serde_json::to_string(&ready).unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    // A caller that stopped reading stdout does not stop the server.
    let _ = writeln!(stdout, "{line}").and_then(|()| stdout.flush());
    drop(stdout);

    let (stop, stopped) = watch::channel(false);
    let stop = Arc::new(stop);
    let on_signal = Arc::clone(&stop);
    tokio::spawn(async move {
        signalled().await;
        let _ = on_signal.send(true);
    });
    let until_stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let rest_server = {
        let stop = Arc::clone(&stop);
        let serving = axum::serve(rest_listener, rest::router(Arc::clone(&ctx)))
            .with_graceful_shutdown(until_stopped(stopped.clone()))
            .into_future();
        async move {
            let result = serving.await.map_err(|source| ServeError::Io {
                context: "serving REST".into(),
                source,
            });
            let _ = stop.send(true);
            result
        }
    };
    let grpc_server = {
        let stop = Arc::clone(&stop);
        let service = grpc::server(Arc::clone(&ctx));
        let stopped = stopped.clone();
        async move {
            let Some(listener) = grpc_listener else {
                return Ok(());
            };
            let result = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    until_stopped(stopped),
                )
                .await
                .map_err(|e| ServeError::Io {
                    context: "serving gRPC".into(),
                    source: std::io::Error::other(e),
                });
            let _ = stop.send(true);
            result
        }
    };
    let (rest_result, grpc_result) = tokio::join!(rest_server, grpc_server);

    // The servers are done with the context: dropping it closes the batcher's and the
    // sampler's queues, so the inference thread and the shipper finish what is queued and end.
    drop(ctx);
    let joined = tokio::task::spawn_blocking(move || inference.join());
    if tokio::time::timeout(INFERENCE_GRACE, joined).await.is_err() {
        eprintln!("toucan-worker serve: the inference thread did not finish in time");
    }
    if let Some(shipper) = shipper
        && tokio::time::timeout(SAMPLE_FLUSH_GRACE, shipper)
            .await
            .is_err()
    {
        eprintln!("toucan-worker serve: samples still queued at exit were dropped");
    }
    rest_result?;
    grpc_result
}

async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// Resolves on SIGTERM or SIGINT.
async fn signalled() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
