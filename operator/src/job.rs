//! The TrainingJob controller: a job runs as a PipelineRun of one distributed step, and its
//! status is read back from that run and its gang.
//!
//! A job `NAME` owns a PipelineRun `NAME` (labelled `toucan.dev/training-job`) whose inline
//! pipeline is the job's template as the step `train` with the job's roles and policies, so
//! caching, the artifact store, records, gang pods, admission and restarts are the run
//! controller's (`crate::run`), exactly as for a distributed step in any pipeline. What is
//! left here:
//!
//! - validation at the job's own field paths (`spec.roles.worker.replicas`) before anything
//!   runs;
//! - `runPolicy.suspend`, passed on as the run's `toucan.dev/suspend` annotation: the gang's
//!   pods go, and resuming starts the next incarnation from the newest checkpoint;
//! - the job's bounded status: phase, conditions with reasons, ready replicas, per-role counts,
//!   restarts and preemptions as the gang engine recorded them, the last failure, and the
//!   leader's progress from its pushed metrics;
//! - `runPolicy.ttlAfterFinished`: a finished job is deleted that long after it ended.
//!
//! Deleting a job deletes its run (owner reference), whose cleanup stops its pods.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use toucan_core::api::{
    PipelineRun, PipelineRunSpec, PipelineSpec, ReplicaCounts, TrainingJob, TrainingJobStatus,
    TrainingProgress,
};
use toucan_core::engine::gang::{self, Gang, Outcome, ReplicaState};
use toucan_core::manifest::{JOB_STEP, Source, check_job};
use toucan_core::records::{DocumentKind, Phase};
use toucan_core::time::now_ms;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;
use crate::queue::{self, Action, Class, Queue, QueueMetrics};
use crate::run::gang::SUSPEND_ANNOTATION;

pub const CONTROLLER: &str = "trainingjob";
/// On a job's PipelineRun: the job's name.
pub const JOB_LABEL: &str = "toucan.dev/training-job";
/// How often an unfinished job's status is read again when nothing wakes it sooner: its
/// gang's restarts and the leader's progress change without its run changing.
const POLL: Duration = Duration::from_secs(3);

