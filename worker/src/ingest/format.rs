//! Which reader a source needs: `--format auto|idx|folder|csv`.
//!
//! `auto` decides from what `--source` is:
//!
//! - a file ending in `.csv` (any case) → `csv`, a CSV pixel table;
//! - a directory with `--labels` → `folder`, images named by a labels CSV;
//! - a directory holding `*images-idx3-ubyte[.gz]` files → `idx`;
//! - a directory with sub-folders (not hidden) → `folder`, one sub-folder per class;
//! - anything else is an error that says what was looked for.

use std::fmt;
use std::path::Path;

use crate::dataset::DatasetError;

/// The kind of source, as `--format` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// Decide from what --source is.
    Auto,
    /// IDX images/labels pairs (MNIST, Fashion-MNIST) in a directory.
    Idx,
    /// Image files (PNG, JPEG): one sub-folder per class, or any layout with --labels.
    Folder,
    /// One CSV file: a label column and one column per pixel value.
    Csv,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceFormat::Auto => "auto",
            SourceFormat::Idx => "idx",
            SourceFormat::Folder => "folder",
            SourceFormat::Csv => "csv",
        })
    }
}

/// What the source looks like, gathered once so that [`decide`] can be pure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceListing {
    pub is_dir: bool,
    /// The file name of a file source.
    pub file_name: String,
    /// For a directory: its entries, with whether each is a directory.
    pub entries: Vec<(String, bool)>,
}

/// Looks at `source` (following links) for [`decide`].
pub fn list(source: &Path) -> Result<SourceListing, DatasetError> {
    let meta = match std::fs::metadata(source) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DatasetError::InvalidSource {
                dir: source.to_path_buf(),
                message: "no such file or directory".into(),
            });
        }
        Err(e) => return Err(DatasetError::io(source)(e)),
    };
    let mut listing = SourceListing {
        is_dir: meta.is_dir(),
        file_name: source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        entries: Vec::new(),
    };
    if listing.is_dir {
        for entry in std::fs::read_dir(source).map_err(DatasetError::io(source))? {
            let entry = entry.map_err(DatasetError::io(source))?;
            let is_dir = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir());
            listing
                .entries
                .push((entry.file_name().to_string_lossy().into_owned(), is_dir));
        }
        listing.entries.sort();
    }
    Ok(listing)
}

/// The reader for a source: `requested` unless it is `Auto`, checked against what the source is.
/// The error message is about the source (the caller names it).
pub fn decide(
    requested: SourceFormat,
    listing: &SourceListing,
    has_labels: bool,
) -> Result<SourceFormat, String> {
    let is_csv = !listing.is_dir && listing.file_name.to_lowercase().ends_with(".csv");
    match requested {
        SourceFormat::Csv if listing.is_dir => {
            Err("is a directory; --format csv reads one CSV file: give its path".into())
        }
        SourceFormat::Idx | SourceFormat::Folder if !listing.is_dir => Err(format!(
            "is a file; --format {requested} reads a directory{}",
            if is_csv {
                " (a .csv file is read with --format csv)"
            } else {
                ""
            }
        )),
        SourceFormat::Auto if !listing.is_dir && is_csv => Ok(SourceFormat::Csv),
        SourceFormat::Auto if !listing.is_dir => Err(
            "is a file, and only .csv files are read as a file source; give the directory of IDX files or images"
                .into(),
        ),
        SourceFormat::Auto if has_labels => Ok(SourceFormat::Folder),
        SourceFormat::Auto => {
            let visible = || listing.entries.iter().filter(|(n, _)| !n.starts_with('.'));
            if visible().any(|(name, is_dir)| !is_dir && name.contains("images-idx3-ubyte")) {
                Ok(SourceFormat::Idx)
            } else if visible().any(|(_, is_dir)| *is_dir) {
                Ok(SourceFormat::Folder)
            } else {
                Err("nothing to ingest: no IDX image files (*images-idx3-ubyte or *images-idx3-ubyte.gz), no class sub-folders, and no --labels FILE.csv".into())
            }
        }
        format => Ok(format),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(entries: &[(&str, bool)]) -> SourceListing {
        SourceListing {
            is_dir: true,
            file_name: "src".into(),
            entries: entries.iter().map(|&(n, d)| (n.to_string(), d)).collect(),
        }
    }

    fn file(name: &str) -> SourceListing {
        SourceListing {
            is_dir: false,
            file_name: name.into(),
            entries: Vec::new(),
        }
    }

    #[test]
    fn auto_decides_from_the_source() {
        use SourceFormat::*;
        let idx = dir(&[
            ("train-images-idx3-ubyte.gz", false),
            ("train-labels-idx1-ubyte.gz", false),
        ]);
        let classes = dir(&[("cat", true), ("dog", true), ("README", false)]);
        let flat = dir(&[("a.png", false)]);
        let cases: &[(SourceListing, bool, Result<SourceFormat, &str>)] = &[
            (file("fashion-mnist_train.CSV"), false, Ok(Csv)),
            (file("x.png"), false, Err("only .csv")),
            (idx.clone(), false, Ok(Idx)),
            (classes.clone(), false, Ok(Folder)),
            (flat.clone(), true, Ok(Folder)),
            (flat, false, Err("nothing to ingest")),
            // Hidden folders are not classes.
            (dir(&[(".git", true)]), false, Err("nothing to ingest")),
            (dir(&[]), false, Err("nothing to ingest")),
        ];
        for (listing, labels, want) in cases {
            let got = decide(Auto, listing, *labels);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{listing:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got:?} vs {want:?}"),
                (got, want) => panic!("{listing:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn an_explicit_format_must_fit_the_source() {
        use SourceFormat::*;
        let classes = dir(&[("cat", true)]);
        assert_eq!(decide(Idx, &classes, false), Ok(Idx));
        assert_eq!(decide(Folder, &dir(&[]), false), Ok(Folder));
        assert!(
            decide(Csv, &classes, false)
                .unwrap_err()
                .contains("is a directory")
        );
        assert!(
            decide(Folder, &file("t.csv"), false)
                .unwrap_err()
                .contains("--format csv")
        );
    }
}
