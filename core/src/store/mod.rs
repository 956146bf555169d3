//! The metadata store: runs, steps, attempts, artifacts and cache entries.
//!
//! One trait, [`MetadataStore`], with two implementations over sqlx: SQLite for the local
//! runtime (one file, WAL mode) and PostgreSQL for the cluster. Both run the migrations under
//! `migrations/{sqlite,postgres}` on open and are exercised by the same test suite.
//!
//! Everything that must be recorded together is written in one transaction: finishing a step
//! records its phase, outputs, produced artifacts and cache entry at once, so a crash never
//! leaves a step half-recorded.

mod postgres;
mod rows;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::time::Millis;

/// The phase of a run, a step or an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Skipped => "Skipped",
            Phase::Cancelled => "Cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Skipped" => Phase::Skipped,
            "Cancelled" => Phase::Cancelled,
            _ => return None,
        })
    }

    /// Whether nothing more will happen to a thing in this phase.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Succeeded | Phase::Failed | Phase::Skipped | Phase::Cancelled
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outputs of a step: small parameter values and artifact digests, by output name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StepOutputs {
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactRef>,
}

impl StepOutputs {
    /// The artifact rows of these outputs, produced by `step` of `run_id` at `now`.
    pub fn artifact_records(&self, run_id: &str, step: &str, now: Millis) -> Vec<ArtifactRecord> {
        self.artifacts
            .iter()
            .map(|(name, a)| ArtifactRecord {
                digest: a.digest.clone(),
                size: a.size,
                kind: a.kind,
                run_id: run_id.to_string(),
                step: step.to_string(),
                output: name.clone(),
                created_at: now,
            })
            .collect()
    }
}

/// A reference to an artifact in the content-addressed store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRef {
    /// `sha256:<hex>` of the artifact's canonical bytes (a file, or a directory manifest).
    pub digest: String,
    /// Total size in bytes of the files the artifact holds.
    pub size: u64,
    pub kind: ArtifactKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    File,
    Dir,
}

/// One execution of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// A ULID, unique in the store.
    pub id: String,
    pub pipeline: String,
    pub phase: Phase,
    /// The resolved parameter values of the run, as JSON.
    pub params: serde_json::Value,
    /// The pipeline spec the run executes (JSON), so a run can be resumed without its file.
    pub spec: serde_json::Value,
    pub created_at: Millis,
    pub finished_at: Option<Millis>,
    pub message: Option<String>,
}

/// One node of a run's graph: a step, or one child `name[index]` of a fan-out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    pub run_id: String,
    pub name: String,
    pub phase: Phase,
    /// Hex cache key, once the step's inputs were resolved.
    pub cache_key: Option<String>,
    /// The components the key was computed from (see `cache::CacheKeyComponents`), as JSON.
    pub cache_components: Option<serde_json::Value>,
    pub cached: bool,
    pub attempts: u32,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
    pub outputs: StepOutputs,
    pub message: Option<String>,
}

/// One attempt of a step: one process (locally) or one pod (in a cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub run_id: String,
    pub step: String,
    /// 1-based.
    pub attempt: u32,
    pub phase: Phase,
    pub exit_code: Option<i32>,
    pub started_at: Millis,
    pub finished_at: Option<Millis>,
    /// Where the attempt's log lives: a path for the local runtime, a digest for the cluster.
    pub log_ref: Option<String>,
    pub message: Option<String>,
}

/// A blob in the artifact store, as the metadata store knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub digest: String,
    pub size: u64,
    pub kind: ArtifactKind,
    pub run_id: String,
    pub step: String,
    pub output: String,
    pub created_at: Millis,
}

/// A cache entry: the outputs a step with this key produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CacheEntry {
    /// Hex SHA-256 cache key.
    pub key: String,
    pub outputs: StepOutputs,
    pub run_id: String,
    pub step: String,
    pub created_at: Millis,
}

/// Everything recorded when a step finishes, in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct StepCompletion {
    pub step: StepRecord,
    /// The attempt that finished, if the step ran (none for cache hits and skips).
    pub attempt: Option<AttemptRecord>,
    pub artifacts: Vec<ArtifactRecord>,
    /// The cache entry to write (only for a succeeded, cacheable step that ran).
    pub cache_entry: Option<CacheEntry>,
}

