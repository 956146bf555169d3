//! A dataset's splits as tensors: images as f32 NCHW normalized with the train split's
//! per-channel mean and std (from the card), labels as i64.

use tch::{Device, Kind, Tensor};

use super::MlError;
use crate::dataset::{Dataset, DatasetError, ImageShape};

/// One split on the device.
#[derive(Debug)]
pub struct SplitTensors {
    pub images: Tensor,
    pub labels: Tensor,
}

impl SplitTensors {
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The train split's per-channel mean and std, used for every split.
pub fn normalization(dataset: &Dataset) -> Result<(Vec<f64>, Vec<f64>), DatasetError> {
    let train = dataset.card.split("train").ok_or_else(|| {
        DatasetError::invalid_file(
            dataset.dir.join(crate::dataset::CARD_FILE),
            "no statistics for the train split",
        )
    })?;
    let mean = train.channels.iter().map(|c| c.mean).collect();
    // A constant channel would divide by zero; leave it unscaled.
    let std = train
        .channels
        .iter()
        .map(|c| if c.std > 1e-8 { c.std } else { 1.0 })
        .collect();
    Ok((mean, std))
}

pub fn load_split(
    dataset: &Dataset,
    split: &str,
    mean: &[f64],
    std: &[f64],
    device: Device,
) -> Result<SplitTensors, MlError> {
    let data = dataset.read_split(split)?;
    let ImageShape {
        height,
        width,
        channels,
    } = dataset.index.image;
    let n = data.labels.len() as i64;
    let shape = [n, height as i64, width as i64, channels as i64];
    let stats = |v: &[f64]| {
        Tensor::from_slice(v)
            .to_kind(Kind::Float)
            .view([1, -1, 1, 1])
    };
    let images = Tensor::from_slice(&data.pixels)
        .f_view(shape)
        .map_err(MlError::torch(format!("shaping the {split} split")))?
        .permute([0, 3, 1, 2])
        .to_kind(Kind::Float)
        / 255.0;
    let images = ((images - stats(mean)) / stats(std))
        .contiguous()
        .to_device(device);
    let labels: Vec<i64> = data.labels.iter().map(|&l| i64::from(l)).collect();
    Ok(SplitTensors {
        images,
        labels: Tensor::from_slice(&labels).to_device(device),
    })
}
