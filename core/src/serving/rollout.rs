//! A guarded rollout, pure: whether the candidate's weight moves to the next step, stays,
//! is rolled back or paused, given what its requests looked like during the current step.
//!
//! The shells call [`decide`] on every pass with the state they kept from the last one
//! (`status.rollout`, read back with [`RolloutState::from_status`]) and the candidate's
//! requests since the current step began ([`RolloutState::since`]); they write the returned
//! state, apply the returned split and wake at `wake_at`. The rules, in order:
//!
//! 1. No `spec.rollout`: no state, the declared split. A candidate that names no version
//!    (which the manifest checks refuse) moves nothing.
//! 2. No state, another candidate, or the candidate now serving another model: a new rollout
//!    at the first step.
//! 3. `Promoted`, `RolledBack` and `Paused` hold: only a new candidate (or model) moves them.
//! 4. With at least `minRequests` candidate requests in the step, the first gate that fails
//!    decides at once, before the interval is over: `Rollback` gives the candidate's weight
//!    back to the others, `Pause` keeps it.
//! 5. Otherwise the step is held until its interval has elapsed and there is enough
//!    evidence: too few requests, or a latency the window does not know yet, waits rather
//!    than promoting on no evidence.
//! 6. Then the candidate moves to the next step; reaching 100 is `Promoted`.
//!
//! The state only changes on a transition (its `since` and `reason` included), so a shell
//! that writes it on every pass writes nothing new while a step is held.

use super::spec::GateThreshold;
use super::traffic::{declared_traffic, effective_traffic};
use crate::api::{
    EndpointSpec, EvaluationGate, EvaluationMetric, GateMetric, GateSpec, OnFailure, RolloutPhase,
    RolloutSpec, RolloutStatus,
};
use crate::monitoring::evaluation::Estimate;
use crate::records::Millis;
use crate::time::{parse_rfc3339, rfc3339};

/// How soon to look again at a step whose interval is over but whose evidence is not yet
/// enough (too few requests, no latency yet).
pub const EVIDENCE_RECHECK_MS: Millis = 15_000;

/// Where a rollout stands, carried from one decision to the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutState {
    /// The version being rolled out.
    pub candidate: String,
    /// The candidate's model when the rollout started (`run/step/artifact` or a digest): a
    /// new model is a new rollout.
    pub model: String,
    /// The index of the current step in the rollout's steps.
    pub step: u32,
    /// The candidate's weight in force: the step's while progressing or paused, 100 once
    /// promoted, 0 once rolled back.
    pub weight: u32,
    pub phase: RolloutPhase,
    /// When the current step (or the current phase) began.
    pub since: Millis,
    /// Why the last transition happened.
    pub reason: Option<String>,
}

/// What happened at this decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RolloutTransition {
    /// A new rollout began at its first step.
    Started,
    /// The candidate moved to the next step.
    Advanced,
    /// The candidate took every request.
    Promoted,
    /// A gate failed and the candidate lost its traffic.
    RolledBack,
    /// A gate failed and the rollout stopped where it was.
    Paused,
    /// `spec.rollout` was removed: the state is dropped.
    Ended,
}

impl RolloutTransition {
    /// A short stable reason for events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutTransition::Started => "RolloutStarted",
            RolloutTransition::Advanced => "RolloutAdvanced",
            RolloutTransition::Promoted => "RolloutPromoted",
            RolloutTransition::RolledBack => "RolloutRolledBack",
            RolloutTransition::Paused => "RolloutPaused",
            RolloutTransition::Ended => "RolloutEnded",
        }
    }
}

/// What one version's requests looked like over the current step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionObservation {
    pub version: String,
    /// Requests answered (or failed) in the window.
    pub requests: u64,
    /// Of which failed: a 5xx, a timeout, a connection error.
    pub errors: u64,
    /// Latency percentiles over the window, in milliseconds, where known.
    pub latency_ms: LatencyPercentiles,
    /// The version's labelled samples since the step began, scored, where the shell
    /// evaluates them (for `evaluationGates`).
    pub quality: Option<QualityObservation>,
}

/// Puts each version's live evaluation on its observation (a version the router has not
/// counted yet gets one with no requests).
pub fn with_quality(
    observed: &mut Vec<VersionObservation>,
    quality: &std::collections::BTreeMap<String, QualityObservation>,
) {
    for (version, q) in quality {
        match observed.iter_mut().find(|o| &o.version == version) {
            Some(o) => o.quality = Some(q.clone()),
            None => observed.push(VersionObservation {
                version: version.clone(),
                quality: Some(q.clone()),
                ..VersionObservation::default()
            }),
        }
    }
}

