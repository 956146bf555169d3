//! Alerts through the API: Alertmanager's notifications become episodes of the endpoints they
//! name (firing, then resolved, on one row, keeping what the endpoint did), alerts of nothing
//! toucan serves are counted as ignored, a notification naming an endpoint the caller may not
//! alert is refused whole, a malformed one names its field; the episodes are listed by
//! endpoint, namespace and openness; and `/metrics` exports the gauge board.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::{app, app_with_gauges, send, send_json};

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use toucan_api::{Anyone, AuthError, Authenticator, GaugeBoard, Principal};
use toucan_core::monitoring::alerts::{AlertKind, AlertPhase};
use toucan_core::monitoring::assess::Series;
use toucan_core::monitoring::rules;
use toucan_core::records::AlertRecord;
use toucan_core::time::parse_rfc3339;

/// `writer` writes and reads namespace `prod`, `reader` only reads it, `stranger` nothing.
#[derive(Debug)]
struct Tokens;

#[async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        match token.ok_or(AuthError::Missing)? {
            name @ ("writer" | "reader" | "stranger") => Ok(Principal::Reader {
                name: name.to_string(),
                groups: Vec::new(),
            }),
            _ => Err(AuthError::Rejected("unknown token".into())),
        }
    }

    async fn may_read(&self, principal: &Principal, key: &str) -> Result<bool, AuthError> {
        Ok(matches!(principal, Principal::Reader { name, .. }
                if name == "reader" || name == "writer")
            && key.starts_with("prod/"))
    }

    // `may_alert` is left to its default: whoever may label.
    async fn may_label(&self, principal: &Principal, key: &str) -> Result<bool, AuthError> {
        Ok(
            matches!(principal, Principal::Reader { name, .. } if name == "writer")
                && key.starts_with("prod/"),
        )
    }
}

const WEBHOOK: &str = "/api/v1/alertmanager";
const STARTED: &str = "2026-03-01T10:00:00Z";
const ENDED: &str = "2026-03-01T10:30:00Z";

/// An alert as Alertmanager sends it, `status` firing or resolved.
fn alert(status: &str, fingerprint: &str, labels: Value) -> Value {
    json!({
        "status": status,
        "labels": labels,
        "annotations": {"summary": format!("{fingerprint} breached")},
        "startsAt": STARTED,
        "endsAt": if status == "resolved" { ENDED } else { "0001-01-01T00:00:00Z" },
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": fingerprint,
    })
}

/// A notification of `alerts`, as Alertmanager's webhook posts it.
fn notification(alerts: Vec<Value>) -> Option<Value> {
    Some(json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"ToucanEndpointDrift\"}",
        "truncatedAlerts": 0,
        "status": alerts[0]["status"],
        "receiver": "toucan",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }))
}

fn drift_of(namespace: &str, endpoint: &str) -> Value {
    json!({
        "alertname": "ToucanEndpointDrift",
        "toucan_endpoint": endpoint,
        "namespace": namespace,
        "toucan_alert": "drift",
    })
}

#[tokio::test]
async fn a_firing_then_resolved_alert_moves_one_episode_and_keeps_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Anyone)).await;
    let unrelated = alert("firing", "beef", json!({"alertname": "NodeDown"}));

    let firing = notification(vec![
        alert("firing", "f00d", drift_of("default", "fashion")),
        unrelated.clone(),
    ]);
    let (status, body) = send_json(&app, Method::POST, WEBHOOK, "", firing).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"accepted": 1, "ignored": 1}));
    let started = parse_rfc3339(STARTED).unwrap();
    let stored = store.list_alerts(None, false, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    let episode = &stored[0];
    // Locally an endpoint is its name alone.
    assert_eq!(episode.endpoint, "fashion");
    assert_eq!(episode.key, "alertmanager/f00d");
    assert_eq!(
        (episode.kind, episode.phase),
        (AlertKind::Drift, AlertPhase::Firing)
    );
    assert_eq!(episode.summary, "f00d breached");
    assert_eq!(episode.active_since, started);
    assert_eq!(episode.firing_since, Some(started));
    assert_eq!(episode.ended_at, None);

    // The endpoint acts on it; then Alertmanager reports it resolved.
    let acted = AlertRecord {
        action: Some("started run r1".into()),
        run: Some("r1".into()),
        ..episode.clone()
    };
    store.put_alerts(&[acted]).await.unwrap();
    let resolved = notification(vec![alert(
        "resolved",
        "f00d",
        drift_of("default", "fashion"),
    )]);
    let (status, body) = send_json(&app, Method::POST, WEBHOOK, "", resolved).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"accepted": 1, "ignored": 0}));

    let (status, listed) = send_json(&app, Method::GET, "/api/v1/alerts", "", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let listed: Vec<AlertRecord> = serde_json::from_value(listed).unwrap();
    assert_eq!(listed.len(), 1, "one episode, updated");
    let episode = &listed[0];
    assert_eq!(episode.phase, AlertPhase::Resolved);
    assert_eq!(episode.active_since, started);
    assert_eq!(episode.ended_at, Some(parse_rfc3339(ENDED).unwrap()));
    assert_eq!(episode.action.as_deref(), Some("started run r1"));
    assert_eq!(episode.run.as_deref(), Some("r1"));

    // An alert without a `toucan_alert` label is an external one.
    let external = notification(vec![alert(
        "firing",
        "cafe",
        json!({"alertname": "HighLatency", "toucan_endpoint": "fashion"}),
    )]);
    send_json(&app, Method::POST, WEBHOOK, "", external).await;
    let open = store.list_alerts(Some("fashion"), true, 10).await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].kind, AlertKind::External);
}

