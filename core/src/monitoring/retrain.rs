//! Retraining, pure: whether an alert starts a retraining run now, under which name, and with
//! which parameters.
//!
//! The shells call [`decide`] for every firing alert they see (from Alertmanager's webhook or
//! from their own evaluation), with the endpoint's past retraining runs. The rules, in order:
//!
//! 1. The run for this alert is named after the endpoint and a hash of the alert's
//!    fingerprint and the start of its window ([`run_name`]): an alert seen again (a webhook
//!    retried, a reconcile repeated) names the same run, which is already in the history, so
//!    nothing runs twice.
//! 2. While a retraining run of the endpoint is still going, no other starts.
//! 3. None starts within `cooldown` (6 h by default) of the last one's start.
//! 4. At most `maxPerDay` (2 by default) start in any 24 hours.
//! 5. Otherwise the run starts, with the spec's parameters where the alert's variables
//!    (`{{alert.window.samples}}`, `{{alert.window.start}}`, `{{alert.window.end}}`,
//!    `{{alert.reason}}`) are replaced by the alert's values.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::{EndpointSpec, ParamValue, RetrainSpec, RolloutSpec};
use crate::monitoring::spec::AlertVariable;
use crate::template::{Piece, pieces};
use crate::time::{Millis, rfc3339};

/// A day, for `maxPerDay`.
const DAY_MS: Millis = 24 * 60 * 60 * 1000;
/// The longest run name: a DNS label.
const MAX_RUN_NAME: usize = 63;

/// An alert that may start a retraining run.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert<'a> {
    /// What identifies the alert across notifications (Alertmanager's fingerprint, or the
    /// rule and its labels).
    pub fingerprint: &'a str,
    /// Which alert fired and why, one line.
    pub reason: &'a str,
    /// The window whose samples the alert judged.
    pub window_start: Millis,
    pub window_end: Millis,
    /// Where the labelled production samples of that window are, a CSV table (an artifact's
    /// digest, or a path): `{{alert.window.samples}}`.
    pub samples: &'a str,
}

/// A retraining run the endpoint started before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PastRetrain {
    pub run: String,
    pub started_at: Millis,
    /// Whether it has ended (whatever its outcome).
    pub finished: bool,
}

/// Why an alert did not start a run now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HoldReason {
    /// This alert's run was started already.
    AlreadyStarted,
    /// Another retraining run is still going.
    Running,
    /// The last run started less than `cooldown` ago.
    Cooldown,
    /// `maxPerDay` runs started in the last 24 hours.
    DailyLimit,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::AlreadyStarted => "AlreadyStarted",
            HoldReason::Running => "RetrainRunning",
            HoldReason::Cooldown => "RetrainCoolingDown",
            HoldReason::DailyLimit => "RetrainDailyLimit",
        }
    }
}

/// What to do about an alert.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Start the pipeline run `run` with `params`.
    Start {
        run: String,
        params: Vec<ParamValue>,
    },
    /// Start nothing now; `until` is when the reason ends, where it is known.
    Hold {
        reason: HoldReason,
        until: Option<Millis>,
        message: String,
    },
}

/// The retraining run an alert of `endpoint` starts: `ENDPOINT-retrain-HASH`, the hash of the
/// alert's fingerprint and window start, cut to a DNS label.
pub fn run_name(endpoint: &str, alert: &Alert<'_>) -> String {
    let mut hash = Sha256::new();
    hash.update(alert.fingerprint.as_bytes());
    hash.update([0]);
    hash.update(alert.window_start.to_be_bytes());
    let suffix = format!("-retrain-{}", &hex::encode(hash.finalize())[..10]);
    let room = MAX_RUN_NAME - suffix.len();
    let stem: String = endpoint.chars().take(room).collect();
    format!("{}{suffix}", stem.trim_end_matches('-'))
}

