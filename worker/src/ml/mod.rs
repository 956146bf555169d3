//! Training and inference on libtorch through tch (the `torch` feature).
//!
//! - `device` reports what libtorch sees ([`device`]).
//! - `train` fits a model on a toucan dataset: config ([`config`]), batches prepared on a
//!   loader thread ([`data`], [`augment`]), the model zoo ([`model`], [`efficientnet`]),
//!   optimizers and schedules ([`optim`], [`schedule`]), checkpoints ([`checkpoint`]) and
//!   metrics ([`sink`]); the loop is [`train`].
//! - `evaluate`, `export` and `predict` use a trained model ([`infer`], [`commands`]).

pub mod augment;
pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod data;
pub mod device;
pub mod efficientnet;
pub mod infer;
pub mod memory;
pub mod model;
pub mod optim;
pub mod replicas;
pub mod schedule;
pub mod sink;
pub mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::dataset::DatasetError;

/// The subcommands that need libtorch.
#[derive(Debug, clap::Subcommand)]
pub enum MlCommand {
    /// Print what libtorch sees (threads, CUDA, build options) as JSON.
    Device {
        /// The device `--device` would select.
        #[arg(long, default_value = "auto")]
        device: device::DeviceChoice,
    },
    /// Train a model on a toucan dataset (made by `ingest`).
    Train(Box<train::TrainArgs>),
    /// Compute accuracy, per-class and averaged precision/recall/F1, ROC-AUC, PR-AUC, top-k
    /// accuracy, the confusion matrix (JSON and PNG), overall and per slice.
    Evaluate(commands::EvaluateArgs),
    /// Pack a trained model into one file: weights, architecture and preprocessing.
    Export(commands::ExportArgs),
    /// Classify image files or a dataset split with a trained or exported model.
    Predict(commands::PredictArgs),
}

/// Errors of training: the dataset's, libtorch's, or a bad argument.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    #[error("{context}: {source}")]
    Torch {
        context: String,
        source: tch::TchError,
    },
    #[error("{0}")]
    InvalidArgument(String),
    /// A config file with a bad value: `file: field: message`.
    #[error("{}{}: {message}", file.display(), if field.is_empty() { String::new() } else { format!(": {field}") })]
    Config {
        file: PathBuf,
        field: String,
        message: String,
    },
    /// A flag whose value breaks a rule of the training config together with the other
    /// settings (each flag's own range is checked while the arguments are parsed).
    #[error("{flag}: {message}")]
    Flag { flag: String, message: String },
    /// Stopped by SIGTERM/SIGINT after writing a checkpoint.
    #[error("stopped by a signal; checkpoint written to {}; run again with --resume", checkpoint.display())]
    Preempted { checkpoint: PathBuf },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A collective across data-parallel replicas failed (a peer is gone, or never came).
    #[error(transparent)]
    Collective(#[from] crate::collectives::CollectiveError),
}

impl MlError {
    pub fn torch(context: impl Into<String>) -> impl FnOnce(tch::TchError) -> MlError {
        let context = context.into();
        move |source| MlError::Torch { context, source }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            MlError::Dataset(e) => e.reason(),
            MlError::Torch { .. } => "TorchError",
            MlError::InvalidArgument(_) | MlError::Flag { .. } => "InvalidArgument",
            MlError::Config { .. } => "InvalidConfig",
            MlError::Preempted { .. } => "Preempted",
            MlError::Write { .. } => "IoError",
            MlError::Collective(_) => "CollectiveError",
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            MlError::Dataset(e) => e.exit_code(),
            MlError::InvalidArgument(_) | MlError::Config { .. } | MlError::Flag { .. } => {
                crate::EXIT_INVALID
            }
            MlError::Preempted { .. } => train::EXIT_PREEMPTED,
            MlError::Torch { .. } | MlError::Write { .. } | MlError::Collective(_) => {
                crate::EXIT_FAILURE
            }
        }
    }
}

pub fn main(command: MlCommand) -> ExitCode {
    let (name, result) = match command {
        MlCommand::Device { device } => ("device", device::report(device).map(|r| println!("{r}"))),
        MlCommand::Train(args) => ("train", train::run(&args).map(|_| ())),
        MlCommand::Evaluate(args) => ("evaluate", commands::evaluate(&args).map(|_| ())),
        MlCommand::Export(args) => ("export", commands::export(&args)),
        MlCommand::Predict(args) => ("predict", commands::predict(&args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toucan-worker {name}: {e} ({})", e.reason());
            ExitCode::from(e.exit_code())
        }
    }
}
