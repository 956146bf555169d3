//! Carrying out the run engine's effects in a cluster: rows in one store transaction, cache
//! lookups through the store crate, pods created (or adopted when they are this run's),
//! claims renewed and released. What the effects lead to is fed back to the engine until it
//! asks for nothing more.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use toucan_core::engine::gang::GangEvent;
use toucan_core::engine::run::{CLAIM_TTL_MS, CacheCheck, Effect, Observation, RunEvent};
use toucan_core::engine::{Invocation, Run};
use toucan_core::records::{Millis, RunChanges};

use super::now_ms;
use super::pods::{self, LauncherPod, RunRef};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;

/// Pods created at once by one reconcile.
const CREATE_CONCURRENCY: usize = 16;
/// Rounds of effects and their results one reconcile goes through at most; the engine
/// settles in two or three (lookups, then launches).
const MAX_ROUNDS: usize = 16;

/// What one reconcile gathered from the engine besides its own effects.
#[derive(Debug, Default)]
pub struct Turn {
    pub events: Vec<RunEvent>,
    /// The gangs' events, by node.
    pub gang_events: Vec<(String, GangEvent)>,
    /// The gangs that started waiting for room, by node, with why.
    pub gangs_waiting: Vec<(String, String)>,
    /// What the engine asked for last.
    pub wake: Option<Millis>,
    /// What the gangs asked for (a gang waiting for room looks again soon).
    pub gang_wake: Option<Millis>,
}

impl Turn {
    /// What a gang's turn left for the run's: its events, why it waits, when to look again;
    /// its end is the caller's.
    pub fn absorb(&mut self, node: &str, gang: super::gang::Turn) {
        self.gang_events
            .extend(gang.events.into_iter().map(|e| (node.to_string(), e)));
        self.gangs_waiting
            .extend(gang.waiting.map(|why| (node.to_string(), why)));
        if let Some(at) = gang.wake {
            self.gang_wake = Some(self.gang_wake.map_or(at, |w| w.min(at)));
        }
    }

    /// When to look again without an event, if anything asked.
    pub fn next_wake(&self) -> Option<Millis> {
        match (self.wake, self.gang_wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Hands `observed` to the engine and carries out what it asks for, round after round.
pub async fn advance(
    run_ref: &RunRef,
    ctx: &Context,
    run: &mut Run,
    mut observed: Vec<Observation>,
    turn: &mut Turn,
) -> Result<()> {
    for _ in 0..MAX_ROUNDS {
        let effects = run.advance(std::mem::take(&mut observed), now_ms());
        observed = carry_out(run_ref, ctx, run, effects, turn).await?;
        if observed.is_empty() {
            return Ok(());
        }
    }
    // Whatever is left is looked at again on the next reconcile, soon.
    turn.wake = Some(now_ms());
    Ok(())
}

/// Carries out effects in order and returns what they led to.
pub async fn carry_out(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    effects: Vec<Effect>,
    turn: &mut Turn,
) -> Result<Vec<Observation>> {
    let mut observed = Vec::new();
    let mut launches = Vec::new();
    turn.wake = None;
    for effect in effects {
        match effect {
            Effect::Write(changes) => {
                ctx.store.record(&changes).await?;
                trace_attempts(run, &changes);
            }
            Effect::Notify(event) => turn.events.push(event),
            Effect::CheckCache { invocation, claim } => {
                let result = toucan_store::cache::check(
                    ctx.store.as_ref(),
                    &ctx.artifacts,
                    &invocation,
                    claim.as_ref(),
                    now_ms(),
                )
                .await;
                match &result {
                    CacheCheck::Hit(_) => ctx.metrics.cache_lookup(true),
                    CacheCheck::Miss | CacheCheck::Busy => ctx.metrics.cache_lookup(false),
                    CacheCheck::Failed(e) => tracing::warn!(node = %invocation.node, "cache: {e}"),
                }
                observed.push(Observation::CacheChecked {
                    node: invocation.node.clone(),
                    attempt: invocation.attempt,
                    result,
                });
            }
            Effect::Launch(invocation) => launches.push(*invocation),
            Effect::Stop { node, attempt } if super::gang::is_gang(run, &node) => {
                super::gang::cancel(run_ref, ctx, run, &node, attempt).await?;
            }
            Effect::Stop { node, attempt } => {
                let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run_ref.namespace);
                let name = pods::pod_name(&run_ref.name, &node, attempt);
                objects::delete(&api, &name, &DeleteParams::default()).await?;
            }
            Effect::RenewClaims(claims) => {
                let now = now_ms();
                for c in claims {
                    ctx.store
                        .claim_cache_key(&c.key, &c.owner, now, now - CLAIM_TTL_MS)
                        .await?;
                }
            }
            Effect::ReleaseClaim(c) => ctx.store.release_cache_key(&c.key, &c.owner).await?,
            Effect::WakeAt(at) => turn.wake = Some(at),
        }
    }
    observed.extend(launch(run_ref, ctx, run, launches, turn).await?);
    Ok(observed)
}

/// One span per finished attempt, from its row.
fn trace_attempts(run: &Run, changes: &RunChanges) {
    for a in &changes.attempts {
        if let Some(finished_at) = a.finished_at {
            crate::telemetry::step_attempt(
                &run.id,
                &a.step,
                a.attempt,
                a.started_at,
                finished_at,
                a.phase.as_str(),
            );
        }
    }
}

/// Creates the pods of `launches`, a few at a time.
async fn launch(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    launches: Vec<Invocation>,
    turn: &mut Turn,
) -> Result<Vec<Observation>> {
    if launches.is_empty() {
        return Ok(Vec::new());
    }
    let mut pods_of = Vec::with_capacity(launches.len());
    let mut observed = Vec::new();
    for inv in launches {
        if inv.gang.is_some() {
            observed.push(launch_gang(run_ref, ctx, run, &inv, turn).await?);
            continue;
        }
        let pod = step_pod(run_ref, ctx, run, &inv)?;
        pods_of.push((inv, pod));
    }
    let created: Vec<(Invocation, Result<bool>)> = futures::stream::iter(pods_of)
        .map(|(inv, pod)| async move {
            let result = create_pod(ctx, run_ref, pod).await;
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
                    ctx.metrics
                        .step_start_latency
                        .observe(((now - run.ready_at(&inv.node)).max(0) as f64) / 1000.0);
                }
                let pod = pods::pod_name(&run_ref.name, &inv.node, inv.attempt);
                observed.push(Observation::Launched {
                    node: inv.node.clone(),
                    attempt: inv.attempt,
                    log: Some(format!("pod/{}/{pod}", run_ref.namespace)),
                });
            }
            // The API refused the pod itself (invalid spec, quota, admission): a failed attempt.
            Err(Error::Kube(kube::Error::Api(status)))
                if status.code >= 400 && status.code < 500 && status.code != 429 =>
            {
                observed.push(Observation::LaunchFailed {
                    node: inv.node.clone(),
                    attempt: inv.attempt,
                    message: format!("creating the pod: {}", status.message),
                });
            }
            // Anything else is retried by the next reconcile: the record is not saved, so the
            // same launches come again and find their pods by name.
            Err(e) => return Err(e),
        }
    }
    Ok(observed)
}

