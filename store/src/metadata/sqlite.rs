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
//! JSON columns are TEXT, written and read through [`sqlx::types::Json`]. The operations
//! themselves are the PostgreSQL store's, expanded here by [`super::shared`]; this module holds
//! what differs: opening, migrations, how a write transaction starts, the byte-order collation
//! (`BINARY`) and the statement that reads digests out of JSON.

use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::{Result, StoreError};

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
        let mut tx = begin_write(&pool)
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
        Migration::new(
            3,
            "studies".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0003_studies.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "samples".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0004_samples.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "labels".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0005_labels.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "alerts".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/sqlite/0006_alerts.sql").into_sql_str(),
            false,
        ),
    ])
}

super::shared::impl_metadata_store! {
    store: SqliteStore,
    database: sqlx::Sqlite,
    connection: sqlx::sqlite::SqliteConnection,
    row: sqlx::sqlite::SqliteRow,
    begin_write: begin_write,
    byte_order: "BINARY",
    referenced_digests: REFERENCED_DIGESTS,
}

/// Starts a transaction that writes, holding the write lock from its first statement (see the
/// module docs).
async fn begin_write(pool: &SqlitePool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    pool.begin_with("BEGIN IMMEDIATE").await
}

/// Every artifact digest still referenced. Step outputs and cache entries hold their digests in
/// JSON, and so does a step's checkpoint pointer (a run document); the artifacts table may hold
/// rows of runs deleted without foreign keys enforced, hence the EXISTS.
const REFERENCED_DIGESTS: &str = "SELECT digest FROM (
         SELECT json_extract(a.value, '$.digest') AS digest
           FROM steps AS s, json_each(s.outputs, '$.artifacts') AS a
         UNION
         SELECT json_extract(a.value, '$.digest')
           FROM cache_entries AS c, json_each(c.outputs, '$.artifacts') AS a
         UNION
         SELECT json_extract(d.body, '$.artifact.digest')
           FROM run_documents AS d
          WHERE d.kind = 'checkpoint'
         UNION
         SELECT ar.digest
           FROM artifacts AS ar
          WHERE EXISTS (SELECT 1 FROM runs AS r WHERE r.id = ar.run_id)
     )
     WHERE digest IS NOT NULL
     ORDER BY digest COLLATE BINARY";

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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use toucan_core::records::{DocumentKind, Phase, RunRecord};

    use super::SqliteStore;
    use crate::metadata::MetadataStore;

    // Ordering by a collation SQLite does not have (PostgreSQL's "C") fails the statement.
    #[tokio::test]
    async fn run_documents_list_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("store.db"))
            .await
            .unwrap();
        let run = RunRecord {
            id: "r1".into(),
            pipeline: "p".into(),
            phase: Phase::Running,
            params: json!({}),
            spec: json!({}),
            created_at: 1,
            finished_at: None,
            message: None,
        };
        store.create_run(&run).await.unwrap();
        for key in ["b", "a", "B"] {
            let body = json!({ "key": key });
            store
                .put_run_document("r1", DocumentKind::Metrics, key, &body, 2)
                .await
                .unwrap();
        }

        let listed = store
            .list_run_documents("r1", DocumentKind::Metrics)
            .await
            .unwrap();

        let keys: Vec<_> = listed.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(keys, ["B", "a", "b"]);
        assert_eq!(listed[1].1, json!({ "key": "a" }));
    }
}
