//! `--resize` and `--channels`: bringing every image to one shape.
//!
//! Channel conversion is ours, so that it is the same for every source and documented here:
//! grayscale → RGB repeats the value; RGB → grayscale is the Rec. 709 luma
//! `(2126 R + 7152 G + 722 B) / 10000`, rounded to the nearest integer (the weights the `image`
//! crate uses too). Resizing is the `image` crate's `Triangle` filter (bilinear), applied per
//! channel after the channel conversion; an image that already has the size is left as it is.
//! Resizing is deterministic for a given build; a new `image` release may round differently.

use image::imageops::{self, FilterType};
use image::{GrayImage, RgbImage};

use crate::dataset::ImageShape;

/// The filter `--resize` uses.
pub const RESIZE_FILTER: FilterType = FilterType::Triangle;

/// A height and width, as `--resize HxW` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub height: u32,
    pub width: u32,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.height, self.width)
    }
}

/// What to do to every image; `None` keeps what the source has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    pub resize: Option<Size>,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: Option<u32>,
}

/// Parses `--resize HxW`, e.g. `32x32` (height first).
pub fn parse_size(s: &str) -> Result<Size, String> {
    match parse_dims(s).as_deref() {
        Some(&[height, width]) => Ok(Size { height, width }),
        _ => Err(format!(
            "invalid size {s:?}: expected HEIGHTxWIDTH with positive integers, e.g. 32x32"
        )),
    }
}

/// Parses `--image-shape HxWxC`, e.g. `28x28x1`; C is 1 (grayscale) or 3 (RGB).
pub fn parse_shape(s: &str) -> Result<ImageShape, String> {
    match parse_dims(s).as_deref() {
        Some(&[height, width, channels @ (1 | 3)]) => Ok(ImageShape {
            height,
            width,
            channels,
        }),
        _ => Err(format!(
            "invalid image shape {s:?}: expected HEIGHTxWIDTHxCHANNELS with positive integers and 1 or 3 channels, e.g. 28x28x1"
        )),
    }
}

/// Parses `--channels`: 1 or 3.
pub fn parse_channels(s: &str) -> Result<u32, String> {
    match s.trim() {
        "1" => Ok(1),
        "3" => Ok(3),
        _ => Err(format!(
            "invalid channel count {s:?}: 1 (grayscale) or 3 (RGB)"
        )),
    }
}

fn parse_dims(s: &str) -> Option<Vec<u32>> {
    s.split(['x', 'X'])
        .map(|d| d.trim().parse::<u32>().ok().filter(|&d| d > 0))
        .collect()
}

/// Converts HWC pixels with `from` channels to `to` channels (each 1 or 3).
pub fn convert_channels(pixels: Vec<u8>, from: u32, to: u32) -> Vec<u8> {
    match (from, to) {
        (1, 3) => pixels.iter().flat_map(|&v| [v, v, v]).collect(),
        (3, 1) => pixels
            .chunks_exact(3)
            .map(|p| luma(p[0], p[1], p[2]))
            .collect(),
        _ => pixels,
    }
}

fn luma(r: u8, g: u8, b: u8) -> u8 {
    let weighted = 2126 * u32::from(r) + 7152 * u32::from(g) + 722 * u32::from(b);
    ((weighted + 5000) / 10000) as u8
}

/// Resizes one image of `shape` (1 or 3 channels) to `to`.
pub fn resize(pixels: Vec<u8>, shape: ImageShape, to: Size) -> Result<Vec<u8>, String> {
    if (shape.height, shape.width) == (to.height, to.width) {
        return Ok(pixels);
    }
    let mismatch = || format!("{} bytes are not a {shape:?} image", shape.pixels());
    match shape.channels {
        1 => {
            let image =
                GrayImage::from_raw(shape.width, shape.height, pixels).ok_or_else(mismatch)?;
            Ok(imageops::resize(&image, to.width, to.height, RESIZE_FILTER).into_raw())
        }
        3 => {
            let image =
                RgbImage::from_raw(shape.width, shape.height, pixels).ok_or_else(mismatch)?;
            Ok(imageops::resize(&image, to.width, to.height, RESIZE_FILTER).into_raw())
        }
        c => Err(format!(
            "cannot resize images with {c} channels (only 1 or 3)"
        )),
    }
}

/// Applies `opts` to one image: channels first, then size. Returns the new pixels and shape.
pub fn apply(
    pixels: Vec<u8>,
    shape: ImageShape,
    opts: ImageOptions,
) -> Result<(Vec<u8>, ImageShape), String> {
    let channels = opts.channels.unwrap_or(shape.channels);
    let pixels = convert_channels(pixels, shape.channels, channels);
    let shape = ImageShape { channels, ..shape };
    match opts.resize {
        None => Ok((pixels, shape)),
        Some(to) => Ok((
            resize(pixels, shape, to)?,
            ImageShape {
                height: to.height,
                width: to.width,
                channels,
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_shapes_and_channels() {
        assert_eq!(
            parse_size("32x24"),
            Ok(Size {
                height: 32,
                width: 24
            })
        );
        assert_eq!(
            parse_shape("28x28x1"),
            Ok(ImageShape {
                height: 28,
                width: 28,
                channels: 1
            })
        );
        assert_eq!(parse_channels("3"), Ok(3));
        for bad in ["32", "0x3", "3x", "axb", "1x2x3"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        for bad in ["28x28", "28x28x2", "28x28x0", "28x28x1x1"] {
            assert!(parse_shape(bad).is_err(), "{bad}");
        }
        for bad in ["2", "0", "rgb"] {
            assert!(parse_channels(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn converts_channels_both_ways() {
        assert_eq!(convert_channels(vec![7, 9], 1, 3), vec![7, 7, 7, 9, 9, 9]);
        // Pure red, green, blue and a gray that must survive the round trip.
        assert_eq!(
            convert_channels(vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 77, 77, 77], 3, 1),
            vec![54, 182, 18, 77]
        );
        assert_eq!(convert_channels(vec![1, 2, 3], 3, 3), vec![1, 2, 3]);
    }

    #[test]
    fn resizes_and_keeps_a_flat_image_flat() {
        let shape = ImageShape {
            height: 4,
            width: 6,
            channels: 3,
        };
        let flat: Vec<u8> = [10, 20, 30].repeat(24);
        let to = Size {
            height: 2,
            width: 3,
        };
        let (pixels, new) = apply(
            flat,
            shape,
            ImageOptions {
                resize: Some(to),
                channels: None,
            },
        )
        .unwrap();
        assert_eq!((new.height, new.width, new.channels), (2, 3, 3));
        assert_eq!(pixels, [10, 20, 30].repeat(6));
        assert!(resize(vec![0; 5], shape, to).is_err());
    }
}
