use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::records::SampleRecord;
use crate::serving::{InputStats, PayloadSample, SampledInstance};
use crate::time::rfc3339;

use crate::monitoring::evaluation::join::LabelRecord;

const CLASSES: [&str; 3] = ["shirt", "bag", "coat"];
const HOUR: Millis = 3_600_000;
const T0: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z, a whole hour

/// A sample at `at` of `version` predicting `predicted` with probability 0.8, labelled
/// `label` at `labelled_at` when given.
fn sample(
    id: usize,
    version: &str,
    at: Millis,
    predicted: usize,
    label: Option<(&str, Millis)>,
    source: Option<&str>,
) -> LabelledSample {
    let mut probabilities = vec![0.1f32; 3];
    probabilities[predicted] = 0.8;
    let request_id = format!("r{id}");
    LabelledSample {
        sample: SampleRecord {
            endpoint: "e".into(),
            sample: PayloadSample {
                request_id: request_id.clone(),
                model: "m".into(),
                version: version.into(),
                received_at: rfc3339(at).unwrap(),
                protocol: "v1".into(),
                latency_ms: 1.0,
                instances: vec![SampledInstance {
                    stats: InputStats {
                        width: 1,
                        height: 1,
                        channels: 1,
                        brightness: 0.0,
                        contrast: 0.0,
                        channel_means: vec![0.0],
                        sharpness: 0.0,
                    },
                    input: None,
                    embedding: None,
                    label: predicted as i64,
                    class: CLASSES[predicted].into(),
                    probabilities,
                }],
                attributes: source
                    .map(|s| BTreeMap::from([("x-source".to_string(), s.to_string())]))
                    .unwrap_or_default(),
            },
            stored_at: at + 5,
        },
        label: label.map(|(label, labelled_at)| LabelRecord {
            endpoint: "e".into(),
            request_id,
            label: label.into(),
            labelled_at,
            received_at: labelled_at,
        }),
    }
}

/// One sample predicting each class first, so every class is known by name.
fn every_class(at: Millis) -> Vec<LabelledSample> {
    (0..3)
        .map(|c| sample(900 + c, "v1", at, c, None, None))
        .collect()
}

fn group<'a>(
    w: &'a EvaluationWindow,
    version: Option<&str>,
    slice: Option<&str>,
) -> &'a GroupEvaluation {
    w.groups
        .iter()
        .find(|g| g.version.as_deref() == version && g.slice_value.as_deref() == slice)
        .unwrap()
}

#[test]
fn windows_versions_and_slices() {
    let mut samples = every_class(T0);
    // Window 0: v1 right twice (app), v2 wrong once (web). Window 2: v1 right once.
    samples.push(sample(
        1,
        "v1",
        T0 + 10,
        0,
        Some(("shirt", T0 + 20)),
        Some("app"),
    ));
    samples.push(sample(
        2,
        "v1",
        T0 + 30,
        1,
        Some(("bag", T0 + 60)),
        Some("app"),
    ));
    samples.push(sample(
        3,
        "v2",
        T0 + 50,
        2,
        Some(("shirt", T0 + 150)),
        Some("web"),
    ));
    samples.push(sample(
        4,
        "v1",
        T0 + 2 * HOUR + 1,
        1,
        Some(("bag", T0 + 3 * HOUR)),
        None,
    ));
    let mut options = EvaluationOptions::new(T0 + 10 * HOUR, HOUR);
    options.slice = Some("header.X-Source".into());
    let report = evaluate(&samples, &options).unwrap();

    assert_eq!(report.classes, CLASSES);
    assert_eq!(report.slice.as_deref(), Some("x-source"));
    let starts: Vec<Millis> = report.windows.iter().map(|w| w.start).collect();
    assert_eq!(starts, [T0, T0 + 2 * HOUR]);
    assert!(
        report
            .windows
            .iter()
            .all(|w| w.complete && w.end == w.start + HOUR)
    );

    let first = &report.windows[0];
    let all = group(first, None, None);
    assert_eq!(all.coverage.samples, 6);
    assert_eq!(all.coverage.labelled, 3);
    let m = all.metrics.as_ref().unwrap();
    assert_eq!(m.records, 3);
    assert!((m.accuracy.value - 2.0 / 3.0).abs() < 1e-15);
    assert_eq!(m.confusion_matrix, [[1, 0, 1], [0, 1, 0], [0, 0, 0]]);
    // Delays 10, 30, 100 ms.
    assert_eq!(all.coverage.delay_median_ms, Some(30.0));
    assert_eq!(all.coverage.delay_p90_ms, Some(86.0));
    let predicted: Vec<u64> = all
        .prediction_distribution
        .iter()
        .map(|s| s.count)
        .collect();
    assert_eq!(predicted, [2, 2, 2]);

    let v1 = group(first, Some("v1"), None).metrics.as_ref().unwrap();
    assert_eq!((v1.records, v1.accuracy.value), (2, 1.0));
    let v2 = group(first, Some("v2"), None).metrics.as_ref().unwrap();
    assert_eq!((v2.records, v2.accuracy.value), (1, 0.0));
    let web = group(first, None, Some("web")).metrics.as_ref().unwrap();
    assert_eq!(web.accuracy.value, 0.0);
    assert_eq!(group(first, Some("v1"), Some("app")).coverage.labelled, 2);
    // The samples without the attribute have the value "".
    assert_eq!(group(first, None, Some("")).coverage.samples, 3);
    assert!(group(first, None, Some("")).metrics.is_none());
}

