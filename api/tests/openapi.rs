//! The OpenAPI document against the router it describes: every documented operation is
//! served and answers with a documented status and a body of the documented shape, nothing
//! else is served on a documented path, and the document is well-formed OpenAPI 3.1.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use toucan_api::{
    ApiState, AuthError, Authenticator, GaugeBoard, MetricSeries, Principal, ReportAccepted, router,
};
use toucan_core::launch::{CheckpointName, CheckpointPointer, LaunchReport};
use toucan_core::monitoring::assess::Series;
use toucan_core::monitoring::rules;
use toucan_core::records::{
    ArtifactKind, ArtifactRef, AttemptRecord, Phase, RunRecord, StepOutputs, StepRecord,
    StudyRecord, TrialRecord,
};
use toucan_core::serving::{InputStats, PayloadSample, SampleBatch, SampledInstance};
use toucan_core::tuning::{MetricPoint, ParamValue, RungResult, Trial, TrialState};
use toucan_store::metadata::{MetadataStore, SqliteStore};

const RUN: &str = "01JRUN";
const STUDY: &str = "01JSTUDY";
const NODE: &str = "train";
const ATTEMPT: u32 = 1;
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn document() -> Value {
    serde_json::to_value(toucan_api::openapi()).unwrap()
}

/// Every `(path, method, operation)` the document lists.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                ops.push((path.clone(), method.to_string(), op.clone()));
            }
        }
    }
    ops
}

fn concrete(path: &str) -> String {
    path.replace("{study}", STUDY)
        .replace("{endpoint}", "fashion")
        .replace("{run}", RUN)
        .replace("{node}", NODE)
        .replace("{attempt}", &ATTEMPT.to_string())
}

/// Follows a local `$ref`; `None` when it points nowhere in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` anywhere in `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

fn type_matches(name: &str, value: &Value) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// Where `value` disagrees with `schema` (types, required fields, enums, nested), or `None`.
/// A light check: the keywords the generated document uses, nothing more.
fn mismatch(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(doc, r).unwrap_or_else(|| panic!("{at}: {r} resolves to nothing"));
        return mismatch(doc, target, value, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(key).and_then(Value::as_array)
            && branches
                .iter()
                .all(|b| mismatch(doc, b, value, at).is_some())
        {
            return Some(format!("{at}: {value} matches no branch of {key}"));
        }
    }
    if let Some(branches) = schema.get("allOf").and_then(Value::as_array)
        && let Some(m) = branches.iter().find_map(|b| mismatch(doc, b, value, at))
    {
        return Some(m);
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| type_matches(t, value)) {
        return Some(format!("{at}: {value} is not of type {types:?}"));
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Some(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for field in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = field.as_str().unwrap();
            if !object.contains_key(field) {
                return Some(format!("{at}: required field {field:?} is missing"));
            }
        }
        let properties = schema.get("properties").and_then(Value::as_object);
        for (key, v) in object {
            let sub = properties
                .and_then(|p| p.get(key))
                .or_else(|| schema.get("additionalProperties").filter(|a| a.is_object()));
            if let Some(m) = sub.and_then(|s| mismatch(doc, s, v, &format!("{at}.{key}"))) {
                return Some(m);
            }
        }
    }
    if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
        for (i, v) in values.iter().enumerate() {
            if let Some(m) = mismatch(doc, items, v, &format!("{at}[{i}]")) {
                return Some(m);
            }
        }
    }
    None
}

fn sample_outputs() -> StepOutputs {
    StepOutputs {
        params: [("accuracy".to_string(), "0.93".to_string())].into(),
        artifacts: [(
            "model".to_string(),
            ArtifactRef {
                digest: "sha256:00".to_string(),
                size: 42,
                kind: ArtifactKind::File,
            },
        )]
        .into(),
    }
}

