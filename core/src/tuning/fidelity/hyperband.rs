//! Hyperband: brackets of successive halving. With `s_max = floor(log_eta(max / min))`,
//! bracket `s` (from `s_max` down to 0) starts `ceil((s_max + 1) / (s + 1) · eta^s)` trials
//! on budget `max / eta^s`, and each of its `s + 1` rungs keeps the best `1/eta` once every
//! trial of the rung is done. New trials fill the brackets in that order, cycling, so a
//! study of any size keeps the mix; a bracket waiting for its rung leaves free slots to the
//! next bracket's trials.

use std::collections::BTreeMap;

use super::super::decide::Promotion;
use super::super::ledger::{Trial, TrialLedger};
use super::super::spec::Goal;
use super::super::study::Fidelity;
use super::{promotion, ranked_at, rungs, waits_at};

/// The brackets of a study.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    f: Fidelity,
    s_max: u32,
    /// Per bracket position `p` (`s = s_max - p`): the number of trials it starts.
    sizes: Vec<u64>,
}

impl Plan {
    pub(crate) fn new(f: &Fidelity) -> Self {
        let eta = u64::from(f.eta);
        let mut s_max = 0u32;
        let mut b = f.min;
        while let Some(next) = b.checked_mul(eta) {
            if next > f.max {
                break;
            }
            s_max += 1;
            b = next;
        }
        let sizes = (0..=s_max)
            .map(|p| {
                let s = s_max - p;
                let num = u64::from(s_max + 1) * eta.saturating_pow(s);
                num.div_ceil(u64::from(s + 1))
            })
            .collect();
        Plan {
            f: f.clone(),
            s_max,
            sizes,
        }
    }

    /// The bracket (a running number) and its `s` for trial `index`.
    pub(crate) fn bracket_of(&self, index: u32) -> (u32, u32) {
        let cycle: u64 = self.sizes.iter().sum();
        let brackets = self.s_max + 1;
        let round = u64::from(index) / cycle;
        let mut offset = u64::from(index) % cycle;
        for (p, size) in self.sizes.iter().enumerate() {
            if offset < *size {
                let bracket = round * u64::from(brackets) + p as u64;
                return (
                    u32::try_from(bracket).unwrap_or(u32::MAX),
                    self.s_max - p as u32,
                );
            }
            offset -= size;
        }
        (0, self.s_max)
    }

    /// The size and `s` of a bracket.
    fn bracket(&self, bracket: u32) -> (u64, u32) {
        let p = (bracket % (self.s_max + 1)) as usize;
        (self.sizes[p], self.s_max - p as u32)
    }

    /// The rung budgets of a bracket with this `s`: from `max / eta^s` to `max`.
    pub(crate) fn rungs_of(&self, s: u32) -> Vec<u64> {
        let start = self.f.max / u64::from(self.f.eta).saturating_pow(s).max(1);
        let all = rungs(start.max(self.f.min), self.f.max, self.f.eta);
        let keep = (s as usize + 1).min(all.len());
        all[all.len() - keep..].to_vec()
    }
}

/// Up to `limit` promotions, the oldest brackets first. `study_full` says no trial will be
/// started any more, so a bracket cut short by `maxTrials` is complete with what it has.
pub(crate) fn promotions(
    f: &Fidelity,
    goal: Goal,
    ledger: &TrialLedger,
    study_full: bool,
    limit: usize,
) -> Vec<Promotion> {
    let plan = Plan::new(f);
    let mut brackets: BTreeMap<u32, Vec<&Trial>> = BTreeMap::new();
    for t in &ledger.trials {
        if let Some(b) = t.bracket {
            brackets.entry(b).or_default().push(t);
        }
    }
    let mut out = Vec::new();
    for (bracket, members) in brackets {
        let (size, s) = plan.bracket(bracket);
        if (members.len() as u64) < size && !study_full {
            continue;
        }
        let budgets = plan.rungs_of(s);
        for k in 0..budgets.len().saturating_sub(1) {
            let (here, next) = (budgets[k], budgets[k + 1]);
            let reached: Vec<&&Trial> = members
                .iter()
                .filter(|t| t.budget.is_some_and(|b| b >= here))
                .collect();
            if reached
                .iter()
                .any(|t| t.budget == Some(here) && t.state.is_active())
            {
                break;
            }
            let ranked = ranked_at(members.iter().copied(), here, goal);
            if ranked.is_empty() {
                break;
            }
            let keep = (reached.len() / f.eta as usize).max(1);
            for t in ranked.iter().take(keep) {
                if out.len() >= limit {
                    return out;
                }
                if waits_at(t, here) {
                    out.push(promotion(t, here, next));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fidelity(min: u64, max: u64, eta: u32) -> Fidelity {
        Fidelity {
            resource: "epochs".into(),
            min,
            max,
            eta,
        }
    }

    #[test]
    fn brackets_follow_the_hyperband_table() {
        // The classic example: min 1, max 81, eta 3 gives brackets of 81, 34, 15, 8, 5.
        let plan = Plan::new(&fidelity(1, 81, 3));
        assert_eq!(plan.sizes, vec![81, 34, 15, 8, 5]);
        assert_eq!(plan.rungs_of(4), vec![1, 3, 9, 27, 81]);
        assert_eq!(plan.rungs_of(0), vec![81]);
        assert_eq!(plan.bracket_of(0), (0, 4));
        assert_eq!(plan.bracket_of(81), (1, 3));
        assert_eq!(plan.bracket_of(143), (5, 4));
    }
}
