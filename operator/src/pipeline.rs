//! The Pipeline controller: a Pipeline's status (step count, validity) and its `schedule`.
//!
//! A scheduled Pipeline starts a PipelineRun per firing, named from the firing time so a
//! repeated reconcile cannot start it twice, owned by the Pipeline and labelled with its name.
//! `concurrency` decides what happens while earlier runs are active (see
//! `toucan_core::schedule`), and only the newest `historyLimit` finished scheduled runs are
//! kept. The controller requeues itself for the next firing.
//!
//! The runs come from the operator's PipelineRun cache (`Context::runs`), not from the API
//! server: which of them a schedule counts and prunes is decided by [`scheduled_runs`] and
//! [`beyond_history`]. The cache can lag a write by a moment; that is safe because a firing's
//! run has a deterministic name (creating it twice is a 409) and deleting a run already gone is
//! a 404, both ignored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use toucan_core::api::{Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineStatus};
use toucan_core::manifest::validate_spec;
use toucan_core::records::{Millis, Phase};
use toucan_core::schedule::{self, ScheduleDecision};
use toucan_core::time::{self, now_ms};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;
use crate::queue::{self, Action, Class, Queue, QueueMetrics};
use crate::run::prepare::source_of;
use crate::triggers;

pub const CONTROLLER: &str = "pipeline";
/// Label on the runs a Pipeline's schedule started.
pub const PIPELINE_LABEL: &str = "toucan.dev/pipeline";
/// Annotation on a scheduled run: the firing time it was started for (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "toucan.dev/scheduled-at";
const DEFAULT_HISTORY_LIMIT: usize = 10;
/// How often a Pipeline is looked at when nothing wakes it sooner.
const PERIODIC_RECONCILE: Duration = Duration::from_secs(3600);
/// How soon to look again at a schedule while the PipelineRun cache has not been listed yet.
const CACHE_WAIT: Duration = Duration::from_secs(1);

