//! `toucan`: the command line, and the local runtime that runs manifests on this machine (see
//! the library's documentation for the exit codes).

fn main() -> std::process::ExitCode {
    toucan::main()
}
