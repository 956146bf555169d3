//! The metadata store's behaviour, written once and run against both backends.
//!
//! Every function in the "suite" section takes an `Arc<dyn MetadataStore>`; `store_suite!`
//! turns each into one test on a fresh SQLite file (`sqlite::NAME`) and one on a fresh
//! PostgreSQL database (`postgres::NAME`). The PostgreSQL tests connect to the server at
//! `TOUCAN_TEST_POSTGRES_URL` (a superuser URL: each test creates its own database and drops
//! it afterwards, so tests run in parallel and repeatedly). Without that variable they say
//! why and pass, unless `TOUCAN_REQUIRE_POSTGRES=1`, where they fail (`toucan-test-harness`'s
//! `postgres` module). To run them:
//!
//! ```text
//! tests/postgres/up /tmp/toucan-pg
//! TOUCAN_TEST_POSTGRES_URL=$(cat /tmp/toucan-pg/url) cargo test -p toucan-store --test store_suite
//! tests/postgres/down /tmp/toucan-pg
//! ```
//!
//! The last sections hold what only one backend has: SQLite files shared by several handles
//! and reopened, PostgreSQL databases connected to again, and `open`'s URL dispatch.

// The suite's functions are not `#[test]`s themselves, so clippy's test exemptions miss them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use toucan_core::monitoring::alerts::{AlertKind, AlertPhase};
use toucan_core::monitoring::evaluation::{Label, LabelCounts, LabelledSample};
use toucan_core::records::{
    AlertRecord, ArtifactKind, ArtifactRecord, ArtifactRef, AttemptRecord, CacheEntry,
    DocumentKind, Millis, Phase, RunChanges, RunPhase, RunRecord, StepOutputs, StepRecord,
    StudyRecord, TrialRecord,
};
use toucan_core::serving::{InputStats, PayloadSample, SampledInstance};
use toucan_core::tuning::{MetricPoint, ParamValue, Trial, TrialState};
use toucan_store::metadata::{self as store, Expired, MetadataStore, SqliteStore, StoreError};
use toucan_test_harness::postgres::{Database, admin_url, database_url};

macro_rules! store_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("store.db"))
                        .await
                        .unwrap();
                    super::$test(std::sync::Arc::new(store)).await;
                }
            )*
        }

        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let Some(db) = super::test_database(stringify!($test)) else {
                        return;
                    };
                    let store = super::connect(&db).await;
                    super::$test(std::sync::Arc::new(store)).await;
                    db.drop_database().unwrap();
                }
            )*
        }
    };
}

store_suite!(
    runs_round_trip_and_change_phase,
    runs_list_newest_first,
    run_ids_are_unique,
    steps_upsert_get_and_list_by_name,
    steps_need_their_run,
    attempts_upsert_and_list_by_number,
    record_writes_everything,
    record_is_all_or_nothing,
    record_creates_fans_out_and_ends_a_run_at_once,
    cache_entries_get_delete_and_expire,
    referenced_digests_cover_steps_cache_entries_and_artifacts,
    claims_are_exclusive_reentrant_and_go_stale,
    concurrent_claimers_only_one_wins,
    studies_round_trip_list_by_name_and_change_phase,
    trials_upsert_by_index_all_or_nothing,
    samples_are_stored_once_per_request_and_listed_by_time,
    labels_are_stored_once_corrected_and_joined_to_their_samples,
    the_last_label_of_a_request_in_a_batch_wins,
    samples_list_within_a_window_and_expire_with_their_labels_and_ended_alerts,
    alert_episodes_upsert_and_keep_what_was_done,
    alerts_list_newest_first_by_endpoint_and_openness,
);

// === records ===

const T0: i64 = 1_700_000_000_000;

fn digest(seed: char) -> String {
    format!("sha256:{}", seed.to_string().repeat(64))
}

fn run(id: &str, created_at: i64) -> RunRecord {
    RunRecord {
        id: id.to_string(),
        pipeline: "fashion".to_string(),
        phase: Phase::Running,
        params: json!({"epochs": 5, "min_accuracy": 0.88, "tags": ["a", "b"]}),
        spec: json!({"steps": [{"name": "ingest", "command": ["toucan-worker", "ingest"]}]}),
        created_at,
        finished_at: None,
        message: None,
    }
}

fn step(run_id: &str, name: &str, phase: Phase) -> StepRecord {
    StepRecord {
        run_id: run_id.to_string(),
        name: name.to_string(),
        phase,
        cache_key: None,
        cache_components: None,
        cached: false,
        attempts: 0,
        started_at: None,
        finished_at: None,
        outputs: StepOutputs::default(),
        message: None,
    }
}

fn attempt(run_id: &str, step: &str, number: u32, phase: Phase) -> AttemptRecord {
    AttemptRecord {
        run_id: run_id.to_string(),
        step: step.to_string(),
        attempt: number,
        phase,
        exit_code: None,
        started_at: T0 + i64::from(number),
        finished_at: None,
        log_ref: None,
        message: None,
    }
}

fn outputs(artifacts: &[(&str, &str, ArtifactKind)]) -> StepOutputs {
    StepOutputs {
        params: BTreeMap::from([("accuracy".to_string(), "0.91".to_string())]),
        artifacts: artifacts
            .iter()
            .map(|(name, digest, kind)| {
                let reference = ArtifactRef {
                    digest: digest.to_string(),
                    size: 1234,
                    kind: *kind,
                };
                (name.to_string(), reference)
            })
            .collect(),
    }
}

fn artifact(run_id: &str, step: &str, output: &str, digest: &str) -> ArtifactRecord {
    ArtifactRecord {
        digest: digest.to_string(),
        size: 1234,
        kind: ArtifactKind::File,
        run_id: run_id.to_string(),
        step: step.to_string(),
        output: output.to_string(),
        created_at: T0,
    }
}

fn cache_entry(key: &str, run_id: &str, step: &str, outputs: StepOutputs) -> CacheEntry {
    CacheEntry {
        key: key.to_string(),
        outputs,
        run_id: run_id.to_string(),
        step: step.to_string(),
        created_at: T0,
    }
}

