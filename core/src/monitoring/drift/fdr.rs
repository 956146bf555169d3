//! What an alert needs beyond one column's test: with many columns (and slices) tested at
//! once, some p-values are small by chance, and with large samples a negligible shift is
//! "significant". [`alert_decisions`] keeps the false discovery rate across columns under
//! control with Benjamini–Hochberg and asks for a minimum effect size as well.

use super::ColumnReport;
use serde::{Deserialize, Serialize};

/// Benjamini–Hochberg adjusted p-values (q-values), in the order given: `min over j >= i of
/// m p_(j) / j` over the sorted p-values, capped at 1. A column is a discovery at false
/// discovery rate `q` when its adjusted p-value is at most `q`.
pub fn benjamini_hochberg(p_values: &[f64]) -> Vec<f64> {
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));
    let mut adjusted = vec![0.0; m];
    let mut running = 1.0f64;
    for (rank, &index) in order.iter().enumerate().rev() {
        let value = p_values[index] * m as f64 / (rank + 1) as f64;
        running = running.min(value);
        adjusted[index] = running.min(1.0);
    }
    adjusted
}

/// The rule drift alerts follow.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertPolicy {
    /// False discovery rate across the p-value tests (e.g. 0.05).
    pub fdr: f64,
    /// Smallest effect size that may alert (see `TestOutcome::effect_size`); 0 for none.
    pub min_effect_size: f64,
}

/// Whether one column alerts under an [`AlertPolicy`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertDecision {
    pub column: String,
    /// The Benjamini–Hochberg adjusted p-value, for tests with a p-value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjusted_p_value: Option<f64>,
    pub effect_size: f64,
    pub alert: bool,
}

/// Decides, column by column, whether drift should alert: a test with a p-value alerts when its
/// adjusted p-value (over all the reports' p-values together) is at most `policy.fdr`; a
/// distance alerts when it reaches its threshold; both also need `effect_size >=
/// policy.min_effect_size`.
pub fn alert_decisions(reports: &[ColumnReport], policy: &AlertPolicy) -> Vec<AlertDecision> {
    let with_p: Vec<(usize, f64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.p_value.map(|p| (i, p)))
        .collect();
    let adjusted = benjamini_hochberg(&with_p.iter().map(|(_, p)| *p).collect::<Vec<_>>());
    let mut adjusted_by_report = vec![None; reports.len()];
    for ((index, _), q) in with_p.iter().zip(adjusted) {
        adjusted_by_report[*index] = Some(q);
    }
    reports
        .iter()
        .zip(adjusted_by_report)
        .map(|(report, adjusted_p_value)| {
            let significant = match adjusted_p_value {
                Some(q) => q <= policy.fdr,
                None => report.drifted,
            };
            AlertDecision {
                column: report.column.clone(),
                adjusted_p_value,
                effect_size: report.effect_size,
                alert: significant && report.effect_size >= policy.min_effect_size,
            }
        })
        .collect()
}
