//! Distributed steps in a cluster: the gang engine's effects carried out with pods.
//!
//! One attempt of a step with `roles` is one gang. It has:
//!
//! - a headless Service, named like the attempt's pod would be (`RUN-NODE-ATTEMPT`), through
//!   which its replicas reach each other by stable names, `worker-1.SERVICE`, as in Kubeflow;
//! - one pod per replica and incarnation, `RUN-NODE-ATTEMPT-ROLE-INDEX-INCARNATION`, with
//!   `hostname` `ROLE-INDEX` and `subdomain` the Service, the env contract with those names,
//!   Kueue's pod-group label and count, and a scheduling gate that [`admission`] removes from
//!   all of them together once the whole gang fits the nodes;
//! - a record in the metadata store ([`GangRecord`], the run document `Gang` `NODE/ATTEMPT`):
//!   the engine's [`Gang`], which `toucan describe job` reads as the local runtime's, and the
//!   invocation that later incarnations' pods are made from.
//!
//! Each reconcile is one turn: the pods of the replicas still active become observations
//! (running; ended, with the launcher's report; gone or marked `DisruptionTarget`, so
//! preempted), [`Gang::advance`] decides, its effects are carried out (pods created, or
//! deleted so that their launchers pass SIGTERM on), and the record is saved. Pods are created
//! before the record that names them, and found again by name, so the operator may die at any
//! point: a new incarnation starts only once every pod of the previous one is gone or ended,
//! and no replica runs twice at once.
//!
//! A PipelineRun annotated `toucan.dev/suspend: "true"` suspends its gangs (their pods go, the
//! restarts are not counted); removing the annotation resumes them from their checkpoints.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, PodSchedulingGate, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toucan_core::engine::gang::{
    self, Address, Gang, GangEffect, GangEvent, GangObservation, ReplicaEnd, ReplicaId,
    ReplicaState,
};
use toucan_core::engine::run::Observation;
use toucan_core::engine::{GangInvocation, Invocation, Run};
use toucan_core::launch::LaunchReport;
use toucan_core::records::{DocumentKind, Millis};

use super::admission::{self, Verdict};
use super::execute::{create_pod, find_pod};
use super::now_ms;
use super::observe::{ended_report, pod_report};
use super::pods::{self, LauncherPod, RunRef, dns_label};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;
pub use toucan_core::api::labels::{
    GANG_LABEL, INCARNATION_LABEL, REPLICA_LABEL, SUSPEND_ANNOTATION,
};

/// The scheduling gate a gang's pods are created with.
pub const GATE: &str = "toucan.dev/gang";
/// Kueue's pod-group label and count: a cluster running Kueue admits the gang as one workload.
const KUEUE_GROUP_LABEL: &str = "kueue.x-k8s.io/pod-group-name";
const KUEUE_COUNT_ANNOTATION: &str = "kueue.x-k8s.io/pod-group-total-count";
/// The rendezvous port is taken from this range by a hash of the gang: pods sharing a network
/// (the test cluster's process nodes) then rarely share one.
const PORT_BASE: u16 = 20000;
const PORT_SPAN: u16 = 10000;
/// How much of a failed replica's log is kept with its failure.
const LOG_TAIL_BYTES: i64 = 4096;
/// How soon a gang waiting for room looks again.
const ADMISSION_RETRY_MS: Millis = 2000;

/// The operator's record of one gang attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GangRecord {
    #[serde(flatten)]
    pub gang: Gang,
    pub invocation: Invocation,
    /// Why the gang's pods are still gated, while they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

/// What one gang turn asks of the run's reconcile.
#[derive(Debug, Default)]
pub struct Turn {
    /// The attempt's end, once its gang finished.
    pub ended: Option<Observation>,
    /// Look again by then without an event.
    pub wake: Option<Millis>,
    pub events: Vec<GangEvent>,
    /// Why the gang started waiting for room, when it did this turn.
    pub waiting: Option<String>,
}

