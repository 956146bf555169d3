//! `toucan-worker`: the program inside every step.
//!
//! `toucan-worker exec --spec FILE` is the launcher that wraps each step attempt (see
//! `toucan_core::launch` and the `toucan-launcher` crate, whose own small binary step pods
//! run). `ingest` turns source files into a toucan dataset
//! (`toucan_worker::dataset`). Built with the `torch` feature, `train` and `device` run on
//! libtorch through tch (`toucan_worker::ml`), and `serve` serves an exported model
//! (`toucan_worker::serve`).
//!
//! Exit codes: 0 success; `EXIT_INVALID` (2) for invalid arguments, configuration or input,
//! clap's usage errors included, which a retry cannot fix; `EXIT_FAILURE` (1) for any other
//! failure; 75 when `train` was stopped by a signal after writing a checkpoint. `exec` exits
//! with its command's code (also in its report), or `LAUNCHER_FAILURE_EXIT` (120) when the
//! launcher itself failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use toucan_launcher as launcher;
use toucan_worker::args::{self, AtLeast};
#[cfg(feature = "torch")]
use toucan_worker::ml;
use toucan_worker::{EXIT_INVALID, ingest};

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
    #[command(flatten)]
    Launcher(launcher::LauncherCommand),
    /// Turn source files (IDX files, image folders or a CSV pixel table) into a toucan
    /// dataset: seeded train/valid/test split, record shards, index, dataset card and drift
    /// reference. Writes nothing unless it succeeds.
    Ingest {
        /// The source: a directory of IDX files (e.g. /usr/share/datasets/fashion-mnist), a
        /// directory of images (one sub-folder per class, or any layout with --labels), or a
        /// CSV pixel table.
        #[arg(long, value_parser = args::existing_path)]
        source: PathBuf,
        /// The dataset directory to create; must not exist or be empty.
        #[arg(long)]
        out: PathBuf,
        /// How to read --source. auto: a .csv file is a pixel table; a directory with
        /// *images-idx3-ubyte files is IDX; a directory with sub-folders, or with --labels, is
        /// an image folder.
        #[arg(long, value_enum, default_value_t = ingest::SourceFormat::Auto)]
        format: ingest::SourceFormat,
        /// Ratios TRAIN:VALID:TEST of the pooled records.
        #[arg(long, default_value = "80:10:10", value_parser = ingest::split::parse_ratios)]
        split: [u32; 3],
        /// Seed of the split's shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Records per shard.
        #[arg(long, default_value_t = 8192, value_parser = AtLeast(1usize).parser())]
        shard_records: usize,
        /// Class names by label, comma-separated. Default: the label numbers (IDX, numeric
        /// labels), or the sorted folder names or label texts. With text labels or class
        /// folders, it sets the class order and every label must be one of the names.
        #[arg(long, value_delimiter = ',')]
        class_names: Option<Vec<String>>,
        /// Image folders: a CSV with a header row naming each image (path relative to
        /// --source) and its label, instead of class sub-folders.
        #[arg(long, value_name = "FILE.csv", value_parser = args::existing_file)]
        labels: Option<PathBuf>,
        /// The column of --labels holding the image path [default: file].
        #[arg(long, value_name = "NAME")]
        image_column: Option<String>,
        /// The column holding the label, in --labels or in a CSV pixel table [default: label].
        #[arg(long, value_name = "NAME")]
        label_column: Option<String>,
        /// CSV pixel tables: the image shape HEIGHTxWIDTHxCHANNELS of the pixel columns
        /// (channels 1 or 3, values in HWC order). Default: square grayscale when the number
        /// of pixel columns is a perfect square.
        #[arg(long, value_name = "HxWxC", value_parser = ingest::convert::parse_shape)]
        image_shape: Option<toucan_worker::dataset::ImageShape>,
        /// Resize every image to HEIGHTxWIDTH (bilinear: the image crate's triangle filter).
        /// Without it, the images of a folder must all have one size.
        #[arg(long, value_name = "HxW", value_parser = ingest::convert::parse_size)]
        resize: Option<ingest::Size>,
        /// Channels of the dataset: 1 (grayscale, Rec. 709 luma) or 3 (RGB). Default: what
        /// the source has; for image folders 1 when every file is grayscale, else 3.
        #[arg(long, value_name = "1|3", value_parser = ingest::convert::parse_channels)]
        channels: Option<u32>,
        /// A CSV pixel table whose records join the training split (never validation or
        /// test, so evaluations stay comparable), e.g. the labelled production samples a
        /// retraining run gets as `{{alert.window.samples}}`: its `label` column (class names)
        /// and its `pixel*` columns, at the dataset's image shape. Repeatable; a table with a
        /// header and no rows, or an empty value, adds nothing.
        #[arg(long, value_name = "FILE.csv", value_parser = args::existing_file_or_empty)]
        add_train: Vec<PathBuf>,
    },
    /// Write a dataset split back out as PNG files in one folder per class (the layout
    /// `ingest --format folder` reads).
    ExportImages {
        /// The dataset directory.
        #[arg(long, value_parser = args::existing_dir)]
        data: PathBuf,
        #[arg(long, default_value = "train", value_parser = args::split())]
        split: String,
        /// Only these classes, comma-separated (default: all).
        #[arg(long, value_delimiter = ',')]
        classes: Vec<String>,
        /// At most this many images per class.
        #[arg(long, value_parser = AtLeast(1usize).parser())]
        per_class: Option<usize>,
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    #[cfg(feature = "torch")]
    #[command(flatten)]
    Ml(ml::MlCommand),
    /// Serve an exported model over TF Serving's REST API and the Open Inference Protocol
    /// (REST and gRPC), with dynamic batching, Prometheus metrics and payload samples. Prints
    /// one JSON line with the bound addresses once it is ready; SIGTERM drains and exits 0.
    #[cfg(feature = "torch")]
    Serve(Box<toucan_worker::serve::ServeArgs>),
}

