//! `toucan-worker train`: fits a model on a toucan dataset.
//!
//! The run is described by a [`TrainConfig`] (a YAML file, `--config`, with flags on top). Each
//! epoch: a keyed shuffle of the train split, batches prepared by the loader thread
//! (augmentation, normalization), forward/backward, an optimizer step at the scheduled
//! learning rate; then validation, one metrics line ([`EpochMetrics`], see [`super::sink`]), a
//! checkpoint ([`super::checkpoint`]) and the early-stopping check. At the end the test split
//! is evaluated.
//!
//! Reproducible: `seed` seeds the weights' initialization; the shuffle, the augmentation and
//! the dropout masks of every batch are keyed by (seed, epoch, batch). On the CPU with the same
//! thread count two runs print the same metrics, and a run stopped at any point and resumed
//! prints the same metrics as one that never stopped.
//!
//! Replicas: with torch.distributed's `WORLD_SIZE` > 1 (and `RANK`, `MASTER_ADDR`,
//! `MASTER_PORT`) the process is one replica of a data-parallel run: it trains on its share of
//! every global batch and averages gradients with the others, so the run takes the same steps
//! as one process would ([`super::replicas`]).
//!
//! Stopping: on SIGTERM or SIGINT the loop finishes the batch in progress, writes a checkpoint
//! and exits with [`EXIT_PREEMPTED`] (75, "temporary failure"); `--resume` continues from the
//! newest checkpoint (and starts afresh when there is none, so a pipeline can always pass it).
//!
//! `--out` receives, all at once or not at all:
//! - `model.safetensors`: the weights, keyed by variable name;
//! - `embeddings.safetensors`: the model's embeddings of up to 1,000 held-out records (the
//!   validation split, else the test split), the drift reference of the inputs it will serve
//!   ([`toucan_core::monitoring::embedding`]);
//! - `model.json`: the [`ModelCard`]: architecture, classes, input shape and preprocessing;
//! - `config.json`: the resolved training config;
//! - `metrics.jsonl`: the epoch lines; `metrics.json`: the [`FinalMetrics`]; both without
//!   the timings, so that the same inputs give the same bytes (the timings are on stdout and
//!   in `$TOUCAN_METRICS_FILE`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Device, Kind, Tensor};
use toucan_core::engine::gang::CheckpointEvery;
use toucan_core::monitoring::embedding;

use super::MlError;
use super::checkpoint::{CheckpointDir, TrainState};
use super::config::{
    Augmentation, EarlyStopping, ModelConfig, ModelKind, Monitor, OptimizerKind, ScheduleKind,
    TrainConfig, TransferConfig, rules,
};
use super::data::{self, BatchPlan, Loader, Normalization, Split};
use super::device::{self, DeviceChoice};
use super::model::{self, Network};
use super::optim::Optimizer;
use super::replicas::{ReplicaEnv, Replicas};
use super::schedule::Schedule;
use super::sink::{ApiTarget, MetricsSink};
use crate::args::{self, AtLeast};
use crate::dataset::{Dataset, ImageShape};
use crate::staged::StagedDir;

