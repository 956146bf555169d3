//! What `toucan-worker train` does, as one value: a YAML file (`--config`) and/or flags.
//!
//! The file uses the manifests' camelCase keys; every key is optional and unknown keys are
//! errors (`train.yaml: optimizer.learningRate: unknown field ...`). Flags override the file.
//! [`TrainConfig::validate`] checks the ranges and names the field. The resolved config is
//! written next to the weights (`config.json`) and its digest guards `--resume` against
//! continuing a run with different settings.
//!
//! ```yaml
//! model: {kind: resnet, blocks: [2, 2, 2], filters: [32, 64, 128]}
//! epochs: 20
//! batchSize: 128
//! seed: 7
//! optimizer: {kind: sgd, learningRate: 0.1, momentum: 0.9, nesterov: true}
//! schedule: {kind: cosine, warmupEpochs: 1, minLearningRate: 0.001}
//! regularization: {l2: 0.0005}
//! augmentation: {flip: true, rotation: 10, zoom: 0.1, translate: 0.1, brightness: 0.2, contrast: 0.2}
//! earlyStopping: {metric: val_accuracy, patience: 3, minDelta: 0.001}
//! checkpoint: {everySteps: 500}
//! transfer: {pretrained: efficientnet-lite0.safetensors, freezeBackbone: false, backboneLrScale: 0.1}
//! initFrom: ../head-only-model
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::MlError;
use crate::args::Range;

/// What each single number of the config must be: the file's validation
/// ([`TrainConfig::validate`]) and the flags' value parsers (`train --epochs`, `--lr`, ...)
/// apply the same rule, so the two accept the same values.
pub mod rules {
    use crate::args::{AtLeast, Range};

    pub const EPOCHS: AtLeast<u32> = AtLeast(1);
    pub const BATCH_SIZE: AtLeast<i64> = AtLeast(1);
    pub const LEARNING_RATE: Range = Range::POSITIVE;
    pub const MOMENTUM: Range = Range::FRACTION;
    /// Adam's beta1 and beta2.
    pub const BETA: Range = Range::FRACTION;
    pub const EPS: Range = Range::POSITIVE;
    pub const WEIGHT_DECAY: Range = Range::NON_NEGATIVE;
    pub const WARMUP_EPOCHS: Range = Range::NON_NEGATIVE;
    pub const STEP_EPOCHS: AtLeast<u32> = AtLeast(1);
    pub const GAMMA: Range = Range::POSITIVE;
    /// l1 and l2.
    pub const REGULARIZATION: Range = Range::NON_NEGATIVE;
    /// Degrees either way.
    pub const ROTATION: Range = Range::up_to(180.0);
    /// Beyond 0.9 a zoom out shrinks the image to almost nothing.
    pub const ZOOM: Range = Range::up_to(0.9);
    /// Half the size either way already moves the whole image's center to an edge.
    pub const TRANSLATE: Range = Range::up_to(0.5);
    pub const BRIGHTNESS: Range = Range::up_to(1.0);
    pub const CONTRAST: Range = Range::up_to(1.0);
    pub const DROPOUT: Range = Range::FRACTION;
    pub const WIDTH: Range = Range::POSITIVE;
    pub const MIN_DELTA: Range = Range::NON_NEGATIVE;
    pub const CHECKPOINT_EVERY_STEPS: AtLeast<u64> = AtLeast(1);
    pub const BACKBONE_LR_SCALE: Range = Range::POSITIVE;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Softmax regression: one linear layer on the flattened pixels.
    Linear,
    /// Fully connected hidden layers (`hidden`), each with optional batch norm, ReLU, dropout.
    Dnn,
    /// Conv/ReLU/max-pool blocks (`filters`), one hidden layer (`hidden[0]`), dropout.
    Cnn,
    /// A small ResNet: a 3x3 stem, stages of basic residual blocks (`blocks`, `filters`),
    /// global average pooling.
    Resnet,
    /// MobileNetV2: inverted residual blocks of depthwise-separable convolutions, scaled by
    /// `width`.
    Mobilenetv2,
    /// EfficientNet-Lite0 (224x224 RGB), for transfer learning from ImageNet weights.
    #[value(name = "efficientnet-lite0")]
    #[serde(rename = "efficientnet-lite0")]
    EfficientnetLite0,
}

