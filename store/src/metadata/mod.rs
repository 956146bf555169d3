//! The metadata store: runs, steps, attempts, artifacts, cache entries, run documents,
//! tuning studies with their trials, payload samples with their labels, and endpoints'
//! alerts.
//!
//! One trait, [`MetadataStore`], with two stores over sqlx: SQLite for the local runtime (one
//! file, WAL mode) and PostgreSQL for the cluster. Both run the migrations under
//! `migrations/{sqlite,postgres}` on open and are exercised by the same test suite. The rows
//! they hold are core's record types (`toucan_core::records`). The trait is implemented once,
//! in `shared`, and expanded for each store; `sqlite` and `postgres` keep only what differs
//! between the databases (opening, migrations, write transactions, collation, JSON functions).
//!
//! Everything that must be recorded together is written in one transaction: finishing a step
//! records its phase, outputs, produced artifacts and cache entry at once, so a crash never
//! leaves a step half-recorded.

mod postgres;
mod shared;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use std::sync::Arc;

use async_trait::async_trait;
use toucan_core::monitoring::evaluation::{Label, LabelCounts, LabelledSample};
use toucan_core::records::{
    AlertRecord, AttemptRecord, CacheEntry, DocumentKind, Millis, Phase, RunChanges, RunRecord,
    SampleRecord, StepRecord, StudyRecord, TrialRecord,
};
use toucan_core::serving::PayloadSample;

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
/// What [`MetadataStore::expire_monitoring`] deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    pub samples: u64,
    pub labels: u64,
    pub alerts: u64,
}

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

    /// Records every row of `changes` atomically: all of them, or none.
    async fn record(&self, changes: &RunChanges) -> Result<()>;

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

    /// Records a study; recording the same id again changes nothing.
    async fn create_study(&self, study: &StudyRecord) -> Result<()>;
    async fn get_study(&self, id: &str) -> Result<Option<StudyRecord>>;
    /// Studies, newest first; with a name, only the studies of that name.
    async fn list_studies(&self, name: Option<&str>, limit: u32) -> Result<Vec<StudyRecord>>;
    /// Sets a study's phase, message and finish time.
    async fn set_study_phase(
        &self,
        id: &str,
        phase: Phase,
        message: Option<&str>,
        finished_at: Option<Millis>,
    ) -> Result<()>;
    /// Inserts or replaces trials of one study, all of them or none. The study must exist.
    async fn put_trials(&self, trials: &[TrialRecord]) -> Result<()>;
    /// A study's trials, by index.
    async fn list_trials(&self, study_id: &str) -> Result<Vec<TrialRecord>>;

    /// Stores payload samples of `endpoint`, all of them or none; a sample whose request id is
    /// already stored for that endpoint is left as it is. Returns how many were new.
    async fn put_samples(
        &self,
        endpoint: &str,
        samples: &[PayloadSample],
        now: Millis,
    ) -> Result<u64>;
    /// An endpoint's samples stored at or after `since`, oldest first, at most `limit`.
    async fn list_samples(
        &self,
        endpoint: &str,
        since: Millis,
        limit: u32,
    ) -> Result<Vec<SampleRecord>>;

    /// Stores labels of `endpoint`'s samples, all of them or none, received at `now`. A label
    /// already stored with the same value is left as it is; a different value replaces it (a
    /// correction, counted as updated); a label whose request id has no sample of the
    /// endpoint is not stored and is counted as unknown.
    async fn put_labels(
        &self,
        endpoint: &str,
        labels: &[Label],
        now: Millis,
    ) -> Result<LabelCounts>;
    /// An endpoint's samples stored in `stored` (a reference window, or from a time on with
    /// `since..Millis::MAX`), each with its label if one is stored: the newest `limit` of
    /// them, oldest first.
    async fn list_labelled_samples(
        &self,
        endpoint: &str,
        stored: std::ops::Range<Millis>,
        limit: u32,
    ) -> Result<Vec<LabelledSample>>;
    /// Deletes `endpoint`'s samples stored before `samples_before` with their labels, and
    /// its alert episodes that ended before `alerts_before`, all of it or nothing.
    async fn expire_monitoring(
        &self,
        endpoint: &str,
        samples_before: Millis,
        alerts_before: Millis,
    ) -> Result<Expired>;

    /// Stores alert episodes, all of them or none: a new (endpoint, key, active_since) is
    /// inserted, a stored one updated. An update whose `action` or `run` is `None` keeps the
    /// stored value, so a report of the same episode sent again (a webhook re-sent after the
    /// endpoint acted on it) never erases what was done about it.
    async fn put_alerts(&self, alerts: &[AlertRecord]) -> Result<()>;
    /// Alert episodes of `endpoint`, or of every endpoint, most recently updated first (ties
    /// by key), at most `limit`; with `open_only`, only those still pending or firing.
    async fn list_alerts(
        &self,
        endpoint: Option<&str>,
        open_only: bool,
        limit: u32,
    ) -> Result<Vec<AlertRecord>>;
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
