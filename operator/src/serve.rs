//! Start-up and wiring: settings, stores, the API and admin servers, leader election, the
//! watches and the controllers.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Predicate, WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, CustomResourceExt};
use tokio::sync::mpsc;
use toucan_api::{ApiState, ReportAccepted};
use toucan_core::api::{Endpoint, Pipeline, PipelineRun, TrainingJob, TuningStudy};
use toucan_store::artifacts::ArtifactStore;

use crate::admin::{self, Readiness};
use crate::auth::ClusterAuth;
use crate::config::Config;
use crate::context::{Context, RunCache};
use crate::metrics::Metrics;
use crate::queue::{self, Class, Queue, QueueMetrics};
use crate::run::pods::{MANAGED_BY, MANAGED_BY_LABEL, PodDefaults};
use crate::triggers::PodChanges;
use crate::{endpoint, job, leader, pipeline, run, study, triggers};

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("{0}")]
    Config(String),
    #[error(
        "the toucan CustomResourceDefinitions are not installed ({0}); install them with \
         `kubectl apply -f charts/toucan/crds/` (or the Helm chart) and start the operator again"
    )]
    CrdsMissing(String),
    #[error("lost the leader election; exiting so that a fresh start rejoins it")]
    LostLeadership,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl ServeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Config(_) | ServeError::CrdsMissing(_) => 2,
            ServeError::LostLeadership | ServeError::Other(_) => 1,
        }
    }
}