/// The architecture and its sizes. Unset sizes take the kind's defaults ([`ModelConfig::resolved`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ModelConfig {
    pub kind: ModelKind,
    /// Hidden layer widths (dnn: all of them; cnn: the one after the convolutions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<i64>>,
    /// Convolution widths (cnn: per block; resnet: per stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<i64>>,
    /// Residual blocks per stage (resnet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropout: Option<f64>,
    /// Batch normalization after each hidden layer (dnn) or convolution (cnn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_norm: Option<bool>,
    /// Width multiplier (mobilenetv2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<f64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig::of(ModelKind::Cnn)
    }
}

impl ModelConfig {
    pub fn of(kind: ModelKind) -> ModelConfig {
        ModelConfig {
            kind,
            hidden: None,
            filters: None,
            blocks: None,
            dropout: None,
            batch_norm: None,
            width: None,
        }
    }

    /// Every size filled in with the kind's default, so that the saved description rebuilds
    /// the same network whatever the defaults become.
    pub fn resolved(&self) -> ModelConfig {
        let mut m = self.clone();
        let (hidden, filters, blocks, dropout, batch_norm, width): (
            &[i64],
            &[i64],
            &[i64],
            f64,
            bool,
            f64,
        ) = match self.kind {
            ModelKind::Linear => (&[], &[], &[], 0.0, false, 1.0),
            ModelKind::Dnn => (&[256, 128], &[], &[], 0.2, true, 1.0),
            ModelKind::Cnn => (&[128], &[32, 64], &[], 0.25, false, 1.0),
            ModelKind::Resnet => (&[], &[32, 64, 128], &[2, 2, 2], 0.0, true, 1.0),
            ModelKind::Mobilenetv2 => (&[], &[], &[], 0.2, true, 1.0),
            ModelKind::EfficientnetLite0 => (&[], &[], &[], 0.2, true, 1.0),
        };
        m.hidden.get_or_insert_with(|| hidden.to_vec());
        m.filters.get_or_insert_with(|| filters.to_vec());
        m.blocks.get_or_insert_with(|| blocks.to_vec());
        m.dropout.get_or_insert(dropout);
        m.batch_norm.get_or_insert(batch_norm);
        m.width.get_or_insert(width);
        m
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Stochastic gradient descent with (optionally Nesterov) momentum.
    Sgd,
    Adam,
    /// Adam with decoupled weight decay.
    Adamw,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct OptimizerConfig {
    pub kind: OptimizerKind,
    pub learning_rate: f64,
    /// SGD only.
    pub momentum: f64,
    pub nesterov: bool,
    /// Adam and AdamW.
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// AdamW's decoupled decay (`w -= lr * weightDecay * w`); for L2 on SGD or Adam use
    /// `regularization.l2`.
    pub weight_decay: f64,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig {
            kind: OptimizerKind::Adam,
            learning_rate: 1e-3,
            momentum: 0.9,
            nesterov: false,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    /// Multiply by `gamma` every `stepEpochs` epochs.
    Step,
    /// Cosine decay from the learning rate to `minLearningRate` over the run.
    Cosine,
}

/// The learning rate as a function of the step; see [`super::schedule`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct ScheduleConfig {
    pub kind: ScheduleKind,
    /// Linear warm-up from 0 over this many epochs (fractions allowed), before the schedule.
    pub warmup_epochs: f64,
    pub step_epochs: u32,
    pub gamma: f64,
    pub min_learning_rate: f64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig {
            kind: ScheduleKind::Constant,
            warmup_epochs: 0.0,
            step_epochs: 10,
            gamma: 0.1,
            min_learning_rate: 0.0,
        }
    }
}

/// Penalties added to the loss's gradient: `l1 * sign(w)` and `l2 * w`, on weights only
/// (not biases or batch-norm parameters), like Keras' kernel regularizers. `l2` follows
/// PyTorch's `weight_decay` convention (gradient `l2 * w`); Keras' `L2(x)` is `l2 = 2x`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Regularization {
    pub l1: f64,
    pub l2: f64,
}

