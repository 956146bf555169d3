//! Decoding the listed images into [`Records`]: one size, one channel count (see [`super`]).

use std::io::Cursor;
use std::path::Path;

use image::ColorType;

use super::{Listed, slash_path};
use crate::dataset::{DatasetError, ImageShape, SourceFile, sha256_hex};
use crate::ingest::Records;
use crate::ingest::convert::{self, ImageOptions};

/// Reads, hashes and decodes every image, then brings them to one channel count.
pub(super) fn decode_all(
    dir: &Path,
    listed: &[Listed],
    opts: ImageOptions,
    mut sources: Vec<SourceFile>,
) -> Result<Records, DatasetError> {
    let mut first: Option<(ImageShape, &Path)> = None;
    let mut images: Vec<(u32, Vec<u8>)> = Vec::with_capacity(listed.len());
    let mut labels = Vec::with_capacity(listed.len());
    for item in listed {
        let path = dir.join(&item.rel);
        let bytes = std::fs::read(&path).map_err(DatasetError::io(&path))?;
        sources.push(SourceFile {
            file: slash_path(&item.rel),
            sha256: sha256_hex(&bytes),
        });
        let (pixels, native) = decode(&path, &bytes)?;
        let (pixels, shape) = convert::apply(pixels, native, opts)
            .map_err(|m| DatasetError::invalid_file(&path, m))?;
        match first {
            None => first = Some((shape, &item.rel)),
            Some((s, first_rel)) if (s.height, s.width) != (shape.height, shape.width) => {
                return Err(DatasetError::invalid_file(
                    &path,
                    format!(
                        "the image is {}x{} (height x width) but {} is {}x{}; every image must have one size, or give --resize HxW",
                        shape.height,
                        shape.width,
                        slash_path(first_rel),
                        s.height,
                        s.width
                    ),
                ));
            }
            Some(_) => {}
        }
        images.push((shape.channels, pixels));
        labels.push(item.label);
    }
    let Some((shape, _)) = first else {
        return Err(DatasetError::InvalidSource {
            dir: dir.to_path_buf(),
            message: "no images".into(),
        });
    };
    let channels = opts
        .channels
        .unwrap_or(if images.iter().all(|(c, _)| *c == 1) {
            1
        } else {
            3
        });
    let shape = ImageShape { channels, ..shape };
    let mut pixels = Vec::with_capacity(images.len() * shape.pixels());
    for (from, image) in images {
        pixels.extend(convert::convert_channels(image, from, channels));
    }
    Ok(Records {
        shape,
        labels,
        pixels,
        sources,
        metadata: Default::default(),
    })
}

/// Decodes one image file to 8-bit grayscale or RGB, whichever the file is closer to.
fn decode(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, ImageShape), DatasetError> {
    let mut reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(DatasetError::io(path))?;
    if reader.format().is_none()
        && let Ok(format) = image::ImageFormat::from_path(path)
    {
        reader.set_format(format);
    }
    let image = reader
        .decode()
        .map_err(|e| DatasetError::invalid_file(path, format!("cannot decode the image: {e}")))?;
    let (height, width) = (image.height(), image.width());
    let (pixels, channels) = match image.color() {
        ColorType::L8 | ColorType::La8 | ColorType::L16 | ColorType::La16 => {
            (image.to_luma8().into_raw(), 1)
        }
        _ => (image.to_rgb8().into_raw(), 3),
    };
    Ok((
        pixels,
        ImageShape {
            height,
            width,
            channels,
        },
    ))
}