/// A finished step that ran once and succeeded, with its outputs, artifacts and cache entry.
fn succeeded(run_id: &str, name: &str, key: &str, produced: &[(&str, &str)]) -> RunChanges {
    let refs: Vec<_> = produced
        .iter()
        .map(|(output, digest)| (*output, *digest, ArtifactKind::File))
        .collect();
    let outputs = outputs(&refs);
    let mut record = step(run_id, name, Phase::Succeeded);
    record.cache_key = Some(key.to_string());
    record.cache_components = Some(json!({"version": 1, "image": "toucan/worker:0.1"}));
    record.attempts = 1;
    record.started_at = Some(T0);
    record.finished_at = Some(T0 + 10);
    record.outputs = outputs.clone();
    let mut finished = attempt(run_id, name, 1, Phase::Succeeded);
    finished.exit_code = Some(0);
    finished.finished_at = Some(T0 + 10);
    RunChanges {
        steps: vec![record],
        attempts: vec![finished],
        artifacts: produced
            .iter()
            .map(|(output, digest)| artifact(run_id, name, output, digest))
            .collect(),
        cache_entries: vec![cache_entry(key, run_id, name, outputs)],
        ..RunChanges::default()
    }
}

// === suite ===

async fn runs_round_trip_and_change_phase(store: Arc<dyn MetadataStore>) {
    let created = run("01HRUN", T0);
    store.create_run(&created).await.unwrap();
    assert_eq!(
        store.get_run("01HRUN").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(store.get_run("01HOTHER").await.unwrap(), None);

    store
        .set_run_phase(
            "01HRUN",
            Phase::Failed,
            Some("step train failed"),
            Some(T0 + 5),
        )
        .await
        .unwrap();
    let failed = store.get_run("01HRUN").await.unwrap().unwrap();
    assert_eq!(failed.phase, Phase::Failed);
    assert_eq!(failed.message.as_deref(), Some("step train failed"));
    assert_eq!(failed.finished_at, Some(T0 + 5));
    assert_eq!(failed.params, created.params);
    assert_eq!(failed.spec, created.spec);

    store
        .set_run_phase("01HRUN", Phase::Running, None, None)
        .await
        .unwrap();
    let resumed = store.get_run("01HRUN").await.unwrap().unwrap();
    assert_eq!(resumed, created);
}

fn study(id: &str, name: &str, created_at: i64) -> StudyRecord {
    StudyRecord {
        id: id.to_string(),
        name: name.to_string(),
        phase: Phase::Running,
        spec: json!({"objective": {"metric": "accuracy", "goal": "maximize"}}),
        created_at,
        finished_at: None,
        message: None,
    }
}

fn trial_record(study_id: &str, index: u32, state: TrialState) -> TrialRecord {
    TrialRecord {
        study_id: study_id.to_string(),
        trial: Trial {
            index,
            name: format!("{index}-abcdef"),
            params: BTreeMap::from([
                (
                    "lr".to_string(),
                    ParamValue::Float(0.1 / f64::from(index + 1)),
                ),
                ("optimizer".to_string(), ParamValue::Text("adam".into())),
            ]),
            state,
            budget: None,
            bracket: None,
            series: vec![MetricPoint {
                step: 1,
                value: 0.5,
            }],
            objective: (state == TrialState::Succeeded).then_some(0.25 + f64::from(index)),
            rungs: Vec::new(),
        },
        run_id: Some(format!("run-{index}")),
        updated_at: T0 + i64::from(index),
    }
}

async fn studies_round_trip_list_by_name_and_change_phase(store: Arc<dyn MetadataStore>) {
    let first = study("s1", "fmnist-lr", T0);
    store.create_study(&first).await.unwrap();
    // Recording it again (a shell that crashed before it knew) keeps the first record.
    let mut again = first.clone();
    again.spec = json!({"other": true});
    store.create_study(&again).await.unwrap();
    assert_eq!(store.get_study("s1").await.unwrap(), Some(first.clone()));
    assert_eq!(store.get_study("s9").await.unwrap(), None);
    store
        .create_study(&study("s2", "grid", T0 + 1))
        .await
        .unwrap();
    store
        .create_study(&study("s3", "fmnist-lr", T0 + 2))
        .await
        .unwrap();
    let ids = |studies: Vec<StudyRecord>| studies.into_iter().map(|s| s.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_studies(None, 10).await.unwrap()),
        ["s3", "s2", "s1"]
    );
    assert_eq!(
        ids(store.list_studies(Some("fmnist-lr"), 10).await.unwrap()),
        ["s3", "s1"]
    );
    assert_eq!(
        ids(store.list_studies(Some("fmnist-lr"), 1).await.unwrap()),
        ["s3"]
    );
    assert!(
        store
            .list_studies(Some("none"), 10)
            .await
            .unwrap()
            .is_empty()
    );

    store
        .set_study_phase("s1", Phase::Succeeded, Some("target reached"), Some(T0 + 9))
        .await
        .unwrap();
    let done = store.get_study("s1").await.unwrap().unwrap();
    assert_eq!(done.phase, Phase::Succeeded);
    assert_eq!(done.message.as_deref(), Some("target reached"));
    assert_eq!(done.finished_at, Some(T0 + 9));
    assert_eq!(done.spec, first.spec);
}

async fn trials_upsert_by_index_all_or_nothing(store: Arc<dyn MetadataStore>) {
    store
        .create_study(&study("s1", "fmnist-lr", T0))
        .await
        .unwrap();
    store.create_study(&study("s2", "other", T0)).await.unwrap();
    let trials: Vec<TrialRecord> = (0..3)
        .map(|i| trial_record("s1", i, TrialState::Running))
        .collect();
    store.put_trials(&trials).await.unwrap();
    store
        .put_trials(&[trial_record("s2", 0, TrialState::Pending)])
        .await
        .unwrap();
    store.put_trials(&[]).await.unwrap();
    assert_eq!(store.list_trials("s1").await.unwrap(), trials);

    // A trial recorded again replaces its row: the ledger changes trial by trial.
    let mut done = trial_record("s1", 1, TrialState::Succeeded);
    done.trial.series.push(MetricPoint {
        step: 2,
        value: 0.75,
    });
    store.put_trials(std::slice::from_ref(&done)).await.unwrap();
    let listed = store.list_trials("s1").await.unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[1], done);
    assert_eq!(listed[1].trial.objective, Some(1.25));

    // A batch with a trial of an unknown study writes nothing.
    let err = store
        .put_trials(&[
            trial_record("s1", 3, TrialState::Pending),
            trial_record("nope", 0, TrialState::Pending),
        ])
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "StoreQuery", "{err}");
    assert_eq!(store.list_trials("s1").await.unwrap().len(), 3);
    assert_eq!(store.list_trials("s2").await.unwrap().len(), 1);
}

