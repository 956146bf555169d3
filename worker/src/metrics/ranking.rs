//! Metrics of the scores as a ranking, computed one class at a time against the rest (one-vs-rest)
//! or one record at a time (top-k).
//!
//! For class `c` the records of class `c` are the positives, all others the negatives, and
//! column `c` of the score matrix ranks them. Records with equal scores form one threshold
//! (`-0.0` equals `0.0`), so the order among ties never matters:
//!
//! - **ROC AUC**: the area under the ROC curve with tied records joined by a straight line, which
//!   is the probability that a random positive scores above a random negative, a tie counting
//!   one half (the Mann-Whitney statistic). Computed exactly in integers (twice the area), then
//!   divided once. Undefined (`None`) when the class has no positives or no negatives.
//! - **Average precision**: the step-wise area under the precision-recall curve,
//!   `sum over thresholds of (recall_i - recall_(i-1)) * precision_i`, thresholds taken from the
//!   highest score down; no interpolation between points (scikit-learn's
//!   `average_precision_score`). Undefined (`None`) when the class has no positives, where recall
//!   is 0/0 (scikit-learn returns 0 with a warning there).
//! - **Top-k**: a record is a hit when its true class is among the `k` classes ranked first by
//!   its scores. Ties are ranked the way scikit-learn's `top_k_accuracy_score` ranks them (a
//!   stable sort, reversed): among equal scores the **higher** class index comes first. So the
//!   true class's position is the number of classes scoring strictly higher plus the number of
//!   classes with a higher index and an equal score. Note that this is the opposite of the
//!   argmax rule: with tied top scores top-1 may miss where the predicted class is right.

use std::cmp::Ordering;

/// Positives and negatives sharing one score, in decreasing score order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Threshold {
    positives: u64,
    negatives: u64,
}

/// Groups records by equal score, highest first: what both areas are computed from.
pub(crate) fn thresholds(is_positive: &[bool], scores: &[f64]) -> Vec<Threshold> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    // total_cmp only differs from `==` on -0.0 and 0.0, which it places next to each other, so
    // grouping neighbours by `==` below still joins them.
    order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut groups: Vec<Threshold> = Vec::new();
    let mut previous: Option<f64> = None;
    for i in order {
        let add = Threshold {
            positives: u64::from(is_positive[i]),
            negatives: u64::from(!is_positive[i]),
        };
        match (previous, groups.last_mut()) {
            (Some(p), Some(last)) if p.partial_cmp(&scores[i]) == Some(Ordering::Equal) => {
                last.positives += add.positives;
                last.negatives += add.negatives;
            }
            _ => groups.push(add),
        }
        previous = Some(scores[i]);
    }
    groups
}

/// The one-vs-rest ROC AUC, `None` without positives or without negatives.
pub(crate) fn roc_auc(groups: &[Threshold]) -> Option<f64> {
    let positives: u64 = groups.iter().map(|g| g.positives).sum();
    let negatives: u64 = groups.iter().map(|g| g.negatives).sum();
    if positives == 0 || negatives == 0 {
        return None;
    }
    // Each negative is beaten by the positives above its threshold and ties with half of those
    // on it: twice the area is a sum of integers.
    let mut positives_above: u128 = 0;
    let mut twice_area: u128 = 0;
    for g in groups {
        twice_area += u128::from(g.negatives) * (2 * positives_above + u128::from(g.positives));
        positives_above += u128::from(g.positives);
    }
    Some(twice_area as f64 / (2.0 * positives as f64 * negatives as f64))
}

/// The one-vs-rest average precision, `None` without positives.
pub(crate) fn average_precision(groups: &[Threshold]) -> Option<f64> {
    let positives: u64 = groups.iter().map(|g| g.positives).sum();
    if positives == 0 {
        return None;
    }
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut area = 0.0;
    for g in groups {
        tp += g.positives;
        fp += g.negatives;
        if g.positives > 0 {
            let recall_step = g.positives as f64 / positives as f64;
            let precision = tp as f64 / (tp + fp) as f64;
            area += recall_step * precision;
        }
    }
    Some(area)
}

