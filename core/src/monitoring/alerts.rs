//! Alerts, pure: how a breach seen on successive passes becomes an alert that fires, keeps
//! firing and resolves, with the hysteresis Prometheus gives its rules (`for` and
//! `keep_firing_for`).
//!
//! Each pass of the monitoring loop ([`super::assess`]) lists the breaches it sees now, each
//! under a key that names what it is about. [`advance`] takes them with the episodes still
//! open (pending or firing, as the store keeps them) and returns the episodes that changed:
//!
//! - a breach with no open episode opens one, `Pending` (or `Firing` at once when its hold is
//!   0);
//! - a pending episode whose breach has held for `hold` fires;
//! - a pending episode whose breach is gone is `Cleared`: it never fired, and a new breach
//!   starts a new episode with the full hold again;
//! - a firing episode keeps firing until its breach has been gone for `hold` as well, so an
//!   alert on the edge of its threshold does not flap on every pass; then it is `Resolved`.
//!
//! An episode's row is what the shells store, show (`toucan get alerts`) and turn into
//! conditions and events; only a transition is an event.

use serde::{Deserialize, Serialize};

use crate::records::{AlertRecord, Millis};

/// The key prefix of alerts that came from Alertmanager's webhook (`alertmanager/FINGERPRINT`):
/// Alertmanager resolves them, never [`advance`].
pub const EXTERNAL_KEY_PREFIX: &str = "alertmanager/";

/// Whether the alert under `key` came from Alertmanager.
pub fn is_external(key: &str) -> bool {
    key.starts_with(EXTERNAL_KEY_PREFIX)
}

/// What raised an alert.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// Inputs or predictions moved away from the reference.
    Drift,
    /// A live metric crossed its floor.
    Floor,
    /// A version is worse than the one listed before it.
    Regression,
    /// An alert Alertmanager sent to the endpoint's webhook.
    External,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Drift => "drift",
            AlertKind::Floor => "floor",
            AlertKind::Regression => "regression",
            AlertKind::External => "external",
        }
    }

    /// The kind of an alert's `toucan_alert` label (see [`super::rules::KIND_ALERT_LABEL`]).
    pub fn from_label(label: &str) -> AlertKind {
        match label {
            "drift" => AlertKind::Drift,
            "floor" => AlertKind::Floor,
            "regression" => AlertKind::Regression,
            _ => AlertKind::External,
        }
    }
}

/// Where an episode stands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AlertPhase {
    /// Breached, not yet for `hold`.
    Pending,
    Firing,
    /// Fired, then stayed clear for `hold`.
    Resolved,
    /// Cleared before it fired.
    Cleared,
}

impl AlertPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertPhase::Pending => "Pending",
            AlertPhase::Firing => "Firing",
            AlertPhase::Resolved => "Resolved",
            AlertPhase::Cleared => "Cleared",
        }
    }

    /// Whether the episode is still open: the next pass may move it.
    pub fn is_open(self) -> bool {
        matches!(self, AlertPhase::Pending | AlertPhase::Firing)
    }

    /// Read back from its name.
    pub fn parse(text: &str) -> Option<AlertPhase> {
        [
            AlertPhase::Pending,
            AlertPhase::Firing,
            AlertPhase::Resolved,
            AlertPhase::Cleared,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }
}

/// How long a breach of `kind` must hold before it fires, and stay clear before it resolves:
/// the spec's `drift.for` for drift, `evaluation.for` for floors and regressions (0 where the
/// spec has no such section).
pub fn hold_ms(spec: &crate::api::EndpointSpec, kind: AlertKind) -> Millis {
    let monitoring = spec.monitoring.as_ref();
    let ms = match kind {
        AlertKind::Drift => monitoring
            .and_then(|m| m.drift.as_ref())
            .map(|d| d.hold_ms()),
        _ => monitoring
            .and_then(|m| m.evaluation.as_ref())
            .map(|e| e.hold_ms()),
    };
    Millis::try_from(ms.unwrap_or(0)).unwrap_or(Millis::MAX)
}

/// The firing alerts that have not started a retraining run, oldest first: those a pass asks
/// [`super::retrain::decide`] about.
pub fn awaiting_retrain(alerts: &[AlertRecord]) -> Vec<&AlertRecord> {
    let mut firing: Vec<&AlertRecord> = alerts
        .iter()
        .filter(|a| a.phase == AlertPhase::Firing && a.run.is_none())
        .collect();
    firing.sort_by_key(|a| a.firing_since.unwrap_or(a.active_since));
    firing
}