/// A sample body for each documented request body, by its schema's name.
fn request_sample(schema_name: &str) -> Value {
    match schema_name {
        "LaunchReport" => serde_json::to_value(LaunchReport {
            succeeded: false,
            exit_code: Some(1),
            signal: None,
            outputs: sample_outputs(),
            error: Some("exited with 1".to_string()),
            duration_ms: 1200,
        })
        .unwrap(),
        "MetricSeries" => serde_json::to_value(MetricSeries {
            attempt: Some(ATTEMPT),
            epochs: vec![
                json!({"epoch": 1, "loss": 0.5})
                    .as_object()
                    .unwrap()
                    .clone(),
            ],
        })
        .unwrap(),
        "CheckpointPointer" => serde_json::to_value(CheckpointPointer {
            artifact: ArtifactRef {
                digest: "sha256:02".to_string(),
                size: 4096,
                kind: ArtifactKind::Dir,
            },
            checkpoint: CheckpointName::parse("ckpt-0000000200").unwrap(),
            attempt: Some(ATTEMPT),
            incarnation: Some(1),
            updated_at: None,
        })
        .unwrap(),
        "SampleBatch" => serde_json::to_value(SampleBatch {
            samples: vec![PayloadSample {
                request_id: "req-1".to_string(),
                model: "fashion".to_string(),
                version: "v1".to_string(),
                received_at: "2026-12-05T18:00:00Z".to_string(),
                protocol: "v2".to_string(),
                latency_ms: 2.0,
                instances: vec![SampledInstance {
                    stats: InputStats {
                        width: 28,
                        height: 28,
                        channels: 1,
                        brightness: 0.3,
                        contrast: 0.2,
                        channel_means: vec![0.3],
                        sharpness: 0.01,
                    },
                    input: None,
                    embedding: None,
                    label: 1,
                    class: "Trouser".to_string(),
                    probabilities: vec![0.1, 0.9],
                }],
                attributes: BTreeMap::new(),
            }],
        })
        .unwrap(),
        "LabelBatch" => json!({
            "labels": [{"requestId": "req-1", "label": "Trouser",
                        "labelledAt": "2026-12-05T19:00:00Z"}],
        }),
        "AlertmanagerNotification" => json!({
            "version": "4",
            "groupKey": "{}:{alertname=\"ToucanEndpointDrift\"}",
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "toucan",
            "groupLabels": {"alertname": "ToucanEndpointDrift"},
            "commonLabels": {"alertname": "ToucanEndpointDrift"},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": [{
                "status": "firing",
                "labels": {"alertname": "ToucanEndpointDrift", "toucan_endpoint": "fashion",
                           "namespace": "default", "toucan_alert": "drift"},
                "annotations": {"summary": "fashion drifted"},
                "startsAt": "2026-12-05T18:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": "c6eadffa33fcdf37",
            }],
        }),
        other => panic!("no sample body for request schema {other}: add one"),
    }
}

/// A store holding one run with one step and one attempt.
async fn seeded_store(dir: &std::path::Path) -> Arc<dyn MetadataStore> {
    let store = SqliteStore::open(&dir.join("toucan.db")).await.unwrap();
    store
        .create_run(&RunRecord {
            id: RUN.to_string(),
            pipeline: "default/mnist".to_string(),
            phase: Phase::Running,
            params: json!({"epochs": 3}),
            spec: json!({"steps": []}),
            created_at: 1_000,
            finished_at: None,
            message: None,
        })
        .await
        .unwrap();
    store
        .upsert_step(&StepRecord {
            run_id: RUN.to_string(),
            name: NODE.to_string(),
            phase: Phase::Running,
            cache_key: Some("ab".to_string()),
            cache_components: Some(json!({"image": "x"})),
            cached: false,
            attempts: 1,
            started_at: Some(1_100),
            finished_at: None,
            outputs: sample_outputs(),
            message: None,
        })
        .await
        .unwrap();
    store
        .upsert_attempt(&AttemptRecord {
            run_id: RUN.to_string(),
            step: NODE.to_string(),
            attempt: ATTEMPT,
            phase: Phase::Failed,
            exit_code: Some(1),
            started_at: 1_100,
            finished_at: Some(1_200),
            log_ref: Some("sha256:01".to_string()),
            message: Some("exited with 1".to_string()),
        })
        .await
        .unwrap();
    store
        .create_study(&StudyRecord {
            id: STUDY.to_string(),
            name: "default/fmnist-lr".to_string(),
            phase: Phase::Running,
            spec: json!({"objective": {"metric": "accuracy", "goal": "maximize"}}),
            created_at: 1_000,
            finished_at: None,
            message: None,
        })
        .await
        .unwrap();
    let trial = |index: u32, state: TrialState, objective: Option<f64>| TrialRecord {
        study_id: STUDY.to_string(),
        trial: Trial {
            index,
            name: format!("{index}-0a1b2c3d4e"),
            params: BTreeMap::from([
                ("lr".to_string(), ParamValue::Float(0.01)),
                ("batch".to_string(), ParamValue::Int(64)),
                (
                    "optimizer".to_string(),
                    ParamValue::Text("adam".to_string()),
                ),
            ]),
            state,
            budget: Some(3),
            bracket: None,
            series: vec![MetricPoint {
                step: 1,
                value: 0.8,
            }],
            objective,
            rungs: vec![RungResult {
                budget: 1,
                objective: 0.8,
            }],
        },
        run_id: Some(RUN.to_string()),
        updated_at: 1_300,
    };
    store
        .put_trials(&[
            trial(0, TrialState::Succeeded, Some(0.9)),
            trial(1, TrialState::Running, None),
        ])
        .await
        .unwrap();
    Arc::new(store)
}