/// Runs the operator until a signal, or until leadership is lost.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let database_url = config.database_url.clone().ok_or_else(|| {
        ServeError::Config("no metadata store: set --database-url or TOUCAN_DATABASE_URL".into())
    })?;
    let artifacts_location = config.artifacts.clone().ok_or_else(|| {
        ServeError::Config("no artifact store: set --artifacts or TOUCAN_ARTIFACTS".into())
    })?;
    let client = Client::try_default()
        .await
        .map_err(|e| ServeError::Config(format!("connecting to Kubernetes: {e}")))?;
    check_crds(&client).await?;
    let store = toucan_store::metadata::open(&database_url)
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let artifacts =
        ArtifactStore::open(&artifacts_location).map_err(|e| ServeError::Config(e.to_string()))?;
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());

    // The API serves on every replica: reports land in the store whoever receives them.
    let (reports_tx, reports_rx) = mpsc::unbounded_channel::<ReportAccepted>();
    let gauges = Arc::new(toucan_api::GaugeBoard::default());
    let api_state = ApiState {
        store: store.clone(),
        auth: Arc::new(ClusterAuth::new(client.clone())),
        reports: Some(reports_tx),
        gauges: Some(gauges.clone()),
    };
    let api_listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .map_err(|e| ServeError::Config(format!("--api-listen {}: {e}", config.api_listen)))?;
    tracing::info!(addr = %config.api_listen, "control-plane API listening");
    // Every replica serves the routers' configuration, from caches of its own.
    let endpoint_watches =
        endpoint::watches::Watches::start(&client, config.watch_namespace.as_deref());
    let routers_auth = api_state.auth.clone();
    let api_app = toucan_api::router(api_state).merge(endpoint::router_config::routes(
        endpoint_watches.clone(),
        routers_auth,
    ));
    let api_server = axum::serve(api_listener, api_app);
    tokio::spawn(async move {
        if let Err(e) = api_server.await {
            tracing::error!("control-plane API server: {e}");
        }
    });
    readiness.api_serving();
    let admin_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|e| {
            ServeError::Config(format!("--metrics-listen {}: {e}", config.metrics_listen))
        })?;
    tracing::info!(addr = %config.metrics_listen, "metrics and health listening");
    let admin_router = admin::router(metrics.clone(), readiness.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin_listener, admin_router).await {
            tracing::error!("admin server: {e}");
        }
    });

    let leading = if config.leader_elect {
        let identity = config.identity();
        let mut leading = leader::elect(
            client.clone(),
            &config.lease_namespace,
            &config.lease_name,
            &identity,
        )
        .await
        .map_err(|e| ServeError::Config(format!("leader election: {e:#}")))?;
        tracing::info!(%identity, lease = %config.lease_name, "waiting to lead");
        // A standby serves the API and is ready; the leader is ready once its watches sync.
        readiness.standby();
        tokio::select! {
            r = leader::until_leading(&mut leading) => r.map_err(ServeError::Other)?,
            _ = shutdown_signal() => return Ok(()),
        }
        tracing::info!(%identity, "leading");
        Some(leading)
    } else {
        None
    };

    let pod_defaults = PodDefaults {
        launcher_image: config.launcher_image.clone(),
        serving_image: config.serving_image.clone(),
        router_image: config.router_image.clone(),
        service_account: config.step_service_account.clone(),
        api_url: config.api_url.clone(),
        artifacts: artifacts_location.clone(),
        artifacts_secret: config.artifacts_secret.clone(),
    };
    let (runs_api, pods_api, pipelines_api): (Api<PipelineRun>, Api<Pod>, Api<Pipeline>) =
        match &config.watch_namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client.clone()),
            ),
        };
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let pod_watch = watcher(
        pods_api,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .inspect(synced(&readiness, "pods", Readiness::pods_synced))
    // The controller reads a pod's labels, annotations and status; its spec (which carries the
    // launch spec) and managed fields would only grow the cache with every pod.
    .modify(|pod| {
        pod.metadata.managed_fields = None;
        pod.spec = None;
    })
    .reflect(pod_writer)
    .filter({
        let mut changes = PodChanges::default();
        move |event| std::future::ready(changes.passes(event))
    })
    .touched_objects();

    let reporter = Reporter {
        controller: "toucan-operator".into(),
        instance: config.identity.clone(),
    };
    let (runs_reader, runs_writer) = reflector::store::<PipelineRun>();
    let ctx = Arc::new(Context {
        client: client.clone(),
        store,
        gauges,
        artifacts,
        config: config.clone(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        pods: pod_reader.clone(),
        runs: RunCache::new(runs_reader.clone()),
        pod_defaults,
        runs_by_id: Mutex::new(Default::default()),
        service_accounts: Mutex::new(Default::default()),
        gang_admission: tokio::sync::Mutex::new(()),
    });

    // Three sources feed the run queue: the runs themselves, their pods, and launcher reports.
    let runs_queue = Queue::new(
        queue::Settings::default(),
        QueueMetrics::new(&metrics, run::CONTROLLER),
    );
    // The run watch's first full list marks readiness (the store's own readiness future wakes
    // only its last waiter), and status-only changes do not wake a run (`crate::triggers`).
    let runs_cache_ctx = ctx.clone();
    let runs_watch = watcher(runs_api, watcher::Config::default())
        .default_backoff()
        .inspect(synced(&readiness, "pipelineruns", Readiness::runs_synced))
        .reflect(runs_writer)
        .inspect(move |event| runs_cache_ctx.runs.observe(event))
        .applied_objects()
        .predicate_filter(
            predicates::generation
                .combine(predicates::finalizers)
                .combine(triggers::suspend_annotation),
            Default::default(),
        )
        .for_each({
            let queue = runs_queue.clone();
            move |run| {
                match run {
                    Ok(run) => queue.push(ObjectRef::from_obj(&run), triggers::run_class(&run)),
                    Err(e) => tracing::debug!("pipelinerun watch: {e}"),
                }
                std::future::ready(())
            }
        });
    let pods_feed = pod_watch.for_each({
        let queue = runs_queue.clone();
        move |pod| {
            match pod {
                Ok(pod) => {
                    if let Some(run) = triggers::run_of(&pod) {
                        queue.push(run, Class::Active);
                    }
                }
                Err(e) => tracing::debug!("pod watch: {e}"),
            }
            std::future::ready(())
        }
    });
    let reports_feed = {
        let queue = runs_queue.clone();
        let ctx = ctx.clone();
        let mut reports = reports_rx;
        async move {
            while let Some(report) = reports.recv().await {
                if let Some(run) = ctx.run_ref(&report.run_id) {
                    queue.push(run, Class::Active);
                }
            }
        }
    };
    let runs_task = queue::run(
        runs_queue,
        runs_reader,
        run::reconcile,
        run::error_policy,
        ctx.clone(),
        usize::from(config.concurrency),
        shutdown_signal(),
    );
    // The watches feed the queue until the runner has stopped.
    let runs_task = async move {
        tokio::select! {
            () = runs_task => {}
            _ = futures::future::join3(runs_watch, pods_feed, reports_feed) => {}
        }
    };

    let pipelines_task = pipeline::controller(pipelines_api, ctx.clone(), shutdown_signal());
    let jobs_api: Api<TrainingJob> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let jobs_task = job::controller(jobs_api, ctx.clone(), shutdown_signal());
    let studies_api: Api<TuningStudy> = match &config.watch_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let studies_task = study::controller(studies_api, ctx.clone(), shutdown_signal());
    let endpoints_task = endpoint::controller(endpoint_watches, ctx.clone(), shutdown_signal());

    let lost = async move {
        match leading {
            Some(l) => leader::lost(l).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = futures::future::join5(
            runs_task,
            pipelines_task,
            jobs_task,
            studies_task,
            endpoints_task,
        ) => Ok(()),
        _ = lost => Err(ServeError::LostLeadership),
    }
}

/// A watch-stream inspector that calls `mark` on `readiness` at each full list (the first one is
/// what counts).
fn synced<K>(
    readiness: &Arc<Readiness>,
    watch: &'static str,
    mark: fn(&Readiness),
) -> impl Fn(&Result<watcher::Event<K>, watcher::Error>) + use<K> {
    let readiness = readiness.clone();
    move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            mark(&readiness);
            tracing::debug!(watch, "full list received");
        }
    }
}

/// Fails fast, with the fix, when the CRDs are not installed.
async fn check_crds(client: &Client) -> Result<(), ServeError> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        PipelineRun::crd_name(),
        Pipeline::crd_name(),
        TrainingJob::crd_name(),
        TuningStudy::crd_name(),
        Endpoint::crd_name(),
    ] {
        match crds.get_opt(name).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ServeError::CrdsMissing(format!("{name} not found"))),
            Err(e) => return Err(ServeError::CrdsMissing(format!("reading {name}: {e}"))),
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