/// A version's live evaluation over the current step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QualityObservation {
    /// Labelled (matured) samples the figures are computed over.
    pub labelled: u64,
    /// Each metric the samples give, with its confidence interval.
    pub metrics: Vec<(EvaluationMetric, Estimate)>,
}

impl QualityObservation {
    fn metric(&self, metric: EvaluationMetric) -> Option<Estimate> {
        self.metrics
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, e)| *e)
    }
}

/// Latency percentiles in milliseconds; `None` where the window has no estimate.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LatencyPercentiles {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutDecision {
    /// The state to keep; `None` when the spec has no rollout.
    pub state: Option<RolloutState>,
    /// The split to apply, every version's weight, summing to 100.
    pub traffic: Vec<(String, u32)>,
    /// What changed, if anything: shells emit an event only then.
    pub transition: Option<RolloutTransition>,
    /// Why, in words: the transition's reason, or what the step waits for.
    pub reason: String,
    /// When to decide again at the latest; `None` when nothing will change by itself.
    pub wake_at: Option<Millis>,
}

/// The next decision over `spec`'s rollout, from the `state` kept since the last one and the
/// requests `observed` since the current step began (`state.since`), at `now`.
pub fn decide(
    spec: &EndpointSpec,
    state: Option<&RolloutState>,
    observed: &[VersionObservation],
    now: Millis,
) -> RolloutDecision {
    let Some(rollout) = &spec.rollout else {
        return RolloutDecision {
            state: None,
            traffic: declared_traffic(spec),
            transition: state.map(|_| RolloutTransition::Ended),
            reason: "no rollout".to_string(),
            wake_at: None,
        };
    };
    if spec.version(&rollout.candidate).is_none() {
        // The manifest checks refuse this; nothing moves until the spec names a version.
        return RolloutDecision {
            state: state.cloned(),
            traffic: declared_traffic(spec),
            transition: None,
            reason: format!("candidate {:?} is not a version", rollout.candidate),
            wake_at: None,
        };
    }
    let model = spec
        .version(&rollout.candidate)
        .and_then(|v| v.model.source().ok())
        .map(|m| m.to_string())
        .unwrap_or_default();
    let steps = rollout.steps();
    let current = state.filter(|s| s.candidate == rollout.candidate && s.model == model);
    let Some(current) = current else {
        let first = steps.first().copied().unwrap_or(100).min(100);
        let (phase, reason) = if first == 100 {
            (
                RolloutPhase::Promoted,
                format!(
                    "{} takes every request at once (its only step is 100)",
                    rollout.candidate
                ),
            )
        } else {
            (
                RolloutPhase::Progressing,
                format!("{} starts at {first}%", rollout.candidate),
            )
        };
        let next = RolloutState {
            candidate: rollout.candidate.clone(),
            model,
            step: 0,
            weight: first,
            phase,
            since: now,
            reason: Some(reason.clone()),
        };
        return transition(spec, next, RolloutTransition::Started, reason, rollout);
    };
    if current.phase != RolloutPhase::Progressing {
        return RolloutDecision {
            traffic: effective_traffic(spec, Some(current)),
            state: Some(current.clone()),
            transition: None,
            reason: current
                .reason
                .clone()
                .unwrap_or_else(|| current.phase.as_str().to_string()),
            wake_at: None,
        };
    }
    let candidate = observed
        .iter()
        .find(|o| o.version == current.candidate)
        .cloned()
        .unwrap_or_default();
    let incumbent = incumbent(spec, &current.candidate)
        .and_then(|name| observed.iter().find(|o| o.version == name));
    let verdict = judge(&rollout.gates, &candidate, rollout.min_requests()).and(judge_quality(
        &rollout.evaluation_gates,
        &candidate,
        incumbent,
        rollout.min_labels(),
    ));
    if let Verdict::Fail(why) = verdict {
        let mut next = current.clone();
        next.since = now;
        let kind = match rollout.on_failure() {
            OnFailure::Rollback => {
                next.phase = RolloutPhase::RolledBack;
                next.weight = 0;
                RolloutTransition::RolledBack
            }
            OnFailure::Pause => {
                next.phase = RolloutPhase::Paused;
                RolloutTransition::Paused
            }
        };
        let reason = format!("{why} at {}%", current.weight);
        next.reason = Some(reason.clone());
        return transition(spec, next, kind, reason, rollout);
    }
    let step_ends = current.since.saturating_add(interval_ms(rollout));
    let hold = |reason: String, wake_at: Millis| RolloutDecision {
        state: Some(current.clone()),
        traffic: effective_traffic(spec, Some(current)),
        transition: None,
        reason,
        wake_at: Some(wake_at),
    };
    if now < step_ends {
        let reason = match verdict {
            Verdict::Wait(why) => why,
            _ => "gates hold".to_string(),
        };
        return hold(
            format!(
                "{reason}; step {}% holds until its interval is over",
                current.weight
            ),
            step_ends,
        );
    }
    if let Verdict::Wait(why) = verdict {
        return hold(why, now.saturating_add(EVIDENCE_RECHECK_MS));
    }
    let (index, weight) = steps
        .iter()
        .copied()
        .enumerate()
        .find(|(_, w)| *w > current.weight)
        .unwrap_or((steps.len().saturating_sub(1), 100));
    let weight = weight.min(100);
    let mut next = current.clone();
    next.step = u32::try_from(index).unwrap_or(u32::MAX);
    next.weight = weight;
    next.since = now;
    let (kind, reason) = if weight == 100 {
        next.phase = RolloutPhase::Promoted;
        (
            RolloutTransition::Promoted,
            format!(
                "every gate held at {}%: {} takes every request",
                current.weight, current.candidate
            ),
        )
    } else {
        (
            RolloutTransition::Advanced,
            format!("every gate held at {}%: now {weight}%", current.weight),
        )
    };
    next.reason = Some(reason.clone());
    transition(spec, next, kind, reason, rollout)
}

