//! `report` as a caller sees it: hand-computed cases, slices, errors and the written files.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

/// Four classes; `d` is absent from the truth and `c` is never predicted. Record 1 ties classes
/// 0 and 1, records 4 and 5 tie several classes.
fn hand_case() -> Predictions {
    Predictions {
        labels: vec![0, 0, 1, 1, 2, 0],
        scores: vec![
            0.6, 0.2, 0.1, 0.1, //
            0.4, 0.4, 0.1, 0.1, //
            0.1, 0.7, 0.1, 0.1, //
            0.5, 0.3, 0.1, 0.1, //
            0.3, 0.3, 0.2, 0.2, //
            0.25, 0.25, 0.25, 0.25,
        ],
        classes: names(&["a", "b", "c", "d"]),
        slices: BTreeMap::new(),
    }
}

fn options(top_k: &[usize]) -> ReportOptions {
    ReportOptions {
        top_k: top_k.to_vec(),
    }
}

#[test]
fn hand_computed_hard_decision_metrics() {
    let m = report(&hand_case(), &options(&[1])).unwrap().overall;
    // Ties go to the lowest index: records 1, 4 and 5 are predicted `a`.
    assert_eq!(
        m.confusion_matrix,
        vec![
            vec![3, 0, 0, 0],
            vec![1, 1, 0, 0],
            vec![1, 0, 0, 0],
            vec![0, 0, 0, 0]
        ]
    );
    assert!(close(m.accuracy, 4.0 / 6.0));
    let prf: Vec<(u64, f64, f64, f64)> = m
        .per_class
        .iter()
        .map(|c| (c.support, c.precision, c.recall, c.f1))
        .collect();
    assert_eq!(prf[0], (3, 0.6, 1.0, 0.75));
    assert_eq!(prf[1], (2, 1.0, 0.5, 2.0 / 3.0));
    // `c` is never predicted, `d` never occurs: zero_division gives 0.
    assert_eq!(prf[2], (1, 0.0, 0.0, 0.0));
    assert_eq!(prf[3], (0, 0.0, 0.0, 0.0));
    // The macro average is over a, b, c (d occurs nowhere).
    assert!(close(m.macro_avg.precision, 1.6 / 3.0));
    assert!(close(m.macro_avg.recall, 0.5));
    assert!(close(m.macro_avg.f1, (0.75 + 2.0 / 3.0) / 3.0));
    assert!(close(m.weighted_avg.precision, 3.8 / 6.0));
    assert!(close(m.weighted_avg.recall, 4.0 / 6.0));
    assert!(close(m.weighted_avg.f1, (2.25 + 4.0 / 3.0) / 6.0));
}

#[test]
fn hand_computed_top_k_ranks_ties_highest_index_first() {
    let m = report(&hand_case(), &options(&[4, 1, 2, 3, 2, 9]))
        .unwrap()
        .overall;
    // Positions of the true class: 0, 1 (b ties a and comes first), 0, 1, 3, 3.
    let top_k: Vec<(usize, f64)> = m.top_k_accuracy.iter().map(|t| (t.k, t.accuracy)).collect();
    assert_eq!(
        top_k,
        vec![
            (1, 2.0 / 6.0),
            (2, 4.0 / 6.0),
            (3, 4.0 / 6.0),
            (4, 1.0),
            (9, 1.0)
        ]
    );
    // So top-1 accuracy is below accuracy, where the same ties went the other way.
    assert!(m.top_k_accuracy[0].accuracy < m.accuracy);
}

