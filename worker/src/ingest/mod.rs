//! `toucan-worker ingest`: turns source files into a toucan dataset (see [`crate::dataset`]).
//!
//! Flow: find and validate the source files (every error names the file); pool their records
//! in file-name order; split them with the seeded shuffle ([`split`]); write shards, index and
//! card into a [`StagedDir`], which appears at `--out` only when everything was written: a
//! failure at any point leaves `--out` as it was.
//!
//! Sources today: IDX files (MNIST, Fashion-MNIST). Image folders and CSV pixel tables are to
//! come and will plug in as further readers producing the same [`Records`].

pub mod idx;
pub mod split;

use std::path::{Path, PathBuf};

use crate::dataset::{
    CARD_FILE, DatasetCard, DatasetError, DatasetIndex, FORMAT, INDEX_FILE, ImageShape, SHARDS_DIR,
    SPLITS, Shard, ShardEntry, SourceFile, SplitIndex, SplitPolicy, SplitStats, sha256_hex,
};
use crate::staged::StagedDir;

/// The options of one ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    pub source: PathBuf,
    pub out: PathBuf,
    pub ratios: [u32; 3],
    pub seed: u64,
    pub shard_records: usize,
    /// Class names by label; `None` names classes by their number.
    pub class_names: Option<Vec<String>>,
}

/// Every record of the source, pooled: labels and HWC pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    pub shape: ImageShape,
    pub labels: Vec<u16>,
    pub pixels: Vec<u8>,
    pub sources: Vec<SourceFile>,
}

/// What an ingest wrote, for the summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct IngestSummary {
    pub records: [u64; 3],
    pub classes: usize,
    pub shards: usize,
}

pub fn run(opts: &IngestOptions) -> Result<IngestSummary, DatasetError> {
    if opts.shard_records == 0 {
        return Err(DatasetError::InvalidArgument(
            "--shard-records must be at least 1".into(),
        ));
    }
    let staged = StagedDir::new(&opts.out)?;
    let records = read_idx_source(&opts.source)?;
    let max_label = records.labels.iter().copied().max().unwrap_or(0) as usize;
    let classes = match &opts.class_names {
        Some(names) if names.len() <= max_label => {
            return Err(DatasetError::InvalidArgument(format!(
                "--class-names gives {} names but the labels go up to {max_label}",
                names.len()
            )));
        }
        Some(names) => names.clone(),
        None => (0..=max_label).map(|c| c.to_string()).collect(),
    };
    let summary = write_dataset(staged.path(), &records, classes, opts)?;
    staged.commit()?;
    Ok(summary)
}

/// Reads every IDX images/labels pair in `dir` and pools their records.
pub fn read_idx_source(dir: &Path) -> Result<Records, DatasetError> {
    let pairs = idx::find_pairs(dir)?;
    let mut shape: Option<ImageShape> = None;
    let mut records = Records {
        shape: ImageShape {
            height: 0,
            width: 0,
            channels: 1,
        },
        labels: Vec::new(),
        pixels: Vec::new(),
        sources: Vec::new(),
    };
    for pair in pairs {
        let (raw_images, images) = idx::read(&pair.images)?;
        let (raw_labels, labels) = idx::read(&pair.labels)?;
        let &[count, height, width] = images.dims.as_slice() else {
            return Err(DatasetError::invalid_file(
                &pair.images,
                format!(
                    "an images file has 3 dimensions (count, rows, columns), this one {:?}",
                    images.dims
                ),
            ));
        };
        if labels.dims.as_slice() != [count] {
            return Err(DatasetError::invalid_file(
                &pair.labels,
                format!(
                    "expected one dimension of {count} labels to match {}, found {:?}",
                    file_name(&pair.images),
                    labels.dims
                ),
            ));
        }
        let this = ImageShape {
            height,
            width,
            channels: 1,
        };
        match shape {
            None => shape = Some(this),
            Some(s) if s != this => {
                return Err(DatasetError::invalid_file(
                    &pair.images,
                    format!(
                        "images are {height}x{width}, earlier files had {}x{}",
                        s.height, s.width
                    ),
                ));
            }
            Some(_) => {}
        }
        records
            .labels
            .extend(labels.values.iter().map(|&l| u16::from(l)));
        records.pixels.extend_from_slice(&images.values);
        for (path, raw) in [(&pair.images, raw_images), (&pair.labels, raw_labels)] {
            records.sources.push(SourceFile {
                file: file_name(path),
                sha256: sha256_hex(&raw),
            });
        }
    }
    if let Some(shape) = shape {
        records.shape = shape;
    }
    if records.labels.is_empty() {
        return Err(DatasetError::InvalidSource {
            dir: dir.to_path_buf(),
            message: "the IDX files hold no records".into(),
        });
    }
    Ok(records)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Writes shards, index and card into `dir` (a fresh, empty directory).
fn write_dataset(
    dir: &Path,
    records: &Records,
    classes: Vec<String>,
    opts: &IngestOptions,
) -> Result<IngestSummary, DatasetError> {
    let shards_dir = dir.join(SHARDS_DIR);
    std::fs::create_dir(&shards_dir).map_err(DatasetError::io(&shards_dir))?;
    let per_image = records.shape.pixels();
    let assignment = split::split_indices(records.labels.len(), opts.ratios, opts.seed);
    let mut splits = Vec::new();
    let mut stats = Vec::new();
    let mut summary = IngestSummary {
        records: [0; 3],
        classes: classes.len(),
        shards: 0,
    };
    for (s, (name, indices)) in SPLITS.iter().zip(&assignment).enumerate() {
        let mut labels = Vec::with_capacity(indices.len());
        let mut pixels = Vec::with_capacity(indices.len() * per_image);
        for &i in indices {
            labels.push(records.labels[i]);
            pixels.extend_from_slice(&records.pixels[i * per_image..(i + 1) * per_image]);
        }
        let mut shards = Vec::new();
        for (n, (l, p)) in labels
            .chunks(opts.shard_records)
            .zip(pixels.chunks(opts.shard_records * per_image.max(1)))
            .enumerate()
        {
            let rel = format!("{SHARDS_DIR}/{name}-{n:05}.rec");
            let bytes = Shard::encode(records.shape, l, p);
            let path = dir.join(&rel);
            std::fs::write(&path, &bytes).map_err(DatasetError::io(&path))?;
            shards.push(ShardEntry {
                path: rel,
                records: l.len() as u64,
                sha256: sha256_hex(&bytes),
            });
        }
        summary.records[s] = labels.len() as u64;
        summary.shards += shards.len();
        stats.push(SplitStats::compute(
            name,
            records.shape,
            classes.len(),
            &labels,
            &pixels,
        ));
        splits.push(SplitIndex {
            name: name.to_string(),
            records: labels.len() as u64,
            shards,
        });
    }
    let index = DatasetIndex {
        format: FORMAT.to_string(),
        image: records.shape,
        classes: classes.clone(),
        split: SplitPolicy {
            seed: opts.seed,
            ratios: opts.ratios,
        },
        sources: records.sources.clone(),
        splits,
    };
    let card = DatasetCard {
        classes,
        image: records.shape,
        splits: stats,
    };
    write_json(&dir.join(INDEX_FILE), &index)?;
    write_json(&dir.join(CARD_FILE), &card)?;
    Ok(summary)
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), DatasetError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| DatasetError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    std::fs::write(path, bytes).map_err(DatasetError::io(path))
}
