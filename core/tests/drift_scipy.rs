//! The drift statistics against SciPy and Evidently: seeded samples (small exact
//! Kolmogorov–Smirnov cases, the asymptotic regimes, ties, categories with rare and unseen
//! values) go through `toucan_core::monitoring::drift` and through `tests/monitoring/drift.py`
//! (the project venv's Python, with the packages `scripts/setup --monitoring` pins); every
//! statistic, p-value and distance must agree to 1e-9 relative, and the default test chosen for
//! each column must be Evidently's. MMD is checked against a NumPy implementation replaying the
//! permutations toucan drew, and Benjamini–Hochberg against SciPy's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use toucan_core::monitoring::drift::{
    Column, ColumnReport, Embeddings, StatTest, TestSpec, benjamini_hochberg, compare_columns,
    mmd_permutations, mmd_test_until,
};

const TOLERANCE: f64 = 1e-9;

struct Sampler(ChaCha8Rng);

impl Sampler {
    fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    fn uniform(&mut self) -> f64 {
        (self.0.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self, mean: f64, sd: f64) -> f64 {
        let u = self.uniform().max(f64::MIN_POSITIVE);
        let v = self.uniform();
        mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }

    fn normals(&mut self, n: usize, mean: f64, sd: f64) -> Vec<f64> {
        (0..n).map(|_| self.normal(mean, sd)).collect()
    }

    /// Whole numbers 0..k (many ties).
    fn integers(&mut self, n: usize, k: u64, shift: f64) -> Vec<f64> {
        (0..n)
            .map(|_| ((self.uniform() + shift).min(0.999_999) * k as f64).floor())
            .collect()
    }

    /// Labels drawn with the given weights.
    fn labels(&mut self, n: usize, names: &[&str], weights: &[f64]) -> Vec<String> {
        let total: f64 = weights.iter().sum();
        (0..n)
            .map(|_| {
                let mut u = self.uniform() * total;
                for (name, w) in names.iter().zip(weights) {
                    if u < *w {
                        return name.to_string();
                    }
                    u -= w;
                }
                names[names.len() - 1].to_string()
            })
            .collect()
    }
}

struct Case {
    name: String,
    reference: Column,
    current: Column,
    test: StatTest,
}

fn cases() -> Vec<Case> {
    let mut s = Sampler::new(15);
    let mut cases = Vec::new();
    let mut numeric = |name: &str, reference: Vec<f64>, current: Vec<f64>, tests: &[StatTest]| {
        for test in tests {
            cases.push(Case {
                name: format!("{name}/{test}"),
                reference: Column::Numeric(reference.clone()),
                current: Column::Numeric(current.clone()),
                test: *test,
            });
        }
    };
    use StatTest::*;
    let all_numeric = [Ks, Wasserstein, Psi, JensenShannon];
    // Exact KS: equal sizes, unequal sizes, tiny samples, ties.
    numeric(
        "tiny",
        s.normals(5, 0.0, 1.0),
        s.normals(7, 0.5, 1.0),
        &[Ks, Wasserstein],
    );
    numeric(
        "equal-20",
        s.normals(20, 0.0, 1.0),
        s.normals(20, 0.8, 1.0),
        &all_numeric,
    );
    numeric(
        "equal-500",
        s.normals(500, 0.0, 1.0),
        s.normals(500, 0.1, 1.0),
        &all_numeric,
    );
    numeric(
        "unequal-60-90",
        s.normals(60, 0.0, 1.0),
        s.normals(90, 0.3, 1.2),
        &all_numeric,
    );
    numeric(
        "unequal-300-1000",
        s.normals(300, 0.0, 1.0),
        s.normals(1000, 0.0, 1.0),
        &all_numeric,
    );
    numeric(
        "unequal-997-1013",
        s.normals(997, 0.0, 1.0),
        s.normals(1013, 0.2, 1.0),
        &all_numeric,
    );
    numeric(
        "exact-4000-6000",
        s.normals(4000, 0.0, 1.0),
        s.normals(6000, 0.05, 1.0),
        &[Ks],
    );
    numeric(
        "ties-80-120",
        s.integers(80, 12, 0.0),
        s.integers(120, 12, 0.1),
        &[Ks, ChiSquare, Psi, JensenShannon, Wasserstein],
    );
    numeric(
        "binary",
        s.integers(400, 2, 0.0),
        s.integers(300, 2, 0.1),
        &[Z, ChiSquare],
    );
    numeric(
        "three-values",
        s.integers(900, 3, 0.0),
        s.integers(700, 3, 0.0),
        &[ChiSquare, Psi],
    );
    // Asymptotic KS at several effective sizes (the Kolmogorov distribution's regions).
    numeric(
        "asymp-12-20000",
        s.normals(12, 0.0, 1.0),
        s.normals(20000, 0.3, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-150-12000",
        s.normals(150, 0.0, 1.0),
        s.normals(12000, 0.0, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-400-15000",
        s.normals(400, 0.0, 1.0),
        s.normals(15000, 0.25, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-3000-20000",
        s.normals(3000, 0.0, 1.0),
        s.normals(20000, 0.02, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-20000-30000",
        s.normals(20000, 0.0, 1.0),
        s.normals(30000, 0.01, 1.0),
        &[Ks, Wasserstein, Psi, JensenShannon],
    );
    numeric(
        "asymp-50000-50000",
        s.normals(50000, 0.0, 1.0),
        s.normals(50000, 0.015, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-300000",
        s.normals(300000, 0.0, 1.0),
        s.normals(300000, 0.004, 1.0),
        &[Ks],
    );
    numeric(
        "asymp-small-p",
        s.normals(30000, 0.0, 1.0),
        s.normals(20000, 0.1, 1.0),
        &[Ks],
    );
    // Categories: several, one rare, one only in the current sample.
    let names = ["alpha", "beta", "gamma", "delta", "rare"];
    let mut categorical =
        |name: &str, reference: Vec<String>, current: Vec<String>, tests: &[StatTest]| {
            for test in tests {
                cases.push(Case {
                    name: format!("{name}/{test}"),
                    reference: Column::Categorical(reference.clone()),
                    current: Column::Categorical(current.clone()),
                    test: *test,
                });
            }
        };
    let cat_tests = [ChiSquare, Psi, JensenShannon];
    categorical(
        "labels-rare",
        s.labels(800, &names, &[0.4, 0.3, 0.2, 0.098, 0.002]),
        s.labels(600, &names, &[0.35, 0.3, 0.2, 0.148, 0.002]),
        &cat_tests,
    );
    categorical(
        "labels-large",
        s.labels(5000, &names, &[0.4, 0.3, 0.2, 0.098, 0.002]),
        s.labels(4000, &names, &[0.4, 0.3, 0.2, 0.098, 0.002]),
        &cat_tests,
    );
    categorical(
        "labels-unseen",
        s.labels(500, &names[..4], &[0.4, 0.3, 0.2, 0.1]),
        s.labels(500, &names, &[0.4, 0.3, 0.2, 0.09, 0.01]),
        &[Psi, JensenShannon, ChiSquare],
    );
    categorical(
        "labels-binary",
        s.labels(700, &["no", "yes"], &[0.7, 0.3]),
        s.labels(500, &["no", "yes"], &[0.62, 0.38]),
        &[Z, ChiSquare, JensenShannon],
    );
    cases
}

fn column_values(column: &Column) -> Value {
    match column {
        Column::Numeric(values) => json!(values),
        Column::Categorical(values) => json!(values),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn reference_values(input: &Value) -> Value {
    let root = repo_root();
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup --monitoring to make the venv with SciPy and Evidently",
        python.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let (in_path, out_path) = (dir.path().join("in.json"), dir.path().join("out.json"));
    std::fs::write(&in_path, serde_json::to_vec(input).unwrap()).unwrap();
    let run = Command::new(&python)
        .arg(root.join("tests/monitoring/drift.py"))
        .arg(&in_path)
        .arg(&out_path)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "tests/monitoring/drift.py failed ({}); if SciPy or Evidently is missing or another \
         version, run scripts/setup --monitoring:\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(&out_path).unwrap()).unwrap()
}

fn close(ours: f64, theirs: f64) -> bool {
    ours == theirs
        || (ours.is_nan() && theirs.is_nan())
        || (ours - theirs).abs() <= TOLERANCE * ours.abs().max(theirs.abs())
}

fn check(found: &mut Vec<String>, what: &str, ours: f64, theirs: Option<f64>) {
    match theirs {
        Some(theirs) if close(ours, theirs) => {}
        Some(theirs) => found.push(format!(
            "{what}: toucan {ours:e}, reference {theirs:e} (relative {:e})",
            (ours - theirs).abs() / ours.abs().max(theirs.abs())
        )),
        None => {}
    }
}

/// JSON numbers and the strings Python writes for infinities.
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) if s == "inf" => Some(f64::INFINITY),
        Value::String(s) if s == "-inf" => Some(f64::NEG_INFINITY),
        Value::String(s) if s == "nan" => Some(f64::NAN),
        _ => None,
    }
}

#[test]
fn drift_statistics_equal_scipy_and_evidently() {
    let cases = cases();
    let mut reports: Vec<(ColumnReport, ColumnReport)> = Vec::new();
    for case in &cases {
        let spec = TestSpec {
            test: case.test,
            threshold: None,
        };
        let named = compare_columns(
            &case.name,
            case.reference.clone(),
            case.current.clone(),
            Some(spec),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let default = compare_columns(
            &case.name,
            case.reference.clone(),
            case.current.clone(),
            None,
        )
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        reports.push((named, default));
    }

    let mut mmd_cases = Vec::new();
    let mut mmd_ours = Vec::new();
    let mut s = Sampler::new(99);
    // The last two stop once 10 permuted statistics reached the observed one: the undrifted
    // one early, the shifted one never.
    for (name, n, m, dimension, shift, enough) in [
        ("mmd-same", 60, 50, 4, 0.0, usize::MAX),
        ("mmd-shifted", 80, 70, 8, 0.4, usize::MAX),
        ("mmd-one-dim", 40, 45, 1, 1.0, usize::MAX),
        ("mmd-same-sequential", 60, 50, 4, 0.0, 10),
        ("mmd-shifted-sequential", 80, 70, 8, 0.4, 10),
    ] {
        let reference = s.normals(n * dimension, 0.0, 1.0);
        let current = s.normals(m * dimension, shift, 1.0);
        let seed = 7;
        let permutations = 200;
        let outcome = mmd_test_until(
            &Embeddings::new(dimension, reference.clone()).unwrap(),
            &Embeddings::new(dimension, current.clone()).unwrap(),
            permutations,
            seed,
            enough,
        )
        .unwrap();
        if name == "mmd-same-sequential" {
            assert!(outcome.permutations < 100, "{outcome:?}");
        }
        if name == "mmd-shifted-sequential" {
            assert_eq!(outcome.permutations, permutations, "{outcome:?}");
        }
        mmd_cases.push(json!({
            "name": name, "dimension": dimension, "reference": reference, "current": current,
            "permutations": mmd_permutations(n + m, permutations, seed),
            "enough": (enough != usize::MAX).then_some(enough),
        }));
        mmd_ours.push(outcome);
    }

    for (named, _) in &reports {
        if let Some(p) = named.p_value {
            assert!((0.0..=1.0).contains(&p), "{}: p-value {p}", named.column);
        }
    }
    let bh_inputs: Vec<Vec<f64>> = vec![
        vec![0.01, 0.04, 0.03, 0.5, 0.001, 0.2],
        reports.iter().filter_map(|(r, _)| r.p_value).collect(),
        vec![0.5, 0.5, 0.5],
    ];

    let input = json!({
        "columns": cases.iter().map(|c| json!({
            "name": c.name,
            "kind": c.reference.kind().to_string(),
            "reference": column_values(&c.reference),
            "current": column_values(&c.current),
            "test": c.test.name(),
        })).collect::<Vec<_>>(),
        "mmd": mmd_cases,
        "bh": bh_inputs,
    });
    let theirs = reference_values(&input);

    let mut found = Vec::new();
    let columns = theirs["columns"].as_array().unwrap();
    assert_eq!(columns.len(), cases.len());
    for ((named, default), reference) in reports.iter().zip(columns) {
        let name = &named.column;
        assert_eq!(reference["name"].as_str(), Some(name.as_str()));
        if reference["defaultTest"].as_str() != Some(default.test.name()) {
            found.push(format!(
                "{name}: default test {} but Evidently picks {}",
                default.test, reference["defaultTest"]
            ));
        }
        check(
            &mut found,
            &format!("{name}: Evidently's score"),
            named.score,
            number(&reference["evidentlyScore"]),
        );
        if reference["evidentlyDrifted"].as_bool() != Some(named.drifted) {
            found.push(format!(
                "{name}: drifted {} but Evidently says {}",
                named.drifted, reference["evidentlyDrifted"]
            ));
        }
        check(
            &mut found,
            &format!("{name}: statistic"),
            named.statistic,
            number(&reference["statistic"]),
        );
        if let Some(p) = named.p_value {
            check(
                &mut found,
                &format!("{name}: p-value"),
                p,
                number(&reference["pValue"]),
            );
        }
    }
    for (ours, reference) in mmd_ours.iter().zip(theirs["mmd"].as_array().unwrap()) {
        let name = reference["name"].as_str().unwrap();
        check(
            &mut found,
            &format!("{name}: MMD²"),
            ours.statistic,
            number(&reference["statistic"]),
        );
        check(
            &mut found,
            &format!("{name}: bandwidth"),
            ours.bandwidth,
            number(&reference["bandwidth"]),
        );
        check(
            &mut found,
            &format!("{name}: p-value"),
            ours.p_value,
            number(&reference["pValue"]),
        );
        check(
            &mut found,
            &format!("{name}: the permutations' mean MMD²"),
            ours.null_mean,
            number(&reference["nullMean"]),
        );
    }
    for (ps, reference) in bh_inputs.iter().zip(theirs["bh"].as_array().unwrap()) {
        for (i, (q, r)) in benjamini_hochberg(ps)
            .iter()
            .zip(reference.as_array().unwrap())
            .enumerate()
        {
            check(
                &mut found,
                &format!("BH q-value {i} of {ps:?}"),
                *q,
                number(r),
            );
        }
    }
    // The cases must reach the regimes they are named for, or the comparison proves little.
    let drifted = reports.iter().filter(|(r, _)| r.drifted).count();
    assert!(
        drifted > 5 && drifted < reports.len() - 5,
        "{drifted} of {} drifted",
        reports.len()
    );
    assert!(
        found.is_empty(),
        "{} of {} values differ:\n{}",
        found.len(),
        reports.len(),
        found.join("\n")
    );
}