async fn runs_list_newest_first(store: Arc<dyn MetadataStore>) {
    for (id, created_at) in [("a", T0), ("b", T0 + 300), ("c", T0 + 200), ("d", T0 + 300)] {
        store.create_run(&run(id, created_at)).await.unwrap();
    }
    let ids = |runs: Vec<RunRecord>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    // Equal times fall back to the id, newest ULID first.
    assert_eq!(
        ids(store.list_runs(10).await.unwrap()),
        ["d", "b", "c", "a"]
    );
    assert_eq!(ids(store.list_runs(2).await.unwrap()), ["d", "b"]);
    assert!(store.list_runs(0).await.unwrap().is_empty());
}

async fn run_ids_are_unique(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("01HRUN", T0)).await.unwrap();
    let mut again = run("01HRUN", T0 + 1);
    again.pipeline = "other".to_string();
    let err = store.create_run(&again).await.unwrap_err();
    assert_eq!(err.reason(), "StoreQuery", "{err}");
    assert_eq!(
        store.get_run("01HRUN").await.unwrap().unwrap().pipeline,
        "fashion"
    );
}

async fn steps_upsert_get_and_list_by_name(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("r1", T0)).await.unwrap();
    store.create_run(&run("r2", T0)).await.unwrap();
    for name in ["train", "ingest", "train[1]", "Zeta", "train[0]", "export"] {
        store
            .upsert_step(&step("r1", name, Phase::Pending))
            .await
            .unwrap();
    }
    store
        .upsert_step(&step("r2", "other", Phase::Pending))
        .await
        .unwrap();

    let mut running = step("r1", "train", Phase::Running);
    running.cache_key = Some("ab".repeat(32));
    running.cache_components = Some(json!({"version": 1, "params": {"epochs": "5"}}));
    running.attempts = 2;
    running.started_at = Some(T0 + 1);
    store.upsert_step(&running).await.unwrap();

    let mut done = running.clone();
    done.phase = Phase::Succeeded;
    done.cached = true;
    done.finished_at = Some(T0 + 2);
    done.outputs = outputs(&[("model", &digest('a'), ArtifactKind::Dir)]);
    done.message = Some("cache hit".to_string());
    store.upsert_step(&done).await.unwrap();

    assert_eq!(
        store.get_step("r1", "train").await.unwrap(),
        Some(done.clone())
    );
    assert_eq!(store.get_step("r1", "missing").await.unwrap(), None);
    assert_eq!(store.get_step("r2", "train").await.unwrap(), None);

    let steps = store.list_steps("r1").await.unwrap();
    let names: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
    // Byte order: upper case first, a fan-out's children right after their parent.
    assert_eq!(
        names,
        ["Zeta", "export", "ingest", "train", "train[0]", "train[1]"]
    );
    assert_eq!(steps[3], done);
    assert_eq!(store.list_steps("r2").await.unwrap().len(), 1);
    assert!(store.list_steps("nope").await.unwrap().is_empty());
}

async fn steps_need_their_run(store: Arc<dyn MetadataStore>) {
    let err = store
        .upsert_step(&step("no-such-run", "train", Phase::Pending))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "StoreQuery", "{err}");
    assert!(store.list_steps("no-such-run").await.unwrap().is_empty());
}

async fn attempts_upsert_and_list_by_number(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("r", T0)).await.unwrap();
    store
        .upsert_step(&step("r", "train", Phase::Running))
        .await
        .unwrap();
    store
        .upsert_step(&step("r", "eval", Phase::Running))
        .await
        .unwrap();

    store
        .upsert_attempt(&attempt("r", "train", 2, Phase::Running))
        .await
        .unwrap();
    store
        .upsert_attempt(&attempt("r", "train", 1, Phase::Running))
        .await
        .unwrap();
    store
        .upsert_attempt(&attempt("r", "eval", 1, Phase::Running))
        .await
        .unwrap();
    let mut failed = attempt("r", "train", 1, Phase::Failed);
    failed.exit_code = Some(137);
    failed.finished_at = Some(T0 + 60);
    failed.log_ref = Some("/runs/r/train/1.log".to_string());
    failed.message = Some("OOMKilled".to_string());
    store.upsert_attempt(&failed).await.unwrap();

    let attempts = store.list_attempts("r", "train").await.unwrap();
    assert_eq!(attempts, [failed, attempt("r", "train", 2, Phase::Running)]);
    assert_eq!(store.list_attempts("r", "eval").await.unwrap().len(), 1);
    assert!(store.list_attempts("r", "export").await.unwrap().is_empty());
}

async fn record_writes_everything(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("r", T0)).await.unwrap();
    store
        .upsert_step(&step("r", "train", Phase::Running))
        .await
        .unwrap();
    store
        .upsert_attempt(&attempt("r", "train", 1, Phase::Running))
        .await
        .unwrap();

    let (model, metrics) = (digest('1'), digest('2'));
    let completion = succeeded(
        "r",
        "train",
        "key-train",
        &[("model", &model), ("metrics", &metrics)],
    );
    store.record(&completion).await.unwrap();
    // Recording the same completion again (a retried report) changes nothing.
    store.record(&completion).await.unwrap();

    assert_eq!(
        store.get_step("r", "train").await.unwrap(),
        Some(completion.steps[0].clone())
    );
    assert_eq!(
        store.list_attempts("r", "train").await.unwrap(),
        completion.attempts
    );
    assert_eq!(
        store.get_cache_entry("key-train").await.unwrap(),
        completion.cache_entries.first().cloned()
    );
    let mut expected = vec![model, metrics];
    expected.sort();
    assert_eq!(store.referenced_digests().await.unwrap(), expected);
    // A step's stored checkpoint is referenced by its pointer until the run goes.
    let checkpoint = digest('c');
    let pointer = json!({
        "artifact": {"digest": checkpoint, "size": 10, "kind": "dir"},
        "checkpoint": "ckpt-0000000002",
    });
    store
        .put_run_document("r", DocumentKind::Checkpoint, "train", &pointer, T0)
        .await
        .unwrap();
    expected.push(checkpoint);
    expected.sort();
    assert_eq!(store.referenced_digests().await.unwrap(), expected);

    // A cache hit: no attempt, no cache entry, the step marked cached.
    let mut hit = step("r", "eval", Phase::Succeeded);
    hit.cached = true;
    hit.outputs = completion.steps[0].outputs.clone();
    let hit = RunChanges {
        steps: vec![hit],
        ..RunChanges::default()
    };
    store.record(&hit).await.unwrap();
    assert_eq!(
        store.get_step("r", "eval").await.unwrap().as_ref(),
        hit.steps.first()
    );
    assert!(store.list_attempts("r", "eval").await.unwrap().is_empty());
}

