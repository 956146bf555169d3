//! The classification metrics of `toucan-worker evaluate` against scikit-learn: seeded random
//! predictions go to `tests/sklearn/metrics.py` (run by the project venv's Python, which
//! `scripts/setup` makes) and every number of the report must agree to 1e-9, every null with a
//! null.
//!
//! Each case also asserts the situation it claims to test (ties, a class never predicted, ...),
//! so that a change in the generators cannot quietly turn it into an easier case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};
use toucan_worker::metrics::{Predictions, Report, ReportOptions, report};

const TOLERANCE: f64 = 1e-9;

// === the reference ===

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// scikit-learn's report for `input`, in the shape of ours.
fn sklearn_report(input: &Predictions, top_k: &[usize]) -> Value {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup to make the venv with scikit-learn",
        python.display()
    );
    let k = input.classes.len();
    let rows: Vec<&[f64]> = input.scores.chunks(k).collect();
    let case = json!({
        "classes": input.classes,
        "labels": input.labels,
        "scores": rows,
        "slices": input.slices,
        "top_k": top_k,
    });
    let dir = tempfile::tempdir().unwrap();
    let (in_path, out_path) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&in_path, serde_json::to_vec(&case).unwrap()).unwrap();
    let run = Command::new(&python)
        .arg(root.join("tests/sklearn/metrics.py"))
        .arg(&in_path)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "tests/sklearn/metrics.py failed ({}); if scikit-learn is missing or another version, \
         run scripts/setup:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap()
}

/// Where `ours` and `reference` differ: numbers by more than [`TOLERANCE`], anything else at
/// all. Each entry names the JSON path.
fn differences(ours: &Value, reference: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk("$", ours, reference, &mut found);
    found
}

fn walk(path: &str, ours: &Value, reference: &Value, found: &mut Vec<String>) {
    match (ours, reference) {
        (Value::Number(a), Value::Number(b)) => {
            let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
            if (a - b).abs() > TOLERANCE {
                found.push(format!("{path}: ours {a}, scikit-learn {b}"));
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, found);
            }
        }
        (Value::Object(a), Value::Object(b)) if a.keys().eq(b.keys()) => {
            for (key, x) in a {
                walk(&format!("{path}.{key}"), x, &b[key], found);
            }
        }
        (a, b) if a == b => {}
        (a, b) => found.push(format!("{path}: ours {a}, scikit-learn {b}")),
    }
}

/// Computes our report and scikit-learn's and fails on any difference.
fn check_against_sklearn(input: &Predictions, top_k: &[usize]) -> Report {
    let ours = report(
        input,
        &ReportOptions {
            top_k: top_k.to_vec(),
        },
    )
    .unwrap();
    let reference = sklearn_report(input, top_k);
    let found = differences(&serde_json::to_value(&ours).unwrap(), &reference);
    assert!(
        found.is_empty(),
        "{} difference(s) from scikit-learn:\n{}",
        found.len(),
        found.join("\n")
    );
    ours
}

// === seeded random predictions ===

struct Random(ChaCha8Rng);

