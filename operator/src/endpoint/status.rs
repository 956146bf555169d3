//! An Endpoint's status, built without a client from what one reconcile decided and saw.
//!
//! Bounded: one entry per version, the split in force, the rollout's step and two
//! conditions. Nothing in it changes unless what it describes does (no timestamps of the
//! pass, no request counts), so writing it only when it differs writes nothing while an
//! endpoint is steady.

use std::collections::BTreeMap;

use toucan_core::api::{
    EndpointSpec, EndpointStatus, MAX_ENDPOINT_MESSAGE_CHARS, RolloutPhase, VersionStatus,
};
use toucan_core::serving::rollout::RolloutState;
use toucan_core::serving::traffic::{traffic_summary, traffic_targets};

use super::observe::EndpointPods;
use crate::conditions;

pub const READY: &str = "Ready";
pub const ROLLOUT_PROGRESSING: &str = "RolloutProgressing";

/// Why an endpoint is not serving as specified, when it is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocked {
    /// The spec cannot be served as written; nothing runs.
    Invalid(String),
    /// A model cannot be resolved yet.
    Waiting(String),
}

/// What one reconcile decided and saw.
#[derive(Clone, Debug)]
pub struct Seen<'a> {
    pub spec: &'a EndpointSpec,
    pub generation: Option<i64>,
    /// The split in force.
    pub traffic: &'a [(String, u32)],
    pub rollout: Option<&'a RolloutState>,
    /// Each version's replica count asked for.
    pub desired: &'a BTreeMap<String, u32>,
    pub digests: &'a BTreeMap<String, String>,
    pub pods: &'a EndpointPods,
    /// `http://NAME.NS.svc`.
    pub url: String,
}

/// The status of an endpoint whose spec cannot be served, or whose models are not known yet.
pub fn blocked_status(
    previous: &EndpointStatus,
    blocked: &Blocked,
    generation: Option<i64>,
) -> EndpointStatus {
    let mut status = previous.clone();
    let (phase, reason, message) = match blocked {
        Blocked::Invalid(m) => ("Failed", "InvalidSpec", m),
        Blocked::Waiting(m) => ("Pending", "WaitingForModel", m),
    };
    status.phase = Some(phase.into());
    status.message = Some(bounded(message));
    status.observed_generation = generation;
    conditions::set(
        &mut status.conditions,
        READY,
        "False",
        reason,
        message,
        generation,
    );
    status
}

/// The status of an endpoint that is being served.
pub fn endpoint_status(previous: &EndpointStatus, seen: &Seen<'_>) -> EndpointStatus {
    let versions: Vec<VersionStatus> = seen
        .spec
        .versions
        .iter()
        .map(|v| {
            let pods = seen.pods.versions.get(&v.name);
            VersionStatus {
                name: v.name.clone(),
                ready_replicas: pods.map_or(0, |p| p.ready.len() as u32),
                replicas: pods.map_or(0, |p| p.running),
                desired_replicas: seen.desired.get(&v.name).copied().unwrap_or(0),
                model_digest: seen.digests.get(&v.name).cloned(),
            }
        })
        .collect();
    let ready: u32 = versions.iter().map(|v| v.ready_replicas).sum();
    let desired: u32 = versions.iter().map(|v| v.desired_replicas).sum();
    // Every version that takes requests needs a ready replica, and the router must be up.
    let unserved: Vec<&str> = seen
        .traffic
        .iter()
        .filter(|(_, weight)| *weight > 0)
        .filter(|(name, _)| {
            versions
                .iter()
                .find(|v| &v.name == name)
                .is_none_or(|v| v.ready_replicas == 0)
        })
        .map(|(name, _)| name.as_str())
        .collect();
    let mut status = previous.clone();
    let generation = seen.generation;
    let (ready_value, reason, message) = match (&seen.pods.router, unserved.is_empty()) {
        (Some(router), true) => (
            "True",
            "Serving",
            format!("serving at {} (router pod {router})", seen.url),
        ),
        (_, false) => (
            "False",
            "ReplicasNotReady",
            format!("no ready replica of {}", unserved.join(", ")),
        ),
        (None, true) => ("False", "RouterNotReady", "the router is not ready".into()),
    };
    conditions::set(
        &mut status.conditions,
        READY,
        ready_value,
        reason,
        &message,
        generation,
    );
    match seen.rollout {
        Some(rollout) => {
            let (value, reason) = match rollout.phase {
                RolloutPhase::Progressing => ("True", "Progressing"),
                phase => ("False", phase.as_str()),
            };
            let message = rollout.reason.clone().unwrap_or_default();
            conditions::set(
                &mut status.conditions,
                ROLLOUT_PROGRESSING,
                value,
                reason,
                &message,
                generation,
            );
        }
        None => status.conditions.retain(|c| c.type_ != ROLLOUT_PROGRESSING),
    }
    status.phase = Some(
        match seen.rollout.map(|r| r.phase) {
            Some(RolloutPhase::Progressing) => "Progressing",
            Some(RolloutPhase::RolledBack) => "RolledBack",
            _ if ready_value == "True" => "Ready",
            _ => "Pending",
        }
        .into(),
    );
    status.ready = Some(format!("{ready}/{desired}"));
    status.traffic = traffic_targets(seen.traffic);
    status.traffic_summary = Some(traffic_summary(seen.traffic));
    status.versions = versions;
    status.rollout = seen.rollout.map(RolloutState::to_status);
    status.url = Some(seen.url.clone());
    status.message = None;
    status.observed_generation = generation;
    status
}