async fn record_is_all_or_nothing(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("r", T0)).await.unwrap();
    let before = step("r", "train", Phase::Running);
    store.upsert_step(&before).await.unwrap();
    let running = attempt("r", "train", 1, Phase::Running);
    store.upsert_attempt(&running).await.unwrap();

    // The step, its attempt and a first artifact are written before the second artifact,
    // which names a step that does not exist, fails.
    let model = digest('m');
    let mut broken = succeeded("r", "train", "key-train", &[("model", &model)]);
    broken
        .artifacts
        .push(artifact("r", "ghost", "model", &digest('g')));
    let err = store.record(&broken).await.unwrap_err();
    assert_eq!(err.reason(), "StoreQuery", "{err}");

    assert_eq!(store.get_step("r", "train").await.unwrap(), Some(before));
    assert_eq!(store.list_attempts("r", "train").await.unwrap(), [running]);
    assert_eq!(store.get_cache_entry("key-train").await.unwrap(), None);
    assert!(store.referenced_digests().await.unwrap().is_empty());

    // Nothing was left half-open: the corrected completion goes through.
    broken.artifacts.pop();
    store.record(&broken).await.unwrap();
    assert_eq!(
        store.get_step("r", "train").await.unwrap().unwrap().phase,
        Phase::Succeeded
    );
    assert_eq!(store.referenced_digests().await.unwrap(), [model]);
}

async fn record_creates_fans_out_and_ends_a_run_at_once(store: Arc<dyn MetadataStore>) {
    // A run's first changes create it; a fan-out's children arrive as one batch.
    let children: Vec<StepRecord> = (0..50)
        .map(|i| step("r", &format!("shard[{i}]"), Phase::Pending))
        .collect();
    let mut first = RunChanges {
        created: Some(run("r", T0)),
        steps: children.clone(),
        ..RunChanges::default()
    };
    first.steps.push(step("r", "shard", Phase::Running));
    store.record(&first).await.unwrap();
    assert_eq!(store.list_steps("r").await.unwrap().len(), 51);

    // Recording the run again leaves it as it is; the phase change ends it.
    let end = RunChanges {
        created: Some(run("r", T0 + 1)),
        phase: Some(RunPhase {
            run_id: "r".into(),
            phase: Phase::Failed,
            message: Some("failed: shard[3]".into()),
            finished_at: Some(T0 + 99),
        }),
        ..RunChanges::default()
    };
    store.record(&end).await.unwrap();
    let recorded = store.get_run("r").await.unwrap().unwrap();
    assert_eq!(recorded.created_at, T0);
    assert_eq!(recorded.phase, Phase::Failed);
    assert_eq!(recorded.message.as_deref(), Some("failed: shard[3]"));
    assert_eq!(recorded.finished_at, Some(T0 + 99));

    // A batch with one bad row writes none of it.
    let mut broken = RunChanges {
        steps: vec![step("r", "late", Phase::Succeeded)],
        ..RunChanges::default()
    };
    broken.steps.push(step("missing-run", "x", Phase::Running));
    assert!(store.record(&broken).await.is_err());
    assert_eq!(store.get_step("r", "late").await.unwrap(), None);
}

async fn cache_entries_get_delete_and_expire(store: Arc<dyn MetadataStore>) {
    store.create_run(&run("r", T0)).await.unwrap();
    for (i, created_at) in [(1, T0 + 100), (2, T0 + 200), (3, T0 + 300)] {
        let mut completion = succeeded("r", &format!("s{i}"), &format!("k{i}"), &[]);
        for entry in &mut completion.cache_entries {
            entry.created_at = created_at;
        }
        store.record(&completion).await.unwrap();
    }
    assert_eq!(
        store
            .get_cache_entry("k2")
            .await
            .unwrap()
            .unwrap()
            .created_at,
        T0 + 200
    );
    assert_eq!(store.get_cache_entry("k9").await.unwrap(), None);

    // Strictly before the cutoff.
    assert_eq!(
        store.delete_cache_entries_before(T0 + 200).await.unwrap(),
        1
    );
    assert_eq!(store.get_cache_entry("k1").await.unwrap(), None);
    assert!(store.get_cache_entry("k2").await.unwrap().is_some());
    assert_eq!(
        store.delete_cache_entries_before(T0 + 200).await.unwrap(),
        0
    );

    store.delete_cache_entry("k2").await.unwrap();
    store.delete_cache_entry("k2").await.unwrap();
    assert_eq!(store.get_cache_entry("k2").await.unwrap(), None);
    assert!(store.get_cache_entry("k3").await.unwrap().is_some());

    // A newer result for the same key replaces the entry.
    let newer = succeeded("r", "s4", "k3", &[("model", &digest('n'))]);
    store.record(&newer).await.unwrap();
    assert_eq!(
        store.get_cache_entry("k3").await.unwrap().as_ref(),
        newer.cache_entries.first()
    );

    assert_eq!(
        store.delete_cache_entries_before(i64::MAX).await.unwrap(),
        1
    );
    assert_eq!(store.get_cache_entry("k3").await.unwrap(), None);
    // The steps that produced the entries are untouched.
    assert_eq!(store.list_steps("r").await.unwrap().len(), 4);
}

async fn referenced_digests_cover_steps_cache_entries_and_artifacts(store: Arc<dyn MetadataStore>) {
    assert!(store.referenced_digests().await.unwrap().is_empty());
    store.create_run(&run("r", T0)).await.unwrap();
    let [only_step, only_entry, only_artifact, shared, dir] = ['a', 'b', 'c', 'd', 'e'].map(digest);

    // Step outputs alone (a step recorded without `record`), a directory among them.
    let mut recorded = step("r", "ingest", Phase::Succeeded);
    recorded.outputs = outputs(&[
        ("raw", &only_step, ArtifactKind::File),
        ("dataset", &dir, ArtifactKind::Dir),
        ("copy", &shared, ArtifactKind::File),
    ]);
    store.upsert_step(&recorded).await.unwrap();

    // A cache entry alone, and an artifact row alone.
    let entry_outputs = outputs(&[("model", &only_entry, ArtifactKind::File)]);
    let mut train = step("r", "train", Phase::Succeeded);
    train.outputs = outputs(&[("copy", &shared, ArtifactKind::File)]);
    store
        .record(&RunChanges {
            steps: vec![train],
            artifacts: vec![
                artifact("r", "train", "log", &only_artifact),
                artifact("r", "train", "copy", &shared),
            ],
            cache_entries: vec![cache_entry("k", "r", "train", entry_outputs)],
            ..RunChanges::default()
        })
        .await
        .unwrap();

    let mut all = vec![
        only_step.clone(),
        only_entry.clone(),
        only_artifact.clone(),
        shared.clone(),
        dir.clone(),
    ];
    all.sort();
    assert_eq!(store.referenced_digests().await.unwrap(), all);

    // Once its cache entry is gone, nothing references `only_entry` any more.
    store.delete_cache_entry("k").await.unwrap();
    all.retain(|d| *d != only_entry);
    assert_eq!(store.referenced_digests().await.unwrap(), all);
}

