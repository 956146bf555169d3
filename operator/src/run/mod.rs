//! The PipelineRun controller: the run engine's effects carried out with pods.
//!
//! Each reconcile is one turn of the same loop the local runtime runs, made level-triggered:
//!
//! 1. [`document`]: load the engine's record of the run ([`Run`]) from the metadata store, or
//!    create it — dereference and validate the Pipeline, resolve parameters (an invalid run is
//!    recorded as failed);
//! 2. [`staging`] and [`observe`]: turn what the cluster shows into observations — the stage
//!    pod's result, each attempt's pod (ended, with the launcher's report; gone or deleted,
//!    so lost);
//! 3. [`execute`]: hand them to [`Run::advance`] and carry out its effects — rows in one
//!    transaction, cache lookups, pods created (an existing one of this run is adopted),
//!    claims — feeding their results back until the engine asks for nothing more;
//! 4. save the record, then write a bounded status (only when it changed) and publish the
//!    notable events ([`events`]).
//!
//! Pods are created before the record that names them is saved, so a crash in between finds
//! them again by name; a pod is adopted only when it carries this run's UID. Pod events and
//! launcher reports wake the run at once; a retry's backoff or a claim renewal is a timed
//! requeue.

mod admission;
mod document;
mod events;
pub(crate) mod execute;
pub mod gang;
mod observe;
pub mod pods;
pub mod prepare;
mod staging;
mod status;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::finalizer::Event;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use toucan_core::api::PipelineRun;
use toucan_core::api::labels::RUN_UID_LABEL;
use toucan_core::engine::Run;
use toucan_core::records::{Millis, Phase, RunChanges, RunPhase};
pub use toucan_core::time::now_ms;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;
use crate::queue::{Action, finalizer};
use pods::RunRef;

pub const CONTROLLER: &str = "pipelinerun";
/// Held while a run may have pods or unrecorded results.
pub const FINALIZER: &str = "toucan.dev/run-cleanup";
/// Reconciled at least this often, whatever happens: a missed event costs no more than this.
const RESYNC: Duration = Duration::from_secs(300);
/// A run whose Pipeline does not exist yet is looked at again after this long (and whenever
/// a Pipeline changes).
const MISSING_PIPELINE_RETRY: Duration = Duration::from_secs(10);
/// Attempts one run may have in flight: pods are cheap to queue, the scheduler spreads them.
const MAX_IN_FLIGHT: usize = 1000;

