//! The operator's settings: flags, each with a matching environment variable.

use std::net::SocketAddr;

use clap::{ArgAction, Args};

/// How the operator runs. Every flag can also be set through the environment variable named
/// beside it, which is how the Helm chart configures it.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// The metadata store: `postgres://USER:PASSWORD@HOST:PORT/DB`, or a SQLite file for a
    /// single-node cluster.
    #[arg(long, env = "TOUCAN_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The artifact store: `s3://BUCKET/PREFIX` (credentials and endpoint from the standard
    /// `AWS_*` variables) or a directory every node mounts at the same path.
    #[arg(long, env = "TOUCAN_ARTIFACTS")]
    pub artifacts: Option<String>,

    /// A Secret in each run's namespace whose keys become the environment of step pods (the
    /// `AWS_*` credentials of an S3 artifact store). Never logged or copied into status.
    #[arg(long, env = "TOUCAN_ARTIFACTS_SECRET")]
    pub artifacts_secret: Option<String>,

    /// Where the control-plane API listens (launcher reports, metric pushes, run reads).
    #[arg(long, env = "TOUCAN_API_LISTEN", default_value = "0.0.0.0:8080")]
    pub api_listen: SocketAddr,

    /// Where `/metrics`, `/livez` and `/readyz` are served.
    #[arg(long, env = "TOUCAN_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,

    /// The API's URL as step pods reach it (the Service). Without it, pods report through
    /// their termination message only and metric pushes are off.
    #[arg(long, env = "TOUCAN_API_URL")]
    pub api_url: Option<String>,

    /// The image that holds `toucan-launcher` on its `PATH`; an init container copies the
    /// launcher from it into each step pod. Every toucan image holds it; `toucan/step-base` is
    /// the smallest.
    #[arg(long, env = "TOUCAN_LAUNCHER_IMAGE", default_value = concat!("toucan/step-base:", env!("CARGO_PKG_VERSION")))]
    pub launcher_image: String,

    /// The image an Endpoint's model servers run (`toucan-worker serve`): the worker's.
    #[arg(long, env = "TOUCAN_SERVING_IMAGE", default_value = concat!("toucan/worker:", env!("CARGO_PKG_VERSION"), "-cpu"))]
    pub serving_image: String,

    /// The image an Endpoint's router runs (`toucan-router`): the operator's own holds it.
    #[arg(long, env = "TOUCAN_ROUTER_IMAGE", default_value = concat!("toucan/operator:", env!("CARGO_PKG_VERSION")))]
    pub router_image: String,

    /// The service account step pods run as (created in a run's namespace when missing); it
    /// needs no permissions: its token only identifies the pod to the API.
    #[arg(
        long,
        env = "TOUCAN_STEP_SERVICE_ACCOUNT",
        default_value = "toucan-step"
    )]
    pub step_service_account: String,

    /// Watch only this namespace (default: all).
    #[arg(long, env = "TOUCAN_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,

    /// Take part in leader election; only the leader reconciles and writes status.
    #[arg(long, env = "TOUCAN_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,

    /// The namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "toucan-system")]
    pub lease_namespace: String,

    /// The Lease's name.
    #[arg(long, env = "TOUCAN_LEASE_NAME", default_value = "toucan-operator")]
    pub lease_name: String,

    /// This replica's identity in the election (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Runs reconciled at once.
    #[arg(long, env = "TOUCAN_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
}

impl Config {
    /// Who this replica is in the leader election.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "toucan-operator".into());
            format!("{host}-{}", std::process::id())
        })
    }
}
