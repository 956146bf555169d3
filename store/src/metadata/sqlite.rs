//! The SQLite metadata store: one file on this machine, for the local runtime.
//!
//! The file is opened in WAL mode (readers never block the writer) with `synchronous=NORMAL`,
//! foreign keys on and a busy timeout, so several processes (two `toucan run` side by side) can
//! share it. SQLite has one writer at a time; to keep waiting for it instead of failing:
//!
//! - every transaction that writes starts with `BEGIN IMMEDIATE`, taking the write lock up
//!   front, where the busy timeout applies. A deferred transaction that reads and then writes
//!   can fail at once with `SQLITE_BUSY` when another writer committed in between;
//! - single-statement writes (`claim_cache_key` is one `INSERT ... ON CONFLICT ... RETURNING`)
//!   take the write lock when the statement starts, so they are atomic and wait the same way;
//! - migrations run inside one `BEGIN IMMEDIATE` transaction, so two processes opening a new
//!   file at once apply them exactly once;
//! - switching a new file to WAL needs a lock the busy timeout does not cover, so opening
//!   retries on `SQLITE_BUSY` for as long as the busy timeout.
//!
//! JSON columns are TEXT, written and read through [`sqlx::types::Json`].

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::types::Json;
use sqlx::{Row, SqlSafeStr};

use toucan_core::records::{
    ArtifactKind, ArtifactRecord, AttemptRecord, CacheEntry, DocumentKind, Millis, Phase,
    RunChanges, RunPhase, RunRecord, StepRecord,
};

use super::{MetadataStore, Result, StoreError};

/// How long a statement waits for another connection's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two tries to open a file another process is setting up.
const OPEN_RETRY_PAUSE: Duration = Duration::from_millis(25);
/// Connections per store: several readers, while SQLite serializes the writers anyway.
const MAX_CONNECTIONS: u32 = 4;
/// SQLite's primary result code for "another connection holds the lock".
const SQLITE_BUSY: i32 = 5;
/// SQLite's primary result code for "a table is locked" (shared-cache contention).
const SQLITE_LOCKED: i32 = 6;

