//! The Endpoint controller: model versions served by Deployments of `toucan-worker serve`
//! behind toucan's router, with the traffic split, rollouts and autoscaling decided by core.
//!
//! Each reconcile is one level-triggered pass, in stages:
//!
//! 1. **validate** the spec ([`check_endpoint`]): an invalid endpoint fails with its field
//!    paths and runs nothing;
//! 2. **resolve** each version's model to a digest ([`models`]): a pipeline output not there
//!    yet is a wait, looked at again shortly;
//! 3. **observe** the endpoint's pods ([`watches`], [`observe`]) and what its router counted
//!    (`/router/v1/stats` on the router's pod IP);
//! 4. **decide** the rollout's step ([`rollout::decide`], from the state kept in
//!    `status.rollout`) and each version's replicas ([`scaling`], core's concurrency
//!    autoscaler, or a HorizontalPodAutoscaler on CPU);
//! 5. **build** the children without a client ([`children`]) and **apply** them server-side
//!    ([`apply`]), deleting those of versions that left the spec;
//! 6. **write the status** ([`status`]) when it changed, and publish events on transitions.
//!
//! The router learns its configuration from the operator ([`router_config`]): the route is
//! served by every replica from the caches of [`watches::Watches`], and reads the split in
//! force from `status.rollout`, so it moves as soon as the leader writes a step. A pass is
//! repeated every [`POLL`] while a rollout progresses or a version scales on concurrency, and
//! otherwise when the endpoint or its pods change (and every [`RESYNC`] at the latest).
//!
//! The images are the operator's `--serving-image` (the worker's, default
//! `toucan/worker:VERSION-cpu`) and `--router-image` (the operator's own, which holds
//! `toucan-router`, default `toucan/operator:VERSION`); the chart sets both.

pub mod apply;
pub mod children;
pub mod models;
pub mod monitor;
pub mod observe;
pub mod router_config;
pub mod scaling;
pub mod status;
pub mod watches;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast::error::RecvError;
use toucan_core::api::{Endpoint, EndpointStatus, RolloutPhase};
use toucan_core::manifest::{Source, check_endpoint};
use toucan_core::serving::rollout::{self, RolloutState, RolloutTransition};
use toucan_core::serving::traffic::ready_weights;
use toucan_core::time::now_ms;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::notes::{Note, publish};
use crate::queue::{self, Action, Class, Queue, QueueMetrics};
use children::{Owner, ServingDefaults, VersionPlan};
use scaling::{Autoscalers, Scaling};
use status::{Blocked, Seen};
use watches::Watches;

pub const CONTROLLER: &str = "endpoint";
/// On an endpoint's children and pods: the Endpoint's name (as a label value).
pub const ENDPOINT_LABEL: &str = "toucan.dev/endpoint";
/// On a model server's pods: the version it serves.
pub const VERSION_LABEL: &str = "toucan.dev/version";
/// On an endpoint's pods: `server` or `router`.
pub const COMPONENT_LABEL: &str = "toucan.dev/component";
pub const SERVER_COMPONENT: &str = "server";
pub const ROUTER_COMPONENT: &str = "router";
/// On an endpoint's pods: the Endpoint's UID, so that a new Endpoint of an old one's name
/// never counts the old one's pods.
pub const ENDPOINT_UID_LABEL: &str = "toucan.dev/endpoint-uid";
/// On an endpoint's pods: the Endpoint's exact name (a label value may be shortened).
pub const ENDPOINT_ANNOTATION: &str = "toucan.dev/endpoint";

/// How often an endpoint whose rollout progresses, or which scales on concurrency, is
/// observed and decided again.
pub const POLL: Duration = Duration::from_secs(2);
/// How often a steady endpoint is looked at when nothing wakes it.
pub const RESYNC: Duration = Duration::from_secs(60);
/// Unchanged children are applied again this often (one deleted by hand comes back).
const REAPPLY: Duration = Duration::from_secs(60);
/// How long the router is given to serve a new split before a version it no longer sends
/// requests to loses its pods (it reads its configuration every second).
const ROUTER_FOLLOWS_MS: i64 = 5_000;
/// An endpoint waiting for a model is looked at again after this long.
const MODEL_RETRY: Duration = Duration::from_secs(3);

/// The controller's own state beside the shared context.
struct Shared {
    ctx: Arc<Context>,
    watches: Watches,
    defaults: ServingDefaults,
    autoscalers: Autoscalers,
    monitors: monitor::Monitors,
    /// By endpoint UID: a hash of the children last applied, and when.
    applied: Mutex<HashMap<String, (u64, Instant)>>,
    /// By endpoint UID: the generation whose stale children were last swept.
    swept: Mutex<HashMap<String, Option<i64>>>,
}

