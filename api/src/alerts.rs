//! Endpoint alerts: the episodes the store keeps, and Alertmanager's notifications of them.
//!
//! An alert episode of an endpoint is an [`AlertRecord`]. The shell's monitoring loop stores
//! the episodes it moves itself; Alertmanager, evaluating toucan's generated rules, posts its
//! notifications to `POST /api/v1/alertmanager` (a `webhook_config` receiver). Each alert of a
//! notification that carries the `toucan_endpoint` label is an episode of that endpoint, keyed
//! `alertmanager/FINGERPRINT` and started at its `startsAt`, so the firing and the resolved
//! notifications of one alert, and every repeat of them, update one row; an alert without the
//! label is not about an endpoint and is counted as ignored. A notification is checked whole
//! before anything is stored, the first fault refused with its field path
//! (`alerts[2].startsAt`), and its episodes are stored in one transaction.
//!
//! In a cluster an alert names its endpoint's namespace with the `namespace` label, and the
//! caller (Alertmanager's service account) must be allowed to report alerts of every endpoint
//! a notification names ([`Authenticator::may_alert`](crate::Authenticator::may_alert)), or
//! nothing of it is stored. `GET /api/v1/alerts` lists the episodes of one endpoint, or of
//! every endpoint of a namespace, to whoever may read it.

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use toucan_core::monitoring::alerts::{AlertKind, AlertPhase, EXTERNAL_KEY_PREFIX};
use toucan_core::monitoring::rules::{ENDPOINT_ALERT_LABEL, KIND_ALERT_LABEL, NAMESPACE_LABEL};
use toucan_core::records::{AlertRecord, Millis};
use toucan_core::time::{now_ms, parse_rfc3339};

use super::{
    ApiError, ApiResult, ApiState, ErrorBody, NOT_JSON, Principal, UNAUTHENTICATED, UNAVAILABLE,
    bearer,
};

/// Episodes listed when the caller gives no limit.
const DEFAULT_LIMIT: u32 = 100;
/// The most episodes one read returns.
const MAX_LIMIT: u32 = 1000;
/// Episodes read, newest first, to pick a namespace's from: the store lists by endpoint or
/// all of them.
const NAMESPACE_SCAN: u32 = 10_000;
/// The webhook payload version this receiver reads.
const WEBHOOK_VERSION: &str = "4";

const NOT_ALERTER: &str = "The caller may not report alerts of an endpoint the notification names (in a cluster: \
     a writer of its namespace may). Nothing was stored.";
const INVALID_NOTIFICATION: &str = "A field of the notification is missing or not of its documented type; the error names \
     its path. Nothing was stored.";

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct AlertQuery {
    /// Only this endpoint's alerts (its `metadata.name`).
    endpoint: Option<String>,
    /// The endpoint's namespace. In a cluster, without `endpoint`: the alerts of every
    /// endpoint of this namespace (required there).
    namespace: Option<String>,
    /// Only the alerts still pending or firing.
    #[param(default = false)]
    open: Option<bool>,
    /// At most this many (default 100, at most 1000), most recently updated first.
    limit: Option<u32>,
}

/// An Alertmanager webhook notification (payload version 4): a group of alerts. Only
/// `alerts` is read, and `version` checked; the rest is what Alertmanager sends along.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AlertmanagerNotification {
    /// `"4"`; another version is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_key: Option<String>,
    /// How many alerts the receiver's `max_alerts` left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    truncated_alerts: Option<u64>,
    /// `firing` or `resolved`: the group's status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    receiver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common_labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    common_annotations: Option<BTreeMap<String, String>>,
    #[serde(
        default,
        rename = "externalURL",
        skip_serializing_if = "Option::is_none"
    )]
    external_url: Option<String>,
    alerts: Vec<AlertmanagerAlert>,
}

/// One alert of a notification.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct AlertmanagerAlert {
    /// `firing` or `resolved`.
    status: String,
    /// With `toucan_endpoint` (and, in a cluster, `namespace`) naming the endpoint;
    /// `toucan_alert` names the check (`drift`, `floor`, `regression`; another or none is an
    /// external alert); `alertname` is the summary when no annotation gives one.
    labels: BTreeMap<String, String>,
    /// `summary`, if present, is the episode's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    annotations: Option<BTreeMap<String, String>>,
    /// When the alert started firing (RFC 3339).
    starts_at: String,
    /// When it resolved (RFC 3339); read only when `status` is `resolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(
        default,
        rename = "generatorURL",
        skip_serializing_if = "Option::is_none"
    )]
    generator_url: Option<String>,
    /// Alertmanager's identity of the alert (a hash of its labels).
    fingerprint: String,
}