fn state(store: Arc<dyn MetadataStore>, auth: Arc<dyn Authenticator>) -> ApiState {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel::<ReportAccepted>();
    let gauges = GaugeBoard::default();
    gauges.set(
        "fashion",
        vec![Series {
            gauge: rules::EVALUATION,
            labels: ["default", "fashion", "v1", "all", "accuracy"]
                .map(String::from)
                .to_vec(),
            value: 0.93,
        }],
    );
    ApiState {
        store,
        auth,
        reports: Some(tx),
        gauges: Some(Arc::new(gauges)),
    }
}

/// Sends `body` (JSON text) to `uri`; the answer's status and body (JSON, or the text as a
/// string, or null when empty).
async fn send(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<String>,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
        .uri(uri);
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let body = body.map(Body::from).unwrap_or_else(Body::empty);
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or(Value::String(format!("{bytes:?}")))
    };
    (status, value)
}

/// The sample body for `op`'s documented request body, if it has one.
fn sample_for(op: &Value) -> Option<Value> {
    let body = op.get("requestBody")?;
    let reference = body["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap();
    Some(request_sample(reference.rsplit('/').next().unwrap()))
}

/// Whether `op`'s response with `status` is documented as text.
fn documented_text(op: &Value, status: StatusCode) -> bool {
    op["responses"][status.as_str()]["content"]
        .as_object()
        .is_some_and(|content| content.keys().any(|t| t.starts_with("text/plain")))
}

/// The documented JSON schema of `op`'s response with `status`, if it has a JSON body.
fn response_schema(op: &Value, status: StatusCode) -> Option<&Value> {
    op["responses"]
        .get(status.as_str())?
        .get("content")?
        .get("application/json")?
        .get("schema")
}

#[test]
fn the_document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi is {version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], json!([{"bearer": []}]));

    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(
            r.starts_with("#/") && resolve(&doc, r).is_some(),
            "{r} does not resolve inside the document"
        );
    }
    for (path, method, op) in operations(&doc) {
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
        // Every `{name}` in a path is a documented path parameter, and back.
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let in_path: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        assert_eq!(declared, in_path, "{method} {path}: path parameters");
    }
}

#[test]
fn every_request_sample_matches_its_schema() {
    let doc = document();
    let mut seen = 0;
    for (path, method, op) in operations(&doc) {
        let Some(body) = op.get("requestBody") else {
            continue;
        };
        let schema = &body["content"]["application/json"]["schema"];
        let name = schema["$ref"].as_str().unwrap().rsplit('/').next().unwrap();
        let sample = request_sample(name);
        assert_eq!(
            mismatch(&doc, schema, &sample, name),
            None,
            "{method} {path}"
        );
        // The check can fail: a sample missing a required field is caught.
        let required = resolve(&doc, schema["$ref"].as_str().unwrap()).unwrap()["required"]
            .as_array()
            .unwrap()
            .clone();
        let mut broken = sample.clone();
        broken
            .as_object_mut()
            .unwrap()
            .remove(required[0].as_str().unwrap());
        assert!(mismatch(&doc, schema, &broken, name).is_some());
        seen += 1;
    }
    assert_eq!(
        seen, 6,
        "the report, metrics and checkpoint PUTs and the samples, labels and Alertmanager POSTs \
         have request bodies"
    );
}

