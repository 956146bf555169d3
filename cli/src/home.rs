//! Where the local runtime keeps its state: `$TOUCAN_HOME`, else `.toucan` in the working
//! directory. The metadata store is `toucan.db` there unless `TOUCAN_DATABASE_URL` names
//! another (a `postgres://` URL works too); artifacts go to `artifacts/` unless
//! `TOUCAN_ARTIFACTS` names another store; attempt directories and logs go to `runs/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use toucan_store::artifacts::ArtifactStore;
use toucan_store::metadata::{self as store, MetadataStore};

#[derive(Clone, Debug)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn locate() -> Home {
        let root = std::env::var_os("TOUCAN_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".toucan"));
        let root = std::path::absolute(&root).unwrap_or(root);
        Home { root }
    }

    pub fn database_url(&self) -> String {
        std::env::var("TOUCAN_DATABASE_URL")
            .unwrap_or_else(|_| self.root.join("toucan.db").to_string_lossy().into_owned())
    }

    pub fn artifacts_location(&self) -> String {
        std::env::var("TOUCAN_ARTIFACTS")
            .unwrap_or_else(|_| self.root.join("artifacts").to_string_lossy().into_owned())
    }

    /// The directory of one attempt of one node.
    pub fn attempt_dir(&self, run: &str, node: &str, attempt: u32) -> PathBuf {
        self.root
            .join("runs")
            .join(run)
            .join(node)
            .join(attempt.to_string())
    }

    pub fn log_path(dir: &Path) -> PathBuf {
        dir.join("log")
    }

    /// Opens the metadata store, creating it when missing.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        let url = self.database_url();
        store::open(&url)
            .await
            .with_context(|| format!("opening the metadata store {url}"))
    }

    /// Opens the store only if it already exists (read-only commands never create one).
    pub async fn open_existing_store(&self) -> anyhow::Result<Arc<dyn MetadataStore>> {
        let url = self.database_url();
        if !url.contains("://") && !Path::new(&url).exists() {
            anyhow::bail!("no toucan store at {url} (run a pipeline first, or set TOUCAN_HOME)");
        }
        self.open_store().await
    }

    pub fn open_artifacts(&self) -> anyhow::Result<ArtifactStore> {
        let location = self.artifacts_location();
        ArtifactStore::open(&location)
            .with_context(|| format!("opening the artifact store {location}"))
    }
}
