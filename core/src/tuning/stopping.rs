//! Median stopping: a running trial that has reached step `k` (at least `graceSteps`) is
//! stopped when its best objective so far is worse than the median of the completed trials'
//! best objectives up to the same step, once at least `minTrials` completed trials reported
//! a value by then.
//!
//! The median is computed from the ledger at every decision, so it moves as trials complete
//! (Katib computes it once and keeps it).

use super::decide::{StopReason, TrialStop};
use super::ledger::{MetricPoint, TrialLedger, TrialState};
use super::spec::Goal;
use super::study::MedianStopping;

/// The best loss among the points up to `step`.
fn best_until(series: &[MetricPoint], step: u64, goal: Goal) -> Option<f64> {
    series
        .iter()
        .take_while(|p| p.step <= step)
        .map(|p| goal.loss(p.value))
        .min_by(f64::total_cmp)
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}

/// The running trials median stopping ends now.
pub(crate) fn median_stops(
    rule: MedianStopping,
    goal: Goal,
    ledger: &TrialLedger,
) -> Vec<TrialStop> {
    let mut stops = Vec::new();
    for trial in ledger
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Running)
    {
        let Some(last) = trial.series.last() else {
            continue;
        };
        let step = last.step;
        if step < rule.grace_steps {
            continue;
        }
        let Some(own) = best_until(&trial.series, step, goal) else {
            continue;
        };
        let mut others: Vec<f64> = ledger
            .trials
            .iter()
            .filter(|t| t.index != trial.index && t.state == TrialState::Succeeded)
            .filter_map(|t| best_until(&t.series, step, goal))
            .collect();
        if others.len() < rule.min_trials as usize {
            continue;
        }
        others.sort_by(f64::total_cmp);
        let m = median(&others);
        if own > m {
            stops.push(TrialStop {
                index: trial.index,
                name: trial.name.clone(),
                reason: StopReason::Median {
                    step,
                    best: goal.loss(own),
                    median: goal.loss(m),
                },
            });
        }
    }
    stops
}