/// Exit code after SIGTERM/SIGINT: a checkpoint was written; run again with `--resume`.
pub const EXIT_PREEMPTED: u8 = 75;

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CARD_FILE: &str = "model.json";

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// The dataset directory written by `toucan-worker ingest`.
    #[arg(long, value_parser = args::existing_dir)]
    pub data: PathBuf,
    /// The directory to create with the weights, model card and metrics.
    #[arg(long)]
    pub out: PathBuf,
    /// A YAML training config (see the module docs); the flags below override it.
    #[arg(long, value_parser = args::existing_file)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    #[arg(long, value_parser = rules::EPOCHS.parser())]
    pub epochs: Option<u32>,
    #[arg(long, value_parser = rules::BATCH_SIZE.parser())]
    pub batch_size: Option<i64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// The model's dropout probability.
    #[arg(long, value_parser = rules::DROPOUT.parser())]
    pub dropout: Option<f64>,
    /// The widths of the model's hidden layers, comma-separated (a cnn has one).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub hidden: Option<Vec<i64>>,
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// The (peak) learning rate.
    #[arg(long, value_parser = rules::LEARNING_RATE.parser())]
    pub lr: Option<f64>,
    #[arg(long, value_parser = rules::MOMENTUM.parser())]
    pub momentum: Option<f64>,
    /// AdamW's decoupled weight decay.
    #[arg(long, value_parser = rules::WEIGHT_DECAY.parser())]
    pub weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    pub schedule: Option<ScheduleKind>,
    #[arg(long, value_parser = rules::WARMUP_EPOCHS.parser())]
    pub warmup_epochs: Option<f64>,
    #[arg(long, value_parser = rules::REGULARIZATION.parser())]
    pub l1: Option<f64>,
    #[arg(long, value_parser = rules::REGULARIZATION.parser())]
    pub l2: Option<f64>,
    /// Random left-right flips.
    #[arg(long)]
    pub flip: bool,
    /// Random rotations up to this many degrees.
    #[arg(long, value_parser = rules::ROTATION.parser())]
    pub rotation: Option<f64>,
    /// Random zoom by up to this fraction.
    #[arg(long, value_parser = rules::ZOOM.parser())]
    pub zoom: Option<f64>,
    /// Random shifts by up to this fraction of the size.
    #[arg(long, value_parser = rules::TRANSLATE.parser())]
    pub translate: Option<f64>,
    #[arg(long, value_parser = rules::BRIGHTNESS.parser())]
    pub brightness: Option<f64>,
    #[arg(long, value_parser = rules::CONTRAST.parser())]
    pub contrast: Option<f64>,
    /// Stop after this many epochs without improvement of the monitored metric.
    #[arg(long)]
    pub patience: Option<u32>,
    #[arg(long, value_enum)]
    pub monitor: Option<Monitor>,
    /// Backbone weights for transfer learning (efficientnet-lite0).
    #[arg(long, value_parser = args::existing_file)]
    pub pretrained: Option<PathBuf>,
    /// Start from a trained model's weights (a `train --out` directory), e.g. to fine-tune.
    #[arg(long, value_parser = args::existing_dir)]
    pub init_from: Option<PathBuf>,
    /// Train only the new head.
    #[arg(long)]
    pub freeze_backbone: bool,
    /// The backbone's learning rate relative to the head's.
    #[arg(long, value_parser = rules::BACKBONE_LR_SCALE.parser())]
    pub backbone_lr_scale: Option<f64>,
    /// Checkpoint every N optimizer steps as well as every epoch.
    #[arg(long, value_parser = rules::CHECKPOINT_EVERY_STEPS.parser())]
    pub checkpoint_every_steps: Option<u64>,
    /// Where checkpoints go (default: `$TOUCAN_CHECKPOINT_DIR`, which the launcher sets to a
    /// directory shared by a step's attempts, else `<out>.checkpoints`); removed on success.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the newest checkpoint in the checkpoint directory, if there is one. A
    /// checkpoint of the same config with fewer `epochs` continues to the new count: how a
    /// tuning study's promoted trial (ASHA, Hyperband) trains on instead of starting over.
    #[arg(long)]
    pub resume: bool,
    /// Leave the checkpoints in place after success (a later run may continue from them with
    /// more epochs), instead of removing them.
    #[arg(long)]
    pub keep_checkpoints: bool,
    /// A CSV pixel table whose labelled images join the training split for this run, e.g.
    /// the labelled production samples a retraining run gets as `{{alert.window.samples}}`
    /// (its `label` column of class names and its `pixel*` columns, at the dataset's image
    /// shape; validation and test stay the dataset's). Repeatable; a table with a header and
    /// no rows, or an empty value, adds nothing.
    #[arg(long, value_name = "FILE.csv", value_parser = args::existing_file_or_empty)]
    pub add_train: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// libtorch's intra-op threads (default: libtorch's choice, the physical cores).
    #[arg(long, value_parser = AtLeast(1i32).parser())]
    pub threads: Option<i32>,
    /// Write a final metric to a file, e.g. `accuracy={{outputs.params.accuracy}}`. Names:
    /// accuracy, loss (test split), val_accuracy, val_loss (the last epoch's, or the best
    /// epoch's with early stopping's restoreBest), epochs, best_epoch.
    #[arg(long = "write-param", value_name = "NAME=PATH", value_parser = parse_param)]
    pub write_params: Vec<(String, PathBuf)>,
}

fn parse_param(s: &str) -> Result<(String, PathBuf), String> {
    parse_metric_path(s, &FinalMetrics::PARAMS)
}