/// Random transformations of each training batch, drawn per image; off when zero/false.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct Augmentation {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Rotate by up to this many degrees either way.
    pub rotation: f64,
    /// Scale by a factor in [1 - zoom, 1 + zoom] (zooming in crops).
    pub zoom: f64,
    /// Shift by up to this fraction of the width/height (a random crop with padding).
    pub translate: f64,
    /// Add up to this much (on the [0, 1] pixel scale) either way.
    pub brightness: f64,
    /// Scale the contrast around the image mean by a factor in [1 - contrast, 1 + contrast].
    pub contrast: f64,
}

impl Augmentation {
    pub fn any(&self) -> bool {
        self.flip
            || self.rotation > 0.0
            || self.zoom > 0.0
            || self.translate > 0.0
            || self.brightness > 0.0
            || self.contrast > 0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Monitor {
    #[serde(rename = "val_loss")]
    #[value(name = "val_loss")]
    ValLoss,
    #[serde(rename = "val_accuracy")]
    #[value(name = "val_accuracy")]
    ValAccuracy,
}

/// Stop when the monitored validation metric has not improved by `minDelta` for `patience`
/// epochs; with `restoreBest` the saved weights are those of the best epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct EarlyStopping {
    pub metric: Monitor,
    pub patience: u32,
    pub min_delta: f64,
    pub restore_best: bool,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        EarlyStopping {
            metric: Monitor::ValLoss,
            patience: 3,
            min_delta: 0.0,
            restore_best: true,
        }
    }
}

/// When to write a checkpoint: after every epoch, and every `everySteps` optimizer steps
/// when set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct CheckpointConfig {
    pub every_steps: Option<u64>,
}

/// Transfer learning and fine-tuning (efficientnet-lite0): the backbone is loaded from
/// `pretrained` and a new head is trained for this dataset's classes; the backbone can be
/// frozen or trained at a scaled learning rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TransferConfig {
    /// The backbone's weights (`scripts/pretrained` converts EfficientNet-Lite0's). Not needed
    /// when the run starts from a trained model (`initFrom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Train the head only (transfer learning); the backbone's batch norms stay in inference
    /// mode.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// The backbone's learning rate is the head's times this (differential learning rates for
    /// fine-tuning).
    #[serde(default = "one")]
    pub backbone_lr_scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default, rename_all = "camelCase")]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub epochs: u32,
    pub batch_size: i64,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
    pub regularization: Regularization,
    pub augmentation: Augmentation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub early_stopping: Option<EarlyStopping>,
    pub checkpoint: CheckpointConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferConfig>,
    /// Start from the weights of a trained model (a `train --out` directory) of the same
    /// architecture and classes, e.g. to fine-tune after transfer learning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            model: ModelConfig::default(),
            epochs: 5,
            batch_size: 128,
            seed: 0,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig::default(),
            regularization: Regularization::default(),
            augmentation: Augmentation::default(),
            early_stopping: None,
            checkpoint: CheckpointConfig::default(),
            transfer: None,
            init_from: None,
        }
    }
}