/// Runs the controller until `shutdown`: a job is reconciled when it changes and when its run
/// does, on the same kind of queue as the run controller.
pub async fn controller(
    api: Api<TrainingJob>,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let runs: Api<PipelineRun> = match &ctx.config.watch_namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let queue = Queue::new(
        queue::Settings::default(),
        QueueMetrics::new(&ctx.metrics, CONTROLLER),
    );
    let (reader, writer) = reflector::store::<TrainingJob>();
    let jobs = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each({
            let queue = queue.clone();
            move |job| {
                match job {
                    Ok(job) => queue.push(ObjectRef::from_obj(&job), Class::Active),
                    Err(e) => tracing::debug!("trainingjob watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let job_runs = watcher(runs, watcher::Config::default().labels(JOB_LABEL))
        .default_backoff()
        .touched_objects()
        .for_each({
            let queue = queue.clone();
            move |run| {
                match run {
                    Ok(run) => {
                        if let Some(job) = job_of(&run) {
                            queue.push(job, Class::Active);
                        }
                    }
                    Err(e) => tracing::debug!("job run watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let runner = queue::run(
        queue,
        reader,
        reconcile,
        error_policy,
        ctx.clone(),
        usize::from(ctx.config.concurrency),
        shutdown,
    );
    tokio::select! {
        () = runner => {}
        _ = futures::future::join(jobs, job_runs) => {}
    }
}

/// The job that owns `run`, if any.
fn job_of(run: &PipelineRun) -> Option<ObjectRef<TrainingJob>> {
    let namespace = run.namespace();
    run.owner_references()
        .iter()
        .find_map(|o| ObjectRef::from_owner_ref(namespace.as_deref(), o, ()))
}

fn error_policy(_job: Arc<TrainingJob>, error: &Error, ctx: Arc<Context>) {
    tracing::warn!(error = %error, "trainingjob reconcile failed");
    ctx.metrics.reconcile_failed(CONTROLLER, error.reason());
}

async fn reconcile(job: Arc<TrainingJob>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = job
        .namespace()
        .ok_or_else(|| Error::MissingField(job.name_any(), "namespace"))?;
    let name = job.name_any();
    let generation = job.meta().generation;
    let previous = job.status.clone().unwrap_or_default();
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);

    let problems = check_job(
        &job.spec,
        &Source {
            file: format!("trainingjobs/{namespace}/{name}").into(),
            index: 0,
        },
    );
    if !problems.is_empty() {
        let text: Vec<String> = problems
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        let status = invalid_status(&previous, &text.join("; "), generation);
        crate::status::apply::<TrainingJob, _>(
            &ctx.client,
            &namespace,
            &name,
            Some(&previous),
            &status,
        )
        .await?;
        return Ok(Action::await_change());
    }

    let suspend = job
        .spec
        .run_policy
        .as_ref()
        .and_then(|p| p.suspend)
        .unwrap_or(false);
    let run = match runs.get_opt(&name).await? {
        Some(run) if owned_by(&run, &job) => run,
        Some(_) => {
            let why = format!(
                "a PipelineRun named {name} that this job does not own is in the way; \
                 delete it or rename the job"
            );
            let status = invalid_status(&previous, &why, generation);
            crate::status::apply::<TrainingJob, _>(
                &ctx.client,
                &namespace,
                &name,
                Some(&previous),
                &status,
            )
            .await?;
            return Ok(Action::requeue(POLL));
        }
        None if is_finished(&previous) => return Ok(Action::await_change()),
        None => {
            let run = job_run(&job, suspend)?;
            match runs.create(&PostParams::default(), &run).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            let mut status = previous.clone();
            status.phase = Some(if suspend { "Suspended" } else { "Pending" }.into());
            status.observed_generation = generation;
            crate::conditions::set(
                &mut status.conditions,
                "Created",
                "True",
                "RunCreated",
                &format!("PipelineRun {name} runs the job"),
                generation,
            );
            crate::status::apply::<TrainingJob, _>(
                &ctx.client,
                &namespace,
                &name,
                Some(&previous),
                &status,
            )
            .await?;
            return Ok(Action::requeue(POLL));
        }
    };

    let annotated = run
        .annotations()
        .get(SUSPEND_ANNOTATION)
        .is_some_and(|v| v == "true");
    if annotated != suspend {
        let patch = json!({"metadata": {"annotations": {SUSPEND_ANNOTATION: suspend.to_string()}}});
        runs.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }

    let observed = observe(&ctx, &run).await?;
    let status = job_status(&previous, &observed, suspend, generation);
    let finished_at = observed.finished_at;
    crate::status::apply::<TrainingJob, _>(
        &ctx.client,
        &namespace,
        &name,
        Some(&previous),
        &status,
    )
    .await?;

    match finished_at {
        None => Ok(Action::requeue(POLL)),
        Some(at) => {
            let ttl = job
                .spec
                .run_policy
                .as_ref()
                .and_then(|p| p.ttl_after_finished.as_ref());
            let Some(ttl) = ttl else {
                return Ok(Action::await_change());
            };
            let due = at + ttl.as_millis() as i64;
            if now_ms() >= due {
                let jobs: Api<TrainingJob> = Api::namespaced(ctx.client.clone(), &namespace);
                objects::delete(&jobs, &name, &DeleteParams::background()).await?;
                return Ok(Action::await_change());
            }
            Ok(Action::requeue(Duration::from_millis(
                (due - now_ms()).max(0) as u64 + 5,
            )))
        }
    }
}

fn owned_by(run: &PipelineRun, job: &TrainingJob) -> bool {
    let uid = job.uid();
    run.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref() && o.kind == "TrainingJob")
}

fn is_finished(status: &TrainingJobStatus) -> bool {
    matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
}

/// The job's run: its template as the one distributed step `train`.
fn job_run(job: &TrainingJob, suspend: bool) -> Result<PipelineRun> {
    let name = job.name_any();
    let owner = job
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingField(name.clone(), "uid"))?;
    Ok(PipelineRun {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: job.namespace(),
            labels: Some(BTreeMap::from([(JOB_LABEL.to_string(), name.clone())])),
            annotations: Some(BTreeMap::from([(
                SUSPEND_ANNOTATION.to_string(),
                suspend.to_string(),
            )])),
            owner_references: Some(vec![OwnerReference {
                block_owner_deletion: Some(true),
                ..owner
            }]),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline_ref: None,
            pipeline_spec: Some(PipelineSpec {
                steps: vec![job.spec.step(JOB_STEP)],
                ..PipelineSpec::default()
            }),
            params: Vec::new(),
        },
        status: None,
    })
}

/// What the job's run and its gang show.
#[derive(Debug, Default)]
struct Observed {
    run_id: Option<String>,
    run_phase: Option<Phase>,
    run_message: Option<String>,
    started_at: Option<String>,
    finished_at: Option<i64>,
    finished_text: Option<String>,
    gang: Option<Gang>,
    waiting: Option<String>,
    epochs: Vec<serde_json::Map<String, serde_json::Value>>,
}

async fn observe(ctx: &Context, run: &PipelineRun) -> Result<Observed> {
    let status = run.status.clone().unwrap_or_default();
    let mut observed = Observed {
        run_id: status.run_id.clone(),
        run_phase: status.phase.as_deref().and_then(Phase::parse),
        run_message: status.message.clone(),
        started_at: status.started_at.clone(),
        finished_text: status.finished_at.clone(),
        finished_at: status
            .finished_at
            .as_deref()
            .and_then(|t| toucan_core::time::parse_rfc3339(t).ok()),
        ..Observed::default()
    };
    let Some(run_id) = &status.run_id else {
        return Ok(observed);
    };
    // The step's last attempt's gang.
    let mut last: Option<(u32, serde_json::Value)> = None;
    for (key, body) in ctx
        .store
        .list_run_documents(run_id, DocumentKind::Gang)
        .await?
    {
        if let Some((JOB_STEP, attempt)) = gang::parse_record_key(&key)
            && last.as_ref().is_none_or(|(a, _)| *a < attempt)
        {
            last = Some((attempt, body));
        }
    }
    if let Some((_, body)) = last {
        observed.waiting = body
            .get("waiting")
            .and_then(|w| w.as_str())
            .map(String::from);
        observed.gang = serde_json::from_value(body).ok();
    }
    if let Some(series) = ctx
        .store
        .get_run_document(run_id, DocumentKind::Metrics, JOB_STEP)
        .await?
    {
        observed.epochs = series
            .get("epochs")
            .and_then(|e| serde_json::from_value(e.clone()).ok())
            .unwrap_or_default();
    }
    Ok(observed)
}

/// The job's status from what its run and gang show, keeping the conditions' transition times.
fn job_status(
    previous: &TrainingJobStatus,
    o: &Observed,
    suspend: bool,
    generation: Option<i64>,
) -> TrainingJobStatus {
    let mut status = TrainingJobStatus {
        conditions: previous.conditions.clone(),
        run_id: o.run_id.clone(),
        started_at: o.started_at.clone(),
        finished_at: o.finished_text.clone(),
        observed_generation: generation,
        ..TrainingJobStatus::default()
    };
    let gang = o.gang.as_ref();
    let phase = match (o.run_phase, gang) {
        (Some(Phase::Succeeded), _) => "Succeeded",
        (Some(p), _) if p.is_terminal() => "Failed",
        (_, Some(g)) => g.phase(),
        (_, None) if suspend => "Suspended",
        (_, None) => "Pending",
    };
    status.phase = Some(phase.into());
    if let Some(g) = gang {
        let total: u32 = g.plan.roles.iter().map(|(_, n)| n).sum();
        let running = g
            .replicas
            .values()
            .filter(|s| **s == ReplicaState::Running)
            .count();
        status.ready = Some(format!("{running}/{total}"));
        for (replica, state) in &g.replicas {
            let counts: &mut ReplicaCounts = status
                .replicas
                .entry(replica.role.as_str().to_string())
                .or_default();
            match state {
                ReplicaState::Launching | ReplicaState::Running => counts.active += 1,
                ReplicaState::Succeeded => counts.succeeded += 1,
                ReplicaState::Failed(_) => counts.failed += 1,
            }
        }
        status.restarts = g.restarts;
        status.preemptions = g.preemptions;
        status.incarnation = g.incarnation;
        status.last_failure = g.last_failure.clone();
    }
    status.progress = progress(&o.epochs);
    let failure = match gang.and_then(|g| g.outcome.as_ref()) {
        Some(Outcome::Failed(why) | Outcome::Cancelled(why)) => Some(why.clone()),
        _ => o.run_message.clone(),
    };
    status.message = match phase {
        "Failed" => failure,
        "Pending" => o.waiting.clone(),
        _ => None,
    }
    .map(|m| {
        m.chars()
            .take(toucan_core::api::MAX_JOB_MESSAGE_CHARS)
            .collect()
    });

    let name = |p: &str| phase == p;
    let set = |status: &mut TrainingJobStatus, type_: &str, on: bool, reason: &str, msg: &str| {
        crate::conditions::set(
            &mut status.conditions,
            type_,
            if on { "True" } else { "False" },
            reason,
            msg,
            generation,
        );
    };
    let message = status.message.clone().unwrap_or_default();
    set(&mut status, "Created", true, "RunCreated", "");
    let (running_reason, running_message) = match (phase, &o.waiting) {
        ("Running", _) => ("ReplicasRunning", String::new()),
        ("Pending", Some(why)) => ("WaitingForRoom", why.clone()),
        ("Pending", None) => ("Starting", String::new()),
        (p, _) => (p, String::new()),
    };
    set(
        &mut status,
        "Running",
        name("Running"),
        running_reason,
        &running_message,
    );
    let restart_reason = status
        .last_failure
        .as_ref()
        .map(|f| f.reason.clone())
        .unwrap_or_else(|| "Restarting".into());
    set(
        &mut status,
        "Restarting",
        name("Restarting"),
        &restart_reason,
        "",
    );
    set(
        &mut status,
        "Suspended",
        name("Suspended"),
        if suspend {
            "SuspendedByUser"
        } else {
            "Resumed"
        },
        "",
    );
    set(&mut status, "Succeeded", name("Succeeded"), "Succeeded", "");
    let failed_reason = match gang.and_then(|g| g.outcome.as_ref()) {
        Some(Outcome::Cancelled(_)) => "Cancelled",
        _ => "Failed",
    };
    set(
        &mut status,
        "Failed",
        name("Failed"),
        failed_reason,
        &message,
    );
    status
}

/// The leader's latest pushed epoch: its number, step, metrics, and the objective
/// (`val_accuracy`, else `accuracy`).
fn progress(epochs: &[serde_json::Map<String, serde_json::Value>]) -> Option<TrainingProgress> {
    let last = epochs.last()?;
    let number = |k: &str| last.get(k).and_then(serde_json::Value::as_f64);
    let metrics: BTreeMap<String, f64> = last
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "epoch" | "step"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect();
    Some(TrainingProgress {
        epoch: number("epoch").map(|e| e as u32),
        step: number("step").map(|s| s as u64),
        objective: number("val_accuracy").or_else(|| number("accuracy")),
        metrics,
    })
}

/// The status of a job that cannot run as written.
fn invalid_status(
    previous: &TrainingJobStatus,
    why: &str,
    generation: Option<i64>,
) -> TrainingJobStatus {
    let mut status = TrainingJobStatus {
        conditions: previous.conditions.clone(),
        phase: Some("Failed".into()),
        message: Some(
            why.chars()
                .take(toucan_core::api::MAX_JOB_MESSAGE_CHARS)
                .collect(),
        ),
        observed_generation: generation,
        ..TrainingJobStatus::default()
    };
    crate::conditions::set(
        &mut status.conditions,
        "Failed",
        "True",
        "Invalid",
        why,
        generation,
    );
    status
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use toucan_core::api::{SuccessPolicy, TrainingJobSpec};
    use toucan_core::engine::gang::{GangObservation, GangPlan, ReplicaEnd, ReplicaId, Role};

    use super::*;

    fn gang() -> Gang {
        let spec: TrainingJobSpec = serde_json::from_value(json!({
            "image": "w", "command": ["train"],
            "roles": {"chief": {"replicas": 1}, "worker": {"replicas": 2}},
        }))
        .unwrap();
        let step = spec.step(JOB_STEP);
        let plan = GangPlan::new(step.gang().unwrap()).unwrap();
        assert_eq!(plan.success_policy, SuccessPolicy::ChiefOrWorker0);
        Gang::new(plan, false)
    }

    fn replica(role: Role, index: u32) -> ReplicaId {
        ReplicaId { role, index }
    }

    #[test]
    fn the_status_counts_what_the_gang_recorded() {
        let mut g = gang();
        g.advance(Vec::new());
        let mut started: Vec<GangObservation> = [
            replica(Role::Chief, 0),
            replica(Role::Worker, 0),
            replica(Role::Worker, 1),
        ]
        .into_iter()
        .map(|replica| GangObservation::Started {
            replica,
            incarnation: 0,
        })
        .collect();
        g.advance(std::mem::take(&mut started));
        let o = Observed {
            gang: Some(g.clone()),
            run_phase: Some(Phase::Running),
            epochs: vec![
                json!({"epoch": 1, "accuracy": 0.5})
                    .as_object()
                    .unwrap()
                    .clone(),
                json!({"epoch": 2, "accuracy": 0.6, "val_accuracy": 0.7, "loss": 0.9})
                    .as_object()
                    .unwrap()
                    .clone(),
            ],
            ..Observed::default()
        };
        let status = job_status(&TrainingJobStatus::default(), &o, false, Some(1));
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.ready.as_deref(), Some("3/3"));
        assert_eq!(status.replicas["worker"].active, 2);
        let progress = status.progress.clone().unwrap();
        assert_eq!((progress.epoch, progress.objective), (Some(2), Some(0.7)));
        assert_eq!(progress.metrics["loss"], 0.9);
        let running = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Running")
            .unwrap();
        assert_eq!(running.status, "True");

        // worker-1 killed: the gang restarts, counted, and the status says why.
        g.advance(vec![GangObservation::Ended {
            replica: replica(Role::Worker, 1),
            incarnation: 0,
            end: ReplicaEnd {
                exit_code: Some(137),
                ..ReplicaEnd::default()
            },
        }]);
        let o = Observed {
            gang: Some(g.clone()),
            run_phase: Some(Phase::Running),
            ..Observed::default()
        };
        let again = job_status(&status, &o, false, Some(1));
        assert_eq!(again.phase.as_deref(), Some("Restarting"));
        assert_eq!(again.last_failure.as_ref().unwrap().exit_code, Some(137));
        let restarting = again
            .conditions
            .iter()
            .find(|c| c.type_ == "Restarting")
            .unwrap();
        assert_eq!(restarting.status, "True");
        // The rest of the gang stopped: the next incarnation starts, one restart counted.
        g.advance(
            [replica(Role::Chief, 0), replica(Role::Worker, 0)]
                .into_iter()
                .map(|replica| GangObservation::Ended {
                    replica,
                    incarnation: 0,
                    end: ReplicaEnd {
                        signal: Some(15),
                        ..ReplicaEnd::default()
                    },
                })
                .collect(),
        );
        let o = Observed {
            gang: Some(g),
            run_phase: Some(Phase::Running),
            ..Observed::default()
        };
        let next = job_status(&again, &o, false, Some(1));
        assert_eq!((next.restarts, next.incarnation), (1, 1));
        assert_eq!(next.phase.as_deref(), Some("Pending"));
        assert_eq!(next.replicas["worker"].active, 2);
        // The Created condition did not move.
        let created = |s: &TrainingJobStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Created")
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(created(&status), created(&next));
    }

    #[test]
    fn a_gang_waiting_for_room_says_why() {
        let mut g = gang();
        g.advance(Vec::new());
        let o = Observed {
            gang: Some(g),
            run_phase: Some(Phase::Running),
            waiting: Some("waiting for room: its 3 replicas ask for 12 nvidia.com/gpu".into()),
            ..Observed::default()
        };
        let status = job_status(&TrainingJobStatus::default(), &o, false, None);
        assert_eq!(status.phase.as_deref(), Some("Pending"));
        let running = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Running")
            .unwrap();
        assert_eq!(
            (running.status.as_str(), running.reason.as_str()),
            ("False", "WaitingForRoom")
        );
        assert!(running.message.contains("12 nvidia.com/gpu"));
        assert!(status.message.unwrap().contains("waiting for room"));
    }
}
