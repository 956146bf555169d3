//! The model zoo. [`build`] turns a resolved [`ModelConfig`] into a network; variables are
//! registered under stable names (`fc`, `conv1`, `stage1.0.conv2`, ...) because the saved
//! weights are keyed by them, and a model description (`model.json`) plus the weights rebuild
//! the same network anywhere.
//!
//! - `linear`: one linear layer on the flattened pixels (softmax regression).
//! - `dnn`: `hidden` fully connected layers, each linear → batch norm (optional) → ReLU →
//!   dropout, then the output layer.
//! - `cnn`: per entry of `filters` a 3x3 convolution (padding 1) → batch norm (optional) →
//!   ReLU → 2x2 max pool; then one hidden layer of `hidden[0]` units with ReLU and dropout.
//! - `resnet`: a 3x3 stem, then per stage `blocks[i]` basic residual blocks of `filters[i]`
//!   channels (two 3x3 convolutions with batch norm; a 1x1 projection when the shape changes;
//!   every stage after the first halves the resolution), global average pooling, dropout, fc.
//! - `mobilenetv2`: a 3x3 stem (stride 2 on images of 64 pixels or more, else 1), inverted
//!   residual blocks (1x1 expansion → 3x3 depthwise → 1x1 linear projection, ReLU6, residual
//!   when the shape allows), a 1x1 convolution to the feature width, pooling, dropout, fc.
//!   The block table is MobileNetV2's first five stages, sized for small images; `width`
//!   scales every channel count (rounded to multiples of 8).
//! - `efficientnet-lite0`: see [`super::efficientnet`]; its backbone lives under `backbone`
//!   and the classifier under `head`, so pretrained weights load into the first and the
//!   second is new.
//!
//! Every network is a [`Classifier`]: its features (the penultimate layer, the model's
//! embedding of an image) and its head, which maps them to logits. For `linear` the features
//! are the pixels themselves; for `dnn` without hidden layers too.

use tch::nn::{self, Module, ModuleT};
use tch::{Kind, Tensor};

use super::MlError;
use super::config::{ModelConfig, ModelKind};
use super::efficientnet;
use crate::dataset::ImageShape;

/// A network ready for `forward_t(images, train)`: images are NCHW float, normalized.
pub type Network = Box<dyn Classifier>;

/// A network whose last layers are a classifier head on an embedding.
pub trait Classifier: ModuleT {
    /// The penultimate layer's activations, `[N, features]`: what the head reads. In
    /// inference mode (`train: false`) dropout is off, as for `forward_t`.
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor;

    /// The logits of features that [`Classifier::features_t`] gave: `forward_t` is the two in
    /// a row.
    fn head_t(&self, features: &Tensor, train: bool) -> Tensor;
}

/// A sequence of layers to the embedding, and another from it to the logits.
#[derive(Debug)]
struct Split {
    body: nn::SequentialT,
    head: nn::SequentialT,
}

impl ModuleT for Split {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.features_t(xs, train), train)
    }
}

impl Classifier for Split {
    fn features_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.body.forward_t(xs, train)
    }

    fn head_t(&self, features: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(features, train)
    }
}

/// Variable-name prefix of the pretrained part of a model, if it has one.
pub fn backbone_prefix(kind: ModelKind) -> Option<&'static str> {
    match kind {
        ModelKind::EfficientnetLite0 => Some("backbone."),
        _ => None,
    }
}

/// Builds the network. `frozen_backbone` keeps a pretrained backbone's batch norms in
/// inference mode during training (its weights are frozen by the trainer).
/// The input scaling a kind's pretrained weights expect, overriding the dataset's statistics:
/// EfficientNet-Lite0 takes `p / 127.5 - 1`, i.e. mean 0.5 and std 0.5 on the [0, 1] scale.
pub fn fixed_normalization(kind: ModelKind) -> Option<super::data::Normalization> {
    match kind {
        ModelKind::EfficientnetLite0 => Some(super::data::Normalization {
            mean: vec![0.5; 3],
            std: vec![0.5; 3],
        }),
        _ => None,
    }
}

