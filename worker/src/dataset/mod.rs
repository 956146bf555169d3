//! The toucan dataset format (version 1): what `toucan-worker ingest` writes and what training,
//! evaluation and drift detection read.
//!
//! A dataset is a directory:
//!
//! ```text
//! index.json              format, image shape, class names, split seed and ratios, the source
//!                         files' SHA-256, and per split the shards with their SHA-256
//! card.json               per split: class counts, per-channel mean/std, pixel histograms
//! reference.json          drift reference: input statistics and class of up to 2,000 train
//!                         records (see [`reference`]); absent in datasets of older ingests
//! shards/train-00000.rec  record shards (see [`shard`]), at most `--shard-records` each
//! shards/valid-00000.rec
//! shards/test-00000.rec
//! metadata/train.json     optional per-record columns of each split, in record order, e.g.
//! metadata/valid.json     `{"columns": {"source": ["train-images-idx3-ubyte.gz", ...]}}`
//! metadata/test.json      (IDX ingest records each record's source file): the slices of
//!                         `toucan-worker evaluate --slice`
//! ```
//!
//! Every byte is a function of the source bytes and the ingest options: no timestamps, no
//! absolute paths, so the same input gives the same digests and the pipeline cache can key on
//! them. Content addressing: `index.json` lists each shard's SHA-256 and readers check it.

pub mod card;
pub mod error;
pub mod images;
pub mod reference;
pub mod shard;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toucan_core::monitoring::assess::ReferenceRow;

pub use card::{DatasetCard, SplitStats};
pub use error::DatasetError;
pub use shard::{ImageShape, Shard};

/// The value of `format` in `index.json`.
pub const FORMAT: &str = "toucan.dataset/v1";
pub const INDEX_FILE: &str = "index.json";
pub const CARD_FILE: &str = "card.json";
/// The drift reference ([`reference`]); datasets of older ingests have none.
pub const REFERENCE_FILE: &str = "reference.json";
pub const SHARDS_DIR: &str = "shards";
/// Per-record metadata columns of each split (`metadata/<split>.json`), when ingest had any.
pub const METADATA_DIR: &str = "metadata";

/// The three splits, in the order they are cut from the shuffled records.
pub const SPLITS: [&str; 3] = ["train", "valid", "test"];

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetIndex {
    pub format: String,
    pub image: ImageShape,
    pub classes: Vec<String>,
    pub split: SplitPolicy,
    pub sources: Vec<SourceFile>,
    pub splits: Vec<SplitIndex>,
}

/// How records were assigned to splits: shuffled with ChaCha8 seeded by `seed`, then cut by
/// `ratios` (train:valid:test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitPolicy {
    pub seed: u64,
    pub ratios: [u32; 3],
}

/// One input file, by name (relative to `--source`) and content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceFile {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitIndex {
    pub name: String,
    pub records: u64,
    pub shards: Vec<ShardEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// Relative to the dataset directory, always with `/`.
    pub path: String,
    pub records: u64,
    pub sha256: String,
}

impl DatasetIndex {
    pub fn split(&self, name: &str) -> Option<&SplitIndex> {
        self.splits.iter().find(|s| s.name == name)
    }
}

/// A dataset directory opened for reading.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub dir: PathBuf,
    pub index: DatasetIndex,
    pub card: DatasetCard,
}

/// All records of one split in memory: labels and pixels (HWC, u8) back to back.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitData {
    pub labels: Vec<u16>,
    pub pixels: Vec<u8>,
}

impl Dataset {
    pub fn open(dir: &Path) -> Result<Dataset, DatasetError> {
        if !dir.join(INDEX_FILE).is_file() {
            return Err(DatasetError::InvalidSource {
                dir: dir.to_path_buf(),
                message: format!(
                    "not a toucan dataset: no {INDEX_FILE} (make one with `toucan-worker ingest`)"
                ),
            });
        }
        let index: DatasetIndex = read_json(&dir.join(INDEX_FILE))?;
        if index.format != FORMAT {
            return Err(DatasetError::invalid_file(
                dir.join(INDEX_FILE),
                format!("format is {:?}, expected {FORMAT:?}", index.format),
            ));
        }
        let card = read_json(&dir.join(CARD_FILE))?;
        Ok(Dataset {
            dir: dir.to_path_buf(),
            index,
            card,
        })
    }

