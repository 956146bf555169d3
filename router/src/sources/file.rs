//! A configuration file, read at start (a missing or invalid file stops the router there)
//! and re-read every [`FILE_POLL_INTERVAL`]; a changed, valid document is published.
//!
//! Polling the content rather than waiting for inotify or SIGHUP is deliberate: it works on
//! every filesystem, for editors that replace the file, and for the symlink swap Kubernetes
//! does when a mounted ConfigMap changes, and the file is small.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::{ConfigUpdates, ProblemLog, publish_if_changed};
use crate::config::RouterConfig;
use crate::error::RouterError;

/// How often the file is read again.
pub const FILE_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The configuration in `path` now, and every later change of it.
pub async fn watch_file(path: PathBuf) -> Result<ConfigUpdates, RouterError> {
    watch_file_every(path, FILE_POLL_INTERVAL).await
}

/// [`watch_file`], polling every `interval`.
pub async fn watch_file_every(
    path: PathBuf,
    interval: Duration,
) -> Result<ConfigUpdates, RouterError> {
    let text = read(&path).await?;
    let config = RouterConfig::from_text(&text, &path.display().to_string())?;
    let (updates, receiver) = watch::channel(Some(config));
    tokio::spawn(poll(path, interval, updates, text));
    Ok(receiver)
}

async fn read(path: &Path) -> Result<String, RouterError> {
    tokio::fs::read_to_string(path)
        .await
        .map_err(|source| RouterError::ReadConfig {
            path: path.to_path_buf(),
            source,
        })
}

async fn poll(
    path: PathBuf,
    interval: Duration,
    updates: watch::Sender<Option<RouterConfig>>,
    mut last_text: String,
) {
    let mut problems = ProblemLog::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = updates.closed() => return,
        }
        let text = match read(&path).await {
            Ok(text) => text,
            Err(e) => {
                problems.problem(e.to_string());
                continue;
            }
        };
        if text == last_text {
            continue;
        }
        match RouterConfig::from_text(&text, &path.display().to_string()) {
            Ok(config) => {
                problems.solved();
                publish_if_changed(&updates, config);
            }
            Err(e) => problems.problem(e.to_string()),
        }
        last_text = text;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_or_invalid_file_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = watch_file(dir.path().join("absent.yaml"))
            .await
            .unwrap_err();
        assert_eq!(missing.reason(), "ReadConfig");
        let invalid = dir.path().join("invalid.yaml");
        std::fs::write(&invalid, "endpoint: e\nversions: []\n").unwrap();
        let err = watch_file(invalid).await.unwrap_err();
        assert!(err.is_invalid_input());
        assert!(err.to_string().contains("versions"), "{err}");
    }

    #[tokio::test]
    async fn a_change_is_published_and_an_invalid_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router.yaml");
        std::fs::write(&path, "endpoint: e\nversions: [{name: v1, weight: 1}]\n").unwrap();
        let mut updates = watch_file_every(path.clone(), Duration::from_millis(20))
            .await
            .unwrap();
        std::fs::write(&path, "endpoint: e\nversions: []\n").unwrap();
        // The invalid document is skipped; the valid one after it arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!updates.has_changed().unwrap());
        std::fs::write(&path, "endpoint: e\nversions: [{name: v2, weight: 1}]\n").unwrap();
        updates.changed().await.unwrap();
        let config = updates.borrow_and_update().clone().unwrap();
        assert_eq!(config.versions[0].name, "v2");
    }
}