impl TrainConfig {
    /// Reads a YAML config; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<TrainConfig, MlError> {
        let text = std::fs::read_to_string(path).map_err(|e| MlError::Config {
            file: path.to_path_buf(),
            field: String::new(),
            message: e.to_string(),
        })?;
        Self::from_yaml(path, &text)
    }

    pub fn from_yaml(path: &Path, text: &str) -> Result<TrainConfig, MlError> {
        if text.trim().is_empty() {
            return Ok(TrainConfig::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            MlError::Config {
                file: path.to_path_buf(),
                field: if field == "." { String::new() } else { field },
                message: e.into_inner().to_string(),
            }
        })
    }

    /// Range checks, naming the field as the file would. The single-value rules are
    /// [`rules`], which the flags' parsers apply too.
    pub fn validate(&self) -> Result<(), (String, String)> {
        fn at(field: &'static str) -> impl Fn(String) -> (String, String) {
            move |message| (field.to_string(), message)
        }
        let bad = |field: &str, message: &str| Err((field.to_string(), message.to_string()));
        rules::EPOCHS.check(self.epochs).map_err(at("epochs"))?;
        rules::BATCH_SIZE
            .check(self.batch_size)
            .map_err(at("batchSize"))?;
        let o = &self.optimizer;
        rules::LEARNING_RATE
            .check(o.learning_rate)
            .map_err(at("optimizer.learningRate"))?;
        rules::MOMENTUM
            .check(o.momentum)
            .map_err(at("optimizer.momentum"))?;
        rules::BETA.check(o.beta1).map_err(at("optimizer.beta1"))?;
        rules::BETA.check(o.beta2).map_err(at("optimizer.beta2"))?;
        rules::EPS.check(o.eps).map_err(at("optimizer.eps"))?;
        rules::WEIGHT_DECAY
            .check(o.weight_decay)
            .map_err(at("optimizer.weightDecay"))?;
        let s = &self.schedule;
        rules::WARMUP_EPOCHS
            .check(s.warmup_epochs)
            .map_err(at("schedule.warmupEpochs"))?;
        if s.kind == ScheduleKind::Step {
            rules::STEP_EPOCHS
                .check(s.step_epochs)
                .map_err(at("schedule.stepEpochs"))?;
            rules::GAMMA.check(s.gamma).map_err(at("schedule.gamma"))?;
        }
        if !Range::NON_NEGATIVE.contains(s.min_learning_rate)
            || s.min_learning_rate > o.learning_rate
        {
            return Err((
                "schedule.minLearningRate".into(),
                format!(
                    "must be between 0 and the learning rate ({})",
                    o.learning_rate
                ),
            ));
        }
        rules::REGULARIZATION
            .check(self.regularization.l1)
            .map_err(at("regularization.l1"))?;
        rules::REGULARIZATION
            .check(self.regularization.l2)
            .map_err(at("regularization.l2"))?;
        let a = &self.augmentation;
        for (field, v, rule) in [
            ("augmentation.rotation", a.rotation, rules::ROTATION),
            ("augmentation.zoom", a.zoom, rules::ZOOM),
            ("augmentation.translate", a.translate, rules::TRANSLATE),
            ("augmentation.brightness", a.brightness, rules::BRIGHTNESS),
            ("augmentation.contrast", a.contrast, rules::CONTRAST),
        ] {
            rule.check(v).map_err(at(field))?;
        }
        let m = self.model.resolved();
        if let Some(d) = m.dropout {
            rules::DROPOUT.check(d).map_err(at("model.dropout"))?;
        }
        for (field, sizes) in [
            ("model.hidden", &m.hidden),
            ("model.filters", &m.filters),
            ("model.blocks", &m.blocks),
        ] {
            if sizes.iter().flatten().any(|&n| n <= 0) {
                return bad(field, "every entry must be at least 1");
            }
        }
        if self.model.kind == ModelKind::Cnn && m.hidden.as_ref().is_none_or(|h| h.len() != 1) {
            return bad("model.hidden", "a cnn has exactly one hidden layer");
        }
        if self.model.kind == ModelKind::Resnet
            && m.filters.as_ref().map(Vec::len) != m.blocks.as_ref().map(Vec::len)
        {
            return bad(
                "model.blocks",
                "resnet needs as many stages in blocks as in filters",
            );
        }
        if let Some(w) = m.width {
            rules::WIDTH.check(w).map_err(at("model.width"))?;
        }
        if let Some(e) = &self.early_stopping {
            rules::MIN_DELTA
                .check(e.min_delta)
                .map_err(at("earlyStopping.minDelta"))?;
        }
        if let Some(every) = self.checkpoint.every_steps {
            rules::CHECKPOINT_EVERY_STEPS
                .check(every)
                .map_err(at("checkpoint.everySteps"))?;
        }
        if let Some(t) = &self.transfer {
            rules::BACKBONE_LR_SCALE
                .check(t.backbone_lr_scale)
                .map_err(at("transfer.backboneLrScale"))?;
            if self.model.kind != ModelKind::EfficientnetLite0 {
                return bad(
                    "transfer",
                    "pretrained weights exist for model.kind efficientnet-lite0 only",
                );
            }
        }
        Ok(())
    }

    /// SHA-256 of the canonical JSON: what a checkpoint must match to be resumed.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::dataset::sha256_hex(&json)
    }

    /// What a checkpoint must match to be resumed: everything but `epochs`, so that a run
    /// with a larger epoch count continues one with a smaller.
    pub fn resume_digest(&self) -> String {
        let mut without = self.clone();
        without.epochs = 0;
        without.digest()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parse(text: &str) -> Result<TrainConfig, MlError> {
        TrainConfig::from_yaml(Path::new("train.yaml"), text)
    }

    #[test]
    fn the_documented_example_parses() {
        let text = r#"
model: {kind: resnet, blocks: [2, 2, 2], filters: [32, 64, 128]}
epochs: 20
batchSize: 128
seed: 7
optimizer: {kind: sgd, learningRate: 0.1, momentum: 0.9, nesterov: true}
schedule: {kind: cosine, warmupEpochs: 1, minLearningRate: 0.001}
regularization: {l2: 0.0005}
augmentation: {flip: true, rotation: 10, zoom: 0.1, translate: 0.1, brightness: 0.2, contrast: 0.2}
earlyStopping: {metric: val_accuracy, patience: 3, minDelta: 0.001}
checkpoint: {everySteps: 500}
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.model.kind, ModelKind::Resnet);
        assert_eq!(c.optimizer.kind, OptimizerKind::Sgd);
        assert!(c.optimizer.nesterov);
        assert_eq!(c.schedule.kind, ScheduleKind::Cosine);
        assert_eq!(
            c.early_stopping.as_ref().unwrap().metric,
            Monitor::ValAccuracy
        );
        assert!(c.early_stopping.as_ref().unwrap().restore_best);
        assert_eq!(c.checkpoint.every_steps, Some(500));
        c.validate().unwrap();
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = parse("optimizer: {learningRat: 0.1}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("train.yaml: optimizer"), "{e}");
        assert!(e.contains("learningRat"), "{e}");
        let e = parse("epochs: many").unwrap_err().to_string();
        assert!(e.starts_with("train.yaml: epochs:"), "{e}");
        let e = parse("model: {kind: vgg}").unwrap_err().to_string();
        assert!(e.contains("model.kind"), "{e}");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = TrainConfig::default();
        c.optimizer.learning_rate = -1.0;
        assert_eq!(c.validate().unwrap_err().0, "optimizer.learningRate");
        let mut c = TrainConfig::default();
        c.augmentation.rotation = 400.0;
        assert_eq!(c.validate().unwrap_err().0, "augmentation.rotation");
        let mut c = TrainConfig {
            model: ModelConfig::of(ModelKind::Resnet),
            ..TrainConfig::default()
        };
        c.model.blocks = Some(vec![1]);
        assert_eq!(c.validate().unwrap_err().0, "model.blocks");
    }

    #[test]
    fn resolution_fills_every_size_and_keeps_given_ones() {
        let mut m = ModelConfig::of(ModelKind::Dnn);
        m.hidden = Some(vec![64]);
        let r = m.resolved();
        assert_eq!(r.hidden, Some(vec![64]));
        assert_eq!(r.dropout, Some(0.2));
        assert_eq!(r.resolved(), r);
    }

    #[test]
    fn the_digest_follows_the_settings() {
        let a = TrainConfig::default();
        let mut b = a.clone();
        assert_eq!(a.digest(), b.digest());
        b.seed = 1;
        assert_ne!(a.digest(), b.digest());
    }
}
