//! Class folders: `DIR/<class>/*.png|jpg|jpeg`, one label per sub-folder (see [`super`]).

use std::path::{Path, PathBuf};

use super::{Listed, Listing, is_image};
use crate::dataset::DatasetError;
use crate::ingest::labels::{self, LabelError};

/// A directory entry that is not hidden.
#[derive(Debug)]
struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
}

/// The entries of `dir` that are not hidden, sorted.
fn visible_entries(dir: &Path) -> Result<Vec<Entry>, DatasetError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(DatasetError::io(dir))? {
        let entry = entry.map_err(DatasetError::io(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        entries.push(Entry { name, path, is_dir });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The images of every class folder, labelled by folder, in path order.
pub(super) fn list(dir: &Path, given: Option<&[String]>) -> Result<Listing, DatasetError> {
    let mut folders = Vec::new();
    for entry in visible_entries(dir)? {
        if entry.is_dir {
            folders.push(entry);
        } else if is_image(&entry.path) {
            return Err(DatasetError::invalid_file(
                &entry.path,
                "an image directly in the source folder has no class: put it in a class folder, or give --labels FILE.csv",
            ));
        }
    }
    if folders.is_empty() {
        return Err(DatasetError::InvalidSource {
            dir: dir.to_path_buf(),
            message: "no images: expected one sub-folder of .png, .jpg or .jpeg images per class, or --labels FILE.csv".into(),
        });
    }
    let names: Vec<&str> = folders.iter().map(|f| f.name.as_str()).collect();
    let classes = labels::assign(&names, given, false).map_err(
        |LabelError { index, message }| match index {
            Some(i) => {
                DatasetError::invalid_file(&folders[i].path, format!("class folder: {message}"))
            }
            None => DatasetError::InvalidSource {
                dir: dir.to_path_buf(),
                message,
            },
        },
    )?;
    let mut listed = Vec::new();
    for (folder, &label) in folders.iter().zip(&classes.labels) {
        let before = listed.len();
        for entry in visible_entries(&folder.path)? {
            if entry.is_dir {
                return Err(DatasetError::invalid_file(
                    &entry.path,
                    "a folder inside a class folder: class folders hold only .png, .jpg and .jpeg images (hidden files and folders are ignored)",
                ));
            }
            if !is_image(&entry.path) {
                return Err(DatasetError::invalid_file(
                    &entry.path,
                    "not a .png, .jpg or .jpeg file: class folders hold only images (hidden files are ignored); move it out or hide it",
                ));
            }
            listed.push(Listed {
                rel: Path::new(&folder.name).join(&entry.name),
                label,
            });
        }
        if listed.len() == before {
            return Err(DatasetError::InvalidSource {
                dir: folder.path.clone(),
                message: "empty class folder: no .png, .jpg or .jpeg images".into(),
            });
        }
    }
    Ok(Listing {
        images: listed,
        classes: classes.names,
        sources: Vec::new(),
    })
}