async fn claims_are_exclusive_reentrant_and_go_stale(store: Arc<dyn MetadataStore>) {
    let k = "key";
    assert!(store.claim_cache_key(k, "a", 1000, 0).await.unwrap());
    assert!(!store.claim_cache_key(k, "b", 1001, 500).await.unwrap());
    // The holder claims again, refreshing the claim to 1002.
    assert!(store.claim_cache_key(k, "a", 1002, 500).await.unwrap());
    // Not stale: claimed at 1002, stale only before 1002.
    assert!(!store.claim_cache_key(k, "b", 1003, 1002).await.unwrap());
    // Stale: another owner takes it over.
    assert!(store.claim_cache_key(k, "b", 5000, 1003).await.unwrap());
    assert!(!store.claim_cache_key(k, "a", 5001, 1003).await.unwrap());

    // Other keys are independent.
    assert!(store.claim_cache_key("other", "a", 5002, 0).await.unwrap());

    // Only the holder's release frees the key.
    store.release_cache_key(k, "a").await.unwrap();
    assert!(!store.claim_cache_key(k, "c", 5003, 0).await.unwrap());
    store.release_cache_key(k, "b").await.unwrap();
    assert!(store.claim_cache_key(k, "c", 5004, 0).await.unwrap());
    store.release_cache_key("never-claimed", "c").await.unwrap();
}

async fn concurrent_claimers_only_one_wins(store: Arc<dyn MetadataStore>) {
    const CLAIMERS: usize = 8;
    for round in 0..20 {
        let key = format!("key-{round}");
        let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
        let tasks: Vec<_> = (0..CLAIMERS)
            .map(|i| {
                let (store, key, barrier) = (store.clone(), key.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let owner = format!("owner-{i}");
                    let won = store.claim_cache_key(&key, &owner, T0, 0).await.unwrap();
                    won.then_some(owner)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            winners.extend(task.await.unwrap());
        }
        assert_eq!(winners.len(), 1, "{key}: winners {winners:?}");
        // The winner really holds it: a loser cannot take it, the winner can claim again.
        assert!(
            !store
                .claim_cache_key(&key, "late", T0 + 1, 0)
                .await
                .unwrap()
        );
        assert!(
            store
                .claim_cache_key(&key, &winners[0], T0 + 1, 0)
                .await
                .unwrap()
        );
    }
}

// === SQLite only ===

#[tokio::test]
async fn sqlite_open_creates_the_file_and_reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/deeper/store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    store.create_run(&run("r", T0)).await.unwrap();
    store
        .record(&succeeded("r", "train", "k", &[("model", &digest('m'))]))
        .await
        .unwrap();
    store.close().await;
    assert!(path.is_file());

    // Reopening applies no migration twice and finds everything.
    for _ in 0..2 {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.get_run("r").await.unwrap().unwrap().id, "r");
        assert_eq!(
            store.get_step("r", "train").await.unwrap().unwrap().phase,
            Phase::Succeeded
        );
        assert!(store.get_cache_entry("k").await.unwrap().is_some());
        store.close().await;
    }

    let mut conn = raw_sqlite(&path).await;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    let migrations: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let expected: Vec<(i64, bool)> = (1..=migration_files("sqlite")).map(|v| (v, true)).collect();
    assert_eq!(migrations, expected);
}

/// How many migrations the store ships for `backend`: every one must be applied.
fn migration_files(backend: &str) -> i64 {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    std::fs::read_dir(dir).unwrap().count() as i64
}

async fn raw_sqlite(path: &Path) -> sqlx::SqliteConnection {
    use sqlx::ConnectOptions;
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_two_handles_on_one_file_write_concurrently() {
    const STEPS: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let first = Arc::new(SqliteStore::open(&path).await.unwrap());
    let second = Arc::new(SqliteStore::open(&path).await.unwrap());
    first.create_run(&run("r", T0)).await.unwrap();

    let tasks: Vec<_> = (0..STEPS)
        .map(|i| {
            let store = if i % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tokio::spawn(async move {
                let name = format!("step-{i:02}");
                store.upsert_step(&step("r", &name, Phase::Running)).await?;
                let d = format!("sha256:{i:064}");
                let completion = succeeded("r", &name, &format!("k{i}"), &[("out", &d)]);
                store.record(&completion).await?;
                store.claim_cache_key("shared", &name, T0, 0).await?;
                store.referenced_digests().await?;
                Ok::<_, StoreError>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }

    for store in [&first, &second] {
        let steps = store.list_steps("r").await.unwrap();
        assert_eq!(steps.len(), STEPS);
        assert!(steps.iter().all(|s| s.phase == Phase::Succeeded));
        assert_eq!(store.referenced_digests().await.unwrap().len(), STEPS);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_handles_opening_a_new_file_at_once_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    // The race is between setting up the file and applying migrations: try it a few times.
    for round in 0..5 {
        let path = dir.path().join(format!("store-{round}.db"));
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move { SqliteStore::open(&path).await })
            })
            .collect();
        let mut stores = Vec::new();
        for open in opens {
            stores.push(open.await.unwrap().unwrap());
        }
        stores[0].create_run(&run("r", T0)).await.unwrap();
        for store in &stores {
            assert!(store.get_run("r").await.unwrap().is_some());
        }
        let mut conn = raw_sqlite(&path).await;
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        // Every migration applied exactly once, whoever got there first.
        assert_eq!(applied, migration_files("sqlite"));
    }
}

#[tokio::test]
async fn open_dispatches_on_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/store.db");
    let plain = path.to_str().unwrap().to_string();

    let first = store::open(&plain).await.unwrap();
    first.create_run(&run("r", T0)).await.unwrap();
    for url in [format!("sqlite:{plain}"), format!("sqlite://{plain}")] {
        let same = store::open(&url).await.unwrap();
        assert!(same.get_run("r").await.unwrap().is_some(), "{url}");
    }

    for url in ["mysql://user@localhost/db", "s3://bucket/store"] {
        let err = store::open(url).await.unwrap_err();
        assert!(
            matches!(err, StoreError::UnsupportedUrl { .. }),
            "{url}: {err}"
        );
        assert_eq!(err.reason(), "StoreUrl");
    }
}

#[tokio::test]
async fn sqlite_an_alert_row_of_unknown_kind_or_phase_is_an_error_naming_its_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mut conn = raw_sqlite(&path).await;
    for (column, kind, phase) in CORRUPT_ALERT_ROWS {
        sqlx::query("DELETE FROM endpoint_alerts")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(RAW_ALERT_ROW)
            .bind(kind)
            .bind(phase)
            .execute(&mut conn)
            .await
            .unwrap();
        let err = store.list_alerts(None, false, 10).await.unwrap_err();
        assert_unknown_column(&err, column);
    }
}

