//! The async shell around [`WorkQueue`]: watch events go in through [`Queue::push`], and
//! [`run`] takes due keys, looks their objects up in the reflector's store and reconciles them on
//! at most `workers` tasks at once, giving each outcome back to the queue.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use kube::runtime::reflector::{Lookup, ObjectRef, Store};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;
use tokio::task::{Id, JoinError, JoinSet};
use tracing::Instrument;

use super::Action;
use super::work_queue::{Class, Outcome, Settings, WorkQueue};
use crate::metrics::{ControllerLabels, Metrics, QueueLabels};

/// A controller's queue metrics: its depth, and how long keys waited once due, by class.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    depth: Gauge,
    wait_new: Histogram,
    wait_active: Histogram,
}

impl QueueMetrics {
    pub fn new(metrics: &Metrics, controller: &'static str) -> Self {
        let wait = |class: Class| {
            metrics
                .queue_wait
                .get_or_create(&QueueLabels {
                    controller,
                    class: class.as_str(),
                })
                .clone()
        };
        QueueMetrics {
            depth: metrics
                .queue_depth
                .get_or_create(&ControllerLabels { controller })
                .clone(),
            wait_new: wait(Class::New),
            wait_active: wait(Class::Active),
        }
    }
}

struct Shared<K> {
    queue: Mutex<WorkQueue<K>>,
    wake: Notify,
    metrics: QueueMetrics,
}

/// A handle on one controller's queue, cloned into every watch that feeds it.
pub struct Queue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Queue<K> {
    fn clone(&self) -> Self {
        Queue {
            shared: self.shared.clone(),
        }
    }
}

impl<K: Clone + Eq + Hash> std::fmt::Debug for Queue<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queue = self.lock();
        f.debug_struct("Queue")
            .field("waiting", &queue.waiting())
            .field("running", &queue.running())
            .finish()
    }
}

impl<K: Clone + Eq + Hash> Queue<K> {
    pub fn new(settings: Settings, metrics: QueueMetrics) -> Self {
        Queue {
            shared: Arc::new(Shared {
                queue: Mutex::new(WorkQueue::new(settings, random_seed())),
                wake: Notify::new(),
                metrics,
            }),
        }
    }

    /// Asks for `key` to be reconciled now.
    pub fn push(&self, key: K, class: Class) {
        let waiting = {
            let mut queue = self.lock();
            queue.push(key, class, Instant::now());
            queue.waiting()
        };
        self.shared.metrics.depth.set(waiting as i64);
        // A stored permit if the runner is not waiting yet: the wake-up is never lost.
        self.shared.wake.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, WorkQueue<K>> {
        // The queue's invariants hold between calls, and no call panics halfway.
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, key: &K, outcome: Outcome) {
        let waiting = {
            let mut queue = self.lock();
            queue.finish(key, outcome, Instant::now());
            queue.waiting()
        };
        self.shared.metrics.depth.set(waiting as i64);
    }
}

/// A seed that differs from one process to the next, so two replicas do not retry in step.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Reconciles the objects of `queue` until `shutdown`, then waits for the reconciles in flight.
///
/// `workers` bounds the reconciles at once (0: no bound). A key whose object is no longer in
/// `store` is dropped. `on_error` sees every failure (to count and log it); the queue schedules
/// the retry.
pub async fn run<K, C, E, Fut>(
    queue: Queue<ObjectRef<K>>,
    store: Store<K>,
    reconcile: fn(Arc<K>, Arc<C>) -> Fut,
    on_error: fn(Arc<K>, &E, Arc<C>),
    ctx: Arc<C>,
    workers: usize,
    shutdown: impl Future<Output = ()>,
) where
    K: Lookup + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
    C: Send + Sync + 'static,
    E: Send + 'static,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
{
    let workers = if workers == 0 { usize::MAX } else { workers };
    let mut tasks = JoinSet::new();
    let mut running: HashMap<Id, ObjectRef<K>> = HashMap::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let next_due = {
            let mut q = queue.lock();
            while tasks.len() < workers {
                let Some(taken) = q.pop(Instant::now()) else {
                    break;
                };
                let wait = match taken.class {
                    Class::New => &queue.shared.metrics.wait_new,
                    Class::Active => &queue.shared.metrics.wait_active,
                };
                wait.observe(taken.waited.as_secs_f64());
                let Some(object) = store.get(&taken.key) else {
                    q.finish(&taken.key, Outcome::Done(None), Instant::now());
                    continue;
                };
                let ctx = ctx.clone();
                // Everything the reconcile and its error policy log names the object.
                let span = tracing::info_span!(
                    "reconciling object",
                    object.ref = %taken.key,
                    object.class = taken.class.as_str(),
                );
                let reconciled = async move {
                    match reconcile(object.clone(), ctx.clone()).await {
                        Ok(action) => Outcome::Done(action.requeue_after()),
                        Err(e) => {
                            on_error(object, &e, ctx);
                            Outcome::Failed
                        }
                    }
                };
                let handle = tasks.spawn(reconciled.instrument(span));
                running.insert(handle.id(), taken.key);
            }
            queue.shared.metrics.depth.set(q.waiting() as i64);
            // With every worker busy only a finished reconcile can start another.
            (tasks.len() < workers).then(|| q.next_due()).flatten()
        };
        let sleep = async {
            match next_due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = tasks.join_next_with_id() => finished(&queue, &mut running, done),
            () = queue.shared.wake.notified() => {}
            () = sleep => {}
        }
    }
    tracing::debug!(
        in_flight = tasks.len(),
        "stopping: waiting for the reconciles in flight"
    );
    while let Some(done) = tasks.join_next_with_id().await {
        finished(&queue, &mut running, done);
    }
}

fn finished<K: Lookup + Clone>(
    queue: &Queue<ObjectRef<K>>,
    running: &mut HashMap<Id, ObjectRef<K>>,
    done: Result<(Id, Outcome), JoinError>,
) where
    K::DynamicType: Eq + Hash + Clone,
{
    let (id, outcome) = match done {
        Ok(done) => done,
        Err(e) => {
            tracing::error!("a reconcile did not finish: {e}");
            (e.id(), Outcome::Failed)
        }
    };
    if let Some(key) = running.remove(&id) {
        queue.finish(&key, outcome);
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
