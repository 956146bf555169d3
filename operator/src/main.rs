//! `toucan-operator`: the Kubernetes operator.
//!
//! The controllers that reconcile `Pipeline` and `PipelineRun` on a cluster are not in this
//! release; the binary exists so the workspace, its packaging and the chart have their final
//! shape. It prints the CRDs it will serve and exits.

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "toucan-operator",
    version,
    about = "The toucan Kubernetes operator"
)]
struct Cli {
    /// Print the CustomResourceDefinitions this operator serves, as YAML.
    #[arg(long)]
    print_crds: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_crds {
        match toucan_core::api::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(3);
            }
        }
    }
    eprintln!(
        "toucan-operator: the cluster controllers are not available in this release; use `toucan run` locally"
    );
    ExitCode::from(2)
}