fn transition(
    spec: &EndpointSpec,
    next: RolloutState,
    kind: RolloutTransition,
    reason: String,
    rollout: &RolloutSpec,
) -> RolloutDecision {
    let wake_at = (next.phase == RolloutPhase::Progressing)
        .then(|| next.since.saturating_add(interval_ms(rollout)));
    RolloutDecision {
        traffic: effective_traffic(spec, Some(&next)),
        state: Some(next),
        transition: Some(kind),
        reason,
        wake_at,
    }
}

fn interval_ms(rollout: &RolloutSpec) -> Millis {
    Millis::try_from(rollout.interval.as_millis()).unwrap_or(Millis::MAX)
}

/// What the gates say of the candidate's requests so far.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    /// Every gate holds, on enough requests.
    Pass,
    /// Not enough evidence yet.
    Wait(String),
    /// The first gate that failed, in words.
    Fail(String),
}

impl Verdict {
    /// Both verdicts together: a failure of either fails, then a wait of either waits.
    fn and(self, other: Verdict) -> Verdict {
        match (self, other) {
            (Verdict::Fail(why), _) | (_, Verdict::Fail(why)) => Verdict::Fail(why),
            (Verdict::Wait(why), _) | (_, Verdict::Wait(why)) => Verdict::Wait(why),
            (Verdict::Pass, Verdict::Pass) => Verdict::Pass,
        }
    }
}

/// The version the candidate is measured against: the other version with the largest
/// declared weight (the first listed among equals).
fn incumbent<'a>(spec: &'a EndpointSpec, candidate: &str) -> Option<&'a str> {
    let declared = declared_traffic(spec);
    let mut best: Option<(&'a str, u32)> = None;
    for v in spec.versions.iter().filter(|v| v.name != candidate) {
        let weight = declared
            .iter()
            .find(|(name, _)| *name == v.name)
            .map_or(0, |(_, w)| *w);
        if best.is_none_or(|(_, w)| weight > w) {
            best = Some((v.name.as_str(), weight));
        }
    }
    best.map(|(name, _)| name)
}

