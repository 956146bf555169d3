//! An Endpoint on this machine: `toucan serve FILE`.
//!
//! The versions' replicas are `toucan-worker serve` processes and the router is a
//! `toucan-router` process, all on loopback; the control-plane API (for the servers' payload
//! samples) is served in this process, over the local store. Once a second the loop here
//! observes — which processes exited, what the router counted — and asks core what to do:
//! [`toucan_core::serving::autoscale::decide`] how many replicas each version wants,
//! [`toucan_core::serving::rollout::decide`] which split is in force. It carries that out
//! (starts or stops replicas, rewrites the router's configuration file, which the router
//! re-reads) and writes the endpoint's status where `toucan get endpoints` and
//! `toucan describe endpoint` find it. With `spec.monitoring`, the loop also runs the
//! endpoint's monitoring ([`monitor`]): gauges on the local API's `/metrics`, alerts in the
//! store, and retraining runs whose models it rolls out as candidates, promoted or rolled
//! back by the rollout's gates. Ctrl-C stops every process.

mod monitor;
mod processes;
mod reference;
mod samples_csv;
mod state;

pub use processes::{Binaries, router_stats};
pub use state::{LocalEndpoint, dir, read_all, read_one, retrained_versions};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use toucan_core::api::{Endpoint, EndpointSpec, EndpointStatus, RolloutPhase, VersionStatus};
use toucan_core::serving::autoscale::{self, AutoscalerState, ConcurrencySample, ScaleInput};
use toucan_core::serving::rollout::{self, RolloutState, VersionObservation};
use toucan_core::serving::spec::AutoscalingPolicy;
use toucan_core::serving::traffic::{traffic_summary, traffic_targets};
use toucan_core::time::now_ms;
use toucan_router::admin::EndpointStats;
use toucan_router::config::{RouterConfig, ShadowConfig, VersionConfig};
use toucan_store::metadata::MetadataStore;

use processes::{Replica, RouterProcess, ServerSettings};

/// The Prometheus rule file of an endpoint, in its directory.
pub const RULES_FILE: &str = "rules.yaml";
/// The namespace label of a local endpoint's gauges and alerts.
pub const LOCAL_NAMESPACE: &str = "default";
/// How often the loop observes and decides.
const TICK: Duration = Duration::from_secs(1);
/// How long after its configuration changed the router surely serves by the new one (it
/// re-reads the file every half second).
const ROUTER_REREAD: Duration = Duration::from_secs(2);
/// How long the router may take to see the first ready replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `toucan serve` was asked to run.
#[derive(Debug)]
pub struct ServeRequest {
    pub endpoint: Endpoint,
    /// The spec as the manifest gives it (the endpoint's may carry promoted versions on).
    pub manifest: EndpointSpec,
    /// Each version's model file, resolved from the local store.
    pub models: BTreeMap<String, PathBuf>,
    /// Each version's model as its spec names it, for the status.
    pub model_names: BTreeMap<String, String>,
    /// Where the router listens.
    pub listen: SocketAddr,
    /// The endpoint's directory under the home: logs, the router's config, the status.
    pub dir: PathBuf,
    /// Where retraining runs and their models live.
    pub home: crate::home::Home,
}

/// One version's replicas and autoscaler memory.
struct Version {
    name: String,
    replicas: Vec<Replica>,
    desired: u32,
    autoscaler: AutoscalerState,
    history: Vec<ConcurrencySample>,
    restarts: u32,
}