/// The headless Service of one gang attempt, and its replicas' subdomain.
pub fn service_name(run: &str, node: &str, attempt: u32) -> String {
    let name = dns_label(&format!("{run}-{node}-{attempt}"));
    // A Service's name must start with a letter.
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        dns_label(&format!("g-{name}"))
    } else {
        name
    }
}

/// The pod of one replica of one incarnation.
pub fn replica_pod_name(
    run: &str,
    node: &str,
    attempt: u32,
    replica: ReplicaId,
    incarnation: u32,
) -> String {
    dns_label(&format!("{run}-{node}-{attempt}-{replica}-{incarnation}"))
}

/// Where a replica is reached: `worker-1.SERVICE` and the gang's port.
fn address(service: &str, replica: ReplicaId) -> Address {
    Address {
        host: format!("{replica}.{service}"),
        port: rendezvous_port(service),
    }
}

fn rendezvous_port(service: &str) -> u16 {
    let hash = Sha256::digest(service.as_bytes());
    PORT_BASE + u16::from_be_bytes([hash[0], hash[1]]) % PORT_SPAN
}

/// Starts the gang of `inv` (or finds it started, when an earlier pass did) and returns its
/// `Launched` observation.
pub async fn launch(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    inv: &Invocation,
    turn: &mut Turn,
) -> Result<Observation> {
    let key = gang::record_key(&inv.node, inv.attempt);
    let gang_inv = inv.gang.as_ref().ok_or_else(|| Error::CorruptState {
        run_id: run_ref.uid.clone(),
        detail: format!("{} launched as a gang without one", inv.node),
    })?;
    if load(ctx, &run_ref.uid, &key).await?.is_none() {
        let mut record = GangRecord {
            gang: Gang::new(gang_inv.plan.clone(), false),
            invocation: inv.clone(),
            waiting: None,
        };
        ensure_service(run_ref, ctx, &inv.node, inv.attempt).await?;
        let effects = record.gang.advance(Vec::new());
        carry_out(run_ref, ctx, run, &mut record, effects, turn).await?;
        admit(run_ref, ctx, run, &mut record, turn).await?;
        save(ctx, &run_ref.uid, &key, &record).await?;
    }
    let leader = replica_pod_name(
        &run_ref.name,
        &inv.node,
        inv.attempt,
        gang_inv.plan.leader(),
        0,
    );
    Ok(Observation::Launched {
        node: inv.node.clone(),
        attempt: inv.attempt,
        log: Some(format!("pod/{}/{leader}", run_ref.namespace)),
    })
}

/// One turn of the gang of `node`'s attempt `attempt`: its pods observed, its engine
/// advanced, its effects carried out, its record saved.
pub async fn observe(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    node: &str,
    attempt: u32,
    suspend: bool,
) -> Result<Turn> {
    let key = gang::record_key(node, attempt);
    let mut turn = Turn::default();
    let Some(mut record) = load(ctx, &run_ref.uid, &key).await? else {
        turn.ended = Some(Observation::Lost {
            node: node.to_string(),
            attempt,
            reason: "its gang's record is gone".into(),
        });
        return Ok(turn);
    };
    if let Some(outcome) = record.gang.outcome.clone() {
        // Finished and saved, but the run did not hear of it (the operator stopped in
        // between): the same end again.
        turn.ended = Some(Observation::Ended {
            node: node.to_string(),
            attempt,
            report: record.gang.report(outcome, 0),
        });
        return Ok(turn);
    }
    let before = record.clone();
    let mut observed = replica_observations(run_ref, ctx, &record).await?;
    if suspend && !record.gang.suspended {
        observed.push(GangObservation::Suspend);
    } else if !suspend && record.gang.suspended {
        observed.push(GangObservation::Resume);
    }
    let effects = record.gang.advance(observed);
    carry_out(run_ref, ctx, run, &mut record, effects, &mut turn).await?;
    if turn.ended.is_none() {
        admit(run_ref, ctx, run, &mut record, &mut turn).await?;
    }
    if record != before {
        save(ctx, &run_ref.uid, &key, &record).await?;
    }
    Ok(turn)
}

