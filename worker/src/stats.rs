//! The summary statistics of one image ([`InputStats`]): what drift detection compares
//! between an endpoint's traffic and its training data. Pure functions of the pixels, shared
//! by both sides: the model server (`serve`, with the `torch` feature) measures the
//! image as the client sent it, before it is resized for the model, and a payload sample
//! carries the result; ingest ([`crate::ingest`]) measures the training records as ingested
//! for the dataset's drift reference ([`crate::dataset::reference`]).
//!
//! Pixels are in `[0, 1]`. Only colour channels count (an alpha channel is dropped): a grey
//! image has one channel, a colour image three. The grey level of a colour pixel is its Rec.
//! 709 luma, as the image crate converts colour to grey; the Laplacian is taken over the
//! interior pixels (an image narrower or shorter than 3 pixels has sharpness 0).

use image::DynamicImage;
use toucan_core::serving::InputStats;

/// Rec. 709 luma weights of red, green and blue.
const LUMA: [f64; 3] = [0.2126, 0.7152, 0.0722];

/// The statistics of a decoded image, as decoded.
pub fn image_stats(img: &DynamicImage) -> InputStats {
    let (width, height) = (img.width(), img.height());
    if img.color().has_color() {
        pixel_stats(img.to_rgb32f().as_raw(), width, height, 3)
    } else {
        pixel_stats(img.to_luma32f().as_raw(), width, height, 1)
    }
}

/// The statistics of HWC pixels in `[0, 1]` with `channels` (1 or 3) channels.
pub fn pixel_stats(pixels: &[f32], width: u32, height: u32, channels: u32) -> InputStats {
    let c = channels.max(1) as usize;
    let n = pixels.len() / c;
    let mut sums = vec![0.0f64; c];
    let mut grey = Vec::with_capacity(n);
    for pixel in pixels.chunks_exact(c) {
        for (sum, &v) in sums.iter_mut().zip(pixel) {
            *sum += f64::from(v);
        }
        grey.push(if c == 3 {
            LUMA.iter().zip(pixel).map(|(w, &v)| w * f64::from(v)).sum()
        } else {
            f64::from(pixel[0])
        });
    }
    let count = n.max(1) as f64;
    let channel_means: Vec<f64> = sums.iter().map(|s| s / count).collect();
    let brightness = channel_means.iter().sum::<f64>() / c as f64;
    let (_, grey_variance) = mean_variance(grey.iter().copied());
    InputStats {
        width,
        height,
        channels: c as u32,
        brightness,
        contrast: grey_variance.sqrt(),
        channel_means,
        sharpness: laplacian_variance(&grey, width as usize, height as usize),
    }
}

/// The variance of the 4-neighbour Laplacian of a grey image over its interior pixels.
fn laplacian_variance(grey: &[f64], width: usize, height: usize) -> f64 {
    if width < 3 || height < 3 || grey.len() < width * height {
        return 0.0;
    }
    let at = |x: usize, y: usize| grey[y * width + x];
    let laplacian = (1..height - 1).flat_map(|y| {
        (1..width - 1).map(move |x| {
            at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y)
        })
    });
    mean_variance(laplacian).1
}

/// Mean and population variance, in one pass (Welford).
fn mean_variance(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
    for v in values {
        n += 1.0;
        let delta = v - mean;
        mean += delta / n;
        m2 += delta * (v - mean);
    }
    if n == 0.0 { (0.0, 0.0) } else { (mean, m2 / n) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_flat_grey_image_has_its_level_for_brightness_and_nothing_else() {
        let s = pixel_stats(&[0.5; 16], 4, 4, 1);
        assert_eq!((s.width, s.height, s.channels), (4, 4, 1));
        assert!(close(s.brightness, 0.5));
        assert!(close(s.contrast, 0.0));
        assert!(close(s.sharpness, 0.0));
        assert_eq!(s.channel_means.len(), 1);
    }

    #[test]
    fn half_black_half_white_has_contrast_one_half() {
        let pixels: Vec<f32> = (0..16).map(|i| if i < 8 { 0.0 } else { 1.0 }).collect();
        let s = pixel_stats(&pixels, 4, 4, 1);
        assert!(close(s.brightness, 0.5));
        assert!(close(s.contrast, 0.5));
    }

    #[test]
    fn channel_means_are_per_channel_and_grey_is_luma() {
        // Pure red everywhere.
        let pixels: Vec<f32> = [1.0, 0.0, 0.0].repeat(9);
        let s = pixel_stats(&pixels, 3, 3, 3);
        assert_eq!(s.channel_means, vec![1.0, 0.0, 0.0]);
        assert!(close(s.brightness, 1.0 / 3.0));
        assert!(close(s.contrast, 0.0));
    }

    #[test]
    fn a_single_bright_dot_is_sharp() {
        // 3x3 with a white centre: one interior pixel, Laplacian -4, variance 0; a 4x4 with a
        // dot at (1,1) has interior Laplacians -4, 1, 1, 0.
        let mut pixels = vec![0.0f32; 16];
        pixels[5] = 1.0;
        let s = pixel_stats(&pixels, 4, 4, 1);
        let values = [-4.0f64, 1.0, 1.0, 0.0];
        let mean = values.iter().sum::<f64>() / 4.0;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(close(s.sharpness, variance), "{}", s.sharpness);
    }

    #[test]
    fn a_decoded_image_is_measured_as_decoded() {
        let img = image::RgbaImage::from_pixel(5, 7, image::Rgba([255, 255, 255, 0]));
        let s = image_stats(&DynamicImage::ImageRgba8(img));
        assert_eq!((s.width, s.height, s.channels), (5, 7, 3));
        assert!(close(s.brightness, 1.0));
    }

    proptest! {
        #[test]
        fn statistics_stay_in_their_ranges(
            pixels in prop::collection::vec(0.0f32..=1.0, 27),
            colour in any::<bool>(),
        ) {
            let (c, w, h) = if colour { (3, 3, 3) } else { (1, 9, 3) };
            let s = pixel_stats(&pixels, w, h, c);
            prop_assert!((0.0..=1.0).contains(&s.brightness));
            prop_assert!((0.0..=0.5 + 1e-9).contains(&s.contrast));
            prop_assert!(s.sharpness >= 0.0 && s.sharpness.is_finite());
            prop_assert!(s.channel_means.iter().all(|m| (0.0..=1.0).contains(m)));
        }
    }
}