/// Runs the endpoint until Ctrl-C (or SIGTERM). Prints the URL once the router listens.
pub async fn serve(
    request: ServeRequest,
    store: Arc<dyn MetadataStore>,
    binaries: Binaries,
) -> anyhow::Result<()> {
    let mut spec = request.endpoint.spec.clone();
    let mut models = request.models.clone();
    let mut model_names = request.model_names.clone();
    let name = request
        .endpoint
        .metadata
        .name
        .clone()
        .context("the Endpoint has no metadata.name")?;
    std::fs::create_dir_all(request.dir.join("logs"))
        .with_context(|| format!("creating {}", request.dir.display()))?;
    write_rules(&request.dir, &name, &spec)?;
    let gauges = Arc::new(toucan_api::GaugeBoard::default());
    let api = start_api(store.clone(), gauges.clone()).await?;
    let settings = ServerSettings::of(&name, &spec, &format!("http://{api}"));
    let mut monitor = monitor::Monitor::new(
        &name,
        store,
        gauges,
        request.home.clone(),
        request.dir.clone(),
    );
    // The retrained model being rolled out, and the alert that started it.
    let mut retrained: Option<(String, monitor::AlertKey)> = None;
    // Its rollout, once its first replica is ready.
    let mut waiting_rollout: Option<toucan_core::api::RolloutSpec> = None;
    // Replicas of versions a rollout's end removed, stopped once the router has re-read its
    // configuration without them.
    let mut retiring: Vec<(Replica, Duration)> = Vec::new();
    let clock = tokio::time::Instant::now();

    let mut signals = crate::local::Signals::new()?;
    let mut versions = Vec::new();
    for v in &spec.versions {
        let (min, _) = v.replica_bounds();
        let model = &models[&v.name];
        let mut replicas = Vec::new();
        for index in 0..min {
            let replica = tokio::select! {
                started = Replica::start(&binaries, &settings, &v.name, index, model, &request.dir) => started?,
                _ = signals.next() => return Ok(()),
            };
            replicas.push(replica);
        }
        versions.push(Version {
            name: v.name.clone(),
            replicas,
            desired: min,
            autoscaler: AutoscalerState::default(),
            history: Vec::new(),
            restarts: 0,
        });
    }

    let decision = rollout::decide(&spec, None, &[], now_ms());
    let mut rollout_state = decision.state;
    let mut traffic = decision.traffic;
    let config_path = request.dir.join("router.json");
    write_router_config(&config_path, &name, &spec, &versions, &traffic)?;
    let mut router =
        RouterProcess::start(&binaries, &config_path, request.listen, &request.dir).await?;
    let url = format!("http://{}", router.addr);
    // The URL is printed once the router has seen a ready replica of every version with
    // traffic: a request sent on reading it is answered.
    let waiting = tokio::time::Instant::now();
    while !all_ready(router.stats().await.ok().as_ref(), &traffic) {
        anyhow::ensure!(
            waiting.elapsed() < READY_TIMEOUT,
            "the router saw no ready replica of some version within {READY_TIMEOUT:?}; see {}",
            request.dir.join("logs").display()
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = signals.next() => return Ok(()),
        }
    }
    println!("{url}");
    println!(
        "endpoint {name}: {} at {url} (Ctrl-C stops it)",
        traffic_summary(&traffic)
    );

    let started_at = now_ms();
    let mut last_status = None;
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = signals.next() => break,
        }
        let now = now_ms();
        // Replicas that died are started again: the version keeps its desired count.
        for version in &mut versions {
            let before = version.replicas.len();
            version.replicas.retain_mut(|r| r.is_running());
            version.restarts += (before - version.replicas.len()) as u32;
        }
        anyhow::ensure!(
            router.is_running(),
            "the router exited; see {}",
            request.dir.join("logs/router.log").display()
        );
        let stats = router.stats().await.ok();
        // Autoscaling: the router's in-flight counts are the observed concurrency.
        for version in &mut versions {
            let v = spec.version(&version.name).context("a version vanished")?;
            let (min, max) = v.replica_bounds();
            let desired = match spec.autoscaling_policy() {
                AutoscalingPolicy::Concurrency(target) => {
                    if let Some(s) = stats.as_ref().and_then(|s| s.versions.get(&version.name)) {
                        version.history.push(ConcurrencySample {
                            at: now,
                            in_flight: s.in_flight as f64,
                            ready: s.ready_replicas as u32,
                        });
                    }
                    version
                        .history
                        .retain(|s| s.at > now - spec.stable_window_ms());
                    let decision = autoscale::decide(
                        &ScaleInput {
                            samples: &version.history,
                            target: f64::from(target),
                            stable_window: spec.stable_window_ms(),
                            current: version.desired,
                            min,
                            max,
                            now,
                        },
                        &version.autoscaler,
                    );
                    version.autoscaler = decision.state;
                    decision.desired
                }
                // Locally there is no CPU metric pipeline: the version keeps its minimum.
                _ => min,
            };
            version.desired = desired.clamp(min, max.max(min));
        }
        for version in &mut versions {
            let model = &models[&version.name];
            while (version.replicas.len() as u32) < version.desired {
                let index = next_index(&version.replicas);
                let replica = Replica::start(
                    &binaries,
                    &settings,
                    &version.name,
                    index,
                    model,
                    &request.dir,
                )
                .await?;
                version.replicas.push(replica);
            }
            while (version.replicas.len() as u32) > version.desired {
                if let Some(replica) = version.replicas.pop() {
                    replica.stop().await;
                }
            }
        }
        // The rollout: the candidate's requests since its step began.
        // The router's window is the last minute: a failing gate is seen within it, and a
        // step's promotion is judged on the requests of its last minute.
        let mut observed: Vec<VersionObservation> = stats
            .as_ref()
            .map(EndpointStats::observations)
            .unwrap_or_default();
        rollout::with_quality(&mut observed, &monitor.quality);
        let decision = rollout::decide(&spec, rollout_state.as_ref(), &observed, now);
        if let Some(t) = decision.transition {
            eprintln!("endpoint {name}: {}: {}", t.as_str(), decision.reason);
        }
        rollout_state = decision.state;
        traffic = decision.traffic;

        // Monitoring: a pass when due; a retrained model becomes a version at no traffic,
        // rolled out once the router sees it ready.
        let step_since = rollout_state
            .as_ref()
            .filter(|s| s.phase == RolloutPhase::Progressing)
            .map(|s| s.since);
        let new_models = match monitor.tick(&spec, &models, step_since).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("endpoint {name}: monitoring: {e:#}");
                Vec::new()
            }
        };
        for model in new_models {
            if retrained.is_some() || spec.rollout.is_some() {
                monitor
                    .note(
                        &model.alert,
                        format!(
                            "model {} not rolled out: a rollout is already going",
                            model.digest
                        ),
                    )
                    .await?;
                continue;
            }
            let (min, _) = model.version.replica_bounds();
            models.insert(model.version.name.clone(), model.path.clone());
            model_names.insert(model.version.name.clone(), model.digest.clone());
            versions.push(Version {
                name: model.version.name.clone(),
                replicas: Vec::new(),
                desired: min.max(1),
                autoscaler: AutoscalerState::default(),
                history: Vec::new(),
                restarts: 0,
            });
            retrained = Some((model.version.name.clone(), model.alert.clone()));
            spec.versions.push(model.version);
            waiting_rollout = Some(model.rollout);
        }
        if let Some((candidate, _)) = &retrained
            && waiting_rollout.is_some()
            && stats
                .as_ref()
                .and_then(|s| s.versions.get(candidate))
                .is_some_and(|v| v.ready_replicas > 0)
        {
            spec.rollout = waiting_rollout.take();
        }
        if let Some((candidate, alert)) = retrained.clone()
            && let Some(state) = rollout_state.clone()
            && state.candidate == candidate
            && matches!(
                state.phase,
                RolloutPhase::Promoted | RolloutPhase::RolledBack
            )
        {
            let promoted = state.phase == RolloutPhase::Promoted;
            let reason = state.reason.clone().unwrap_or_default();
            let gone: Vec<String> = spec
                .versions
                .iter()
                .map(|v| v.name.clone())
                .filter(|v| (*v == candidate) != promoted)
                .collect();
            finish_rollout(&mut spec, &gone, promoted);
            for version in versions.iter_mut().filter(|v| gone.contains(&v.name)) {
                let at = clock.elapsed() + ROUTER_REREAD;
                retiring.extend(version.replicas.drain(..).map(|r| (r, at)));
            }
            versions.retain(|v| !gone.contains(&v.name));
            let outcome = if promoted { "promoted" } else { "rolled back" };
            eprintln!("endpoint {name}: retrained version {candidate} {outcome}: {reason}");
            monitor
                .note(&alert, format!("version {candidate} {outcome}: {reason}"))
                .await?;
            retrained = None;
            rollout_state = None;
            traffic = rollout::decide(&spec, None, &[], now).traffic;
        }
        write_router_config(&config_path, &name, &spec, &versions, &traffic)?;
        let (due, later): (Vec<_>, Vec<_>) = retiring
            .into_iter()
            .partition(|(_, at)| *at <= clock.elapsed());
        retiring = later;
        for (replica, _) in due {
            replica.stop().await;
        }

        let status = EndpointStatus {
            phase: Some(phase(&versions, rollout_state.as_ref()).to_string()),
            ready: Some(ready_summary(&versions, stats.as_ref())),
            traffic: traffic_targets(&traffic),
            traffic_summary: Some(traffic_summary(&traffic)),
            versions: versions
                .iter()
                .map(|v| VersionStatus {
                    name: v.name.clone(),
                    ready_replicas: stats
                        .as_ref()
                        .and_then(|s| s.versions.get(&v.name))
                        .map_or(0, |s| s.ready_replicas as u32),
                    replicas: v.replicas.len() as u32,
                    desired_replicas: v.desired,
                    model_digest: model_names.get(&v.name).cloned(),
                })
                .collect(),
            rollout: rollout_state.as_ref().map(RolloutState::to_status),
            url: Some(url.clone()),
            message: Some(decision.reason.clone()),
            observed_generation: None,
            conditions: Vec::new(),
        };
        if last_status.as_ref() != Some(&status) {
            state::write(
                &request.dir,
                &LocalEndpoint {
                    name: name.clone(),
                    pid: std::process::id(),
                    started_at,
                    api: Some(format!("http://{api}")),
                    spec: spec.clone(),
                    status: status.clone(),
                    restarts: versions
                        .iter()
                        .map(|v| (v.name.clone(), v.restarts))
                        .collect(),
                    manifest: Some(request.manifest.clone()),
                },
            )?;
            last_status = Some(status);
        }
    }
    eprintln!("endpoint {name}: stopping");
    monitor.stop();
    for (replica, _) in retiring {
        replica.stop().await;
    }
    for version in versions {
        for replica in version.replicas {
            replica.stop().await;
        }
    }
    router.stop().await;
    state::mark_stopped(&request.dir)?;
    Ok(())
}

