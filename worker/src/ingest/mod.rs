//! `toucan-worker ingest`: turns source files into a toucan dataset (see [`crate::dataset`]).
//!
//! Flow: decide the reader ([`mod@format`]); find and validate the source files (every error
//! names the file, and the line and column for CSVs); pool their records in path order; bring
//! every image to one shape ([`convert`]: `--channels`, `--resize`); split the records with the
//! seeded shuffle ([`split`]); write shards, index, card and drift reference into a
//! [`StagedDir`], which appears at `--out` only when everything was written: a failure at any
//! point leaves `--out` as it was.
//!
//! The drift reference (`reference.json`, [`crate::dataset::reference`]) holds the input
//! statistics of up to 2,000 train records, evenly spaced over the split. They are computed on
//! the images as ingested, after `--resize` and `--channels`, whereas a model server computes
//! them on the image as the client sent it: feed an endpoint images at the dataset's size for
//! their width and height to compare with the reference's.
//!
//! Sources, each a reader producing the same [`Records`] and class names:
//!
//! - IDX files (MNIST, Fashion-MNIST): [`idx`], labels are the class numbers;
//! - image folders, one sub-folder per class or a labels CSV: [`folder`];
//! - CSV pixel tables (a label column and one column per pixel): [`pixel_csv`].
//!
//! Labels given as text (CSV columns, folder names) become classes by the rules of [`labels`].
//!
//! `--add-train FILE.csv` appends a pixel table's records to the training split after the
//! shuffle, with the source's classes and image shape: how a retraining run learns from the
//! labelled production samples of an alert's window (`{{alert.window.samples}}`, whose `label`
//! and `pixel*` columns are a pixel table). Validation and test stay the source's.

pub mod convert;
mod csv_file;
pub mod folder;
pub mod format;
pub mod idx;
pub mod labels;
pub mod pixel_csv;
pub mod split;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::dataset::{
    CARD_FILE, DatasetCard, DatasetError, DatasetIndex, FORMAT, INDEX_FILE, ImageShape,
    METADATA_DIR, REFERENCE_FILE, SHARDS_DIR, SPLITS, Shard, ShardEntry, SourceFile, SplitIndex,
    SplitMetadata, SplitPolicy, SplitStats, reference, sha256_hex,
};
use crate::staged::StagedDir;

pub use convert::{ImageOptions, Size};
pub use format::SourceFormat;

/// The column of a labels CSV that names the image file, unless `--image-column` says.
pub const DEFAULT_IMAGE_COLUMN: &str = "file";
/// The column of a labels CSV or a pixel table that holds the label, unless `--label-column`
/// says.
pub const DEFAULT_LABEL_COLUMN: &str = "label";

/// The options of one ingest.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// A directory (IDX files, image folders) or a CSV pixel table.
    pub source: PathBuf,
    pub out: PathBuf,
    /// How to read `source`; `Auto` decides (see [`mod@format`]).
    pub format: SourceFormat,
    pub ratios: [u32; 3],
    pub seed: u64,
    pub shard_records: usize,
    /// Class names by label; `None` names classes by their number (IDX, numeric labels) or
    /// takes them from the source (folder names, text labels).
    pub class_names: Option<Vec<String>>,
    /// Image folders: a CSV naming each image and its label, instead of class folders.
    pub labels: Option<PathBuf>,
    /// The image column of `labels` ([`DEFAULT_IMAGE_COLUMN`] when `None`).
    pub image_column: Option<String>,
    /// The label column of `labels` or of a pixel table ([`DEFAULT_LABEL_COLUMN`] when `None`).
    pub label_column: Option<String>,
    /// Pixel tables: the shape of a row's pixels (square grayscale when `None`).
    pub image_shape: Option<ImageShape>,
    /// `--resize` and `--channels`, for every source.
    pub image: ImageOptions,
    /// Pixel tables whose records join the training split after the shuffle (empty paths
    /// stand for none).
    pub add_train: Vec<PathBuf>,
}

