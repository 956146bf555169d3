//! Batched augmentation: every image of a training batch gets its own random flip, rotation,
//! zoom and shift (one affine resampling, bilinear, zeros outside the image) and its own
//! brightness and contrast change, all as a few libtorch operations on the whole batch.
//!
//! The random draws come from a ChaCha8 stream keyed by (seed, epoch, batch), not from
//! libtorch's global generator: the same batch gets the same transformations whichever thread
//! prepares it and whether or not the run was resumed in between.

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use tch::{Kind, Tensor};

use super::config::Augmentation;

/// A generator for one (seed, epoch, batch) triple.
pub fn rng_for(seed: u64, epoch: u32, batch: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream((u64::from(epoch) << 40) ^ batch);
    rng
}

/// A uniform draw in [lo, hi).
fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    lo + (hi - lo) * unit
}

/// Applies `aug` to `images` (NCHW float in [0, 1]) and returns the new batch.
pub fn apply(aug: &Augmentation, images: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    let size = images.size();
    let n = size[0];
    let mut out = images.shallow_clone();
    let geometric = aug.flip || aug.rotation > 0.0 || aug.zoom > 0.0 || aug.translate > 0.0;
    if geometric {
        // theta maps output coordinates to input coordinates (both in [-1, 1]).
        let mut theta = Vec::with_capacity(n as usize * 6);
        for _ in 0..n {
            let flip = if aug.flip && rng.next_u32() & 1 == 1 {
                -1.0
            } else {
                1.0
            };
            let angle = uniform(rng, -aug.rotation, aug.rotation).to_radians();
            let scale = uniform(rng, 1.0 - aug.zoom, 1.0 + aug.zoom);
            let tx = uniform(rng, -aug.translate, aug.translate) * 2.0;
            let ty = uniform(rng, -aug.translate, aug.translate) * 2.0;
            let (sin, cos) = angle.sin_cos();
            theta.extend_from_slice(&[
                (cos / scale * flip) as f32,
                (-sin / scale) as f32,
                tx as f32,
                (sin / scale * flip) as f32,
                (cos / scale) as f32,
                ty as f32,
            ]);
        }
        let theta = Tensor::from_slice(&theta)
            .view([n, 2, 3])
            .to_device(images.device());
        let grid = Tensor::affine_grid_generator(&theta, size.as_slice(), false);
        // Bilinear interpolation, zeros padding.
        out = out.grid_sampler(&grid, 0, 0, false);
    }
    if aug.brightness > 0.0 || aug.contrast > 0.0 {
        let mut shift = Vec::with_capacity(n as usize);
        let mut factor = Vec::with_capacity(n as usize);
        for _ in 0..n {
            shift.push(uniform(rng, -aug.brightness, aug.brightness) as f32);
            factor.push(uniform(rng, 1.0 - aug.contrast, 1.0 + aug.contrast) as f32);
        }
        let device = images.device();
        let shift = Tensor::from_slice(&shift)
            .view([n, 1, 1, 1])
            .to_device(device);
        let factor = Tensor::from_slice(&factor)
            .view([n, 1, 1, 1])
            .to_device(device);
        let mean = out.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
        out = ((&out - &mean) * factor + mean + shift).clamp(0.0, 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use tch::Device;

    fn batch() -> Tensor {
        Tensor::rand([4, 1, 8, 8], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn nothing_enabled_is_the_identity() {
        let x = batch();
        let y = apply(&Augmentation::default(), &x, &mut rng_for(1, 1, 0));
        assert!(y.equal(&x));
    }

    #[test]
    fn a_flip_only_batch_is_mirrored_or_unchanged_image_by_image() {
        let x = batch();
        let aug = Augmentation {
            flip: true,
            ..Augmentation::default()
        };
        let y = apply(&aug, &x, &mut rng_for(3, 1, 0));
        let mirrored = x.flip([3]);
        let mut flipped = 0;
        for i in 0..4 {
            let same = y.get(i).allclose(&x.get(i), 1e-5, 1e-5, false);
            let mirror = y.get(i).allclose(&mirrored.get(i), 1e-5, 1e-5, false);
            assert!(same || mirror, "image {i} is neither");
            flipped += i32::from(mirror && !same);
        }
        // Four fair coins: the seed is fixed, so this is a property of the draw, not luck.
        assert!(flipped > 0);
    }

    #[test]
    fn draws_depend_on_seed_epoch_and_batch_only() {
        let x = batch();
        let aug = Augmentation {
            rotation: 20.0,
            zoom: 0.2,
            translate: 0.1,
            brightness: 0.2,
            contrast: 0.2,
            flip: true,
        };
        let a = apply(&aug, &x, &mut rng_for(5, 2, 7));
        let b = apply(&aug, &x, &mut rng_for(5, 2, 7));
        let c = apply(&aug, &x, &mut rng_for(5, 2, 8));
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert_eq!(a.size(), x.size());
        let (lo, hi) = (
            f64::try_from(a.min()).unwrap(),
            f64::try_from(a.max()).unwrap(),
        );
        assert!((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi));
    }
}
