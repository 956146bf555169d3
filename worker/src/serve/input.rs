//! From what a client sent to what the model takes: one [`RawInstance`] per image, parsed by
//! each protocol, becomes an [`Instance`] here — HWC pixel values at the model's size and
//! channels — with the statistics of the image as sent when the request is sampled.
//!
//! Two kinds of instance:
//!
//! - Encoded: the bytes of a PNG or JPEG file. Decoded, then converted and resized exactly as
//!   `toucan-worker predict` does with a file ([`crate::ml::infer::conform_image`]).
//! - Pixels: numbers, the convention `predict` uses for pixels: raw pixel values in
//!   `[0, 255]` (fractions allowed), in HWC order, at the model's size. The shape is
//!   `[H, W, C]`, `[H, W]` when the model takes one channel, or flat `[H * W * C]`. The server
//!   scales them to `[0, 1]` and applies the model card's normalization, as for a decoded
//!   image. Their statistics are those of the values as sent (already the model's size).

use std::io::Cursor;

use image::{ImageReader, Limits};
use toucan_core::serving::InputStats;

use super::error::RequestError;
use super::stats;
use crate::dataset::ImageShape;
use crate::ml::infer::conform_image;

/// The largest image side the server decodes: more is a decompression bomb, not a photo.
const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one image may decode into.
const MAX_IMAGE_BYTES: u64 = 256 << 20;

/// One image as a protocol parsed it, not yet decoded or checked against the model.
#[derive(Debug, Clone, PartialEq)]
pub enum RawInstance {
    /// PNG or JPEG bytes.
    Encoded(Vec<u8>),
    /// Pixel values with the shape the client gave (without a batch dimension).
    Pixels { values: Vec<f32>, dims: Vec<usize> },
}

/// One image ready for the model: `H * W * C` pixel values in `[0, 255]`, HWC.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub pixels: Vec<f32>,
    /// Statistics of the image as sent (only when the request is sampled).
    pub stats: Option<InputStats>,
}

/// Decodes base64, standard or URL-safe, padded or not (clients differ).
pub fn base64_bytes(text: &str) -> Result<Vec<u8>, RequestError> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);
    STANDARD
        .decode(text)
        .or_else(|e| URL_SAFE.decode(text).map_err(|_| e))
        .map_err(|e| RequestError::bad_request(format!("invalid base64: {e}")))
}

/// Decodes and checks every instance of a request; `Err` names the first bad one.
pub fn prepare(
    raw: Vec<RawInstance>,
    shape: ImageShape,
    with_stats: bool,
) -> Result<Vec<Instance>, RequestError> {
    if raw.is_empty() {
        return Err(RequestError::bad_request("the request has no instances"));
    }
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            let prepared = match r {
                RawInstance::Encoded(bytes) => from_encoded(&bytes, shape, with_stats),
                RawInstance::Pixels { values, dims } => {
                    from_pixels(values, &dims, shape, with_stats)
                }
            };
            prepared.map_err(|e| e.context(format_args!("instance {i}")))
        })
        .collect()
}

/// Decodes a PNG or JPEG and conforms it to the model's input.
pub fn from_encoded(
    bytes: &[u8],
    shape: ImageShape,
    with_stats: bool,
) -> Result<Instance, RequestError> {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_IMAGE_BYTES);
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| RequestError::bad_request(format!("cannot read the image: {e}")))?;
    reader.limits(limits);
    let img = reader.decode().map_err(|e| {
        RequestError::bad_request(format!("cannot decode the image (PNG or JPEG): {e}"))
    })?;
    let stats = with_stats.then(|| stats::image_stats(&img));
    let pixels = conform_image(&img, shape).map_err(RequestError::internal)?;
    Ok(Instance {
        pixels: pixels.into_iter().map(f32::from).collect(),
        stats,
    })
}