#[test]
fn hand_computed_ranking_metrics() {
    let m = report(&hand_case(), &options(&[1])).unwrap().overall;
    let auc: Vec<Option<f64>> = m.per_class.iter().map(|c| c.roc_auc).collect();
    // a: 6 of 9 pairs; b: 6.5 of 8 (one tie at 0.3); c: 4 of 5; d has no positives.
    assert!(close(auc[0].unwrap(), 2.0 / 3.0));
    assert!(close(auc[1].unwrap(), 6.5 / 8.0));
    assert!(close(auc[2].unwrap(), 0.8));
    assert_eq!(auc[3], None);
    let macro_auc = (2.0 / 3.0 + 0.8125 + 0.8) / 3.0;
    assert!(close(m.macro_avg.roc_auc.unwrap(), macro_auc));
    let weighted_auc = (3.0 * 2.0 / 3.0 + 2.0 * 0.8125 + 0.8) / 6.0;
    assert!(close(m.weighted_avg.roc_auc.unwrap(), weighted_auc));

    // c: one positive (0.2), ranked behind one negative (0.25): precision 1/2 at recall 1.
    assert!(close(m.per_class[2].average_precision.unwrap(), 0.5));
    assert_eq!(m.per_class[3].average_precision, None);

    let expected_loss = -[0.6f64, 0.4, 0.7, 0.3, 0.2, 0.25]
        .iter()
        .map(|p| p.ln())
        .sum::<f64>()
        / 6.0;
    assert!(close(m.log_loss.unwrap(), expected_loss));
}

#[test]
fn raw_scores_have_no_log_loss_but_every_other_metric() {
    let mut input = hand_case();
    for s in &mut input.scores {
        *s = 10.0 * *s - 3.0;
    }
    let raw = report(&input, &options(&[1, 2])).unwrap().overall;
    let probabilities = report(&hand_case(), &options(&[1, 2])).unwrap().overall;
    assert_eq!(raw.log_loss, None);
    // An increasing map of the scores keeps every ranking, so the rest agrees.
    assert_eq!(raw.confusion_matrix, probabilities.confusion_matrix);
    assert_eq!(raw.top_k_accuracy, probabilities.top_k_accuracy);
    for (r, p) in raw.per_class.iter().zip(&probabilities.per_class) {
        assert_eq!(r.roc_auc, p.roc_auc);
        assert_eq!(r.average_precision, p.average_precision);
    }
}

#[test]
fn slices_are_evaluated_on_their_own_records_sorted_by_value() {
    let mut input = hand_case();
    let site = names(&["y", "x", "y", "x", "z", "x"]);
    input.slices.insert("site".into(), site.clone());
    input
        .slices
        .insert("batch".into(), names(&["1", "1", "1", "1", "1", "1"]));
    let report = report(&input, &options(&[1, 2])).unwrap();
    let columns: Vec<&str> = report.slices.iter().map(|s| s.column.as_str()).collect();
    assert_eq!(columns, vec!["batch", "site"]);
    // One value holding every record: the slice is the whole.
    assert_eq!(report.slices[0].values[0].metrics, report.overall);

    let site_slices = &report.slices[1].values;
    let values: Vec<&str> = site_slices.iter().map(|v| v.value.as_str()).collect();
    assert_eq!(values, vec!["x", "y", "z"]);
    for slice in site_slices {
        let keep: Vec<usize> = (0..6).filter(|&i| site[i] == slice.value).collect();
        let alone = Predictions {
            labels: keep.iter().map(|&i| input.labels[i]).collect(),
            scores: keep
                .iter()
                .flat_map(|&i| input.scores[i * 4..i * 4 + 4].to_vec())
                .collect(),
            classes: input.classes.clone(),
            slices: BTreeMap::new(),
        };
        let expected = super::report(&alone, &options(&[1, 2])).unwrap().overall;
        assert_eq!(slice.metrics, expected, "slice {}", slice.value);
    }
    // `z` is one record of class c: no class has both positives and negatives.
    let z = &site_slices[2].metrics;
    assert_eq!(z.records, 1);
    assert!(z.per_class.iter().all(|c| c.roc_auc.is_none()));
    assert_eq!(z.macro_avg.roc_auc, None);
    assert_eq!(z.weighted_avg.roc_auc, None);
    // c has a positive, so its average precision is defined (the only one).
    assert_eq!(
        z.macro_avg.average_precision,
        z.per_class[2].average_precision
    );
}