/// The settings every endpoint's children share.
pub fn serving_defaults(ctx: &Context) -> ServingDefaults {
    ServingDefaults {
        serving_image: ctx.pod_defaults.serving_image.clone(),
        router_image: ctx.pod_defaults.router_image.clone(),
        service_account: ctx.pod_defaults.service_account.clone(),
        api_url: ctx.pod_defaults.api_url.clone(),
        artifacts: ctx.pod_defaults.artifacts.clone(),
        artifacts_secret: ctx.pod_defaults.artifacts_secret.clone(),
    }
}

/// Runs the controller until `shutdown`, over the caches `watches` keeps (started with the
/// API, before leadership).
pub async fn controller(
    watches: Watches,
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let queue = Queue::new(
        queue::Settings::default(),
        QueueMetrics::new(&ctx.metrics, CONTROLLER),
    );
    let mut changes = watches.subscribe();
    let feed = {
        let queue = queue.clone();
        let watches = watches.clone();
        async move {
            while !watches.synced() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let push_all = |class| {
                for endpoint in watches.endpoints.state() {
                    queue.push(ObjectRef::from_obj(&*endpoint), class);
                }
            };
            push_all(Class::New);
            loop {
                match changes.recv().await {
                    Ok(endpoint) => queue.push(endpoint, Class::Active),
                    Err(RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "endpoint changes lagged: every endpoint again");
                        push_all(Class::Active);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    };
    let shared = Arc::new(Shared {
        defaults: serving_defaults(&ctx),
        ctx: ctx.clone(),
        watches: watches.clone(),
        autoscalers: Autoscalers::default(),
        monitors: monitor::Monitors::new(ctx.gauges.clone()),
        applied: Mutex::new(HashMap::new()),
        swept: Mutex::new(HashMap::new()),
    });
    let runner = queue::run(
        queue,
        watches.endpoints.clone(),
        reconcile,
        error_policy,
        shared,
        usize::from(ctx.config.concurrency),
        shutdown,
    );
    tokio::select! {
        () = runner => {}
        () = feed => {}
    }
}

fn error_policy(_endpoint: Arc<Endpoint>, error: &Error, shared: Arc<Shared>) {
    tracing::warn!(error = %error, "endpoint reconcile failed");
    shared
        .ctx
        .metrics
        .reconcile_failed(CONTROLLER, error.reason());
}

/// A user-visible happening, published as an Event on the endpoint.
async fn reconcile(endpoint: Arc<Endpoint>, shared: Arc<Shared>) -> Result<Action> {
    let ctx = &shared.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let name = endpoint.name_any();
    let namespace = endpoint
        .namespace()
        .ok_or_else(|| Error::MissingField(name.clone(), "namespace"))?;
    let uid = endpoint
        .uid()
        .ok_or_else(|| Error::MissingField(name.clone(), "uid"))?;
    let reference = endpoint
        .controller_owner_ref(&())
        .ok_or_else(|| Error::MissingField(name.clone(), "owner reference"))?;
    let generation = endpoint.meta().generation;
    let previous = endpoint.status.clone().unwrap_or_default();
    let spec = &endpoint.spec;
    let live: BTreeMap<String, ()> = shared
        .watches
        .endpoints
        .state()
        .iter()
        .filter_map(|e| e.uid().map(|u| (u, ())))
        .collect();
    shared.autoscalers.retain(&live);
    let keys: BTreeMap<String, String> = shared
        .watches
        .endpoints
        .state()
        .iter()
        .filter_map(|e| Some((e.uid()?, format!("{}/{}", e.namespace()?, e.name_any()))))
        .collect();
    shared.monitors.retain(&keys);

    // 1. Validate.
    let source = Source {
        file: format!("endpoints/{namespace}/{name}").into(),
        index: 0,
    };
    let problems: Vec<String> = check_endpoint(spec, &source)
        .iter()
        .map(|d| format!("{}: {}", d.path, d.message))
        .collect();
    if !problems.is_empty() {
        let blocked = Blocked::Invalid(problems.join("; "));
        write_blocked(ctx, &endpoint, &previous, &blocked).await?;
        return Ok(Action::await_change());
    }

    // 2. Resolve the models.
    let mut digests = BTreeMap::new();
    let mut waiting = Vec::new();
    for (i, v) in spec.versions.iter().enumerate() {
        match models::resolve(ctx, &namespace, v).await? {
            Ok(digest) => {
                digests.insert(v.name.clone(), digest);
            }
            Err(why) => waiting.push(format!("spec.versions[{i}].model: {why}")),
        }
    }
    if !waiting.is_empty() {
        let blocked = Blocked::Waiting(waiting.join("; "));
        write_blocked(ctx, &endpoint, &previous, &blocked).await?;
        return Ok(Action::requeue(MODEL_RETRY));
    }

    // 3. Observe.
    let now = now_ms();
    let pods = shared.watches.pods_of(&uid);
    let kept = previous
        .rollout
        .as_ref()
        .map(|r| RolloutState::from_status(r, now));
    // The gates judge the candidate's requests since its step began.
    let window = kept
        .as_ref()
        .filter(|s| s.phase == RolloutPhase::Progressing)
        .map_or(observe::MAX_STATS_WINDOW_SECONDS, |s| {
            (now.saturating_sub(s.since).max(0) as u64).div_ceil(1000)
        });
    let stats = match &pods.router {
        Some(address) => match observe::router_stats(address, window).await {
            Ok(stats) => Some(stats),
            Err(e) => {
                tracing::debug!(endpoint = %name, "{e}");
                None
            }
        },
        None => None,
    };

    // 3b. Monitor: figures, alerts, retraining; a retrained model added to the spec ends
    // this pass (the change wakes the next).
    let step_since = kept
        .as_ref()
        .filter(|s| s.phase == RolloutPhase::Progressing)
        .map(|s| s.since);
    let target = monitor::Target {
        namespace: &namespace,
        name: &name,
        uid: &uid,
    };
    let monitored = shared
        .monitors
        .pass(ctx, &endpoint, &target, &digests, step_since, now)
        .await?;
    if monitored.patched {
        publish(ctx, endpoint.as_ref(), &monitored.notes).await;
        return Ok(Action::requeue(POLL));
    }

    // 4. Decide.
    let mut observed = stats
        .as_ref()
        .map(toucan_router::admin::EndpointStats::observations)
        .unwrap_or_default();
    rollout::with_quality(&mut observed, &monitored.quality);
    let decision = rollout::decide(spec, kept.as_ref(), &observed, now);
    let mut notes = monitored.notes;
    if let Some(transition) = decision.transition {
        notes.push(Note {
            warning: matches!(
                transition,
                RolloutTransition::RolledBack | RolloutTransition::Paused
            ),
            reason: transition.as_str(),
            text: decision.reason.clone(),
        });
    }
    // A retrained candidate's rollout that ended leaves the spec with one of the two, once
    // the router has served the final split for a while: the version it drops loses its pods
    // with it.
    let mut finishing = false;
    if let Some(state) = &decision.state
        && endpoint.annotations().get(monitor::CANDIDATE_ANNOTATION) == Some(&state.candidate)
        && matches!(
            state.phase,
            RolloutPhase::Promoted | RolloutPhase::RolledBack
        )
        && {
            finishing = now < state.since.saturating_add(ROUTER_FOLLOWS_MS);
            !finishing
        }
    {
        notes.push(
            monitor::finish_rollout(
                ctx,
                &endpoint,
                &namespace,
                &state.candidate,
                state.phase == RolloutPhase::Promoted,
                state.reason.as_deref().unwrap_or_default(),
            )
            .await?,
        );
    }
    let mut poll = finishing
        || decision
            .state
            .as_ref()
            .is_some_and(|s| s.phase == RolloutPhase::Progressing);
    let policy = spec.autoscaling_policy();
    let mut desired = BTreeMap::new();
    let mut plans = Vec::new();
    for v in &spec.versions {
        let running = pods.versions.get(&v.name).map_or(0, |p| p.running);
        let (min, max) = v.replica_bounds();
        let (replicas, cpu) = match scaling::scaling(policy, v) {
            Scaling::Fixed(n) => (Some(n), None),
            Scaling::Cpu(target) => (None, Some(target)),
            Scaling::Concurrency(target) => {
                poll = true;
                let target = scaling::Target {
                    concurrency: target,
                    window: spec.stable_window_ms(),
                };
                let scaled =
                    shared
                        .autoscalers
                        .decide(&uid, v, target, stats.as_ref(), running, now);
                if let Some(from) = scaled.changed_from {
                    notes.push(Note::normal(
                        if scaled.desired > from {
                            "ScaledUp"
                        } else {
                            "ScaledDown"
                        },
                        format!("{}: {}", v.name, scaled.reason),
                    ));
                }
                (Some(scaled.desired), None)
            }
        };
        // Under a HorizontalPodAutoscaler the count asked for is what runs.
        desired.insert(
            v.name.clone(),
            replicas.unwrap_or_else(|| running.clamp(min, max.max(min))),
        );
        plans.push(VersionPlan {
            version: v,
            digest: digests.get(&v.name).cloned().unwrap_or_default(),
            replicas,
            cpu_utilization: cpu,
        });
    }

    // 5. Build and apply.
    let owner = Owner {
        namespace: namespace.clone(),
        name: name.clone(),
        uid: uid.clone(),
        reference,
    };
    let weights = ready_weights(&decision.traffic, |version| {
        pods.versions
            .get(version)
            .is_some_and(|p| !p.ready.is_empty())
    });
    let built = children::children(&owner, &shared.defaults, spec, &plans, &weights);
    if let Some(why) = apply_children(&shared, &namespace, &uid, &built).await? {
        notes.push(Note::warning("GatewayAPIMissing", why));
    }
    let swept = shared
        .swept
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&uid)
        .copied();
    if swept != Some(generation) {
        apply::sweep(ctx, &namespace, &name, &uid, &built).await?;
        shared
            .swept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.clone(), generation);
    }

    // 6. Status.
    let url = format!("http://{}.{namespace}.svc", children::service_name(&name));
    let mut next = status::endpoint_status(
        &previous,
        &Seen {
            spec,
            generation,
            traffic: &decision.traffic,
            rollout: decision.state.as_ref(),
            desired: &desired,
            digests: &digests,
            pods: &pods,
            url,
        },
    );
    if let Some(note) = ready_transition(&previous, &next) {
        notes.push(note);
    }
    for c in monitored.conditions.iter().flatten() {
        crate::conditions::set(
            &mut next.conditions,
            c.type_,
            c.status,
            c.reason,
            &c.message,
            generation,
        );
    }
    crate::status::apply::<Endpoint, _>(&ctx.client, &namespace, &name, Some(&previous), &next)
        .await?;
    publish(ctx, endpoint.as_ref(), &notes).await;
    let mut wait = if poll { POLL } else { RESYNC };
    if let Some(ms) = monitored.next_in_ms {
        wait = wait.min(Duration::from_millis(ms.max(1) as u64));
    }
    Ok(Action::requeue(wait))
}

/// Applies the children unless the same ones were applied a moment ago; why the route could
/// not be applied, when it could not.
async fn apply_children(
    shared: &Shared,
    namespace: &str,
    uid: &str,
    built: &children::Children,
) -> Result<Option<String>> {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(
        &built.deployments,
        &built.autoscalers,
        &built.service,
        &built.version_services,
        &built.route,
    ))
    .unwrap_or_default()
    .hash(&mut hasher);
    let fingerprint = hasher.finish();
    let fresh = shared
        .applied
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(uid)
        .is_some_and(|(hash, at)| *hash == fingerprint && at.elapsed() < REAPPLY);
    if fresh {
        return Ok(None);
    }
    crate::run::execute::ensure_service_account(&shared.ctx, namespace).await?;
    let applied = apply::apply(&shared.ctx, namespace, built).await;
    let mut record = shared.applied.lock().unwrap_or_else(|p| p.into_inner());
    match applied {
        Ok(applied) => {
            record.insert(uid.to_string(), (fingerprint, Instant::now()));
            Ok(applied.route_refused)
        }
        Err(e) => {
            record.remove(uid);
            Err(e)
        }
    }
}

/// An event when the endpoint starts or stops serving.
fn ready_transition(previous: &EndpointStatus, next: &EndpointStatus) -> Option<Note> {
    let ready = |s: &EndpointStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::READY)
            .map(|c| (c.status == "True", c.message.clone()))
    };
    let (was, _) = ready(previous).unwrap_or((false, String::new()));
    let (is, message) = ready(next)?;
    match (was, is) {
        (false, true) => Some(Note::normal("Ready", message)),
        (true, false) => Some(Note::warning("NotReady", message)),
        _ => None,
    }
}

async fn write_blocked(
    ctx: &Context,
    endpoint: &Endpoint,
    previous: &EndpointStatus,
    blocked: &Blocked,
) -> Result<()> {
    let generation = endpoint.meta().generation;
    let next = status::blocked_status(previous, blocked, generation);
    let namespace = endpoint.namespace().unwrap_or_default();
    let name = endpoint.name_any();
    if next.message != previous.message
        && let Blocked::Invalid(why) = blocked
    {
        let note = Note::warning("InvalidSpec", why.clone());
        publish(ctx, endpoint, &[note]).await;
    }
    crate::status::apply::<Endpoint, _>(&ctx.client, &namespace, &name, Some(previous), &next).await
}