pub fn build(
    vs: &nn::Path,
    config: &ModelConfig,
    shape: ImageShape,
    classes: i64,
    frozen_backbone: bool,
) -> Result<Network, MlError> {
    let m = config.resolved();
    let (c, h, w) = (
        i64::from(shape.channels),
        i64::from(shape.height),
        i64::from(shape.width),
    );
    let hidden = m.hidden.unwrap_or_default();
    let filters = m.filters.unwrap_or_default();
    let blocks = m.blocks.unwrap_or_default();
    let dropout = m.dropout.unwrap_or(0.0);
    let batch_norm = m.batch_norm.unwrap_or(false);
    let net: Network = match m.kind {
        ModelKind::Linear => Box::new(Split {
            body: nn::seq_t().add_fn(|x| x.flatten(1, -1)),
            head: nn::seq_t().add(nn::linear(
                vs / "fc",
                c * h * w,
                classes,
                Default::default(),
            )),
        }),
        ModelKind::Dnn => {
            let mut net = nn::seq_t().add_fn(|x| x.flatten(1, -1));
            let mut width = c * h * w;
            for (i, &units) in hidden.iter().enumerate() {
                net = net.add(nn::linear(
                    vs / format!("fc{}", i + 1),
                    width,
                    units,
                    Default::default(),
                ));
                if batch_norm {
                    net = net.add(nn::batch_norm1d(
                        vs / format!("bn{}", i + 1),
                        units,
                        Default::default(),
                    ));
                }
                net = net
                    .add_fn(|x| x.relu())
                    .add_fn_t(move |x, train| x.dropout(dropout, train));
                width = units;
            }
            Box::new(Split {
                body: net,
                head: nn::seq_t().add(nn::linear(vs / "out", width, classes, Default::default())),
            })
        }
        ModelKind::Cnn => {
            let conv = nn::ConvConfig {
                padding: 1,
                bias: !batch_norm,
                ..Default::default()
            };
            let mut net = nn::seq_t();
            let (mut channels, mut height, mut width) = (c, h, w);
            for (i, &f) in filters.iter().enumerate() {
                net = net.add(nn::conv2d(
                    vs / format!("conv{}", i + 1),
                    channels,
                    f,
                    3,
                    conv,
                ));
                if batch_norm {
                    net = net.add(nn::batch_norm2d(
                        vs / format!("bn{}", i + 1),
                        f,
                        Default::default(),
                    ));
                }
                net = net.add_fn(|x| x.relu().max_pool2d_default(2));
                channels = f;
                height /= 2;
                width /= 2;
            }
            if height == 0 || width == 0 {
                return Err(MlError::InvalidArgument(format!(
                    "model.filters: {} pooling blocks are too many for {h}x{w} images",
                    filters.len()
                )));
            }
            let units = hidden.first().copied().unwrap_or(128);
            Box::new(Split {
                body: net
                    .add_fn(|x| x.flatten(1, -1))
                    .add(nn::linear(
                        vs / "fc1",
                        channels * height * width,
                        units,
                        Default::default(),
                    ))
                    .add_fn(|x| x.relu()),
                head: nn::seq_t()
                    .add_fn_t(move |x, train| x.dropout(dropout, train))
                    .add(nn::linear(vs / "fc2", units, classes, Default::default())),
            })
        }
        ModelKind::Resnet => Box::new(ResNet::new(vs, c, &filters, &blocks, dropout, classes)),
        ModelKind::Mobilenetv2 => Box::new(MobileNetV2::new(
            vs,
            c,
            h.min(w),
            m.width.unwrap_or(1.0),
            dropout,
            classes,
        )),
        ModelKind::EfficientnetLite0 => {
            if c != 3 {
                return Err(MlError::InvalidArgument(format!(
                    "efficientnet-lite0 needs RGB images; this dataset has {c} channel(s) (ingest with --channels 3)"
                )));
            }
            Box::new(Transfer {
                backbone: efficientnet::Backbone::new(&(vs / "backbone")),
                head: efficientnet::Head::new(&(vs / "head"), classes),
                frozen_backbone,
            })
        }
    };
    Ok(net)
}

/// A pretrained backbone and a new head. The head's dropout is EfficientNet's own
/// ([`efficientnet::DROPOUT`]).
#[derive(Debug)]
struct Transfer {
    backbone: efficientnet::Backbone,
    head: efficientnet::Head,
    frozen_backbone: bool,
}

impl ModuleT for Transfer {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.features_t(x, train), train)
    }
}

impl Classifier for Transfer {
    fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(x, train && !self.frozen_backbone)
    }

    fn head_t(&self, features: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(features, train)
    }
}

fn conv_bn(vs: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64) -> ConvBn {
    ConvBn {
        conv: nn::conv2d(
            vs / "conv",
            cin,
            cout,
            k,
            nn::ConvConfig {
                stride,
                padding: k / 2,
                groups,
                bias: false,
                ..Default::default()
            },
        ),
        bn: nn::batch_norm2d(vs / "bn", cout, Default::default()),
    }
}

