//! `toucan-operator`: reconciles toucan's custom resources on a Kubernetes cluster and serves
//! the control-plane API. See the crate docs of `toucan_operator` and `charts/toucan`.
//!
//! Invoked as `toucan` (through a link of that name, as in the operator's image), it is the
//! command line instead, for `kubectl exec` debugging: one binary holds both, so the code they
//! share (the engine, the stores, the Kubernetes client) is in the image once.

use std::process::ExitCode;

use clap::Parser;
use toucan_operator::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "toucan-operator",
    version,
    about = "The toucan Kubernetes operator"
)]
struct Cli {
    /// Print the CustomResourceDefinitions this operator serves, as YAML, and exit.
    #[arg(long)]
    print_crds: bool,

    #[command(flatten)]
    config: Config,
}

fn main() -> ExitCode {
    if invoked_as_cli() {
        return toucan::main();
    }
    let cli = Cli::parse();
    if cli.print_crds {
        return match toucan_core::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(3)
            }
        };
    }
    let _telemetry = match toucan_operator::telemetry::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("toucan-operator: setting up logging and tracing: {e:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("toucan-operator: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(toucan_operator::serve(cli.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("toucan-operator: {e:#}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Whether the program name (`argv[0]`, without its directory) is `toucan`.
fn invoked_as_cli() -> bool {
    std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .is_some_and(|program| program.file_name() == Some("toucan".as_ref()))
}
