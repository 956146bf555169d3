//! Directory artifacts: scanning a tree safely and its canonical manifest.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ArtifactError, Digest};

/// The canonical description of a directory artifact; its serialized bytes are hashed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirManifest {
    /// Sorted by path.
    pub entries: Vec<ManifestEntry>,
}

/// A file (with a digest) or an empty directory (without) inside a directory artifact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative, `/`-separated, no `..`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub executable: bool,
}

const MANIFEST_TAG: &str = "toucan.dir.v1";

/// How a directory manifest's canonical bytes begin (`format` is their first field).
pub(super) const MANIFEST_PREFIX: &str = concat!("{\"format\":\"", "toucan.dir.v1", "\"");

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: String,
    entries: Vec<ManifestEntry>,
}

impl ManifestEntry {
    pub fn file(path: String, digest: Digest, size: u64, executable: bool) -> ManifestEntry {
        ManifestEntry {
            path,
            digest: Some(digest.to_string()),
            size,
            executable,
        }
    }

    pub fn dir(path: String) -> ManifestEntry {
        ManifestEntry {
            path,
            digest: None,
            size: 0,
            executable: false,
        }
    }

    /// The entry's path, checked to stay inside the directory it is written to.
    pub fn safe_relative_path(&self) -> Result<PathBuf, String> {
        let p = Path::new(&self.path);
        if self.path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("unsafe path {:?} in directory manifest", self.path));
        }
        Ok(p.to_path_buf())
    }
}

impl DirManifest {
    /// Canonical bytes: entries sorted by path, fixed field order, no whitespace.
    pub fn to_bytes(&self) -> bytes::Bytes {
        let mut entries = self.entries.clone();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let envelope = Envelope {
            format: MANIFEST_TAG.to_string(),
            entries,
        };
        // Serializing plain structs of strings and integers cannot fail.
        bytes::Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<DirManifest, String> {
        let envelope: Envelope =
            serde_json::from_slice(bytes).map_err(|e| format!("not a directory manifest: {e}"))?;
        if envelope.format != MANIFEST_TAG {
            return Err(format!("unknown manifest format {:?}", envelope.format));
        }
        Ok(DirManifest {
            entries: envelope.entries,
        })
    }
}

/// What lies at an artifact path.
pub(super) enum Scanned {
    /// A regular file (symlinks resolved).
    File(PathBuf),
    /// A directory: (relative path, the file to read or None for an empty directory,
    /// executable), sorted by relative path.
    Dir(Vec<(String, Option<PathBuf>, bool)>),
}

/// Looks at `path` without trusting it: every symlink must resolve inside `root`, and only
/// regular files and directories are accepted.
pub(super) fn scan(path: &Path, root: &Path) -> Result<Scanned, ArtifactError> {
    let io = |p: &Path, source| ArtifactError::Io {
        path: p.to_path_buf(),
        source,
    };
    let root = root.canonicalize().map_err(|e| io(root, e))?;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ArtifactError::Missing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(io(path, e)),
    };
    let resolved = resolve_inside(path, &meta, &root)?;
    let resolved_meta = std::fs::metadata(&resolved).map_err(|e| io(&resolved, e))?;
    if resolved_meta.is_file() {
        return Ok(Scanned::File(resolved));
    }
    if !resolved_meta.is_dir() {
        return Err(ArtifactError::Unsupported {
            path: path.to_path_buf(),
            what: "a special file",
        });
    }
    let mut out = Vec::new();
    walk(&resolved, "", &root, &mut out, 0)?;
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Scanned::Dir(out))
}

const MAX_DEPTH: usize = 64;

fn walk(
    dir: &Path,
    prefix: &str,
    root: &Path,
    out: &mut Vec<(String, Option<PathBuf>, bool)>,
    depth: usize,
) -> Result<(), ArtifactError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |p: &Path, source| ArtifactError::Io {
        path: p.to_path_buf(),
        source,
    };
    if depth > MAX_DEPTH {
        return Err(ArtifactError::Unsupported {
            path: dir.to_path_buf(),
            what: "nesting this deep",
        });
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(|e| io(dir, e))?;
    names.sort();
    if names.is_empty() && !prefix.is_empty() {
        out.push((prefix.trim_end_matches('/').to_string(), None, false));
    }
    for name in names {
        let Some(name_str) = name.to_str() else {
            return Err(ArtifactError::Unsupported {
                path: dir.join(&name),
                what: "a file name that is not UTF-8",
            });
        };
        let path = dir.join(&name);
        let rel = format!("{prefix}{name_str}");
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
        let resolved = resolve_inside(&path, &meta, root)?;
        let target_meta = std::fs::metadata(&resolved).map_err(|e| io(&resolved, e))?;
        if target_meta.is_file() {
            let executable = target_meta.permissions().mode() & 0o111 != 0;
            out.push((rel, Some(resolved), executable));
        } else if target_meta.is_dir() {
            if meta.file_type().is_symlink() {
                return Err(ArtifactError::Unsupported {
                    path,
                    what: "a symlink to a directory",
                });
            }
            walk(&resolved, &format!("{rel}/"), root, out, depth + 1)?;
        } else {
            return Err(ArtifactError::Unsupported {
                path,
                what: "a special file",
            });
        }
    }
    Ok(())
}

/// The real path of `path`, which must lie inside `root` (already canonical).
fn resolve_inside(
    path: &Path,
    meta: &std::fs::Metadata,
    root: &Path,
) -> Result<PathBuf, ArtifactError> {
    let resolved = if meta.file_type().is_symlink() {
        match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(_) => {
                return Err(ArtifactError::Escapes {
                    path: path.to_path_buf(),
                    root: root.to_path_buf(),
                });
            }
        }
    } else {
        path.canonicalize().map_err(|source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        })?
    };
    if !resolved.starts_with(root) {
        return Err(ArtifactError::Escapes {
            path: path.to_path_buf(),
            root: root.to_path_buf(),
        });
    }
    Ok(resolved)
}
