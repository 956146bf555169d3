//! `toucan-worker`: the program inside every step.
//!
//! `toucan-worker exec --spec FILE` is the launcher that wraps each step attempt (see
//! `toucan_core::launch`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod launcher;

#[derive(Debug, Parser)]
#[command(
    name = "toucan-worker",
    version,
    about = "The toucan step launcher and ML runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one step attempt described by a launch spec: materialize inputs, run the command,
    /// store outputs, write the report.
    Exec {
        /// The launch spec (JSON) written by the runtime.
        #[arg(long)]
        spec: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec { spec } => launcher::main(&spec),
    }
}
