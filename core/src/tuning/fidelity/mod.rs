//! Multi-fidelity scheduling: trials run on a small budget of a resource (epochs) first, and
//! only the best continue, from their checkpoint, on a larger one.
//!
//! Budgets form rungs `min, min·eta, min·eta², ...` up to `max`. [`asha`] promotes a trial as
//! soon as it is in the best `1/eta` of its rung so far (asynchronous successive halving);
//! [`hyperband`] runs brackets of successive halving of different aggressiveness, each rung
//! of a bracket promoted once all its trials are done. Both return [`Promotion`]s: the trial
//! keeps its name and parameters and resumes from its checkpoint with the larger budget.

pub(crate) mod asha;
pub(crate) mod hyperband;

use super::decide::Promotion;
use super::ledger::{Trial, TrialState};
use super::spec::Goal;
use super::study::Fidelity;

/// The rung budgets from `min` by factors of `eta`, the last one `max`.
pub(crate) fn rungs(min: u64, max: u64, eta: u32) -> Vec<u64> {
    let mut budgets = vec![min];
    let mut b = min;
    while let Some(next) = b.checked_mul(u64::from(eta)) {
        if next >= max {
            break;
        }
        budgets.push(next);
        b = next;
    }
    if budgets.last() != Some(&max) {
        budgets.push(max);
    }
    budgets
}

/// The trials that completed budget `budget`, best first (the earlier trial among equals).
fn ranked_at<'a>(
    trials: impl Iterator<Item = &'a Trial>,
    budget: u64,
    goal: Goal,
) -> Vec<&'a Trial> {
    let mut results: Vec<(f64, &Trial)> = trials
        .filter_map(|t| t.rung(budget).map(|o| (goal.loss(o), t)))
        .collect();
    results.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.index.cmp(&b.1.index)));
    results.into_iter().map(|(_, t)| t).collect()
}

/// Whether the trial waits at `budget`, done, for a promotion.
fn waits_at(trial: &Trial, budget: u64) -> bool {
    trial.state == TrialState::Succeeded && trial.budget == Some(budget)
}

fn promotion(trial: &Trial, from_budget: u64, budget: u64) -> Promotion {
    Promotion {
        index: trial.index,
        name: trial.name.clone(),
        from_budget,
        budget,
    }
}

/// The budget and bracket a new trial starts with.
pub(crate) fn first_budget(f: &Fidelity, hyperband: bool, index: u32) -> (u64, Option<u32>) {
    if hyperband {
        let plan = hyperband::Plan::new(f);
        let (bracket, s) = plan.bracket_of(index);
        (plan.rungs_of(s)[0], Some(bracket))
    } else {
        (f.min, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_grow_by_eta_and_end_at_max() {
        assert_eq!(rungs(1, 27, 3), vec![1, 3, 9, 27]);
        assert_eq!(rungs(1, 20, 3), vec![1, 3, 9, 20]);
        assert_eq!(rungs(2, 8, 2), vec![2, 4, 8]);
        assert_eq!(rungs(5, 6, 3), vec![5, 6]);
    }
}
