//! The training loop: Adam on mini-batches reshuffled every epoch, validation after each epoch,
//! a test evaluation at the end.
//!
//! Reproducible: `--seed` seeds libtorch's generator before the weights are initialized and
//! the epochs' permutations are drawn from it; on the CPU with the same thread count, two runs
//! print the same metrics.
//!
//! `--out` receives (all at once, or nothing):
//! - `model.safetensors`: the weights, keyed by variable name;
//! - `model.json`: model kind, classes, image shape and the input normalization;
//! - `metrics.jsonl`: the epoch lines as printed; `metrics.json`: the final metrics.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::MlError;
use super::data::{self, SplitTensors};
use super::device::{self, DeviceChoice};
use super::model::{self, ModelKind};
use crate::dataset::{Dataset, ImageShape};
use crate::staged::StagedDir;

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The dataset directory written by `toucan-worker ingest`.
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, value_enum, default_value = "cnn")]
    pub model: ModelKind,
    #[arg(long, default_value_t = 5)]
    pub epochs: u32,
    #[arg(long, default_value_t = 128)]
    pub batch_size: i64,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// libtorch's intra-op threads (default: libtorch's choice, the physical cores).
    #[arg(long)]
    pub threads: Option<i32>,
    /// The directory to create with the weights, model description and metrics.
    #[arg(long)]
    pub out: PathBuf,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub lr: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct FinalMetrics {
    pub model: ModelKind,
    pub epochs: u32,
    pub device: String,
    pub threads: i32,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub train_seconds: f64,
}

/// `model.json`.
#[derive(Debug, Clone, Serialize)]
struct ModelCard<'a> {
    model: ModelKind,
    classes: &'a [String],
    image: ImageShape,
    /// Pixels are scaled to [0, 1], then `(x - mean) / std` per channel.
    mean: &'a [f64],
    std: &'a [f64],
    weights: &'static str,
}

const WEIGHTS_FILE: &str = "model.safetensors";

