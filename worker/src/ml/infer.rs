//! Trained models outside training: `export`, `predict`, and the forward passes of `evaluate`.
//!
//! A model is either a training output directory (`model.json` + `model.safetensors`) or an
//! exported model file. The export is one safetensors file: the weights, plus the
//! [`ModelCard`] (architecture, classes, input size, channels and normalization) as JSON in the
//! header's metadata under `toucan.model`. Serving reads the preprocessing from the same file
//! as the weights, so it cannot drift from what training did. The training directory's
//! reference embeddings (`embeddings.safetensors`, see
//! [`toucan_core::monitoring::embedding`]) go into the exported file as one more tensor,
//! which loading the weights leaves alone.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use tch::nn;
use tch::{Device, Kind, Tensor};
use toucan_core::monitoring::embedding::{REFERENCE_FILE, REFERENCE_TENSOR};

use super::MlError;
use super::data::{self, BatchPlan, Loader};
use super::model::{self, Network};
use super::train::{CARD_FILE, CARD_FORMAT, ModelCard};
use crate::dataset::{Dataset, ImageShape};

/// The metadata key of the model card in an exported file.
pub const CARD_KEY: &str = "toucan.model";

/// A model ready for inference (eval mode, no gradients).
pub struct LoadedModel {
    pub card: ModelCard,
    pub net: Network,
    pub vs: nn::VarStore,
    pub device: Device,
    /// The network's features to a recorded embedding (`[features, DIMENSIONS]`).
    projection: Tensor,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("card", &self.card)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn bad(path: &Path, message: impl std::fmt::Display) -> MlError {
    MlError::InvalidArgument(format!("{}: {message}", path.display()))
}

/// Reads the card and the weights' path of a training directory or an exported file.
fn locate(path: &Path) -> Result<(ModelCard, PathBuf), MlError> {
    if path.is_dir() {
        let card_path = path.join(CARD_FILE);
        let bytes = std::fs::read(&card_path).map_err(|e| {
            bad(
                &card_path,
                format!("{e} (is this a `train --out` directory?)"),
            )
        })?;
        let card: ModelCard = serde_json::from_slice(&bytes).map_err(|e| bad(&card_path, e))?;
        let weights = path.join(&card.weights);
        return Ok((card, weights));
    }
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a safetensors file: {e:?}")))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(CARD_KEY))
        .ok_or_else(|| {
            bad(
                path,
                format!("no {CARD_KEY} metadata: not a model written by `toucan-worker export`"),
            )
        })?;
    let card: ModelCard = serde_json::from_str(json).map_err(|e| bad(path, e))?;
    Ok((card, path.to_path_buf()))
}

impl LoadedModel {
    pub fn open(path: &Path, device: Device) -> Result<LoadedModel, MlError> {
        let (card, weights) = locate(path)?;
        if card.format != CARD_FORMAT {
            return Err(bad(
                path,
                format!("format {:?}, expected {CARD_FORMAT:?}", card.format),
            ));
        }
        let mut vs = nn::VarStore::new(device);
        let net = model::build(
            &vs.root(),
            &card.model,
            card.image,
            card.classes.len() as i64,
            false,
        )?;
        load_weights(&vs, &weights)?;
        vs.freeze();
        let projection = feature_projection(&*net, card.image, device);
        Ok(LoadedModel {
            card,
            net,
            vs,
            device,
            projection,
        })
    }

    /// Class probabilities (f64, N x classes) and embeddings (f32, N x
    /// [`toucan_core::monitoring::embedding::DIMENSIONS`]) of preprocessed images, from one
    /// forward pass.
    pub fn probabilities_and_embeddings(&self, images: &Tensor) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let features = self.net.features_t(&images.to_device(self.device), false);
        let logits = self.net.head_t(&features, false);
        (
            model::probabilities(&logits),
            features.to_kind(Kind::Float).matmul(&self.projection),
        )
    }

    /// Class probabilities (f64, N x classes) of preprocessed images.
    pub fn probabilities(&self, images: &Tensor) -> Tensor {
        let _guard = tch::no_grad_guard();
        model::probabilities(&self.net.forward_t(&images.to_device(self.device), false))
    }

    /// u8 HWC pixels already at the model's size → normalized NCHW float.
    pub fn preprocess(&self, pixels_nhwc: &Tensor) -> Tensor {
        self.card
            .normalization
            .apply(&data::to_unit_nchw(pixels_nhwc))
    }