/// Every record of the source, pooled: labels and HWC pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Records {
    pub shape: ImageShape,
    pub labels: Vec<u16>,
    pub pixels: Vec<u8>,
    pub sources: Vec<SourceFile>,
    /// Per-record metadata columns (one value per record), written to `metadata/<split>.json`
    /// for sliced evaluation. IDX sources record each record's images file as `source`.
    pub metadata: BTreeMap<String, Vec<String>>,
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
    let listing = format::list(&opts.source)?;
    let format =
        format::decide(opts.format, &listing, opts.labels.is_some()).map_err(|message| {
            DatasetError::InvalidSource {
                dir: opts.source.clone(),
                message,
            }
        })?;
    check_flags(format, opts).map_err(DatasetError::InvalidArgument)?;
    if let Some(names) = &opts.class_names {
        labels::check_class_names(names).map_err(DatasetError::InvalidArgument)?;
    }
    let staged = StagedDir::new(&opts.out)?;
    let (mut records, classes) = read_source(format, opts)?;
    let extra = read_added(&opts.add_train, &mut records, &classes)?;
    let summary = write_dataset(staged.path(), &records, &extra, classes, opts)?;
    staged.commit()?;
    Ok(summary)
}

/// Flags that only some sources read are an error elsewhere, rather than silently ignored.
fn check_flags(format: SourceFormat, opts: &IngestOptions) -> Result<(), String> {
    if opts.labels.is_some() && format != SourceFormat::Folder {
        return Err(format!(
            "--labels applies to image folders (--format folder); this source is read as {format}"
        ));
    }
    if opts.image_column.is_some() && opts.labels.is_none() {
        return Err("--image-column names a column of --labels FILE.csv; give --labels".into());
    }
    if opts.label_column.is_some() && format != SourceFormat::Csv && opts.labels.is_none() {
        return Err(format!(
            "--label-column names a column of --labels FILE.csv or of a CSV pixel table; this source is read as {format}"
        ));
    }
    if opts.image_shape.is_some() && format != SourceFormat::Csv {
        return Err(format!(
            "--image-shape applies to CSV pixel tables (--format csv); this source is read as {format}"
        ));
    }
    Ok(())
}

/// Runs the reader for `format`: the records in source order and the class names.
fn read_source(
    format: SourceFormat,
    opts: &IngestOptions,
) -> Result<(Records, Vec<String>), DatasetError> {
    let label_column = opts.label_column.as_deref().unwrap_or(DEFAULT_LABEL_COLUMN);
    match format {
        SourceFormat::Folder => folder::read(
            &opts.source,
            folder::FolderOptions {
                labels: opts.labels.as_deref(),
                image_column: opts.image_column.as_deref().unwrap_or(DEFAULT_IMAGE_COLUMN),
                label_column,
                class_names: opts.class_names.as_deref(),
                image: opts.image,
            },
        ),
        SourceFormat::Csv => {
            let (records, classes) = pixel_csv::read(
                &opts.source,
                pixel_csv::TableOptions {
                    label_column,
                    shape: opts.image_shape,
                    class_names: opts.class_names.as_deref(),
                    shape_from: "--image-shape",
                },
            )?;
            Ok((reshape(records, opts.image, &opts.source)?, classes))
        }
        SourceFormat::Idx | SourceFormat::Auto => {
            let records = read_idx_source(&opts.source)?;
            let classes = numbered_classes(&records.labels, opts.class_names.as_deref())?;
            Ok((reshape(records, opts.image, &opts.source)?, classes))
        }
    }
}

/// The records of the `--add-train` tables, at the source's image shape and with its classes;
/// each table's file joins the source's files, and its name is the `source` of its records
/// where the source records one.
fn read_added(
    tables: &[PathBuf],
    records: &mut Records,
    classes: &[String],
) -> Result<Records, DatasetError> {
    let mut extra = Records {
        shape: records.shape,
        labels: Vec::new(),
        pixels: Vec::new(),
        sources: Vec::new(),
        metadata: BTreeMap::new(),
    };
    for path in tables {
        let Some(table) = pixel_csv::read_added(path, records.shape, classes)? else {
            continue;
        };
        for name in records.metadata.keys() {
            let value = if name == "source" {
                file_name(path)
            } else {
                String::new()
            };
            extra
                .metadata
                .entry(name.clone())
                .or_default()
                .extend(std::iter::repeat_n(value, table.labels.len()));
        }
        extra.labels.extend(&table.labels);
        extra.pixels.extend(&table.pixels);
        records.sources.extend(table.sources);
    }
    Ok(extra)
}