fn all_ready(stats: Option<&EndpointStats>, traffic: &[(String, u32)]) -> bool {
    let Some(stats) = stats else { return false };
    traffic.iter().filter(|(_, w)| *w > 0).all(|(name, _)| {
        stats
            .versions
            .get(name)
            .is_some_and(|v| v.ready_replicas > 0)
    })
}

fn next_index(replicas: &[Replica]) -> u32 {
    replicas.iter().map(|r| r.index + 1).max().unwrap_or(0)
}

fn phase(versions: &[Version], rollout: Option<&RolloutState>) -> &'static str {
    match rollout.map(|r| r.phase) {
        Some(RolloutPhase::Progressing) => "Progressing",
        Some(RolloutPhase::RolledBack) => "RolledBack",
        _ if versions.iter().all(|v| !v.replicas.is_empty()) => "Ready",
        _ => "Pending",
    }
}

fn ready_summary(versions: &[Version], stats: Option<&EndpointStats>) -> String {
    let ready: u32 = versions
        .iter()
        .map(|v| {
            stats
                .and_then(|s| s.versions.get(&v.name))
                .map_or(0, |s| s.ready_replicas as u32)
        })
        .sum();
    let all: usize = versions.iter().map(|v| v.replicas.len()).sum();
    format!("{ready}/{all}")
}