/// Convolution without bias, then batch norm.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl ModuleT for ConvBn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(x), train)
    }
}

/// Two 3x3 conv/BN pairs with an identity or 1x1-projection shortcut.
#[derive(Debug)]
struct BasicBlock {
    a: ConvBn,
    b: ConvBn,
    shortcut: Option<ConvBn>,
}

impl BasicBlock {
    fn new(vs: &nn::Path, cin: i64, cout: i64, stride: i64) -> BasicBlock {
        BasicBlock {
            a: conv_bn(&(vs / "a"), cin, cout, 3, stride, 1),
            b: conv_bn(&(vs / "b"), cout, cout, 3, 1, 1),
            shortcut: (stride != 1 || cin != cout)
                .then(|| conv_bn(&(vs / "shortcut"), cin, cout, 1, stride, 1)),
        }
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = self.a.forward_t(x, train).relu();
        let y = self.b.forward_t(&y, train);
        let skip = match &self.shortcut {
            Some(s) => s.forward_t(x, train),
            None => x.shallow_clone(),
        };
        (y + skip).relu()
    }
}

#[derive(Debug)]
struct ResNet {
    stem: ConvBn,
    blocks: Vec<BasicBlock>,
    fc: nn::Linear,
    dropout: f64,
}

impl ResNet {
    fn new(
        vs: &nn::Path,
        cin: i64,
        filters: &[i64],
        blocks: &[i64],
        dropout: f64,
        classes: i64,
    ) -> ResNet {
        let first = filters.first().copied().unwrap_or(16);
        let stem = conv_bn(&(vs / "stem"), cin, first, 3, 1, 1);
        let mut layers = Vec::new();
        let mut channels = first;
        for (stage, (&f, &n)) in filters.iter().zip(blocks).enumerate() {
            for i in 0..n {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let path = vs / format!("stage{}", stage + 1) / i.to_string();
                layers.push(BasicBlock::new(&path, channels, f, stride));
                channels = f;
            }
        }
        ResNet {
            stem,
            blocks: layers,
            fc: nn::linear(vs / "fc", channels, classes, Default::default()),
            dropout,
        }
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.features_t(x, train), train)
    }
}

impl Classifier for ResNet {
    fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward_t(x, train).relu();
        for block in &self.blocks {
            y = block.forward_t(&y, train);
        }
        y.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    fn head_t(&self, features: &Tensor, train: bool) -> Tensor {
        self.fc.forward(&features.dropout(self.dropout, train))
    }
}

/// Rounds a channel count to a multiple of 8, never below 90% of it (MobileNet's rule).
fn divisible(v: f64) -> i64 {
    let rounded = (((v + 4.0) / 8.0).floor() * 8.0).max(8.0);
    if rounded < 0.9 * v {
        rounded as i64 + 8
    } else {
        rounded as i64
    }
}

/// 1x1 expansion (when `expand > 1`), 3x3 depthwise, 1x1 linear projection.
#[derive(Debug)]
struct InvertedResidual {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.shallow_clone();
        if let Some(e) = &self.expand {
            y = e.forward_t(&y, train).relu6();
        }
        let y = self.depthwise.forward_t(&y, train).relu6();
        let y = self.project.forward_t(&y, train);
        if self.residual { y + x } else { y }
    }
}

#[derive(Debug)]
struct MobileNetV2 {
    stem: ConvBn,
    blocks: Vec<InvertedResidual>,
    last: ConvBn,
    fc: nn::Linear,
    dropout: f64,
}

/// (expansion t, channels c, repeats n, first stride s), as in the MobileNetV2 paper's table,
/// first five stages.
const MOBILENET_BLOCKS: [(i64, f64, i64, i64); 5] = [
    (1, 16.0, 1, 1),
    (6, 24.0, 2, 2),
    (6, 32.0, 3, 2),
    (6, 64.0, 4, 2),
    (6, 96.0, 3, 1),
];
const MOBILENET_FEATURES: f64 = 640.0;

