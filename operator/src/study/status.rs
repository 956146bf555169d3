//! A study's status, pure: from the ledger and how the study stands to the bounded summary
//! the resource shows (counts, the best trial, the latest few, phase and conditions).

use toucan_core::api::TuningStudyStatus;
use toucan_core::records::Phase;
use toucan_core::tuning::{Goal, StudyEnd, TrialLedger};

/// The longest `status.message` (the CRD's `maxLength`).
const MAX_MESSAGE_CHARS: usize = 1024;

/// What the status shows besides the ledger.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timing {
    pub study_id: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub generation: Option<i64>,
}

/// The status of a valid study, keeping the conditions' transition times: running while
/// `end` is `None`.
pub fn study_status(
    previous: &TuningStudyStatus,
    ledger: &TrialLedger,
    (goal, metric): (Goal, &str),
    end: Option<&StudyEnd>,
    timing: &Timing,
) -> TuningStudyStatus {
    let mut status = TuningStudyStatus {
        conditions: previous.conditions.clone(),
        study_id: Some(timing.study_id.clone()),
        started_at: timing.started_at.clone(),
        finished_at: end.and(timing.finished_at.clone()),
        observed_generation: timing.generation,
        ..TuningStudyStatus::default()
    };
    status.record_ledger(ledger, goal);
    let phase = end.map_or(Phase::Running, StudyEnd::phase);
    // While it runs, no message: the counts say how far it is, and a status that changes
    // only when a trial changes state is written no more often than that.
    let message = end.map(|e| bounded(&e.message(ledger, metric)));
    let reason = end.map_or("TrialsRunning", |e| e.reason.as_str());
    status.phase = Some(phase.as_str().into());
    let generation = timing.generation;
    for (type_, on) in [
        ("Running", phase == Phase::Running),
        ("Succeeded", phase == Phase::Succeeded),
        ("Failed", phase == Phase::Failed),
    ] {
        let why = if on || type_ == "Running" {
            reason
        } else {
            phase.as_str()
        };
        let text = if on {
            message.as_deref().unwrap_or("")
        } else {
            ""
        };
        crate::conditions::set(
            &mut status.conditions,
            type_,
            if on { "True" } else { "False" },
            why,
            text,
            generation,
        );
    }
    status.message = message;
    status
}

/// The status of a study that cannot run as written (or cannot run yet: `waiting`).
pub fn blocked_status(
    previous: &TuningStudyStatus,
    why: &str,
    waiting: bool,
    generation: Option<i64>,
) -> TuningStudyStatus {
    let mut status = TuningStudyStatus {
        conditions: previous.conditions.clone(),
        phase: Some(if waiting { "Pending" } else { "Failed" }.into()),
        message: Some(bounded(why)),
        observed_generation: generation,
        ..previous.clone()
    };
    if waiting {
        crate::conditions::set(
            &mut status.conditions,
            "Running",
            "False",
            "Waiting",
            why,
            generation,
        );
    } else {
        status.trials = None;
        status.best = None;
        status.recent = Vec::new();
        crate::conditions::set(
            &mut status.conditions,
            "Failed",
            "True",
            INVALID,
            why,
            generation,
        );
    }
    status
}

/// The condition reason of a study that cannot run as written: it is looked at again when
/// its spec changes.
pub const INVALID: &str = "Invalid";

/// Whether nothing is left to do for the study at this generation: it ended, or it is
/// invalid as written.
pub fn is_settled(status: &TuningStudyStatus, generation: Option<i64>) -> bool {
    if !matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return false;
    }
    let invalid = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Failed" && c.status == "True" && c.reason == INVALID);
    !invalid || status.observed_generation == generation
}

