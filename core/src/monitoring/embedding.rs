//! The model's embedding of an input, as monitoring compares it.
//!
//! A model server records, with each sampled request, the activations of the model's
//! penultimate layer (what its classifier head reads) projected to [`DIMENSIONS`] numbers by
//! [`projection`]: a fixed Gaussian random projection, which keeps distances between
//! embeddings to within a small factor (Johnson–Lindenstrauss) whatever the layer's width (32
//! for a small CNN's hidden layer, 1,280 for EfficientNet-Lite0), so a sample stays small and
//! the maximum mean discrepancy test ([`super::drift::mmd_test`]) stays cheap.
//!
//! The reference is the embedding of held-out training records by the same model: training
//! writes them beside the weights ([`REFERENCE_FILE`]) and `export` into the model file, both
//! as the safetensors tensor [`REFERENCE_TENSOR`], which [`reference_from_safetensors`] reads.
//! Each version of an endpoint is compared with its own model's reference, since two models
//! embed the same image differently.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use super::drift::Embeddings;

/// The length of a recorded embedding.
pub const DIMENSIONS: usize = 32;
/// The most reference embeddings a model carries.
pub const MAX_REFERENCE_ROWS: usize = 1_000;
/// The safetensors tensor (`[rows, DIMENSIONS]`, f32) of a model's reference embeddings.
pub const REFERENCE_TENSOR: &str = "toucan.reference_embeddings";
/// The file beside a training directory's weights that holds [`REFERENCE_TENSOR`].
pub const REFERENCE_FILE: &str = "embeddings.safetensors";
/// The projection's seed: every server and every training run draw the same matrix.
const SEED: u64 = 0x746f_7563_616e;

/// The `features × DIMENSIONS` projection matrix, row-major: entries drawn independently from
/// a normal distribution of variance `1 / DIMENSIONS` (Box–Muller on a ChaCha8 stream), so a
/// projected vector's squared length equals the original's in expectation. The same
/// `features` always give the same matrix.
pub fn projection(features: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let uniform = |rng: &mut ChaCha8Rng| {
        // 53 random bits in (0, 1]: never 0, so the logarithm is finite.
        ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    };
    let scale = 1.0 / (DIMENSIONS as f64).sqrt();
    let count = features * DIMENSIONS;
    let mut out = Vec::with_capacity(count + 1);
    while out.len() < count {
        let (u, v) = (uniform(&mut rng), uniform(&mut rng));
        let radius = (-2.0 * u.ln()).sqrt();
        let angle = std::f64::consts::TAU * v;
        out.push((radius * angle.cos() * scale) as f32);
        out.push((radius * angle.sin() * scale) as f32);
    }
    out.truncate(count);
    out
}

/// The reference embeddings of a model file or of a training directory's
/// [`REFERENCE_FILE`]: `None` when the file has no [`REFERENCE_TENSOR`] (a model written
/// before models carried one), an error when the file is not safetensors or the tensor is
/// not `[rows, DIMENSIONS]` f32.
pub fn reference_from_safetensors(bytes: &[u8]) -> Result<Option<Embeddings>, String> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file: {e:?}"))?;
    let tensor = match file.tensor(REFERENCE_TENSOR) {
        Ok(t) => t,
        Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
        Err(e) => return Err(format!("{REFERENCE_TENSOR}: {e:?}")),
    };
    if tensor.dtype() != safetensors::Dtype::F32
        || tensor.shape().len() != 2
        || tensor.shape()[1] != DIMENSIONS
    {
        return Err(format!(
            "{REFERENCE_TENSOR} is {:?} {:?}, not [rows, {DIMENSIONS}] F32",
            tensor.dtype(),
            tensor.shape()
        ));
    }
    let values: Vec<f64> = tensor
        .data()
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .collect();
    Embeddings::new(DIMENSIONS, values)
        .map(Some)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn the_projection_is_fixed_and_keeps_lengths_on_average() {
        let p = projection(100);
        assert_eq!(p.len(), 100 * DIMENSIONS);
        assert_eq!(p, projection(100));
        // The first rows of a wider matrix are the narrower one: one stream, row-major.
        assert_eq!(projection(3)[..], projection(5)[..3 * DIMENSIONS]);
        // Each column has squared norm close to features / DIMENSIONS... summed over all,
        // the mean squared entry is 1 / DIMENSIONS.
        let mean_square = p.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / p.len() as f64;
        assert!(
            (mean_square * DIMENSIONS as f64 - 1.0).abs() < 0.05,
            "{mean_square}"
        );
        let mean = p.iter().map(|v| f64::from(*v)).sum::<f64>() / p.len() as f64;
        assert!(mean.abs() < 0.01, "{mean}");
    }

    fn file(name: &str, shape: Vec<usize>, values: &[f32]) -> Vec<u8> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes).unwrap();
        safetensors::tensor::serialize([(name, view)], &None).unwrap()
    }

    #[test]
    fn reference_embeddings_read_back_and_a_file_without_them_has_none() {
        let values: Vec<f32> = (0..2 * DIMENSIONS).map(|i| i as f32 / 8.0).collect();
        let read =
            reference_from_safetensors(&file(REFERENCE_TENSOR, vec![2, DIMENSIONS], &values))
                .unwrap()
                .unwrap();
        assert_eq!((read.rows(), read.dimension()), (2, DIMENSIONS));
        assert_eq!(
            reference_from_safetensors(&file("fc.weight", vec![2, DIMENSIONS], &values)).unwrap(),
            None
        );
        let wrong =
            reference_from_safetensors(&file(REFERENCE_TENSOR, vec![4, 16], &values)).unwrap_err();
        assert!(wrong.contains("not [rows, 32]"), "{wrong}");
        assert!(reference_from_safetensors(b"not a model").is_err());
    }
}