/// What the pods of the replicas still active show.
async fn replica_observations(
    run_ref: &RunRef,
    ctx: &Context,
    record: &GangRecord,
) -> Result<Vec<GangObservation>> {
    let inv = &record.invocation;
    let incarnation = record.gang.incarnation;
    let leader = record.gang.plan.leader();
    let mut observed = Vec::new();
    for (&replica, state) in &record.gang.replicas {
        if !matches!(state, ReplicaState::Launching | ReplicaState::Running) {
            continue;
        }
        let name = replica_pod_name(&run_ref.name, &inv.node, inv.attempt, replica, incarnation);
        let ended = |end: ReplicaEnd| GangObservation::Ended {
            replica,
            incarnation,
            end,
        };
        let Some(pod) = find_pod(ctx, run_ref, &name).await? else {
            // Gone without a result: evicted, its node drained, or deleted by someone.
            observed.push(ended(ReplicaEnd {
                preempted: true,
                message: Some(format!("its pod {name} is gone")),
                ..ReplicaEnd::default()
            }));
            continue;
        };
        // Evicted or drained (`DisruptionTarget`), or deleted by someone: not the program's
        // failure. (The pods this gang stops itself end as consequences, never counted.)
        let disrupted = disruption(&pod).or_else(|| {
            pod.metadata
                .deletion_timestamp
                .is_some()
                .then(|| format!("its pod {name} was deleted"))
        });
        let report = replica_report(ctx, run_ref, inv, &pod, replica == leader).await?;
        match report {
            Some(report) => {
                let mut end = end_of(report, disrupted.as_deref());
                if !end.succeeded() {
                    end.log_tail = log_tail(ctx, run_ref, &name).await;
                }
                observed.push(ended(end));
            }
            None => {
                if *state == ReplicaState::Launching && started(&pod) {
                    observed.push(GangObservation::Started {
                        replica,
                        incarnation,
                    });
                }
            }
        }
    }
    Ok(observed)
}

/// How an ended replica went: its termination message (every replica writes one), else the
/// leader's report to the API (too large for a termination message), else the pod's status.
async fn replica_report(
    ctx: &Context,
    run_ref: &RunRef,
    inv: &Invocation,
    pod: &Pod,
    leader: bool,
) -> Result<Option<LaunchReport>> {
    let reported = matches!(
        pods::outcome(pod),
        pods::PodOutcome::Ended {
            report: Some(_),
            ..
        }
    );
    let report = if leader && !reported {
        ended_report(ctx, &run_ref.uid, &inv.node, inv.attempt, pod).await?
    } else {
        // Every replica's report is in its termination message; only the leader's went to
        // the API too.
        pod_report(pod)
    };
    Ok(report)
}

/// The end of a failed replica's log, from the node through the API; none when it cannot be
/// read.
async fn log_tail(ctx: &Context, run_ref: &RunRef, pod: &str) -> Option<String> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
    let params = LogParams {
        container: Some(pods::STEP_CONTAINER.into()),
        tail_lines: Some(40),
        limit_bytes: Some(LOG_TAIL_BYTES),
        ..LogParams::default()
    };
    let text = api.logs(pod, &params).await.ok()?;
    (!text.trim().is_empty()).then_some(text)
}

fn end_of(report: LaunchReport, disrupted: Option<&str>) -> ReplicaEnd {
    ReplicaEnd {
        exit_code: report.exit_code,
        signal: report.signal,
        preempted: disrupted.is_some(),
        message: match disrupted {
            Some(why) => Some(format!("preempted: {why}")),
            None => report.error.clone(),
        },
        log_tail: None,
        outputs: report.succeeded.then_some(report.outputs),
    }
}