// === PostgreSQL only ===

#[tokio::test]
async fn postgres_an_alert_row_of_unknown_kind_or_phase_is_an_error_naming_its_column() {
    let Some(db) = test_database(
        "postgres_an_alert_row_of_unknown_kind_or_phase_is_an_error_naming_its_column",
    ) else {
        return;
    };
    let store = connect(&db).await;
    let mut conn = raw(&db).await;
    for (column, kind, phase) in CORRUPT_ALERT_ROWS {
        sqlx::query("DELETE FROM endpoint_alerts")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query(RAW_ALERT_ROW)
            .bind(kind)
            .bind(phase)
            .execute(&mut conn)
            .await
            .unwrap();
        let err = store.list_alerts(None, false, 10).await.unwrap_err();
        assert_unknown_column(&err, column);
    }
    drop(conn);
    store.close().await;
    db.drop_database().unwrap();
}

#[tokio::test]
async fn postgres_open_reconnect_and_concurrent_connects() {
    let Some(db) = test_database("postgres_open_reconnect_and_concurrent_connects") else {
        return;
    };
    // Replicas starting at once: migrations are applied once, none fails.
    let connects: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for connect in connects {
        stores.push(connect.await.unwrap().unwrap());
    }
    stores[0].create_run(&run("r", T0)).await.unwrap();
    drop(stores);

    let again = store::open(&db.url).await.unwrap();
    assert!(again.get_run("r").await.unwrap().is_some());
    drop(again);

    let mut conn = raw(&db).await;
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(applied, migration_files("postgres"));
    drop(conn);
    db.drop_database().unwrap();
}

#[tokio::test]
async fn postgres_connect_errors_hide_the_password() {
    let Some(admin) = admin_url().unwrap() else {
        return;
    };
    let missing = database_url(&admin, "toucan_test_no_such_database");
    let err = store::open(&missing).await.unwrap_err();
    assert_eq!(err.reason(), "StoreOpen", "{err}");
    let password = password_of(&admin);
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        assert!(!err.to_string().contains(&password), "{err}");
    }
}

// === PostgreSQL harness ===

fn password_of(url: &str) -> Option<String> {
    let authority = url.split("://").nth(1)?.split('/').next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    Some(userinfo.split_once(':')?.1.to_string())
}

/// A database of its own for one test, on the server at `TOUCAN_TEST_POSTGRES_URL`; `None`
/// (after the harness said why) without one.
fn test_database(test: &str) -> Option<Database> {
    let admin = admin_url().unwrap()?;
    Some(Database::create(&admin, test).unwrap())
}

async fn connect(db: &Database) -> store::PostgresStore {
    store::PostgresStore::connect(&db.url).await.unwrap()
}

async fn raw(db: &Database) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&db.url).await.unwrap()
}

fn sample(request_id: &str, version: &str, label: i64) -> PayloadSample {
    PayloadSample {
        request_id: request_id.to_string(),
        model: "fashion".into(),
        version: version.to_string(),
        received_at: "2026-12-05T18:00:00Z".into(),
        protocol: "v1".into(),
        latency_ms: 1.5,
        instances: vec![SampledInstance {
            stats: InputStats {
                width: 28,
                height: 28,
                channels: 1,
                brightness: 0.25,
                contrast: 0.5,
                channel_means: vec![0.25],
                sharpness: 0.01,
            },
            input: None,
            embedding: None,
            label,
            class: format!("class-{label}"),
            probabilities: vec![0.1, 0.9],
        }],
        attributes: BTreeMap::from([("x-source".to_string(), "app".to_string())]),
    }
}