/// What a run document holds: JSON kept beside a run's rows, one per (run, kind, key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// The engine's state of a run driven by the operator (key `""`).
    State,
    /// A launcher's report of one attempt (key `NODE/ATTEMPT`).
    Report,
    /// The metric series a step pushed (key: the node).
    Metrics,
}

impl DocumentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::State => "state",
            DocumentKind::Report => "report",
            DocumentKind::Metrics => "metrics",
        }
    }
}

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening metadata store {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migrating metadata store {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("metadata store {operation}: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("metadata store: corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("metadata store: unsupported URL {url:?} (expected a file path, sqlite: or postgres:)")]
    UnsupportedUrl { url: String },
}

impl StoreError {
    /// A short stable reason, for events, metrics and exit codes.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => "StoreOpen",
            StoreError::Migrate { .. } => "StoreMigrate",
            StoreError::Query { .. } => "StoreQuery",
            StoreError::Corrupt { .. } => "StoreCorrupt",
            StoreError::UnsupportedUrl { .. } => "StoreUrl",
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The metadata store's operations. See the module docs.
#[async_trait]
pub trait MetadataStore: Send + Sync + std::fmt::Debug {
    /// Records a new run (phase as given, usually `Running`).
    async fn create_run(&self, run: &RunRecord) -> Result<()>;
    /// Sets a run's phase, message and finish time.
    async fn set_run_phase(
        &self,
        id: &str,
        phase: Phase,
        message: Option<&str>,
        finished_at: Option<Millis>,
    ) -> Result<()>;
    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>>;
    /// Runs, newest first.
    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>>;

    /// Inserts or replaces one step row (phase changes, cache key once known).
    async fn upsert_step(&self, step: &StepRecord) -> Result<()>;
    /// The steps of a run, ordered by name.
    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>>;
    async fn get_step(&self, run_id: &str, name: &str) -> Result<Option<StepRecord>>;

    /// Inserts or replaces one attempt row (started, then finished).
    async fn upsert_attempt(&self, attempt: &AttemptRecord) -> Result<()>;
    /// The attempts of one step, by attempt number.
    async fn list_attempts(&self, run_id: &str, step: &str) -> Result<Vec<AttemptRecord>>;

    /// Records a finished step, its attempt, its artifacts and its cache entry atomically.
    async fn complete_step(&self, completion: &StepCompletion) -> Result<()>;

    async fn get_cache_entry(&self, key: &str) -> Result<Option<CacheEntry>>;
    async fn delete_cache_entry(&self, key: &str) -> Result<()>;
    /// Deletes cache entries created before `cutoff`; returns how many.
    async fn delete_cache_entries_before(&self, cutoff: Millis) -> Result<u64>;
    /// Every artifact digest still referenced by a step output or a cache entry.
    async fn referenced_digests(&self) -> Result<Vec<String>>;

    /// Claims a cache key for computing it (single-flight across processes). Returns true when
    /// this owner holds the claim: no claim existed, or the existing one is older than
    /// `stale_before`, or it is already this owner's.
    async fn claim_cache_key(
        &self,
        key: &str,
        owner: &str,
        now: Millis,
        stale_before: Millis,
    ) -> Result<bool>;
    /// Releases a claim held by `owner` (no-op otherwise).
    async fn release_cache_key(&self, key: &str, owner: &str) -> Result<()>;

    /// Stores a run document, replacing the one with the same kind and key. The run must exist.
    async fn put_run_document(
        &self,
        run_id: &str,
        kind: DocumentKind,
        key: &str,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<()>;
    async fn get_run_document(
        &self,
        run_id: &str,
        kind: DocumentKind,
        key: &str,
    ) -> Result<Option<serde_json::Value>>;
    /// The documents of one kind of a run, ordered by key.
    async fn list_run_documents(
        &self,
        run_id: &str,
        kind: DocumentKind,
    ) -> Result<Vec<(String, serde_json::Value)>>;
}

/// Opens the store a URL names: `postgres://` or `postgresql://` for PostgreSQL; `sqlite:PATH`
/// or a plain file path for SQLite (created with its parent directory when missing).
pub async fn open(url: &str) -> Result<Arc<dyn MetadataStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        Ok(Arc::new(
            SqliteStore::open(std::path::Path::new(path)).await?,
        ))
    } else if url.contains("://") {
        Err(StoreError::UnsupportedUrl {
            url: url.to_string(),
        })
    } else {
        Ok(Arc::new(
            SqliteStore::open(std::path::Path::new(url)).await?,
        ))
    }
}
