//! Image folders: PNG and JPEG files, labelled either by the class folder they are in or by a
//! labels CSV.
//!
//! - **Class folders** (`DIR/<class>/*.png|jpg|jpeg`): classes are the sub-folder names sorted
//!   by their bytes (or the order of `--class-names`, which must then name every folder).
//!   Extensions are matched in any case. Hidden files and folders (`.name`) are ignored
//!   everywhere. Anything else inside a class folder (another file type, a nested folder) is
//!   an error rather than silently skipped, and so is an empty class folder. Files directly in
//!   `DIR` are ignored (a README, a LICENSE) unless they are images, which have no class and
//!   are an error.
//! - **A labels CSV** (`--labels FILE.csv`): one row per image, its path relative to `DIR` in
//!   `--image-column` (default `file`) and its label in `--label-column` (default `label`);
//!   labels are numbers or class names (see [`super::labels`]). Only the listed files are
//!   read; a path may not leave `DIR`, and may not be listed twice.
//!
//! Either way the images are read in path order, whatever order the folder or the CSV gives,
//! so that the same files give the same bytes. Each image is decoded with the `image` crate
//! (the format is sniffed from the content, falling back to the extension); grayscale files
//! (with or without alpha, 8 or 16 bits) become one channel, everything else RGB; alpha is
//! dropped, not blended. Then [`super::convert`] applies `--channels` and `--resize`. Without
//! `--resize` every image must have the size of the first. Without `--channels` the dataset
//! is grayscale when every file is grayscale, else RGB (grayscale files are repeated into
//! three channels). Every image file and the labels CSV are hashed into the index's sources.
//!
//! Listing (`class_folders` or `labels_file`) decides the files and their labels; `decode`
//! reads them into [`Records`].

mod class_folders;
mod decode;
mod labels_file;

use std::path::{Path, PathBuf};

use super::Records;
use super::convert::ImageOptions;
use crate::dataset::{DatasetError, SourceFile};

/// The file extensions read, matched in any case.
pub const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// How to read an image folder.
#[derive(Debug, Clone, Copy)]
pub struct FolderOptions<'a> {
    /// A CSV naming each image and its label; `None` reads class folders.
    pub labels: Option<&'a Path>,
    pub image_column: &'a str,
    pub label_column: &'a str,
    pub class_names: Option<&'a [String]>,
    pub image: ImageOptions,
}

/// One image to read: its path relative to the source folder and its label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Listed {
    rel: PathBuf,
    label: u16,
}

/// The images to read and the classes, before decoding.
#[derive(Debug)]
struct Listing {
    images: Vec<Listed>,
    classes: Vec<String>,
    /// Source files other than the images (the labels CSV).
    sources: Vec<SourceFile>,
}

/// Reads the images under `dir`: records in path order, and the class names.
pub fn read(dir: &Path, opts: FolderOptions<'_>) -> Result<(Records, Vec<String>), DatasetError> {
    let listing = match opts.labels {
        Some(csv) => labels_file::list(dir, csv, opts)?,
        None => class_folders::list(dir, opts.class_names)?,
    };
    let records = decode::decode_all(dir, &listing.images, opts.image, listing.sources)?;
    Ok((records, listing.classes))
}

/// Whether the file name has one of the [`EXTENSIONS`].
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A relative path with `/` between components, for the index.
fn slash_path(rel: &Path) -> String {
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_extensions_in_any_case() {
        for (name, want) in [
            ("a.png", true),
            ("a.JPG", true),
            ("a.Jpeg", true),
            ("a.gif", false),
            ("png", false),
        ] {
            assert_eq!(is_image(Path::new(name)), want, "{name}");
        }
    }
}