async fn samples_are_stored_once_per_request_and_listed_by_time(store: Arc<dyn MetadataStore>) {
    let first = [sample("r1", "v1", 1), sample("r2", "v2", 0)];
    assert_eq!(
        store.put_samples("ns/fashion", &first, T0).await.unwrap(),
        2
    );
    // The same batch again (a retried shipment), and one new sample: only the new one counts,
    // and the stored copies are not replaced.
    let mut changed = sample("r1", "v1", 7);
    changed.latency_ms = 99.0;
    let again = [changed, sample("r3", "v1", 1)];
    assert_eq!(
        store
            .put_samples("ns/fashion", &again, T0 + 10)
            .await
            .unwrap(),
        1
    );
    // Another endpoint's request ids are its own.
    assert_eq!(
        store
            .put_samples("ns/other", &first[..1], T0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.put_samples("ns/fashion", &[], T0).await.unwrap(), 0);

    let all = store.list_samples("ns/fashion", 0, 100).await.unwrap();
    let seen: Vec<(&str, i64)> = all
        .iter()
        .map(|r| (r.sample.request_id.as_str(), r.stored_at))
        .collect();
    assert_eq!(seen, [("r1", T0), ("r2", T0), ("r3", T0 + 10)]);
    assert_eq!(all[0].sample, first[0]);
    assert_eq!(all[0].endpoint, "ns/fashion");
    let later = store.list_samples("ns/fashion", T0 + 1, 100).await.unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].sample.request_id, "r3");
    assert_eq!(
        store.list_samples("ns/fashion", 0, 1).await.unwrap().len(),
        1
    );
    assert!(
        store
            .list_samples("ns/none", 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

fn label(request_id: &str, value: &str, labelled_at: i64) -> Label {
    Label {
        request_id: request_id.to_string(),
        label: value.to_string(),
        labelled_at,
    }
}

async fn labels_are_stored_once_corrected_and_joined_to_their_samples(
    store: Arc<dyn MetadataStore>,
) {
    let samples = [
        sample("r1", "v1", 1),
        sample("r2", "v1", 0),
        sample("r3", "v2", 1),
    ];
    store.put_samples("ns/fashion", &samples, T0).await.unwrap();
    store
        .put_samples("ns/other", &[sample("r9", "v1", 0)], T0)
        .await
        .unwrap();

    let first = [
        label("r1", "class-1", T0 + 5),
        label("r2", "class-1", T0 + 6),
        // No such sample here (r9 is another endpoint's): not stored.
        label("r9", "class-0", T0 + 7),
        label("nope", "class-0", T0 + 7),
    ];
    assert_eq!(
        store
            .put_labels("ns/fashion", &first, T0 + 100)
            .await
            .unwrap(),
        LabelCounts {
            added: 2,
            updated: 0,
            unchanged: 0,
            unknown: 2,
        }
    );
    // Sent again: unchanged. r2 corrected: updated. r3 new: added.
    let again = [
        label("r1", "class-1", T0 + 50),
        label("r2", "class-0", T0 + 60),
        label("r3", "class-1", T0 + 70),
    ];
    assert_eq!(
        store
            .put_labels("ns/fashion", &again, T0 + 200)
            .await
            .unwrap(),
        LabelCounts {
            added: 1,
            updated: 1,
            unchanged: 1,
            unknown: 0,
        }
    );
    assert_eq!(
        store.put_labels("ns/fashion", &[], T0).await.unwrap(),
        LabelCounts::default()
    );

    let joined = store
        .list_labelled_samples("ns/fashion", 0..Millis::MAX, 100)
        .await
        .unwrap();
    type Seen<'a> = (&'a str, Option<(&'a str, i64, i64)>);
    let seen: Vec<Seen<'_>> = joined
        .iter()
        .map(|s| {
            (
                s.sample.sample.request_id.as_str(),
                s.label
                    .as_ref()
                    .map(|l| (l.label.as_str(), l.labelled_at, l.received_at)),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            // Unchanged: the first copy's times are kept.
            ("r1", Some(("class-1", T0 + 5, T0 + 100))),
            ("r2", Some(("class-0", T0 + 60, T0 + 200))),
            ("r3", Some(("class-1", T0 + 70, T0 + 200))),
        ]
    );
    assert_eq!(joined[0].sample.sample, samples[0]);
    assert_eq!(joined[0].label.as_ref().unwrap().endpoint, "ns/fashion");
    // The other endpoint's sample has no label: labels are per endpoint.
    let other = store
        .list_labelled_samples("ns/other", 0..Millis::MAX, 100)
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].label, None);
    // Since and limit as for samples.
    assert!(
        store
            .list_labelled_samples("ns/fashion", T0 + 1..Millis::MAX, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .list_labelled_samples("ns/fashion", 0..Millis::MAX, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    // A limit keeps the newest, oldest first.
    for (i, id) in ["n1", "n2", "n3"].into_iter().enumerate() {
        store
            .put_samples("ns/newest", &[sample(id, "v1", 1)], T0 + i as i64)
            .await
            .unwrap();
    }
    let kept: Vec<String> = store
        .list_labelled_samples("ns/newest", 0..Millis::MAX, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.sample.sample.request_id)
        .collect();
    assert_eq!(kept, ["n2", "n3"]);
}

async fn the_last_label_of_a_request_in_a_batch_wins(store: Arc<dyn MetadataStore>) {
    store
        .put_samples("ns/fashion", &[sample("r1", "v1", 1)], T0)
        .await
        .unwrap();
    // The same request id twice in one batch: the second is a correction of the first.
    let counts = store
        .put_labels(
            "ns/fashion",
            &[label("r1", "class-0", T0), label("r1", "class-1", T0 + 1)],
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!((counts.added, counts.updated), (1, 1));
    let joined = store
        .list_labelled_samples("ns/fashion", 0..Millis::MAX, 10)
        .await
        .unwrap();
    assert_eq!(joined[0].label.as_ref().unwrap().label, "class-1");
}

fn alert(endpoint: &str, key: &str, active_since: i64, phase: AlertPhase) -> AlertRecord {
    AlertRecord {
        endpoint: endpoint.to_string(),
        key: key.to_string(),
        kind: AlertKind::Drift,
        phase,
        summary: format!("{key} breached"),
        window_start: active_since - 60_000,
        window_end: active_since,
        value: Some(0.42),
        threshold: Some(0.1),
        active_since,
        firing_since: (phase == AlertPhase::Firing).then_some(active_since),
        last_breach: active_since,
        ended_at: None,
        action: None,
        run: None,
        updated_at: active_since,
    }
}

async fn alert_episodes_upsert_and_keep_what_was_done(store: Arc<dyn MetadataStore>) {
    let pending = alert("ns/fashion", "drift/all", T0, AlertPhase::Pending);
    store
        .put_alerts(std::slice::from_ref(&pending))
        .await
        .unwrap();
    assert_eq!(
        store.list_alerts(None, false, 10).await.unwrap(),
        std::slice::from_ref(&pending)
    );

    // The loop fires it and starts a retraining run.
    let acted = AlertRecord {
        phase: AlertPhase::Firing,
        firing_since: Some(T0 + 10),
        last_breach: T0 + 10,
        action: Some("started run r1".into()),
        run: Some("r1".into()),
        updated_at: T0 + 10,
        ..pending.clone()
    };
    store
        .put_alerts(std::slice::from_ref(&acted))
        .await
        .unwrap();
    // A report of the same episode that knows nothing of that (a re-sent webhook) moves the
    // episode on and keeps the action and the run.
    let resolved = AlertRecord {
        phase: AlertPhase::Resolved,
        ended_at: Some(T0 + 20),
        value: None,
        action: None,
        run: None,
        updated_at: T0 + 20,
        ..acted.clone()
    };
    store
        .put_alerts(std::slice::from_ref(&resolved))
        .await
        .unwrap();
    let stored = store.list_alerts(None, false, 10).await.unwrap();
    assert_eq!(
        stored,
        [AlertRecord {
            action: acted.action.clone(),
            run: acted.run.clone(),
            ..resolved.clone()
        }]
    );
    // A new action replaces the old one.
    let held = AlertRecord {
        action: Some("held: cooldown".into()),
        ..resolved.clone()
    };
    store.put_alerts(&[held]).await.unwrap();
    let stored = store.list_alerts(None, false, 10).await.unwrap();
    assert_eq!(stored[0].action.as_deref(), Some("held: cooldown"));
    assert_eq!(stored[0].run.as_deref(), Some("r1"));

    // The same key breaching again is a new episode; the same episode of another endpoint is
    // its own row. One call stores them all.
    let again = alert("ns/fashion", "drift/all", T0 + 100, AlertPhase::Pending);
    let other = alert("ns/other", "drift/all", T0, AlertPhase::Pending);
    store.put_alerts(&[again.clone(), other]).await.unwrap();
    store.put_alerts(&[]).await.unwrap();
    let fashion = store
        .list_alerts(Some("ns/fashion"), false, 10)
        .await
        .unwrap();
    let episodes: Vec<(i64, AlertPhase)> =
        fashion.iter().map(|a| (a.active_since, a.phase)).collect();
    assert_eq!(
        episodes,
        [(T0 + 100, AlertPhase::Pending), (T0, AlertPhase::Resolved)]
    );
    assert_eq!(fashion[0], again);
}

async fn alerts_list_newest_first_by_endpoint_and_openness(store: Arc<dyn MetadataStore>) {
    let at = |endpoint: &str, key: &str, phase: AlertPhase, updated_at: i64| AlertRecord {
        updated_at,
        ..alert(endpoint, key, T0, phase)
    };
    store
        .put_alerts(&[
            at("ns/a", "floor/accuracy/v1/all", AlertPhase::Firing, T0 + 3),
            at("ns/a", "drift/all", AlertPhase::Resolved, T0 + 5),
            // Ties on the update time list by key, in byte order.
            at("ns/b", "drift/source=web", AlertPhase::Pending, T0 + 4),
            at("ns/b", "Drift/all", AlertPhase::Cleared, T0 + 4),
            at(
                "ns/a",
                "regression/accuracy/v2/all",
                AlertPhase::Cleared,
                T0 + 1,
            ),
        ])
        .await
        .unwrap();
    let keys = |alerts: Vec<AlertRecord>| -> Vec<String> {
        alerts
            .into_iter()
            .map(|a| format!("{} {}", a.endpoint, a.key))
            .collect()
    };

    assert_eq!(
        keys(store.list_alerts(None, false, 10).await.unwrap()),
        [
            "ns/a drift/all",
            "ns/b Drift/all",
            "ns/b drift/source=web",
            "ns/a floor/accuracy/v1/all",
            "ns/a regression/accuracy/v2/all",
        ]
    );
    // Open: pending and firing only.
    assert_eq!(
        keys(store.list_alerts(None, true, 10).await.unwrap()),
        ["ns/b drift/source=web", "ns/a floor/accuracy/v1/all"]
    );
    assert_eq!(
        keys(store.list_alerts(Some("ns/a"), false, 10).await.unwrap()),
        [
            "ns/a drift/all",
            "ns/a floor/accuracy/v1/all",
            "ns/a regression/accuracy/v2/all",
        ]
    );
    assert_eq!(
        keys(store.list_alerts(Some("ns/a"), true, 10).await.unwrap()),
        ["ns/a floor/accuracy/v1/all"]
    );
    // The limit keeps the newest.
    assert_eq!(
        keys(store.list_alerts(None, false, 2).await.unwrap()),
        ["ns/a drift/all", "ns/b Drift/all"]
    );
    assert!(
        store
            .list_alerts(Some("ns/none"), false, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Stores an alert row of the kind and phase bound to `$1` and `$2`, whatever they are.
const RAW_ALERT_ROW: &str = "INSERT INTO endpoint_alerts
         (endpoint, key, active_since, kind, phase, summary, window_start, window_end,
          last_breach, updated_at)
     VALUES ('ns/a', 'drift/all', 1, $1, $2, 's', 0, 1, 1, 1)";

/// An alert row's kind and phase where no version of toucan writes them, each with the column
/// it spoils.
const CORRUPT_ALERT_ROWS: [(&str, &str, &str); 2] = [
    ("kind", "tremor", "Firing"),
    ("phase", "drift", "Smouldering"),
];

fn assert_unknown_column(err: &StoreError, column: &str) {
    assert_eq!(err.reason(), "StoreCorrupt", "{err}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("column {column}:")),
        "{column}: {message}"
    );
}

async fn samples_list_within_a_window_and_expire_with_their_labels_and_ended_alerts(
    store: Arc<dyn MetadataStore>,
) {
    for (i, id) in ["old1", "old2", "new1"].into_iter().enumerate() {
        store
            .put_samples("ns/fashion", &[sample(id, "v1", 1)], T0 + 10 * i as i64)
            .await
            .unwrap();
    }
    store
        .put_samples("ns/other", &[sample("other", "v1", 1)], T0)
        .await
        .unwrap();
    let labels = [
        label("old1", "class-1", T0),
        label("old2", "class-1", T0),
        label("new1", "class-0", T0),
    ];
    store.put_labels("ns/fashion", &labels, T0).await.unwrap();
    store
        .put_labels("ns/other", &[label("other", "class-0", T0)], T0)
        .await
        .unwrap();
    let ids = |samples: Vec<LabelledSample>| -> Vec<String> {
        samples
            .into_iter()
            .map(|s| s.sample.sample.request_id)
            .collect()
    };
    // A window: its start included, its end not.
    let window = store
        .list_labelled_samples("ns/fashion", T0 + 10..T0 + 20, 100)
        .await
        .unwrap();
    assert_eq!(ids(window), ["old2"]);

    let mut ended = alert("ns/fashion", "drift/all", T0, AlertPhase::Resolved);
    ended.ended_at = Some(T0 + 5);
    let mut recent = alert("ns/fashion", "drift/all", T0 + 6, AlertPhase::Resolved);
    recent.ended_at = Some(T0 + 50);
    let open = alert("ns/fashion", "evaluation/all", T0 - 100, AlertPhase::Firing);
    let elsewhere = {
        let mut a = alert("ns/other", "drift/all", T0, AlertPhase::Resolved);
        a.ended_at = Some(T0 + 5);
        a
    };
    store
        .put_alerts(&[ended, recent, open, elsewhere])
        .await
        .unwrap();

    let expired = store
        .expire_monitoring("ns/fashion", T0 + 20, T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        expired,
        Expired {
            samples: 2,
            labels: 2,
            alerts: 1,
        }
    );
    let left = store
        .list_labelled_samples("ns/fashion", 0..Millis::MAX, 100)
        .await
        .unwrap();
    assert_eq!(left[0].label.as_ref().unwrap().label, "class-0");
    assert_eq!(ids(left), ["new1"]);
    let alerts: Vec<(String, i64)> = store
        .list_alerts(Some("ns/fashion"), false, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.key, a.active_since))
        .collect();
    assert_eq!(
        alerts,
        [
            ("drift/all".to_string(), T0 + 6),
            ("evaluation/all".to_string(), T0 - 100)
        ],
        "an open alert stays however old"
    );
    // Other endpoints keep theirs; a second pass finds nothing more.
    let other = store
        .list_labelled_samples("ns/other", 0..Millis::MAX, 100)
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert!(other[0].label.is_some());
    assert_eq!(
        store
            .list_alerts(Some("ns/other"), false, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        store
            .expire_monitoring("ns/fashion", T0 + 20, T0 + 10)
            .await
            .unwrap(),
        Expired::default()
    );
}
