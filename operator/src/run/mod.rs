//! The PipelineRun controller: the engine's decisions, executed as pods.
//!
//! Each reconcile is one pass of the local runtime's loop, made level-triggered:
//!
//! 1. load the run's document from the metadata store (plan, engine state, the attempts in
//!    flight), or create it: dereference and validate the Pipeline, resolve parameters, record
//!    the run;
//! 2. stage `path:` inputs once, through a pod that stores them in the artifact store;
//! 3. observe: every attempt in flight is matched with its pod (from the watch cache, else
//!    the API). An ended pod's result is the launcher's report (from the API, else the
//!    termination message); a pod deleted by someone else makes the node start over as a new
//!    attempt;
//! 4. decide: apply the engine's actions until only starts remain; a start is served from the
//!    cache or becomes a pod with a deterministic name (an existing one is adopted);
//! 5. save the document, then write a bounded status (only when it changed) and Events on
//!    transitions.
//!
//! Pods are created before the document that records them is saved, so a crash in between
//! finds them again by name; results are recorded in one store transaction per node. Pod
//! events requeue the run at once (no fixed delay between a step ending and its dependents
//! starting); a retry's backoff is a timed requeue.

pub mod pods;
pub mod prepare;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::Event;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde::{Deserialize, Serialize};
use toucan_core::api::{Pipeline, PipelineRun};
use toucan_core::engine::{
    Action as EngineAction, Invocation, NodeState, RunPlan, RunState, child_name, decide, step_of,
};
use toucan_core::launch::{LaunchReport, STAGE_NODE, StageInput, StageSpec};
use toucan_core::store::{
    AttemptRecord, CacheEntry, DocumentKind, Millis, Phase, RunRecord, StepCompletion, StepOutputs,
    StepRecord,
};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::queue::{Action, finalizer};
use pods::{LauncherPod, PodOutcome, RunRef, SOURCE_DIR_ANNOTATION};
use prepare::Invalid;

pub const CONTROLLER: &str = "pipelinerun";
/// Held while a run may have pods or unrecorded results.
pub const FINALIZER: &str = "toucan.dev/run-cleanup";
/// Reconciled at least this often, whatever happens: a missed event costs no more than this.
const RESYNC: Duration = Duration::from_secs(300);
/// A run whose Pipeline does not exist yet is looked at again after this long (and whenever
/// a Pipeline changes).
const MISSING_PIPELINE_RETRY: Duration = Duration::from_secs(10);
/// Pods created at once by one reconcile.
const CREATE_CONCURRENCY: usize = 16;
/// Starts one decision may hand out: pods are cheap to queue, the scheduler spreads them.
const MAX_STARTS: usize = 1000;

/// An attempt in flight: the pod that runs it and what its result is recorded with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InFlight {
    pub attempt: u32,
    pub pod: String,
    pub started_at: Millis,
    pub key: String,
    pub cache_writable: bool,
}

/// What the operator keeps of a run between reconciles, as one store document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDocument {
    pub plan: RunPlan,
    pub state: RunState,
    pub created_at: Millis,
    /// `path:` inputs are in the artifact store (or there are none).
    pub staged: bool,
    pub in_flight: BTreeMap<String, InFlight>,
    /// When each node first started and when it finished, for step rows and start latency.
    pub started: BTreeMap<String, Millis>,
    pub finished: BTreeMap<String, Millis>,
    /// Cache keys and their components, by node.
    pub keys: BTreeMap<String, (String, serde_json::Value)>,
}

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
    ctx.metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels {
            controller: CONTROLLER,
            reason: error.reason(),
        })
        .inc();
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
    let run = run_ref(plr)?;
    if is_finished(plr) {
        ctx.forget_run(&run.uid);
        return Ok(Action::await_change());
    }
    ctx.remember_run(&run.uid, ObjectRef::from_obj(plr));
    let mut doc = match load(ctx, &run.uid).await? {
        Some(doc) => doc,
        None => match start(plr, &run, ctx).await? {
            Some(doc) => doc,
            None => return Ok(Action::requeue(MISSING_PIPELINE_RETRY)),
        },
    };
    let before = serde_json::to_value(&doc).ok();
    let mut events = Vec::new();

    if !doc.staged {
        stage(plr, &run, ctx, &mut doc, &mut events).await?;
    }
    if doc.staged && doc.state.finished.is_none() {
        observe(&run, ctx, &mut doc, &mut events).await?;
        advance(&run, ctx, &mut doc, &mut events).await?;
    }
    if serde_json::to_value(&doc).ok() != before {
        save(ctx, &run.uid, &doc).await?;
    }
    if let Some(phase) = doc.state.finished
        && !is_finished(plr)
    {
        let message = doc.state.failure_summary();
        ctx.store
            .set_run_phase(&run.uid, phase, message.as_deref(), Some(now_ms()))
            .await?;
        ctx.metrics
            .runs_finished
            .get_or_create(&crate::metrics::PhaseLabels {
                phase: phase.as_str(),
            })
            .inc();
        ctx.metrics.runs_active.dec();
        crate::telemetry::run_finished(
            &run.uid,
            &doc.plan.pipeline,
            doc.created_at,
            now_ms(),
            phase.as_str(),
        );
        let (type_, reason) = if phase == Phase::Succeeded {
            (EventType::Normal, "RunSucceeded")
        } else {
            (EventType::Warning, "RunFailed")
        };
        events.push(event(
            type_,
            reason,
            message.unwrap_or_else(|| format!("run {phase}")),
        ));
    }
    status::write(plr, ctx, &doc).await?;
    publish(plr, ctx, events).await;
    if doc.state.finished.is_some() {
        // Its own status write does not wake it again (see `crate::triggers`).
        ctx.forget_run(&run.uid);
    }
    Ok(next_wake(&doc))
}