/// The 0-based position of class `label` when `row` is ranked for top-k (see the module docs).
pub(crate) fn top_k_position(row: &[f64], label: usize) -> usize {
    let own = row[label];
    row.iter()
        .enumerate()
        .filter(|&(j, &s)| s > own || (s == own && j > label))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn positives(labels: &[u8]) -> Vec<bool> {
        labels.iter().map(|&l| l == 1).collect()
    }

    fn roc_auc(is_positive: &[bool], scores: &[f64]) -> Option<f64> {
        super::roc_auc(&thresholds(is_positive, scores))
    }

    fn average_precision(is_positive: &[bool], scores: &[f64]) -> Option<f64> {
        super::average_precision(&thresholds(is_positive, scores))
    }

    #[test]
    fn roc_auc_by_hand() {
        // Perfect, inverted, and the worked example: positives 0.8, 0.35 vs negatives 0.4, 0.1:
        // 3 of the 4 pairs ordered right.
        assert_eq!(roc_auc(&positives(&[0, 1]), &[0.1, 0.9]), Some(1.0));
        assert_eq!(roc_auc(&positives(&[1, 0]), &[0.1, 0.9]), Some(0.0));
        assert_eq!(
            roc_auc(&positives(&[0, 0, 1, 1]), &[0.1, 0.4, 0.35, 0.8]),
            Some(0.75)
        );
    }

    #[test]
    fn roc_auc_counts_a_tie_as_one_half() {
        // Positives 0.5, 0.2; negatives 0.5, 0.1. Pairs: (0.5,0.5) tie, (0.5,0.1) win,
        // (0.2,0.5) loss, (0.2,0.1) win: (0.5 + 1 + 0 + 1) / 4.
        assert_eq!(
            roc_auc(&positives(&[0, 1, 1, 0]), &[0.5, 0.5, 0.2, 0.1]),
            Some(0.625)
        );
        // All scores equal: no information, 0.5.
        assert_eq!(roc_auc(&positives(&[0, 1, 1]), &[0.3; 3]), Some(0.5));
        // -0.0 and 0.0 are one threshold.
        assert_eq!(roc_auc(&positives(&[0, 1]), &[-0.0, 0.0]), Some(0.5));
    }

    #[test]
    fn roc_auc_is_undefined_without_both_kinds_of_records() {
        assert_eq!(roc_auc(&positives(&[0, 0, 0]), &[0.1, 0.5, 0.2]), None);
        assert_eq!(roc_auc(&positives(&[1, 1]), &[0.1, 0.5]), None);
    }

    #[test]
    fn average_precision_by_hand() {
        // Ranked: 0.8 (+), 0.4 (-), 0.35 (+), 0.1 (-):
        // recall 1/2 at precision 1, recall 2/2 at precision 2/3.
        let ap = average_precision(&positives(&[0, 0, 1, 1]), &[0.1, 0.4, 0.35, 0.8]).unwrap();
        assert!((ap - (0.5 * 1.0 + 0.5 * 2.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn average_precision_takes_ties_as_one_threshold() {
        // 0.5 holds one positive and one negative: recall 1/2 at precision 1/2, then
        // 0.2 (+) gives recall 1 at precision 2/3. Not interpolated between the points.
        let ap = average_precision(&positives(&[0, 1, 1, 0]), &[0.5, 0.5, 0.2, 0.1]).unwrap();
        assert!((ap - (0.5 * 0.5 + 0.5 * 2.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn average_precision_needs_positives_only() {
        assert_eq!(average_precision(&positives(&[0, 0]), &[0.1, 0.5]), None);
        assert_eq!(
            average_precision(&positives(&[1, 1]), &[0.1, 0.5]),
            Some(1.0)
        );
    }

    #[test]
    fn top_k_puts_the_higher_index_first_among_ties() {
        let row = [0.2, 0.4, 0.4];
        // Ranked: class 2, class 1, class 0.
        assert_eq!(top_k_position(&row, 2), 0);
        assert_eq!(top_k_position(&row, 1), 1);
        assert_eq!(top_k_position(&row, 0), 2);
        // A row of equal scores ranks the last class first.
        assert_eq!(top_k_position(&[0.5, 0.5], 0), 1);
        assert_eq!(top_k_position(&[0.5, 0.5], 1), 0);
    }

    proptest! {
        /// Against the definition: the share of (positive, negative) pairs ordered right, ties
        /// counting one half.
        #[test]
        fn roc_auc_is_the_pairwise_probability(
            records in proptest::collection::vec((any::<bool>(), 0u8..6), 1..40)
        ) {
            let is_positive: Vec<bool> = records.iter().map(|r| r.0).collect();
            let scores: Vec<f64> = records.iter().map(|r| f64::from(r.1) / 5.0).collect();
            let (mut pairs, mut wins) = (0.0, 0.0);
            for (i, &pi) in is_positive.iter().enumerate() {
                for (j, &pj) in is_positive.iter().enumerate() {
                    if pi && !pj {
                        pairs += 1.0;
                        wins += match scores[i].partial_cmp(&scores[j]) {
                            Some(Ordering::Greater) => 1.0,
                            Some(Ordering::Equal) => 0.5,
                            _ => 0.0,
                        };
                    }
                }
            }
            let expected = if pairs > 0.0 { Some(wins / pairs) } else { None };
            let got = roc_auc(&is_positive, &scores);
            prop_assert_eq!(got.is_some(), expected.is_some());
            if let (Some(g), Some(e)) = (got, expected) {
                prop_assert!((g - e).abs() < 1e-12, "{} vs {}", g, e);
            }
        }

        /// Each positive's precision among the records scored at least as high as it, averaged
        /// (the same sum grouped by record rather than by threshold).
        #[test]
        fn average_precision_is_the_mean_precision_at_each_positive(
            records in proptest::collection::vec((any::<bool>(), 0u8..6), 1..40)
        ) {
            let is_positive: Vec<bool> = records.iter().map(|r| r.0).collect();
            let scores: Vec<f64> = records.iter().map(|r| f64::from(r.1)).collect();
            let mut precisions = Vec::new();
            for (i, &pi) in is_positive.iter().enumerate() {
                if pi {
                    let above: Vec<usize> =
                        (0..scores.len()).filter(|&j| scores[j] >= scores[i]).collect();
                    let tp = above.iter().filter(|&&j| is_positive[j]).count();
                    precisions.push(tp as f64 / above.len() as f64);
                }
            }
            let got = average_precision(&is_positive, &scores);
            if precisions.is_empty() {
                prop_assert_eq!(got, None);
            } else {
                let expected = precisions.iter().sum::<f64>() / precisions.len() as f64;
                prop_assert!((got.unwrap() - expected).abs() < 1e-12);
            }
        }

        /// The position is where a stable descending-by-score, ascending-by-reverse-index sort
        /// puts the class.
        #[test]
        fn top_k_position_matches_a_sort(
            row in proptest::collection::vec(0u8..4, 2..8), label_seed in any::<usize>()
        ) {
            let row: Vec<f64> = row.into_iter().map(f64::from).collect();
            let label = label_seed % row.len();
            let mut ranked: Vec<usize> = (0..row.len()).collect();
            ranked.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(b.cmp(&a)));
            let position = ranked.iter().position(|&j| j == label).unwrap();
            prop_assert_eq!(top_k_position(&row, label), position);
        }
    }
}