/// The router's configuration for the split in force, written atomically (the router
/// re-reads it when it changes).
fn write_router_config(
    path: &Path,
    name: &str,
    spec: &toucan_core::api::EndpointSpec,
    versions: &[Version],
    traffic: &[(String, u32)],
) -> anyhow::Result<()> {
    let weight = |v: &str| {
        traffic
            .iter()
            .find(|(name, _)| name == v)
            .map_or(0, |(_, w)| *w)
    };
    let config = RouterConfig {
        endpoint: name.to_string(),
        versions: versions
            .iter()
            .map(|v| VersionConfig {
                name: v.name.clone(),
                weight: weight(&v.name),
                replicas: v
                    .replicas
                    .iter()
                    .map(|r| format!("http://{}", r.addr))
                    .collect(),
            })
            .collect(),
        shadow: spec.shadow.as_ref().map(|s| ShadowConfig {
            version: s.version.clone(),
            percent: f64::from(s.percent),
        }),
        sticky_header: spec.router.as_ref().and_then(|r| r.sticky_header.clone()),
        retries: spec
            .router
            .as_ref()
            .and_then(|r| r.retries)
            .unwrap_or(toucan_router::config::DEFAULT_RETRIES),
        timeout: toucan_router::config::DEFAULT_TIMEOUT,
    };
    let text = serde_json::to_string_pretty(&config)?;
    if std::fs::read_to_string(path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// The Prometheus alerting rules of the endpoint's monitoring, as a rule file beside its
/// status (`rules.yaml`): what a Prometheus scraping the local API's `/metrics` evaluates to
/// alert as the operator's `PrometheusRule` does in a cluster. Removed when the spec has
/// nothing to alert on.
fn write_rules(dir: &Path, name: &str, spec: &EndpointSpec) -> anyhow::Result<()> {
    let path = dir.join(RULES_FILE);
    match toucan_core::monitoring::rules::rule_file_yaml(LOCAL_NAMESPACE, name, spec) {
        Some(text) => {
            let text = text.context("writing the endpoint's alerting rules")?;
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, text.as_bytes())?;
            tmp.persist(&path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        None => {
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// The spec once a retrained candidate's rollout ended: promoted, it is the only version
/// and takes every request; rolled back, it is gone. `gone` names the versions removed.
fn finish_rollout(spec: &mut EndpointSpec, gone: &[String], promoted: bool) {
    spec.versions.retain(|v| !gone.contains(&v.name));
    spec.traffic.retain(|t| !gone.contains(&t.version));
    if promoted {
        spec.traffic.clear();
    }
    spec.rollout = None;
}

/// The control-plane API on a loopback port, over the local store: where the servers ship
/// their payload samples and labels arrive, with the monitoring gauges on `/metrics`.
async fn start_api(
    store: Arc<dyn MetadataStore>,
    gauges: Arc<toucan_api::GaugeBoard>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the local control-plane API")?;
    let addr = listener.local_addr()?;
    let app = toucan_api::router(toucan_api::ApiState {
        store,
        auth: Arc::new(toucan_api::Anyone),
        reports: None,
        gauges: Some(gauges),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the local control-plane API stopped");
        }
    });
    Ok(addr)
}
