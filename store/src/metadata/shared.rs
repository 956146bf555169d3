//! The metadata store's operations, written once for both backends.
//!
//! Both stores run the same statements: PostgreSQL and SQLite accept the same `$1` parameters,
//! `ON CONFLICT ... DO UPDATE` and `RETURNING`, and every column binds and decodes as the same
//! Rust type (JSON through `sqlx::types::Json`: TEXT on SQLite, JSONB on PostgreSQL).
//! [`impl_metadata_store!`] expands the whole [`MetadataStore`](super::MetadataStore)
//! implementation and its row writers and readers once per backend; the backend module keeps
//! only what really differs, and hands it to the macro by name:
//!
//! - opening or connecting, migrations and closing (inherent methods of the store);
//! - `begin_write`, how a transaction that writes starts (`BEGIN IMMEDIATE` on SQLite, to
//!   wait for the single writer's lock up front);
//! - `byte_order`, the collation that compares text byte by byte, used by every `ORDER BY` on
//!   text so both stores list in the same order (`BINARY` on SQLite, `"C"` on PostgreSQL,
//!   whatever the database's locale);
//! - `referenced_digests`, the one statement that reads inside JSON columns, whose functions
//!   differ (`json_each` on SQLite's TEXT, `jsonb_each` on PostgreSQL's JSONB).
//!
//! Why a macro rather than `impl<DB: sqlx::Database> MetadataStore for SqlStore<DB>`: the
//! generic implementation compiles, but only under where-clauses that restate, per Rust type,
//! what both databases already do. sqlx implements `Encode` for `Option<T>` per database, not
//! generically, so it would take a bound for each type bound to a statement (`&str`,
//! `Option<&str>`, `i64`, `Option<i64>`, `Option<i32>`, `bool`, `Json<&Value>`,
//! `Option<Json<&Value>>`, `Json<&StepOutputs>`), one for each type read from a row (`String`,
//! `i64`, `i32`, `bool`, `Json<Value>`, `Json<StepOutputs>`), and the higher-ranked
//! `Executor` and `ColumnIndex` bounds: some eighteen bounds, repeated on the trait impl and on
//! the row helpers (where-clauses are not implied), and extended by every new column type.
//! The macro needs none: each expansion is checked against the concrete database, so an
//! error names the statement and the backend. Its cost is that rustfmt does not format the
//! macro's body; keep it within the line width by hand.

