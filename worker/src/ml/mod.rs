//! Training and inference on libtorch through tch (the `torch` feature).
//!
//! `device` reports what libtorch sees; `train` fits a model on a toucan dataset: the splits
//! are loaded into tensors ([`data`]), the model is built from its name ([`model`]), and the
//! loop ([`train`]) prints one JSON metrics line per epoch and writes weights (safetensors),
//! the model description and the metrics into `--out`, all at once ([`crate::staged`]).

pub mod data;
pub mod device;
pub mod model;
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
    Train(train::TrainArgs),
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
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
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
            MlError::InvalidArgument(_) => "InvalidArgument",
            MlError::Write { .. } => "IoError",
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            MlError::Dataset(e) => e.exit_code(),
            MlError::InvalidArgument(_) => 2,
            MlError::Torch { .. } | MlError::Write { .. } => 1,
        }
    }
}

pub fn main(command: MlCommand) -> ExitCode {
    let (name, result) = match command {
        MlCommand::Device { device } => ("device", device::report(device).map(|r| println!("{r}"))),
        MlCommand::Train(args) => ("train", train::run(&args).map(|_| ())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toucan-worker {name}: {e} ({})", e.reason());
            ExitCode::from(e.exit_code())
        }
    }
}
