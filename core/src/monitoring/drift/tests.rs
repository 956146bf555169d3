//! Properties of the drift tests that hold whatever the data (the values themselves are
//! checked against SciPy and Evidently in `core/tests/drift_scipy.rs`).

use super::*;
use proptest::prelude::*;

fn numeric(values: &[f64]) -> Column {
    Column::Numeric(values.to_vec())
}

fn run(test: StatTest, a: &[f64], b: &[f64]) -> ColumnReport {
    compare_columns(
        "x",
        numeric(a),
        numeric(b),
        Some(TestSpec {
            test,
            threshold: None,
        }),
    )
    .unwrap()
}

#[test]
fn identical_samples_do_not_drift_under_any_test() {
    let values: Vec<f64> = (0..300).map(|i| ((i * 37) % 101) as f64 / 7.0).collect();
    for test in StatTest::ALL {
        let report = run(test, &values, &values);
        assert!(!report.drifted, "{test}: {report:?}");
        if test.has_p_value() {
            assert_eq!(report.p_value, Some(1.0), "{test}");
        } else {
            assert!(
                report.statistic.abs() < 1e-12,
                "{test}: {}",
                report.statistic
            );
        }
    }
}

#[test]
fn small_exact_ks_cases() {
    // Disjoint samples of 3 and 3: D = 1, p = 2 / C(6, 3) = 0.1.
    let report = run(StatTest::Ks, &[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
    assert_eq!(report.statistic, 1.0);
    assert!((report.p_value.unwrap() - 0.1).abs() < 1e-15);
    // Disjoint samples of 2 and 4: p = 2 / C(6, 2).
    let report = run(StatTest::Ks, &[1.0, 2.0], &[4.0, 5.0, 6.0, 7.0]);
    assert!((report.p_value.unwrap() - 2.0 / 15.0).abs() < 1e-15);
}

#[test]
fn a_shifted_sample_drifts_and_defaults_follow_evidently() {
    let a: Vec<f64> = (0..2000)
        .map(|i| (i as f64 * 0.618_033_988_7).fract())
        .collect();
    let b: Vec<f64> = a.iter().map(|x| x + 0.5).collect();
    let report = compare_columns("x", numeric(&a), numeric(&b), None).unwrap();
    assert_eq!(report.test, StatTest::Wasserstein);
    assert!(report.drifted);
    let report = compare_columns("x", numeric(&a[..500]), numeric(&b[..500]), None).unwrap();
    assert_eq!(report.test, StatTest::Ks);
    assert!(report.drifted);
    assert_eq!(
        default_test(ColumnKind::Numeric, 1000, 5),
        StatTest::ChiSquare
    );
    assert_eq!(default_test(ColumnKind::Numeric, 1000, 2), StatTest::Z);
    assert_eq!(
        default_test(ColumnKind::Numeric, 1001, 5),
        StatTest::JensenShannon
    );
    assert_eq!(
        default_test(ColumnKind::Categorical, 10, 40),
        StatTest::ChiSquare
    );
    assert_eq!(
        default_test(ColumnKind::Categorical, 5000, 40),
        StatTest::JensenShannon
    );
}

#[test]
fn bad_input_is_a_clear_error() {
    let err = compare_columns("age", numeric(&[]), numeric(&[1.0]), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column \"age\" has no values in the reference sample"
    );
    let err = compare_columns("age", numeric(&[1.0]), numeric(&[2.0, f64::NAN]), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column \"age\": current value #1 is NaN, not a finite number"
    );
    let labels = Column::Categorical(vec!["a".into()]);
    let err = compare_columns("c", labels.clone(), numeric(&[1.0]), None).unwrap_err();
    assert_eq!(err.reason(), "KindMismatch");
    let spec = Some(TestSpec {
        test: StatTest::Ks,
        threshold: None,
    });
    let err = compare_columns("c", labels.clone(), labels.clone(), spec).unwrap_err();
    assert_eq!(
        err.to_string(),
        "column \"c\": test ks does not apply to categorical columns"
    );
    let spec = Some(TestSpec {
        test: StatTest::Ks,
        threshold: Some(1.5),
    });
    let err = compare_columns("c", numeric(&[1.0]), numeric(&[1.0]), spec).unwrap_err();
    assert_eq!(err.reason(), "InvalidThreshold");
    assert_eq!(
        "kss".parse::<StatTest>().unwrap_err().reason(),
        "UnknownTest"
    );
    assert!(Embeddings::new(3, vec![1.0; 4]).is_err());
}

#[test]
fn reports_round_trip_through_json_with_infinite_statistics() {
    let reference = Column::Categorical(vec!["a".into(), "b".into()]);
    let current = Column::Categorical(vec!["a".into(), "c".into()]);
    let spec = Some(TestSpec {
        test: StatTest::ChiSquare,
        threshold: None,
    });
    let report = compare_columns("c", reference, current, spec).unwrap();
    assert!(report.statistic.is_infinite());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["statistic"], "inf");
    assert_eq!(json["type"], "categorical");
    assert_eq!(json["pValue"], 0.0);
    let back: ColumnReport = serde_json::from_value(json).unwrap();
    assert_eq!(back, report);
    let summary = summarize(&[report], DEFAULT_DRIFT_SHARE);
    assert!(summary.dataset_drift);
}

#[test]
fn mmd_is_deterministic_and_sees_a_shift() {
    let a: Vec<f64> = (0..120)
        .map(|i| ((i * 7919) % 113) as f64 / 113.0)
        .collect();
    let b: Vec<f64> = a.iter().map(|x| x + 0.6).collect();
    let (ea, eb) = (
        Embeddings::new(2, a.clone()).unwrap(),
        Embeddings::new(2, b).unwrap(),
    );
    let first = mmd_test(&ea, &eb, 100, 1).unwrap();
    assert_eq!(first, mmd_test(&ea, &eb, 100, 1).unwrap());
    assert!(first.p_value < 0.05, "{first:?}");
    let same = mmd_test(&ea, &Embeddings::new(2, a).unwrap(), 100, 1).unwrap();
    assert!(same.p_value > 0.5, "{same:?}");
}

#[test]
fn benjamini_hochberg_and_effect_size_gate_alerts() {
    assert_eq!(
        benjamini_hochberg(&[0.01, 0.04, 0.03]),
        vec![0.03, 0.04, 0.04]
    );
    let values: Vec<f64> = (0..500)
        .map(|i| (i as f64 * 0.618_033_988_7).fract())
        .collect();
    let shifted: Vec<f64> = values.iter().map(|x| x + 0.02).collect();
    let report = run(StatTest::Ks, &values, &shifted);
    let loose = AlertPolicy {
        fdr: 1.0,
        min_effect_size: 0.0,
    };
    let strict = AlertPolicy {
        fdr: 1.0,
        min_effect_size: 0.5,
    };
    assert!(alert_decisions(std::slice::from_ref(&report), &loose)[0].alert);
    assert!(!alert_decisions(&[report], &strict)[0].alert);
}

#[test]
fn large_samples_sort_like_small_ones() {
    let values: Vec<f64> = (0..40_000)
        .map(|i| {
            ((i as f64 * 0.754_877_666).fract() - 0.5) * 1e3 * if i % 7 == 0 { -0.0 } else { 1.0 }
        })
        .chain([f64::MAX, f64::MIN, -0.0, 0.0, 1e-310, -1e-310])
        .collect();
    let mut expected = values.iter().map(|v| v + 0.0).collect::<Vec<_>>();
    expected.sort_by(f64::total_cmp);
    assert_eq!(sorted(values), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn ks_does_not_depend_on_which_side_is_which(
        a in prop::collection::vec(-50i32..50, 1..60),
        b in prop::collection::vec(-50i32..50, 1..60),
    ) {
        let a: Vec<f64> = a.into_iter().map(f64::from).collect();
        let b: Vec<f64> = b.into_iter().map(f64::from).collect();
        // (The binned distances are not symmetric: Evidently bins by the reference.)
        let ab = run(StatTest::Ks, &a, &b);
        let ba = run(StatTest::Ks, &b, &a);
        prop_assert!((ab.statistic - ba.statistic).abs() < 1e-12);
        prop_assert!((ab.score - ba.score).abs() < 1e-12);
    }

    #[test]
    fn scores_stay_in_range_and_never_panic(
        a in prop::collection::vec(-1e6f64..1e6, 1..80),
        b in prop::collection::vec(-1e6f64..1e6, 1..80),
    ) {
        for test in StatTest::ALL {
            let report = run(test, &a, &b);
            if let Some(p) = report.p_value {
                prop_assert!((0.0..=1.0).contains(&p), "{test}: {p}");
            }
            prop_assert!(report.statistic.is_finite() || test == StatTest::ChiSquare, "{test}");
            if test == StatTest::Ks {
                prop_assert!((0.0..=1.0).contains(&report.statistic));
            }
        }
    }
}
