//! Continuous evaluation's figures against independent references: seeded random records go
//! to `tests/monitoring/evaluation.py` (run by the project venv's Python, which
//! `scripts/setup` makes), and accuracy, macro precision, recall and F1, log loss, the
//! confusion matrix and the expected calibration error must agree with scikit-learn and numpy,
//! and Wilson intervals with statsmodels (or the closed form where statsmodels is not
//! installed), to 1e-9. A missing venv or package fails the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};
use toucan_core::monitoring::evaluation::calibration::CALIBRATION_BINS;
use toucan_core::monitoring::evaluation::classification::argmax;
use toucan_core::monitoring::evaluation::interval::{Bootstrap, wilson};
use toucan_core::monitoring::evaluation::metrics::{Labelled, WindowMetrics};

const TOLERANCE: f64 = 1e-9;
const CONFIDENCE: f64 = 0.95;

fn reference(case: &Value) -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let python: PathBuf = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup to make the venv with scikit-learn",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&input, serde_json::to_vec(case).unwrap()).unwrap();
    let run = Command::new(&python)
        .arg(root.join("tests/monitoring/evaluation.py"))
        .arg(&input)
        .arg(&output)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "tests/monitoring/evaluation.py failed ({}); run scripts/setup:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
}

struct Random(ChaCha8Rng);

impl Random {
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }
}

/// `records` records of `classes` classes: softmax probabilities of logits with `signal` on
/// the true class; the predicted class is the argmax except where the server said otherwise
/// (`disagree` of the records); classes at or past `silent` are never true.
struct Case {
    labels: Vec<usize>,
    predicted: Vec<usize>,
    probabilities: Vec<f64>,
    classes: usize,
}

fn case(
    seed: u64,
    records: usize,
    classes: usize,
    signal: f64,
    disagree: f64,
    silent: usize,
) -> Case {
    let mut rng = Random(ChaCha8Rng::seed_from_u64(seed));
    let mut case = Case {
        labels: Vec::new(),
        predicted: Vec::new(),
        probabilities: Vec::new(),
        classes,
    };
    for _ in 0..records {
        let label = rng.below(silent.min(classes));
        let logits: Vec<f64> = (0..classes)
            .map(|c| 2.0 * rng.uniform() + if c == label { signal } else { 0.0 })
            .collect();
        let max = logits.iter().copied().fold(f64::MIN, f64::max);
        let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
        let sum: f64 = exp.iter().sum();
        let row: Vec<f64> = exp.iter().map(|e| e / sum).collect();
        let predicted = if rng.uniform() < disagree {
            rng.below(classes)
        } else {
            argmax(&row)
        };
        case.labels.push(label);
        case.predicted.push(predicted);
        case.probabilities.extend(row);
    }
    case
}

fn check(name: &str, c: &Case) {
    let class_names: Vec<String> = (0..c.classes).map(|i| format!("c{i}")).collect();
    let ours = WindowMetrics::compute(
        Labelled {
            labels: &c.labels,
            predicted: &c.predicted,
            probabilities: &c.probabilities,
            class_names: &class_names,
        },
        &Bootstrap {
            resamples: 0,
            confidence: CONFIDENCE,
            seed: 0,
        },
        name,
    );
    // Proportions at the edges and in between, and the ones the window reports.
    let mut proportions: Vec<(u64, u64)> = vec![(0, 1), (1, 1), (0, 7), (7, 7), (3, 10), (1, 1000)];
    proportions.extend((1..40).map(|n| (n * 7 % (n + 1), n)));
    for class in &ours.per_class {
        proportions.push((
            (class.recall.value * class.support as f64).round() as u64,
            class.support,
        ));
    }
    proportions.retain(|&(_, n)| n > 0);
    let rows: Vec<&[f64]> = c.probabilities.chunks(c.classes).collect();
    let reference = reference(&json!({
        "classes": class_names,
        "labels": c.labels,
        "predicted": c.predicted,
        "probabilities": rows,
        "confidence": CONFIDENCE,
        "bins": CALIBRATION_BINS,
        "proportions": proportions,
    }));

    let mut found = Vec::new();
    let mut near = |what: &str, ours: f64, theirs: &Value| {
        let theirs = theirs
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: {what}: {theirs}"));
        if (ours - theirs).abs() > TOLERANCE {
            found.push(format!("{what}: ours {ours}, reference {theirs}"));
        }
    };
    near("accuracy", ours.accuracy.value, &reference["accuracy"]);
    near(
        "macroPrecision",
        ours.macro_precision.value,
        &reference["macroPrecision"],
    );
    near(
        "macroRecall",
        ours.macro_recall.value,
        &reference["macroRecall"],
    );
    near("macroF1", ours.macro_f1.value, &reference["macroF1"]);
    near(
        "expectedCalibrationError",
        ours.expected_calibration_error.value,
        &reference["expectedCalibrationError"],
    );
    match ours.log_loss {
        Some(loss) => near("logLoss", loss.value, &reference["logLoss"]),
        None => assert!(reference["logLoss"].is_null(), "{name}: log loss"),
    }
    for (i, &(k, n)) in proportions.iter().enumerate() {
        let e = wilson(k, n, CONFIDENCE);
        near(
            &format!("wilson({k}, {n}).lower"),
            e.lower,
            &reference["wilson"][i][0],
        );
        near(
            &format!("wilson({k}, {n}).upper"),
            e.upper,
            &reference["wilson"][i][1],
        );
    }
    assert_eq!(
        serde_json::to_value(&ours.confusion_matrix).unwrap(),
        reference["confusionMatrix"],
        "{name}: confusion matrix"
    );
    assert!(
        found.is_empty(),
        "{name}: {} difference(s):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn figures_agree_with_scikit_learn_numpy_and_the_wilson_reference() {
    check("balanced", &case(1, 500, 4, 1.5, 0.0, 4));
    check("many classes, weak model", &case(2, 300, 10, 0.3, 0.0, 10));
    check("a class never true", &case(3, 200, 5, 2.0, 0.0, 4));
    check(
        "server disagrees with the argmax",
        &case(4, 250, 3, 1.0, 0.2, 3),
    );
    check("few records", &case(5, 7, 3, 0.5, 0.1, 3));
    check("two classes", &case(6, 1000, 2, 0.8, 0.0, 2));
}

#[test]
fn scores_that_are_not_probabilities_have_no_log_loss_in_either() {
    let mut c = case(7, 50, 3, 1.0, 0.0, 3);
    for p in &mut c.probabilities {
        *p *= 3.0;
    }
    check("logits", &c);
}