/// Whether pixel values of shape `dims` (one image) fit the model's input: `[H, W, C]`,
/// `[H, W]` for one channel, or flat.
pub fn dims_fit(dims: &[usize], shape: ImageShape) -> bool {
    let (h, w, c) = (
        shape.height as usize,
        shape.width as usize,
        shape.channels as usize,
    );
    match dims {
        [a, b, d] => (*a, *b, *d) == (h, w, c),
        [a, b] => (*a, *b) == (h, w) && c == 1,
        [n] => *n == h * w * c,
        _ => false,
    }
}

/// Checks pixel values against the model's input shape and the `[0, 255]` range.
pub fn from_pixels(
    values: Vec<f32>,
    dims: &[usize],
    shape: ImageShape,
    with_stats: bool,
) -> Result<Instance, RequestError> {
    let (h, w, c) = (
        shape.height as usize,
        shape.width as usize,
        shape.channels as usize,
    );
    if !dims_fit(dims, shape) || values.len() != h * w * c {
        let alternatives = if c == 1 {
            format!("[{h}, {w}], [{h}, {w}, 1] or flat [{}]", h * w)
        } else {
            format!("[{h}, {w}, {c}] or flat [{}]", h * w * c)
        };
        return Err(RequestError::bad_request(format!(
            "pixel values of shape {dims:?}; the model takes {alternatives} (HWC, values in [0, 255])"
        )));
    }
    if let Some(bad) = values
        .iter()
        .find(|v| !(v.is_finite() && (0.0..=255.0).contains(*v)))
    {
        return Err(RequestError::bad_request(format!(
            "pixel value {bad} is outside [0, 255]"
        )));
    }
    let stats = with_stats.then(|| {
        let unit: Vec<f32> = values.iter().map(|v| v / 255.0).collect();
        stats::pixel_stats(&unit, shape.width, shape.height, shape.channels)
    });
    Ok(Instance {
        pixels: values,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: ImageShape = ImageShape {
        height: 4,
        width: 3,
        channels: 1,
    };

    fn png(width: u32, height: u32, value: u8) -> Vec<u8> {
        let img = image::GrayImage::from_pixel(width, height, image::Luma([value]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn an_image_is_resized_to_the_model_and_measured_before() {
        let inst = from_encoded(&png(30, 40, 200), SHAPE, true).unwrap();
        assert_eq!(inst.pixels, vec![200.0; 12]);
        let stats = inst.stats.unwrap();
        assert_eq!((stats.width, stats.height), (30, 40));
    }

    #[test]
    fn pixel_shapes_that_fit_and_that_do_not() {
        for dims in [vec![4, 3, 1], vec![4, 3], vec![12]] {
            assert!(from_pixels(vec![1.0; 12], &dims, SHAPE, false).is_ok());
        }
        let e = from_pixels(vec![1.0; 12], &[3, 4], SHAPE, false).unwrap_err();
        assert!(e.message.contains("[4, 3]"), "{e}");
        assert!(from_pixels(vec![1.0; 11], &[11], SHAPE, false).is_err());
        let e = from_pixels(vec![300.0; 12], &[12], SHAPE, false).unwrap_err();
        assert!(e.message.contains("300"), "{e}");
        assert!(from_pixels(vec![f32::NAN; 12], &[12], SHAPE, false).is_err());
    }

    #[test]
    fn base64_of_either_alphabet_with_or_without_padding() {
        assert_eq!(base64_bytes("+/8=").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(base64_bytes("-_8").unwrap(), vec![0xfb, 0xff]);
        assert!(base64_bytes("not base64!").is_err());
    }

    #[test]
    fn garbage_is_a_bad_request_that_names_the_instance() {
        let raw = vec![
            RawInstance::Encoded(png(3, 4, 0)),
            RawInstance::Encoded(b"not an image".to_vec()),
        ];
        let e = prepare(raw, SHAPE, false).unwrap_err();
        assert_eq!(e.http_status(), 400);
        assert!(e.message.starts_with("instance 1: "), "{e}");
        assert!(prepare(Vec::new(), SHAPE, false).is_err());
    }
}