pub fn run(args: &TrainArgs) -> Result<FinalMetrics, MlError> {
    if args.epochs == 0 || args.batch_size <= 0 {
        return Err(MlError::InvalidArgument(
            "--epochs and --batch-size must be at least 1".into(),
        ));
    }
    let device = args.device.resolve()?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let staged = StagedDir::new(&args.out)?;
    let dataset = Dataset::open(&args.data)?;
    let (mean, std) = data::normalization(&dataset)?;
    let train = data::load_split(&dataset, "train", &mean, &std, device)?;
    let valid = data::load_split(&dataset, "valid", &mean, &std, device)?;
    let test = data::load_split(&dataset, "test", &mean, &std, device)?;
    if train.is_empty() {
        return Err(MlError::InvalidArgument(format!(
            "{}: the train split is empty",
            args.data.display()
        )));
    }

    tch::manual_seed(args.seed as i64);
    let vs = nn::VarStore::new(device);
    let classes = dataset.index.classes.len() as i64;
    let net = model::build(&vs.root(), args.model, dataset.index.image, classes);
    let mut opt = nn::Adam::default()
        .build(&vs, args.lr)
        .map_err(MlError::torch("building the optimizer"))?;

    let metrics_path = staged.path().join("metrics.jsonl");
    let mut metrics_file =
        std::fs::File::create(&metrics_path).map_err(|source| MlError::Write {
            path: metrics_path.clone(),
            source,
        })?;
    let started = Instant::now();
    for epoch in 1..=args.epochs {
        let epoch_started = Instant::now();
        let (loss, accuracy) = train_epoch(&net, &mut opt, &train, args.batch_size)?;
        let train_seconds = epoch_started.elapsed().as_secs_f64();
        let (val_loss, val_accuracy) = evaluate(&net, &valid, args.batch_size)?;
        let line = EpochMetrics {
            epoch,
            loss,
            accuracy,
            val_loss,
            val_accuracy,
            lr: args.lr,
            images_per_sec: train.len() as f64 / train_seconds,
            seconds: epoch_started.elapsed().as_secs_f64(),
        };
        let json = serde_json::to_string(&line).map_err(|e| MlError::Write {
            path: metrics_path.clone(),
            source: std::io::Error::other(e),
        })?;
        println!("{json}");
        writeln!(metrics_file, "{json}").map_err(|source| MlError::Write {
            path: metrics_path.clone(),
            source,
        })?;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let (test_loss, test_accuracy) = evaluate(&net, &test, args.batch_size)?;
    let last = FinalMetrics {
        model: args.model,
        epochs: args.epochs,
        device: device::name(device),
        threads: tch::get_num_threads(),
        test_loss,
        test_accuracy,
        train_seconds,
    };
    let weights = staged.path().join(WEIGHTS_FILE);
    vs.save(&weights)
        .map_err(MlError::torch(format!("saving {}", weights.display())))?;
    write_json(
        &staged.path().join("model.json"),
        &ModelCard {
            model: args.model,
            classes: &dataset.index.classes,
            image: dataset.index.image,
            mean: &mean,
            std: &std,
            weights: WEIGHTS_FILE,
        },
    )?;
    write_json(&staged.path().join("metrics.json"), &last)?;
    staged.commit()?;
    println!(
        "{}",
        serde_json::to_string(&last).unwrap_or_else(|_| String::new())
    );
    Ok(last)
}

/// One pass over the train split in a fresh random order; returns mean loss and accuracy.
fn train_epoch(
    net: &impl ModuleT,
    opt: &mut nn::Optimizer,
    train: &SplitTensors,
    batch_size: i64,
) -> Result<(f64, f64), MlError> {
    let n = train.len();
    let order = Tensor::randperm(n, (Kind::Int64, Device::Cpu)).to_device(train.images.device());
    let (mut loss_sum, mut correct) = (0f64, 0f64);
    let mut start = 0;
    while start < n {
        let size = batch_size.min(n - start);
        let idx = order.narrow(0, start, size);
        let images = train.images.index_select(0, &idx);
        let labels = train.labels.index_select(0, &idx);
        let logits = net.forward_t(&images, true);
        let loss = logits.cross_entropy_for_logits(&labels);
        opt.backward_step(&loss);
        loss_sum += f64::try_from(&loss).map_err(MlError::torch("reading the loss"))? * size as f64;
        correct += correct_count(&logits, &labels)?;
        start += size;
    }
    Ok((loss_sum / n as f64, correct / n as f64))
}

/// Mean loss and accuracy over a split, without gradients and with dropout off.
fn evaluate(
    net: &impl ModuleT,
    split: &SplitTensors,
    batch_size: i64,
) -> Result<(f64, f64), MlError> {
    let n = split.len();
    if n == 0 {
        return Ok((f64::NAN, f64::NAN));
    }
    let _guard = tch::no_grad_guard();
    let (mut loss_sum, mut correct) = (0f64, 0f64);
    // Larger batches are fine without gradients.
    let batch = (batch_size * 8).max(1);
    let mut start = 0;
    while start < n {
        let size = batch.min(n - start);
        let images = split.images.narrow(0, start, size);
        let labels = split.labels.narrow(0, start, size);
        let logits = net.forward_t(&images, false);
        let loss = logits.cross_entropy_for_logits(&labels);
        loss_sum += f64::try_from(&loss).map_err(MlError::torch("reading the loss"))? * size as f64;
        correct += correct_count(&logits, &labels)?;
        start += size;
    }
    Ok((loss_sum / n as f64, correct / n as f64))
}

fn correct_count(logits: &Tensor, labels: &Tensor) -> Result<f64, MlError> {
    let hits = logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Float)
        .sum(Kind::Float);
    f64::try_from(&hits).map_err(MlError::torch("counting correct predictions"))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), MlError> {
    let write_err = |source| MlError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| write_err(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(write_err)
}
