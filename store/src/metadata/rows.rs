//! Writing and reading store rows: the same SQL and the same decoding for both backends,
//! expanded once per backend by [`shared_rows!`] because sqlx's connection and row types
//! differ while the statements and column types do not.

/// Expands the row writers and readers for one backend: `$db` the sqlx database type,
/// `$conn` its connection type, `$row` its row type. The invoking module must have the
/// store's record types, `Json`, `Row`, `StoreError` and `Result` in scope.
macro_rules! shared_rows {
    ($db:ty, $conn:ty, $row:ty) => {
        // === writes shared by single operations and `record` ===

        async fn write_run(conn: &mut $conn, run: &RunRecord) -> sqlx::Result<()> {
            sqlx::query(
                "INSERT INTO runs (id, pipeline, phase, params, spec, created_at, finished_at, message)
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

        async fn write_run_phase(conn: &mut $conn, phase: &RunPhase) -> sqlx::Result<()> {
            sqlx::query("UPDATE runs SET phase = $1, message = $2, finished_at = $3 WHERE id = $4")
                .bind(phase.phase.as_str())
                .bind(&phase.message)
                .bind(phase.finished_at)
                .bind(&phase.run_id)
                .execute(conn)
                .await?;
            Ok(())
        }

        /// Writes every row of `changes` on `conn`, inside the caller's transaction.
        async fn write_changes(conn: &mut $conn, changes: &RunChanges) -> Result<()> {
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


        async fn write_step(conn: &mut $conn, step: &StepRecord) -> sqlx::Result<()> {
            sqlx::query(
                "INSERT INTO steps (run_id, name, phase, cache_key, cache_components, cached, attempts,
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

        async fn write_attempt(conn: &mut $conn, attempt: &AttemptRecord) -> sqlx::Result<()> {
            sqlx::query(
                "INSERT INTO attempts (run_id, step, attempt, phase, exit_code, started_at, finished_at,
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

        async fn write_artifact(conn: &mut $conn, artifact: &ArtifactRecord) -> Result<()> {
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

        async fn write_cache_entry(conn: &mut $conn, entry: &CacheEntry) -> sqlx::Result<()> {
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

        // === run documents ===

        async fn write_document(
            conn: &mut $conn,
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
            .execute(conn)
            .await
            .map_err(query_err("storing a run document"))?;
            Ok(())
        }

        async fn read_document(
            conn: &mut $conn,
            run_id: &str,
            kind: DocumentKind,
            key: &str,
        ) -> Result<Option<serde_json::Value>> {
            let row = sqlx::query(
                "SELECT body FROM run_documents WHERE run_id = $1 AND kind = $2 AND key = $3",
            )
            .bind(run_id)
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(conn)
            .await
            .map_err(query_err("reading a run document"))?;
            row.map(|r| column::<Json<serde_json::Value>>(&r, "body").map(|j| j.0))
                .transpose()
        }

        async fn read_documents(
            conn: &mut $conn,
            run_id: &str,
            kind: DocumentKind,
        ) -> Result<Vec<(String, serde_json::Value)>> {
            sqlx::query(
                r#"SELECT key, body FROM run_documents WHERE run_id = $1 AND kind = $2
                   ORDER BY key COLLATE "C""#,
            )
            .bind(run_id)
            .bind(kind.as_str())
            .fetch_all(conn)
            .await
            .map_err(query_err("listing run documents"))?
            .iter()
            .map(|r| Ok((column(r, "key")?, column::<Json<serde_json::Value>>(r, "body")?.0)))
            .collect()
        }

        // === rows ===

        fn run_from_row(row: &$row) -> Result<RunRecord> {
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

        fn step_from_row(row: &$row) -> Result<StepRecord> {
            Ok(StepRecord {
                run_id: column(row, "run_id")?,
                name: column(row, "name")?,
                phase: phase_column(row, "phase")?,
                cache_key: column(row, "cache_key")?,
                cache_components: column::<Option<Json<serde_json::Value>>>(row, "cache_components")?
                    .map(|json| json.0),
                cached: column(row, "cached")?,
                attempts: u32_column(row, "attempts")?,
                started_at: column(row, "started_at")?,
                finished_at: column(row, "finished_at")?,
                outputs: column::<Json<_>>(row, "outputs")?.0,
                message: column(row, "message")?,
            })
        }

        fn attempt_from_row(row: &$row) -> Result<AttemptRecord> {
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

        fn cache_entry_from_row(row: &$row) -> Result<CacheEntry> {
            Ok(CacheEntry {
                key: column(row, "key")?,
                outputs: column::<Json<_>>(row, "outputs")?.0,
                run_id: column(row, "run_id")?,
                step: column(row, "step")?,
                created_at: column(row, "created_at")?,
            })
        }

        fn column<'r, T>(row: &'r $row, name: &str) -> Result<T>
        where
            T: sqlx::Decode<'r, $db> + sqlx::Type<$db>,
        {
            row.try_get(name).map_err(|e| StoreError::Corrupt {
                what: "row",
                detail: format!("column {name}: {e}"),
            })
        }

        fn phase_column(row: &$row, name: &str) -> Result<Phase> {
            let text: String = column(row, name)?;
            Phase::parse(&text).ok_or_else(|| StoreError::Corrupt {
                what: "phase",
                detail: format!("column {name}: unknown phase {text:?}"),
            })
        }

        fn u32_column(row: &$row, name: &str) -> Result<u32> {
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

    };
}

pub(super) use shared_rows;