fn bounded(text: &str) -> String {
    text.chars().take(MAX_ENDPOINT_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::endpoint::observe::VersionPods;
    use serde_json::json;

    fn spec() -> EndpointSpec {
        serde_json::from_value(json!({
            "versions": [
                {"name": "v1", "model": {"digest": "sha256:aa"}},
                {"name": "v2", "model": {"digest": "sha256:bb"}},
            ],
            "traffic": [{"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}],
        }))
        .unwrap()
    }

    fn pods(v1_ready: usize, v2_ready: usize, router: bool) -> EndpointPods {
        let version = |n: usize| VersionPods {
            running: 1,
            ready: (0..n).map(|i| format!("http://10.0.0.{i}:8080")).collect(),
        };
        EndpointPods {
            versions: BTreeMap::from([
                ("v1".into(), version(v1_ready)),
                ("v2".into(), version(v2_ready)),
            ]),
            router: router.then(|| "10.0.1.1:8080".into()),
        }
    }

    fn status_of(previous: &EndpointStatus, pods: &EndpointPods) -> EndpointStatus {
        let spec = spec();
        let traffic = vec![("v1".to_string(), 90), ("v2".to_string(), 10)];
        let desired = BTreeMap::from([("v1".to_string(), 1), ("v2".to_string(), 1)]);
        let digests = BTreeMap::from([("v1".to_string(), "sha256:aa".to_string())]);
        endpoint_status(
            previous,
            &Seen {
                spec: &spec,
                generation: Some(2),
                traffic: &traffic,
                rollout: None,
                desired: &desired,
                digests: &digests,
                pods,
                url: "http://fashion.models.svc".into(),
            },
        )
    }

    #[test]
    fn ready_once_every_version_with_traffic_and_the_router_are() {
        let waiting = status_of(&EndpointStatus::default(), &pods(1, 0, true));
        assert_eq!(waiting.phase.as_deref(), Some("Pending"));
        assert_eq!(waiting.ready.as_deref(), Some("1/2"));
        assert_eq!(waiting.conditions[0].reason, "ReplicasNotReady");
        assert_eq!(waiting.conditions[0].message, "no ready replica of v2");
        assert_eq!(waiting.traffic_summary.as_deref(), Some("v1=90,v2=10"));
        assert_eq!(
            waiting.versions[0].model_digest.as_deref(),
            Some("sha256:aa")
        );

        let ready = status_of(&waiting, &pods(1, 1, true));
        assert_eq!(ready.phase.as_deref(), Some("Ready"));
        assert_eq!(ready.conditions[0].status, "True");
        assert!(
            ready.conditions[0]
                .message
                .contains("http://fashion.models.svc")
        );

        // Nothing changed, nothing to write: the condition keeps its transition time.
        assert_eq!(status_of(&ready, &pods(1, 1, true)), ready);
        let no_router = status_of(&ready, &pods(1, 1, false));
        assert_eq!(no_router.conditions[0].reason, "RouterNotReady");
    }

    #[test]
    fn a_blocked_endpoint_says_why() {
        let s = blocked_status(
            &EndpointStatus::default(),
            &Blocked::Invalid("spec.traffic: the weights sum to 90".into()),
            Some(1),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert_eq!(
            s.message.as_deref(),
            Some("spec.traffic: the weights sum to 90")
        );
    }
}
