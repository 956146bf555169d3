//! The `export`, `predict` and `evaluate` subcommands.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::MlError;
use super::device::DeviceChoice;
use super::infer::{self, LoadedModel};
use crate::args::{self, AtLeast};
use crate::dataset::Dataset;
use crate::metrics;
use crate::staged::StagedDir;

#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// A `train --out` directory.
    #[arg(long, value_parser = args::existing_path)]
    pub model: PathBuf,
    /// The model file to write (safetensors with the model card in its metadata).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PredictArgs {
    /// A `train --out` directory or an exported model file.
    #[arg(long, value_parser = args::existing_path)]
    pub model: PathBuf,
    /// Classify the records of this dataset's `--split` instead of image files.
    #[arg(long, conflicts_with = "images", value_parser = args::existing_dir)]
    pub data: Option<PathBuf>,
    #[arg(long, default_value = "test", value_parser = args::split())]
    pub split: String,
    /// Image files (PNG, JPEG) to classify; resized and converted as the model card says.
    #[arg(value_parser = args::existing_file)]
    pub images: Vec<PathBuf>,
    /// How many classes to list per input (at most the model's classes are listed).
    #[arg(long, default_value_t = 3, value_parser = AtLeast(1i64).parser())]
    pub top_k: i64,
    #[arg(long, default_value_t = 256, value_parser = AtLeast(1i64).parser())]
    pub batch_size: i64,
    /// Instead of printing predictions, time this many forward passes of one input and of one
    /// batch of `--batch-size`, and print the latency percentiles as one JSON line.
    #[arg(long, value_parser = AtLeast(1usize).parser())]
    pub benchmark: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, value_parser = AtLeast(1i32).parser())]
    pub threads: Option<i32>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// A `train --out` directory or an exported model file.
    #[arg(long, value_parser = args::existing_path)]
    pub model: PathBuf,
    /// The dataset to evaluate on.
    #[arg(long, value_parser = args::existing_dir)]
    pub data: PathBuf,
    #[arg(long, default_value = "test", value_parser = args::split())]
    pub split: String,
    /// The directory to create with `report.json` and `confusion_matrix.png`.
    #[arg(long)]
    pub out: PathBuf,
    /// The k of each top-k accuracy.
    #[arg(long, value_delimiter = ',', default_value = "1,5", value_parser = AtLeast(1usize).parser())]
    pub top_k: Vec<usize>,
    /// Also compute the metrics per value of these metadata columns of the dataset.
    #[arg(long = "slice", value_name = "COLUMN")]
    pub slices: Vec<String>,
    #[arg(long, default_value_t = 512, value_parser = AtLeast(1i64).parser())]
    pub batch_size: i64,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    #[arg(long, value_parser = AtLeast(1i32).parser())]
    pub threads: Option<i32>,
    /// Write a metric to a file, e.g. `accuracy={{outputs.params.accuracy}}`. Names: accuracy,
    /// macro_f1, weighted_f1, log_loss, roc_auc_macro.
    #[arg(long = "write-param", value_name = "NAME=PATH", value_parser = parse_param)]
    pub write_params: Vec<(String, PathBuf)>,
}

const EVALUATE_PARAMS: [&str; 5] = [
    "accuracy",
    "macro_f1",
    "weighted_f1",
    "log_loss",
    "roc_auc_macro",
];

fn parse_param(s: &str) -> Result<(String, PathBuf), String> {
    super::train::parse_metric_path(s, &EVALUATE_PARAMS)
}

fn threads(n: Option<i32>) {
    if let Some(n) = n {
        tch::set_num_threads(n);
    }
}

pub fn export(args: &ExportArgs) -> Result<(), MlError> {
    // Loading it first proves the weights fit the architecture before anything is written.
    let model = LoadedModel::open(&args.model, Device::Cpu)?;
    infer::export(&args.model, &args.out)?;
    let line = serde_json::json!({
        "model": args.out,
        "architecture": model.card.model.kind,
        "classes": model.card.classes.len(),
        "image": model.card.image,
    });
    println!("{line}");
    Ok(())
}

