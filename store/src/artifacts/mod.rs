//! The artifact store: content-addressed blobs in any `object_store` backend.
//!
//! Every blob lives at `blobs/sha256/<first two hex digits>/<hex>`; its name is the SHA-256 of
//! its bytes, so equal content is stored once and a name can never point at other bytes. A
//! file artifact is one blob. A directory artifact is a blob per file plus a manifest blob (a
//! canonical JSON list of relative paths, digests, sizes and modes) whose digest is the
//! directory's digest. Writes go through `object_store`, whose local backend stages each blob
//! and renames it into place, and S3 shows an object only once its upload completes, so a reader
//! never sees half a blob. `s3` opens `s3://` locations.

mod digest;
mod s3;
mod tree;

pub use digest::{Digest, sha256_file};
pub use tree::{DirManifest, ManifestEntry};

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use toucan_core::records::{ArtifactKind, ArtifactRef};

/// Files larger than this are uploaded in parts instead of being read whole into memory.
const WHOLE_PUT_LIMIT: u64 = 8 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact store {location}: {source}")]
    Backend {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: escapes the step's output directory {root}")]
    Escapes { path: PathBuf, root: PathBuf },
    #[error("{path}: {what} is not supported in artifacts")]
    Unsupported { path: PathBuf, what: &'static str },
    #[error("{path}: does not exist")]
    Missing { path: PathBuf },
    #[error("artifact {digest}: {detail}")]
    Corrupt { digest: String, detail: String },
    #[error("artifact store location {location:?}: {detail}")]
    Location { location: String, detail: String },
}

impl ArtifactError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            ArtifactError::Backend { .. } => "ArtifactBackend",
            ArtifactError::Io { .. } => "ArtifactIo",
            ArtifactError::Escapes { .. } => "ArtifactEscapes",
            ArtifactError::Unsupported { .. } => "ArtifactUnsupported",
            ArtifactError::Missing { .. } => "ArtifactMissing",
            ArtifactError::Corrupt { .. } => "ArtifactCorrupt",
            ArtifactError::Location { .. } => "ArtifactLocation",
        }
    }
}

pub type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// What `gc` removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs_removed: u64,
    pub bytes_removed: u64,
    pub blobs_kept: u64,
}

/// A content-addressed store of artifacts.
#[derive(Clone, Debug)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    location: String,
}

