//! Asynchronous successive halving (ASHA): whenever a slot is free, promote the best trial
//! of the highest rung that has one to promote, where a trial may go on when it is in the
//! best `floor(n / eta)` of the `n` trials that completed its rung so far; when none can,
//! start a new trial on the lowest rung.

use std::collections::BTreeSet;

use super::super::decide::Promotion;
use super::super::ledger::TrialLedger;
use super::super::spec::Goal;
use super::super::study::Fidelity;
use super::{promotion, ranked_at, rungs, waits_at};

/// Up to `limit` promotions, the highest rungs first.
pub(crate) fn promotions(
    f: &Fidelity,
    goal: Goal,
    ledger: &TrialLedger,
    limit: usize,
) -> Vec<Promotion> {
    let budgets = rungs(f.min, f.max, f.eta);
    let mut chosen = BTreeSet::new();
    let mut out = Vec::new();
    while out.len() < limit {
        let next = (0..budgets.len() - 1).rev().find_map(|k| {
            let ranked = ranked_at(ledger.trials.iter(), budgets[k], goal);
            let top = ranked.len() / f.eta as usize;
            ranked[..top]
                .iter()
                .find(|t| waits_at(t, budgets[k]) && !chosen.contains(&t.index))
                .map(|t| promotion(t, budgets[k], budgets[k + 1]))
        });
        match next {
            Some(p) => {
                chosen.insert(p.index);
                out.push(p);
            }
            None => break,
        }
    }
    out
}
