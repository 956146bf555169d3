//! The PostgreSQL metadata store, for the cluster: shared by the operator and its API server.
//!
//! The same operations as the SQLite store, expanded here by [`super::shared`], over a
//! connection pool. JSON columns are JSONB, written and read through [`sqlx::types::Json`].
//! Migrations take sqlx's advisory lock, so several replicas starting at once apply them
//! exactly once. Writes that must land together (`record`) share one transaction;
//! `claim_cache_key` is one `INSERT ... ON CONFLICT DO UPDATE ... WHERE ... RETURNING`
//! statement, which PostgreSQL evaluates against the latest committed claim, so of two
//! concurrent claimers only one wins. Orderings compare text in the "C" collation, the byte
//! order SQLite uses, so both stores list runs, steps, documents and digests in the same order
//! whatever the database's locale.

use std::time::Duration;

use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::{Result, StoreError};

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
        Migration::new(
            3,
            "studies".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0003_studies.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "samples".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0004_samples.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "labels".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0005_labels.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "alerts".into(),
            MigrationType::Simple,
            include_str!("../../../migrations/postgres/0006_alerts.sql").into_sql_str(),
            false,
        ),
    ])
}

super::shared::impl_metadata_store! {
    store: PostgresStore,
    database: sqlx::Postgres,
    connection: sqlx::postgres::PgConnection,
    row: sqlx::postgres::PgRow,
    begin_write: begin_write,
    byte_order: r#""C""#,
    referenced_digests: REFERENCED_DIGESTS,
}

/// Starts a transaction that writes: a plain `BEGIN`, row locks are taken as statements run.
async fn begin_write(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin().await
}

/// Every artifact digest still referenced. Step outputs and cache entries hold their digests in
/// JSON, and so does a step's checkpoint pointer (a run document); the EXISTS keeps the
/// artifacts table honest should a run ever be deleted without its cascade.
const REFERENCED_DIGESTS: &str = r#"SELECT digest FROM (
         SELECT a.value ->> 'digest' AS digest
           FROM steps AS s, jsonb_each(s.outputs -> 'artifacts') AS a
         UNION
         SELECT a.value ->> 'digest'
           FROM cache_entries AS c, jsonb_each(c.outputs -> 'artifacts') AS a
         UNION
         SELECT d.body -> 'artifact' ->> 'digest'
           FROM run_documents AS d
          WHERE d.kind = 'checkpoint'
         UNION
         SELECT ar.digest
           FROM artifacts AS ar
          WHERE EXISTS (SELECT 1 FROM runs AS r WHERE r.id = ar.run_id)
     ) AS referenced
     WHERE digest IS NOT NULL
     ORDER BY digest COLLATE "C""#;

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
