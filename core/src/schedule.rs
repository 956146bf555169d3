//! When a Pipeline's `schedule` starts runs: a pure decision the operator executes.
//!
//! Given the cron expression, the concurrency policy, when the schedule last fired and how
//! many of its runs are still active, [`decide`] says whether to start a run now (and for
//! which scheduled time, which names it deterministically), skip this firing, or replace the
//! active runs, and when to look again. Missed firings (the operator was down) are collapsed
//! into the latest one, as a CronJob does.
//!
//! Times are [`Millis`]; croner works in chrono's `DateTime`, so [`next_after`] converts at
//! its call and nothing else here, or outside, sees chrono (see [`crate::time`] for why).

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};

use crate::api::ConcurrencyPolicy;
use crate::time::Millis;

/// What to do about a schedule now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleDecision {
    /// Nothing is due before `until`.
    Wait { until: Millis },
    /// Start a run for the firing at `scheduled`; `replace` first deletes the active runs.
    Start {
        scheduled: Millis,
        replace: bool,
        next: Option<Millis>,
    },
    /// A firing at `scheduled` is skipped because a run is active (`Forbid`).
    Skip {
        scheduled: Millis,
        next: Option<Millis>,
    },
    /// The expression has no future firing (or cannot be read: validation prevents that).
    Never,
}

/// The first firing strictly after `after`.
pub fn next_after(schedule: &str, after: Millis) -> Option<Millis> {
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(schedule)
        .ok()?;
    let start: DateTime<Utc> = Utc.timestamp_millis_opt(after).single()?;
    cron.find_next_occurrence(&start, false)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The decision at `now`. `last` is when the schedule last fired (or when the Pipeline was
/// created, before its first firing); `active` counts its runs that have not finished.
pub fn decide(
    schedule: &str,
    policy: ConcurrencyPolicy,
    last: Millis,
    now: Millis,
    active: usize,
) -> ScheduleDecision {
    let Some(mut due) = next_after(schedule, last) else {
        return ScheduleDecision::Never;
    };
    if due > now {
        return ScheduleDecision::Wait { until: due };
    }
    // Collapse missed firings into the latest one that is due.
    while let Some(later) = next_after(schedule, due).filter(|t| *t <= now) {
        due = later;
    }
    let next = next_after(schedule, due);
    match (policy, active) {
        (_, 0) | (ConcurrencyPolicy::Allow, _) => ScheduleDecision::Start {
            scheduled: due,
            replace: false,
            next,
        },
        (ConcurrencyPolicy::Forbid, _) => ScheduleDecision::Skip {
            scheduled: due,
            next,
        },
        (ConcurrencyPolicy::Replace, _) => ScheduleDecision::Start {
            scheduled: due,
            replace: true,
            next,
        },
    }
}

/// The name of the run started for the firing at `scheduled`: the same firing always gets
/// the same name, so a repeated reconcile cannot start it twice.
pub fn run_name(pipeline: &str, scheduled: Millis) -> String {
    let minutes = scheduled / 60_000;
    let suffix = format!("-{minutes}");
    let keep = pipeline.len().min(63 - suffix.len());
    format!("{}{suffix}", &pipeline[..keep].trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    const MIN: Millis = 60_000;

    #[test]
    fn waits_until_the_next_firing() {
        let created = 10 * MIN + 30_000;
        assert_eq!(
            decide(
                "*/5 * * * *",
                ConcurrencyPolicy::Allow,
                created,
                created + 1000,
                0
            ),
            ScheduleDecision::Wait { until: 15 * MIN }
        );
    }

    #[test]
    fn missed_firings_collapse_into_the_latest() {
        let d = decide("*/5 * * * *", ConcurrencyPolicy::Allow, 0, 23 * MIN, 0);
        assert_eq!(
            d,
            ScheduleDecision::Start {
                scheduled: 20 * MIN,
                replace: false,
                next: Some(25 * MIN)
            }
        );
    }

    #[test]
    fn concurrency_policies() {
        let at = 5 * MIN;
        for (policy, expected) in [
            (
                ConcurrencyPolicy::Allow,
                ScheduleDecision::Start {
                    scheduled: at,
                    replace: false,
                    next: Some(10 * MIN),
                },
            ),
            (
                ConcurrencyPolicy::Forbid,
                ScheduleDecision::Skip {
                    scheduled: at,
                    next: Some(10 * MIN),
                },
            ),
            (
                ConcurrencyPolicy::Replace,
                ScheduleDecision::Start {
                    scheduled: at,
                    replace: true,
                    next: Some(10 * MIN),
                },
            ),
        ] {
            assert_eq!(
                decide("*/5 * * * *", policy, 0, at, 1),
                expected,
                "{policy:?}"
            );
        }
        // With nothing active, Forbid starts.
        assert!(matches!(
            decide("*/5 * * * *", ConcurrencyPolicy::Forbid, 0, at, 0),
            ScheduleDecision::Start { .. }
        ));
    }

    #[test]
    fn a_firing_is_named_once() {
        assert_eq!(run_name("nightly", 5 * MIN), "nightly-5");
        assert_eq!(run_name("nightly", 5 * MIN + 59_000), "nightly-5");
        assert!(run_name(&"p".repeat(70), 5 * MIN).len() <= 63);
    }
}