/// Every flag takes a value that looks like a negative number as its value, so that
/// `--epochs -1` is refused by `--epochs`'s own parser rather than read as a flag `-1`.
fn negative_numbers_are_values(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|arg| {
        let takes_values = arg.get_action().takes_values();
        arg.allow_negative_numbers(takes_values)
    })
    .mut_subcommands(negative_numbers_are_values)
}

fn parse() -> Result<Cli, clap::Error> {
    let matches = negative_numbers_are_values(Cli::command()).try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn main() -> ExitCode {
    #[cfg(feature = "torch")]
    ml::memory::keep_freed_blocks();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` are "errors" that print to stdout and succeed.
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Launcher(command) => launcher::main(command),
        Command::Ingest {
            source,
            out,
            format,
            split,
            seed,
            shard_records,
            class_names,
            labels,
            image_column,
            label_column,
            image_shape,
            resize,
            channels,
            add_train,
        } => {
            let opts = ingest::IngestOptions {
                source,
                out,
                format,
                ratios: split,
                seed,
                shard_records,
                class_names,
                labels,
                image_column,
                label_column,
                image_shape,
                image: ingest::ImageOptions { resize, channels },
                add_train,
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
        Command::ExportImages {
            data,
            split,
            classes,
            per_class,
            out,
        } => {
            let opts = toucan_worker::dataset::images::ExportImages {
                split: &split,
                classes: &classes,
                per_class,
            };
            let result = toucan_worker::dataset::Dataset::open(&data)
                .and_then(|d| toucan_worker::dataset::images::export(&d, &out, &opts));
            match result {
                Ok(n) => {
                    println!("{}", serde_json::json!({"images": n, "out": out}));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("toucan-worker export-images: {e} ({})", e.reason());
                    ExitCode::from(e.exit_code())
                }
            }
        }
        #[cfg(feature = "torch")]
        Command::Ml(command) => ml::main(command),
        #[cfg(feature = "torch")]
        Command::Serve(args) => toucan_worker::serve::main(&args),
    }
}