#[test]
fn undefined_values_are_null_in_json_and_nothing_is_nan() {
    let mut input = hand_case();
    input
        .slices
        .insert("site".into(), names(&["y", "x", "y", "x", "z", "x"]));
    let json = serde_json::to_value(report(&input, &options(&[1])).unwrap()).unwrap();
    assert_eq!(json["format"], REPORT_FORMAT);
    assert!(json["overall"]["per_class"][3]["roc_auc"].is_null());
    assert!(json["slices"][0]["values"][2]["metrics"]["macro_avg"]["roc_auc"].is_null());
    // Fields come in declaration order (serde_json's Value would sort them, so look at text).
    let text = serde_json::to_string(&report(&input, &options(&[1])).unwrap()).unwrap();
    let overall = &text[text.find("\"overall\"").unwrap()..];
    let positions: Vec<usize> = [
        "records",
        "accuracy",
        "top_k_accuracy",
        "log_loss",
        "per_class",
        "macro_avg",
        "weighted_avg",
        "confusion_matrix",
    ]
    .iter()
    .map(|key| overall.find(&format!("\"{key}\":")).unwrap())
    .collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "{positions:?}");
}

#[test]
fn every_invalid_input_says_what_and_where() {
    let cases: Vec<(Predictions, ReportOptions, &str, &str)> = vec![
        (
            Predictions {
                classes: names(&["a", "b"]),
                ..Predictions::default()
            },
            options(&[1]),
            "EmptyPredictions",
            "no records",
        ),
        (
            Predictions {
                labels: vec![0],
                scores: vec![1.0],
                classes: names(&["a"]),
                ..Predictions::default()
            },
            options(&[1]),
            "TooFewClasses",
            "at least two classes",
        ),
        (
            Predictions {
                scores: vec![0.5; 23],
                ..hand_case()
            },
            options(&[1]),
            "ScoreShape",
            "23 values, expected 6 records x 4 classes = 24",
        ),
        (
            Predictions {
                labels: vec![0, 0, 1, 4, 2, 0],
                ..hand_case()
            },
            options(&[1]),
            "LabelOutOfRange",
            "record 3: label 4",
        ),
        (
            {
                let mut input = hand_case();
                input.scores[4 * 4 + 2] = f64::NAN;
                input
            },
            options(&[1]),
            "NonFiniteScore",
            "record 4: the score of class 2 (\"c\") is NaN",
        ),
        (
            {
                let mut input = hand_case();
                input.slices.insert("site".into(), names(&["x", "y"]));
                input
            },
            options(&[1]),
            "SliceLength",
            "slice column \"site\" has 2 values, expected one per record (6)",
        ),
        (
            hand_case(),
            options(&[0, 1]),
            "InvalidTopK",
            "at least 1, got 0",
        ),
    ];
    for (input, options, reason, message) in cases {
        let err = report(&input, &options).unwrap_err();
        assert_eq!(err.reason(), reason);
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains(message),
            "{reason}: {err} lacks {message:?}"
        );
    }
}

#[test]
fn writes_pretty_json_with_a_trailing_newline_and_the_png() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("eval");
    let report = report(&hand_case(), &ReportOptions::default()).unwrap();
    let png =
        plot::confusion_matrix_png(&report.overall.confusion_matrix, &report.classes).unwrap();
    write_report(&out, &report, &png).unwrap();
    let json = std::fs::read_to_string(out.join(REPORT_FILE)).unwrap();
    assert!(json.ends_with("}\n") && !json.ends_with("\n\n"));
    assert!(json.contains("\n  \"classes\": ["));
    let back: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(back, serde_json::to_value(&report).unwrap());
    assert_eq!(std::fs::read(out.join(CONFUSION_MATRIX_FILE)).unwrap(), png);
}

#[test]
fn writing_into_a_file_fails_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taken");
    std::fs::write(&file, "").unwrap();
    let report = report(&hand_case(), &ReportOptions::default()).unwrap();
    let err = write_report(&file, &report, &[]).unwrap_err();
    assert_eq!(err.reason(), "IoError");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("taken"));
}

