//! `toucan-worker`: the program inside every step.
//!
//! `toucan-worker exec --spec FILE` is the launcher that wraps each step attempt (see
//! `toucan_core::launch`). `ingest` turns source files into a toucan dataset
//! (`toucan_worker::dataset`). Built with the `torch` feature, `train` and `device` run on
//! libtorch through tch (`toucan_worker::ml`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use toucan_worker::ingest;
#[cfg(feature = "torch")]
use toucan_worker::ml;

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
    /// Turn source files (IDX today) into a toucan dataset: seeded train/valid/test split,
    /// record shards, index and dataset card. Writes nothing unless it succeeds.
    Ingest {
        /// Directory holding the source files, e.g. /usr/share/datasets/fashion-mnist.
        #[arg(long)]
        source: PathBuf,
        /// The dataset directory to create; must not exist or be empty.
        #[arg(long)]
        out: PathBuf,
        /// Ratios TRAIN:VALID:TEST of the pooled records.
        #[arg(long, default_value = "80:10:10", value_parser = ingest::split::parse_ratios)]
        split: [u32; 3],
        /// Seed of the split's shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Records per shard.
        #[arg(long, default_value_t = 8192)]
        shard_records: usize,
        /// Class names by label, comma-separated (default: the label numbers).
        #[arg(long, value_delimiter = ',')]
        class_names: Option<Vec<String>>,
    },
    #[cfg(feature = "torch")]
    #[command(flatten)]
    Ml(ml::MlCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Exec { spec } => launcher::main(&spec),
        Command::Ingest {
            source,
            out,
            split,
            seed,
            shard_records,
            class_names,
        } => {
            let opts = ingest::IngestOptions {
                source,
                out,
                ratios: split,
                seed,
                shard_records,
                class_names,
            };
            match ingest::run(&opts) {
                Ok(summary) => {
                    let line = serde_json::json!({
                        "dataset": opts.out,
                        "train": summary.records[0],
                        "valid": summary.records[1],
                        "test": summary.records[2],
                        "classes": summary.classes,
                        "shards": summary.shards,
                    });
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("toucan-worker ingest: {e} ({})", e.reason());
                    ExitCode::from(e.exit_code())
                }
            }
        }
        #[cfg(feature = "torch")]
        Command::Ml(command) => ml::main(command),
    }
}