/// A condition of the endpoint's status that its alerts say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionValue {
    pub type_: &'static str,
    /// `True` or `False`.
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
}

/// The condition a firing drift alert sets.
pub const DRIFTED: &str = "Drifted";
/// The condition a firing floor or regression alert sets.
pub const DEGRADED: &str = "Degraded";

/// The monitoring conditions of an endpoint from its open alerts: `Drifted` (a drift alert
/// fires) and `Degraded` (a floor or regression alert fires), each `False` with reason
/// `NoAlert` when none does, and the summary of the oldest firing one as the message
/// (with how many others fire).
pub fn conditions(open: &[AlertRecord]) -> Vec<ConditionValue> {
    let of = |type_: &'static str, kinds: &[AlertKind], reason: &'static str| {
        let mut firing: Vec<&AlertRecord> = open
            .iter()
            .filter(|a| a.phase == AlertPhase::Firing && kinds.contains(&a.kind))
            .collect();
        firing.sort_by_key(|a| (a.firing_since.unwrap_or(a.active_since), a.key.clone()));
        match firing.first() {
            Some(first) => ConditionValue {
                type_,
                status: "True",
                reason,
                message: match firing.len() {
                    1 => first.summary.clone(),
                    n => format!("{} (and {} more alerts)", first.summary, n - 1),
                },
            },
            None => ConditionValue {
                type_,
                status: "False",
                reason: "NoAlert",
                message: String::new(),
            },
        }
    };
    vec![
        of(DRIFTED, &[AlertKind::Drift], "DriftDetected"),
        of(
            DEGRADED,
            &[AlertKind::Floor, AlertKind::Regression],
            "MetricBreached",
        ),
    ]
}

/// A condition that holds on this pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Breach {
    pub key: String,
    pub kind: AlertKind,
    pub summary: String,
    pub window_start: Millis,
    pub window_end: Millis,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
}

/// An episode that changed on this pass, and whether that was a transition (an event).
#[derive(Clone, Debug, PartialEq)]
pub struct AlertChange {
    pub record: AlertRecord,
    /// The phase it moved into, when it moved.
    pub transition: Option<AlertPhase>,
}