/// When to look again without an event: a retry's backoff, or the periodic resync.
fn next_wake(doc: &RunDocument) -> Action {
    if doc.state.finished.is_some() {
        return Action::await_change();
    }
    let now = now_ms();
    let wake = doc
        .state
        .nodes
        .values()
        .filter(|n| n.phase == Phase::Pending)
        .filter_map(|n| n.retry_at)
        .min();
    match wake {
        Some(at) => Action::requeue(Duration::from_millis((at - now).max(0) as u64 + 5)),
        None => Action::requeue(RESYNC),
    }
}

async fn load(ctx: &Context, run_id: &str) -> Result<Option<RunDocument>> {
    let Some(body) = ctx
        .store
        .get_run_document(run_id, DocumentKind::State, "")
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_value(body)
        .map(Some)
        .map_err(|e| Error::CorruptState {
            run_id: run_id.to_string(),
            detail: e.to_string(),
        })
}

async fn save(ctx: &Context, run_id: &str, doc: &RunDocument) -> Result<()> {
    let body = serde_json::to_value(doc).map_err(|e| Error::CorruptState {
        run_id: run_id.to_string(),
        detail: e.to_string(),
    })?;
    ctx.store
        .put_run_document(run_id, DocumentKind::State, "", &body, now_ms())
        .await?;
    Ok(())
}

/// Creates the run's record and document. None: the Pipeline is not there yet. An invalid
/// run is recorded as failed, with the problems as its message.
async fn start(plr: &PipelineRun, run: &RunRef, ctx: &Context) -> Result<Option<RunDocument>> {
    let referenced = match &plr.spec.pipeline_ref {
        Some(r) => Api::<Pipeline>::namespaced(ctx.client.clone(), &run.namespace)
            .get_opt(&r.name)
            .await?
            .map(|p| (r.name.clone(), p.spec)),
        None => None,
    };
    let planned = prepare::plan(
        plr,
        &run.namespace,
        &run.name,
        referenced.as_ref().map(|(n, s)| (n.as_str(), s)),
    );
    let now = now_ms();
    let (plan, invalid) = match planned {
        Ok(plan) => (plan, None),
        Err(Invalid::MissingPipeline(name)) => {
            status::waiting_for_pipeline(plr, ctx, &name).await?;
            return Ok(None);
        }
        Err(invalid) => {
            // An empty plan records the failure; nothing will run.
            let spec = plr.spec.pipeline_spec.clone().unwrap_or_default();
            let plan = RunPlan::new(
                &format!("{}/{}", run.namespace, run.name),
                spec,
                BTreeMap::new(),
            );
            (plan, Some(invalid.to_string()))
        }
    };
    let record = RunRecord {
        id: run.uid.clone(),
        pipeline: plan.pipeline.clone(),
        phase: if invalid.is_some() {
            Phase::Failed
        } else {
            Phase::Running
        },
        params: serde_json::to_value(&plan.params).unwrap_or_default(),
        spec: serde_json::to_value(&plan).unwrap_or_default(),
        created_at: now,
        finished_at: invalid.as_ref().map(|_| now),
        message: invalid.clone(),
    };
    if ctx.store.get_run(&run.uid).await?.is_none() {
        ctx.store.create_run(&record).await?;
    }
    let mut state = RunState::new(&plan);
    let staged = prepare::path_inputs(&plan).is_empty();
    let mut events = vec![];
    if let Some(message) = &invalid {
        state.finished = Some(Phase::Failed);
        events.push(event(EventType::Warning, "InvalidRun", message.clone()));
    } else {
        ctx.metrics.runs_active.inc();
        events.push(event(
            EventType::Normal,
            "RunStarted",
            format!("run {} of {}", run.uid, plan.pipeline),
        ));
    }
    let doc = RunDocument {
        plan,
        state,
        created_at: now,
        staged,
        in_flight: BTreeMap::new(),
        started: BTreeMap::new(),
        finished: BTreeMap::new(),
        keys: BTreeMap::new(),
    };
    save(ctx, &run.uid, &doc).await?;
    publish(plr, ctx, events).await;
    Ok(Some(doc))
}

