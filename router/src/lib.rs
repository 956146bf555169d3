//! toucan's request router: an HTTP reverse proxy in front of the model servers of one
//! Endpoint, which splits traffic between versions by weight, keeps sticky keys on one
//! version, mirrors a share of requests to a shadow version, retries on another replica, and
//! reports what each version answered.
//!
//! Data flow: a source ([`sources`]) publishes validated [`RouterConfig`]s; [`serve`] turns
//! each into a [`table::RoutingTable`] in the shared [`Context`]; the probe ([`health`])
//! marks replicas ready or not; every request goes through [`proxy`] (version from
//! [`split`], replica from [`replicas`], copies through [`shadow`], tries through
//! [`upstream`]) and is counted in [`stats`] and [`metrics`], which [`admin`] serves.

pub mod admin;
pub mod config;
pub mod context;
pub mod error;
pub mod health;
pub mod metrics;
pub mod proxy;
pub mod replicas;
pub mod shadow;
pub mod sources;
pub mod split;
pub mod stats;
pub mod table;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use axum::routing::get;
use tokio::net::TcpListener;

pub use config::{RouterConfig, ShadowConfig, VersionConfig};
pub use context::{Context, RouterSettings};
pub use error::RouterError;
pub use sources::ConfigUpdates;

/// The router's HTTP service: its own paths, and everything else proxied.
pub fn app(ctx: Arc<Context>) -> axum::Router {
    axum::Router::new()
        .route(admin::METRICS_PATH, get(admin::metrics))
        .route(admin::STATS_PATH, get(admin::stats))
        .route("/livez", get(admin::livez))
        .route("/readyz", get(admin::readyz))
        .fallback(proxy::forward)
        .with_state(ctx)
}

/// Serves on `listener` until `shutdown` completes, applying every configuration `configs`
/// publishes and probing replicas every `settings.probe_interval`. Requests in progress
/// when `shutdown` completes are finished first.
pub async fn serve(
    listener: TcpListener,
    settings: RouterSettings,
    configs: ConfigUpdates,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RouterError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let probe_interval = settings.probe_interval;
    let ctx = Context::new(settings);
    let applier = tokio::spawn(apply_configs(Arc::clone(&ctx), configs));
    let prober = tokio::spawn(health::probe_replicas(Arc::clone(&ctx), probe_interval));
    let served = axum::serve(listener, app(ctx))
        .with_graceful_shutdown(shutdown)
        .await;
    applier.abort();
    prober.abort();
    served.map_err(|source| RouterError::Serve { addr, source })
}

/// Applies the configuration in force now and every later one; the last one stays when the
/// source goes away.
async fn apply_configs(ctx: Arc<Context>, mut configs: ConfigUpdates) {
    loop {
        if let Some(config) = configs.borrow_and_update().clone() {
            ctx.apply(&config);
        }
        if configs.changed().await.is_err() {
            return;
        }
    }
}
