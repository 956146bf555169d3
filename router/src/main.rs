//! `toucan-router`: wires the arguments, logging, the configuration source, the listener and
//! the signals around [`toucan_router::serve`].
//!
//! Prints one JSON line on stdout once listening (`{"listening":"127.0.0.1:PORT"}`), logs on
//! stderr, stops gracefully on SIGTERM or SIGINT. Exit codes: 0 stopped, 1 failed while
//! running, 2 invalid input (arguments, configuration).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use toucan_router::sources::{endpointslices, file, url};
use toucan_router::{ConfigUpdates, RouterError, RouterSettings};

/// toucan's request router for the model servers of one Endpoint.
#[derive(Debug, Parser)]
#[command(name = "toucan-router", version)]
struct Args {
    /// The configuration file (JSON or YAML), re-read when it changes.
    #[arg(long, value_name = "PATH", required_unless_present = "config_url")]
    config: Option<PathBuf>,
    /// A URL serving the configuration, fetched every second (http:// only).
    #[arg(long, value_name = "URL", conflicts_with = "config")]
    config_url: Option<String>,
    /// A file holding the bearer token each --config-url fetch carries (in a cluster, the
    /// pod's service-account token); read again on every fetch.
    #[arg(long, value_name = "PATH", requires = "config_url")]
    config_token_file: Option<PathBuf>,
    /// Take every version's replicas from the Endpoint's EndpointSlices in this namespace
    /// (weights still from --config or --config-url).
    #[arg(long, value_name = "NAMESPACE")]
    endpointslices: Option<String>,
    /// The EndpointSlice label naming a slice's version (with --endpointslices).
    #[arg(long, value_name = "LABEL", default_value = endpointslices::DEFAULT_VERSION_LABEL)]
    version_label: String,
    /// Where to listen; port 0 picks a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: String,
    /// How often every replica's /v2/health/ready is probed.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    probe_interval: Duration,
    /// Larger request bodies are answered 413.
    #[arg(long, value_name = "BYTES", default_value_t = RouterSettings::default().max_body_bytes)]
    max_body_bytes: usize,
    /// Mirrored requests in flight at most; more are dropped and counted.
    #[arg(long, value_name = "N", default_value_t = RouterSettings::default().shadow_concurrency)]
    shadow_concurrency: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let invalid = e
                .downcast_ref::<RouterError>()
                .is_some_and(RouterError::is_invalid_input);
            ExitCode::from(if invalid { 2 } else { 1 })
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let configs = configuration(&args).await?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|source| RouterError::Serve {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr()?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(
            stdout,
            "{}",
            serde_json::json!({ "listening": addr.to_string() })
        )?;
        stdout.flush()?;
    }
    tracing::info!(%addr, "listening");
    let settings = RouterSettings {
        probe_interval: args.probe_interval,
        max_body_bytes: args.max_body_bytes,
        shadow_concurrency: args.shadow_concurrency,
    };
    toucan_router::serve(listener, settings, configs, stop_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The configuration source the arguments name.
async fn configuration(args: &Args) -> Result<ConfigUpdates, RouterError> {
    let base = match (&args.config, &args.config_url) {
        (Some(path), _) => file::watch_file(path.clone()).await?,
        (None, Some(config_url)) => url::watch_url_every(
            config_url,
            args.config_token_file.clone(),
            url::URL_POLL_INTERVAL,
        )?,
        (None, None) => {
            return Err(RouterError::InvalidConfig {
                origin: "arguments".into(),
                detail: "--config or --config-url is needed".into(),
            });
        }
    };
    match &args.endpointslices {
        Some(namespace) => {
            endpointslices::watch_endpointslices(
                namespace.clone(),
                args.version_label.clone(),
                base,
            )
            .await
        }
        None => Ok(base),
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for SIGINT: {e}");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM: stopping"),
        _ = interrupt => tracing::info!("SIGINT: stopping"),
    }
}