/// What a notification's alerts did.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(super) struct AlertsReceived {
    /// Alerts about endpoints, each stored as an episode (new or updated).
    accepted: u64,
    /// Alerts without a `toucan_endpoint` label, not stored.
    ignored: u64,
}

/// Alert episodes of endpoints, most recently updated first
///
/// Of one endpoint (`endpoint`, with its `namespace` in a cluster), or of every endpoint of a
/// namespace (`namespace` alone), or locally of every endpoint.
#[utoipa::path(
    get,
    path = "/api/v1/alerts",
    params(AlertQuery),
    responses(
        (status = 200, description = "OK", body = Vec<AlertRecord>),
        (status = 400, description = "In a cluster, neither `endpoint` nor `namespace` was given.", body = ErrorBody),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = "The caller may not read the namespace.", body = ErrorBody),
        (status = 404, description = "The caller may not read this endpoint.", body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn list_alerts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<AlertQuery>,
) -> ApiResult<Json<Vec<AlertRecord>>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let open_only = query.open.unwrap_or(false);
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let store = &state.store;
    let alerts = match (query.endpoint, query.namespace) {
        (Some(endpoint), namespace) => {
            let key = match namespace {
                Some(ns) => format!("{ns}/{endpoint}"),
                None => endpoint.clone(),
            };
            if !state.auth.may_read(&principal, &key).await? {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no endpoint {endpoint}"),
                ));
            }
            store.list_alerts(Some(&key), open_only, limit).await?
        }
        (None, Some(namespace)) => {
            let prefix = format!("{namespace}/");
            // The authenticator reads a key's namespace before its `/`.
            if !state.auth.may_read(&principal, &prefix).await? {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("this caller may not read namespace {namespace:?}"),
                ));
            }
            let all = store.list_alerts(None, open_only, NAMESPACE_SCAN).await?;
            all.into_iter()
                .filter(|a| a.endpoint.starts_with(&prefix))
                .take(limit as usize)
                .collect()
        }
        (None, None) if matches!(principal, Principal::Anyone) => {
            store.list_alerts(None, open_only, limit).await?
        }
        (None, None) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "namespace: required without endpoint",
            ));
        }
    };
    Ok(Json(alerts))
}

/// Receive an Alertmanager notification (its webhook receiver)
///
/// Each alert labelled `toucan_endpoint` is stored as an episode of that endpoint, keyed
/// `alertmanager/FINGERPRINT` and started at its `startsAt`: a resolved notification updates
/// the episode its firing one stored. What the endpoint did about an episode is kept.
#[utoipa::path(
    post,
    path = "/api/v1/alertmanager",
    request_body = AlertmanagerNotification,
    responses(
        (status = 200, description = "Stored.", body = AlertsReceived),
        (status = 400, description = NOT_JSON, body = String, content_type = "text/plain"),
        (status = 422, description = INVALID_NOTIFICATION, body = ErrorBody),
        (status = 401, description = UNAUTHENTICATED, body = ErrorBody),
        (status = 403, description = NOT_ALERTER, body = ErrorBody),
        (status = 503, description = UNAVAILABLE, body = ErrorBody),
    ),
)]
pub(super) async fn post_alertmanager(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<AlertsReceived>> {
    let principal = state.auth.authenticate(bearer(&headers)).await?;
    let alerts = read_notification(&body)?;
    // Locally an endpoint is stored under its name alone, in a cluster under its namespace's.
    let namespaced = !matches!(principal, Principal::Anyone);
    let now = now_ms();
    let episodes: Vec<AlertRecord> = alerts
        .iter()
        .filter_map(|a| a.episode(namespaced, now))
        .collect();
    let endpoints: BTreeSet<&str> = episodes.iter().map(|e| e.endpoint.as_str()).collect();
    for endpoint in endpoints {
        if !state.auth.may_alert(&principal, endpoint).await? {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "this caller may not report alerts of endpoint {endpoint:?}; nothing was stored"
                ),
            ));
        }
    }
    state.store.put_alerts(&episodes).await?;
    Ok(Json(AlertsReceived {
        accepted: episodes.len() as u64,
        ignored: (alerts.len() - episodes.len()) as u64,
    }))
}

// === reading a notification ===