/// The pod's `DisruptionTarget` condition, when it is set: why it is being evicted.
fn disruption(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
        .map(|c| {
            c.message
                .clone()
                .or_else(|| c.reason.clone())
                .unwrap_or_else(|| "DisruptionTarget".into())
        })
}

fn started(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p != "Pending")
}

/// Carries out the engine's effects in order.
async fn carry_out(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    record: &mut GangRecord,
    effects: Vec<GangEffect>,
    turn: &mut Turn,
) -> Result<()> {
    for effect in effects {
        match effect {
            GangEffect::Launch {
                incarnation,
                replicas,
            } => {
                for replica in replicas {
                    let pod = replica_pod(run_ref, ctx, run, record, replica, incarnation)?;
                    if create_pod(ctx, run_ref, pod).await? {
                        ctx.metrics.step_pods_created.inc();
                    }
                }
                record.waiting = None;
            }
            GangEffect::Stop {
                incarnation,
                reason,
            } => {
                tracing::info!(
                    run = %run_ref.name,
                    node = %record.invocation.node,
                    incarnation,
                    "stopping a gang: {reason}"
                );
                stop(run_ref, ctx, record, incarnation).await?;
            }
            GangEffect::Notify(event) => turn.events.push(event),
            GangEffect::Finished(outcome) => {
                delete_service(run_ref, ctx, &record.invocation).await?;
                record.waiting = None;
                turn.ended = Some(Observation::Ended {
                    node: record.invocation.node.clone(),
                    attempt: record.invocation.attempt,
                    report: record.gang.report(outcome, 0),
                });
            }
        }
    }
    Ok(())
}

/// Deletes the pods of `incarnation` whose replicas still run; their launchers pass SIGTERM
/// on, so the replicas checkpoint and exit within the grace period. Ended pods stay, with
/// their logs, until the run goes.
async fn stop(
    run_ref: &RunRef,
    ctx: &Context,
    record: &GangRecord,
    incarnation: u32,
) -> Result<()> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
    let inv = &record.invocation;
    let active = record
        .gang
        .replicas
        .iter()
        .filter(|(_, s)| matches!(s, ReplicaState::Launching | ReplicaState::Running))
        .map(|(r, _)| *r);
    for replica in active {
        let name = replica_pod_name(&run_ref.name, &inv.node, inv.attempt, replica, incarnation);
        objects::delete(&api, &name, &DeleteParams::default()).await?;
    }
    Ok(())
}

/// Cancels a gang the run gave up on (the run was cancelled): its engine stops the running
/// replicas, and the attempt ends, cancelled, once they have.
pub async fn cancel(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    node: &str,
    attempt: u32,
) -> Result<()> {
    let key = gang::record_key(node, attempt);
    let Some(mut record) = load(ctx, &run_ref.uid, &key).await? else {
        return Ok(());
    };
    if record.gang.outcome.is_some() {
        return Ok(());
    }
    let effects = record.gang.advance(vec![GangObservation::Cancel(
        "the run was cancelled".into(),
    )]);
    let mut turn = Turn::default();
    carry_out(run_ref, ctx, run, &mut record, effects, &mut turn).await?;
    save(ctx, &run_ref.uid, &key, &record).await
}