/// Class names for labels that are class numbers (IDX): `given`, which must cover every
/// label, or the numbers.
fn numbered_classes(labels: &[u16], given: Option<&[String]>) -> Result<Vec<String>, DatasetError> {
    let max_label = labels.iter().copied().max().unwrap_or(0) as usize;
    match given {
        Some(names) if names.len() <= max_label => Err(DatasetError::InvalidArgument(format!(
            "--class-names gives {} names but the labels go up to {max_label}",
            names.len()
        ))),
        Some(names) => Ok(names.to_vec()),
        None => Ok((0..=max_label).map(|c| c.to_string()).collect()),
    }
}

/// Applies `--channels` and `--resize` to every record of a source whose images already share
/// a shape (image folders do it per image, as they decode).
fn reshape(records: Records, image: ImageOptions, source: &Path) -> Result<Records, DatasetError> {
    let shape = records.shape;
    let unchanged = image.channels.is_none_or(|c| c == shape.channels)
        && image
            .resize
            .is_none_or(|s| (s.height, s.width) == (shape.height, shape.width));
    if unchanged || records.labels.is_empty() {
        return Ok(records);
    }
    let mut pixels = Vec::new();
    let mut new_shape = shape;
    for record in records.pixels.chunks_exact(shape.pixels().max(1)) {
        let (p, s) = convert::apply(record.to_vec(), shape, image)
            .map_err(|m| DatasetError::invalid_file(source, m))?;
        pixels.extend_from_slice(&p);
        new_shape = s;
    }
    Ok(Records {
        shape: new_shape,
        pixels,
        ..records
    })
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
        metadata: BTreeMap::new(),
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
        let source = file_name(&pair.images);
        records
            .metadata
            .entry("source".to_string())
            .or_default()
            .extend(std::iter::repeat_n(source, count as usize));
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

/// Writes shards, index, card and drift reference into `dir` (a fresh, empty directory).
/// Writes the dataset: `records` split by the seeded shuffle, and `extra` appended to the
/// training split.
fn write_dataset(
    dir: &Path,
    records: &Records,
    extra: &Records,
    classes: Vec<String>,
    opts: &IngestOptions,
) -> Result<IngestSummary, DatasetError> {
    let shards_dir = dir.join(SHARDS_DIR);
    std::fs::create_dir(&shards_dir).map_err(DatasetError::io(&shards_dir))?;
    let per_image = records.shape.pixels();
    let assignment = split::split_indices(records.labels.len(), opts.ratios, opts.seed);
    let mut splits = Vec::new();
    let mut stats = Vec::new();
    let mut reference_rows = Vec::new();
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
        let added = *name == "train";
        if added {
            labels.extend_from_slice(&extra.labels);
            pixels.extend_from_slice(&extra.pixels);
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
        if !records.metadata.is_empty() {
            let columns = records
                .metadata
                .iter()
                .map(|(column, values)| {
                    let mut picked: Vec<String> =
                        indices.iter().map(|&i| values[i].clone()).collect();
                    if added {
                        picked.extend(extra.metadata.get(column).into_iter().flatten().cloned());
                    }
                    (column.clone(), picked)
                })
                .collect();
            let meta_dir = dir.join(METADATA_DIR);
            std::fs::create_dir_all(&meta_dir).map_err(DatasetError::io(&meta_dir))?;
            write_json(
                &meta_dir.join(format!("{name}.json")),
                &SplitMetadata { columns },
            )?;
        }
        if *name == "train" {
            reference_rows = reference::rows(records.shape, &classes, &labels, &pixels);
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
    write_json(&dir.join(REFERENCE_FILE), &reference_rows)?;
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