    /// Decodes an image file and makes it what the model was trained on: the same channels
    /// (grayscale or RGB), the same size (resized with a triangle filter), u8 HWC.
    pub fn load_image(&self, path: &Path) -> Result<Tensor, MlError> {
        let img = image::open(path).map_err(|e| bad(path, format!("cannot decode: {e}")))?;
        let shape = self.card.image;
        let bytes = conform_image(&img, shape).map_err(|e| bad(path, e))?;
        Ok(Tensor::from_slice(&bytes).view([
            i64::from(shape.height),
            i64::from(shape.width),
            i64::from(shape.channels),
        ]))
    }

    /// A dataset's images must have the model's input shape (ingest with `--resize` and
    /// `--channels` to match).
    pub fn check_dataset(&self, dataset: &Dataset) -> Result<(), MlError> {
        if dataset.index.image != self.card.image {
            return Err(bad(
                &dataset.dir,
                format!(
                    "images are {:?}, the model takes {:?}",
                    dataset.index.image, self.card.image
                ),
            ));
        }
        Ok(())
    }

    /// Probabilities over a dataset split, in record order, with the true labels.
    pub fn split_probabilities(
        &self,
        dataset: &Dataset,
        split: &str,
        batch_size: i64,
    ) -> Result<(Tensor, Tensor), MlError> {
        self.check_dataset(dataset)?;
        let data = data::load_split(dataset, split)?;
        let plan = BatchPlan {
            normalization: self.card.normalization.clone(),
            augmentation: None,
            seed: 0,
            epoch: 0,
            device: self.device,
        };
        let mut probs = Vec::new();
        let mut labels = Vec::new();
        for batch in Loader::sequential(&data, batch_size, plan) {
            probs.push(self.probabilities(&batch.images).to_device(Device::Cpu));
            labels.push(batch.labels.to_device(Device::Cpu));
        }
        if probs.is_empty() {
            return Err(bad(&dataset.dir, format!("the {split} split is empty")));
        }
        Ok((Tensor::cat(&probs, 0), Tensor::cat(&labels, 0)))
    }
}

/// A decoded image as a model of input `shape` takes it: converted to its channels (1 =
/// grayscale, Rec. 709 luma; 3 = RGB), resized to its height and width with a triangle filter
/// when the size differs, as u8 HWC bytes. `predict` on files and `serve` on request bodies
/// both go through here, so the two cannot prepare an image differently.
pub fn conform_image(img: &image::DynamicImage, shape: ImageShape) -> Result<Vec<u8>, String> {
    let (h, w) = (shape.height, shape.width);
    let resized;
    let img = if img.width() != w || img.height() != h {
        resized = img.resize_exact(w, h, image::imageops::FilterType::Triangle);
        &resized
    } else {
        img
    };
    match shape.channels {
        1 => Ok(img.to_luma8().into_raw()),
        3 => Ok(img.to_rgb8().into_raw()),
        c => Err(format!("the model expects {c} channels")),
    }
}

/// The projection of `net`'s features, whose width one forward pass of a blank image tells.
pub fn feature_projection(
    net: &dyn model::Classifier,
    image: ImageShape,
    device: Device,
) -> Tensor {
    let _guard = tch::no_grad_guard();
    let blank = Tensor::zeros(
        [
            1,
            i64::from(image.channels),
            i64::from(image.height),
            i64::from(image.width),
        ],
        (Kind::Float, device),
    );
    let width = net
        .features_t(&blank, false)
        .size()
        .last()
        .copied()
        .unwrap_or(1);
    model::embedding_projection(width, device)
}

/// Fills every variable of `vs` from a safetensors file, whatever its name (`VarStore::load`
/// picks the format by file extension, and an exported model may have none).
fn load_weights(vs: &nn::VarStore, path: &Path) -> Result<(), MlError> {
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(MlError::torch(format!("loading {}", path.display())))?
        .into_iter()
        .collect();
    let _guard = tch::no_grad_guard();
    for (name, mut var) in vs.variables() {
        let src = tensors
            .get(&name)
            .ok_or_else(|| bad(path, format!("no weights for {name}")))?;
        var.f_copy_(src).map_err(MlError::torch(format!(
            "loading {name} from {}",
            path.display()
        )))?;
    }
    Ok(())
}

