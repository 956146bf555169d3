#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ObjectMeta;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::*;
use crate::queue::Backoff;

/// What the test reconciler sees and does.
struct Probe {
    /// Each reconcile waits for a permit before it finishes.
    gate: Semaphore,
    started: mpsc::UnboundedSender<String>,
    in_flight: Mutex<HashSet<String>>,
    most_at_once: Mutex<usize>,
    /// Keys reconciled while already being reconciled.
    overlaps: Mutex<Vec<String>>,
    /// Keys whose next reconcile fails.
    fail: Mutex<HashSet<String>>,
    errors: Mutex<Vec<String>>,
}

#[derive(Debug)]
struct Failed;

async fn reconcile(cm: Arc<ConfigMap>, probe: Arc<Probe>) -> Result<Action, Failed> {
    let name = cm.metadata.name.clone().unwrap();
    {
        let mut in_flight = probe.in_flight.lock().unwrap();
        if !in_flight.insert(name.clone()) {
            probe.overlaps.lock().unwrap().push(name.clone());
        }
        let mut most = probe.most_at_once.lock().unwrap();
        *most = (*most).max(in_flight.len());
    }
    probe.started.send(name.clone()).unwrap();
    probe.gate.acquire().await.unwrap().forget();
    probe.in_flight.lock().unwrap().remove(&name);
    if probe.fail.lock().unwrap().remove(&name) {
        return Err(Failed);
    }
    Ok(Action::await_change())
}

fn on_error(cm: Arc<ConfigMap>, _: &Failed, probe: Arc<Probe>) {
    probe
        .errors
        .lock()
        .unwrap()
        .push(cm.metadata.name.clone().unwrap());
}

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ns".into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn key(name: &str) -> ObjectRef<ConfigMap> {
    ObjectRef::new(name).within("ns")
}

struct Harness {
    queue: Queue<ObjectRef<ConfigMap>>,
    probe: Arc<Probe>,
    started: mpsc::UnboundedReceiver<String>,
    stop: oneshot::Sender<()>,
    runner: tokio::task::JoinHandle<()>,
}

fn start(names: &[&str], workers: usize) -> Harness {
    let (store, mut writer): (_, Writer<ConfigMap>) = reflector::store();
    for name in names {
        writer.apply_watcher_event(&watcher::Event::Apply(config_map(name)));
    }
    let (started_tx, started) = mpsc::unbounded_channel();
    let probe = Arc::new(Probe {
        gate: Semaphore::new(0),
        started: started_tx,
        in_flight: Mutex::default(),
        most_at_once: Mutex::default(),
        overlaps: Mutex::default(),
        fail: Mutex::default(),
        errors: Mutex::default(),
    });
    let settings = Settings {
        backoff: Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(20),
        },
        ..Settings::default()
    };
    let queue = Queue::new(settings, QueueMetrics::new(&Metrics::new(), "test"));
    let (stop, stopped) = oneshot::channel::<()>();
    let runner = tokio::spawn(run(
        queue.clone(),
        store,
        reconcile,
        on_error,
        probe.clone(),
        workers,
        async move {
            let _ = stopped.await;
        },
    ));
    Harness {
        queue,
        probe,
        started,
        stop,
        runner,
    }
}

#[tokio::test]
async fn runs_at_most_the_workers_at_once_and_one_key_once_at_a_time() {
    let mut h = start(&["a", "b", "c"], 2);
    for name in ["a", "b", "c"] {
        h.queue.push(key(name), Class::Active);
    }
    assert_eq!(h.started.recv().await.unwrap(), "a");
    assert_eq!(h.started.recv().await.unwrap(), "b");
    // Asked again while it runs: it waits for its reconcile to end, behind c.
    h.queue.push(key("a"), Class::Active);
    h.probe.gate.add_permits(1);
    assert_eq!(h.started.recv().await.unwrap(), "c");
    h.probe.gate.add_permits(1);
    assert_eq!(h.started.recv().await.unwrap(), "a");
    h.probe.gate.add_permits(2);
    h.stop.send(()).unwrap();
    h.runner.await.unwrap();
    assert_eq!(*h.probe.most_at_once.lock().unwrap(), 2);
    assert!(h.probe.overlaps.lock().unwrap().is_empty());
    assert!(h.started.try_recv().is_err(), "reconciled more than asked");
}

#[tokio::test]
async fn a_failed_reconcile_is_reported_and_retried_after_its_backoff() {
    let mut h = start(&["a"], 4);
    h.probe.fail.lock().unwrap().insert("a".into());
    h.queue.push(key("a"), Class::New);
    assert_eq!(h.started.recv().await.unwrap(), "a");
    h.probe.gate.add_permits(1);
    assert_eq!(h.started.recv().await.unwrap(), "a", "retried");
    assert_eq!(*h.probe.errors.lock().unwrap(), ["a"]);
    h.probe.gate.add_permits(1);
    h.stop.send(()).unwrap();
    h.runner.await.unwrap();
}

#[tokio::test]
async fn a_key_whose_object_is_gone_is_dropped() {
    let mut h = start(&["here"], 4);
    h.queue.push(key("gone"), Class::Active);
    h.queue.push(key("here"), Class::Active);
    assert_eq!(h.started.recv().await.unwrap(), "here");
    h.probe.gate.add_permits(1);
    h.stop.send(()).unwrap();
    h.runner.await.unwrap();
    assert!(h.started.try_recv().is_err());
}

#[tokio::test]
async fn shutdown_waits_for_the_reconciles_in_flight_and_starts_no_more() {
    let mut h = start(&["a", "b"], 1);
    h.queue.push(key("a"), Class::Active);
    h.queue.push(key("b"), Class::Active);
    assert_eq!(h.started.recv().await.unwrap(), "a");
    h.stop.send(()).unwrap();
    // The runner is still waiting for a's reconcile: give the runner every chance to return.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(
        !h.runner.is_finished(),
        "returned with a reconcile in flight"
    );
    h.probe.gate.add_permits(1);
    h.runner.await.unwrap();
    assert!(
        h.started.try_recv().is_err(),
        "b started after the shutdown"
    );
}
