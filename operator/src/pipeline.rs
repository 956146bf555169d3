//! The Pipeline controller: a Pipeline's status (step count, validity) and its `schedule`.
//!
//! A scheduled Pipeline starts a PipelineRun per firing, named from the firing time so a
//! repeated reconcile cannot start it twice, owned by the Pipeline and labelled with its name.
//! `concurrency` decides what happens while earlier runs are active (see
//! `toucan_core::schedule`), and only the newest `historyLimit` finished scheduled runs are
//! kept. The controller requeues itself for the next firing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;
use toucan_core::api::{Pipeline, PipelineRef, PipelineRun, PipelineRunSpec, PipelineStatus};
use toucan_core::manifest::validate_spec;
use toucan_core::schedule::{self, ScheduleDecision};
use toucan_core::store::{Millis, Phase};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue::{self, Action, Class, Queue, QueueMetrics};
use crate::run::now_ms;
use crate::run::prepare::source_of;
use crate::triggers;

pub const CONTROLLER: &str = "pipeline";
/// Label on the runs a Pipeline's schedule started.
pub const PIPELINE_LABEL: &str = "toucan.dev/pipeline";
/// Annotation on a scheduled run: the firing time it was started for (RFC 3339).
pub const SCHEDULED_AT_ANNOTATION: &str = "toucan.dev/scheduled-at";
const DEFAULT_HISTORY_LIMIT: usize = 10;
const FIELD_MANAGER: &str = "toucan-operator";

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
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: CONTROLLER,
            reason: error.reason(),
        })
        .inc();
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
    set_condition(
        &mut status,
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

    let mut action = Action::requeue(Duration::from_secs(3600));
    if let (Some(cron), true) = (&pl.spec.schedule, problems.is_empty()) {
        let runs_api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
        let runs = runs_api
            .list(&ListParams::default().labels(&format!("{PIPELINE_LABEL}={name}")))
            .await?
            .items;
        let active: Vec<&PipelineRun> = runs.iter().filter(|r| !finished(r)).collect();
        let last = status
            .last_schedule_time
            .as_deref()
            .and_then(parse_time)
            .or_else(|| {
                pl.meta()
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.as_millisecond())
            })
            .unwrap_or_else(now_ms);
        let policy = pl.spec.concurrency.unwrap_or_default();
        let decision = schedule::decide(cron, policy, last, now_ms(), active.len());
        let next = match decision {
            ScheduleDecision::Wait { until } => Some(until),
            ScheduleDecision::Never => None,
            ScheduleDecision::Skip { scheduled, next } => {
                tracing::info!(pipeline = %name, "schedule fired while a run is active: skipped (Forbid)");
                status.last_schedule_time = format_time(scheduled);
                next
            }
            ScheduleDecision::Start {
                scheduled,
                replace,
                next,
            } => {
                if replace {
                    for run in &active {
                        runs_api
                            .delete(&run.name_any(), &DeleteParams::background())
                            .await?;
                    }
                }
                let run_name = schedule::run_name(&name, scheduled);
                create_run(&runs_api, &pl, &run_name, scheduled).await?;
                status.last_run = Some(run_name);
                status.last_schedule_time = format_time(scheduled);
                next
            }
        };
        prune_history(&runs_api, &runs, pl.spec.history_limit).await?;
        if let Some(next) = next {
            action = Action::requeue(Duration::from_millis((next - now_ms()).max(0) as u64 + 50));
        }
    }
    if pl.status.as_ref() != Some(&status) {
        let api: Api<Pipeline> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({
            "apiVersion": toucan_core::api::API_VERSION,
            "kind": "Pipeline",
            "status": status,
        });
        api.patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    }
    Ok(action)
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
            annotations: format_time(scheduled)
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

/// Deletes the oldest finished scheduled runs beyond the history limit.
async fn prune_history(
    api: &Api<PipelineRun>,
    runs: &[PipelineRun],
    limit: Option<u32>,
) -> Result<()> {
    let limit = limit.map_or(DEFAULT_HISTORY_LIMIT, |l| l as usize);
    let mut done: Vec<&PipelineRun> = runs.iter().filter(|r| finished(r)).collect();
    if done.len() <= limit {
        return Ok(());
    }
    done.sort_by_key(|r| {
        r.meta()
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
    });
    for run in &done[..done.len() - limit] {
        match api
            .delete(&run.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn parse_time(text: &str) -> Option<Millis> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn format_time(ms: Millis) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_millisecond(ms)
        .ok()
        .map(|t| t.to_string())
}

fn set_condition(
    status: &mut PipelineStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let previous = status.conditions.iter().find(|c| c.type_ == type_);
    let last_transition_time = match previous {
        Some(p) if p.status == value => p.last_transition_time.clone(),
        _ => Time(
            k8s_openapi::jiff::Timestamp::from_millisecond(now_ms())
                .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        ),
    };
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(Condition {
        type_: type_.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.chars().take(1024).collect(),
        last_transition_time,
        observed_generation: generation,
    });
}