/// Expands the [`MetadataStore`](super::MetadataStore) implementation for one backend, inside a
/// private module `queries` of the invoking module. See the module docs for the hooks:
/// `store` (a struct with a `pool` field), `begin_write`, `byte_order` and
/// `referenced_digests` name items of the invoking module; `database`, `connection` and `row`
/// are sqlx's types for the backend.
macro_rules! impl_metadata_store {
    (
        store: $store:ident,
        database: $database:ty,
        connection: $connection:ty,
        row: $row_type:ty,
        begin_write: $begin_write:ident,
        byte_order: $byte_order:literal,
        referenced_digests: $referenced_digests:ident $(,)?
    ) => {
        mod queries {
            use async_trait::async_trait;
            use sqlx::Row;
            use sqlx::types::Json;
            use toucan_core::records::{
                AlertRecord, ArtifactKind, ArtifactRecord, AttemptRecord, CacheEntry,
                DocumentKind, Millis, Phase, RunChanges, RunPhase, RunRecord, SampleRecord,
                StepRecord, StudyRecord, TrialRecord,
            };
            use toucan_core::monitoring::alerts::{AlertKind, AlertPhase};
            use toucan_core::monitoring::evaluation::{
                Label, LabelCounts, LabelRecord, LabelledSample,
            };
            use toucan_core::serving::PayloadSample;

            use super::{$begin_write, $referenced_digests, $store};
            use $crate::metadata::{Expired, MetadataStore, Result, StoreError};

            #[async_trait]
            impl MetadataStore for $store {
                async fn create_run(&self, run: &RunRecord) -> Result<()> {
                    const OP: &str = "creating a run";
                    sqlx::query(
                        "INSERT INTO runs
                             (id, pipeline, phase, params, spec, created_at, finished_at, message)
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
                    sqlx::query(
                        "UPDATE runs SET phase = $1, message = $2, finished_at = $3 WHERE id = $4",
                    )
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
                    sqlx::query(concat!(
                        "SELECT * FROM runs ORDER BY created_at DESC, id COLLATE ",
                        $byte_order,
                        " DESC LIMIT $1",
                    ))
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
                    sqlx::query(concat!(
                        "SELECT * FROM steps WHERE run_id = $1 ORDER BY name COLLATE ",
                        $byte_order,
                    ))
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

                async fn list_attempts(
                    &self,
                    run_id: &str,
                    step: &str,
                ) -> Result<Vec<AttemptRecord>> {
                    sqlx::query(
                        "SELECT * FROM attempts WHERE run_id = $1 AND step = $2 ORDER BY attempt",
                    )
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
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
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
                    sqlx::query($referenced_digests)
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
                    // One statement, so two claimers cannot both see the key free: SQLite takes
                    // the write lock before reading the existing claim; PostgreSQL locks the
                    // conflicting claim and evaluates the WHERE on its latest version.
                    // RETURNING yields a row only when this owner inserted, refreshed or took
                    // over the claim.
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
                    sqlx::query(
                        "INSERT INTO run_documents (run_id, kind, key, body, updated_at)
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (run_id, kind, key) DO UPDATE SET
                             body = excluded.body,
                             updated_at = excluded.updated_at",
                    )
                    .bind(run_id)
                    .bind(kind.as_str())
                    .bind(key)
                    .bind(Json(body))
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(query_err("storing a run document"))?;
                    Ok(())
                }

                async fn get_run_document(
                    &self,
                    run_id: &str,
                    kind: DocumentKind,
                    key: &str,
                ) -> Result<Option<serde_json::Value>> {
                    sqlx::query(
                        "SELECT body FROM run_documents
                          WHERE run_id = $1 AND kind = $2 AND key = $3",
                    )
                    .bind(run_id)
                    .bind(kind.as_str())
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("reading a run document"))?
                    .map(|row| column::<Json<serde_json::Value>>(&row, "body").map(|json| json.0))
                    .transpose()
                }

                async fn list_run_documents(
                    &self,
                    run_id: &str,
                    kind: DocumentKind,
                ) -> Result<Vec<(String, serde_json::Value)>> {
                    sqlx::query(concat!(
                        "SELECT key, body FROM run_documents WHERE run_id = $1 AND kind = $2
                         ORDER BY key COLLATE ",
                        $byte_order,
                    ))
                    .bind(run_id)
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("listing run documents"))?
                    .iter()
                    .map(|row| {
                        let body = column::<Json<serde_json::Value>>(row, "body")?;
                        Ok((column(row, "key")?, body.0))
                    })
                    .collect()
                }

                async fn create_study(&self, study: &StudyRecord) -> Result<()> {
                    sqlx::query(
                        "INSERT INTO studies
                             (id, name, phase, spec, created_at, finished_at, message)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (id) DO NOTHING",
                    )
                    .bind(&study.id)
                    .bind(&study.name)
                    .bind(study.phase.as_str())
                    .bind(Json(&study.spec))
                    .bind(study.created_at)
                    .bind(study.finished_at)
                    .bind(&study.message)
                    .execute(&self.pool)
                    .await
                    .map_err(query_err("recording a study"))?;
                    Ok(())
                }

                async fn get_study(&self, id: &str) -> Result<Option<StudyRecord>> {
                    sqlx::query("SELECT * FROM studies WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(query_err("reading a study"))?
                        .map(|row| study_from_row(&row))
                        .transpose()
                }

                async fn list_studies(
                    &self,
                    name: Option<&str>,
                    limit: u32,
                ) -> Result<Vec<StudyRecord>> {
                    sqlx::query(concat!(
                        "SELECT * FROM studies WHERE (CAST($1 AS TEXT) IS NULL OR name = $1)
                         ORDER BY created_at DESC, id COLLATE ",
                        $byte_order,
                        " DESC LIMIT $2",
                    ))
                    .bind(name)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("listing studies"))?
                    .iter()
                    .map(study_from_row)
                    .collect()
                }

                async fn set_study_phase(
                    &self,
                    id: &str,
                    phase: Phase,
                    message: Option<&str>,
                    finished_at: Option<Millis>,
                ) -> Result<()> {
                    sqlx::query(
                        "UPDATE studies SET phase = $1, message = $2, finished_at = $3
                         WHERE id = $4",
                    )
                    .bind(phase.as_str())
                    .bind(message)
                    .bind(finished_at)
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(query_err("setting a study's phase"))?;
                    Ok(())
                }

                async fn put_trials(&self, trials: &[TrialRecord]) -> Result<()> {
                    if trials.is_empty() {
                        return Ok(());
                    }
                    const OP: &str = "recording trials";
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
                    for record in trials {
                        let t = &record.trial;
                        sqlx::query(
                            "INSERT INTO study_trials
                                 (study_id, idx, name, state, run_id, body, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7)
                             ON CONFLICT (study_id, idx) DO UPDATE SET
                                 name = excluded.name,
                                 state = excluded.state,
                                 run_id = excluded.run_id,
                                 body = excluded.body,
                                 updated_at = excluded.updated_at",
                        )
                        .bind(&record.study_id)
                        .bind(i64::from(t.index))
                        .bind(&t.name)
                        .bind(t.state.as_str())
                        .bind(&record.run_id)
                        .bind(Json(t))
                        .bind(record.updated_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err(OP))?;
                    }
                    tx.commit().await.map_err(query_err(OP))
                }

                async fn list_trials(&self, study_id: &str) -> Result<Vec<TrialRecord>> {
                    sqlx::query("SELECT * FROM study_trials WHERE study_id = $1 ORDER BY idx")
                        .bind(study_id)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(query_err("listing trials"))?
                        .iter()
                        .map(trial_from_row)
                        .collect()
                }

                async fn put_samples(
                    &self,
                    endpoint: &str,
                    samples: &[PayloadSample],
                    now: Millis,
                ) -> Result<u64> {
                    if samples.is_empty() {
                        return Ok(0);
                    }
                    const OP: &str = "recording payload samples";
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
                    let mut added = 0;
                    for sample in samples {
                        added += sqlx::query(
                            "INSERT INTO prediction_samples
                                 (endpoint, request_id, version, body, stored_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (endpoint, request_id) DO NOTHING",
                        )
                        .bind(endpoint)
                        .bind(&sample.request_id)
                        .bind(&sample.version)
                        .bind(Json(sample))
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err(OP))?
                        .rows_affected();
                    }
                    tx.commit().await.map_err(query_err(OP))?;
                    Ok(added)
                }

                async fn list_samples(
                    &self,
                    endpoint: &str,
                    since: Millis,
                    limit: u32,
                ) -> Result<Vec<SampleRecord>> {
                    sqlx::query(concat!(
                        "SELECT * FROM prediction_samples
                         WHERE endpoint = $1 AND stored_at >= $2
                         ORDER BY stored_at, request_id COLLATE ",
                        $byte_order,
                        " LIMIT $3",
                    ))
                    .bind(endpoint)
                    .bind(since)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("listing payload samples"))?
                    .iter()
                    .map(sample_from_row)
                    .collect()
                }

                async fn put_labels(
                    &self,
                    endpoint: &str,
                    labels: &[Label],
                    now: Millis,
                ) -> Result<LabelCounts> {
                    let mut counts = LabelCounts::default();
                    if labels.is_empty() {
                        return Ok(counts);
                    }
                    const OP: &str = "recording labels";
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
                    for label in labels {
                        let sampled: Option<i64> = sqlx::query_scalar(
                            "SELECT stored_at FROM prediction_samples
                             WHERE endpoint = $1 AND request_id = $2",
                        )
                        .bind(endpoint)
                        .bind(&label.request_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query_err(OP))?;
                        if sampled.is_none() {
                            counts.unknown += 1;
                            continue;
                        }
                        let stored: Option<String> = sqlx::query_scalar(
                            "SELECT label FROM prediction_labels
                             WHERE endpoint = $1 AND request_id = $2",
                        )
                        .bind(endpoint)
                        .bind(&label.request_id)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(query_err(OP))?;
                        match stored {
                            Some(value) if value == label.label => {
                                counts.unchanged += 1;
                                continue;
                            }
                            Some(_) => counts.updated += 1,
                            None => counts.added += 1,
                        }
                        sqlx::query(
                            "INSERT INTO prediction_labels
                                 (endpoint, request_id, label, labelled_at, received_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (endpoint, request_id) DO UPDATE SET
                                 label = excluded.label,
                                 labelled_at = excluded.labelled_at,
                                 received_at = excluded.received_at",
                        )
                        .bind(endpoint)
                        .bind(&label.request_id)
                        .bind(&label.label)
                        .bind(label.labelled_at)
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err(OP))?;
                    }
                    tx.commit().await.map_err(query_err(OP))?;
                    Ok(counts)
                }

                async fn list_labelled_samples(
                    &self,
                    endpoint: &str,
                    stored: std::ops::Range<Millis>,
                    limit: u32,
                ) -> Result<Vec<LabelledSample>> {
                    // The newest `limit`, then oldest first: a window near now is never the
                    // part a limit leaves out.
                    sqlx::query(concat!(
                        "SELECT endpoint, body, stored_at, label, labelled_at, label_received_at
                         FROM (
                             SELECT s.endpoint, s.request_id, s.body, s.stored_at, l.label,
                                    l.labelled_at, l.received_at AS label_received_at
                             FROM prediction_samples s
                             LEFT JOIN prediction_labels l
                                 ON l.endpoint = s.endpoint AND l.request_id = s.request_id
                             WHERE s.endpoint = $1 AND s.stored_at >= $2 AND s.stored_at < $3
                             ORDER BY s.stored_at DESC, s.request_id COLLATE ",
                        $byte_order,
                        " DESC
                             LIMIT $4
                         ) AS newest
                         ORDER BY stored_at, request_id COLLATE ",
                        $byte_order,
                    ))
                    .bind(endpoint)
                    .bind(stored.start)
                    .bind(stored.end)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("listing labelled samples"))?
                    .iter()
                    .map(labelled_sample_from_row)
                    .collect()
                }

                async fn expire_monitoring(
                    &self,
                    endpoint: &str,
                    samples_before: Millis,
                    alerts_before: Millis,
                ) -> Result<Expired> {
                    const OP: &str = "expiring monitoring data";
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
                    // Labels first: they are found through their samples.
                    let deletes = [
                        (
                            "DELETE FROM prediction_labels
                             WHERE endpoint = $1 AND request_id IN (
                                 SELECT request_id FROM prediction_samples
                                 WHERE endpoint = $1 AND stored_at < $2)",
                            samples_before,
                        ),
                        (
                            "DELETE FROM prediction_samples WHERE endpoint = $1 AND stored_at < $2",
                            samples_before,
                        ),
                        (
                            "DELETE FROM endpoint_alerts
                             WHERE endpoint = $1 AND ended_at IS NOT NULL AND ended_at < $2",
                            alerts_before,
                        ),
                    ];
                    let mut deleted = [0; 3];
                    for (count, (sql, before)) in deleted.iter_mut().zip(deletes) {
                        *count = sqlx::query(sql)
                            .bind(endpoint)
                            .bind(before)
                            .execute(&mut *tx)
                            .await
                            .map_err(query_err(OP))?
                            .rows_affected();
                    }
                    let [labels, samples, alerts] = deleted;
                    tx.commit().await.map_err(query_err(OP))?;
                    Ok(Expired {
                        samples,
                        labels,
                        alerts,
                    })
                }

                async fn put_alerts(&self, alerts: &[AlertRecord]) -> Result<()> {
                    if alerts.is_empty() {
                        return Ok(());
                    }
                    const OP: &str = "recording alerts";
                    let mut tx = $begin_write(&self.pool).await.map_err(query_err(OP))?;
                    for alert in alerts {
                        sqlx::query(
                            "INSERT INTO endpoint_alerts
                                 (endpoint, key, active_since, kind, phase, summary,
                                  window_start, window_end, value, threshold, firing_since,
                                  last_breach, ended_at, action, run, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13,
                                     $14, $15, $16)
                             ON CONFLICT (endpoint, key, active_since) DO UPDATE SET
                                 kind = excluded.kind,
                                 phase = excluded.phase,
                                 summary = excluded.summary,
                                 window_start = excluded.window_start,
                                 window_end = excluded.window_end,
                                 value = excluded.value,
                                 threshold = excluded.threshold,
                                 firing_since = excluded.firing_since,
                                 last_breach = excluded.last_breach,
                                 ended_at = excluded.ended_at,
                                 action = COALESCE(excluded.action, endpoint_alerts.action),
                                 run = COALESCE(excluded.run, endpoint_alerts.run),
                                 updated_at = excluded.updated_at",
                        )
                        .bind(&alert.endpoint)
                        .bind(&alert.key)
                        .bind(alert.active_since)
                        .bind(alert.kind.as_str())
                        .bind(alert.phase.as_str())
                        .bind(&alert.summary)
                        .bind(alert.window_start)
                        .bind(alert.window_end)
                        .bind(alert.value)
                        .bind(alert.threshold)
                        .bind(alert.firing_since)
                        .bind(alert.last_breach)
                        .bind(alert.ended_at)
                        .bind(&alert.action)
                        .bind(&alert.run)
                        .bind(alert.updated_at)
                        .execute(&mut *tx)
                        .await
                        .map_err(query_err(OP))?;
                    }
                    tx.commit().await.map_err(query_err(OP))
                }

                async fn list_alerts(
                    &self,
                    endpoint: Option<&str>,
                    open_only: bool,
                    limit: u32,
                ) -> Result<Vec<AlertRecord>> {
                    // The open phases are the ones `AlertPhase::is_open` names.
                    sqlx::query(concat!(
                        "SELECT * FROM endpoint_alerts
                         WHERE (CAST($1 AS TEXT) IS NULL OR endpoint = $1)
                           AND (NOT CAST($2 AS BOOLEAN) OR phase IN ($3, $4))
                         ORDER BY updated_at DESC, key COLLATE ",
                        $byte_order,
                        ", endpoint COLLATE ",
                        $byte_order,
                        ", active_since DESC LIMIT $5",
                    ))
                    .bind(endpoint)
                    .bind(open_only)
                    .bind(AlertPhase::Pending.as_str())
                    .bind(AlertPhase::Firing.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(query_err("listing alerts"))?
                    .iter()
                    .map(alert_from_row)
                    .collect()
                }
            }

            // === writes shared by single operations and `record` ===

            async fn write_run(conn: &mut $connection, run: &RunRecord) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO runs
                         (id, pipeline, phase, params, spec, created_at, finished_at, message)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(&run.id)
                .bind(&run.pipeline)
                .bind(run.phase.as_str())
                .bind(Json(&run.params))
                .bind(Json(&run.spec))
                .bind(run.created_at)
                .bind(run.finished_at)
                .bind(&run.message)
                .execute(conn)
                .await?;
                Ok(())
            }

            async fn write_run_phase(conn: &mut $connection, phase: &RunPhase) -> sqlx::Result<()> {
                sqlx::query(
                    "UPDATE runs SET phase = $1, message = $2, finished_at = $3 WHERE id = $4",
                )
                .bind(phase.phase.as_str())
                .bind(&phase.message)
                .bind(phase.finished_at)
                .bind(&phase.run_id)
                .execute(conn)
                .await?;
                Ok(())
            }

            /// Writes every row of `changes` on `conn`, inside the caller's transaction.
            async fn write_changes(conn: &mut $connection, changes: &RunChanges) -> Result<()> {
                const OP: &str = "recording a run's changes";
                if let Some(run) = &changes.created {
                    write_run(conn, run).await.map_err(query_err(OP))?;
                }
                for step in &changes.steps {
                    write_step(conn, step).await.map_err(query_err(OP))?;
                }
                for attempt in &changes.attempts {
                    write_attempt(conn, attempt).await.map_err(query_err(OP))?;
                }
                for artifact in &changes.artifacts {
                    write_artifact(conn, artifact).await?;
                }
                for entry in &changes.cache_entries {
                    write_cache_entry(conn, entry).await.map_err(query_err(OP))?;
                }
                if let Some(phase) = &changes.phase {
                    write_run_phase(conn, phase).await.map_err(query_err(OP))?;
                }
                Ok(())
            }


            async fn write_step(conn: &mut $connection, step: &StepRecord) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO steps
                         (run_id, name, phase, cache_key, cache_components, cached, attempts,
                          started_at, finished_at, outputs, message)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     ON CONFLICT (run_id, name) DO UPDATE SET
                         phase = excluded.phase,
                         cache_key = excluded.cache_key,
                         cache_components = excluded.cache_components,
                         cached = excluded.cached,
                         attempts = excluded.attempts,
                         started_at = excluded.started_at,
                         finished_at = excluded.finished_at,
                         outputs = excluded.outputs,
                         message = excluded.message",
                )
                .bind(&step.run_id)
                .bind(&step.name)
                .bind(step.phase.as_str())
                .bind(&step.cache_key)
                .bind(step.cache_components.as_ref().map(Json))
                .bind(step.cached)
                .bind(i64::from(step.attempts))
                .bind(step.started_at)
                .bind(step.finished_at)
                .bind(Json(&step.outputs))
                .bind(&step.message)
                .execute(conn)
                .await?;
                Ok(())
            }

            async fn write_attempt(
                conn: &mut $connection,
                attempt: &AttemptRecord,
            ) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO attempts
                         (run_id, step, attempt, phase, exit_code, started_at, finished_at,
                          log_ref, message)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (run_id, step, attempt) DO UPDATE SET
                         phase = excluded.phase,
                         exit_code = excluded.exit_code,
                         started_at = excluded.started_at,
                         finished_at = excluded.finished_at,
                         log_ref = excluded.log_ref,
                         message = excluded.message",
                )
                .bind(&attempt.run_id)
                .bind(&attempt.step)
                .bind(i64::from(attempt.attempt))
                .bind(attempt.phase.as_str())
                .bind(attempt.exit_code)
                .bind(attempt.started_at)
                .bind(attempt.finished_at)
                .bind(&attempt.log_ref)
                .bind(&attempt.message)
                .execute(conn)
                .await?;
                Ok(())
            }

            async fn write_artifact(
                conn: &mut $connection,
                artifact: &ArtifactRecord,
            ) -> Result<()> {
                const OP: &str = "recording an artifact";
                let size = i64::try_from(artifact.size).map_err(|e| StoreError::Query {
                    operation: OP,
                    source: sqlx::Error::Encode(Box::new(e)),
                })?;
                sqlx::query(
                    "INSERT INTO artifacts (run_id, step, output, digest, size, kind, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (run_id, step, output) DO UPDATE SET
                         digest = excluded.digest,
                         size = excluded.size,
                         kind = excluded.kind,
                         created_at = excluded.created_at",
                )
                .bind(&artifact.run_id)
                .bind(&artifact.step)
                .bind(&artifact.output)
                .bind(&artifact.digest)
                .bind(size)
                .bind(kind_str(artifact.kind))
                .bind(artifact.created_at)
                .execute(conn)
                .await
                .map_err(query_err(OP))?;
                Ok(())
            }

            async fn write_cache_entry(
                conn: &mut $connection,
                entry: &CacheEntry,
            ) -> sqlx::Result<()> {
                sqlx::query(
                    "INSERT INTO cache_entries (key, outputs, run_id, step, created_at)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (key) DO UPDATE SET
                         outputs = excluded.outputs,
                         run_id = excluded.run_id,
                         step = excluded.step,
                         created_at = excluded.created_at",
                )
                .bind(&entry.key)
                .bind(Json(&entry.outputs))
                .bind(&entry.run_id)
                .bind(&entry.step)
                .bind(entry.created_at)
                .execute(conn)
                .await?;
                Ok(())
            }

            // === rows ===

            fn run_from_row(row: &$row_type) -> Result<RunRecord> {
                Ok(RunRecord {
                    id: column(row, "id")?,
                    pipeline: column(row, "pipeline")?,
                    phase: phase_column(row, "phase")?,
                    params: column::<Json<serde_json::Value>>(row, "params")?.0,
                    spec: column::<Json<serde_json::Value>>(row, "spec")?.0,
                    created_at: column(row, "created_at")?,
                    finished_at: column(row, "finished_at")?,
                    message: column(row, "message")?,
                })
            }

            fn step_from_row(row: &$row_type) -> Result<StepRecord> {
                Ok(StepRecord {
                    run_id: column(row, "run_id")?,
                    name: column(row, "name")?,
                    phase: phase_column(row, "phase")?,
                    cache_key: column(row, "cache_key")?,
                    cache_components: column::<Option<Json<serde_json::Value>>>(
                        row,
                        "cache_components",
                    )?
                    .map(|json| json.0),
                    cached: column(row, "cached")?,
                    attempts: u32_column(row, "attempts")?,
                    started_at: column(row, "started_at")?,
                    finished_at: column(row, "finished_at")?,
                    outputs: column::<Json<_>>(row, "outputs")?.0,
                    message: column(row, "message")?,
                })
            }

            fn attempt_from_row(row: &$row_type) -> Result<AttemptRecord> {
                Ok(AttemptRecord {
                    run_id: column(row, "run_id")?,
                    step: column(row, "step")?,
                    attempt: u32_column(row, "attempt")?,
                    phase: phase_column(row, "phase")?,
                    exit_code: column(row, "exit_code")?,
                    started_at: column(row, "started_at")?,
                    finished_at: column(row, "finished_at")?,
                    log_ref: column(row, "log_ref")?,
                    message: column(row, "message")?,
                })
            }

            fn cache_entry_from_row(row: &$row_type) -> Result<CacheEntry> {
                Ok(CacheEntry {
                    key: column(row, "key")?,
                    outputs: column::<Json<_>>(row, "outputs")?.0,
                    run_id: column(row, "run_id")?,
                    step: column(row, "step")?,
                    created_at: column(row, "created_at")?,
                })
            }

            fn study_from_row(row: &$row_type) -> Result<StudyRecord> {
                Ok(StudyRecord {
                    id: column(row, "id")?,
                    name: column(row, "name")?,
                    phase: phase_column(row, "phase")?,
                    spec: column::<Json<serde_json::Value>>(row, "spec")?.0,
                    created_at: column(row, "created_at")?,
                    finished_at: column(row, "finished_at")?,
                    message: column(row, "message")?,
                })
            }

            fn trial_from_row(row: &$row_type) -> Result<TrialRecord> {
                Ok(TrialRecord {
                    study_id: column(row, "study_id")?,
                    trial: column::<Json<_>>(row, "body")?.0,
                    run_id: column(row, "run_id")?,
                    updated_at: column(row, "updated_at")?,
                })
            }

            fn sample_from_row(row: &$row_type) -> Result<SampleRecord> {
                Ok(SampleRecord {
                    endpoint: column(row, "endpoint")?,
                    sample: column::<Json<_>>(row, "body")?.0,
                    stored_at: column(row, "stored_at")?,
                })
            }

            fn labelled_sample_from_row(row: &$row_type) -> Result<LabelledSample> {
                let sample = sample_from_row(row)?;
                let label = match column::<Option<String>>(row, "label")? {
                    None => None,
                    Some(label) => Some(LabelRecord {
                        endpoint: sample.endpoint.clone(),
                        request_id: sample.sample.request_id.clone(),
                        label,
                        labelled_at: column(row, "labelled_at")?,
                        received_at: column(row, "label_received_at")?,
                    }),
                };
                Ok(LabelledSample { sample, label })
            }

            fn alert_from_row(row: &$row_type) -> Result<AlertRecord> {
                Ok(AlertRecord {
                    endpoint: column(row, "endpoint")?,
                    key: column(row, "key")?,
                    kind: alert_kind_column(row, "kind")?,
                    phase: alert_phase_column(row, "phase")?,
                    summary: column(row, "summary")?,
                    window_start: column(row, "window_start")?,
                    window_end: column(row, "window_end")?,
                    value: column(row, "value")?,
                    threshold: column(row, "threshold")?,
                    active_since: column(row, "active_since")?,
                    firing_since: column(row, "firing_since")?,
                    last_breach: column(row, "last_breach")?,
                    ended_at: column(row, "ended_at")?,
                    action: column(row, "action")?,
                    run: column(row, "run")?,
                    updated_at: column(row, "updated_at")?,
                })
            }

            fn column<'r, T>(row: &'r $row_type, name: &str) -> Result<T>
            where
                T: sqlx::Decode<'r, $database> + sqlx::Type<$database>,
            {
                row.try_get(name).map_err(|e| StoreError::Corrupt {
                    what: "row",
                    detail: format!("column {name}: {e}"),
                })
            }

            fn phase_column(row: &$row_type, name: &str) -> Result<Phase> {
                let text: String = column(row, name)?;
                Phase::parse(&text).ok_or_else(|| StoreError::Corrupt {
                    what: "phase",
                    detail: format!("column {name}: unknown phase {text:?}"),
                })
            }

            fn alert_kind_column(row: &$row_type, name: &str) -> Result<AlertKind> {
                let text: String = column(row, name)?;
                // `from_label` reads any unknown label as External: only a name it gives back
                // unchanged is one of ours.
                let kind = AlertKind::from_label(&text);
                if kind.as_str() != text {
                    return Err(StoreError::Corrupt {
                        what: "alert kind",
                        detail: format!("column {name}: unknown alert kind {text:?}"),
                    });
                }
                Ok(kind)
            }

            fn alert_phase_column(row: &$row_type, name: &str) -> Result<AlertPhase> {
                let text: String = column(row, name)?;
                AlertPhase::parse(&text).ok_or_else(|| StoreError::Corrupt {
                    what: "alert phase",
                    detail: format!("column {name}: unknown alert phase {text:?}"),
                })
            }

            fn u32_column(row: &$row_type, name: &str) -> Result<u32> {
                let value: i64 = column(row, name)?;
                u32::try_from(value).map_err(|_| StoreError::Corrupt {
                    what: "count",
                    detail: format!("column {name}: {value} is out of range"),
                })
            }

            fn kind_str(kind: ArtifactKind) -> &'static str {
                match kind {
                    ArtifactKind::File => "file",
                    ArtifactKind::Dir => "dir",
                }
            }

            fn query_err(operation: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
                move |source| StoreError::Query { operation, source }
            }
        }
    };
}

pub(super) use impl_metadata_store;