fn bounded(text: &str) -> String {
    text.chars().take(MAX_MESSAGE_CHARS).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::collections::BTreeMap;

    use toucan_core::tuning::{EndReason, ParamValue, Trial, TrialState};

    use super::*;

    fn ledger(states: &[(TrialState, Option<f64>)]) -> TrialLedger {
        TrialLedger {
            trials: states
                .iter()
                .enumerate()
                .map(|(i, (state, objective))| Trial {
                    index: i as u32,
                    name: format!("{i}-t"),
                    params: BTreeMap::from([("x".to_string(), ParamValue::Float(i as f64))]),
                    state: *state,
                    budget: None,
                    bracket: None,
                    series: Vec::new(),
                    objective: *objective,
                    rungs: Vec::new(),
                })
                .collect(),
            warm_start: Vec::new(),
        }
    }

    fn condition<'a>(s: &'a TuningStudyStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    const GOAL: (Goal, &str) = (Goal::Minimize, "value");

    #[test]
    fn a_running_study_then_its_end_with_the_best_trial() {
        let timing = Timing {
            study_id: "uid".into(),
            started_at: Some("2030-01-01T00:00:00Z".into()),
            finished_at: Some("2030-01-01T01:00:00Z".into()),
            generation: Some(1),
        };
        let mut l = ledger(&[
            (TrialState::Succeeded, Some(0.5)),
            (TrialState::Running, None),
        ]);
        let running = study_status(&TuningStudyStatus::default(), &l, GOAL, None, &timing);
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.message, None);
        assert_eq!(running.finished_at, None);
        assert_eq!(condition(&running, "Running"), ("True", "TrialsRunning"));
        assert_eq!(running.trials.as_ref().unwrap().running, 1);
        // Nothing changed, nothing to write: the transition times stay.
        assert_eq!(study_status(&running, &l, GOAL, None, &timing), running);

        l.trials[1].state = TrialState::Succeeded;
        l.trials[1].objective = Some(0.25);
        let end = StudyEnd {
            reason: EndReason::MaxTrials,
            best: Some(1),
        };
        let done = study_status(&running, &l, GOAL, Some(&end), &timing);
        assert_eq!(done.phase.as_deref(), Some("Succeeded"));
        assert_eq!(condition(&done, "Succeeded"), ("True", "MaxTrials"));
        assert_eq!(condition(&done, "Running").0, "False");
        assert_eq!(condition(&done, "Failed").0, "False");
        assert_eq!(done.best.as_ref().unwrap().name, "1-t");
        assert!(
            done.message
                .as_deref()
                .unwrap()
                .contains("best trial 1-t with value = 0.25")
        );
        assert_eq!(done.finished_at, timing.finished_at);
        assert!(is_settled(&done, Some(1)) && is_settled(&done, Some(2)));
    }

    #[test]
    fn a_study_without_a_succeeded_trial_failed_whatever_ended_it() {
        let l = ledger(&[(TrialState::Failed, None), (TrialState::Stopped, None)]);
        for reason in [
            EndReason::MaxTrials,
            EndReason::Deadline,
            EndReason::TooManyFailures,
        ] {
            let end = StudyEnd { reason, best: None };
            let s = study_status(
                &TuningStudyStatus::default(),
                &l,
                GOAL,
                Some(&end),
                &Timing::default(),
            );
            assert_eq!(s.phase.as_deref(), Some("Failed"), "{reason:?}");
            assert_eq!(condition(&s, "Failed"), ("True", reason.as_str()));
            assert!(s.message.unwrap().contains("no trial succeeded"));
        }
        let l = ledger(&[
            (TrialState::Succeeded, Some(1.0)),
            (TrialState::Failed, None),
        ]);
        let end = StudyEnd {
            reason: EndReason::TooManyFailures,
            best: Some(0),
        };
        assert_eq!(end.phase(), Phase::Failed);
        let end = StudyEnd {
            reason: EndReason::Deadline,
            best: Some(0),
        };
        assert_eq!(end.phase(), Phase::Succeeded);
        assert!(
            end.message(&l, "value")
                .starts_with("the budget's deadline passed")
        );
    }

    #[test]
    fn an_invalid_study_is_looked_at_again_only_when_its_spec_changes() {
        let s = blocked_status(
            &TuningStudyStatus::default(),
            &"x".repeat(5000),
            false,
            Some(3),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(condition(&s, "Failed"), ("True", INVALID));
        assert!(s.message.as_ref().unwrap().chars().count() <= MAX_MESSAGE_CHARS);
        assert!(is_settled(&s, Some(3)));
        assert!(!is_settled(&s, Some(4)));
        let waiting = blocked_status(&TuningStudyStatus::default(), "waiting", true, Some(3));
        assert_eq!(waiting.phase.as_deref(), Some("Pending"));
        assert!(!is_settled(&waiting, Some(3)));
    }
}