/// Whether `alert` of `endpoint` starts a retraining run now; see the module docs for the
/// rules. An error only for a parameter that names an unknown variable (which validation
/// refuses first).
pub fn decide(
    spec: &RetrainSpec,
    endpoint: &str,
    alert: &Alert<'_>,
    history: &[PastRetrain],
    now: Millis,
) -> Result<Verdict, String> {
    let run = run_name(endpoint, alert);
    if history.iter().any(|p| p.run == run) {
        return Ok(hold(
            HoldReason::AlreadyStarted,
            None,
            format!("run {run} was started for this alert"),
        ));
    }
    if let Some(going) = history.iter().find(|p| !p.finished) {
        return Ok(hold(
            HoldReason::Running,
            None,
            format!("retraining run {} is still going", going.run),
        ));
    }
    let cooldown = Millis::try_from(spec.cooldown_ms()).unwrap_or(Millis::MAX);
    if let Some(last) = history.iter().map(|p| p.started_at).max()
        && now < last.saturating_add(cooldown)
    {
        let until = last.saturating_add(cooldown);
        return Ok(hold(
            HoldReason::Cooldown,
            Some(until),
            format!(
                "the last retraining run started {}s ago; the cooldown is {}s",
                (now - last) / 1000,
                cooldown / 1000
            ),
        ));
    }
    let mut today: Vec<Millis> = history
        .iter()
        .map(|p| p.started_at)
        .filter(|t| *t > now - DAY_MS && *t <= now)
        .collect();
    let limit = spec.max_per_day().max(1);
    if today.len() >= limit as usize {
        today.sort_unstable();
        // A slot frees when the oldest of the last `limit` starts leaves the 24 hours.
        let until = today[today.len() - limit as usize] + DAY_MS;
        return Ok(hold(
            HoldReason::DailyLimit,
            Some(until),
            format!(
                "{} retraining runs started in the last 24 hours (at most {limit})",
                today.len()
            ),
        ));
    }
    let params = spec
        .params
        .iter()
        .map(|p| {
            let value = match &p.value {
                serde_json::Value::String(text) => serde_json::Value::String(
                    render(text, alert)
                        .map_err(|e| format!("spec.monitoring.retrain.params {:?}: {e}", p.name))?,
                ),
                other => other.clone(),
            };
            Ok(ParamValue {
                name: p.name.clone(),
                value,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Verdict::Start { run, params })
}

fn hold(reason: HoldReason, until: Option<Millis>, message: String) -> Verdict {
    Verdict::Hold {
        reason,
        until,
        message,
    }
}

/// `text` with the alert's variables replaced by its values.
fn render(text: &str, alert: &Alert<'_>) -> Result<String, String> {
    let time = |ms: Millis| rfc3339(ms).map_err(|e| e.to_string());
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece.map_err(|e| e.to_string())? {
            Piece::Text(t) => out.push_str(t),
            Piece::Placeholder(inner) => {
                let variable = AlertVariable::ALL
                    .into_iter()
                    .find(|v| v.as_str() == inner)
                    .ok_or_else(|| format!("unknown variable {{{{{inner}}}}}"))?;
                match variable {
                    AlertVariable::WindowSamples => out.push_str(alert.samples),
                    AlertVariable::WindowStart => out.push_str(&time(alert.window_start)?),
                    AlertVariable::WindowEnd => out.push_str(&time(alert.window_end)?),
                    AlertVariable::Reason => out.push_str(alert.reason),
                }
            }
        }
    }
    Ok(out)
}

/// The name of the version a retraining run's model is rolled out as: `r-` and the end of
/// the run's name, made unique in the spec (`-2`, `-3`...).
pub fn candidate_name(spec: &EndpointSpec, run: &str) -> String {
    let tail: String = run
        .rsplit('-')
        .next()
        .unwrap_or(run)
        .chars()
        .take(10)
        .collect();
    let base = format!("r-{tail}");
    let mut name = base.clone();
    let mut n = 2;
    while spec.version(&name).is_some() {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The rollout of a retrained model as version `candidate`: `promote.rollout`'s steps,
/// interval (one evaluation window plus its maturity by default), evaluation gates and
/// bounds, with no request gates.
pub fn candidate_rollout(spec: &EndpointSpec, candidate: &str) -> Result<RolloutSpec, String> {
    let monitoring = spec.monitoring.as_ref();
    let promote = monitoring
        .and_then(|m| m.retrain.as_ref())
        .and_then(|r| r.promote.as_ref())
        .and_then(|p| p.rollout.clone())
        .unwrap_or_default();
    let interval_ms = promote.interval_ms(monitoring.and_then(|m| m.evaluation.as_ref()));
    let interval = crate::duration::Duration::parse(&format!("{interval_ms}ms"))
        .map_err(|e| format!("the rollout's interval: {e}"))?;
    Ok(RolloutSpec {
        candidate: candidate.to_string(),
        steps: Some(promote.steps()),
        interval,
        gates: Vec::new(),
        on_failure: promote.on_failure,
        min_requests: None,
        evaluation_gates: promote.gates.clone(),
        min_labels: promote.min_labels,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use serde_json::json;

    use super::*;
    use crate::api::PipelineRef;

    const HOUR: Millis = 60 * 60 * 1000;
    const NOW: Millis = 1_800_000_000_000;

    fn spec() -> RetrainSpec {
        serde_json::from_value(json!({
            "pipelineRef": {"name": "fashion-mnist"},
            "params": [
                {"name": "extra_data", "value": "{{alert.window.samples}}"},
                {"name": "note", "value": "{{ alert.reason }} from {{alert.window.start}} to {{alert.window.end}}"},
                {"name": "epochs", "value": 3},
            ],
            "cooldown": "6h",
            "maxPerDay": 2,
        }))
        .unwrap()
    }

    fn alert() -> Alert<'static> {
        Alert {
            fingerprint: "4f2a9c",
            reason: "drift: brightness",
            window_start: NOW - HOUR,
            window_end: NOW,
            samples: "sha256:abcd",
        }
    }

    fn past(run: &str, hours_ago: i64, finished: bool) -> PastRetrain {
        PastRetrain {
            run: run.into(),
            started_at: NOW - hours_ago * HOUR,
            finished,
        }
    }

    fn held(verdict: Verdict) -> (HoldReason, Option<Millis>) {
        match verdict {
            Verdict::Hold { reason, until, .. } => (reason, until),
            Verdict::Start { run, .. } => panic!("started {run}"),
        }
    }

    #[test]
    fn a_first_alert_starts_a_run_with_the_alerts_values() {
        let spec = spec();
        assert_eq!(
            spec.pipeline_ref,
            PipelineRef {
                name: "fashion-mnist".into()
            }
        );
        let Verdict::Start { run, params } = decide(&spec, "fashion", &alert(), &[], NOW).unwrap()
        else {
            panic!("held");
        };
        assert_eq!(run, run_name("fashion", &alert()));
        assert!(run.starts_with("fashion-retrain-") && run.len() == "fashion-retrain-".len() + 10);
        assert_eq!(params[0].value, json!("sha256:abcd"));
        assert_eq!(
            params[1].value,
            json!(format!(
                "drift: brightness from {} to {}",
                rfc3339(NOW - HOUR).unwrap(),
                rfc3339(NOW).unwrap()
            ))
        );
        assert_eq!(params[2].value, json!(3));
    }

    #[test]
    fn the_same_alert_names_the_same_run_and_never_starts_it_twice() {
        let spec = spec();
        let run = run_name("fashion", &alert());
        let again = Alert {
            reason: "drift: brightness and contrast",
            ..alert()
        };
        assert_eq!(run_name("fashion", &again), run);
        let other_window = Alert {
            window_start: NOW,
            ..alert()
        };
        assert_ne!(run_name("fashion", &other_window), run);
        let history = [past(&run, 30, true)];
        assert_eq!(
            held(decide(&spec, "fashion", &again, &history, NOW).unwrap()).0,
            HoldReason::AlreadyStarted
        );
    }

    #[test]
    fn a_running_retrain_the_cooldown_and_the_daily_limit_hold_a_new_one() {
        let spec = spec();
        let a = alert();
        assert_eq!(
            held(decide(&spec, "fashion", &a, &[past("r1", 10, false)], NOW).unwrap()).0,
            HoldReason::Running
        );
        assert_eq!(
            held(decide(&spec, "fashion", &a, &[past("r1", 2, true)], NOW).unwrap()),
            (HoldReason::Cooldown, Some(NOW + 4 * HOUR))
        );
        // Exactly the cooldown later, it may start.
        assert!(matches!(
            decide(&spec, "fashion", &a, &[past("r1", 6, true)], NOW).unwrap(),
            Verdict::Start { .. }
        ));
        // Two in the last 24 hours: the next slot opens when the older leaves the day.
        let two = [past("r1", 20, true), past("r2", 8, true)];
        assert_eq!(
            held(decide(&spec, "fashion", &a, &two, NOW).unwrap()),
            (HoldReason::DailyLimit, Some(NOW + 4 * HOUR))
        );
        let one_old = [past("r1", 25, true), past("r2", 8, true)];
        assert!(matches!(
            decide(&spec, "fashion", &a, &one_old, NOW).unwrap(),
            Verdict::Start { .. }
        ));
    }

    #[test]
    fn run_names_are_dns_labels_for_long_endpoint_names() {
        let long = "e".repeat(63);
        let name = run_name(&long, &alert());
        assert_eq!(name.len(), 63);
        assert!(name.ends_with(&run_name("x", &alert())["x".len()..]));
    }
}