/// Releases the gang's gated pods when the whole gang fits; fails it when it never can.
async fn admit(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    record: &mut GangRecord,
    turn: &mut Turn,
) -> Result<()> {
    if record.gang.outcome.is_some() || record.gang.suspended {
        return Ok(());
    }
    let inv = &record.invocation;
    let service = service_name(&run_ref.name, &inv.node, inv.attempt);
    // Listed, not read from the cache: admission must see every pod of the incarnation as it
    // is now.
    let selector = format!(
        "{GANG_LABEL}={service},{INCARNATION_LABEL}={}",
        record.gang.incarnation
    );
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
    let listed: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| pods::belongs_to(p, &run_ref.uid) && p.metadata.deletion_timestamp.is_none())
        .collect();
    let gated: Vec<Pod> = listed.iter().filter(|p| is_gated(p)).cloned().collect();
    tracing::debug!(run = %run_ref.name, node = %inv.node, gated = gated.len(), "gang admission");
    if gated.is_empty() {
        return Ok(());
    }
    // Some released already: an earlier turn admitted the gang and stopped half-way through
    // removing the gates. Otherwise every replica's pod must be there before the gang is
    // weighed whole.
    let admitted = gated.len() < listed.len();
    if !admitted && listed.len() < record.gang.replicas.len() {
        turn.wake = Some(now_ms() + ADMISSION_RETRY_MS);
        return Ok(());
    }
    // One gang at a time, so that two never count the same room.
    let _admitting = ctx.gang_admission.lock().await;
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods: Vec<Pod> = Api::<Pod>::all(ctx.client.clone())
        .list(&ListParams::default().fields("status.phase!=Succeeded,status.phase!=Failed"))
        .await?
        .items;
    let rooms = admission::rooms(&nodes, &pods);
    let demands: Vec<admission::Demand> = gated.iter().map(admission::demand).collect();
    let verdict = if admitted {
        Verdict::Fits
    } else {
        admission::admit(&rooms, &demands)
    };
    tracing::debug!(run = %run_ref.name, node = %inv.node, ?verdict, "gang admission");
    match verdict {
        Verdict::Fits => {
            let ungate = serde_json::json!({"spec": {"schedulingGates": []}});
            for pod in &gated {
                let name = pod.metadata.name.clone().unwrap_or_default();
                match pods_api
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&ungate))
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if record.waiting.take().is_some() {
                tracing::info!(run = %run_ref.name, node = %inv.node, "gang admitted");
            }
        }
        Verdict::Wait(why) => {
            if record.waiting.is_none() {
                turn.waiting = Some(why.clone());
            }
            record.waiting = Some(why);
            turn.wake = Some(now_ms() + ADMISSION_RETRY_MS);
        }
        Verdict::Never(why) => {
            record.waiting = Some(why.clone());
            let effects = record.gang.advance(vec![GangObservation::Cancel(why)]);
            Box::pin(carry_out(run_ref, ctx, run, record, effects, turn)).await?;
        }
    }
    Ok(())
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| g.iter().any(|g| g.name == GATE))
}

