//! Each version's replica count: `replicas.min` when it cannot vary, a HorizontalPodAutoscaler's
//! when the endpoint scales on CPU, and otherwise what core's concurrency autoscaler
//! ([`autoscale::decide`]) asks for, from the in-flight counts the router reported.
//!
//! The autoscaler's memory (the last minute of samples and its panic state) lives in this
//! process, as Knative's does: an operator that restarts starts from the replicas running and
//! relearns the load within its stable window.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use toucan_core::api::ModelVersion;
use toucan_core::records::Millis;
use toucan_core::serving::autoscale::{self, AutoscalerState, ConcurrencySample, ScaleInput};
use toucan_core::serving::spec::AutoscalingPolicy;
use toucan_router::admin::EndpointStats;

/// What one version's count is decided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaling {
    /// `min == max`: nothing to decide.
    Fixed(u32),
    /// A HorizontalPodAutoscaler on CPU, with this target.
    Cpu(u32),
    /// The concurrency autoscaler, with this target per replica.
    Concurrency(u32),
}

/// How `version` is scaled under `policy`.
pub fn scaling(policy: AutoscalingPolicy, version: &ModelVersion) -> Scaling {
    let (min, max) = version.replica_bounds();
    match policy {
        AutoscalingPolicy::Cpu(target) => Scaling::Cpu(target),
        _ if max <= min => Scaling::Fixed(min),
        AutoscalingPolicy::Concurrency(target) => Scaling::Concurrency(target),
    }
}

/// What the concurrency autoscaler aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// In-flight requests per replica.
    pub concurrency: u32,
    /// The stable window (`autoscaling.target.window`).
    pub window: Millis,
}

/// One version's autoscaler memory.
#[derive(Clone, Debug, Default)]
struct Memory {
    desired: Option<u32>,
    state: AutoscalerState,
    samples: Vec<ConcurrencySample>,
}

/// Every version's memory, by endpoint UID and version.
#[derive(Debug, Default)]
pub struct Autoscalers {
    memory: Mutex<HashMap<(String, String), Memory>>,
}

/// One decision's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaled {
    pub desired: u32,
    /// The count asked for before, when it changed: the reason is an event.
    pub changed_from: Option<u32>,
    pub reason: String,
}

impl Autoscalers {
    /// The replicas `version` of the endpoint `uid` should run now, given the router's
    /// `stats` (when it could be read) and the pods `running` now.
    pub fn decide(
        &self,
        uid: &str,
        version: &ModelVersion,
        target: Target,
        stats: Option<&EndpointStats>,
        running: u32,
        now: Millis,
    ) -> Scaled {
        let (min, max) = version.replica_bounds();
        let mut all = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        let memory = all
            .entry((uid.to_string(), version.name.clone()))
            .or_default();
        let current = memory.desired.unwrap_or(running).clamp(min, max.max(min));
        if let Some(s) = stats.and_then(|s| s.versions.get(&version.name)) {
            memory.samples.push(ConcurrencySample {
                at: now,
                in_flight: s.in_flight as f64,
                ready: u32::try_from(s.ready_replicas).unwrap_or(u32::MAX),
            });
        }
        memory
            .samples
            .retain(|s| s.at > now.saturating_sub(target.window));
        let decision = autoscale::decide(
            &ScaleInput {
                samples: &memory.samples,
                target: f64::from(target.concurrency),
                stable_window: target.window,
                current,
                min,
                max,
                now,
            },
            &memory.state,
        );
        memory.state = decision.state;
        let changed_from =
            (memory.desired.is_some() && decision.desired != current).then_some(current);
        memory.desired = Some(decision.desired);
        Scaled {
            desired: decision.desired,
            changed_from,
            reason: decision.reason,
        }
    }

    /// Forgets every endpoint not in `live` (UIDs).
    pub fn retain(&self, live: &BTreeMap<String, ()>) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(uid, _), _| live.contains_key(uid));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use serde_json::json;

    fn version(min: u32, max: u32) -> ModelVersion {
        serde_json::from_value(json!({
            "name": "v1", "model": {"digest": "sha256:aa"}, "replicas": {"min": min, "max": max},
        }))
        .unwrap()
    }

    fn stats(in_flight: usize, ready: usize) -> EndpointStats {
        serde_json::from_value(json!({
            "endpoint": "e", "windowSeconds": 60,
            "versions": {"v1": {"weight": 100, "replicas": ready, "readyReplicas": ready,
                                "requests": 0, "errors": 0, "mirrored": 0, "inFlight": in_flight,
                                "latencyMs": {"p50": null, "p90": null, "p99": null}}},
        }))
        .unwrap()
    }

    #[test]
    fn fixed_sizes_and_cpu_are_not_the_concurrency_autoscalers() {
        assert_eq!(
            scaling(AutoscalingPolicy::Concurrency(100), &version(2, 2)),
            Scaling::Fixed(2)
        );
        assert_eq!(
            scaling(AutoscalingPolicy::Cpu(70), &version(1, 3)),
            Scaling::Cpu(70)
        );
        assert_eq!(
            scaling(AutoscalingPolicy::Concurrency(4), &version(1, 3)),
            Scaling::Concurrency(4)
        );
    }

    #[test]
    fn a_burst_scales_up_and_the_change_is_reported_once() {
        let scalers = Autoscalers::default();
        let v = version(1, 3);
        let one = Target {
            concurrency: 1,
            window: toucan_core::serving::autoscale::STABLE_WINDOW_MS,
        };
        let first = scalers.decide("u", &v, one, Some(&stats(0, 1)), 1, 1_000);
        assert_eq!((first.desired, first.changed_from), (1, None));
        let burst = scalers.decide("u", &v, one, Some(&stats(6, 1)), 1, 3_000);
        assert_eq!(
            (burst.desired, burst.changed_from),
            (3, Some(1)),
            "{}",
            burst.reason
        );
        let again = scalers.decide("u", &v, one, Some(&stats(6, 3)), 3, 5_000);
        assert_eq!((again.desired, again.changed_from), (3, None));
        scalers.retain(&BTreeMap::new());
        assert!(scalers.memory.lock().unwrap().is_empty());
    }
}
