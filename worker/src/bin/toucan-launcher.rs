//! `toucan-launcher`: the launcher alone (`exec`, `stage`, `install-launcher`), for step pods.
//!
//! A step pod's init container copies it from the launcher image into the pod, and the step's
//! own image runs it around the user's command. It never touches libtorch, so it links only
//! the C library, whatever the `torch` feature: `toucan-worker` is the same launcher plus the
//! ML runtime.

use std::process::ExitCode;

use clap::Parser;
use toucan_worker::EXIT_INVALID;
use toucan_worker::launcher::{self, LauncherCommand};

#[derive(Debug, Parser)]
#[command(
    name = "toucan-launcher",
    version,
    about = "Runs one toucan step attempt around its command"
)]
struct Cli {
    #[command(subcommand)]
    command: LauncherCommand,
}

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => launcher::main(cli.command),
        Err(e) => {
            // `--help` and `--version` are "errors" that print to stdout and succeed.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