/// Random small predictions: 2 to 5 classes, scores on a coarse grid so that ties are common,
/// sometimes negative (raw scores).
fn predictions() -> impl Strategy<Value = Predictions> {
    predictions_on_a_grid(-2..5, 4.0)
}

/// Scores are `grid / step`, `grid` drawn from `grid_values`.
fn predictions_on_a_grid(
    grid_values: std::ops::Range<i16>,
    step: f64,
) -> impl Strategy<Value = Predictions> {
    (2usize..6, 1usize..30).prop_flat_map(move |(classes, records)| {
        (
            proptest::collection::vec(0..classes, records),
            proptest::collection::vec(grid_values.clone(), records * classes),
            proptest::collection::vec(0u8..3, records),
        )
            .prop_map(move |(labels, grid, slice)| Predictions {
                labels,
                scores: grid.into_iter().map(|g| f64::from(g) / step).collect(),
                classes: (0..classes).map(|c| format!("class{c}")).collect(),
                slices: BTreeMap::from([(
                    "part".to_string(),
                    slice.into_iter().map(|s| s.to_string()).collect(),
                )]),
            })
    })
}

fn check_invariants(m: &Metrics, classes: usize) -> Result<(), TestCaseError> {
    let unit = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
    let total: u64 = m.confusion_matrix.iter().flatten().sum();
    prop_assert_eq!(total, m.records as u64);
    let support: u64 = m.per_class.iter().map(|c| c.support).sum();
    prop_assert_eq!(support, m.records as u64);
    prop_assert!(unit(m.accuracy));
    for c in &m.per_class {
        prop_assert!(unit(c.precision) && unit(c.recall) && unit(c.f1));
        prop_assert!(c.roc_auc.is_none_or(unit));
        prop_assert!(c.average_precision.is_none_or(unit));
        prop_assert_eq!(c.average_precision.is_some(), c.support > 0);
        prop_assert_eq!(
            c.roc_auc.is_some(),
            c.support > 0 && c.support < m.records as u64
        );
    }
    for avg in [&m.macro_avg, &m.weighted_avg] {
        prop_assert!(unit(avg.precision) && unit(avg.recall) && unit(avg.f1));
        prop_assert!(avg.roc_auc.is_none_or(unit));
        prop_assert!(avg.average_precision.is_some_and(unit));
    }
    // Top-k grows with k and reaches 1 at the number of classes.
    for pair in m.top_k_accuracy.windows(2) {
        prop_assert!(pair[0].accuracy <= pair[1].accuracy);
    }
    for t in &m.top_k_accuracy {
        prop_assert!(unit(t.accuracy));
        if t.k >= classes {
            prop_assert_eq!(t.accuracy, 1.0);
        }
    }
    prop_assert!(m.log_loss.is_none_or(|l| l.is_finite() && l >= 0.0));
    Ok(())
}

proptest! {
    #[test]
    fn every_report_holds_its_invariants(input in predictions()) {
        let classes = input.classes.len();
        let report = report(&input, &options(&[1, 2, 3, 5])).unwrap();
        check_invariants(&report.overall, classes)?;
        let mut records = 0;
        for value in &report.slices[0].values {
            check_invariants(&value.metrics, classes)?;
            records += value.metrics.records;
        }
        prop_assert_eq!(records, input.labels.len());
        // Nothing undefined slips through as NaN (serde_json would write it as null).
        let json = serde_json::to_string(&report).unwrap();
        prop_assert!(!json.contains("NaN") && !json.contains("inf"));
    }

    #[test]
    fn top_1_agrees_with_accuracy_when_no_row_has_a_tied_maximum(
        input in predictions_on_a_grid(0..10_000, 100.0)
    ) {
        let k = input.classes.len();
        let untied = input.scores.chunks(k).all(|row| {
            let max = row.iter().copied().fold(f64::MIN, f64::max);
            row.iter().filter(|&&s| s == max).count() == 1
        });
        prop_assume!(untied);
        let m = report(&input, &options(&[1])).unwrap().overall;
        prop_assert_eq!(m.top_k_accuracy[0].accuracy, m.accuracy);
    }
}