    /// The drift reference's rows ([`reference`]), or `None` for a dataset ingested before
    /// ingest wrote one.
    pub fn reference(&self) -> Result<Option<Vec<ReferenceRow>>, DatasetError> {
        let path = self.dir.join(REFERENCE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }

    /// Reads every shard of a split, checking each one's SHA-256 against the index. The shards
    /// are read and checked on one thread each.
    pub fn read_split(&self, name: &str) -> Result<SplitData, DatasetError> {
        let split = self.index.split(name).ok_or_else(|| {
            DatasetError::invalid_file(
                self.dir.join(INDEX_FILE),
                format!("no split named {name:?}"),
            )
        })?;
        let shards: Vec<Result<Shard, DatasetError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = split
                .shards
                .iter()
                .map(|entry| scope.spawn(move || self.read_shard(entry)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(DatasetError::InvalidArgument(
                            "a shard reader thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut data = SplitData {
            labels: Vec::with_capacity(split.records as usize),
            pixels: Vec::with_capacity(split.records as usize * self.index.image.pixels()),
        };
        for shard in shards {
            let shard = shard?;
            data.labels.extend_from_slice(&shard.labels);
            data.pixels.extend_from_slice(&shard.pixels);
        }
        Ok(data)
    }

    /// The values of a metadata column for every record of a split, in record order (for
    /// sliced evaluation). `metadata/<split>.json` is `{"columns": {"name": ["value", ...]}}`.
    pub fn metadata_column(&self, split: &str, column: &str) -> Result<Vec<String>, DatasetError> {
        let path = self.dir.join(METADATA_DIR).join(format!("{split}.json"));
        let metadata: SplitMetadata = if path.is_file() {
            read_json(&path)?
        } else {
            SplitMetadata::default()
        };
        let records = self.index.split(split).map_or(0, |s| s.records) as usize;
        match metadata.columns.get(column) {
            Some(values) if values.len() == records => Ok(values.clone()),
            Some(values) => Err(DatasetError::invalid_file(
                &path,
                format!(
                    "column {column:?} has {} values for {records} records",
                    values.len()
                ),
            )),
            None => {
                let known: Vec<&str> = metadata.columns.keys().map(String::as_str).collect();
                Err(DatasetError::invalid_file(
                    &path,
                    if known.is_empty() {
                        format!(
                            "no metadata column {column:?}: this dataset has no metadata columns"
                        )
                    } else {
                        format!(
                            "no metadata column {column:?}; the columns are: {}",
                            known.join(", ")
                        )
                    },
                ))
            }
        }
    }

    /// Reads one shard, checking its SHA-256, shape and record count against the index.
    pub fn read_shard(&self, entry: &ShardEntry) -> Result<Shard, DatasetError> {
        let path = self.dir.join(&entry.path);
        let bytes = std::fs::read(&path).map_err(DatasetError::io(&path))?;
        let digest = sha256_hex(&bytes);
        if digest != entry.sha256 {
            return Err(DatasetError::invalid_file(
                &path,
                format!("SHA-256 is {digest}, the index says {}", entry.sha256),
            ));
        }
        let shard = Shard::decode(&bytes).map_err(|m| DatasetError::invalid_file(&path, m))?;
        if shard.shape != self.index.image || shard.labels.len() as u64 != entry.records {
            return Err(DatasetError::invalid_file(
                &path,
                "shape or record count differs from the index",
            ));
        }
        Ok(shard)
    }
}

/// `metadata/<split>.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitMetadata {
    pub columns: std::collections::BTreeMap<String, Vec<String>>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DatasetError> {
    let bytes = std::fs::read(path).map_err(DatasetError::io(path))?;
    serde_json::from_slice(&bytes).map_err(|e| DatasetError::invalid_file(path, e.to_string()))
}