/// A `--write-param NAME=PATH` value whose NAME is one of `known`.
pub fn parse_metric_path(s: &str, known: &[&str]) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got {s:?}"))?;
    if !known.contains(&name) {
        return Err(format!(
            "unknown metric {name:?}; one of {}",
            known.join(", ")
        ));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

impl TrainArgs {
    /// The config file with the flags applied, validated. A value that breaks a rule is
    /// blamed on the flag that gave it, else on the config file's field.
    pub fn config(&self) -> Result<TrainConfig, MlError> {
        let mut c = match &self.config {
            Some(path) => TrainConfig::from_file(path)?,
            None => TrainConfig::default(),
        };
        let file_has_transfer = c.transfer.is_some();
        if let Some(kind) = self.model
            && kind != c.model.kind
        {
            c.model = ModelConfig::of(kind);
        }
        if self.dropout.is_some() {
            c.model.dropout = self.dropout;
        }
        if let Some(hidden) = &self.hidden {
            c.model.hidden = Some(hidden.clone());
        }
        set(&mut c.epochs, self.epochs);
        set(&mut c.batch_size, self.batch_size);
        set(&mut c.seed, self.seed);
        set(&mut c.optimizer.kind, self.optimizer);
        set(&mut c.optimizer.learning_rate, self.lr);
        set(&mut c.optimizer.momentum, self.momentum);
        set(&mut c.optimizer.weight_decay, self.weight_decay);
        set(&mut c.schedule.kind, self.schedule);
        set(&mut c.schedule.warmup_epochs, self.warmup_epochs);
        set(&mut c.regularization.l1, self.l1);
        set(&mut c.regularization.l2, self.l2);
        let a = &mut c.augmentation;
        a.flip |= self.flip;
        set(&mut a.rotation, self.rotation);
        set(&mut a.zoom, self.zoom);
        set(&mut a.translate, self.translate);
        set(&mut a.brightness, self.brightness);
        set(&mut a.contrast, self.contrast);
        if self.patience.is_some() || self.monitor.is_some() {
            let e = c.early_stopping.get_or_insert_with(EarlyStopping::default);
            set(&mut e.patience, self.patience);
            set(&mut e.metric, self.monitor);
        }
        if let Some(every) = self.checkpoint_every_steps {
            c.checkpoint.every_steps = Some(every);
        }
        if self.pretrained.is_some() || self.freeze_backbone || self.backbone_lr_scale.is_some() {
            let t = c.transfer.get_or_insert(TransferConfig {
                pretrained: None,
                freeze_backbone: false,
                backbone_lr_scale: 1.0,
            });
            if let Some(path) = &self.pretrained {
                t.pretrained = Some(path.clone());
            }
            t.freeze_backbone |= self.freeze_backbone;
            set(&mut t.backbone_lr_scale, self.backbone_lr_scale);
        }
        if let Some(init) = &self.init_from {
            c.init_from = Some(init.clone());
        }
        c.model = c.model.resolved();
        c.validate()
            .map_err(|(field, message)| self.blame(&c, field, message, file_has_transfer))?;
        let pretrained = c.transfer.as_ref().and_then(|t| t.pretrained.as_ref());
        for (field, path, what) in [
            ("transfer.pretrained", pretrained, "a file"),
            (
                "initFrom",
                c.init_from.as_ref(),
                "a `train --out` directory",
            ),
        ] {
            if let Some(path) = path
                && !path.exists()
            {
                let message = format!("{} does not exist (expected {what})", path.display());
                return Err(self.blame(&c, field.into(), message, file_has_transfer));
            }
        }
        Ok(c)
    }

    /// The error for a config `field` that breaks a rule: on the flag that set it, else on
    /// the config file's field.
    fn blame(
        &self,
        c: &TrainConfig,
        field: String,
        message: String,
        file_has_transfer: bool,
    ) -> MlError {
        let min_lr = c.schedule.min_learning_rate;
        let flag = match field.as_str() {
            // `--lr` is at fault only when the minimum itself is a valid number.
            "schedule.minLearningRate" if !(min_lr.is_finite() && min_lr >= 0.0) => None,
            _ => self.flag_for(&field, file_has_transfer),
        };
        match (flag, &self.config) {
            (Some(flag), _) => MlError::Flag {
                flag: flag.into(),
                message: if field == "schedule.minLearningRate" {
                    format!("must be at least schedule.minLearningRate ({min_lr})")
                } else {
                    message
                },
            },
            (None, Some(file)) => MlError::Config {
                file: file.clone(),
                field,
                message,
            },
            (None, None) => MlError::InvalidArgument(format!("{field}: {message}")),
        }
    }

    /// The flag that gave the value of the config field `field`, if one did.
    fn flag_for(&self, field: &str, file_has_transfer: bool) -> Option<&'static str> {
        let given = |set: bool, flag: &'static str| set.then_some(flag);
        match field {
            "epochs" => given(self.epochs.is_some(), "--epochs"),
            "batchSize" => given(self.batch_size.is_some(), "--batch-size"),
            "model.dropout" => given(self.dropout.is_some(), "--dropout"),
            "model.hidden" => given(self.hidden.is_some(), "--hidden"),
            // The minimum is checked against the learning rate, which `--lr` may have set.
            "optimizer.learningRate" | "schedule.minLearningRate" => {
                given(self.lr.is_some(), "--lr")
            }
            "optimizer.momentum" => given(self.momentum.is_some(), "--momentum"),
            "optimizer.weightDecay" => given(self.weight_decay.is_some(), "--weight-decay"),
            "schedule.warmupEpochs" => given(self.warmup_epochs.is_some(), "--warmup-epochs"),
            "regularization.l1" => given(self.l1.is_some(), "--l1"),
            "regularization.l2" => given(self.l2.is_some(), "--l2"),
            "augmentation.rotation" => given(self.rotation.is_some(), "--rotation"),
            "augmentation.zoom" => given(self.zoom.is_some(), "--zoom"),
            "augmentation.translate" => given(self.translate.is_some(), "--translate"),
            "augmentation.brightness" => given(self.brightness.is_some(), "--brightness"),
            "augmentation.contrast" => given(self.contrast.is_some(), "--contrast"),
            "checkpoint.everySteps" => given(
                self.checkpoint_every_steps.is_some(),
                "--checkpoint-every-steps",
            ),
            "transfer.backboneLrScale" => {
                given(self.backbone_lr_scale.is_some(), "--backbone-lr-scale")
            }
            "transfer.pretrained" => given(self.pretrained.is_some(), "--pretrained"),
            "initFrom" => given(self.init_from.is_some(), "--init-from"),
            // Transfer learning needs efficientnet-lite0: blame the flag that chose another
            // model, or the flag that asked for transfer learning when the file did not.
            "transfer" => given(self.model.is_some(), "--model").or_else(|| {
                (!file_has_transfer).then_some(if self.pretrained.is_some() {
                    "--pretrained"
                } else if self.freeze_backbone {
                    "--freeze-backbone"
                } else {
                    "--backbone-lr-scale"
                })
            }),
            _ => None,
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: u32,
    pub step: u64,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    /// The learning rate of the epoch's last step.
    pub lr: f64,
    /// Train images per second of the epoch's training pass (validation excluded).
    pub images_per_sec: f64,
    pub seconds: f64,
}

/// `metrics.json`, and the last line on stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinalMetrics {
    pub model: ModelKind,
    /// Epochs trained (fewer than configured when early stopping ended the run).
    pub epochs: u32,
    pub best_epoch: u32,
    pub stopped_early: bool,
    /// Test split accuracy and loss (validation's when the test split is empty).
    pub accuracy: Option<f64>,
    pub loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub val_loss: Option<f64>,
    pub parameters: i64,
    pub device: String,
    pub threads: i32,
    pub train_seconds: f64,
}

impl FinalMetrics {
    pub const PARAMS: [&'static str; 6] = [
        "accuracy",
        "loss",
        "val_accuracy",
        "val_loss",
        "epochs",
        "best_epoch",
    ];

    fn param(&self, name: &str) -> Option<String> {
        let num = |v: Option<f64>| v.map(|v| v.to_string());
        match name {
            "accuracy" => num(self.accuracy),
            "loss" => num(self.loss),
            "val_accuracy" => num(self.val_accuracy),
            "val_loss" => num(self.val_loss),
            "epochs" => Some(self.epochs.to_string()),
            "best_epoch" => Some(self.best_epoch.to_string()),
            _ => None,
        }
    }
}

/// `model.json`: everything but the weights that serving needs to rebuild the model and feed
/// it exactly as in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub model: ModelConfig,
    pub classes: Vec<String>,
    /// The input: images are resized to this height and width and converted to this many
    /// channels (1 = grayscale, 3 = RGB, in that order).
    pub image: ImageShape,
    /// Pixels are scaled to [0, 1], then `(x - mean) / std` per channel.
    pub normalization: Normalization,
    pub weights: String,
}