impl MobileNetV2 {
    fn new(
        vs: &nn::Path,
        cin: i64,
        min_side: i64,
        width: f64,
        dropout: f64,
        classes: i64,
    ) -> MobileNetV2 {
        let stem_out = divisible(32.0 * width);
        let stem_stride = if min_side >= 64 { 2 } else { 1 };
        let stem = conv_bn(&(vs / "stem"), cin, stem_out, 3, stem_stride, 1);
        let mut blocks = Vec::new();
        let mut channels = stem_out;
        for (t, c, n, s) in MOBILENET_BLOCKS {
            let out = divisible(c * width);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                let hidden = channels * t;
                let path = vs / "blocks" / blocks.len().to_string();
                blocks.push(InvertedResidual {
                    expand: (t != 1)
                        .then(|| conv_bn(&(&path / "expand"), channels, hidden, 1, 1, 1)),
                    depthwise: conv_bn(&(&path / "depthwise"), hidden, hidden, 3, stride, hidden),
                    project: conv_bn(&(&path / "project"), hidden, out, 1, 1, 1),
                    residual: stride == 1 && channels == out,
                });
                channels = out;
            }
        }
        let features = divisible(MOBILENET_FEATURES * width.max(1.0));
        MobileNetV2 {
            stem,
            blocks,
            last: conv_bn(&(vs / "last"), channels, features, 1, 1, 1),
            fc: nn::linear(vs / "fc", features, classes, Default::default()),
            dropout,
        }
    }
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.head_t(&self.features_t(x, train), train)
    }
}

impl Classifier for MobileNetV2 {
    fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward_t(x, train).relu6();
        for block in &self.blocks {
            y = block.forward_t(&y, train);
        }
        self.last
            .forward_t(&y, train)
            .relu6()
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }

    fn head_t(&self, features: &Tensor, train: bool) -> Tensor {
        self.fc.forward(&features.dropout(self.dropout, train))
    }
}

/// Parameters in a store, for reports.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// The projection of a network's features to a recorded embedding
/// ([`toucan_core::monitoring::embedding::projection`]), as a `[features, DIMENSIONS]` tensor.
pub fn embedding_projection(features: i64, device: tch::Device) -> Tensor {
    use toucan_core::monitoring::embedding::{DIMENSIONS, projection};
    let width = usize::try_from(features).unwrap_or_default();
    Tensor::from_slice(&projection(width))
        .view([features, DIMENSIONS as i64])
        .to_device(device)
}

/// A logits tensor's class probabilities (softmax in f64 for stable sums).
pub fn probabilities(logits: &Tensor) -> Tensor {
    logits.to_kind(Kind::Double).softmax(-1, Kind::Double)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use tch::Device;

    #[test]
    fn every_small_model_maps_images_to_logits() {
        let shape = ImageShape {
            height: 28,
            width: 28,
            channels: 1,
        };
        for kind in [
            ModelKind::Linear,
            ModelKind::Dnn,
            ModelKind::Cnn,
            ModelKind::Resnet,
            ModelKind::Mobilenetv2,
        ] {
            let vs = nn::VarStore::new(Device::Cpu);
            let net = build(&vs.root(), &ModelConfig::of(kind), shape, 10, false).unwrap();
            let x = Tensor::zeros([3, 1, 28, 28], (Kind::Float, Device::Cpu));
            for train in [true, false] {
                assert_eq!(net.forward_t(&x, train).size(), [3, 10], "{kind:?}");
            }
            let x = Tensor::randn([3, 1, 28, 28], (Kind::Float, Device::Cpu));
            let features = net.features_t(&x, false);
            assert_eq!(features.size().len(), 2, "{kind:?}");
            assert_eq!(features.size()[0], 3, "{kind:?}");
            let logits = net.forward_t(&x, false);
            assert!(
                net.head_t(&features, false)
                    .allclose(&logits, 1e-6, 1e-6, false),
                "{kind:?}: the head on the features is the network"
            );
            let projected = features.matmul(&embedding_projection(features.size()[1], Device::Cpu));
            assert_eq!(projected.size(), [3, 32], "{kind:?}");
            assert!(parameter_count(&vs) > 0);
        }
    }

    #[test]
    fn channel_rounding_follows_mobilenet() {
        assert_eq!(divisible(32.0), 32);
        assert_eq!(divisible(24.0 * 0.5), 16);
        assert_eq!(divisible(3.0), 8);
    }

    #[test]
    fn too_many_pooling_blocks_is_an_error() {
        let vs = nn::VarStore::new(Device::Cpu);
        let mut config = ModelConfig::of(ModelKind::Cnn);
        config.filters = Some(vec![8; 6]);
        let shape = ImageShape {
            height: 28,
            width: 28,
            channels: 1,
        };
        assert!(build(&vs.root(), &config, shape, 10, false).is_err());
    }
}