pub fn predict(args: &PredictArgs) -> Result<(), MlError> {
    threads(args.threads);
    let device = args.device.resolve()?;
    let model = LoadedModel::open(&args.model, device)?;
    let (inputs, images, truth): (Vec<String>, Tensor, Option<Vec<i64>>) = match &args.data {
        Some(dir) => {
            let dataset = Dataset::open(dir)?;
            model.check_dataset(&dataset)?;
            let split = super::data::load_split(&dataset, &args.split)?;
            if split.is_empty() {
                return Err(MlError::InvalidArgument(format!(
                    "{}: the {} split is empty",
                    dir.display(),
                    args.split
                )));
            }
            let n = split.len();
            let labels =
                Vec::<i64>::try_from(&split.labels).map_err(MlError::torch("reading labels"))?;
            (
                (0..n).map(|i| i.to_string()).collect(),
                model.preprocess(&split.pixels),
                Some(labels),
            )
        }
        None => {
            if args.images.is_empty() {
                return Err(MlError::InvalidArgument(
                    "give image files or --data DATASET".into(),
                ));
            }
            let pixels: Vec<Tensor> = args
                .images
                .iter()
                .map(|p| model.load_image(p))
                .collect::<Result<_, _>>()?;
            (
                args.images
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                model.preprocess(&Tensor::stack(&pixels, 0)),
                None,
            )
        }
    };
    if let Some(iterations) = args.benchmark {
        let n = images.size()[0];
        let batch = images.narrow(0, 0, args.batch_size.min(n));
        let report = infer::benchmark(&model, &batch, iterations);
        println!("{}", serde_json::json!({ "benchmark": report }));
        return Ok(());
    }
    let n = images.size()[0];
    let mut stdout = std::io::stdout().lock();
    let mut start = 0;
    while start < n {
        let size = args.batch_size.min(n - start);
        let probs = model.probabilities(&images.narrow(0, start, size));
        let rows = &inputs[start as usize..(start + size) as usize];
        let truth = truth
            .as_ref()
            .map(|t| &t[start as usize..(start + size) as usize]);
        for p in infer::predictions(&model.card, rows, &probs, truth, args.top_k)? {
            let line = serde_json::to_string(&p).unwrap_or_default();
            // A closed pipe (`| head`) ends the output quietly.
            if writeln!(stdout, "{line}").is_err() {
                return Ok(());
            }
        }
        start += size;
    }
    Ok(())
}

pub fn evaluate(args: &EvaluateArgs) -> Result<metrics::Report, MlError> {
    threads(args.threads);
    let device = args.device.resolve()?;
    let staged = StagedDir::new(&args.out)?;
    let model = LoadedModel::open(&args.model, device)?;
    let dataset = Dataset::open(&args.data)?;
    let (probs, labels) = model.split_probabilities(&dataset, &args.split, args.batch_size)?;
    let labels = Vec::<i64>::try_from(&labels).map_err(MlError::torch("reading labels"))?;
    let scores = Vec::<f64>::try_from(probs.flatten(0, -1))
        .map_err(MlError::torch("reading probabilities"))?;
    let mut slices = BTreeMap::new();
    for column in &args.slices {
        slices.insert(
            column.clone(),
            dataset.metadata_column(&args.split, column)?,
        );
    }
    let input = metrics::Predictions {
        labels: labels.iter().map(|&l| l as usize).collect(),
        scores,
        classes: model.card.classes.clone(),
        slices,
    };
    let options = metrics::ReportOptions {
        top_k: args.top_k.clone(),
    };
    let report = metrics::report(&input, &options).map_err(metrics_error(&args.out))?;
    let png =
        metrics::plot::confusion_matrix_png(&report.overall.confusion_matrix, &model.card.classes)
            .map_err(metrics_error(&args.out))?;
    metrics::write_report(staged.path(), &report, &png).map_err(metrics_error(&args.out))?;
    staged.commit()?;
    for (name, path) in &args.write_params {
        let o = &report.overall;
        let value = match name.as_str() {
            "accuracy" => Some(o.accuracy),
            "macro_f1" => Some(o.macro_avg.f1),
            "weighted_f1" => Some(o.weighted_avg.f1),
            "log_loss" => o.log_loss,
            "roc_auc_macro" => o.macro_avg.roc_auc,
            _ => None,
        };
        std::fs::write(path, value.map(|v| v.to_string()).unwrap_or_default()).map_err(
            |source| MlError::Write {
                path: path.clone(),
                source,
            },
        )?;
    }
    let summary = serde_json::json!({
        "report": args.out.join(metrics::REPORT_FILE),
        "records": report.overall.records,
        "accuracy": report.overall.accuracy,
        "macro_f1": report.overall.macro_avg.f1,
        "log_loss": report.overall.log_loss,
    });
    println!("{summary}");
    Ok(report)
}

fn metrics_error(out: &Path) -> impl Fn(metrics::MetricsError) -> MlError + '_ {
    move |e| MlError::InvalidArgument(format!("{}: {e}", out.display()))
}
