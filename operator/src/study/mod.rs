//! The TuningStudy controller: the tuning engine's decisions carried out with PipelineRuns.
//!
//! A study's id in the metadata store is its UID; its ledger (one row per trial) lives there
//! too, so the status holds only a bounded summary. Each reconcile is one level-triggered
//! turn:
//!
//! 1. validate the spec ([`check_study`], and [`check_study_pipeline`] against the Pipeline a
//!    `pipelineRef` names): an invalid study fails with its field paths and runs nothing;
//! 2. load the ledger from the store (and the warm-start studies' trials);
//! 3. read every active trial's child run back into it ([`trials::refresh`]): running, its
//!    pushed objective series, its objective once it succeeded, or its failure;
//! 4. [`Study::decide`] and [`TrialLedger::apply`]; once `budget.deadline` has passed, the
//!    study ends ([`Study::end_now`]): nothing new starts and the active trials stop;
//! 5. save every changed trial in one transaction, *then* create the children of pending
//!    trials and delete those of stopped ones, and those of finished ones beyond the newest
//!    `trial.keepRuns` ([`TrialLedger::expired_runs`]);
//! 6. write the status (only when it changed) and, at the end, the study's phase in the store.
//!
//! Decisions depend only on the ledger and the ledger is saved before any child is made, so
//! an operator killed at any line resumes exactly: the children it finds were made from the
//! ledger it reloads, and the children it makes are those a run without the crash made.
//! Deleting a study deletes its runs (owner references); its ledger rows stay in the store.

mod status;
mod trials;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use toucan_core::api::labels::SOURCE_DIR_ANNOTATION;
use toucan_core::api::{Pipeline, PipelineRun, PipelineSpec, TuningStudy, TuningStudyStatus};
use toucan_core::manifest::{Source, check_study, check_study_pipeline, objective_source};
use toucan_core::records::{Phase, StudyRecord, TrialRecord};
use toucan_core::time::{now_ms, rfc3339};
use toucan_core::tuning::{
    StopReason, Study, TrialLedger, TrialState, TuningError, WarmStartStudy,
};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::notes::{Note, publish};
use crate::queue::{self, Action, Class, Queue, QueueMetrics};
use status::Timing;
use trials::Template;

pub const CONTROLLER: &str = "tuningstudy";
/// On a trial's PipelineRun: the study's name.
pub const STUDY_LABEL: &str = "toucan.dev/study";
/// On a trial's PipelineRun: the trial's index.
pub const TRIAL_LABEL: &str = "toucan.dev/trial";
/// How often a running study is read again when nothing wakes it sooner: pushed metrics
/// change without its runs changing.
const POLL: Duration = Duration::from_secs(3);
/// A study whose Pipeline does not exist yet is looked at again after this long.
const MISSING_PIPELINE_RETRY: Duration = Duration::from_secs(3);

/// The controller's own state beside the shared context.
#[derive(Debug)]
struct Shared {
    ctx: Arc<Context>,
    /// Studies (by UID) whose stopped trials' children were swept since this process started.
    swept: Mutex<HashSet<String>>,
    /// Every study's trial runs, metadata only.
    children: reflector::Store<PartialObjectMeta<PipelineRun>>,
}