#[test]
fn immature_samples_wait_for_their_labels() {
    let now = T0 + HOUR / 2;
    let mut samples = every_class(T0 - HOUR);
    // Old enough: one labelled right, one unlabelled. Too young: labelled wrong.
    samples.push(sample(
        1,
        "v1",
        now - 20 * 60_000,
        0,
        Some(("shirt", now)),
        None,
    ));
    samples.push(sample(2, "v1", now - 15 * 60_000, 0, None, None));
    samples.push(sample(
        3,
        "v1",
        now - 5 * 60_000,
        0,
        Some(("coat", now)),
        None,
    ));
    let mut options = EvaluationOptions::new(now, HOUR);
    options.maturity_ms = 10 * 60_000;
    let report = evaluate(&samples, &options).unwrap();
    let current = report.windows.last().unwrap();
    assert!(!current.complete);
    let all = group(current, None, None);
    assert_eq!(
        (
            all.coverage.samples,
            all.coverage.pending,
            all.coverage.matured,
            all.coverage.labelled
        ),
        (3, 1, 2, 1)
    );
    assert_eq!(all.coverage.coverage.unwrap().value, 0.5);
    let m = all.metrics.as_ref().unwrap();
    assert_eq!((m.records, m.accuracy.value), (1, 1.0));
    // The pending sample's prediction is counted all the same.
    assert_eq!(all.prediction_distribution[0].count, 3);

    // Without a maturity delay the young wrong label counts.
    options.maturity_ms = 0;
    let report = evaluate(&samples, &options).unwrap();
    let m = group(report.windows.last().unwrap(), None, None)
        .metrics
        .clone()
        .unwrap();
    assert_eq!((m.records, m.accuracy.value), (2, 0.5));
}

#[test]
fn labels_of_no_class_are_unusable() {
    let mut samples = every_class(T0);
    samples.push(sample(1, "v1", T0, 0, Some(("sandal", T0 + 1)), None));
    let report = evaluate(&samples, &EvaluationOptions::new(T0 + HOUR, HOUR)).unwrap();
    let all = group(&report.windows[0], None, None);
    assert_eq!((all.coverage.labelled, all.coverage.unusable), (0, 1));
    assert!(all.metrics.is_none());
    assert_eq!(report.coverage.unusable, 1);
}

#[test]
fn the_moving_average_follows_its_half_life() {
    let mut samples = every_class(T0);
    // Window 0 all right, window 1 all wrong, window 3 all right (window 2 empty).
    for (w, right) in [(0, true), (1, false), (3, true)] {
        for i in 0..4 {
            let label = if right { "shirt" } else { "bag" };
            samples.push(sample(
                w * 10 + i,
                "v1",
                T0 + w as Millis * HOUR + 1,
                0,
                Some((label, T0)),
                None,
            ));
        }
    }
    let mut options = EvaluationOptions::new(T0 + 10 * HOUR, HOUR);
    options.half_life_windows = 1.0;
    assert_eq!(options.ewma_alpha(), 0.5);
    let report = evaluate(&samples, &options).unwrap();
    let smoothed: Vec<(u32, f64)> = report
        .windows
        .iter()
        .map(|w| {
            let s = group(w, None, None).smoothed.clone().unwrap();
            (s.windows, s.accuracy.value)
        })
        .collect();
    assert_eq!(smoothed, [(1, 1.0), (2, 0.5), (3, 0.75)]);
    let last = group(report.windows.last().unwrap(), None, None)
        .smoothed
        .clone()
        .unwrap();
    assert!(
        last.accuracy.lower <= last.accuracy.value && last.accuracy.value <= last.accuracy.upper
    );
}