/// Stores the run's `path:` inputs through one pod that runs the launcher's `stage` command in
/// the image of the first step that has such inputs, from the directory named by the
/// `toucan.dev/source-dir` annotation (of the run, else the Pipeline).
async fn stage(
    plr: &PipelineRun,
    run: &RunRef,
    ctx: &Context,
    doc: &mut RunDocument,
    events: &mut Vec<KubeEvent>,
) -> Result<()> {
    let inputs = prepare::path_inputs(&doc.plan);
    let Some(first) = inputs.first() else {
        doc.staged = true;
        return Ok(());
    };
    let pod_name = pods::pod_name(&run.name, STAGE_NODE, 1);
    match find_pod(ctx, run, &pod_name).await? {
        None => {
            let Some(sp) = doc.plan.step(&first.0) else {
                doc.staged = true;
                return Ok(());
            };
            let spec = StageSpec {
                run_id: run.uid.clone(),
                artifacts: ctx.pod_defaults.artifacts.clone(),
                inputs: inputs
                    .iter()
                    .map(|(step, input, path)| StageInput {
                        step: step.clone(),
                        input: input.clone(),
                        path: path.clone(),
                    })
                    .collect(),
            };
            let source_dir = source_dir(plr, ctx, run).await;
            let pod = pods::build_pod(
                run,
                &ctx.pod_defaults,
                &LauncherPod {
                    node: STAGE_NODE,
                    step: STAGE_NODE,
                    attempt: 1,
                    image: &sp.step.image,
                    subcommand: "stage",
                    spec_json: serde_json::to_string(&spec).unwrap_or_default(),
                    resources: None,
                    pod: sp.step.pod.as_ref(),
                    timeout_ms: None,
                    working_dir: source_dir,
                },
            );
            create_pod(ctx, run, pod).await?;
        }
        Some(pod) => {
            if let PodOutcome::Ended {
                exit_code,
                reason,
                report,
                message,
            } = pods::outcome(&pod)
            {
                let report = match api_report(ctx, &run.uid, STAGE_NODE, 1).await? {
                    Some(r) => Some(r),
                    None => report,
                };
                match report.filter(|r| r.succeeded) {
                    Some(report) => {
                        for (key, artifact) in report.outputs.artifacts {
                            if let Some((step, input)) = key.split_once('/') {
                                doc.plan
                                    .local_inputs
                                    .entry(step.to_string())
                                    .or_default()
                                    .insert(input.to_string(), artifact);
                            }
                        }
                        doc.staged = true;
                    }
                    None => {
                        let why = failure_text(exit_code, reason.as_deref(), message.as_deref());
                        let text = format!("storing the run's path: inputs failed: {why}");
                        doc.state.finished = Some(Phase::Failed);
                        for node in doc.state.nodes.values_mut() {
                            node.phase = Phase::Skipped;
                            node.message = Some("inputs could not be staged".into());
                        }
                        events.push(event(EventType::Warning, "StagingFailed", text.clone()));
                        ctx.store
                            .set_run_phase(&run.uid, Phase::Failed, Some(&text), Some(now_ms()))
                            .await?;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn source_dir(plr: &PipelineRun, ctx: &Context, run: &RunRef) -> Option<String> {
    if let Some(dir) = plr.annotations().get(SOURCE_DIR_ANNOTATION) {
        return Some(dir.clone());
    }
    let name = &plr.spec.pipeline_ref.as_ref()?.name;
    let pipeline = Api::<Pipeline>::namespaced(ctx.client.clone(), &run.namespace)
        .get_opt(name)
        .await
        .ok()??;
    pipeline.annotations().get(SOURCE_DIR_ANNOTATION).cloned()
}

/// A pod by name: from the watch cache, else from the API (a pod just created may not have
/// reached the cache yet).
async fn find_pod(ctx: &Context, run: &RunRef, name: &str) -> Result<Option<Arc<Pod>>> {
    let key = ObjectRef::<Pod>::new(name).within(&run.namespace);
    if let Some(pod) = ctx.pods.get(&key) {
        return Ok(Some(pod));
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    Ok(api.get_opt(name).await?.map(Arc::new))
}

async fn api_report(
    ctx: &Context,
    run_id: &str,
    node: &str,
    attempt: u32,
) -> Result<Option<LaunchReport>> {
    let body = ctx
        .store
        .get_run_document(
            run_id,
            DocumentKind::Report,
            &toucan_core::http::report_key(node, attempt),
        )
        .await?;
    Ok(body.and_then(|b| serde_json::from_value(b).ok()))
}

fn failure_text(exit_code: Option<i32>, reason: Option<&str>, message: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(code) = exit_code {
        parts.push(format!("exit code {code}"));
    }
    if let Some(reason) = reason {
        parts.push(reason.to_string());
    }
    if let Some(message) = message.map(str::trim).filter(|m| !m.is_empty()) {
        // The message may be the log's tail (FallbackToLogsOnError): keep it short.
        let tail: String = message
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        parts.push(tail);
    }
    if parts.is_empty() {
        "the pod failed".into()
    } else {
        parts.join(": ")
    }
}

/// Matches every attempt in flight with its pod and records those that ended.
async fn observe(
    run: &RunRef,
    ctx: &Context,
    doc: &mut RunDocument,
    events: &mut Vec<KubeEvent>,
) -> Result<()> {
    let in_flight: Vec<(String, InFlight)> = doc
        .in_flight
        .iter()
        .map(|(n, f)| (n.clone(), f.clone()))
        .collect();
    for (node, flight) in in_flight {
        let Some(pod) = find_pod(ctx, run, &flight.pod).await? else {
            restart_deleted(ctx, doc, run, &node, &flight, events).await?;
            continue;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let PodOutcome::Ended {
            exit_code,
            reason,
            report: from_message,
            message,
        } = pods::outcome(&pod)
        else {
            continue;
        };
        let report = match api_report(ctx, &run.uid, &node, flight.attempt).await? {
            Some(r) => r,
            None => match from_message {
                Some(r) => r,
                None => LaunchReport {
                    succeeded: false,
                    exit_code,
                    signal: None,
                    outputs: StepOutputs::default(),
                    error: Some(failure_text(
                        exit_code,
                        reason.as_deref(),
                        message.as_deref(),
                    )),
                    duration_ms: 0,
                },
            },
        };
        // Killed because someone deleted its pod: that is not the step failing.
        if deleting && !report.succeeded {
            restart_deleted(ctx, doc, run, &node, &flight, events).await?;
            continue;
        }
        finish_attempt(ctx, doc, run, &node, &flight, report, events).await?;
        doc.in_flight.remove(&node);
    }
    Ok(())
}

/// An attempt whose pod was deleted by someone else before it finished: recorded as failed,
/// and the node starts over as a new attempt without using up its retries.
async fn restart_deleted(
    ctx: &Context,
    doc: &mut RunDocument,
    run: &RunRef,
    node: &str,
    flight: &InFlight,
    events: &mut Vec<KubeEvent>,
) -> Result<()> {
    record_attempt(
        ctx,
        run,
        node,
        flight,
        Phase::Failed,
        None,
        Some("its pod was deleted before it finished".into()),
    )
    .await?;
    doc.in_flight.remove(node);
    if let Some(n) = doc.state.nodes.get_mut(node) {
        n.phase = Phase::Pending;
        n.retry_at = None;
        n.message = Some("its pod was deleted; starting a new attempt".into());
    }
    events.push(event(
        EventType::Warning,
        "PodDeleted",
        format!(
            "the pod of {node} (attempt {}) was deleted; starting a new attempt",
            flight.attempt
        ),
    ));
    Ok(())
}

/// Records an attempt's result: the node's new state, the attempt row, its artifacts and its
/// cache entry, in one transaction.
async fn finish_attempt(
    ctx: &Context,
    doc: &mut RunDocument,
    run: &RunRef,
    node: &str,
    flight: &InFlight,
    report: LaunchReport,
    events: &mut Vec<KubeEvent>,
) -> Result<()> {
    let now = now_ms();
    let attempt = AttemptRecord {
        run_id: run.uid.clone(),
        step: node.to_string(),
        attempt: flight.attempt,
        phase: Phase::Succeeded,
        exit_code: report.exit_code,
        started_at: flight.started_at,
        finished_at: Some(now),
        log_ref: Some(format!("pod/{}/{}", run.namespace, flight.pod)),
        message: None,
    };
    let mut completion = StepCompletion {
        step: step_row(doc, &run.uid, node, now),
        attempt: None,
        artifacts: Vec::new(),
        cache_entry: None,
    };
    if report.succeeded {
        doc.state
            .record_success(node, report.outputs.clone(), false);
        doc.finished.insert(node.to_string(), now);
        completion.attempt = Some(attempt);
        completion.artifacts = report.outputs.artifact_records(&run.uid, node, now);
        completion.cache_entry = flight.cache_writable.then(|| CacheEntry {
            key: flight.key.clone(),
            outputs: report.outputs.clone(),
            run_id: run.uid.clone(),
            step: node.to_string(),
            created_at: now,
        });
    } else {
        let message = report.error.clone().unwrap_or_else(|| "failed".into());
        let phase = doc.state.record_failure(&doc.plan, node, now, &message);
        if phase.is_terminal() {
            doc.finished.insert(node.to_string(), now);
        }
        let (reason, text) = if phase == Phase::Pending {
            (
                "StepRetrying",
                format!(
                    "{node} attempt {} failed ({message}); retrying",
                    flight.attempt
                ),
            )
        } else {
            ("StepFailed", format!("{node} failed: {message}"))
        };
        events.push(event(EventType::Warning, reason, text));
        completion.attempt = Some(AttemptRecord {
            phase: Phase::Failed,
            message: Some(message),
            ..attempt
        });
    }
    completion.step = step_row(doc, &run.uid, node, now);
    ctx.store.complete_step(&completion).await?;
    let outcome = completion
        .attempt
        .as_ref()
        .map_or(Phase::Failed, |a| a.phase);
    crate::telemetry::step_attempt(
        &run.uid,
        node,
        flight.attempt,
        flight.started_at,
        now,
        outcome.as_str(),
    );
    Ok(())
}

async fn record_attempt(
    ctx: &Context,
    run: &RunRef,
    node: &str,
    flight: &InFlight,
    phase: Phase,
    exit_code: Option<i32>,
    message: Option<String>,
) -> Result<()> {
    ctx.store
        .upsert_attempt(&AttemptRecord {
            run_id: run.uid.clone(),
            step: node.to_string(),
            attempt: flight.attempt,
            phase,
            exit_code,
            started_at: flight.started_at,
            finished_at: phase.is_terminal().then(now_ms),
            log_ref: Some(format!("pod/{}/{}", run.namespace, flight.pod)),
            message,
        })
        .await?;
    Ok(())
}

/// The store row of a node as the document has it now.
fn step_row(doc: &RunDocument, run_id: &str, node: &str, now: Millis) -> StepRecord {
    let n = doc
        .state
        .node(node)
        .cloned()
        .unwrap_or_else(NodeState::pending);
    let (cache_key, cache_components) = match doc.keys.get(node) {
        Some((k, c)) => (Some(k.clone()), Some(c.clone())),
        None => (None, None),
    };
    StepRecord {
        run_id: run_id.to_string(),
        name: node.to_string(),
        phase: n.phase,
        cache_key,
        cache_components,
        cached: n.cached,
        attempts: n.attempts,
        started_at: doc.started.get(node).copied(),
        finished_at: n
            .phase
            .is_terminal()
            .then(|| doc.finished.get(node).copied().unwrap_or(now)),
        outputs: n.outputs,
        message: n.message,
    }
}

/// Applies the engine's decisions until only starts remain; serves starts from the cache or
/// creates their pods.
async fn advance(
    run: &RunRef,
    ctx: &Context,
    doc: &mut RunDocument,
    events: &mut Vec<KubeEvent>,
) -> Result<()> {
    let mut to_create: Vec<Invocation> = Vec::new();
    loop {
        let running = doc.in_flight.len() + to_create.len();
        let actions = decide(
            &doc.plan,
            &doc.state,
            now_ms(),
            MAX_STARTS.saturating_sub(running),
        );
        let mut changed = false;
        for action in actions {
            if let EngineAction::WakeAt(_) = action {
                continue;
            }
            doc.state.apply(&action);
            changed = true;
            let now = now_ms();
            match &action {
                EngineAction::Start(inv) => {
                    let components = serde_json::to_value(&inv.key).unwrap_or_default();
                    doc.keys
                        .insert(inv.node.clone(), (inv.key.key().0, components));
                    doc.started.entry(inv.node.clone()).or_insert(now);
                    if inv.cache.enabled {
                        let hit = toucan_core::cache::lookup(
                            ctx.store.as_ref(),
                            &ctx.artifacts,
                            inv,
                            now,
                        )
                        .await?;
                        ctx.metrics.cache_lookup(hit.is_some());
                        if let Some(outputs) = hit {
                            serve_cached(ctx, doc, run, inv, outputs).await?;
                            continue;
                        }
                    }
                    to_create.push((**inv).clone());
                }
                EngineAction::FanOut { step, items } => {
                    doc.started.entry(step.clone()).or_insert(now);
                    save_row(ctx, doc, run, step).await?;
                    for i in 0..items.len() {
                        save_row(ctx, doc, run, &child_name(step, i)).await?;
                    }
                }
                EngineAction::Skip { node, .. }
                | EngineAction::Fail { node, .. }
                | EngineAction::Cancel { node } => {
                    doc.finished.entry(node.clone()).or_insert(now);
                    save_row(ctx, doc, run, node).await?;
                }
                EngineAction::CompleteFanOut { step, .. } => {
                    doc.finished.entry(step.clone()).or_insert(now);
                    save_row(ctx, doc, run, step).await?;
                }
                EngineAction::Finish { .. } | EngineAction::WakeAt(_) => {}
            }
        }
        if !changed {
            break;
        }
    }
    if to_create.is_empty() {
        return Ok(());
    }
    let plan: &RunDocument = doc;
    let created: Vec<(Invocation, Result<bool>)> = futures::stream::iter(to_create)
        .map(|inv| async move {
            let pod = step_pod(run, ctx, doc_plan_step(plan, &inv), &inv);
            let result = create_pod(ctx, run, pod).await;
            (inv, result)
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    let now = now_ms();
    for (inv, result) in created {
        match result {
            Ok(new) => {
                if new {
                    ctx.metrics.step_pods_created.inc();
                    let ready_at = ready_at(doc, &inv.node);
                    ctx.metrics
                        .step_start_latency
                        .observe(((now - ready_at).max(0) as f64) / 1000.0);
                }
                let flight = InFlight {
                    attempt: inv.attempt,
                    pod: pods::pod_name(&run.name, &inv.node, inv.attempt),
                    started_at: now,
                    key: inv.key.key().0,
                    cache_writable: inv.cache_writable,
                };
                save_row(ctx, doc, run, &inv.node).await?;
                record_attempt(ctx, run, &inv.node, &flight, Phase::Running, None, None).await?;
                doc.in_flight.insert(inv.node.clone(), flight);
            }
            // The API refused the pod itself (invalid spec, quota, admission): a failed attempt.
            Err(Error::Kube(kube::Error::Api(status)))
                if status.code >= 400 && status.code < 500 && status.code != 429 =>
            {
                let message = format!("creating the pod: {}", status.message);
                let phase = doc
                    .state
                    .record_failure(&doc.plan, &inv.node, now, &message);
                if phase.is_terminal() {
                    doc.finished.insert(inv.node.clone(), now);
                }
                events.push(event(
                    EventType::Warning,
                    "PodRejected",
                    format!("{}: {message}", inv.node),
                ));
                save_row(ctx, doc, run, &inv.node).await?;
            }
            // Anything else is retried by the next reconcile: the state is not saved, so the
            // same starts come again and find their pods by name.
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn doc_plan_step<'a>(doc: &'a RunDocument, inv: &Invocation) -> Option<&'a toucan_core::api::Step> {
    doc.plan.step(&inv.step).map(|sp| sp.step)
}

/// When a node became ready: its last dependency's end, or the run's start.
fn ready_at(doc: &RunDocument, node: &str) -> Millis {
    let deps = doc
        .plan
        .step(step_of(node))
        .map(|sp| {
            sp.deps
                .iter()
                .filter_map(|d| doc.finished.get(d))
                .copied()
                .max()
        })
        .unwrap_or_default();
    let retry = doc.state.node(node).and_then(|n| n.retry_at);
    deps.into_iter()
        .chain(retry)
        .max()
        .unwrap_or(doc.created_at)
}

fn step_pod(
    run: &RunRef,
    ctx: &Context,
    step: Option<&toucan_core::api::Step>,
    inv: &Invocation,
) -> Pod {
    let spec = pods::launch_spec(&run.uid, inv, &ctx.pod_defaults.artifacts);
    pods::build_pod(
        run,
        &ctx.pod_defaults,
        &LauncherPod {
            node: &inv.node,
            step: &inv.step,
            attempt: inv.attempt,
            image: &inv.image,
            subcommand: "exec",
            spec_json: serde_json::to_string(&spec).unwrap_or_default(),
            resources: step.and_then(|s| s.resources.as_ref()),
            pod: step.and_then(|s| s.pod.as_ref()),
            timeout_ms: inv.timeout_ms,
            working_dir: None,
        },
    )
}

/// Creates a pod; an existing one of the same name (created by an earlier pass) is adopted.
/// Returns whether it was new.
async fn create_pod(ctx: &Context, run: &RunRef, pod: Pod) -> Result<bool> {
    ensure_service_account(ctx, &run.namespace).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    match api.create(&PostParams::default(), &pod).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The step service account exists in `namespace` (created when missing).
async fn ensure_service_account(ctx: &Context, namespace: &str) -> Result<()> {
    if ctx
        .service_accounts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(namespace)
    {
        return Ok(());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), namespace);
    let name = &ctx.pod_defaults.service_account;
    if api.get_opt(name).await?.is_none() {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    pods::MANAGED_BY_LABEL.to_string(),
                    pods::MANAGED_BY.to_string(),
                )])),
                ..Default::default()
            },
            ..ServiceAccount::default()
        };
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    ctx.service_accounts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(namespace.to_string());
    Ok(())
}

async fn serve_cached(
    ctx: &Context,
    doc: &mut RunDocument,
    run: &RunRef,
    inv: &Invocation,
    outputs: StepOutputs,
) -> Result<()> {
    let now = now_ms();
    doc.state.record_success(&inv.node, outputs, true);
    // Serving from the cache is not an attempt.
    if let Some(n) = doc.state.nodes.get_mut(&inv.node) {
        n.attempts = inv.attempt.saturating_sub(1);
    }
    doc.finished.insert(inv.node.clone(), now);
    ctx.store
        .complete_step(&StepCompletion {
            step: step_row(doc, &run.uid, &inv.node, now),
            attempt: None,
            artifacts: Vec::new(),
            cache_entry: None,
        })
        .await?;
    Ok(())
}

async fn save_row(ctx: &Context, doc: &RunDocument, run: &RunRef, node: &str) -> Result<()> {
    ctx.store
        .upsert_step(&step_row(doc, &run.uid, node, now_ms()))
        .await?;
    Ok(())
}

/// A deleted run: an unfinished one is recorded as cancelled (its pods go with it through
/// their owner reference).
async fn cleanup(plr: &PipelineRun, ctx: &Context) -> Result<Action> {
    if let Some(uid) = plr.uid() {
        if let Some(record) = ctx.store.get_run(&uid).await?
            && !record.phase.is_terminal()
        {
            ctx.store
                .set_run_phase(
                    &uid,
                    Phase::Cancelled,
                    Some("the PipelineRun was deleted"),
                    Some(now_ms()),
                )
                .await?;
            ctx.metrics.runs_active.dec();
        }
        ctx.forget_run(&uid);
    }
    Ok(Action::await_change())
}

fn event(type_: EventType, reason: &str, note: String) -> KubeEvent {
    KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    }
}

async fn publish(plr: &PipelineRun, ctx: &Context, events: Vec<KubeEvent>) {
    let reference = plr.object_ref(&());
    for e in events {
        if let Err(err) = ctx.recorder.publish(&e, &reference).await {
            tracing::warn!(reason = %e.reason, "publishing an event: {err}");
        }
    }
}

pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or_default()
}
