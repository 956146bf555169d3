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
//! `toucan describe endpoint` find it. Ctrl-C stops every process.

mod processes;
mod state;

pub use processes::{Binaries, router_stats};
pub use state::{LocalEndpoint, dir, read_all, read_one};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use toucan_core::api::{Endpoint, EndpointStatus, RolloutPhase, VersionStatus};
use toucan_core::serving::autoscale::{self, AutoscalerState, ConcurrencySample, ScaleInput};
use toucan_core::serving::rollout::{self, RolloutState, VersionObservation};
use toucan_core::serving::spec::AutoscalingPolicy;
use toucan_core::serving::traffic::{traffic_summary, traffic_targets};
use toucan_core::time::now_ms;
use toucan_router::admin::EndpointStats;
use toucan_router::config::{RouterConfig, ShadowConfig, VersionConfig};
use toucan_store::metadata::MetadataStore;

use processes::{Replica, RouterProcess, ServerSettings};

/// How often the loop observes and decides.
const TICK: Duration = Duration::from_secs(1);
/// How long the router may take to see the first ready replicas.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `toucan serve` was asked to run.
#[derive(Debug)]
pub struct ServeRequest {
    pub endpoint: Endpoint,
    /// Each version's model file, resolved from the local store.
    pub models: BTreeMap<String, PathBuf>,
    /// Each version's model as its spec names it, for the status.
    pub model_names: BTreeMap<String, String>,
    /// Where the router listens.
    pub listen: SocketAddr,
    /// The endpoint's directory under the home: logs, the router's config, the status.
    pub dir: PathBuf,
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
    let spec = &request.endpoint.spec;
    let name = request
        .endpoint
        .metadata
        .name
        .clone()
        .context("the Endpoint has no metadata.name")?;
    std::fs::create_dir_all(request.dir.join("logs"))
        .with_context(|| format!("creating {}", request.dir.display()))?;
    let api = start_api(store).await?;
    let settings = ServerSettings::of(&name, spec, &format!("http://{api}"));

    let mut signals = crate::local::Signals::new()?;
    let mut versions = Vec::new();
    for v in &spec.versions {
        let (min, _) = v.replica_bounds();
        let model = &request.models[&v.name];
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

    let decision = rollout::decide(spec, None, &[], now_ms());
    let mut rollout_state = decision.state;
    let mut traffic = decision.traffic;
    let config_path = request.dir.join("router.json");
    write_router_config(&config_path, &name, spec, &versions, &traffic)?;
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
            let model = &request.models[&version.name];
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
        let observed: Vec<VersionObservation> = stats
            .as_ref()
            .map(EndpointStats::observations)
            .unwrap_or_default();
        let decision = rollout::decide(spec, rollout_state.as_ref(), &observed, now);
        if let Some(t) = decision.transition {
            eprintln!("endpoint {name}: {}: {}", t.as_str(), decision.reason);
        }
        rollout_state = decision.state;
        traffic = decision.traffic;
        write_router_config(&config_path, &name, spec, &versions, &traffic)?;

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
                    model_digest: request.model_names.get(&v.name).cloned(),
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
                },
            )?;
            last_status = Some(status);
        }
    }
    eprintln!("endpoint {name}: stopping");
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

/// The control-plane API on a loopback port, over the local store: where the servers ship
/// their payload samples.
async fn start_api(store: Arc<dyn MetadataStore>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the local control-plane API")?;
    let addr = listener.local_addr()?;
    let app = toucan_api::router(toucan_api::ApiState {
        store,
        auth: Arc::new(toucan_api::Anyone),
        reports: None,
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the local control-plane API stopped");
        }
    });
    Ok(addr)
}