/// Every documented operation is served, answers with a documented status, and its body has
/// the documented shape; the router serves the very document `openapi()` generates.
#[tokio::test]
async fn every_documented_operation_is_served_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(
        seeded_store(dir.path()).await,
        Arc::new(toucan_api::Anyone),
    ));
    let doc = document();
    let mut ops = operations(&doc);
    // Writes first, so the reads find what they wrote.
    ops.sort_by_key(|(_, method, _)| !matches!(method.as_str(), "put" | "post"));
    assert_eq!(ops.len(), 18);
    for (path, method, op) in ops {
        let body = sample_for(&op);
        let (status, value) =
            send(&app, &method, &concrete(&path), body.map(|b| b.to_string())).await;
        assert!(
            status.is_success(),
            "{method} {path}: {status} {value}, expected success"
        );
        assert!(
            op["responses"].get(status.as_str()).is_some(),
            "{method} {path}: {status} is not documented"
        );
        match response_schema(&op, status) {
            Some(schema) => {
                assert_eq!(
                    mismatch(&doc, schema, &value, &path),
                    None,
                    "{method} {path}"
                )
            }
            None if path.ends_with("openapi.json") => assert_eq!(value, doc),
            None if documented_text(&op, status) => {
                assert!(value.is_string(), "{method} {path}: {value} is not text")
            }
            None => assert_eq!(value, Value::Null, "{method} {path}: undocumented body"),
        }
    }
}

/// On a documented path, a method the document does not list is not served; a path it does
/// not list is not served either.
#[tokio::test]
async fn nothing_undocumented_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(
        seeded_store(dir.path()).await,
        Arc::new(toucan_api::Anyone),
    ));
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let (status, _) = send(&app, method, &concrete(path), None).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented"
            );
        }
    }
    for path in [
        "/api/v1",
        "/api/v1/runs/x/steps",
        "/api/v2/runs",
        "/openapi.json",
    ] {
        assert_eq!(send(&app, "get", path, None).await.0, StatusCode::NOT_FOUND);
    }
}

/// Turns every token away.
#[derive(Debug)]
struct NoOne;

#[async_trait]
impl Authenticator for NoOne {
    async fn authenticate(&self, _token: Option<&str>) -> Result<Principal, AuthError> {
        Err(AuthError::Missing)
    }
    async fn may_read(&self, _principal: &Principal, _pipeline: &str) -> Result<bool, AuthError> {
        Ok(false)
    }
}

/// Every operation that requires the bearer token documents the 401 it answers without one,
/// with the documented error body; the document itself is served to anyone.
#[tokio::test]
async fn refusals_are_documented() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(seeded_store(dir.path()).await, Arc::new(NoOne)));
    let doc = document();
    for (path, method, op) in operations(&doc) {
        let body = sample_for(&op);
        let (status, value) =
            send(&app, &method, &concrete(&path), body.map(|b| b.to_string())).await;
        if op["security"] == json!([{}]) {
            assert_eq!(status, StatusCode::OK, "{method} {path} is open to anyone");
            continue;
        }
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        let schema = response_schema(&op, status)
            .unwrap_or_else(|| panic!("{method} {path}: 401 is not documented"));
        assert_eq!(
            mismatch(&doc, schema, &value, &path),
            None,
            "{method} {path}"
        );
    }
}

/// The answers to a request the router or a handler turns down are documented: an unknown
/// run, a non-numeric attempt, a body that is not JSON, JSON of the wrong shape.
#[tokio::test]
async fn rejections_are_documented() {
    let dir = tempfile::tempdir().unwrap();
    let app = router(state(
        seeded_store(dir.path()).await,
        Arc::new(toucan_api::Anyone),
    ));
    let doc = document();
    let mut checked = 0;
    for (path, method, op) in operations(&doc) {
        let sample = sample_for(&op);
        let mut cases = Vec::new();
        if path.contains("{run}") {
            let unknown = concrete(&path).replace(RUN, "NO-SUCH-RUN");
            cases.push((unknown, sample.clone().map(|s| s.to_string())));
        }
        if path.contains("{attempt}") {
            let bad = path
                .replace("{run}", RUN)
                .replace("{node}", NODE)
                .replace("{attempt}", "x");
            cases.push((bad, sample.clone().map(|s| s.to_string())));
        }
        if sample.is_some() {
            cases.push((concrete(&path), Some("{not json".to_string())));
            cases.push((concrete(&path), Some("{}".to_string())));
        }
        for (uri, body) in cases {
            let (status, _) = send(&app, &method, &uri, body).await;
            assert!(status.is_client_error(), "{method} {uri}: {status}");
            assert!(
                op["responses"].get(status.as_str()).is_some(),
                "{method} {uri}: {status} is not documented"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} rejections were tried");
}
