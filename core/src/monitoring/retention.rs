//! How long an endpoint's monitoring data is kept (`spec.monitoring.retention`): samples with
//! their labels, and alert episodes once they ended. A shell deletes what [`expiry`] says
//! every so often, so a busy endpoint's store stops growing instead of holding every request
//! it ever sampled.
//!
//! Nothing a pass still reads is expired: the samples of the lookback (the windows a pass
//! judges), of the rollout step under way and of a reference window stay, whatever the
//! retention says; validation keeps the retention at least a day (`maxPerDay` counts the
//! retraining runs of the last 24 hours from the alerts that started them) and at least the
//! retraining cooldown.

use super::assess::lookback_ms;
use super::spec::ReferenceSource;
use crate::api::{EndpointSpec, MonitoringSpec};
use crate::records::Millis;
use crate::time::parse_rfc3339;

/// `retention` when omitted: a week.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// The least retention: a day.
pub const MIN_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;

/// How often a shell expires data, at most.
pub const EXPIRY_INTERVAL_MS: Millis = 10 * 60 * 1000;

impl MonitoringSpec {
    /// `retention` in milliseconds, [`DEFAULT_RETENTION_MS`] when omitted.
    pub fn retention_ms(&self) -> u64 {
        self.retention
            .as_ref()
            .map_or(DEFAULT_RETENTION_MS, crate::duration::Duration::as_millis)
    }
}

/// What may go: samples (and their labels) stored before `samples_before`, alert episodes
/// that ended before `alerts_before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub samples_before: Millis,
    pub alerts_before: Millis,
}

/// What an endpoint may forget at `now`; `step_since` is when the rollout step under way
/// began. `None` without monitoring (nothing reads the samples, so nothing is decided).
pub fn expiry(spec: &EndpointSpec, now: Millis, step_since: Option<Millis>) -> Option<Expiry> {
    let monitoring = spec.monitoring.as_ref()?;
    let millis = |ms: u64| Millis::try_from(ms).unwrap_or(Millis::MAX);
    let retention = millis(monitoring.retention_ms());
    // The alerts that started retraining runs are what the cooldown and `maxPerDay` count.
    let cooldown = monitoring.retrain.as_ref().map_or(0, |r| r.cooldown_ms());
    let alerts_kept = retention
        .max(millis(cooldown))
        .max(millis(MIN_RETENTION_MS));
    let alerts_before = now.saturating_sub(alerts_kept);
    let mut samples_before = now
        .saturating_sub(retention)
        .min(now.saturating_sub(lookback_ms(spec)));
    if let Some(since) = step_since {
        samples_before = samples_before.min(since);
    }
    let reference = monitoring.drift.as_ref().map(|d| d.reference.source());
    if let Some(Ok(ReferenceSource::Window(range))) = reference {
        // A reference that does not read is refused by validation; keep everything then.
        let start = parse_rfc3339(&range.start).unwrap_or(0);
        samples_before = samples_before.min(start);
    }
    Some(Expiry {
        samples_before: samples_before.max(0),
        alerts_before: alerts_before.max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 24 * 60 * 60 * 1000;

    fn spec(yaml: &str) -> EndpointSpec {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn samples_and_alerts_older_than_the_retention_go() {
        let now = 30 * DAY;
        let week = spec("versions: []\nmonitoring: {evaluation: {window: 1h}}");
        assert_eq!(
            expiry(&week, now, None),
            Some(Expiry {
                samples_before: 23 * DAY,
                alerts_before: 23 * DAY,
            })
        );
        let two_days = spec("versions: []\nmonitoring: {retention: 48h}");
        assert_eq!(
            expiry(&two_days, now, None).unwrap().samples_before,
            28 * DAY
        );
        // A cooldown longer than the retention (only when the retention is left to its
        // default) keeps the alerts it counts from.
        let long_cooldown =
            spec("versions: []\nmonitoring: {retrain: {pipelineRef: {name: p}, cooldown: 240h}}");
        assert_eq!(
            expiry(&long_cooldown, now, None),
            Some(Expiry {
                samples_before: 23 * DAY,
                alerts_before: 20 * DAY,
            })
        );
        assert_eq!(expiry(&spec("versions: []"), now, None), None);
    }

    #[test]
    fn what_a_pass_still_reads_is_kept() {
        let now = 30 * DAY;
        // A rollout step that began before the retention's cutoff.
        let s = spec("versions: []\nmonitoring: {retention: 24h}");
        assert_eq!(
            expiry(&s, now, Some(DAY)).unwrap().samples_before,
            DAY,
            "the step's samples stay"
        );
        // A reference window of production samples, a month old.
        let s = spec(
            "versions: []\nmonitoring: {retention: 24h, drift: {reference: {window: \
             {start: '1970-01-02T00:00:00Z', end: '1970-01-03T00:00:00Z'}}}}",
        );
        let expiry = expiry(&s, now, None).unwrap();
        assert_eq!(expiry.samples_before, DAY, "from the reference's start");
        assert_eq!(expiry.alerts_before, 29 * DAY, "alerts go by the retention");
        // Windows longer than the retention (validation refuses that) still keep theirs:
        // two evaluation windows and the labels' maturity (10 minutes by default).
        let s = spec("versions: []\nmonitoring: {retention: 24h, evaluation: {window: 20h}}");
        assert_eq!(
            super::expiry(&s, now, None).unwrap().samples_before,
            now - (40 * 60 + 10) * 60 * 1000
        );
    }
}
