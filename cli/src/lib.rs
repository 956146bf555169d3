//! `toucan`: the command line, and the local runtime that runs manifests on this machine.
//!
//! Exit codes: 0 success, 1 the run failed or was cancelled (or, with `--cluster`, the cluster
//! could not be read), 2 invalid input (nothing is written), 3 anything else went wrong (a store
//! could not be opened, an I/O error).
//!
//! The binary is a call to [`main`]; the operator's image holds no binary of its own for the
//! command line: `toucan-operator` runs [`main`] when it is invoked as `toucan`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod cluster;
mod commands;
mod home;
mod local;
mod output;

use cluster::ClusterArgs;
use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "toucan",
    version,
    about = "Run ML pipelines locally or on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Pipeline (or a PipelineRun referencing one) on this machine.
    Run(commands::run::RunArgs),
    /// Serve an Endpoint on this machine: its versions' model servers and the router, until
    /// Ctrl-C.
    Serve(commands::serve::ServeArgs),
    /// Send images to a served model and print what it predicts.
    Predict(commands::predict::PredictArgs),
    /// Send the right answers for served requests (a CSV of request_id,label) for continuous
    /// evaluation.
    Label(commands::label::LabelArgs),
    /// Compare two tables (CSV or Parquet) column by column for data drift.
    Drift(commands::drift::DriftArgs),
    /// Run a Pipeline on a Kubernetes cluster: store its `path:` inputs in the operator's
    /// artifact store from this machine, then create its PipelineRun.
    Submit(commands::submit::SubmitArgs),
    /// Check manifests without running anything; reports every error.
    Validate {
        /// Manifest files or directories.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
    /// List resources.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Show one resource in detail.
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
    },
    /// Print the log of a step attempt.
    Logs {
        run: String,
        step: String,
        /// The attempt (1-based); the latest when omitted.
        #[arg(long)]
        attempt: Option<u32>,
        /// A distributed step's replica (`worker-1`); its leader when omitted.
        #[arg(long, value_name = "ROLE-INDEX")]
        replica: Option<String>,
        /// A distributed step's incarnation (0 first, one more at every restart); the
        /// last when omitted.
        #[arg(long)]
        incarnation: Option<u32>,
        /// Print the metrics the step appended to `$TOUCAN_METRICS_FILE` (one JSON line each,
        /// e.g. per training epoch) instead of its log.
        #[arg(long)]
        metrics: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Inspect and clean the step cache.
    Cache {
        #[command(subcommand)]
        what: commands::cache::CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
enum GetWhat {
    /// Runs, newest first.
    Runs {
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// With --cluster: the PipelineRuns of every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Distributed steps and TrainingJobs run on this machine, newest run first: phase,
    /// roles, ready replicas, restarts and preemptions. With --cluster, the cluster's
    /// TrainingJobs, newest first: phase, ready replicas, restarts, preemptions, progress.
    Jobs {
        /// How many of the newest runs to look in; with --cluster, how many jobs to list.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// With --cluster: the TrainingJobs of every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Endpoints served from this machine (`toucan serve`): phase, ready versions, the split
    /// in force, the candidate being rolled out and the URL. With --cluster, the cluster's
    /// Endpoints, newest first.
    Endpoints {
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// With --cluster: the Endpoints of every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Alerts of the endpoints served from this machine, newest first: drift, metrics below
    /// their floors and regressions, when they fired, and what the endpoint did (the
    /// retraining run it started, or why it held). With --cluster, those of the namespace's
    /// Endpoints, from the operator's API.
    Alerts {
        /// Only this endpoint's.
        endpoint: Option<String>,
        /// Also breaches that cleared before they fired.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value_t = commands::alerts::DEFAULT_LIMIT)]
        limit: u32,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// The trials of a study (by id, or the newest study of that name): state, objective,
    /// parameters and run.
    Trials {
        /// The study's id or name; with --cluster, the TuningStudy's name.
        study: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Debug, Subcommand)]
enum DescribeWhat {
    /// An endpoint served from this machine: versions, split, rollout, latency and errors.
    /// With --cluster, an Endpoint of the cluster, with its conditions, its events and the
    /// router's figures (from the operator's API).
    Endpoint {
        name: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// A study: its phase, best trial, parameter importances, the objective by trial as a
    /// sparkline, and every trial.
    Study {
        /// The study's id or name (the newest study of that name); with --cluster, the
        /// TuningStudy's name.
        study: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// A run: its steps with phases, cache hits, attempts, durations and outputs.
    Run {
        /// The run's id; with --cluster, the PipelineRun's name.
        id: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// A TrainingJob or distributed step run on this machine: its gang's restarts,
    /// preemptions, last failure, and every replica's end. With --cluster, a TrainingJob of
    /// the cluster: its status, with per-role counts, progress, last failure and conditions.
    Job {
        /// A run's id, or a job's name (its newest run); with --cluster, the TrainingJob's
        /// name.
        id: String,
        #[arg(short, long, value_enum, default_value_t = Format::Table)]
        output: Format,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// How a command ended, mapped to the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Outcome {
    Success,
    RunFailed,
    InvalidInput,
    /// `--cluster`: the cluster or the operator's API could not be read.
    ClusterUnavailable,
    Error,
}

impl From<Outcome> for ExitCode {
    fn from(o: Outcome) -> ExitCode {
        ExitCode::from(match o {
            Outcome::Success => 0,
            Outcome::RunFailed | Outcome::ClusterUnavailable => 1,
            Outcome::InvalidInput => 2,
            Outcome::Error => 3,
        })
    }
}

/// Parses the command line and runs the command; the exit code says how it ended.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TOUCAN_LOG")
                // kube's client logs every failed request; the commands report them.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return Outcome::Error.into();
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => commands::run::run(args).await,
            Command::Serve(args) => commands::serve::serve(args).await,
            Command::Predict(args) => commands::predict::predict(args).await,
            Command::Label(args) => commands::label::label(args).await,
            Command::Drift(args) => commands::drift::drift(args),
            Command::Get {
                what:
                    GetWhat::Endpoints {
                        output,
                        all_namespaces,
                        cluster,
                    },
            } => match cluster.selected(all_namespaces) {
                Ok(true) => cluster::get_endpoints(&cluster, all_namespaces, output).await,
                Ok(false) => commands::serve::get_endpoints(output).await,
                Err(e) => invalid(&e),
            },
            Command::Get {
                what:
                    GetWhat::Alerts {
                        endpoint,
                        all,
                        limit,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => {
                    cluster::get_alerts(&cluster, endpoint.as_deref(), all, limit, output).await
                }
                Ok(false) => {
                    commands::alerts::get_alerts(endpoint.as_deref(), all, limit, output).await
                }
                Err(e) => invalid(&e),
            },
            Command::Describe {
                what:
                    DescribeWhat::Endpoint {
                        name,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => cluster::describe_endpoint(&cluster, &name, output).await,
                Ok(false) => commands::serve::describe_endpoint(&name, output).await,
                Err(e) => invalid(&e),
            },
            Command::Submit(args) => commands::submit::submit(args).await,
            Command::Validate { files } => commands::validate::validate(&files),
            Command::Crds => commands::crds::print(),
            Command::Get {
                what:
                    GetWhat::Runs {
                        limit,
                        output,
                        all_namespaces,
                        cluster,
                    },
            } => match cluster.selected(all_namespaces) {
                Ok(true) => cluster::get_runs(&cluster, all_namespaces, limit, output).await,
                Ok(false) => commands::inspect::get_runs(limit, output).await,
                Err(e) => invalid(&e),
            },
            Command::Get {
                what:
                    GetWhat::Jobs {
                        limit,
                        output,
                        all_namespaces,
                        cluster,
                    },
            } => match cluster.selected(all_namespaces) {
                Ok(true) => cluster::get_jobs(&cluster, all_namespaces, limit, output).await,
                Ok(false) => commands::jobs::get_jobs(limit, output).await,
                Err(e) => invalid(&e),
            },
            Command::Get {
                what:
                    GetWhat::Trials {
                        study,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => cluster::get_trials(&cluster, &study, output).await,
                Ok(false) => commands::study::get_trials(&study, output).await,
                Err(e) => invalid(&e),
            },
            Command::Describe {
                what:
                    DescribeWhat::Study {
                        study,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => cluster::describe_study(&cluster, &study, output).await,
                Ok(false) => commands::study::describe_study(&study, output).await,
                Err(e) => invalid(&e),
            },
            Command::Describe {
                what:
                    DescribeWhat::Job {
                        id,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => cluster::describe_job(&cluster, &id, output).await,
                Ok(false) => commands::jobs::describe_job(&id, output).await,
                Err(e) => invalid(&e),
            },
            Command::Describe {
                what:
                    DescribeWhat::Run {
                        id,
                        output,
                        cluster,
                    },
            } => match cluster.selected(false) {
                Ok(true) => cluster::describe_run(&cluster, &id, output).await,
                Ok(false) => commands::inspect::describe_run(&id, output).await,
                Err(e) => invalid(&e),
            },
            Command::Logs {
                run,
                step,
                attempt,
                replica,
                incarnation,
                metrics,
                output,
                cluster,
            } => {
                let choice = commands::replica::ReplicaChoice {
                    replica,
                    incarnation,
                };
                match cluster.selected(false) {
                    Ok(true) => {
                        cluster::logs(&cluster, &run, &step, attempt, &choice, metrics, output)
                            .await
                    }
                    Ok(false) => {
                        commands::inspect::logs(&run, &step, attempt, &choice, metrics, output)
                            .await
                    }
                    Err(e) => invalid(&e),
                }
            }
            Command::Cache { what } => commands::cache::cache(what).await,
        }
    });
    match result {
        Ok(outcome) => outcome.into(),
        Err(e) => {
            eprintln!("error: {e:#}");
            Outcome::Error.into()
        }
    }
}

/// Reports invalid command-line input.
fn invalid(message: &str) -> anyhow::Result<Outcome> {
    eprintln!("error: {message}");
    Ok(Outcome::InvalidInput)
}
