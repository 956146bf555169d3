//! The PostgreSQL metadata store, for the cluster: shared by the operator and its API server.
//!
//! The same operations as the SQLite store, over a connection pool. JSON columns are JSONB,
//! written and read through [`sqlx::types::Json`]. Migrations take sqlx's advisory lock, so
//! several replicas starting at once apply them exactly once. Writes that must land together
//! (`record`) share one transaction; `claim_cache_key` is one
//! `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING` statement, which PostgreSQL
//! evaluates against the latest committed claim, so of two concurrent claimers only one wins.
//! Orderings compare text in the "C" collation, the byte order SQLite uses, so both stores list
//! runs, steps and digests in the same order whatever the database's locale.

use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Row, SqlSafeStr};

use toucan_core::records::{
    ArtifactKind, ArtifactRecord, AttemptRecord, CacheEntry, DocumentKind, Millis, Phase,
    RunChanges, RunPhase, RunRecord, StepRecord,
};

use super::{MetadataStore, Result, StoreError};

/// Connections per store.
const MAX_CONNECTIONS: u32 = 8;
/// How long an operation waits for a free connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The metadata store in a PostgreSQL database. Cheap to clone: clones share one pool.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore> {
        let shown = redact_password(url);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                url: shown.clone(),
                source,
            })?;
        migrator()
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: shown, source })?;
        Ok(PostgresStore { pool })
    }

    /// Closes every connection of the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn write_tx(
        &self,
        operation: &'static str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(query_err(operation))
    }
}

/// The migrations under `migrations/postgres`, embedded at compile time.
///
/// Built by hand rather than with `sqlx::migrate!`, which needs sqlx's `macros` feature; the
/// version, description and checksum are the ones `migrate!` would record.
fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            "init".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            "run documents".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0002_run_documents.sql").into_sql_str(),
            false,
        ),
    ])
}

#[async_trait]
impl MetadataStore for PostgresStore {
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
        sqlx::query(r#"SELECT * FROM runs ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT $1"#)
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
        sqlx::query(r#"SELECT * FROM steps WHERE run_id = $1 ORDER BY name COLLATE "C""#)
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
        // Step outputs and cache entries hold their digests in JSON; the EXISTS keeps the
        // artifacts table honest should a run ever be deleted without its cascade.
        sqlx::query(
            r#"SELECT digest FROM (
                   SELECT a.value ->> 'digest' AS digest
                     FROM steps AS s, jsonb_each(s.outputs -> 'artifacts') AS a
                   UNION
                   SELECT a.value ->> 'digest'
                     FROM cache_entries AS c, jsonb_each(c.outputs -> 'artifacts') AS a
                   UNION
                   SELECT ar.digest
                     FROM artifacts AS ar
                    WHERE EXISTS (SELECT 1 FROM runs AS r WHERE r.id = ar.run_id)
               ) AS referenced
               WHERE digest IS NOT NULL
               ORDER BY digest COLLATE "C""#,
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
        // One statement: a conflicting insert locks the existing claim and evaluates the WHERE
        // on its latest version, so two claimers cannot both see the key free. RETURNING yields
        // a row only when this owner inserted, refreshed or took over the claim.
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

super::rows::shared_rows!(sqlx::Postgres, PgConnection, PgRow);

/// The URL with its password replaced, fit for error messages and logs.
fn redact_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn redacts_only_the_password() {
        let cases = [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u:p@ss@h/db?x=1", "postgres://u:***@h/db?x=1"),
            ("postgres://u@h/db", "postgres://u@h/db"),
            ("postgres://h/db", "postgres://h/db"),
            ("not a url", "not a url"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_password(url), shown, "{url}");
        }
    }
}