/// The metadata store in a SQLite file. Cheap to clone: clones share one connection pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens the store in the file at `path`, creating the file and its parent directory when
    /// missing, and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let url = path.display().to_string();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| StoreError::Open {
                    url: url.clone(),
                    source: sqlx::Error::Io(e),
                })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);

        let deadline = Instant::now() + BUSY_TIMEOUT;
        loop {
            match Self::try_open(&url, options.clone()).await {
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    tokio::time::sleep(OPEN_RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn try_open(url: &str, options: SqliteConnectOptions) -> Result<SqliteStore> {
        let open_err = |source| StoreError::Open {
            url: url.to_string(),
            source,
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(open_err)?;

        let migrate_err = |source| StoreError::Migrate {
            url: url.to_string(),
            source,
        };
        let mut tx = pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| migrate_err(MigrateError::Execute(e)))?;
        migrate(&mut tx).await.map_err(migrate_err)?;
        tx.commit()
            .await
            .map_err(|e| migrate_err(MigrateError::Execute(e)))?;

        Ok(SqliteStore { pool })
    }

    /// Closes every connection, checkpointing the write-ahead log into the main file.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write_tx(
        &self,
        operation: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(query_err(operation))
    }
}

/// Applies pending migrations on `conn`, inside the caller's transaction.
///
/// `Migrator::run` is generic over `Acquire`, which makes `open`'s future fail to be `Send`
/// ("implementation of `Acquire` is not general enough", launchbadge/sqlx#2016);
/// `run_direct` is the same code on a plain connection, public for exactly this reason.
async fn migrate(conn: &mut SqliteConnection) -> Result<(), MigrateError> {
    migrator().run_direct(None, conn, false).await
}

/// The migrations under `migrations/sqlite`, embedded at compile time.
///
/// Built by hand rather than with `sqlx::migrate!`, which needs sqlx's `macros` feature; the
/// version, description and checksum are the ones `migrate!` would record.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "run documents".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0002_run_documents.sql").into_sql_str(),
            false,
        ),
    ])
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn create_run(&self, run: &RunRecord) -> Result<()> {
        const OP: &str = "creating a run";
        sqlx::query(
            "INSERT INTO runs (id, pipeline, phase, params, spec, created_at, finished_at, message)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&run.id)
        .bind(&run.pipeline)
        .bind(run.phase.as_str())
        .bind(Json(&run.params))
        .bind(Json(&run.spec))
        .bind(run.created_at)
        .bind(run.finished_at)
        .bind(&run.message)
        .execute(&self.pool)
        .await
        .map_err(query_err(OP))?;
        Ok(())
    }

    async fn set_run_phase(
        &self,
        id: &str,
        phase: Phase,
        message: Option<&str>,
        finished_at: Option<Millis>,
    ) -> Result<()> {
        sqlx::query("UPDATE runs SET phase = $1, message = $2, finished_at = $3 WHERE id = $4")
            .bind(phase.as_str())
            .bind(message)
            .bind(finished_at)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(query_err("setting a run's phase"))?;
        Ok(())
    }

    async fn get_run(&self, id: &str) -> Result<Option<RunRecord>> {
        sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a run"))?
            .map(|row| run_from_row(&row))
            .transpose()
    }

    async fn list_runs(&self, limit: u32) -> Result<Vec<RunRecord>> {
        sqlx::query("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT $1")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing runs"))?
            .iter()
            .map(run_from_row)
            .collect()
    }

    async fn upsert_step(&self, step: &StepRecord) -> Result<()> {
        const OP: &str = "recording a step";
        let mut conn = self.pool.acquire().await.map_err(query_err(OP))?;
        write_step(&mut conn, step).await.map_err(query_err(OP))
    }

    async fn list_steps(&self, run_id: &str) -> Result<Vec<StepRecord>> {
        sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY name")
            .bind(run_id)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing steps"))?
            .iter()
            .map(step_from_row)
            .collect()
    }

    async fn get_step(&self, run_id: &str, name: &str) -> Result<Option<StepRecord>> {
        sqlx::query("SELECT * FROM steps WHERE run_id = $1 AND name = $2")
            .bind(run_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a step"))?
            .map(|row| step_from_row(&row))
            .transpose()
    }

    async fn upsert_attempt(&self, attempt: &AttemptRecord) -> Result<()> {
        const OP: &str = "recording an attempt";
        let mut conn = self.pool.acquire().await.map_err(query_err(OP))?;
        write_attempt(&mut conn, attempt)
            .await
            .map_err(query_err(OP))
    }

    async fn list_attempts(&self, run_id: &str, step: &str) -> Result<Vec<AttemptRecord>> {
        sqlx::query("SELECT * FROM attempts WHERE run_id = $1 AND step = $2 ORDER BY attempt")
            .bind(run_id)
            .bind(step)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("listing attempts"))?
            .iter()
            .map(attempt_from_row)
            .collect()
    }

    async fn record(&self, changes: &RunChanges) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        const OP: &str = "recording a run's changes";
        let mut tx = self.write_tx(OP).await?;
        write_changes(&mut tx, changes).await?;
        // Dropping `tx` on an early return above rolls everything back.
        tx.commit().await.map_err(query_err(OP))
    }

    async fn get_cache_entry(&self, key: &str) -> Result<Option<CacheEntry>> {
        sqlx::query("SELECT * FROM cache_entries WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(query_err("reading a cache entry"))?
            .map(|row| cache_entry_from_row(&row))
            .transpose()
    }

    async fn delete_cache_entry(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM cache_entries WHERE key = $1")
            .bind(key)
            .execute(&self.pool)
            .await
            .map_err(query_err("deleting a cache entry"))?;
        Ok(())
    }

    async fn delete_cache_entries_before(&self, cutoff: Millis) -> Result<u64> {
        let done = sqlx::query("DELETE FROM cache_entries WHERE created_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await
            .map_err(query_err("expiring cache entries"))?;
        Ok(done.rows_affected())
    }

    async fn referenced_digests(&self) -> Result<Vec<String>> {
        // Step outputs and cache entries hold their digests in JSON; the artifacts table may
        // hold rows of runs deleted without foreign keys enforced, hence the EXISTS.
        sqlx::query(
            "SELECT digest FROM (
                 SELECT json_extract(a.value, '$.digest') AS digest
                   FROM steps AS s, json_each(s.outputs, '$.artifacts') AS a
                 UNION
                 SELECT json_extract(a.value, '$.digest')
                   FROM cache_entries AS c, json_each(c.outputs, '$.artifacts') AS a
                 UNION
                 SELECT ar.digest
                   FROM artifacts AS ar
                  WHERE EXISTS (SELECT 1 FROM runs AS r WHERE r.id = ar.run_id)
             )
             WHERE digest IS NOT NULL
             ORDER BY digest",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(query_err("listing referenced digests"))?
        .iter()
        .map(|row| column(row, "digest"))
        .collect()
    }

    async fn claim_cache_key(
        &self,
        key: &str,
        owner: &str,
        now: Millis,
        stale_before: Millis,
    ) -> Result<bool> {
        // One statement: it takes the write lock before reading the existing claim, so two
        // claimers cannot both see the key free. RETURNING yields a row only when this owner
        // inserted or took over the claim.
        let row = sqlx::query(
            "INSERT INTO cache_claims (key, owner, claimed_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE
                SET owner = excluded.owner, claimed_at = excluded.claimed_at
              WHERE cache_claims.claimed_at < $4 OR cache_claims.owner = excluded.owner
             RETURNING owner",
        )
        .bind(key)
        .bind(owner)
        .bind(now)
        .bind(stale_before)
        .fetch_optional(&self.pool)
        .await
        .map_err(query_err("claiming a cache key"))?;
        match row {
            Some(row) => Ok(column::<String>(&row, "owner")? == owner),
            None => Ok(false),
        }
    }

    async fn release_cache_key(&self, key: &str, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM cache_claims WHERE key = $1 AND owner = $2")
            .bind(key)
            .bind(owner)
            .execute(&self.pool)
            .await
            .map_err(query_err("releasing a cache key"))?;
        Ok(())
    }
    async fn put_run_document(
        &self,
        run_id: &str,
        kind: DocumentKind,
        key: &str,
        body: &serde_json::Value,
        now: Millis,
    ) -> Result<()> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("storing a run document"))?;
        write_document(&mut conn, run_id, kind, key, body, now).await
    }

    async fn get_run_document(
        &self,
        run_id: &str,
        kind: DocumentKind,
        key: &str,
    ) -> Result<Option<serde_json::Value>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("reading a run document"))?;
        read_document(&mut conn, run_id, kind, key).await
    }

    async fn list_run_documents(
        &self,
        run_id: &str,
        kind: DocumentKind,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(query_err("listing run documents"))?;
        read_documents(&mut conn, run_id, kind).await
    }
}

super::rows::shared_rows!(sqlx::Sqlite, SqliteConnection, SqliteRow);

/// Whether opening failed only because another connection held a lock.
fn is_busy(error: &StoreError) -> bool {
    let source = match error {
        StoreError::Open { source, .. } => source,
        StoreError::Migrate {
            source: MigrateError::Execute(source) | MigrateError::ExecuteMigration(source, _),
            ..
        } => source,
        _ => return false,
    };
    let code = source
        .as_database_error()
        .and_then(|e| e.code())
        .and_then(|code| code.parse::<i32>().ok());
    matches!(code.map(|c| c & 0xff), Some(SQLITE_BUSY | SQLITE_LOCKED))
}