/// Runs the controller until `shutdown`, then lets the reconciles in flight finish.
///
/// A Pipeline is reconciled when it changes and when a run its schedule started changes, on the
/// same kind of queue as the run controller (`crate::queue`).
pub async fn controller(
    api: Api<Pipeline>,
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
    let (reader, writer) = reflector::store::<Pipeline>();
    let pipelines = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .for_each({
            let queue = queue.clone();
            move |pl| {
                match pl {
                    Ok(pl) => queue.push(ObjectRef::from_obj(&pl), Class::Active),
                    Err(e) => tracing::debug!("pipeline watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let scheduled_runs = watcher(runs, watcher::Config::default().labels(PIPELINE_LABEL))
        .default_backoff()
        .touched_objects()
        .for_each({
            let queue = queue.clone();
            move |run| {
                match run {
                    Ok(run) => {
                        if let Some(pl) = triggers::pipeline_of(&run) {
                            queue.push(pl, Class::Active);
                        }
                    }
                    Err(e) => tracing::debug!("scheduled run watch: {e}"),
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
        _ = futures::future::join(pipelines, scheduled_runs) => {}
    }
}

/// Counts and logs a failed reconcile; the queue schedules the retry.
fn error_policy(_pl: Arc<Pipeline>, error: &Error, ctx: Arc<Context>) {
    tracing::warn!(error = %error, "pipeline reconcile failed");
    ctx.metrics.reconcile_failed(CONTROLLER, error.reason());
}

async fn reconcile(pl: Arc<Pipeline>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = pl
        .namespace()
        .ok_or_else(|| Error::MissingField(pl.name_any(), "namespace"))?;
    let name = pl.name_any();
    let problems = validate_spec(&pl.spec, &source_of(&namespace, &name), "spec");
    let mut status = pl.status.clone().unwrap_or_default();
    status.step_count = Some((pl.spec.steps.len() + pl.spec.finally.len()) as u32);
    status.observed_generation = pl.meta().generation;
    let (valid, message) = if problems.is_empty() {
        ("True", String::new())
    } else {
        let text: Vec<String> = problems
            .iter()
            .map(|d| format!("{}: {}", d.path, d.message))
            .collect();
        ("False", text.join("; "))
    };
    crate::conditions::set(
        &mut status.conditions,
        "Valid",
        valid,
        if problems.is_empty() {
            "Valid"
        } else {
            "Invalid"
        },
        &message,
        pl.meta().generation,
    );

    let mut action = Action::requeue(PERIODIC_RECONCILE);
    if let (Some(cron), true) = (&pl.spec.schedule, problems.is_empty()) {
        match ctx.runs.state() {
            Some(cached) => {
                let runs = scheduled_runs(&cached, &pl);
                let runs_api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
                action = schedule(&runs_api, &pl, cron, &runs, &mut status).await?;
            }
            // Before the first full list an empty cache would mean "no active run".
            None => action = Action::requeue(CACHE_WAIT),
        }
    }
    crate::status::apply::<Pipeline, _>(
        &ctx.client,
        &namespace,
        &name,
        pl.status.as_ref(),
        &status,
    )
    .await?;
    Ok(action)
}

/// Starts, skips or replaces runs as the schedule says, prunes the history, and returns when to
/// look again.
async fn schedule(
    runs_api: &Api<PipelineRun>,
    pl: &Pipeline,
    cron: &str,
    runs: &[Arc<PipelineRun>],
    status: &mut PipelineStatus,
) -> Result<Action> {
    let name = pl.name_any();
    let active: Vec<&PipelineRun> = runs
        .iter()
        .map(Arc::as_ref)
        .filter(|r| !finished(r))
        .collect();
    let last_scheduled = status.last_schedule_time.as_deref().and_then(|text| {
        time::parse_rfc3339(text)
            .inspect_err(|e| tracing::warn!(pipeline = %name, "status.lastScheduleTime: {e}; counting from the Pipeline's creation"))
            .ok()
    });
    let last = last_scheduled.unwrap_or_else(|| {
        pl.meta()
            .creation_timestamp
            .as_ref()
            .map_or_else(now_ms, |t| t.0.as_millisecond())
    });
    let policy = pl.spec.concurrency.unwrap_or_default();
    let decision = schedule::decide(cron, policy, last, now_ms(), active.len());
    let next = match decision {
        ScheduleDecision::Wait { until } => Some(until),
        ScheduleDecision::Never => None,
        ScheduleDecision::Skip { scheduled, next } => {
            tracing::info!(pipeline = %name, "schedule fired while a run is active: skipped (Forbid)");
            status.last_schedule_time = time::rfc3339(scheduled).ok();
            next
        }
        ScheduleDecision::Start {
            scheduled,
            replace,
            next,
        } => {
            if replace {
                for run in &active {
                    objects::delete(runs_api, &run.name_any(), &DeleteParams::background()).await?;
                }
            }
            let run_name = schedule::run_name(&name, scheduled);
            create_run(runs_api, pl, &run_name, scheduled).await?;
            status.last_run = Some(run_name);
            status.last_schedule_time = time::rfc3339(scheduled).ok();
            next
        }
    };
    for run in beyond_history(runs, pl.spec.history_limit) {
        objects::delete(runs_api, &run.name_any(), &DeleteParams::background()).await?;
    }
    Ok(match next {
        Some(next) => Action::requeue(Duration::from_millis((next - now_ms()).max(0) as u64 + 50)),
        None => Action::requeue(PERIODIC_RECONCILE),
    })
}

/// The runs `pl`'s schedule started, among the cached ones: in its namespace, labelled with its
/// name, and owned by it (by UID), so a run someone else labelled, or one left by an earlier
/// Pipeline of the same name, is neither counted nor pruned.
fn scheduled_runs(cached: &[Arc<PipelineRun>], pl: &Pipeline) -> Vec<Arc<PipelineRun>> {
    let name = pl.name_any();
    let Some(uid) = pl.uid() else {
        return Vec::new();
    };
    cached
        .iter()
        .filter(|run| run.namespace() == pl.namespace())
        .filter(|run| run.labels().get(PIPELINE_LABEL) == Some(&name))
        .filter(|run| run.owner_references().iter().any(|o| o.uid == uid))
        .cloned()
        .collect()
}

/// The finished runs beyond the newest `limit` (default [`DEFAULT_HISTORY_LIMIT`]), oldest
/// first: what pruning deletes. Runs still active are never among them.
fn beyond_history(runs: &[Arc<PipelineRun>], limit: Option<u32>) -> Vec<&PipelineRun> {
    let limit = limit.map_or(DEFAULT_HISTORY_LIMIT, |l| l as usize);
    let mut done: Vec<&PipelineRun> = runs
        .iter()
        .map(Arc::as_ref)
        .filter(|r| finished(r))
        .collect();
    done.sort_by_key(|r| {
        (
            r.meta()
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
            r.name_any(),
        )
    });
    let excess = done.len().saturating_sub(limit);
    done.truncate(excess);
    done
}

fn finished(run: &PipelineRun) -> bool {
    run.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .and_then(Phase::parse)
        .is_some_and(|p| p.is_terminal())
}

async fn create_run(
    api: &Api<PipelineRun>,
    pl: &Pipeline,
    name: &str,
    scheduled: Millis,
) -> Result<()> {
    let run = PipelineRun {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([(
                PIPELINE_LABEL.to_string(),
                pl.name_any(),
            )])),
            annotations: time::rfc3339(scheduled)
                .ok()
                .map(|t| BTreeMap::from([(SCHEDULED_AT_ANNOTATION.to_string(), t)])),
            owner_references: pl.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline_ref: Some(PipelineRef {
                name: pl.name_any(),
            }),
            pipeline_spec: None,
            params: Vec::new(),
        },
        status: None,
    };
    match api.create(&PostParams::default(), &run).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;

    const UID: &str = "uid-of-nightly";

    fn pipeline() -> Pipeline {
        serde_json::from_value(json!({
            "apiVersion": "toucan.dev/v1alpha1",
            "kind": "Pipeline",
            "metadata": {"name": "nightly", "namespace": "ml", "uid": UID},
            "spec": {"steps": []},
        }))
        .unwrap()
    }

    /// A run `name` created at minute `created`, in `phase` (none: not picked up yet).
    fn run(
        name: &str,
        namespace: &str,
        label: Option<&str>,
        owner_uid: &str,
        created: u32,
        phase: Option<&str>,
    ) -> Arc<PipelineRun> {
        let mut metadata = json!({
            "name": name,
            "namespace": namespace,
            "creationTimestamp": format!("2025-03-01T10:{created:02}:00Z"),
            "ownerReferences": [{
                "apiVersion": "toucan.dev/v1alpha1",
                "kind": "Pipeline",
                "name": "nightly",
                "uid": owner_uid,
                "controller": true,
            }],
        });
        if let Some(label) = label {
            metadata["labels"] = json!({ PIPELINE_LABEL: label });
        }
        let mut run = json!({
            "apiVersion": "toucan.dev/v1alpha1",
            "kind": "PipelineRun",
            "metadata": metadata,
            "spec": {"pipelineRef": {"name": "nightly"}},
        });
        if let Some(phase) = phase {
            run["status"] = json!({ "phase": phase });
        }
        Arc::new(serde_json::from_value(run).unwrap())
    }

    fn names<'a>(runs: impl IntoIterator<Item = &'a PipelineRun>) -> Vec<String> {
        runs.into_iter().map(|r| r.name_any()).collect()
    }

    #[test]
    fn a_schedule_counts_only_the_runs_its_pipeline_started() {
        let cached = vec![
            run("mine", "ml", Some("nightly"), UID, 1, Some("Running")),
            run(
                "mine-done",
                "ml",
                Some("nightly"),
                UID,
                2,
                Some("Succeeded"),
            ),
            run("other-namespace", "prod", Some("nightly"), UID, 3, None),
            run("other-pipeline", "ml", Some("weekly"), UID, 4, None),
            run("unlabelled", "ml", None, UID, 5, None),
            // Left by an earlier Pipeline of the same name, or labelled by someone else.
            run("stranger", "ml", Some("nightly"), "uid-of-another", 6, None),
        ];
        let scheduled = scheduled_runs(&cached, &pipeline());
        assert_eq!(
            names(scheduled.iter().map(Arc::as_ref)),
            ["mine", "mine-done"]
        );
    }

    #[test]
    fn pruning_takes_the_oldest_finished_runs_beyond_the_limit() {
        let runs = vec![
            run("d", "ml", Some("nightly"), UID, 4, Some("Failed")),
            run("a", "ml", Some("nightly"), UID, 1, Some("Succeeded")),
            run("active", "ml", Some("nightly"), UID, 0, Some("Running")),
            run("pending", "ml", Some("nightly"), UID, 0, None),
            run("c", "ml", Some("nightly"), UID, 3, Some("Cancelled")),
            run("b", "ml", Some("nightly"), UID, 2, Some("Succeeded")),
        ];
        assert_eq!(names(beyond_history(&runs, Some(2))), ["a", "b"]);
        assert_eq!(names(beyond_history(&runs, Some(0))), ["a", "b", "c", "d"]);
        assert!(beyond_history(&runs, Some(4)).is_empty());
        // Without a limit, the newest ten are kept.
        assert!(beyond_history(&runs, None).is_empty());
        let many: Vec<_> = (0..12)
            .map(|i| {
                run(
                    &format!("r{i:02}"),
                    "ml",
                    Some("nightly"),
                    UID,
                    i,
                    Some("Succeeded"),
                )
            })
            .collect();
        assert_eq!(names(beyond_history(&many, None)), ["r00", "r01"]);
    }
}