/// Moves the open episodes of `endpoint` by this pass's `breaches` (see the module docs).
/// `open` holds the episodes the store has pending or firing; at most one per key is looked at
/// (the newest); Alertmanager's ([`is_external`]) are left alone. `hold` is how long a breach of each kind must last before it fires, and stay
/// clear before it resolves (the spec's `for`). Returns every episode to write, in key order.
pub fn advance(
    endpoint: &str,
    open: &[AlertRecord],
    breaches: &[Breach],
    hold: impl Fn(AlertKind) -> Millis,
    now: Millis,
) -> Vec<AlertChange> {
    let mut changes = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut breaches: Vec<&Breach> = breaches.iter().collect();
    breaches.sort_by(|a, b| a.key.cmp(&b.key));
    for breach in breaches {
        if !seen.insert(breach.key.as_str()) {
            continue;
        }
        let episode = open
            .iter()
            .filter(|r| r.key == breach.key && r.phase.is_open())
            .max_by_key(|r| r.active_since);
        let change = match episode {
            None => {
                let fires = hold(breach.kind) <= 0;
                AlertChange {
                    record: AlertRecord {
                        endpoint: endpoint.to_string(),
                        key: breach.key.clone(),
                        kind: breach.kind,
                        phase: if fires {
                            AlertPhase::Firing
                        } else {
                            AlertPhase::Pending
                        },
                        summary: breach.summary.clone(),
                        window_start: breach.window_start,
                        window_end: breach.window_end,
                        value: breach.value,
                        threshold: breach.threshold,
                        active_since: now,
                        firing_since: fires.then_some(now),
                        last_breach: now,
                        ended_at: None,
                        action: None,
                        run: None,
                        updated_at: now,
                    },
                    transition: Some(if fires {
                        AlertPhase::Firing
                    } else {
                        AlertPhase::Pending
                    }),
                }
            }
            Some(record) => {
                let mut next = record.clone();
                next.summary = breach.summary.clone();
                next.window_start = breach.window_start;
                next.window_end = breach.window_end;
                next.value = breach.value;
                next.threshold = breach.threshold;
                next.last_breach = now;
                next.updated_at = now;
                let fires = record.phase == AlertPhase::Pending
                    && now.saturating_sub(record.active_since) >= hold(breach.kind);
                if fires {
                    next.phase = AlertPhase::Firing;
                    next.firing_since = Some(now);
                }
                AlertChange {
                    record: next,
                    transition: fires.then_some(AlertPhase::Firing),
                }
            }
        };
        changes.push(change);
    }
    for record in open
        .iter()
        .filter(|r| r.phase.is_open() && !is_external(&r.key))
    {
        if seen.contains(record.key.as_str()) {
            continue;
        }
        let ended = match record.phase {
            AlertPhase::Pending => Some(AlertPhase::Cleared),
            AlertPhase::Firing if now.saturating_sub(record.last_breach) >= hold(record.kind) => {
                Some(AlertPhase::Resolved)
            }
            _ => None,
        };
        if let Some(phase) = ended {
            let mut next = record.clone();
            next.phase = phase;
            next.ended_at = Some(now);
            next.updated_at = now;
            changes.push(AlertChange {
                record: next,
                transition: Some(phase),
            });
        }
    }
    changes.sort_by(|a, b| a.record.key.cmp(&b.record.key));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    fn breach(key: &str) -> Breach {
        Breach {
            key: key.to_string(),
            kind: AlertKind::Drift,
            summary: format!("{key} breached"),
            window_start: 0,
            window_end: MIN,
            value: Some(0.3),
            threshold: Some(0.1),
        }
    }

    /// Runs passes every minute with the breach present where `present[i]` and returns each
    /// pass's transition for `key`.
    fn passes(present: &[bool], hold_ms: Millis) -> Vec<Option<AlertPhase>> {
        let mut open: Vec<AlertRecord> = Vec::new();
        let mut out = Vec::new();
        for (i, &on) in present.iter().enumerate() {
            let now = i as Millis * MIN;
            let breaches = if on {
                vec![breach("drift/all")]
            } else {
                vec![]
            };
            let changes = advance("e", &open, &breaches, |_| hold_ms, now);
            out.push(changes.first().and_then(|c| c.transition));
            for change in changes {
                open.retain(|r| r.key != change.record.key);
                if change.record.phase.is_open() {
                    open.push(change.record);
                }
            }
        }
        out
    }

    #[test]
    fn a_breach_fires_after_its_hold_and_resolves_after_as_long_clear() {
        use AlertPhase::*;
        let got = passes(
            &[
                true, true, true, true, false, false, true, false, false, false, false,
            ],
            3 * MIN,
        );
        assert_eq!(
            got,
            vec![
                Some(Pending),
                None,
                None,
                Some(Firing),
                None,
                None,
                None,
                None,
                None,
                Some(Resolved),
                None
            ]
        );
    }

    #[test]
    fn a_pending_breach_that_ends_is_cleared_and_a_new_one_waits_the_whole_hold() {
        use AlertPhase::*;
        let got = passes(&[true, true, false, true, true, true, true], 3 * MIN);
        assert_eq!(
            got,
            vec![
                Some(Pending),
                None,
                Some(Cleared),
                Some(Pending),
                None,
                None,
                Some(Firing)
            ]
        );
    }

    #[test]
    fn no_hold_fires_at_once_and_resolves_on_the_first_clear_pass() {
        use AlertPhase::*;
        let got = passes(&[true, true, false, true], 0);
        assert_eq!(got, vec![Some(Firing), None, Some(Resolved), Some(Firing)]);
    }

    #[test]
    fn a_firing_episode_keeps_its_start_and_takes_the_newest_figures() {
        let first = advance("e", &[], &[breach("floor/accuracy/v1/all")], |_| 0, 0);
        let record = first[0].record.clone();
        let mut again = breach("floor/accuracy/v1/all");
        again.value = Some(0.5);
        again.window_start = MIN;
        let second = advance("e", &[record], &[again], |_| 0, MIN);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].transition, None);
        assert_eq!(second[0].record.active_since, 0);
        assert_eq!(second[0].record.firing_since, Some(0));
        assert_eq!(second[0].record.value, Some(0.5));
        assert_eq!(second[0].record.window_start, MIN);
    }
}
