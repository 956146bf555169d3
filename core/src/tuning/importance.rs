//! Parameter importances: how much of the objective's variation across a study's succeeded
//! trials goes with each parameter.
//!
//! For a numeric parameter, the absolute Spearman rank correlation between its value and the
//! objective (monotone effects, whatever the scale); for a categorical one, the correlation
//! ratio η, the square root of the share of the objective's variance between its values'
//! groups. Each is computed over the trials that have the parameter (a `when` may leave it
//! out), with at least three of them, and the scores are divided by their sum. It is a
//! quick, model-free reading, not fANOVA: an effect that is not monotone in a numeric
//! parameter (a bowl) scores low.

use std::collections::BTreeMap;

use super::ledger::{TrialLedger, TrialState};
use super::value::ParamValue;

/// `(parameter, share)` for every parameter that appears in a succeeded trial, largest share
/// first; the shares sum to 1 unless every score is 0.
pub fn importances(ledger: &TrialLedger) -> Vec<(String, f64)> {
    let mut by_param: BTreeMap<&str, Vec<(&ParamValue, f64)>> = BTreeMap::new();
    for t in &ledger.trials {
        let (TrialState::Succeeded, Some(objective)) = (t.state, t.objective) else {
            continue;
        };
        for (name, value) in &t.params {
            by_param.entry(name).or_default().push((value, objective));
        }
    }
    let mut scores: Vec<(String, f64)> = by_param
        .into_iter()
        .map(|(name, points)| (name.to_string(), score(&points)))
        .collect();
    let total: f64 = scores.iter().map(|(_, s)| s).sum();
    if total > 0.0 {
        for (_, s) in &mut scores {
            *s /= total;
        }
    }
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scores
}

fn score(points: &[(&ParamValue, f64)]) -> f64 {
    if points.len() < 3 {
        return 0.0;
    }
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let numeric: Option<Vec<f64>> = points.iter().map(|p| p.0.as_f64()).collect();
    let s = match numeric {
        Some(xs) => pearson(&ranks(&xs), &ranks(&ys)).abs(),
        None => correlation_ratio(points),
    };
    if s.is_finite() { s } else { 0.0 }
}

/// Ranks from 1, ties sharing their average rank.
fn ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx).powi(2);
        syy += (b - my).powi(2);
    }
    if sxx == 0.0 || syy == 0.0 {
        return 0.0;
    }
    sxy / (sxx * syy).sqrt()
}

/// η: the square root of between-group over total variance of the objective.
fn correlation_ratio(points: &[(&ParamValue, f64)]) -> f64 {
    let n = points.len() as f64;
    let mean = points.iter().map(|p| p.1).sum::<f64>() / n;
    let total: f64 = points.iter().map(|p| (p.1 - mean).powi(2)).sum();
    if total == 0.0 {
        return 0.0;
    }
    let mut groups: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for (value, y) in points {
        let g = groups.entry(value.to_string()).or_default();
        g.0 += y;
        g.1 += 1.0;
    }
    let between: f64 = groups
        .values()
        .map(|(sum, count)| count * (sum / count - mean).powi(2))
        .sum();
    (between / total).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::Trial;

    fn trial(index: u32, lr: f64, noise: f64, opt: &str, objective: f64) -> Trial {
        Trial {
            index,
            name: format!("{index}"),
            params: BTreeMap::from([
                ("lr".to_string(), ParamValue::Float(lr)),
                ("noise".to_string(), ParamValue::Float(noise)),
                ("optimizer".to_string(), ParamValue::Text(opt.to_string())),
            ]),
            state: TrialState::Succeeded,
            budget: None,
            bracket: None,
            series: Vec::new(),
            objective: Some(objective),
            rungs: Vec::new(),
        }
    }

    #[test]
    fn the_parameter_the_objective_follows_ranks_first() {
        // The objective rises with lr, jumps with the optimizer, and ignores noise.
        let noise = [0.3, 0.9, 0.1, 0.7, 0.5, 0.2, 0.8, 0.4, 0.6, 0.0];
        let trials = (0..10u32)
            .map(|i| {
                let lr = f64::from(i) / 10.0;
                let opt = if i % 2 == 0 { "adam" } else { "sgd" };
                let jump = if opt == "sgd" { 0.05 } else { 0.0 };
                trial(i, lr, noise[i as usize], opt, lr * lr + jump)
            })
            .collect();
        let ledger = TrialLedger {
            trials,
            warm_start: Vec::new(),
        };
        let got = importances(&ledger);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "lr", "{got:?}");
        assert_eq!(names[2], "noise", "{got:?}");
        let sum: f64 = got.iter().map(|(_, s)| s).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0]);
    }
}