/// One alert of a notification, as read.
#[derive(Debug)]
struct NotifiedAlert {
    resolved: bool,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at: Millis,
    /// When it resolved (read only then).
    ends_at: Option<Millis>,
    fingerprint: String,
}

impl NotifiedAlert {
    /// The episode this alert is, if it is about an endpoint: stored under `NAMESPACE/NAME`
    /// when `namespaced` and the alert names its namespace, else under the name.
    fn episode(&self, namespaced: bool, now: Millis) -> Option<AlertRecord> {
        let name = self
            .labels
            .get(ENDPOINT_ALERT_LABEL)
            .filter(|n| !n.is_empty())?;
        let endpoint = match self.labels.get(NAMESPACE_LABEL) {
            Some(namespace) if namespaced => format!("{namespace}/{name}"),
            _ => name.clone(),
        };
        let key = format!("{EXTERNAL_KEY_PREFIX}{}", self.fingerprint);
        let summary = self
            .annotations
            .get("summary")
            .or_else(|| self.labels.get("alertname"))
            .cloned()
            .unwrap_or_else(|| key.clone());
        Some(AlertRecord {
            endpoint,
            key,
            kind: self
                .labels
                .get(KIND_ALERT_LABEL)
                .map_or(AlertKind::External, |label| AlertKind::from_label(label)),
            phase: if self.resolved {
                AlertPhase::Resolved
            } else {
                AlertPhase::Firing
            },
            summary,
            window_start: self.starts_at,
            window_end: now,
            value: None,
            threshold: None,
            active_since: self.starts_at,
            firing_since: Some(self.starts_at),
            last_breach: now,
            ended_at: self.ends_at,
            action: None,
            run: None,
            updated_at: now,
        })
    }
}

/// The alerts of a notification, or its first fault with its field path.
fn read_notification(body: &Value) -> ApiResult<Vec<NotifiedAlert>> {
    if let Some(version) = body.get("version")
        && version.as_str() != Some(WEBHOOK_VERSION)
    {
        return Err(unprocessable(format!(
            "version: expected \"{WEBHOOK_VERSION}\", got {version}"
        )));
    }
    match body.get("alerts") {
        None => Err(unprocessable("alerts: missing")),
        Some(Value::Array(alerts)) => alerts
            .iter()
            .enumerate()
            .map(|(i, alert)| read_alert(&format!("alerts[{i}]"), alert))
            .collect(),
        Some(other) => Err(unprocessable(format!(
            "alerts: expected an array, got {}",
            kind(other)
        ))),
    }
}

fn read_alert(at: &str, alert: &Value) -> ApiResult<NotifiedAlert> {
    let Value::Object(fields) = alert else {
        return Err(unprocessable(format!(
            "{at}: expected an object, got {}",
            kind(alert)
        )));
    };
    let text = |field: &str| -> ApiResult<&str> {
        match fields.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            None | Some(Value::Null) | Some(Value::String(_)) => {
                Err(unprocessable(format!("{at}.{field}: missing")))
            }
            Some(other) => Err(unprocessable(format!(
                "{at}.{field}: expected a string, got {}",
                kind(other)
            ))),
        }
    };
    let time = |field: &str| -> ApiResult<Millis> {
        parse_rfc3339(text(field)?).map_err(|e| unprocessable(format!("{at}.{field}: {e}")))
    };
    let resolved = match text("status")? {
        "firing" => false,
        "resolved" => true,
        other => {
            return Err(unprocessable(format!(
                "{at}.status: expected \"firing\" or \"resolved\", got {other:?}"
            )));
        }
    };
    Ok(NotifiedAlert {
        resolved,
        labels: match fields.get("labels") {
            None | Some(Value::Null) => return Err(unprocessable(format!("{at}.labels: missing"))),
            Some(labels) => texts(&format!("{at}.labels"), labels)?,
        },
        annotations: match fields.get("annotations") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(annotations) => texts(&format!("{at}.annotations"), annotations)?,
        },
        starts_at: time("startsAt")?,
        ends_at: if resolved {
            Some(time("endsAt")?)
        } else {
            None
        },
        fingerprint: text("fingerprint")?.to_string(),
    })
}

