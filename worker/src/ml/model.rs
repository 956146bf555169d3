//! The model zoo, by name. Variables are registered under stable names (`fc`, `conv1`, ...)
//! because the saved safetensors file is keyed by them.

use serde::Serialize;
use tch::nn::{self, ModuleT};

use crate::dataset::ImageShape;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Softmax regression: one linear layer on the flattened pixels.
    Linear,
    /// Two conv/ReLU/max-pool blocks (32 and 64 filters), a 128-unit hidden layer, dropout.
    Cnn,
}

/// CNN widths; the names of the variables follow the layers.
const CNN_FILTERS: [i64; 2] = [32, 64];
const CNN_HIDDEN: i64 = 128;
const CNN_DROPOUT: f64 = 0.25;

pub fn build(
    vs: &nn::Path,
    kind: ModelKind,
    shape: ImageShape,
    classes: i64,
) -> impl ModuleT + use<> {
    let (c, h, w) = (
        shape.channels as i64,
        shape.height as i64,
        shape.width as i64,
    );
    match kind {
        ModelKind::Linear => nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(
            vs / "fc",
            c * h * w,
            classes,
            Default::default(),
        )),
        ModelKind::Cnn => {
            let conv = nn::ConvConfig {
                padding: 1,
                ..Default::default()
            };
            let [f1, f2] = CNN_FILTERS;
            // Two 2x2 poolings, each rounding down.
            let flat = f2 * (h / 2 / 2) * (w / 2 / 2);
            nn::seq_t()
                .add(nn::conv2d(vs / "conv1", c, f1, 3, conv))
                .add_fn(|x| x.relu().max_pool2d_default(2))
                .add(nn::conv2d(vs / "conv2", f1, f2, 3, conv))
                .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
                .add(nn::linear(vs / "fc1", flat, CNN_HIDDEN, Default::default()))
                .add_fn(|x| x.relu())
                .add_fn_t(|x, train| x.dropout(CNN_DROPOUT, train))
                .add(nn::linear(
                    vs / "fc2",
                    CNN_HIDDEN,
                    classes,
                    Default::default(),
                ))
        }
    }
}