pub const CARD_FORMAT: &str = "toucan.model/v1";

/// Everything that runs the loop.
struct Session<'a> {
    config: &'a TrainConfig,
    net: Network,
    vs: nn::VarStore,
    opt: Optimizer,
    schedule: Schedule,
    normalization: Normalization,
    device: Device,
    checkpoints: CheckpointDir,
    stop: Arc<AtomicBool>,
    best_weights: Option<Vec<(String, Tensor)>>,
    /// The other replicas of a data-parallel run ([`super::replicas`]), and the parameters
    /// whose gradients are averaged with theirs, by name.
    replicas: Option<Replicas>,
    trained: Vec<Tensor>,
    /// Checkpoints at the end of every this many epochs (and when asked to stop).
    every_epochs: u32,
}

pub fn run(args: &TrainArgs) -> Result<FinalMetrics, MlError> {
    let mut config = args.config()?;
    let every = checkpoint_every_from_env()?;
    // A step interval from the config or the command line wins over the job's.
    if let Some(CheckpointEvery::Steps(n)) = every
        && config.checkpoint.every_steps.is_none()
    {
        config.checkpoint.every_steps = Some(n);
    }
    let config = config;
    let replica_env = ReplicaEnv::parse(|name| std::env::var(name).ok())?;
    let device = match &replica_env {
        Some(env) => Replicas::device(env, args.device.resolve()?)?,
        None => args.device.resolve()?,
    };
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let staged = StagedDir::new(&args.out)?;
    let dataset = Dataset::open(&args.data)?;
    let normalization = match model::fixed_normalization(config.model.kind) {
        Some(n) => n,
        None => Normalization::from_card(&dataset)?,
    };
    let train = data::with_added(
        data::load_split(&dataset, "train")?,
        &dataset,
        &args.add_train,
    )?;
    let valid = data::load_split(&dataset, "valid")?;
    let test = data::load_split(&dataset, "test")?;
    if train.is_empty() {
        return Err(MlError::InvalidArgument(format!(
            "{}: the train split is empty",
            args.data.display()
        )));
    }

    tch::manual_seed(config.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let classes = dataset.index.classes.len() as i64;
    let frozen = config.transfer.as_ref().is_some_and(|t| t.freeze_backbone);
    let net = model::build(
        &vs.root(),
        &config.model,
        dataset.index.image,
        classes,
        frozen,
    )?;
    let backbone = model::backbone_prefix(config.model.kind);
    let mut lr_scale = 1.0;
    if let Some(init) = &config.init_from {
        let weights = init.join(WEIGHTS_FILE);
        vs.load(&weights).map_err(MlError::torch(format!(
            "loading {} (initFrom must be a model of the same architecture and classes)",
            weights.display()
        )))?;
    }
    if let Some(t) = &config.transfer {
        let prefix = backbone.unwrap_or_default();
        if let Some(pretrained) = &t.pretrained
            && config.init_from.is_none()
        {
            load_backbone(&mut vs, prefix, pretrained)?;
        }
        lr_scale = t.backbone_lr_scale;
        if t.freeze_backbone {
            for (name, var) in vs.variables() {
                if name.starts_with(prefix) {
                    let _ = var.set_requires_grad(false);
                }
            }
        }
    }
    let params = {
        let mut v: Vec<(String, Tensor, f64)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(name, t)| {
                let scale = match backbone {
                    Some(p) if name.starts_with(p) => lr_scale,
                    _ => 1.0,
                };
                (name, t, scale)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let trained: Vec<Tensor> = params.iter().map(|(_, t, _)| t.shallow_clone()).collect();
    let opt = Optimizer::new(&config.optimizer, &config.regularization, params);
    let steps_per_epoch = (train.len() as u64).div_ceil(config.batch_size as u64);
    let schedule = Schedule::new(
        &config.schedule,
        config.optimizer.learning_rate,
        steps_per_epoch,
        config.epochs,
    );
    let checkpoints = CheckpointDir::new(
        args.checkpoint_dir
            .clone()
            .or_else(|| std::env::var_os("TOUCAN_CHECKPOINT_DIR").map(PathBuf::from))
            .unwrap_or_else(|| sibling(&args.out, "checkpoints")),
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|source| {
            MlError::Write {
                path: PathBuf::from("<signal handler>"),
                source,
            }
        })?;
    }
    let mut session = Session {
        config: &config,
        net,
        vs,
        opt,
        schedule,
        normalization,
        device,
        checkpoints,
        stop,
        best_weights: None,
        replicas: None,
        trained,
        every_epochs: match every {
            Some(CheckpointEvery::Epochs(n)) => n,
            _ => 1,
        },
    };

    let mut state = TrainState::new(config.resume_digest());
    if args.resume
        && let Some(restored) = session.checkpoints.restore(&mut session.vs)?
    {
        if restored.state.config_digest != state.config_digest {
            return Err(MlError::InvalidArgument(format!(
                "{}: the checkpoint was made with a different training config; remove it or drop --resume",
                restored.dir.display()
            )));
        }
        session
            .opt
            .load_state(restored.state.step, restored.optimizer)?;
        if let Some(best) = restored.best {
            session.best_weights = Some(
                Tensor::read_safetensors(&best)
                    .map_err(MlError::torch(format!("loading {}", best.display())))?,
            );
        }
        eprintln!(
            "toucan-worker train: resuming from {} (epoch {}, batch {})",
            restored.dir.display(),
            restored.state.epoch,
            restored.state.next_batch
        );
        state = restored.state;
    }

    if let Some(env) = &replica_env {
        let mut replicas = Replicas::join(env, device, config.batch_size, train.len())?;
        // Every replica starts from rank 0's weights (and its restored checkpoint, if any).
        let mut variables: Vec<(String, Tensor)> = session.vs.variables().into_iter().collect();
        variables.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors: Vec<Tensor> = variables.into_iter().map(|(_, t)| t).collect();
        replicas.broadcast(&mut tensors)?;
        replicas.reduce_during_backward(&session.trained)?;
        // A restored checkpoint holds the epoch's figures over every replica so far: rank
        // 0 carries them on, and the others count only what they add.
        if replicas.rank() != 0 {
            (state.loss_sum, state.correct, state.seen) = (0.0, 0.0, 0);
        }
        eprintln!(
            "toucan-worker train: replica {} of {}",
            replicas.rank(),
            replicas.world_size()
        );
        session.replicas = Some(replicas);
    }

    let metrics_path = staged.path().join("metrics.jsonl");
    // The epochs before a resume go into the new file too.
    for line in &state.history {
        super::sink::append_line(&metrics_path, &super::sink::untimed_json(line))?;
    }
    let files = std::env::var_os("TOUCAN_METRICS_FILE")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let sink = MetricsSink::new(files, vec![metrics_path], ApiTarget::from_env());

    while state.epoch <= config.epochs && !state.stopped_early {
        session.train_epoch(&train, &mut state)?;
        let (val_loss, val_accuracy) = session.evaluate(&valid)?;
        let last = state.history.last_mut().ok_or_else(|| {
            MlError::InvalidArgument("internal: an epoch ended without metrics".into())
        })?;
        last.val_loss = val_loss;
        last.val_accuracy = val_accuracy;
        let improved = session.early_stopping(&mut state);
        sink.emit(&state.history)?;
        if improved && session.restore_best() {
            session.best_weights = Some(snapshot(&session.vs));
        }
        state.epoch += 1;
        state.next_batch = 0;
        (state.loss_sum, state.correct, state.seen) = (0.0, 0.0, 0);
        let finished_epoch = state.epoch - 1;
        if finished_epoch.is_multiple_of(session.every_epochs) || state.epoch > config.epochs {
            session.save(&state)?;
        }
    }

    if session.restore_best()
        && let Some(best) = &session.best_weights
    {
        restore(&session.vs, best)?;
    }
    let (test_loss, test_accuracy) = session.evaluate(&test)?;
    let last = state.history.last();
    let best = state
        .history
        .iter()
        .find(|m| m.epoch == state.best_epoch)
        .or(last);
    let (val_loss, val_accuracy) = if session.restore_best() {
        (
            best.and_then(|m| m.val_loss),
            best.and_then(|m| m.val_accuracy),
        )
    } else {
        (
            last.and_then(|m| m.val_loss),
            last.and_then(|m| m.val_accuracy),
        )
    };
    let result = FinalMetrics {
        model: config.model.kind,
        epochs: state.history.len() as u32,
        best_epoch: if state.best_epoch > 0 {
            state.best_epoch
        } else {
            state.history.len() as u32
        },
        stopped_early: state.stopped_early,
        accuracy: test_accuracy.or(val_accuracy),
        loss: test_loss.or(val_loss),
        val_accuracy,
        val_loss,
        parameters: model::parameter_count(&session.vs),
        device: device::name(device),
        threads: tch::get_num_threads(),
        train_seconds: state.train_seconds,
    };

    let weights = staged.path().join(WEIGHTS_FILE);
    session
        .vs
        .save(&weights)
        .map_err(MlError::torch(format!("saving {}", weights.display())))?;
    // The drift reference of the model's embeddings: held-out records, which the model
    // embeds as it will embed production inputs (training records sit closer to its fit).
    let held_out = [&valid, &test, &train]
        .into_iter()
        .find(|split| !split.is_empty())
        .unwrap_or(&train);
    let embeddings = staged.path().join(embedding::REFERENCE_FILE);
    Tensor::write_safetensors(
        &[(
            embedding::REFERENCE_TENSOR,
            session.embeddings(held_out, dataset.index.image)?,
        )],
        &embeddings,
    )
    .map_err(MlError::torch(format!("saving {}", embeddings.display())))?;
    let card = ModelCard {
        format: CARD_FORMAT.into(),
        model: config.model.clone(),
        classes: dataset.index.classes.clone(),
        image: dataset.index.image,
        normalization: session.normalization.clone(),
        weights: WEIGHTS_FILE.into(),
    };
    write_json(&staged.path().join(CARD_FILE), &card)?;
    write_json(&staged.path().join("config.json"), &config)?;
    // Without the training time: the model directory's bytes depend on its inputs only.
    let untimed: serde_json::Value =
        serde_json::from_str(&super::sink::untimed_json(&result)).unwrap_or_default();
    write_json(&staged.path().join("metrics.json"), &untimed)?;
    staged.commit()?;
    for (name, path) in &args.write_params {
        let value = result.param(name).unwrap_or_default();
        std::fs::write(path, value).map_err(|source| MlError::Write {
            path: path.clone(),
            source,
        })?;
    }
    // Only the replica that writes the checkpoints removes them: another one, done first,
    // would pull the directory from under rank 0's last checkpoint.
    let writes_checkpoints = session.replicas.as_ref().is_none_or(|r| r.rank() == 0);
    if !args.keep_checkpoints && writes_checkpoints {
        session.checkpoints.remove();
    }
    println!("{}", serde_json::to_string(&result).unwrap_or_default());
    Ok(result)
}

impl Session<'_> {
    fn restore_best(&self) -> bool {
        self.config
            .early_stopping
            .as_ref()
            .is_some_and(|e| e.restore_best)
    }

    /// Trains the rest of the epoch `state.epoch` from `state.next_batch`, checkpointing every
    /// `everySteps` steps and when asked to stop. Appends the epoch's (train) metrics.
    fn train_epoch(&mut self, train: &Split, state: &mut TrainState) -> Result<(), MlError> {
        let c = self.config;
        let records = train.len();
        let steps = (records as u64).div_ceil(c.batch_size as u64);
        let mut order = data::epoch_order(c.seed, state.epoch, records);
        let mut batch_size = c.batch_size;
        if let Some(r) = &self.replicas {
            order = r.shard(&order);
            batch_size /= r.world_size() as i64;
        }
        let plan = BatchPlan {
            normalization: self.normalization.clone(),
            augmentation: Some(c.augmentation.clone()).filter(Augmentation::any),
            seed: c.seed,
            epoch: state.epoch,
            device: self.device,
        };
        let started = Instant::now();
        let before = state.train_seconds;
        let mut lr = self.schedule.lr(state.step);
        let mut loader = Loader::start(train, order, batch_size, state.next_batch, plan);
        for index in state.next_batch..steps {
            // Dropout's masks come from libtorch's generator: key it by the batch.
            tch::manual_seed(batch_seed(c.seed, state.epoch, index));
            lr = self.schedule.lr(state.step);
            self.opt.zero_grad();
            if let Some(r) = &mut self.replicas {
                r.start_step(index, c.batch_size, records)?;
            }
            // A replica's loader ends early when its share of the last batch is empty.
            match loader.next() {
                Some(batch) => {
                    let logits = self.net.forward_t(&batch.images, true);
                    let loss = logits.cross_entropy_for_logits(&batch.labels);
                    match &self.replicas {
                        // The loss weighted by this replica's share of the global batch, so
                        // that the average over replicas is the whole batch's gradient.
                        Some(r) => {
                            let (mine, total) = r.share(index, c.batch_size, records);
                            let weight = (mine * r.world_size() as i64) as f64 / total as f64;
                            r.backward(&(&loss * weight))?;
                        }
                        None => loss.backward(),
                    }
                    let size = batch.labels.size()[0] as u64;
                    state.loss_sum += f64::try_from(&loss)
                        .map_err(MlError::torch("reading the loss"))?
                        * size as f64;
                    state.correct += correct_count(&logits, &batch.labels)?;
                    state.seen += size;
                }
                None if self.replicas.is_some() => Replicas::contribute_nothing(&self.trained),
                None => break,
            }
            if let Some(r) = &mut self.replicas {
                r.finish_step(&self.trained)?;
            }
            self.opt.step(lr);
            state.next_batch = index + 1;
            state.step += 1;
            let mut stopping = self.stop.load(Ordering::Relaxed);
            if let Some(r) = &mut self.replicas {
                // Every replica stops at the same step, or the others would wait for it in
                // the next collective.
                stopping = r.any(stopping)?;
            }
            let periodic = c
                .checkpoint
                .every_steps
                .is_some_and(|n| state.step.is_multiple_of(n));
            if stopping || periodic {
                state.train_seconds = before + started.elapsed().as_secs_f64();
                // The epoch's running figures so far, over every replica: what a resumed
                // gang continues from.
                let mut partial = None;
                if let Some(r) = &mut self.replicas {
                    let mut totals = [state.loss_sum, state.correct, state.seen as f64];
                    r.sum(&mut totals)?;
                    let mut global = state.clone();
                    (global.loss_sum, global.correct, global.seen) =
                        (totals[0], totals[1], totals[2] as u64);
                    partial = Some(global);
                }
                let dir = self.save(partial.as_ref().unwrap_or(state))?;
                if stopping {
                    return Err(MlError::Preempted { checkpoint: dir });
                }
            }
        }
        state.train_seconds = before + started.elapsed().as_secs_f64();
        if let Some(r) = &mut self.replicas {
            // The epoch's figures over every replica's share.
            let mut totals = [state.loss_sum, state.correct, state.seen as f64];
            r.sum(&mut totals)?;
            (state.loss_sum, state.correct, state.seen) = (totals[0], totals[1], totals[2] as u64);
        }
        self.finish_epoch(state, lr);
        Ok(())
    }

    fn finish_epoch(&self, state: &mut TrainState, lr: f64) {
        let seen = state.seen.max(1) as f64;
        // The epoch's training time over all its sessions (a resumed epoch counts both).
        let epoch_seconds =
            state.train_seconds - state.history.iter().map(|m| m.seconds).sum::<f64>();
        state.history.push(EpochMetrics {
            epoch: state.epoch,
            step: state.step,
            loss: state.loss_sum / seen,
            accuracy: state.correct / seen,
            val_loss: None,
            val_accuracy: None,
            lr,
            images_per_sec: state.seen as f64 / epoch_seconds.max(1e-9),
            seconds: epoch_seconds,
        });
    }

    /// Mean loss and accuracy over a split (None when it is empty), without gradients and with
    /// dropout and batch-norm updates off.
    /// The recorded embeddings ([`embedding::DIMENSIONS`] each) of up to
    /// [`embedding::MAX_REFERENCE_ROWS`] evenly spaced records of `split`, in eval mode.
    fn embeddings(&self, split: &Split, image: ImageShape) -> Result<Tensor, MlError> {
        let _guard = tch::no_grad_guard();
        let rows = crate::dataset::reference::sampled_records(
            usize::try_from(split.len()).unwrap_or_default(),
            embedding::MAX_REFERENCE_ROWS,
        );
        let index: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let pixels = split.pixels.index_select(0, &Tensor::from_slice(&index));
        let projection = super::infer::feature_projection(&*self.net, image, self.device);
        let chunk = (self.config.batch_size * 4).max(1);
        let mut out = Vec::new();
        for batch in pixels.split(chunk, 0) {
            let images = self
                .normalization
                .apply(&data::to_unit_nchw(&batch))
                .to_device(self.device);
            let features = self.net.features_t(&images, false);
            out.push(
                features
                    .to_kind(Kind::Float)
                    .matmul(&projection)
                    .to_device(Device::Cpu),
            );
        }
        Ok(if out.is_empty() {
            Tensor::zeros(
                [0, embedding::DIMENSIONS as i64],
                (Kind::Float, Device::Cpu),
            )
        } else {
            Tensor::cat(&out, 0)
        })
    }

    fn evaluate(&self, split: &Split) -> Result<(Option<f64>, Option<f64>), MlError> {
        let n = split.len();
        if n == 0 {
            return Ok((None, None));
        }
        let _guard = tch::no_grad_guard();
        let plan = BatchPlan {
            normalization: self.normalization.clone(),
            augmentation: None,
            seed: 0,
            epoch: 0,
            device: self.device,
        };
        let (mut loss_sum, mut correct) = (0f64, 0f64);
        for batch in Loader::sequential(split, (self.config.batch_size * 4).max(1), plan) {
            let logits = self.net.forward_t(&batch.images, false);
            let size = batch.labels.size()[0] as f64;
            let loss = logits.cross_entropy_for_logits(&batch.labels);
            loss_sum += f64::try_from(&loss).map_err(MlError::torch("reading the loss"))? * size;
            correct += correct_count(&logits, &batch.labels)?;
        }
        Ok((Some(loss_sum / n as f64), Some(correct / n as f64)))
    }

    /// Updates the early-stopping counters with the last epoch; true when it improved.
    fn early_stopping(&self, state: &mut TrainState) -> bool {
        let Some(e) = &self.config.early_stopping else {
            return false;
        };
        let Some(last) = state.history.last() else {
            return false;
        };
        let value = match e.metric {
            Monitor::ValLoss => last.val_loss.map(|v| -v),
            Monitor::ValAccuracy => last.val_accuracy,
        };
        let Some(value) = value else {
            return false;
        };
        let improved = state.best.is_none_or(|best| value > best + e.min_delta);
        if improved {
            state.best = Some(value);
            state.best_epoch = last.epoch;
            state.bad_epochs = 0;
        } else {
            state.bad_epochs += 1;
            if state.bad_epochs >= e.patience.max(1) {
                state.stopped_early = true;
            }
        }
        improved
    }

    /// Writes a checkpoint; among replicas only rank 0 does (their weights are the same),
    /// and the others name the directory it writes to.
    fn save(&self, state: &TrainState) -> Result<PathBuf, MlError> {
        if self.replicas.as_ref().is_some_and(|r| r.rank() != 0) {
            return Ok(self.checkpoints.dir().to_path_buf());
        }
        self.checkpoints.save(
            &self.vs,
            &self.opt.state_tensors(),
            self.best_weights.as_deref(),
            state,
        )
    }
}

/// How often a job asked its replicas to checkpoint (`TOUCAN_CHECKPOINT_EVERY`: `2 epochs`,
/// `500 steps`), as the TrainingJob's `checkpoint.every` sets it.
fn checkpoint_every_from_env() -> Result<Option<CheckpointEvery>, MlError> {
    match std::env::var("TOUCAN_CHECKPOINT_EVERY") {
        Ok(text) => CheckpointEvery::parse(&text)
            .map(Some)
            .map_err(|e| MlError::InvalidArgument(format!("TOUCAN_CHECKPOINT_EVERY: {e}"))),
        Err(_) => Ok(None),
    }
}

/// The libtorch seed of one batch (dropout masks).
fn batch_seed(seed: u64, epoch: u32, batch: u64) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(epoch.to_le_bytes());
    h.update(batch.to_le_bytes());
    let d = h.finalize();
    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7] & 0x7f])
}