/// The pod of one replica: the step pod of the attempt with the replica's env contract,
/// resources and names, gated until the gang is admitted.
fn replica_pod(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    record: &GangRecord,
    replica: ReplicaId,
    incarnation: u32,
) -> Result<Pod> {
    let inv = &record.invocation;
    let gang_inv: &GangInvocation = inv.gang.as_ref().ok_or_else(|| Error::CorruptState {
        run_id: run_ref.uid.clone(),
        detail: format!("the gang record of {} has no gang", inv.node),
    })?;
    let plan = &record.gang.plan;
    let service = service_name(&run_ref.name, &inv.node, inv.attempt);
    let mut spec = pods::launch_spec(&run_ref.uid, inv, &ctx.pod_defaults.artifacts);
    spec.collect_outputs = replica == plan.leader();
    if let Some(env) = gang_inv.role_env.get(&replica.role) {
        spec.env.extend(env.clone());
    }
    spec.env
        .extend(gang::contract(plan, replica, incarnation, |r| {
            address(&service, r)
        }));
    spec.env.insert(
        "TOUCAN_CHECKPOINT_DIR".into(),
        spec.checkpoint_dir().to_string_lossy().into_owned(),
    );
    let spec_json = serde_json::to_string(&spec).map_err(|e| Error::CorruptState {
        run_id: run_ref.uid.clone(),
        detail: format!("encoding the launch spec of {} {replica}: {e}", inv.node),
    })?;
    let step = run.plan.step(&inv.step).map(|sp| sp.step);
    let resources = gang_inv
        .role_resources
        .get(&replica.role)
        .or(step.and_then(|s| s.resources.as_ref()));
    let mut pod = pods::build_pod(
        run_ref,
        &ctx.pod_defaults,
        &LauncherPod {
            node: &inv.node,
            step: &inv.step,
            attempt: inv.attempt,
            image: &inv.image,
            subcommand: "exec",
            spec_json,
            resources,
            pod: step.and_then(|s| s.pod.as_ref()),
            timeout_ms: inv.timeout_ms,
            working_dir: None,
        },
    );
    let name = replica_pod_name(&run_ref.name, &inv.node, inv.attempt, replica, incarnation);
    let group = format!("{service}-{incarnation}");
    let meta = &mut pod.metadata;
    meta.name = Some(name);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(GANG_LABEL.into(), service.clone());
    labels.insert(REPLICA_LABEL.into(), replica.to_string());
    labels.insert(INCARNATION_LABEL.into(), incarnation.to_string());
    labels.insert(KUEUE_GROUP_LABEL.into(), group);
    meta.annotations.get_or_insert_with(BTreeMap::new).insert(
        KUEUE_COUNT_ANNOTATION.into(),
        plan.replicas().count().to_string(),
    );
    if let Some(p) = pod.spec.as_mut() {
        p.hostname = Some(replica.to_string());
        p.subdomain = Some(service);
        p.scheduling_gates = Some(vec![PodSchedulingGate { name: GATE.into() }]);
    }
    Ok(pod)
}

/// The gang's headless Service: its replicas' names resolve to their pods, ready or not.
async fn ensure_service(run_ref: &RunRef, ctx: &Context, node: &str, attempt: u32) -> Result<()> {
    let name = service_name(&run_ref.name, node, attempt);
    let service = Service {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(run_ref.namespace.clone()),
            labels: Some(BTreeMap::from([
                (
                    pods::MANAGED_BY_LABEL.to_string(),
                    pods::MANAGED_BY.to_string(),
                ),
                (pods::RUN_UID_LABEL.to_string(), run_ref.uid.clone()),
                (GANG_LABEL.to_string(), name.clone()),
            ])),
            owner_references: Some(vec![run_ref.owner.clone()]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(BTreeMap::from([(GANG_LABEL.to_string(), name.clone())])),
            ports: Some(vec![ServicePort {
                name: Some("rendezvous".into()),
                port: i32::from(rendezvous_port(&name)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
    match api.create(&PostParams::default(), &service).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_service(run_ref: &RunRef, ctx: &Context, inv: &Invocation) -> Result<()> {
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
    let name = service_name(&run_ref.name, &inv.node, inv.attempt);
    objects::delete(&api, &name, &DeleteParams::default()).await
}

async fn load(ctx: &Context, run_id: &str, key: &str) -> Result<Option<GangRecord>> {
    let Some(body) = ctx
        .store
        .get_run_document(run_id, DocumentKind::Gang, key)
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_value(body)
        .map(Some)
        .map_err(|e| Error::CorruptState {
            run_id: run_id.to_string(),
            detail: format!("the gang record {key}: {e}"),
        })
}

async fn save(ctx: &Context, run_id: &str, key: &str, record: &GangRecord) -> Result<()> {
    let body = serde_json::to_value(record).map_err(|e| Error::CorruptState {
        run_id: run_id.to_string(),
        detail: format!("encoding the gang record {key}: {e}"),
    })?;
    ctx.store
        .put_run_document(run_id, DocumentKind::Gang, key, &body, now_ms())
        .await?;
    Ok(())
}

/// Whether a node of `run` is a gang: its step has roles.
pub fn is_gang(run: &Run, node: &str) -> bool {
    run.plan
        .step(toucan_core::engine::step_of(node))
        .is_some_and(|s| !s.step.roles.is_empty())
}