#[tokio::test]
async fn only_writers_of_every_named_namespace_may_report_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Tokens)).await;
    let prod = alert("firing", "a1", drift_of("prod", "fashion"));
    let dev = alert("firing", "a2", drift_of("dev", "fashion"));
    let unnamed = alert("firing", "a3", json!({"toucan_endpoint": "fashion"}));

    for (token, alerts, expected) in [
        // One endpoint the caller may not alert refuses the whole notification.
        ("writer", vec![prod.clone(), dev], StatusCode::FORBIDDEN),
        // In a cluster an alert without a namespace names no endpoint anyone writes.
        ("writer", vec![prod.clone(), unnamed], StatusCode::FORBIDDEN),
        ("reader", vec![prod.clone()], StatusCode::FORBIDDEN),
        ("stranger", vec![prod.clone()], StatusCode::FORBIDDEN),
        ("nobody", vec![prod.clone()], StatusCode::UNAUTHORIZED),
    ] {
        let (status, answer) =
            send_json(&app, Method::POST, WEBHOOK, token, notification(alerts)).await;
        assert_eq!(status, expected, "{token}: {answer}");
    }
    let (status, answer) = send_json(
        &app,
        Method::POST,
        WEBHOOK,
        "writer",
        notification(vec![
            prod.clone(),
            alert("firing", "a2", drift_of("dev", "x")),
        ]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        answer["error"].as_str().unwrap().contains("\"dev/x\""),
        "{answer}"
    );
    assert!(store.list_alerts(None, false, 10).await.unwrap().is_empty());

    let (status, answer) = send_json(
        &app,
        Method::POST,
        WEBHOOK,
        "writer",
        notification(vec![prod]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let stored = store.list_alerts(None, false, 10).await.unwrap();
    let endpoints: Vec<&str> = stored.iter().map(|a| a.endpoint.as_str()).collect();
    assert_eq!(endpoints, ["prod/fashion"]);
}

#[tokio::test]
async fn a_malformed_notification_is_refused_with_its_field_path() {
    let dir = tempfile::tempdir().unwrap();
    let (app, store) = app(dir.path(), Arc::new(Anyone)).await;
    let good = alert("firing", "f00d", drift_of("default", "fashion"));
    let mut late = alert("resolved", "f00e", drift_of("default", "fashion"));
    late["endsAt"] = json!("later");
    let mut unlabelled = good.clone();
    unlabelled["labels"]["toucan_endpoint"] = json!(7);

    for (alerts, expected) in [
        (vec![good.clone(), late], "alerts[1].endsAt: "),
        (
            vec![unlabelled],
            "alerts[0].labels.toucan_endpoint: expected a string",
        ),
    ] {
        let (status, answer) =
            send_json(&app, Method::POST, WEBHOOK, "", notification(alerts)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.starts_with(expected), "{expected}: {error}");
    }
    let (status, _) = send(&app, Method::POST, WEBHOOK, "", Some("{alerts".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // Nothing of a refused notification was stored, not even its good alerts.
    assert!(store.list_alerts(None, false, 10).await.unwrap().is_empty());
}

fn episode(endpoint: &str, key: &str, phase: AlertPhase, updated_at: i64) -> AlertRecord {
    AlertRecord {
        endpoint: endpoint.into(),
        key: key.into(),
        kind: AlertKind::Floor,
        phase,
        summary: format!("{key} breached"),
        window_start: 0,
        window_end: 10,
        value: Some(0.7),
        threshold: Some(0.8),
        active_since: 10,
        firing_since: None,
        last_breach: 10,
        ended_at: None,
        action: None,
        run: None,
        updated_at,
    }
}

/// The `endpoint key` of each listed episode.
fn listed(body: &Value) -> Vec<String> {
    body.as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"))
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a["endpoint"].as_str().unwrap(),
                a["key"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn alerts_are_listed_by_endpoint_namespace_and_openness_to_their_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, store) = app(dir.path(), Arc::new(Tokens)).await;
    store
        .put_alerts(&[
            episode("prod/fashion", "floor/a", AlertPhase::Firing, 4),
            episode("prod/fashion", "floor/b", AlertPhase::Resolved, 5),
            episode("prod/shoes", "drift/all", AlertPhase::Pending, 3),
            episode("dev/fashion", "floor/a", AlertPhase::Firing, 6),
        ])
        .await
        .unwrap();
    let get = |uri: &str, token: &str| {
        let app = cluster.clone();
        let uri = format!("/api/v1/alerts{uri}");
        let token = token.to_string();
        async move { send_json(&app, Method::GET, &uri, &token, None).await }
    };

    let (status, body) = get("?endpoint=fashion&namespace=prod", "reader").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        listed(&body),
        ["prod/fashion floor/b", "prod/fashion floor/a"]
    );
    let (_, body) = get("?endpoint=fashion&namespace=prod&open=true", "reader").await;
    assert_eq!(listed(&body), ["prod/fashion floor/a"]);
    let (_, body) = get("?namespace=prod", "reader").await;
    assert_eq!(
        listed(&body),
        [
            "prod/fashion floor/b",
            "prod/fashion floor/a",
            "prod/shoes drift/all"
        ]
    );
    let (_, body) = get("?namespace=prod&open=true&limit=1", "reader").await;
    assert_eq!(listed(&body), ["prod/fashion floor/a"]);

    for (uri, token, expected) in [
        (
            "?endpoint=fashion&namespace=dev",
            "reader",
            StatusCode::NOT_FOUND,
        ),
        (
            "?endpoint=fashion&namespace=prod",
            "stranger",
            StatusCode::NOT_FOUND,
        ),
        ("?namespace=dev", "reader", StatusCode::FORBIDDEN),
        // In a cluster, every endpoint of every namespace is no one's to list.
        ("", "reader", StatusCode::BAD_REQUEST),
        ("?open=maybe", "reader", StatusCode::BAD_REQUEST),
        ("?namespace=prod", "nobody", StatusCode::UNAUTHORIZED),
    ] {
        let (status, body) = get(uri, token).await;
        assert_eq!(status, expected, "{uri} as {token}: {body}");
    }

    // Locally, everything, newest first.
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = app(dir.path(), Arc::new(Anyone)).await;
    store
        .put_alerts(&[
            episode("fashion", "floor/a", AlertPhase::Firing, 4),
            episode("shoes", "floor/a", AlertPhase::Cleared, 5),
        ])
        .await
        .unwrap();
    let (_, body) = send_json(&local, Method::GET, "/api/v1/alerts", "", None).await;
    assert_eq!(listed(&body), ["shoes floor/a", "fashion floor/a"]);
    let (_, body) = send_json(&local, Method::GET, "/api/v1/alerts?open=true", "", None).await;
    assert_eq!(listed(&body), ["fashion floor/a"]);
}

fn accuracy(endpoint: &str, version: &str, value: f64) -> Series {
    Series {
        gauge: rules::EVALUATION,
        labels: ["prod", endpoint, version, "all", "accuracy"]
            .map(String::from)
            .to_vec(),
        value,
    }
}

/// `GET /metrics` without a token: the status, the content type and the text.
async fn scrape(app: &axum::Router) -> (StatusCode, Option<String>, String) {
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        content_type,
        String::from_utf8(bytes.to_vec()).unwrap(),
    )
}

#[tokio::test]
async fn metrics_export_every_endpoints_gauges_and_nothing_without_a_board() {
    let dir = tempfile::tempdir().unwrap();
    let board = Arc::new(GaugeBoard::default());
    // Served to anyone: the authenticator is never asked.
    let (exporter, _) = app_with_gauges(dir.path(), Arc::new(Tokens), Some(board.clone())).await;
    board.set("prod/fashion", vec![accuracy("fashion", "v1", 0.93)]);
    board.set(
        "prod/shoes",
        vec![accuracy("shoes", "v1", 0.81), accuracy("shoes", "v2", 0.5)],
    );

    let (status, content_type, text) = scrape(&exporter).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("text/plain; version=0.0.4"));
    let help = format!("# HELP {} ", rules::EVALUATION.name);
    assert_eq!(text.matches(&help).count(), 1, "{text}");
    for line in [
        r#"toucan_endpoint_evaluation{namespace="prod",endpoint="fashion",version="v1",slice="all",metric="accuracy"} 0.93"#,
        r#"toucan_endpoint_evaluation{namespace="prod",endpoint="shoes",version="v2",slice="all",metric="accuracy"} 0.5"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }

    // A new pass replaces an endpoint's figures; a removed endpoint is gone.
    board.set("prod/fashion", vec![accuracy("fashion", "v1", 0.9)]);
    board.remove("prod/shoes");
    let (_, _, text) = scrape(&exporter).await;
    assert!(text.contains("} 0.9\n"), "{text}");
    assert!(!text.contains("0.93") && !text.contains("shoes"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let (bare, _) = app(dir.path(), Arc::new(Anyone)).await;
    assert_eq!(scrape(&bare).await.0, StatusCode::NOT_FOUND);
}