/// Copies of every variable (for restoring the best epoch's weights).
fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn restore(vs: &nn::VarStore, saved: &[(String, Tensor)]) -> Result<(), MlError> {
    let vars = vs.variables();
    let _guard = tch::no_grad_guard();
    for (name, value) in saved {
        let mut var = vars.get(name).map(Tensor::shallow_clone).ok_or_else(|| {
            MlError::InvalidArgument(format!("saved weights have an unknown variable {name}"))
        })?;
        var.f_copy_(value)
            .map_err(MlError::torch(format!("restoring {name}")))?;
    }
    Ok(())
}

/// Loads pretrained weights into the variables under `prefix`: the file's `x` fills the
/// model's `<prefix>x`. Every backbone variable must be in the file.
pub fn load_backbone(vs: &mut nn::VarStore, prefix: &str, path: &Path) -> Result<usize, MlError> {
    let tensors = Tensor::read_safetensors(path).map_err(MlError::torch(format!(
        "loading pretrained weights {}",
        path.display()
    )))?;
    let by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let _guard = tch::no_grad_guard();
    let mut loaded = 0;
    let mut missing = Vec::new();
    for (name, mut var) in vs.variables() {
        let Some(key) = name.strip_prefix(prefix) else {
            continue;
        };
        match by_name.get(key) {
            Some(src) if src.size() == var.size() => {
                var.f_copy_(&src.to_kind(var.kind()))
                    .map_err(MlError::torch(format!("loading {name}")))?;
                loaded += 1;
            }
            Some(src) => {
                return Err(MlError::InvalidArgument(format!(
                    "{}: {key} has shape {:?}, the model's {name} {:?}",
                    path.display(),
                    src.size(),
                    var.size()
                )));
            }
            None => missing.push(key.to_string()),
        }
    }
    if !missing.is_empty() {
        missing.sort();
        return Err(MlError::InvalidArgument(format!(
            "{}: no weights for {} backbone variable(s), e.g. {}",
            path.display(),
            missing.len(),
            missing[0]
        )));
    }
    Ok(loaded)
}

fn correct_count(logits: &Tensor, labels: &Tensor) -> Result<f64, MlError> {
    let hits = logits
        .argmax(-1, false)
        .eq_tensor(labels)
        .to_kind(Kind::Float)
        .sum(Kind::Float);
    f64::try_from(&hits).map_err(MlError::torch("counting correct predictions"))
}

/// `<out>.<suffix>` beside `out`.
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "model".into());
    name.push(format!(".{suffix}"));
    out.with_file_name(name)
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), MlError> {
    let write_err = |source| MlError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes =
        serde_json::to_vec_pretty(value).map_err(|e| write_err(std::io::Error::other(e)))?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jobs_checkpoint_interval_parses() {
        let parse = |t: &str| CheckpointEvery::parse(t).ok();
        assert_eq!(parse("2 epochs"), Some(CheckpointEvery::Epochs(2)));
        assert_eq!(parse("1 epoch"), Some(CheckpointEvery::Epochs(1)));
        assert_eq!(parse("500 steps"), Some(CheckpointEvery::Steps(500)));
        assert_eq!(parse("0 steps"), None);
        assert_eq!(parse("often"), None);
    }
}
