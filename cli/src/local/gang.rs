//! A distributed step on this machine: the gang engine's effects carried out with one
//! launcher process per replica, on loopback addresses with ports picked free at each
//! incarnation, sharing one checkpoint directory.
//!
//! Layout under the attempt's directory: `replicas/INCARNATION/ROLE-INDEX/` holds each
//! replica's launch spec, log and report. The checkpoints live beside the step's attempts,
//! so a gang restarted by its failure policy, and a retried attempt, both resume.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use toucan_core::engine::gang::{
    self, Address, Gang, GangEffect, GangObservation, ReplicaEnd, ReplicaId,
};
use toucan_core::engine::run::Observation;
use toucan_core::engine::{GangInvocation, Invocation};
use toucan_core::launch::{LaunchReport, LaunchSpec};
use toucan_core::records::DocumentKind;
use toucan_core::time::now_ms;

use super::executor::{Executor, fresh_dir, run_launcher};
use crate::home::Home;

/// How much of a failed replica's log is kept with its failure.
const LOG_TAIL_BYTES: u64 = 4096;

impl Executor {
    /// Runs one attempt of a distributed step: its gang, restarted by its failure policy,
    /// until it succeeds (the leader's report is the attempt's), fails, or is stopped.
    pub(super) async fn gang_attempt(
        &self,
        inv: &Invocation,
        gang: &GangInvocation,
        mut stop: watch::Receiver<bool>,
        observed: &mpsc::UnboundedSender<Observation>,
    ) -> Result<LaunchReport, String> {
        let started_at = now_ms();
        let dir = self.home.attempt_dir(&self.run_id, &inv.node, inv.attempt);
        fresh_dir(&dir)?;
        let checkpoints = dir
            .parent()
            .map_or_else(|| dir.join("checkpoints"), |node| node.join("checkpoints"));
        std::fs::create_dir_all(&checkpoints)
            .map_err(|e| format!("creating {}: {e}", checkpoints.display()))?;
        let deadline = inv
            .timeout_ms
            .map(|ms| (Instant::now() + Duration::from_millis(ms), ms));
        let mut engine = Gang::new(gang.plan.clone(), false);
        let (tx, mut rx) = mpsc::unbounded_channel::<GangObservation>();
        let mut stops: BTreeMap<u32, watch::Sender<bool>> = BTreeMap::new();
        let mut announced = false;
        let mut effects = engine.advance(Vec::new());
        self.record_gang(inv, &engine).await;
        loop {
            for effect in effects {
                match effect {
                    GangEffect::Launch {
                        incarnation,
                        replicas,
                    } => {
                        let (stop_tx, stop_rx) = watch::channel(false);
                        stops.insert(incarnation, stop_tx);
                        let addresses = free_addresses(&replicas)?;
                        for replica in replicas {
                            let replica_dir = dir
                                .join("replicas")
                                .join(incarnation.to_string())
                                .join(replica.to_string());
                            fresh_dir(&replica_dir)?;
                            let mut spec = LaunchSpec::for_attempt(
                                &self.run_id,
                                inv,
                                self.artifacts.location(),
                                replica_dir,
                            );
                            spec.checkpoints = Some(checkpoints.clone());
                            spec.collect_outputs = replica == gang.plan.leader();
                            if let Some(env) = gang.role_env.get(&replica.role) {
                                spec.env.extend(env.clone());
                            }
                            spec.env.extend(gang::contract(
                                &gang.plan,
                                replica,
                                incarnation,
                                |r| addresses[&r].clone(),
                            ));
                            spec.env
                                .insert("TOUCAN_CHECKPOINT_DIR".into(), path_text(&checkpoints));
                            if !announced && replica == gang.plan.leader() {
                                announced = true;
                                let _ = observed.send(Observation::Launched {
                                    node: inv.node.clone(),
                                    attempt: inv.attempt,
                                    log: Some(path_text(&Home::log_path(&spec.dir))),
                                });
                            }
                            self.spawn_replica(spec, replica, incarnation, stop_rx.clone(), &tx);
                        }
                    }
                    GangEffect::Stop { incarnation, .. } => {
                        if let Some(stop) = stops.get(&incarnation) {
                            let _ = stop.send(true);
                        }
                    }
                    GangEffect::Notify(event) => self.progress.gang_event(&inv.node, &event),
                    GangEffect::Finished(outcome) => {
                        let duration_ms = (now_ms() - started_at).max(0) as u64;
                        return Ok(engine.report(outcome, duration_ms));
                    }
                }
            }
            let timeout = async {
                match deadline {
                    Some((d, _)) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut batch = Vec::new();
            tokio::select! {
                Some(first) = rx.recv() => {
                    batch.push(first);
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                }
                _ = stop.changed() => batch.push(GangObservation::Cancel("cancelled".into())),
                _ = timeout => {
                    let ms = deadline.map_or(0, |(_, ms)| ms);
                    let why = format!("timed out after {}", crate::output::duration(ms as i64));
                    batch.push(GangObservation::Cancel(why));
                }
            }
            effects = engine.advance(batch);
            self.record_gang(inv, &engine).await;
        }
    }

    /// Keeps the gang's record (restarts, the replicas' ends) in the metadata store, where
    /// `toucan get jobs` and `toucan describe job` read it. A failed write costs only that.
    async fn record_gang(&self, inv: &Invocation, engine: &Gang) {
        let key = gang::record_key(&inv.node, inv.attempt);
        let written = match serde_json::to_value(engine) {
            Ok(body) => self
                .store
                .put_run_document(&self.run_id, DocumentKind::Gang, &key, &body, now_ms())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = written {
            tracing::warn!("recording the gang of {key}: {e}");
        }
    }

    /// Starts one replica's launcher; it reports `Started`, then `Ended`.
    fn spawn_replica(
        &self,
        spec: LaunchSpec,
        replica: ReplicaId,
        incarnation: u32,
        stop: watch::Receiver<bool>,
        tx: &mpsc::UnboundedSender<GangObservation>,
    ) {
        let launcher = self.launcher.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let started_tx = tx.clone();
            let result = run_launcher(&launcher, &spec, stop, None, |_| {
                let _ = started_tx.send(GangObservation::Started {
                    replica,
                    incarnation,
                });
            })
            .await;
            let log_tail = log_tail(&Home::log_path(&spec.dir));
            let end = match result {
                Ok(r) => ReplicaEnd {
                    exit_code: r.exit_code,
                    signal: r.signal,
                    preempted: false,
                    message: r.error,
                    log_tail,
                    outputs: r.succeeded.then_some(r.outputs),
                },
                Err(message) => ReplicaEnd {
                    message: Some(message),
                    log_tail,
                    ..ReplicaEnd::default()
                },
            };
            let _ = tx.send(GangObservation::Ended {
                replica,
                incarnation,
                end,
            });
        });
    }
}

/// A free loopback port for each replica. The ports are free when picked; a replica that
/// loses its port to another process fails to bind, and its gang restarts on new ones.
fn free_addresses(replicas: &[ReplicaId]) -> Result<BTreeMap<ReplicaId, Address>, String> {
    // All held open at once, so that no two replicas get the same port.
    let mut listeners = Vec::with_capacity(replicas.len());
    let mut addresses = BTreeMap::new();
    for &r in replicas {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| format!("picking a loopback port for {r}: {e}"))?;
        let port = listener
            .local_addr()
            .map_err(|e| format!("picking a loopback port for {r}: {e}"))?
            .port();
        listeners.push(listener);
        addresses.insert(
            r,
            Address {
                host: "127.0.0.1".into(),
                port,
            },
        );
    }
    Ok(addresses)
}

/// The last few kilobytes of a log, from a line start.
fn log_tail(path: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))
        .ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let text = match (len > LOG_TAIL_BYTES, text.split_once('\n')) {
        (true, Some((_, rest))) => rest.to_string(),
        _ => text,
    };
    (!text.is_empty()).then_some(text)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