/// What the evaluation gates say: each compares the candidate's interval with the
/// incumbent's figure moved by `minDelta`, once both sides have `min_labels` labels.
fn judge_quality(
    gates: &[EvaluationGate],
    candidate: &VersionObservation,
    incumbent: Option<&VersionObservation>,
    min_labels: u64,
) -> Verdict {
    if gates.is_empty() {
        return Verdict::Pass;
    }
    let min_labels = min_labels.max(1);
    let labelled = |o: Option<&VersionObservation>| {
        o.and_then(|o| o.quality.as_ref()).map_or(0, |q| q.labelled)
    };
    let (mine, theirs) = (labelled(Some(candidate)), labelled(incumbent));
    if mine < min_labels || theirs < min_labels {
        return Verdict::Wait(format!(
            "waiting for labels: the candidate has {mine} and the incumbent {theirs} of the \
             {min_labels} each the evaluation gates need"
        ));
    }
    let (Some(mine), Some(theirs)) = (
        candidate.quality.as_ref(),
        incumbent.and_then(|o| o.quality.as_ref()),
    ) else {
        return Verdict::Wait("waiting for an evaluation".to_string());
    };
    for gate in gates {
        let name = gate.metric.as_str();
        let (Some(c), Some(i)) = (mine.metric(gate.metric), theirs.metric(gate.metric)) else {
            return Verdict::Wait(format!("waiting for a {name} estimate"));
        };
        let higher = gate.metric.higher_is_better();
        let bar = if higher {
            i.value + gate.min_delta
        } else {
            i.value - gate.min_delta
        };
        let worse = if higher { c.upper < bar } else { c.lower > bar };
        if worse {
            return Verdict::Fail(format!(
                "evaluation gate {name} failed: the candidate's {:.4} [{:.4}, {:.4}] over {} \
                 labels is worse than the incumbent's {:.4} (over {} labels) {} {}",
                c.value,
                c.lower,
                c.upper,
                mine.labelled,
                i.value,
                theirs.labelled,
                if gate.min_delta >= 0.0 {
                    "plus"
                } else {
                    "minus"
                },
                gate.min_delta.abs()
            ));
        }
    }
    Verdict::Pass
}

fn judge(gates: &[GateSpec], observed: &VersionObservation, min_requests: u64) -> Verdict {
    // Never judged on no requests at all, whatever the spec says.
    let min_requests = min_requests.max(1);
    if observed.requests < min_requests {
        return Verdict::Wait(format!(
            "waiting for traffic: {} of the {min_requests} requests gates need",
            observed.requests
        ));
    }
    let mut unknown = None;
    for gate in gates {
        let metric = gate.metric.as_str();
        // The manifest checks refuse a threshold that does not read; a gate that still does
        // not never passes.
        let threshold = match gate.threshold() {
            Ok(t) => t,
            Err(e) => return Verdict::Fail(format!("gate {metric}: {e}")),
        };
        let (value, max) = match threshold {
            GateThreshold::ErrorRate(max) => {
                (Some(observed.errors as f64 / observed.requests as f64), max)
            }
            GateThreshold::LatencyMs(max) => {
                let latency = &observed.latency_ms;
                let value = match gate.metric {
                    GateMetric::LatencyP50 => latency.p50,
                    GateMetric::LatencyP90 => latency.p90,
                    _ => latency.p99,
                };
                (value, max)
            }
        };
        match value {
            Some(value) if value > max => {
                let shown = |v: f64| match threshold {
                    GateThreshold::ErrorRate(_) => format!("{v:.4}"),
                    GateThreshold::LatencyMs(_) => format!("{v:.1}ms"),
                };
                return Verdict::Fail(format!(
                    "gate {metric} failed: {} > {} over {} requests",
                    shown(value),
                    shown(max),
                    observed.requests
                ));
            }
            Some(_) => {}
            None => {
                unknown.get_or_insert_with(|| format!("waiting for a {metric} estimate"));
            }
        }
    }
    match unknown {
        Some(why) => Verdict::Wait(why),
        None => Verdict::Pass,
    }
}

// === impl RolloutState ===

impl RolloutState {
    /// The state as `status.rollout` shows it.
    pub fn to_status(&self) -> RolloutStatus {
        RolloutStatus {
            candidate: self.candidate.clone(),
            model: (!self.model.is_empty()).then(|| self.model.clone()),
            step: self.step,
            weight: self.weight,
            phase: self.phase,
            reason: self.reason.as_deref().map(|r| {
                r.chars()
                    .take(crate::api::MAX_ENDPOINT_MESSAGE_CHARS)
                    .collect()
            }),
            since: rfc3339(self.since).ok(),
        }
    }

    /// The state a status holds. A `since` that is missing or unreadable counts as `now`:
    /// the current step's interval starts over, and no step is skipped.
    pub fn from_status(status: &RolloutStatus, now: Millis) -> RolloutState {
        RolloutState {
            candidate: status.candidate.clone(),
            model: status.model.clone().unwrap_or_default(),
            step: status.step,
            weight: status.weight,
            phase: status.phase,
            since: status
                .since
                .as_deref()
                .and_then(|s| parse_rfc3339(s).ok())
                .unwrap_or(now),
            reason: status.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
