//! `toucan-launcher`: the launcher alone (`exec`, `stage`, `install-launcher`), for step pods.
//!
//! A step pod's init container copies it from the launcher image into the pod, and the step's
//! own image runs it around the user's command, so it links nothing but the C library: no
//! libtorch, whatever the worker is built with. `toucan-worker` has the same subcommands.

use std::process::ExitCode;

use clap::Parser;
use toucan_launcher::LauncherCommand;

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
        Ok(cli) => toucan_launcher::main(cli.command),
        Err(e) => {
            // `--help` and `--version` are "errors" that print to stdout and succeed.
            let _ = e.print();
            if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
    }
}
