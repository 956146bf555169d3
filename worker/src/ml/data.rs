//! A dataset's splits for training and evaluation.
//!
//! A split is read once (its shards decoded and checked on parallel threads, see
//! [`Dataset::read_split`]) and kept as u8 NHWC pixels. Batches are made by a loader thread
//! while the model trains on the previous one ([`Loader`]): gather the batch's records, scale
//! to [0, 1], augment (training only), normalize with the train split's per-channel mean and
//! std (from the card), move to the device. A bounded channel keeps at most
//! [`PREFETCH`] batches ready.
//!
//! The order of an epoch is a permutation drawn from ChaCha8 keyed by (seed, epoch): it does
//! not depend on libtorch's generator, so a run resumed in the middle of an epoch sees the same
//! remaining batches.

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tch::{Device, Kind, Tensor};

use super::MlError;
use super::augment;
use super::config::Augmentation;
use crate::dataset::{Dataset, DatasetError, ImageShape};

/// Batches prepared ahead of the training step.
pub const PREFETCH: usize = 2;

/// One split in memory (CPU).
#[derive(Debug)]
pub struct Split {
    /// u8, NHWC.
    pub pixels: Tensor,
    /// i64, N.
    pub labels: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How pixels become model inputs: `(x / 255 - mean) / std` per channel.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Normalization {
    /// The train split's per-channel statistics from the card.
    pub fn from_card(dataset: &Dataset) -> Result<Normalization, DatasetError> {
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
        Ok(Normalization { mean, std })
    }

    /// Applies to NCHW float pixels in [0, 1].
    pub fn apply(&self, images: &Tensor) -> Tensor {
        let stats = |v: &[f64]| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .view([1, -1, 1, 1])
                .to_device(images.device())
        };
        (images - stats(&self.mean)) / stats(&self.std)
    }
}

pub fn load_split(dataset: &Dataset, split: &str) -> Result<Split, MlError> {
    let data = dataset.read_split(split)?;
    let ImageShape {
        height,
        width,
        channels,
    } = dataset.index.image;
    let n = data.labels.len() as i64;
    let pixels = Tensor::from_slice(&data.pixels)
        .f_view([n, i64::from(height), i64::from(width), i64::from(channels)])
        .map_err(MlError::torch(format!("shaping the {split} split")))?;
    let labels: Vec<i64> = data.labels.iter().map(|&l| i64::from(l)).collect();
    Ok(Split {
        pixels,
        labels: Tensor::from_slice(&labels),
    })
}

/// `split` followed by the records of the CSV pixel tables `tables` (empty paths stand for
/// none), read as `ingest --add-train` reads them: `label` holds class names of `dataset`,
/// the `pixel*` columns an image of its shape. A table with a header and no rows adds nothing.
pub fn with_added(split: Split, dataset: &Dataset, tables: &[PathBuf]) -> Result<Split, MlError> {
    let image = dataset.index.image;
    let (mut pixels, mut labels) = (vec![split.pixels], vec![split.labels]);
    for path in tables {
        let Some(records) =
            crate::ingest::pixel_csv::read_added(path, image, &dataset.index.classes)?
        else {
            continue;
        };
        let n = records.labels.len() as i64;
        pixels.push(Tensor::from_slice(&records.pixels).view([
            n,
            i64::from(image.height),
            i64::from(image.width),
            i64::from(image.channels),
        ]));
        let added: Vec<i64> = records.labels.iter().map(|&l| i64::from(l)).collect();
        labels.push(Tensor::from_slice(&added));
        eprintln!(
            "toucan-worker train: {n} records of {} join the training split",
            path.display()
        );
    }
    Ok(Split {
        pixels: Tensor::cat(&pixels, 0),
        labels: Tensor::cat(&labels, 0),
    })
}

/// u8 NHWC → float NCHW in [0, 1].
pub fn to_unit_nchw(pixels: &Tensor) -> Tensor {
    pixels.permute([0, 3, 1, 2]).to_kind(Kind::Float) / 255.0
}