/// The controller's entry point.
pub async fn reconcile(plr: Arc<PipelineRun>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let namespace = plr
        .namespace()
        .ok_or_else(|| Error::MissingField(plr.name_any(), "namespace"))?;
    let api: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, plr, |event| async {
        match event {
            Event::Apply(plr) => apply(&plr, &ctx).await,
            Event::Cleanup(plr) => cleanup(&plr, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// Counts and logs a failed reconcile; the queue schedules the retry (`crate::queue`).
pub fn error_policy(_plr: Arc<PipelineRun>, error: &Error, ctx: Arc<Context>) {
    tracing::warn!(error = %error, "reconcile failed");
    ctx.metrics.reconcile_failed(CONTROLLER, error.reason());
}

fn run_ref(plr: &PipelineRun) -> Result<RunRef> {
    let owner = plr
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingField(plr.name_any(), "uid"))?;
    Ok(RunRef {
        namespace: plr
            .namespace()
            .ok_or_else(|| Error::MissingField(plr.name_any(), "namespace"))?,
        name: plr.name_any(),
        uid: plr
            .uid()
            .ok_or_else(|| Error::MissingField(plr.name_any(), "uid"))?,
        owner: OwnerReference {
            block_owner_deletion: Some(true),
            ..owner
        },
    })
}

fn is_finished(plr: &PipelineRun) -> bool {
    plr.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .and_then(Phase::parse)
        .is_some_and(|p| p.is_terminal())
}

async fn apply(plr: &PipelineRun, ctx: &Context) -> Result<Action> {
    let run_ref = run_ref(plr)?;
    if is_finished(plr) {
        ctx.forget_run(&run_ref.uid);
        return Ok(Action::await_change());
    }
    ctx.remember_run(&run_ref.uid, ObjectRef::from_obj(plr));
    let mut turn = execute::Turn::default();
    let loaded = document::load(ctx, &run_ref.uid).await?;
    let fresh = loaded.is_none();
    let (mut run, effects) = match loaded {
        Some(run) => {
            let effects = run.pending_effects();
            (run, effects)
        }
        None => match document::create(plr, &run_ref, ctx).await? {
            Some(created) => created,
            None => return Ok(Action::requeue(MISSING_PIPELINE_RETRY)),
        },
    };
    let before = run.clone();
    let was_finished = run.finished().is_some();
    let mut observed = execute::carry_out(&run_ref, ctx, &run, effects, &mut turn).await?;
    if fresh {
        // The run's row exists now: the checkpoints it starts from can be recorded for it.
        staging::inherit_checkpoints(plr, &run_ref, ctx).await;
    }
    if run.finished().is_none() {
        if !run.staged {
            observed.extend(staging::observe(plr, &run_ref, ctx, &run).await?);
        }
        let suspend = plr
            .annotations()
            .get(gang::SUSPEND_ANNOTATION)
            .is_some_and(|v| v == "true");
        observed.extend(observe::attempts(&run_ref, ctx, &run, suspend, &mut turn).await?);
        execute::advance(&run_ref, ctx, &mut run, observed, &mut turn).await?;
    }
    if fresh || run != before {
        document::save(ctx, &run).await?;
    }
    if !was_finished && let Some(phase) = run.finished() {
        finished(ctx, &run, phase);
    }
    status::write(plr, ctx, &run).await?;
    events::publish(plr, ctx, &turn).await;
    if run.finished().is_some() {
        // Its own status write does not wake it again (see `crate::triggers`).
        ctx.forget_run(&run_ref.uid);
    }
    Ok(next_wake(&run, turn.next_wake()))
}

/// Counts and traces a run that just ended.
fn finished(ctx: &Context, run: &Run, phase: Phase) {
    ctx.metrics
        .runs_finished
        .get_or_create(&crate::metrics::PhaseLabels {
            phase: phase.as_str(),
        })
        .inc();
    ctx.metrics.runs_active.dec();
    crate::telemetry::run_finished(
        &run.id,
        &run.plan.pipeline,
        run.created_at,
        run.finished_at().unwrap_or_else(now_ms),
        phase.as_str(),
    );
}

/// When to look again without an event: what the engine asked for, else the periodic
/// resync.
fn next_wake(run: &Run, wake: Option<Millis>) -> Action {
    if run.finished().is_some() {
        return Action::await_change();
    }
    match wake {
        Some(at) => Action::requeue(Duration::from_millis((at - now_ms()).max(0) as u64 + 5)),
        None => Action::requeue(RESYNC),
    }
}

/// A deleted run: an unfinished one is recorded as cancelled, and its pods are deleted now
/// rather than when the garbage collector reaches them (through their owner reference), which
/// takes minutes once a study deletes its finished trials' runs by the thousand.
async fn cleanup(plr: &PipelineRun, ctx: &Context) -> Result<Action> {
    if let Some(uid) = plr.uid() {
        if let Some(namespace) = plr.namespace() {
            delete_pods(ctx, &namespace, &uid).await?;
        }
        if let Some(record) = ctx.store.get_run(&uid).await?
            && !record.phase.is_terminal()
        {
            let changes = RunChanges {
                phase: Some(RunPhase {
                    run_id: uid.clone(),
                    phase: Phase::Cancelled,
                    message: Some("the PipelineRun was deleted".into()),
                    finished_at: Some(now_ms()),
                }),
                ..RunChanges::default()
            };
            ctx.store.record(&changes).await?;
            ctx.metrics.runs_active.dec();
        }
        ctx.forget_run(&uid);
    }
    Ok(Action::await_change())
}

/// Deletes the pods of the run with this UID; those already going are left alone.
async fn delete_pods(ctx: &Context, namespace: &str, uid: &str) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("{RUN_UID_LABEL}={uid}");
    let pods = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    for pod in pods.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        objects::delete(&api, &pod.name_any(), &DeleteParams::background()).await?;
    }
    Ok(())
}
