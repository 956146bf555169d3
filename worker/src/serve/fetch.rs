//! Where the served model file comes from: a local path as given, or `sha256:DIGEST` read
//! from the artifact store (`--artifacts`), checked against its digest and kept in a local
//! cache directory by digest, so a restart reads it from disk (checked again) instead of the
//! store.

use std::path::{Path, PathBuf};

use toucan_store::artifacts::{ArtifactStore, Digest, sha256_file};

use super::args::ServeArgs;
use super::error::ServeError;

/// The model file to load, fetching it first when `--model` is a digest.
pub async fn model_file(args: &ServeArgs) -> Result<PathBuf, ServeError> {
    if !args.model.starts_with("sha256:") {
        let path = PathBuf::from(&args.model);
        if !path.exists() {
            return Err(ServeError::InvalidArgument(format!(
                "--model {}: does not exist",
                args.model
            )));
        }
        return Ok(path);
    }
    let digest = Digest::parse(&args.model)
        .map_err(|e| ServeError::InvalidArgument(format!("--model: {e}")))?;
    let Some(location) = &args.artifacts else {
        return Err(ServeError::InvalidArgument(
            "--model sha256:DIGEST needs --artifacts, the store to read it from".into(),
        ));
    };
    let cache = match &args.model_cache {
        Some(dir) => dir.clone(),
        None => default_cache(),
    };
    fetch(location, &digest, &cache).await
}

/// `$XDG_CACHE_HOME/toucan/models`, else `~/.cache/toucan/models`, else under the temporary
/// directory.
fn default_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("toucan").join("models")
}

/// The blob `digest` of the store at `location`, as a file under `cache`.
pub async fn fetch(location: &str, digest: &Digest, cache: &Path) -> Result<PathBuf, ServeError> {
    let path = cache.join("sha256").join(digest.hex());
    if path.is_file() {
        let (found, _) = sha256_file(&path).map_err(|e| ServeError::Io {
            context: format!("checking the cached model {}", path.display()),
            source: std::io::Error::other(e.to_string()),
        })?;
        if &found == digest {
            return Ok(path);
        }
        eprintln!(
            "toucan-worker serve: the cached {} is {found}, not {digest}; fetching it again",
            path.display()
        );
    }
    let failed = |detail: String| ServeError::Fetch {
        digest: digest.to_string(),
        store: location.to_string(),
        detail,
    };
    let store = ArtifactStore::open(location).map_err(|e| failed(e.to_string()))?;
    let bytes = store
        .get_blob(digest)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let found = Digest::of(&bytes);
    if &found != digest {
        return Err(failed(format!("the store's bytes have the digest {found}")));
    }
    let dir = cache.join("sha256");
    let io = |context: String| move |source| ServeError::Io { context, source };
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut staged = tempfile::NamedTempFile::new_in(&dir)
        .map_err(io(format!("writing into {}", dir.display())))?;
    std::io::Write::write_all(&mut staged, &bytes)
        .map_err(io(format!("writing {}", path.display())))?;
    staged.persist(&path).map_err(|e| ServeError::Io {
        context: format!("writing {}", path.display()),
        source: e.error,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_blob_is_fetched_checked_and_cached() {
        let work = tempfile::tempdir().unwrap();
        let store_dir = work.path().join("store");
        let location = store_dir.to_str().unwrap();
        let store = ArtifactStore::open(location).unwrap();
        let digest = store
            .put_bytes(b"model bytes".to_vec().into())
            .await
            .unwrap();
        let cache = work.path().join("cache");
        let path = fetch(location, &digest, &cache).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"model bytes");
        // A cached file that was tampered with is fetched again.
        std::fs::write(&path, b"other").unwrap();
        let again = fetch(location, &digest, &cache).await.unwrap();
        assert_eq!(std::fs::read(&again).unwrap(), b"model bytes");
        let missing = Digest::of(b"absent");
        let e = fetch(location, &missing, &cache).await.unwrap_err();
        assert_eq!(e.reason(), "ModelFetchFailed");
    }
}
