//! Output directories that appear whole or not at all: the content is written into a hidden
//! temporary directory next to the destination, which is renamed into place on success and
//! removed on failure (dropping a [`StagedDir`] without committing removes it).

use std::path::{Path, PathBuf};

use crate::dataset::DatasetError;

#[derive(Debug)]
pub struct StagedDir {
    tmp: tempfile::TempDir,
    out: PathBuf,
}

impl StagedDir {
    /// Checks that `out` is free (absent or an empty directory) and creates the temporary
    /// directory beside it, creating `out`'s parent if needed.
    pub fn new(out: &Path) -> Result<StagedDir, DatasetError> {
        check_free(out)?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(DatasetError::io(&parent))?;
        let name = out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(&parent)
            .map_err(DatasetError::io(&parent))?;
        Ok(StagedDir {
            tmp,
            out: out.to_path_buf(),
        })
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Moves the content to its destination.
    pub fn commit(self) -> Result<(), DatasetError> {
        let tmp = self.tmp.keep();
        if let Err(source) = std::fs::rename(&tmp, &self.out) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(
                if matches!(source.kind(), std::io::ErrorKind::DirectoryNotEmpty) {
                    DatasetError::OutputExists { path: self.out }
                } else {
                    DatasetError::Io {
                        path: self.out,
                        source,
                    }
                },
            );
        }
        Ok(())
    }
}

/// `out` must not exist or be an empty directory (the launcher may have created it).
fn check_free(out: &Path) -> Result<(), DatasetError> {
    match std::fs::read_dir(out) {
        Ok(mut entries) => match entries.next() {
            None => Ok(()),
            Some(_) => Err(DatasetError::OutputExists {
                path: out.to_path_buf(),
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if out.exists() => Err(DatasetError::OutputExists {
            path: out.to_path_buf(),
        }),
        Err(source) => Err(DatasetError::Io {
            path: out.to_path_buf(),
            source,
        }),
    }
}