/// Runs the controller until `shutdown`: a study is reconciled when it changes, when one of
/// its runs does, and every few seconds while it runs.
pub async fn controller(
    api: Api<TuningStudy>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Trial runs wake their study; only their metadata is read, so a study of many trials
    // costs no memory here.
    let runs: Api<PartialObjectMeta<PipelineRun>> = match &ctx.config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let queue = Queue::new(
        queue::Settings::default(),
        QueueMetrics::new(&ctx.metrics, CONTROLLER),
    );
    let (reader, writer) = reflector::store::<TuningStudy>();
    let studies = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(|s| s.metadata.managed_fields = None)
        .reflect(writer)
        .applied_objects()
        // Its own status writes do not wake a study: its runs and the poll do.
        .predicate_filter(predicates::generation, Default::default())
        .for_each({
            let queue = queue.clone();
            move |study| {
                match study {
                    Ok(study) => queue.push(ObjectRef::from_obj(&study), Class::Active),
                    Err(e) => tracing::debug!("tuningstudy watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let (children, children_writer) = reflector::store::<PartialObjectMeta<PipelineRun>>();
    let trial_runs = watcher(runs, watcher::Config::default().labels(STUDY_LABEL))
        .default_backoff()
        .modify(|r| r.metadata.managed_fields = None)
        .reflect(children_writer)
        .touched_objects()
        .for_each({
            let queue = queue.clone();
            move |run| {
                match run {
                    Ok(run) => {
                        let namespace = run.namespace();
                        if let Some(study) = run.owner_references().iter().find_map(|o| {
                            ObjectRef::<TuningStudy>::from_owner_ref(namespace.as_deref(), o, ())
                        }) {
                            queue.push(study, Class::Active);
                        }
                    }
                    Err(e) => tracing::debug!("trial run watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        swept: Mutex::new(HashSet::new()),
        children,
    });
    let runner = queue::run(
        queue,
        reader,
        reconcile,
        error_policy,
        shared,
        usize::from(ctx.config.concurrency),
        shutdown,
    );
    tokio::select! {
        () = runner => {}
        _ = futures::future::join(studies, trial_runs) => {}
    }
}

fn error_policy(_study: Arc<TuningStudy>, error: &Error, shared: Arc<Shared>) {
    tracing::warn!(error = %error, "tuningstudy reconcile failed");
    shared
        .ctx
        .metrics
        .reconcile_failed(CONTROLLER, error.reason());
}

/// A user-visible happening, published as an Event on the study.
/// What validation found.
enum Checked {
    /// Runnable; with the Pipeline a `pipelineRef` names, and the trials' pipeline.
    Valid {
        referenced: Option<(String, Box<PipelineSpec>)>,
        pipeline: Box<PipelineSpec>,
        /// The referenced Pipeline's `toucan.dev/source-dir`, for its `path:` inputs.
        source_dir: Option<String>,
    },
    /// Cannot run as written.
    Invalid(String),
    /// Waits for something that is not there yet.
    Waiting(String),
}

async fn reconcile(study: Arc<TuningStudy>, shared: Arc<Shared>) -> Result<Action> {
    let ctx = &shared.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = study
        .namespace()
        .ok_or_else(|| Error::MissingField(study.name_any(), "namespace"))?;
    let name = study.name_any();
    let uid = study
        .uid()
        .ok_or_else(|| Error::MissingField(name.clone(), "uid"))?;
    let generation = study.meta().generation;
    let previous = study.status.clone().unwrap_or_default();
    if status::is_settled(&previous, generation) {
        return Ok(Action::await_change());
    }
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);

    // 1. Validate.
    let (referenced, pipeline, source_dir) = match check(ctx, &study, &namespace, &name).await? {
        Checked::Valid {
            referenced,
            pipeline,
            source_dir,
        } => (referenced, pipeline, source_dir),
        Checked::Invalid(why) => {
            let status = status::blocked_status(&previous, &why, false, generation);
            crate::status::apply::<TuningStudy, _>(
                &ctx.client,
                &namespace,
                &name,
                Some(&previous),
                &status,
            )
            .await?;
            return Ok(Action::await_change());
        }
        Checked::Waiting(why) => {
            let status = status::blocked_status(&previous, &why, true, generation);
            crate::status::apply::<TuningStudy, _>(
                &ctx.client,
                &namespace,
                &name,
                Some(&previous),
                &status,
            )
            .await?;
            return Ok(Action::requeue(MISSING_PIPELINE_RETRY));
        }
    };
    let engine = match Study::new(&study.spec.engine_spec()) {
        Ok(engine) => engine,
        Err(e) => return invalid(ctx, &study, &previous, &e.to_string()).await,
    };
    let objective = objective_source(&study.spec, &pipeline)
        .ok_or_else(|| Error::MissingField(name.clone(), "objective source"))?;
    let template = Template {
        study: &study,
        name: &name,
        uid: &uid,
        referenced: referenced.as_ref().map(|(n, s)| (n.as_str(), &**s)),
        source_dir: source_dir.as_deref(),
        objective,
        engine: &engine,
    };

    // 2. The ledger.
    let record = match ctx.store.get_study(&uid).await? {
        Some(record) => record,
        None => {
            let record = StudyRecord {
                id: uid.clone(),
                // As a cluster run records its pipeline: the API reads it as the namespace's.
                name: format!("{namespace}/{name}"),
                phase: Phase::Running,
                spec: serde_json::to_value(&study.spec)
                    .map_err(|e| Error::Ledger(e.to_string()))?,
                created_at: now_ms(),
                finished_at: None,
                message: None,
            };
            ctx.store.create_study(&record).await?;
            ctx.store.get_study(&uid).await?.unwrap_or(record)
        }
    };
    let warm_start = match warm_start(ctx, &study, &namespace).await? {
        Ok(w) => w,
        Err(why) => return invalid(ctx, &study, &previous, &why).await,
    };
    let stored = ctx.store.list_trials(&uid).await?;
    let mut ledger = TrialLedger {
        trials: stored.iter().map(|r| r.trial.clone()).collect(),
        warm_start,
    };
    let mut run_ids: Vec<Option<String>> = stored.iter().map(|r| r.run_id.clone()).collect();

    // 3. What the active trials' runs show.
    let mut notes = Vec::new();
    let present =
        trials::refresh(ctx, &runs, &template, &mut ledger, &mut run_ids, &mut notes).await?;

    // 4. Decide.
    let deadline = study.spec.deadline_after(record.created_at);
    let decisions = match engine.decide_at(&ledger, deadline, now_ms()) {
        Ok(d) => d,
        Err(e @ TuningError::IncompatibleWarmStart { .. }) => {
            return invalid(ctx, &study, &previous, &e.to_string()).await;
        }
        Err(e) => return Err(trials::ledger_error(e)),
    };
    let end = decisions.end.clone();
    ledger.apply(&decisions).map_err(trials::ledger_error)?;
    for stop in &decisions.stop {
        if let StopReason::Median { step, best, median } = &stop.reason {
            notes.push(Note::normal(
                "TrialStopped",
                format!(
                    "trial {}: stopped at step {step}: its best {best} is worse than the median {median}",
                    stop.name
                ),
            ));
        }
    }
    let mut children = Vec::new();
    for index in 0..ledger.trials.len() {
        let trial = &ledger.trials[index];
        if trial.state != TrialState::Pending || present.contains(&trial.index) {
            continue;
        }
        let previous = run_ids.get(index).and_then(Option::as_deref);
        match trials::child_run(&template, trial, previous) {
            Ok(run) => children.push(run),
            Err(why) => {
                let name = trial.name.clone();
                ledger
                    .record_failure(index as u32)
                    .map_err(trials::ledger_error)?;
                notes.push(Note::warning("TrialFailed", format!("trial {name}: {why}")));
            }
        }
    }

    // 5. Save, then act.
    run_ids.resize(ledger.trials.len(), None);
    let now = now_ms();
    let changed: Vec<TrialRecord> = ledger
        .trials
        .iter()
        .zip(&run_ids)
        .enumerate()
        .filter(|(i, (trial, run_id))| {
            stored
                .get(*i)
                .is_none_or(|r| r.trial != **trial || r.run_id != **run_id)
        })
        .map(|(_, (trial, run_id))| TrialRecord {
            study_id: uid.clone(),
            trial: trial.clone(),
            run_id: run_id.clone(),
            updated_at: now,
        })
        .collect();
    if !changed.is_empty() {
        ctx.store.put_trials(&changed).await?;
    }
    for run in &children {
        trials::create(&runs, run).await?;
    }
    let stopping = async {
        for stop in &decisions.stop {
            let trial = ledger.trial(stop.index).map_err(trials::ledger_error)?;
            trials::delete(&runs, &trials::child_of(&name, trial)).await?;
        }
        let keep = study.spec.trial.keep_runs();
        for child in trials::expired(&shared.children.state(), &uid, &ledger, keep) {
            trials::delete(&runs, &child).await?;
        }
        if !shared
            .swept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&uid)
        {
            trials::sweep(&runs, &template, &ledger).await?;
            shared
                .swept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.clone());
        }
        Ok::<_, Error>(())
    };
    if let Err(e) = stopping.await {
        // A stop that did not happen is found again by the next sweep.
        shared
            .swept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&uid);
        return Err(e);
    }

    // 6. Status.
    let goal = (engine.goal, study.spec.objective.metric.as_str());
    let mut finished_at = record.finished_at;
    if let Some(end) = &end
        && !record.phase.is_terminal()
    {
        let phase = end.phase();
        let at = finished_at.unwrap_or(now);
        finished_at = Some(at);
        let message = end.message(&ledger, goal.1);
        ctx.store
            .set_study_phase(&uid, phase, Some(&message), Some(at))
            .await?;
        notes.push(if phase == Phase::Succeeded {
            Note::normal("StudySucceeded", message)
        } else {
            Note::warning("StudyFailed", message)
        });
    }
    let timing = Timing {
        study_id: uid.clone(),
        started_at: rfc3339(record.created_at).ok(),
        finished_at: finished_at.and_then(|at| rfc3339(at).ok()),
        generation,
    };
    let status = status::study_status(&previous, &ledger, goal, end.as_ref(), &timing);
    crate::status::apply::<TuningStudy, _>(
        &ctx.client,
        &namespace,
        &name,
        Some(&previous),
        &status,
    )
    .await?;
    publish(ctx, study.as_ref(), &notes).await;

    if end.is_some() {
        return Ok(Action::await_change());
    }
    let wake = match deadline {
        Some(at) => POLL.min(Duration::from_millis((at - now_ms()).max(0) as u64 + 5)),
        None => POLL,
    };
    Ok(Action::requeue(wake))
}

/// The study's checks, against the Pipeline it references if any.
async fn check(ctx: &Context, study: &TuningStudy, namespace: &str, name: &str) -> Result<Checked> {
    let source = Source {
        file: format!("tuningstudies/{namespace}/{name}").into(),
        index: 0,
    };
    let mut problems = check_study(&study.spec, &source);
    let mut referenced = None;
    let mut source_dir = None;
    if problems.is_empty()
        && let Some(r) = &study.spec.trial.pipeline_ref
    {
        let pipelines: Api<Pipeline> = Api::namespaced(ctx.client.clone(), namespace);
        let Some(pipeline) = pipelines.get_opt(&r.name).await? else {
            return Ok(Checked::Waiting(format!(
                "spec.trial.pipelineRef: waiting for Pipeline {:?} in namespace {namespace}",
                r.name
            )));
        };
        problems = check_study_pipeline(&study.spec, &pipeline.spec, &source);
        source_dir = pipeline.annotations().get(SOURCE_DIR_ANNOTATION).cloned();
        referenced = Some((r.name.clone(), Box::new(pipeline.spec)));
    }
    if !problems.is_empty() {
        let text: Vec<String> = problems
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        return Ok(Checked::Invalid(text.join("; ")));
    }
    let pipeline = match &referenced {
        Some((_, spec)) => Some(spec.clone()),
        None => study.spec.trial.pipeline().map(Box::new),
    };
    Ok(match pipeline {
        Some(pipeline) => Checked::Valid {
            referenced,
            pipeline,
            source_dir,
        },
        None => Checked::Invalid("spec.trial: says nothing to run".into()),
    })
}

/// The warm-start studies' trials, or why one cannot be read.
async fn warm_start(
    ctx: &Context,
    study: &TuningStudy,
    namespace: &str,
) -> Result<Result<Vec<WarmStartStudy>, String>> {
    let studies: Api<TuningStudy> = Api::namespaced(ctx.client.clone(), namespace);
    let mut out = Vec::new();
    for (i, w) in study.spec.warm_start.iter().enumerate() {
        let Some(earlier) = studies.get_opt(&w.study).await? else {
            return Ok(Err(format!(
                "spec.warmStart[{i}].study: no TuningStudy {:?} in namespace {namespace}",
                w.study
            )));
        };
        let Some(uid) = earlier.uid() else {
            return Ok(Err(format!(
                "spec.warmStart[{i}].study: {:?} has no uid",
                w.study
            )));
        };
        let trials = ctx
            .store
            .list_trials(&uid)
            .await?
            .into_iter()
            .map(|r| r.trial)
            .collect();
        out.push(WarmStartStudy {
            study: w.study.clone(),
            parameters: earlier.spec.parameters.clone(),
            trials,
        });
    }
    Ok(Ok(out))
}

async fn invalid(
    ctx: &Context,
    study: &TuningStudy,
    previous: &TuningStudyStatus,
    why: &str,
) -> Result<Action> {
    let generation = study.meta().generation;
    let status = status::blocked_status(previous, why, false, generation);
    let namespace = study.namespace().unwrap_or_default();
    let name = study.name_any();
    crate::status::apply::<TuningStudy, _>(&ctx.client, &namespace, &name, Some(previous), &status)
        .await?;
    Ok(Action::await_change())
}