impl ArtifactStore {
    /// Opens a store: a directory path (created when missing), a `file://` URL,
    /// `s3://BUCKET[/PREFIX]` (S3 or an S3-compatible server, configured from the standard
    /// `AWS_*` environment; see the `s3` module), or `memory://` (tests).
    pub fn open(location: &str) -> Result<ArtifactStore> {
        let inner: Arc<dyn ObjectStore> = if location == "memory://" {
            Arc::new(InMemory::new())
        } else if location.starts_with(s3::SCHEME) {
            s3::open(location)?
        } else {
            let dir = match location.strip_prefix("file://") {
                Some(p) => PathBuf::from(p),
                None if location.contains("://") => {
                    return Err(ArtifactError::Location {
                        location: location.to_string(),
                        detail: "unsupported scheme (expected a directory, file://, s3:// or \
                                 memory://)"
                            .into(),
                    });
                }
                None => PathBuf::from(location),
            };
            std::fs::create_dir_all(&dir).map_err(|source| ArtifactError::Io {
                path: dir.clone(),
                source,
            })?;
            let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|source| {
                ArtifactError::Backend {
                    location: location.to_string(),
                    source,
                }
            })?;
            Arc::new(fs)
        };
        Ok(ArtifactStore {
            inner,
            location: location.to_string(),
        })
    }

    /// Where the store is, as given to `open`.
    pub fn location(&self) -> &str {
        &self.location
    }

    fn backend(&self, source: object_store::Error) -> ArtifactError {
        ArtifactError::Backend {
            location: self.location.clone(),
            source,
        }
    }

    fn blob_path(digest: &Digest) -> ObjectPath {
        let hex = digest.hex();
        ObjectPath::from(format!("blobs/sha256/{}/{}", &hex[..2], hex))
    }

    /// Whether a blob exists.
    pub async fn has_blob(&self, digest: &Digest) -> Result<bool> {
        match self.inner.head(&Self::blob_path(digest)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend(e)),
        }
    }

    /// Reads a whole blob.
    pub async fn get_blob(&self, digest: &Digest) -> Result<bytes::Bytes> {
        let got = self
            .inner
            .get(&Self::blob_path(digest))
            .await
            .map_err(|e| self.backend(e))?;
        got.bytes().await.map_err(|e| self.backend(e))
    }

    /// Stores bytes as a blob and returns their digest.
    pub async fn put_bytes(&self, bytes: bytes::Bytes) -> Result<Digest> {
        let digest = Digest::of(&bytes);
        if !self.has_blob(&digest).await? {
            self.inner
                .put(&Self::blob_path(&digest), PutPayload::from(bytes))
                .await
                .map_err(|e| self.backend(e))?;
        }
        Ok(digest)
    }

    /// Stores one local file as a blob (skipping the upload when it is already there).
    pub async fn put_file(&self, path: &Path) -> Result<(Digest, u64)> {
        let owned = path.to_path_buf();
        let (digest, size) = tokio::task::spawn_blocking(move || sha256_file(&owned))
            .await
            .map_err(|e| ArtifactError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::other(e),
            })??;
        if self.has_blob(&digest).await? {
            return Ok((digest, size));
        }
        let io = |source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        };
        let location = Self::blob_path(&digest);
        if size <= WHOLE_PUT_LIMIT {
            let bytes = tokio::fs::read(path).await.map_err(io)?;
            self.inner
                .put(&location, PutPayload::from(bytes))
                .await
                .map_err(|e| self.backend(e))?;
        } else {
            let upload = self
                .inner
                .put_multipart(&location)
                .await
                .map_err(|e| self.backend(e))?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            let mut file = tokio::fs::File::open(path).await.map_err(io)?;
            let mut buf = vec![0u8; PART_SIZE];
            loop {
                let n = file.read(&mut buf).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n]);
            }
            writer.finish().await.map_err(|e| self.backend(e))?;
        }
        Ok((digest, size))
    }

    /// Stores a file or a directory found at `path`, which must lie inside `root` (the step's
    /// output directory, or the directory a local input was named from). Symlinks are followed
    /// only when their target stays inside `root`.
    pub async fn put_path(&self, path: &Path, root: &Path) -> Result<ArtifactRef> {
        let entries = tree::scan(path, root)?;
        match entries {
            tree::Scanned::File(file) => {
                let (digest, size) = self.put_file(&file).await?;
                Ok(ArtifactRef {
                    digest: digest.to_string(),
                    size,
                    kind: ArtifactKind::File,
                })
            }
            tree::Scanned::Dir(files) => {
                let mut manifest = DirManifest::default();
                let mut total = 0;
                for (rel, file, executable) in files {
                    match file {
                        Some(file) => {
                            let (digest, size) = self.put_file(&file).await?;
                            total += size;
                            manifest
                                .entries
                                .push(ManifestEntry::file(rel, digest, size, executable));
                        }
                        None => manifest.entries.push(ManifestEntry::dir(rel)),
                    }
                }
                let digest = self.put_bytes(manifest.to_bytes()).await?;
                Ok(ArtifactRef {
                    digest: digest.to_string(),
                    size: total,
                    kind: ArtifactKind::Dir,
                })
            }
        }
    }

    /// The artifact a bare digest names (as a run's parameter may): a directory when its blob
    /// is a directory manifest, else a file. A digest the store lacks is an error naming it.
    pub async fn resolve(&self, digest: &Digest) -> Result<ArtifactRef> {
        let location = Self::blob_path(digest);
        let meta = match self.inner.head(&location).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArtifactError::Corrupt {
                    digest: digest.to_string(),
                    detail: format!("not in the artifact store {}", self.location),
                });
            }
            Err(e) => return Err(self.backend(e)),
        };
        let head = self
            .inner
            .get_range(
                &location,
                0..meta.size.min(tree::MANIFEST_PREFIX.len() as u64),
            )
            .await
            .map_err(|e| self.backend(e))?;
        if head.as_ref() != tree::MANIFEST_PREFIX.as_bytes() {
            return Ok(ArtifactRef {
                digest: digest.to_string(),
                size: meta.size,
                kind: ArtifactKind::File,
            });
        }
        let manifest = self.manifest(digest).await?;
        Ok(ArtifactRef {
            digest: digest.to_string(),
            size: manifest.entries.iter().map(|e| e.size).sum(),
            kind: ArtifactKind::Dir,
        })
    }

    /// Reads a directory artifact's manifest.
    pub async fn manifest(&self, digest: &Digest) -> Result<DirManifest> {
        let bytes = self.get_blob(digest).await?;
        DirManifest::from_bytes(&bytes).map_err(|detail| ArtifactError::Corrupt {
            digest: digest.to_string(),
            detail,
        })
    }

    /// Writes an artifact to `dest` (which must not exist): a file, or a directory tree.
    pub async fn materialize(&self, artifact: &ArtifactRef, dest: &Path) -> Result<()> {
        let digest = Digest::parse(&artifact.digest).map_err(|detail| ArtifactError::Corrupt {
            digest: artifact.digest.clone(),
            detail,
        })?;
        let io = |path: &Path, source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        };
        match artifact.kind {
            ArtifactKind::File => self.write_blob_to(&digest, dest, false).await,
            ArtifactKind::Dir => {
                let manifest = self.manifest(&digest).await?;
                tokio::fs::create_dir_all(dest)
                    .await
                    .map_err(|e| io(dest, e))?;
                for entry in &manifest.entries {
                    let target = dest.join(entry.safe_relative_path().map_err(|detail| {
                        ArtifactError::Corrupt {
                            digest: artifact.digest.clone(),
                            detail,
                        }
                    })?);
                    match &entry.digest {
                        None => tokio::fs::create_dir_all(&target)
                            .await
                            .map_err(|e| io(&target, e))?,
                        Some(d) => {
                            let d = Digest::parse(d).map_err(|detail| ArtifactError::Corrupt {
                                digest: artifact.digest.clone(),
                                detail,
                            })?;
                            if let Some(parent) = target.parent() {
                                tokio::fs::create_dir_all(parent)
                                    .await
                                    .map_err(|e| io(parent, e))?;
                            }
                            self.write_blob_to(&d, &target, entry.executable).await?;
                        }
                    }
                }
                Ok(())
            }
        }
    }

    async fn write_blob_to(&self, digest: &Digest, dest: &Path, executable: bool) -> Result<()> {
        let io = |source| ArtifactError::Io {
            path: dest.to_path_buf(),
            source,
        };
        let got = self
            .inner
            .get(&Self::blob_path(digest))
            .await
            .map_err(|e| self.backend(e))?;
        let mut file = tokio::fs::File::create(dest).await.map_err(io)?;
        let mut stream = got.into_stream();
        while let Some(chunk) = stream.try_next().await.map_err(|e| self.backend(e))? {
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(io)?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(io)?;
        if executable {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(io)?;
        }
        Ok(())
    }

    /// The digests among `artifacts` (and, for directories, their files) that the store no
    /// longer holds.
    pub async fn missing<'a>(
        &self,
        artifacts: impl IntoIterator<Item = &'a ArtifactRef>,
    ) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for artifact in artifacts {
            let Ok(digest) = Digest::parse(&artifact.digest) else {
                missing.push(artifact.digest.clone());
                continue;
            };
            if !self.has_blob(&digest).await? {
                missing.push(artifact.digest.clone());
                continue;
            }
            if artifact.kind == ArtifactKind::Dir {
                for entry in self.manifest(&digest).await?.entries {
                    if let Some(d) = entry.digest {
                        match Digest::parse(&d) {
                            Ok(child) if self.has_blob(&child).await? => {}
                            _ => missing.push(d),
                        }
                    }
                }
            }
        }
        Ok(missing)
    }

    /// Deletes every blob not reachable from `referenced` (top-level artifact digests; the
    /// files of referenced directories are kept too). Blobs written after `keep_newer_than`
    /// (ms since the epoch) are kept: they may belong to a step that is still running.
    pub async fn gc(
        &self,
        referenced: &BTreeSet<String>,
        keep_newer_than: i64,
    ) -> Result<GcReport> {
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for d in referenced {
            keep.insert(d.clone());
            let Ok(digest) = Digest::parse(d) else {
                continue;
            };
            // A referenced blob may be a directory manifest: keep its files too.
            if let Ok(bytes) = self.get_blob(&digest).await
                && let Ok(manifest) = DirManifest::from_bytes(&bytes)
            {
                keep.extend(manifest.entries.into_iter().filter_map(|e| e.digest));
            }
        }
        let prefix = ObjectPath::from("blobs/sha256");
        let objects: Vec<object_store::ObjectMeta> = self
            .inner
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.backend(e))?;
        let mut report = GcReport::default();
        for meta in objects {
            let Some(hex) = meta.location.filename() else {
                continue;
            };
            let digest = format!("sha256:{hex}");
            if keep.contains(&digest) || meta.last_modified.timestamp_millis() > keep_newer_than {
                report.blobs_kept += 1;
                continue;
            }
            self.inner
                .delete(&meta.location)
                .await
                .map_err(|e| self.backend(e))?;
            report.blobs_removed += 1;
            report.bytes_removed += meta.size;
        }
        Ok(report)
    }

    /// Deletes one blob (tests and repair tools).
    pub async fn delete_blob(&self, digest: &Digest) -> Result<()> {
        match self.inner.delete(&Self::blob_path(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.backend(e)),
        }
    }
}

#[cfg(test)]
mod tests;