/// The record order of one epoch: a Fisher-Yates shuffle keyed by (seed, epoch).
pub fn epoch_order(seed: u64, epoch: u32, n: i64) -> Vec<i64> {
    // The top bit keeps these streams apart from augmentation's (epoch << 40 ^ batch).
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((1 << 63) | u64::from(epoch));
    let mut order: Vec<i64> = (0..n).collect();
    for i in (1..order.len()).rev() {
        let j = ((rng.next_u64() as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// A prepared batch.
#[derive(Debug)]
pub struct Batch {
    /// Position of the batch in its epoch.
    pub index: u64,
    pub images: Tensor,
    pub labels: Tensor,
}

/// What a loader does to each batch.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    pub normalization: Normalization,
    pub augmentation: Option<Augmentation>,
    pub seed: u64,
    pub epoch: u32,
    pub device: Device,
}

/// Prepares the batches of one pass over a split on a background thread.
#[derive(Debug)]
pub struct Loader {
    rx: mpsc::Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl Loader {
    /// Batches `first_batch..` of `order` (record indices) in slices of `batch_size`.
    pub fn start(
        split: &Split,
        order: Vec<i64>,
        batch_size: i64,
        first_batch: u64,
        plan: BatchPlan,
    ) -> Loader {
        let (tx, rx) = mpsc::sync_channel(PREFETCH);
        let pixels = split.pixels.shallow_clone();
        let labels = split.labels.shallow_clone();
        // OpenMP keeps the thread count per thread: a new thread would start from the
        // machine's core count, whatever `--threads` set (libtorch's own threads call
        // `at::init_num_threads` for the same reason).
        let threads = tch::get_num_threads();
        let handle = std::thread::spawn(move || {
            tch::set_num_threads(threads);
            let _guard = tch::no_grad_guard();
            let order = Tensor::from_slice(&order);
            let n = order.size()[0];
            let mut index = first_batch;
            let mut start = first_batch as i64 * batch_size;
            while start < n {
                let size = batch_size.min(n - start);
                let idx = order.narrow(0, start, size);
                let mut images = to_unit_nchw(&pixels.index_select(0, &idx));
                if let Some(aug) = plan.augmentation.as_ref().filter(|a| a.any()) {
                    let mut rng = augment::rng_for(plan.seed, plan.epoch, index);
                    images = augment::apply(aug, &images, &mut rng);
                }
                let images = plan
                    .normalization
                    .apply(&images)
                    .contiguous()
                    .to_device(plan.device);
                let labels = labels.index_select(0, &idx).to_device(plan.device);
                if tx
                    .send(Batch {
                        index,
                        images,
                        labels,
                    })
                    .is_err()
                {
                    // The consumer stopped early (SIGTERM, error): nothing more to do.
                    return;
                }
                index += 1;
                start += size;
            }
        });
        Loader {
            rx,
            handle: Some(handle),
        }
    }

    /// A sequential pass (evaluation): no shuffle, no augmentation.
    pub fn sequential(split: &Split, batch_size: i64, plan: BatchPlan) -> Loader {
        let order = (0..split.len()).collect();
        Loader::start(
            split,
            order,
            batch_size,
            0,
            BatchPlan {
                augmentation: None,
                ..plan
            },
        )
    }
}

impl Iterator for Loader {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        self.rx.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Unblock the producer (its send fails once the receiver is gone), then wait for it.
        let (_, dead) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, dead));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn epoch_orders_are_permutations_keyed_by_seed_and_epoch() {
        let a = epoch_order(1, 1, 100);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(1, 1, 100));
        assert_ne!(a, epoch_order(1, 2, 100));
        assert_ne!(a, epoch_order(2, 1, 100));
    }

    #[test]
    fn the_loader_yields_every_record_once_from_any_start() {
        let n = 10i64;
        let pixels = Tensor::arange(n, (Kind::Uint8, Device::Cpu)).view([n, 1, 1, 1]);
        let split = Split {
            labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)),
            pixels,
        };
        let plan = BatchPlan {
            normalization: Normalization {
                mean: vec![0.0],
                std: vec![1.0 / 255.0],
            },
            augmentation: None,
            seed: 0,
            epoch: 1,
            device: Device::Cpu,
        };
        let order = epoch_order(0, 1, n);
        let batches: Vec<Batch> = Loader::start(&split, order.clone(), 4, 1, plan).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].index, 1);
        let labels: Vec<i64> = batches
            .iter()
            .flat_map(|b| Vec::<i64>::try_from(&b.labels).unwrap())
            .collect();
        assert_eq!(labels, order[4..]);
        // (x / 255 - 0) / (1 / 255) = x: the pixels follow their labels.
        let images: Vec<f32> = batches
            .iter()
            .flat_map(|b| Vec::<f32>::try_from(&b.images.flatten(0, -1)).unwrap())
            .collect();
        let expected: Vec<f32> = order[4..].iter().map(|&i| i as f32).collect();
        for (a, b) in images.iter().zip(&expected) {
            assert!((a - b).abs() < 1e-3);
        }
    }
}