/// `toucan-worker export`: one file with the weights and the card, written atomically.
pub fn export(model_dir: &Path, out: &Path) -> Result<(), MlError> {
    let (card, weights) = locate(model_dir)?;
    let mut tensors = Tensor::read_safetensors(&weights)
        .map_err(MlError::torch(format!("loading {}", weights.display())))?;
    let embeddings = model_dir.join(REFERENCE_FILE);
    if model_dir.is_dir() && embeddings.exists() {
        let reference = Tensor::read_safetensors(&embeddings)
            .map_err(MlError::torch(format!("loading {}", embeddings.display())))?;
        tensors.extend(
            reference
                .into_iter()
                .filter(|(name, _)| name == REFERENCE_TENSOR),
        );
    }
    let mut owned: Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for (name, t) in tensors {
        let t = t.to_device(Device::Cpu).contiguous();
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        let (dtype, bytes) = match t.kind() {
            Kind::Float => (
                safetensors::Dtype::F32,
                Vec::<f32>::try_from(t.flatten(0, -1))
                    .map_err(MlError::torch(format!("reading {name}")))?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            Kind::Int64 => (
                safetensors::Dtype::I64,
                Vec::<i64>::try_from(t.flatten(0, -1))
                    .map_err(MlError::torch(format!("reading {name}")))?
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            other => {
                return Err(bad(
                    &weights,
                    format!("{name} has dtype {other:?}; export handles f32 and i64"),
                ));
            }
        };
        owned.push((name, shape, dtype, bytes));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, shape, dtype, bytes) in &owned {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| bad(&weights, format!("{name}: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let card_json = serde_json::to_string(&card).map_err(|e| bad(model_dir, e))?;
    let metadata = HashMap::from([(CARD_KEY.to_string(), card_json)]);
    let bytes = safetensors::tensor::serialize(views, &Some(metadata))
        .map_err(|e| bad(out, format!("{e:?}")))?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|source| MlError::Write {
        path: dir.clone(),
        source,
    })?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|source| MlError::Write {
        path: dir.clone(),
        source,
    })?;
    std::io::Write::write_all(&mut tmp, &bytes).map_err(|source| MlError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    tmp.persist(out).map_err(|e| MlError::Write {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// One prediction line.
#[derive(Debug, Serialize)]
pub struct Prediction {
    /// The image file, or the record's index in the split.
    pub input: String,
    pub class: String,
    pub label: i64,
    pub confidence: f64,
    /// The top classes with their probabilities, best first.
    pub top: Vec<(String, f64)>,
    /// The record's true label (dataset input only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truth: Option<String>,
}

pub fn predictions(
    card: &ModelCard,
    inputs: &[String],
    probs: &Tensor,
    truth: Option<&[i64]>,
    top_k: i64,
) -> Result<Vec<Prediction>, MlError> {
    let k = top_k.clamp(1, card.classes.len() as i64);
    let (values, indices) = probs.topk(k, -1, true, true);
    let values = Vec::<f64>::try_from(values.flatten(0, -1))
        .map_err(MlError::torch("reading probabilities"))?;
    let indices =
        Vec::<i64>::try_from(indices.flatten(0, -1)).map_err(MlError::torch("reading classes"))?;
    let name = |i: i64| card.classes.get(i as usize).cloned().unwrap_or_default();
    Ok(inputs
        .iter()
        .enumerate()
        .map(|(row, input)| {
            let at = row * k as usize;
            let top: Vec<(String, f64)> = (0..k as usize)
                .map(|j| (name(indices[at + j]), values[at + j]))
                .collect();
            Prediction {
                input: input.clone(),
                class: name(indices[at]),
                label: indices[at],
                confidence: values[at],
                top,
                truth: truth.and_then(|t| t.get(row)).map(|&l| name(l)),
            }
        })
        .collect())
}

/// Latency percentiles of in-process forward passes.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchmarkReport {
    pub iterations: usize,
    pub batch_size: i64,
    pub single_ms: Latency,
    pub batch_ms: Latency,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let i = ((ms.len() as f64 - 1.0) * q).round() as usize;
        ms.get(i).copied().unwrap_or(f64::NAN)
    };
    Latency {
        p50: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        mean: ms.iter().sum::<f64>() / ms.len().max(1) as f64,
    }
}

/// Times `iterations` forward passes of one image and of one batch (after 10 of each to warm
/// up), on preprocessed inputs already on the device: the model's own latency, without
/// decoding or process start.
pub fn benchmark(model: &LoadedModel, images: &Tensor, iterations: usize) -> BenchmarkReport {
    let single = images.narrow(0, 0, 1).to_device(model.device);
    let batch = images.to_device(model.device);
    let time = |x: &Tensor| -> Vec<f64> {
        for _ in 0..10 {
            let _ = model.probabilities(x);
        }
        (0..iterations)
            .map(|_| {
                let t = Instant::now();
                let p = model.probabilities(x);
                // Wait for the device (a no-op on the CPU).
                let _ = p.sum(Kind::Double).double_value(&[]);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };
    let single_ms = latency(time(&single));
    let batch_ms = latency(time(&batch));
    BenchmarkReport {
        iterations,
        batch_size: batch.size()[0],
        single_ms,
        batch_ms,
    }
}