/// A gang's launch: its Service and gated pods; a refusal of the API is a failed attempt.
async fn launch_gang(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    inv: &Invocation,
    turn: &mut Turn,
) -> Result<Observation> {
    let mut gang_turn = super::gang::Turn::default();
    let launched = super::gang::launch(run_ref, ctx, run, inv, &mut gang_turn).await;
    turn.absorb(&inv.node, gang_turn);
    match launched {
        Ok(observed) => Ok(observed),
        Err(Error::Kube(kube::Error::Api(status)))
            if status.code >= 400 && status.code < 500 && status.code != 429 =>
        {
            Ok(Observation::LaunchFailed {
                node: inv.node.clone(),
                attempt: inv.attempt,
                message: format!("creating the gang: {}", status.message),
            })
        }
        Err(e) => Err(e),
    }
}

fn step_pod(run_ref: &RunRef, ctx: &Context, run: &Run, inv: &Invocation) -> Result<Pod> {
    let step = run.plan.step(&inv.step).map(|sp| sp.step);
    let spec = pods::launch_spec(&run_ref.uid, inv, &ctx.pod_defaults.artifacts);
    let spec_json = serde_json::to_string(&spec).map_err(|e| Error::CorruptState {
        run_id: run_ref.uid.clone(),
        detail: format!("encoding the launch spec of {}: {e}", inv.node),
    })?;
    Ok(pods::build_pod(
        run_ref,
        &ctx.pod_defaults,
        &LauncherPod {
            node: &inv.node,
            step: &inv.step,
            attempt: inv.attempt,
            image: &inv.image,
            subcommand: "exec",
            spec_json,
            resources: step.and_then(|s| s.resources.as_ref()),
            pod: step.and_then(|s| s.pod.as_ref()),
            timeout_ms: inv.timeout_ms,
            working_dir: None,
        },
    ))
}

/// Creates a pod; one of the same name is adopted only when it is this run's (an earlier
/// pass created it). Returns whether it was new.
pub async fn create_pod(ctx: &Context, run: &RunRef, pod: Pod) -> Result<bool> {
    ensure_service_account(ctx, &run.namespace).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
    let result = match api.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("serviceaccount") => {
            // Someone deleted the step service account since it was checked: make it again.
            forget_service_account(ctx, &run.namespace);
            ensure_service_account(ctx, &run.namespace).await?;
            api.create(&PostParams::default(), &pod).await
        }
        other => other,
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let existing = api.get_opt(&name).await?;
            match existing.as_ref().map(|p| pods::belongs_to(p, &run.uid)) {
                Some(true) => Ok(false),
                // Deleted in between: the next reconcile creates it.
                None => Err(Error::PodGone(name)),
                Some(false) => Err(Error::StrangerPod {
                    pod: name,
                    run: run.name.clone(),
                }),
            }
        }
        Err(e) => Err(e.into()),
    }
}

fn forget_service_account(ctx: &Context, namespace: &str) {
    ctx.service_accounts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(namespace);
}

/// The step service account exists in `namespace` (created when missing). Remembered per
/// namespace; forgotten when a pod is refused for the lack of it.
pub(crate) async fn ensure_service_account(ctx: &Context, namespace: &str) -> Result<()> {
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

/// A pod by name: from the watch cache, else from the API (a pod just created may not have
/// reached the cache yet). A pod of the same name that is not this run's is not its pod.
pub async fn find_pod(ctx: &Context, run: &RunRef, name: &str) -> Result<Option<Arc<Pod>>> {
    let key = kube::runtime::reflector::ObjectRef::<Pod>::new(name).within(&run.namespace);
    let pod = match ctx.pods.get(&key) {
        Some(pod) => Some(pod),
        None => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &run.namespace);
            api.get_opt(name).await?.map(Arc::new)
        }
    };
    Ok(pod.filter(|p| pods::belongs_to(p, &run.uid)))
}