impl Random {
    fn new(seed: u64) -> Random {
        Random(ChaCha8Rng::seed_from_u64(seed))
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = 1.0 - self.uniform();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// How to make one case.
struct Recipe {
    seed: u64,
    records: usize,
    classes: usize,
    /// Added to the true class's logit: how good the "model" is.
    signal: f64,
    /// Classes that never appear as a label.
    absent: Vec<usize>,
    /// Classes whose logit is always far below the rest, so never the argmax.
    suppressed: Vec<usize>,
    scores: Scores,
    /// Slice columns: name and number of distinct values.
    slices: Vec<(&'static str, usize)>,
}

enum Scores {
    /// The logits themselves, rounded to this step (0 for none).
    Raw { step: f64 },
    /// Softmax of the logits.
    Softmax,
    /// Softmax rounded to multiples of `1 / units` that still sum to exactly `units` units:
    /// probabilities with many exact ties, including zeros.
    Grid { units: u32 },
}

impl Recipe {
    fn new(seed: u64, records: usize, classes: usize, scores: Scores) -> Recipe {
        Recipe {
            seed,
            records,
            classes,
            signal: 1.5,
            absent: vec![],
            suppressed: vec![],
            scores,
            slices: vec![],
        }
    }

    fn make(&self) -> Predictions {
        let mut rng = Random::new(self.seed);
        let k = self.classes;
        let present: Vec<usize> = (0..k).filter(|c| !self.absent.contains(c)).collect();
        let mut labels = Vec::with_capacity(self.records);
        let mut scores = Vec::with_capacity(self.records * k);
        for _ in 0..self.records {
            let label = present[rng.below(present.len())];
            let mut logits: Vec<f64> = (0..k).map(|_| rng.normal()).collect();
            logits[label] += self.signal;
            for &c in &self.suppressed {
                logits[c] -= 20.0;
            }
            labels.push(label);
            scores.extend(self.scores.of(&logits));
        }
        let mut slices = BTreeMap::new();
        for &(name, values) in &self.slices {
            let column = (0..self.records)
                .map(|_| format!("{name}-{}", rng.below(values)))
                .collect();
            slices.insert(name.to_string(), column);
        }
        Predictions {
            labels,
            scores,
            classes: (0..k).map(|c| format!("class {c}")).collect(),
            slices,
        }
    }
}

impl Scores {
    fn of(&self, logits: &[f64]) -> Vec<f64> {
        match *self {
            Scores::Raw { step } if step > 0.0 => {
                logits.iter().map(|l| (l / step).round() * step).collect()
            }
            Scores::Raw { .. } => logits.to_vec(),
            Scores::Softmax => softmax(logits),
            Scores::Grid { units } => {
                // Largest-remainder rounding keeps the units summing to `units`.
                let p = softmax(logits);
                let exact: Vec<f64> = p.iter().map(|p| p * f64::from(units)).collect();
                let mut whole: Vec<u32> = exact.iter().map(|e| e.floor() as u32).collect();
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|&a, &b| {
                    (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
                });
                let missing = units - whole.iter().sum::<u32>();
                for &c in order.iter().take(missing as usize) {
                    whole[c] += 1;
                }
                whole
                    .iter()
                    .map(|&w| f64::from(w) / f64::from(units))
                    .collect()
            }
        }
    }
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

// === what a case claims ===

/// Records whose maximum score is shared by several classes.
fn rows_with_tied_maximum(input: &Predictions) -> usize {
    input
        .scores
        .chunks(input.classes.len())
        .filter(|row| {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            row.iter().filter(|&&s| s == max).count() > 1
        })
        .count()
}

/// Scores shared by several records within one class's column.
fn tied_scores_in_columns(input: &Predictions) -> usize {
    let k = input.classes.len();
    (0..k)
        .map(|c| {
            let mut column: Vec<f64> = input.scores.iter().skip(c).step_by(k).copied().collect();
            column.sort_by(f64::total_cmp);
            column.windows(2).filter(|w| w[0] == w[1]).count()
        })
        .sum()
}

fn never_predicted(report: &Report, class: usize) -> bool {
    report
        .overall
        .confusion_matrix
        .iter()
        .all(|row| row[class] == 0)
}

// === the cases ===

#[test]
fn two_classes_softmax_probabilities_with_slices() {
    let mut recipe = Recipe::new(1, 400, 2, Scores::Softmax);
    recipe.slices = vec![("site", 3), ("camera", 7)];
    let input = recipe.make();
    let ours = check_against_sklearn(&input, &[1, 2]);
    assert!(ours.overall.log_loss.is_some());
    assert_eq!(ours.slices.len(), 2);
    assert_eq!(ours.slices[0].values.len(), 7);
}

#[test]
fn two_classes_raw_scores_with_many_ties() {
    let mut recipe = Recipe::new(2, 300, 2, Scores::Raw { step: 0.5 });
    recipe.signal = 0.8;
    let input = recipe.make();
    assert!(rows_with_tied_maximum(&input) > 10);
    let ours = check_against_sklearn(&input, &[1, 2]);
    assert_eq!(ours.overall.log_loss, None);
    // The ties send top-1 and accuracy different ways.
    assert_ne!(
        ours.overall.top_k_accuracy[0].accuracy,
        ours.overall.accuracy
    );
}

#[test]
fn three_classes_probabilities_on_a_coarse_grid() {
    let mut recipe = Recipe::new(3, 500, 3, Scores::Grid { units: 10 });
    recipe.slices = vec![("site", 4)];
    let input = recipe.make();
    assert!(rows_with_tied_maximum(&input) > 20);
    assert!(tied_scores_in_columns(&input) > 400);
    // Some true classes get probability 0, so the log loss clips.
    assert!(
        input
            .labels
            .iter()
            .enumerate()
            .any(|(i, &l)| input.scores[i * 3 + l] == 0.0)
    );
    let ours = check_against_sklearn(&input, &[1, 2, 3]);
    assert!(ours.overall.log_loss.is_some());
}

#[test]
fn three_classes_raw_scores() {
    let mut recipe = Recipe::new(4, 300, 3, Scores::Raw { step: 0.0 });
    recipe.slices = vec![("site", 2)];
    let ours = check_against_sklearn(&recipe.make(), &[1, 2]);
    assert_eq!(ours.overall.log_loss, None);
    assert!(ours.overall.macro_avg.roc_auc.is_some());
}

#[test]
fn ten_classes_softmax_probabilities() {
    let mut recipe = Recipe::new(5, 1_000, 10, Scores::Softmax);
    recipe.slices = vec![("site", 3)];
    let ours = check_against_sklearn(&recipe.make(), &[1, 2, 3, 5, 10]);
    // Every class present and probabilities: scikit-learn's own multi_class="ovr" averages.
    assert!(ours.overall.per_class.iter().all(|c| c.roc_auc.is_some()));
    assert!(ours.overall.log_loss.is_some());
}

#[test]
fn ten_classes_one_never_predicted_one_absent_from_the_truth() {
    let mut recipe = Recipe::new(6, 800, 10, Scores::Softmax);
    recipe.suppressed = vec![7];
    recipe.absent = vec![9];
    recipe.slices = vec![("site", 5)];
    let ours = check_against_sklearn(&recipe.make(), &[1, 3, 5]);
    assert!(never_predicted(&ours, 7));
    assert_eq!(ours.overall.per_class[9].support, 0);
    assert_eq!(ours.overall.per_class[9].roc_auc, None);
    assert_eq!(ours.overall.per_class[9].average_precision, None);
    assert!(ours.overall.macro_avg.roc_auc.is_some());
}

#[test]
fn ten_classes_rounded_probabilities_with_tied_top_k() {
    let mut recipe = Recipe::new(7, 600, 10, Scores::Grid { units: 20 });
    recipe.signal = 1.0;
    recipe.suppressed = vec![2];
    let input = recipe.make();
    assert!(rows_with_tied_maximum(&input) > 20);
    let ours = check_against_sklearn(&input, &[1, 2, 3, 5]);
    assert!(never_predicted(&ours, 2));
}

#[test]
fn slices_down_to_single_records_and_single_classes() {
    let mut recipe = Recipe::new(8, 60, 4, Scores::Grid { units: 8 });
    // 40 values over 60 records: many slices of one or two records.
    recipe.slices = vec![("shot", 40)];
    let input = recipe.make();
    let ours = check_against_sklearn(&input, &[1, 2]);
    let values = &ours.slices[0].values;
    assert!(values.iter().any(|v| v.metrics.records == 1));
    // A one-record slice has no class with both positives and negatives.
    assert!(
        values.iter().filter(|v| v.metrics.records == 1).all(|v| v
            .metrics
            .macro_avg
            .roc_auc
            .is_none())
    );
}

// === the comparison itself ===

#[test]
fn the_comparison_catches_a_perturbed_value() {
    let input = Recipe::new(9, 200, 3, Scores::Softmax).make();
    let ours = serde_json::to_value(report(&input, &ReportOptions::default()).unwrap()).unwrap();
    let reference = sklearn_report(&input, &ReportOptions::default().top_k);
    assert_eq!(differences(&ours, &reference), Vec::<String>::new());

    let mut perturbed = reference.clone();
    let auc = &mut perturbed["overall"]["per_class"][1]["roc_auc"];
    *auc = json!(auc.as_f64().unwrap() + 1e-6);
    let found = differences(&ours, &perturbed);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("$.overall.per_class[1].roc_auc:"));

    // Below the tolerance passes.
    let mut close = reference.clone();
    let loss = &mut close["overall"]["log_loss"];
    *loss = json!(loss.as_f64().unwrap() + 1e-12);
    assert!(differences(&ours, &close).is_empty());

    // A null against a number, a count off by one, a missing entry.
    let mut other = reference.clone();
    other["overall"]["macro_avg"]["average_precision"] = Value::Null;
    other["overall"]["confusion_matrix"][2][0] =
        json!(other["overall"]["confusion_matrix"][2][0].as_u64().unwrap() + 1);
    other["overall"]["top_k_accuracy"]
        .as_array_mut()
        .unwrap()
        .pop();
    let found = differences(&ours, &other);
    assert_eq!(found.len(), 3, "{found:?}");
}