/// An object of strings (labels, annotations).
fn texts(at: &str, value: &Value) -> ApiResult<BTreeMap<String, String>> {
    let Value::Object(entries) = value else {
        return Err(unprocessable(format!(
            "{at}: expected an object, got {}",
            kind(value)
        )));
    };
    entries
        .iter()
        .map(|(name, v)| match v {
            Value::String(s) => Ok((name.clone(), s.clone())),
            other => Err(unprocessable(format!(
                "{at}.{name}: expected a string, got {}",
                kind(other)
            ))),
        })
        .collect()
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn alert(labels: Value) -> NotifiedAlert {
        let body = json!({"version": "4", "alerts": [{
            "status": "firing",
            "labels": labels,
            "startsAt": "2026-03-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "f00d",
        }]});
        read_notification(&body).unwrap().remove(0)
    }

    #[test]
    fn an_alert_is_an_episode_of_the_endpoint_it_names() {
        let labelled = |labels: Value, namespaced: bool| {
            alert(labels)
                .episode(namespaced, 5)
                .map(|e| (e.endpoint, e.kind, e.summary))
        };
        let cases = [
            (
                json!({"toucan_endpoint": "fashion", "namespace": "prod", "alertname": "A"}),
                true,
                Some((
                    "prod/fashion".to_string(),
                    AlertKind::External,
                    "A".to_string(),
                )),
            ),
            (
                json!({"toucan_endpoint": "fashion", "namespace": "prod", "toucan_alert": "drift"}),
                false,
                Some((
                    "fashion".to_string(),
                    AlertKind::Drift,
                    "alertmanager/f00d".to_string(),
                )),
            ),
            (
                json!({"toucan_endpoint": "fashion", "toucan_alert": "latency"}),
                true,
                Some((
                    "fashion".to_string(),
                    AlertKind::External,
                    "alertmanager/f00d".to_string(),
                )),
            ),
            (json!({"toucan_endpoint": "", "alertname": "A"}), true, None),
            (json!({"alertname": "A"}), false, None),
        ];
        for (labels, namespaced, expected) in cases {
            assert_eq!(labelled(labels.clone(), namespaced), expected, "{labels}");
        }
    }

    #[test]
    fn a_firing_alert_has_no_end_and_its_episode_starts_when_it_did() {
        let episode = alert(json!({"toucan_endpoint": "fashion"}))
            .episode(false, 1_800_000_000_000)
            .unwrap();
        let started = parse_rfc3339("2026-03-01T10:00:00Z").unwrap();
        assert_eq!(episode.phase, AlertPhase::Firing);
        assert_eq!(episode.active_since, started);
        assert_eq!(episode.firing_since, Some(started));
        assert_eq!(episode.ended_at, None);
        assert_eq!(episode.updated_at, 1_800_000_000_000);
    }

    #[test]
    fn every_fault_names_its_field() {
        let valid = || {
            json!({
                "status": "resolved",
                "labels": {"toucan_endpoint": "fashion"},
                "startsAt": "2026-03-01T10:00:00Z",
                "endsAt": "2026-03-01T11:00:00Z",
                "fingerprint": "f00d",
            })
        };
        let with = |field: &str, value: Value| {
            let mut alert = valid();
            alert[field] = value;
            json!({"alerts": [valid(), alert]})
        };
        let without = |field: &str| {
            let mut alert = valid();
            alert.as_object_mut().unwrap().remove(field);
            json!({"alerts": [alert]})
        };
        let cases = [
            (json!({}), "alerts: missing"),
            (
                json!({"alerts": {}}),
                "alerts: expected an array, got an object",
            ),
            (
                json!({"version": "3", "alerts": []}),
                "version: expected \"4\", got \"3\"",
            ),
            (
                json!({"alerts": [7]}),
                "alerts[0]: expected an object, got a number",
            ),
            (
                with("status", json!("pending")),
                "alerts[1].status: expected \"firing\" or",
            ),
            (with("startsAt", json!("soon")), "alerts[1].startsAt: "),
            (with("endsAt", json!(null)), "alerts[1].endsAt: missing"),
            (
                with("labels", json!({"a": 1})),
                "alerts[1].labels.a: expected a string",
            ),
            (
                with("annotations", json!([])),
                "alerts[1].annotations: expected an object",
            ),
            (
                with("fingerprint", json!("")),
                "alerts[1].fingerprint: missing",
            ),
            (without("labels"), "alerts[0].labels: missing"),
            (without("startsAt"), "alerts[0].startsAt: missing"),
        ];
        for (body, expected) in cases {
            let error = read_notification(&body).unwrap_err();
            assert_eq!(error.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert!(
                error.message.starts_with(expected),
                "{body}: {}",
                error.message
            );
        }
        assert_eq!(
            read_notification(&json!({"alerts": [valid()]}))
                .unwrap()
                .len(),
            1
        );
    }
}