#[test]
fn options_are_checked_and_named() {
    let bad = |f: fn(&mut EvaluationOptions)| {
        let mut o = EvaluationOptions::new(T0, HOUR);
        f(&mut o);
        evaluate(&[], &o).unwrap_err().to_string()
    };
    assert!(bad(|o| o.window_ms = 0).starts_with("window:"));
    assert!(bad(|o| o.maturity_ms = -1).starts_with("maturity:"));
    assert!(bad(|o| o.half_life_windows = 0.0).starts_with("halfLife:"));
    assert!(bad(|o| o.confidence = 1.0).starts_with("confidence:"));
    assert!(bad(|o| o.slice = Some("header.".into())).starts_with("slice:"));
    let empty = evaluate(&[], &EvaluationOptions::new(T0, HOUR)).unwrap();
    assert!(empty.windows.is_empty() && empty.classes.is_empty());
}

#[test]
fn the_same_data_gives_the_same_report() {
    let mut samples = every_class(T0);
    for i in 0..40 {
        let label = CLASSES[i % 3];
        samples.push(sample(
            i,
            "v1",
            T0 + i as Millis,
            i % 2,
            Some((label, T0 + 100)),
            None,
        ));
    }
    let options = EvaluationOptions::new(T0 + HOUR, HOUR);
    let a = evaluate(&samples, &options).unwrap();
    let b = evaluate(&samples, &options).unwrap();
    assert_eq!(a, b);
    let mut reseeded = options.clone();
    reseeded.seed = 99;
    let c = evaluate(&samples, &reseeded).unwrap();
    let f1 = |r: &EvaluationReport| {
        group(&r.windows[0], None, None)
            .metrics
            .clone()
            .unwrap()
            .macro_f1
    };
    assert_eq!(f1(&a).value, f1(&c).value);
    assert_ne!(f1(&a), f1(&c));
    // The report is camelCase JSON.
    let json = serde_json::to_value(&a).unwrap();
    assert!(
        json["windows"][0]["groups"][0]["metrics"]["expectedCalibrationError"]["upper"].is_number()
    );
    assert!(json["windows"][0]["groups"][0]["coverage"]["delayMedianMs"].is_number());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn windows_partition_the_samples(
        offsets in prop::collection::vec((0i64..20 * HOUR, 0usize..3, prop::option::of(0usize..3)), 1..60),
        window in 1i64..5 * HOUR,
        maturity in 0i64..10 * HOUR,
    ) {
        let now = T0 + 20 * HOUR;
        let samples: Vec<LabelledSample> = offsets
            .iter()
            .enumerate()
            .map(|(i, &(offset, predicted, label))| {
                let label = label.map(|c| (CLASSES[c], T0 + offset + 1));
                sample(i, if i % 2 == 0 { "v1" } else { "v2" }, T0 + offset, predicted, label, None)
            })
            .collect();
        let mut options = EvaluationOptions::new(now, window);
        options.maturity_ms = maturity;
        options.resamples = 5;
        let report = evaluate(&samples, &options).unwrap();
        let mut seen = 0;
        let mut previous_end = i64::MIN;
        for w in &report.windows {
            prop_assert!(w.start >= previous_end);
            previous_end = w.end;
            let all = group(w, None, None);
            seen += all.coverage.samples;
            // Each sample lies in its window, and the versions split the window's samples.
            let in_window = offsets.iter().filter(|(o, _, _)| (w.start..w.end).contains(&(T0 + o))).count();
            prop_assert_eq!(all.coverage.samples, in_window as u64);
            let by_version: u64 = w.groups.iter().filter(|g| g.version.is_some()).map(|g| g.coverage.samples).sum();
            prop_assert_eq!(by_version, all.coverage.samples);
            // No pending sample is counted: matured ones are old enough.
            let matured = offsets
                .iter()
                .filter(|(o, _, _)| (w.start..w.end).contains(&(T0 + o)) && now - (T0 + o) >= maturity)
                .count();
            prop_assert_eq!(all.coverage.matured, matured as u64);
            if let Some(m) = &all.metrics {
                prop_assert!(m.records <= all.coverage.matured);
                prop_assert!(m.accuracy.lower <= m.accuracy.value && m.accuracy.value <= m.accuracy.upper);
                let total: u64 = m.confusion_matrix.iter().flatten().sum();
                prop_assert_eq!(total, m.records);
            }
        }
        prop_assert_eq!(seen, samples.len() as u64);
        prop_assert_eq!(report.coverage.samples, samples.len() as u64);
    }
}
