//! The router end to end, on 127.0.0.1: fake model servers (small axum servers, each on its
//! own runtime so that killing one drops its listener and its connections at once) answer
//! with their version and replica id; the router runs in the test's runtime (or, for the
//! binary's own behaviour, as a process); a hyper client plays the caller.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use toucan_core::serving::{pick, unit_interval};
use toucan_router::{RouterConfig, RouterSettings, ShadowConfig, VersionConfig};

/// Long enough for anything awaited here on a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(10);
/// An Open Inference Protocol request.
const INFER_BODY: &str = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.0]}]}"#;

// === fake model servers ===

/// What a fake model server saw of one request.
#[derive(Debug, Clone)]
struct Received {
    request_id: String,
    shadow: bool,
}

/// A fake model server: one replica of one version.
struct Backend {
    addr: SocketAddr,
    /// What `/v2/health/ready` says.
    ready: Arc<AtomicBool>,
    /// Answer every inference request 503.
    failing: Arc<AtomicBool>,
    received: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    count: Arc<AtomicUsize>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Backend {
    fn start(version: &str, replica: &str) -> Backend {
        let ready = Arc::new(AtomicBool::new(true));
        let failing = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (sender, received) = mpsc::unbounded_channel();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (version, replica) = (version.to_string(), replica.to_string());
        let state = (ready.clone(), failing.clone(), count.clone(), sender);
        let app = axum::Router::new().fallback(move |request: Request| {
            let (ready, failing, count, sender) = state.clone();
            let (version, replica) = (version.clone(), replica.clone());
            async move {
                answer(
                    request, &version, &replica, &ready, &failing, &count, &sender,
                )
                .await
            }
        });
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        Backend {
            addr,
            ready,
            failing,
            received: tokio::sync::Mutex::new(received),
            count,
            runtime: Mutex::new(Some(runtime)),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Inference requests answered (or refused) so far.
    fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Stops the server: its listener and every connection close at once.
    fn kill(&self) {
        if let Some(runtime) = self.runtime.lock().unwrap().take() {
            runtime.shutdown_background();
        }
    }

    /// The next `n` requests it receives, in order.
    async fn next_received(&self, n: usize) -> Vec<Received> {
        let mut out = Vec::new();
        let mut received = self.received.lock().await;
        while out.len() < n {
            let next = tokio::time::timeout(DEADLINE, received.recv()).await;
            out.push(
                next.expect("a request in time")
                    .expect("the server is running"),
            );
        }
        out
    }

    async fn received_now(&self) -> Vec<Received> {
        let mut out = Vec::new();
        let mut received = self.received.lock().await;
        while let Ok(r) = received.try_recv() {
            out.push(r);
        }
        out
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn answer(
    request: Request,
    version: &str,
    replica: &str,
    ready: &AtomicBool,
    failing: &AtomicBool,
    count: &AtomicUsize,
    sender: &mpsc::UnboundedSender<Received>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path().to_string();
    if path == "/v2/health/ready" {
        let status = if ready.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return status.into_response();
    }
    let (request_id, shadow) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let shadow = header("x-toucan-shadow").as_deref() == Some("true");
        (header("x-request-id").unwrap_or_default(), shadow)
    };
    let method = request.method().to_string();
    let body = request.into_body().collect().await.unwrap().to_bytes();
    count.fetch_add(1, Ordering::SeqCst);
    let _ = sender.send(Received {
        request_id: request_id.clone(),
        shadow,
    });
    if failing.load(Ordering::SeqCst) {
        let body = json!({"error": "overloaded", "replica": replica});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    axum::Json(json!({
        "version": version,
        "replica": replica,
        "method": method,
        "path": path,
        "requestId": request_id,
        "bodyBytes": body.len(),
    }))
    .into_response()
}

// === the router under test ===

struct RouterUnderTest {
    addr: SocketAddr,
    configs: watch::Sender<Option<RouterConfig>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for RouterUnderTest {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn fast_settings() -> RouterSettings {
    RouterSettings {
        probe_interval: Duration::from_millis(100),
        ..RouterSettings::default()
    }
}

async fn start_router(config: Option<RouterConfig>, settings: RouterSettings) -> RouterUnderTest {
    let (configs, updates) = watch::channel(config);
    let mut router = start_router_from(updates, settings).await;
    router.configs = configs;
    router
}

async fn start_router_from(
    updates: toucan_router::ConfigUpdates,
    settings: RouterSettings,
) -> RouterUnderTest {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        toucan_router::serve(listener, settings, updates, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    RouterUnderTest {
        addr,
        configs: watch::channel(None).0,
        stop: Some(stop),
    }
}

fn version(name: &str, weight: u32, replicas: &[&Backend]) -> VersionConfig {
    VersionConfig {
        name: name.into(),
        weight,
        replicas: replicas.iter().map(|b| b.url()).collect(),
    }
}

fn config(versions: Vec<VersionConfig>) -> RouterConfig {
    RouterConfig {
        endpoint: "fashion".into(),
        versions,
        shadow: None,
        sticky_header: None,
        retries: 2,
        timeout: Duration::from_secs(5),
    }
}

// === the caller ===

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
    text: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Clone)]
struct Caller {
    client: Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
}

impl Caller {
    fn new(addr: SocketAddr) -> Caller {
        Caller {
            client: Client::builder(TokioExecutor::new()).build_http(),
            addr,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Answer {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).to_string();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            text,
        }
    }

    async fn infer(&self, headers: &[(&str, &str)]) -> Answer {
        let body = Bytes::from_static(INFER_BODY.as_bytes());
        self.call(Method::POST, "/v2/models/fashion/infer", headers, body)
            .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, &[], Bytes::new()).await
    }

    async fn stats(&self) -> Value {
        self.get("/router/v1/stats").await.body
    }

    async fn metrics(&self) -> String {
        self.get("/metrics").await.text
    }

    /// Waits until the stats show these ready replica counts (the probe has run).
    async fn await_ready(&self, expected: &[(&str, u64)]) {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let stats = self.stats().await;
            if expected
                .iter()
                .all(|(v, n)| stats["versions"][v]["readyReplicas"].as_u64() == Some(*n))
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "not ready: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `n` inference requests, `concurrency` at a time; the answers in completion order.
    async fn infer_many(&self, n: usize, concurrency: usize) -> Vec<Answer> {
        futures::stream::iter(0..n)
            .map(|_| self.infer(&[]))
            .buffer_unordered(concurrency)
            .collect()
            .await
    }
}

/// The value of the sample `series` (name and labels, as printed) in a metrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

fn count_versions(answers: &[Answer]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for answer in answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let version = answer.header("x-toucan-version").unwrap().to_string();
        assert_eq!(answer.body["version"], version.as_str());
        *counts.entry(version).or_default() += 1;
    }
    counts
}

// === the tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_holds_over_2000_requests() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    let router = start_router(
        Some(config(vec![
            version("v1", 90, &[&v1]),
            version("v2", 10, &[&v2]),
        ])),
        fast_settings(),
    )
    .await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let counts = count_versions(&caller.infer_many(2000, 16).await);
    let to_v2 = counts.get("v2").copied().unwrap_or(0) as f64;
    // Binomial(2000, 0.1): sd ≈ 13.4; 5 sd either side.
    assert!((to_v2 - 200.0).abs() <= 5.0 * 13.42, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sticky_key_always_reaches_the_version_its_hash_picks() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    let mut cfg = config(vec![version("v1", 50, &[&v1]), version("v2", 50, &[&v2])]);
    cfg.sticky_header = Some("x-user".into());
    let router = start_router(Some(cfg), fast_settings()).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let mut seen = BTreeSet::new();
    for user in (0..20).map(|i| format!("user-{i}")) {
        let expected = *pick(&[("v1", 50), ("v2", 50)], unit_interval(&user, "route")).unwrap();
        for _ in 0..5 {
            let answer = caller.infer(&[("x-user", user.as_str())]).await;
            assert_eq!(answer.header("x-toucan-version"), Some(expected), "{user}");
        }
        seen.insert(expected);
    }
    assert_eq!(seen.len(), 2, "20 users all on one version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_reach_the_shadow_and_their_answers_never_reach_the_caller() {
    let (primary, shadow) = (Backend::start("v1", "a"), Backend::start("v2", "s"));
    let mut cfg = config(vec![
        version("v1", 100, &[&primary]),
        version("v2", 0, &[&shadow]),
    ]);
    cfg.shadow = Some(ShadowConfig {
        version: "v2".into(),
        percent: 30.0,
    });
    let router = start_router(Some(cfg), fast_settings()).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let ids: Vec<String> = (0..200).map(|i| format!("shadow-test-{i}")).collect();
    let answers: Vec<Answer> = futures::stream::iter(&ids)
        .map(|id| {
            let caller = &caller;
            // A caller cannot pass its request off as a copy.
            let headers = [("x-request-id", id.as_str()), ("x-toucan-shadow", "true")];
            async move { caller.infer(&headers).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(
        count_versions(&answers),
        BTreeMap::from([("v1".to_string(), 200)])
    );
    let expected: BTreeSet<&String> = ids
        .iter()
        .filter(|id| unit_interval(id, "shadow") < 0.3)
        .collect();
    let mirrored = shadow.next_received(expected.len()).await;
    assert!(mirrored.iter().all(|r| r.shadow));
    let mirrored_ids: BTreeSet<&String> = mirrored.iter().map(|r| &r.request_id).collect();
    assert_eq!(mirrored_ids, expected);
    let primary_got = primary.received_now().await;
    assert_eq!(primary_got.len(), 200);
    assert!(primary_got.iter().all(|r| !r.shadow));
    let metrics = caller.metrics().await;
    assert_eq!(
        metric(&metrics, "toucan_router_shadow_sent_total"),
        Some(expected.len() as f64)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"toucan_router_requests_total{version="v2",code="200",mirrored="true"}"#
        ),
        Some(expected.len() as f64),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_beyond_the_shadow_s_budget_are_dropped_and_counted() {
    let (primary, shadow) = (Backend::start("v1", "a"), Backend::start("v2", "s"));
    let mut cfg = config(vec![
        version("v1", 100, &[&primary]),
        version("v2", 0, &[&shadow]),
    ]);
    cfg.shadow = Some(ShadowConfig {
        version: "v2".into(),
        percent: 100.0,
    });
    let settings = RouterSettings {
        shadow_concurrency: 0,
        ..fast_settings()
    };
    let router = start_router(Some(cfg), settings).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let counts = count_versions(&caller.infer_many(20, 4).await);
    assert_eq!(counts, BTreeMap::from([("v1".to_string(), 20)]));
    let metrics = caller.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            r#"toucan_router_shadow_dropped_total{reason="saturated"}"#
        ),
        Some(20.0),
        "{metrics}"
    );
    assert_eq!(shadow.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_whose_replica_is_not_ready_gets_no_traffic_until_it_is() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    v2.ready.store(false, Ordering::SeqCst);
    let router = start_router(
        Some(config(vec![
            version("v1", 50, &[&v1]),
            version("v2", 50, &[&v2]),
        ])),
        fast_settings(),
    )
    .await;
    let caller = Caller::new(router.addr);
    // Both are probed in the same round.
    caller.await_ready(&[("v1", 1), ("v2", 0)]).await;
    let counts = count_versions(&caller.infer_many(100, 8).await);
    assert_eq!(counts, BTreeMap::from([("v1".to_string(), 100)]));
    assert_eq!(v2.count(), 0);
    v2.ready.store(true, Ordering::SeqCst);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let counts = count_versions(&caller.infer_many(100, 8).await);
    // Binomial(100, 0.5): 5 sd = 25.
    assert!(counts.get("v2").copied().unwrap_or(0) >= 25, "{counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_under_load_costs_no_failed_request() {
    let (a, b) = (Backend::start("v1", "a"), Backend::start("v1", "b"));
    // A slow probe: only the proxy's own retries can save the requests sent to the dead one.
    let settings = RouterSettings {
        probe_interval: Duration::from_secs(30),
        ..RouterSettings::default()
    };
    let router = start_router(Some(config(vec![version("v1", 1, &[&a, &b])])), settings).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 2)]).await;
    let done = AtomicUsize::new(0);
    let answers: Vec<Answer> = futures::stream::iter(0..400)
        .map(|_| async {
            let answer = caller.infer(&[]).await;
            if done.fetch_add(1, Ordering::SeqCst) + 1 == 100 {
                a.kill();
            }
            answer
        })
        .buffer_unordered(8)
        .collect()
        .await;
    assert_eq!(
        count_versions(&answers),
        BTreeMap::from([("v1".to_string(), 400)])
    );
    let after_kill = answers[150..]
        .iter()
        .filter(|x| x.body["replica"] == "a")
        .count();
    assert_eq!(after_kill, 0);
    let metrics = caller.metrics().await;
    let retries = metric(&metrics, r#"toucan_router_retries_total{version="v1"}"#);
    assert!(retries.is_some_and(|r| r >= 1.0), "{metrics}");
    caller.await_ready(&[("v1", 1)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_answering_503_is_retried_on_another() {
    let (a, b) = (Backend::start("v1", "a"), Backend::start("v1", "b"));
    a.failing.store(true, Ordering::SeqCst);
    let router = start_router(
        Some(config(vec![version("v1", 1, &[&a, &b])])),
        fast_settings(),
    )
    .await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 2)]).await;
    let answers = caller.infer_many(60, 4).await;
    assert_eq!(
        count_versions(&answers),
        BTreeMap::from([("v1".to_string(), 60)])
    );
    assert!(answers.iter().all(|x| x.body["replica"] == "b"));
    assert!(a.count() > 0, "the failing replica was never tried");
    assert_eq!(b.count(), 60);
    let metrics = caller.metrics().await;
    assert_eq!(
        metric(&metrics, r#"toucan_router_retries_total{version="v1"}"#),
        Some(a.count() as f64)
    );
    // With every replica answering 503, the caller gets the last one's answer as it was.
    b.failing.store(true, Ordering::SeqCst);
    let (a_before, b_before) = (a.count(), b.count());
    let answer = caller.infer(&[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["error"], "overloaded");
    assert_eq!(answer.header("x-toucan-version"), Some("v1"));
    assert_eq!((a.count() - a_before, b.count() - b_before), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_is_picked_up() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.json");
    let write = |w1: u32, w2: u32| {
        let cfg = config(vec![version("v1", w1, &[&v1]), version("v2", w2, &[&v2])]);
        std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
    };
    write(100, 0);
    let updates = toucan_router::sources::file::watch_file(path.clone())
        .await
        .unwrap();
    let router = start_router_from(updates, fast_settings()).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    let counts = count_versions(&caller.infer_many(20, 4).await);
    assert_eq!(counts, BTreeMap::from([("v1".to_string(), 20)]));
    write(0, 100);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while caller.infer(&[]).await.header("x-toucan-version") != Some("v2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts = count_versions(&caller.infer_many(20, 4).await);
    assert_eq!(counts, BTreeMap::from([("v2".to_string(), 20)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_served_at_a_url_is_followed_with_the_token() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    let served = Arc::new(Mutex::new(String::new()));
    let set = |w1: u32, w2: u32| {
        let cfg = config(vec![version("v1", w1, &[&v1]), version("v2", w2, &[&v2])]);
        *served.lock().unwrap() = serde_json::to_string(&cfg).unwrap();
    };
    set(100, 0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap();
    let document = served.clone();
    // The API answers only callers with the token, as the operator's does.
    let app = axum::Router::new().route(
        "/api/v1/endpoints/fashion/router",
        axum::routing::get(move |headers: axum::http::HeaderMap| {
            let document = document.clone();
            async move {
                let authorized = headers
                    .get("authorization")
                    .is_some_and(|v| v == "Bearer secret-token");
                if !authorized {
                    return Err(axum::http::StatusCode::UNAUTHORIZED);
                }
                Ok(document.lock().unwrap().clone())
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "secret-token\n").unwrap();
    let updates = toucan_router::sources::url::watch_url_every(
        &format!("http://{api}/api/v1/endpoints/fashion/router"),
        Some(token.path().to_path_buf()),
        Duration::from_millis(200),
    )
    .unwrap();
    let router = start_router_from(updates, fast_settings()).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    assert_eq!(
        caller.infer(&[]).await.header("x-toucan-version"),
        Some("v1")
    );
    set(0, 100);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while caller.infer(&[]).await.header("x-toucan-version") != Some("v2") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_made_when_absent_and_kept_when_present() {
    let v1 = Backend::start("v1", "a");
    let router = start_router(
        Some(config(vec![version("v1", 1, &[&v1])])),
        fast_settings(),
    )
    .await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1)]).await;
    let made = caller.infer(&[]).await;
    let id = made.header("x-request-id").unwrap();
    assert_eq!(id.len(), 26, "a ULID: {id}");
    assert_eq!(made.body["requestId"], id);
    let kept = caller.infer(&[("x-request-id", "abc-123")]).await;
    assert_eq!(kept.header("x-request-id"), Some("abc-123"));
    assert_eq!(kept.body["requestId"], "abc-123");
    // Method, path and body arrive as sent.
    assert_eq!(kept.body["method"], "POST");
    assert_eq!(kept.body["path"], "/v2/models/fashion/infer");
    assert_eq!(kept.body["bodyBytes"], INFER_BODY.len());
    let v1_path = caller.get("/v1/models/fashion:predict").await;
    assert_eq!(v1_path.body["path"], "/v1/models/fashion:predict");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_count_what_each_version_answered() {
    let (v1, v2) = (Backend::start("v1", "a"), Backend::start("v2", "b"));
    let router = start_router(
        Some(config(vec![
            version("v1", 100, &[&v1]),
            version("v2", 0, &[&v2]),
        ])),
        fast_settings(),
    )
    .await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1), ("v2", 1)]).await;
    count_versions(&caller.infer_many(30, 4).await);
    v1.failing.store(true, Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(
            caller.infer(&[]).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let stats = caller.stats().await;
    assert_eq!(stats["endpoint"], "fashion");
    assert_eq!(stats["windowSeconds"], 60);
    let s1 = &stats["versions"]["v1"];
    assert_eq!(
        (
            &s1["requests"],
            &s1["errors"],
            &s1["inFlight"],
            &s1["readyReplicas"],
            &s1["weight"]
        ),
        (&json!(35), &json!(5), &json!(0), &json!(1), &json!(100)),
        "{stats}"
    );
    let (p50, p99) = (
        s1["latencyMs"]["p50"].as_f64().unwrap(),
        s1["latencyMs"]["p99"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{stats}");
    assert_eq!(stats["versions"]["v2"]["requests"], 0);
    assert_eq!(stats["versions"]["v2"]["latencyMs"]["p50"], Value::Null);
    assert_eq!(
        caller.get("/router/v1/stats?window=5").await.body["windowSeconds"],
        5
    );
    assert_eq!(
        caller.get("/router/v1/stats?window=61").await.status,
        StatusCode::BAD_REQUEST
    );
    let metrics = caller.metrics().await;
    for (series, value) in [
        (
            r#"toucan_router_requests_total{version="v1",code="200",mirrored="false"}"#,
            30.0,
        ),
        (
            r#"toucan_router_requests_total{version="v1",code="503",mirrored="false"}"#,
            5.0,
        ),
        (
            r#"toucan_router_request_duration_seconds_count{version="v1"}"#,
            35.0,
        ),
        (r#"toucan_router_in_flight_requests{version="v1"}"#, 0.0),
    ] {
        assert_eq!(metric(&metrics, series), Some(value), "{series}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ready_replica_the_caller_gets_a_503_that_says_why() {
    let router = start_router(None, fast_settings()).await;
    let caller = Caller::new(router.addr);
    let answer = caller.infer(&[]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["reason"], "NoConfiguration");
    assert!(answer.header("x-request-id").is_some());
    let v1 = Backend::start("v1", "a");
    v1.ready.store(false, Ordering::SeqCst);
    router
        .configs
        .send_replace(Some(config(vec![version("v1", 1, &[&v1])])));
    caller.await_ready(&[("v1", 0)]).await;
    let answer = caller.infer(&[("x-request-id", "r-1")]).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body["reason"], "NoReadyReplica", "{}", answer.text);
    assert!(answer.body["error"].as_str().unwrap().contains("fashion"));
    assert_eq!(answer.header("x-request-id"), Some("r-1"));
    assert_eq!(
        caller.get("/readyz").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(v1.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_refused_with_413() {
    let v1 = Backend::start("v1", "a");
    let settings = RouterSettings {
        max_body_bytes: 1024,
        ..fast_settings()
    };
    let router = start_router(Some(config(vec![version("v1", 1, &[&v1])])), settings).await;
    let caller = Caller::new(router.addr);
    caller.await_ready(&[("v1", 1)]).await;
    let path = "/v2/models/fashion/infer";
    let small = caller
        .call(Method::POST, path, &[], Bytes::from(vec![b' '; 1024]))
        .await;
    assert_eq!(small.body["bodyBytes"], 1024);
    let large = caller
        .call(Method::POST, path, &[], Bytes::from(vec![b' '; 1025]))
        .await;
    assert_eq!(large.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(large.body["reason"], "BodyTooLarge");
    assert_eq!(v1.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_says_where_it_listens_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt;
    let v1 = Backend::start("v1", "a");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("router.yaml");
    std::fs::write(
        &path,
        format!(
            "endpoint: fashion\nversions:\n  - {{name: v1, weight: 1, replicas: [\"{}\"]}}\n",
            v1.url()
        ),
    )
    .unwrap();
    let binary = env!("CARGO_BIN_EXE_toucan-router");
    let mut child = tokio::process::Command::new(binary)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--probe-interval",
            "100ms",
            "--config",
        ])
        .arg(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let listening: Value = serde_json::from_str(&line).unwrap();
    let addr: SocketAddr = listening["listening"].as_str().unwrap().parse().unwrap();
    let caller = Caller::new(addr);
    caller.await_ready(&[("v1", 1)]).await;
    assert_eq!(caller.get("/livez").await.status, StatusCode::OK);
    assert_eq!(caller.get("/readyz").await.status, StatusCode::OK);
    assert_eq!(caller.infer(&[]).await.body["version"], "v1");
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");

    std::fs::write(&path, "endpoint: fashion\nversions: []\n").unwrap();
    let invalid = tokio::process::Command::new(binary)
        .arg("--config")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(invalid.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&invalid.stderr).contains("versions"));
}
