//! `toucan-worker export-images`: a dataset split back to image files, one folder per class
//! (`<out>/<class>/<split>-<record>.png`), the layout `ingest --format folder` reads. For
//! looking at the data, labelling tools, or making a smaller image-folder dataset.

use std::path::Path;

use image::{ExtendedColorType, ImageEncoder};

use super::{Dataset, DatasetError};
use crate::staged::StagedDir;

#[derive(Debug, Clone)]
pub struct ExportImages<'a> {
    pub split: &'a str,
    /// Only these classes (by name); all when empty.
    pub classes: &'a [String],
    /// At most this many images per class, the first ones in record order.
    pub per_class: Option<usize>,
}

/// Writes the images and returns how many; `out` appears whole or not at all.
pub fn export(dataset: &Dataset, out: &Path, opts: &ExportImages) -> Result<usize, DatasetError> {
    let names = &dataset.index.classes;
    for c in opts.classes {
        if !names.contains(c) {
            return Err(DatasetError::InvalidArgument(format!(
                "--classes: {c:?} is not a class of {}; the classes are: {}",
                dataset.dir.display(),
                names.join(", ")
            )));
        }
    }
    let shape = dataset.index.image;
    let color = match shape.channels {
        1 => ExtendedColorType::L8,
        3 => ExtendedColorType::Rgb8,
        c => {
            return Err(DatasetError::InvalidArgument(format!(
                "{}: {c} channels cannot be written as PNG",
                dataset.dir.display()
            )));
        }
    };
    let data = dataset.read_split(opts.split)?;
    let staged = StagedDir::new(out)?;
    let wanted = |label: usize| opts.classes.is_empty() || opts.classes.contains(&names[label]);
    let mut written = vec![0usize; names.len()];
    let per_image = shape.pixels();
    for (i, &label) in data.labels.iter().enumerate() {
        let label = label as usize;
        if label >= names.len() || !wanted(label) {
            continue;
        }
        if opts.per_class.is_some_and(|n| written[label] >= n) {
            continue;
        }
        // Class names may hold `/` (Fashion-MNIST's "T-shirt/top"): not as a path separator.
        let folder = staged.path().join(names[label].replace('/', "_"));
        std::fs::create_dir_all(&folder).map_err(DatasetError::io(&folder))?;
        let path = folder.join(format!("{}-{i:06}.png", opts.split));
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(
                &data.pixels[i * per_image..(i + 1) * per_image],
                shape.width,
                shape.height,
                color,
            )
            .map_err(|e| DatasetError::invalid_file(&path, e.to_string()))?;
        std::fs::write(&path, png).map_err(DatasetError::io(&path))?;
        written[label] += 1;
    }
    staged.commit()?;
    Ok(written.iter().sum())
}
