//! `toucan drift` end to end: CSV and Parquet tables (the Parquet written by pyarrow from the
//! project venv, as users' files are), JSON output checked against the drift built into the
//! data, and bad input refused with the file, row or column named.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn toucan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toucan"))
        .args(args)
        .output()
        .unwrap()
}

/// Deterministic pseudo-normal values (sum of uniforms from a linear congruential stream).
fn normals(seed: u64, n: usize, shift: f64) -> Vec<f64> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| (0..12).map(|_| uniform()).sum::<f64>() - 6.0 + shift)
        .collect()
}

/// A table with a shifted numeric column, an unshifted one, and a categorical column whose
/// mix changes or not.
fn write_csv(path: &Path, seed: u64, n: usize, shift: f64, mix_changed: bool) {
    let shifted = normals(seed, n, shift);
    let steady = normals(seed + 1, n, 0.0);
    let mut text = String::from("shifted,steady,colour\n");
    for i in 0..n {
        let colour = match (i % 10, mix_changed) {
            (0..=5, false) | (0..=2, true) => "red",
            (6..=8, false) | (3..=8, true) => "green",
            _ => "blue",
        };
        writeln!(text, "{},{},{colour}", shifted[i], steady[i]).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

fn to_parquet(csv: &Path, parquet: &Path) {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = "import sys, pyarrow.csv as c, pyarrow.parquet as p\n\
                  p.write_table(c.read_csv(sys.argv[1]), sys.argv[2])";
    let out = Command::new(&python)
        .args(["-c", script])
        .arg(csv)
        .arg(parquet)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "writing the Parquet fixture with pyarrow failed; run scripts/setup --monitoring:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fixtures(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (reference, current) = (dir.join("reference.csv"), dir.join("current.csv"));
    write_csv(&reference, 1, 800, 0.0, false);
    write_csv(&current, 2, 600, 0.5, true);
    let parquet = dir.join("current.parquet");
    to_parquet(&current, &parquet);
    (reference, current, parquet)
}

fn json_report(reference: &Path, current: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["drift", "--reference", reference.to_str().unwrap()];
    args.extend(["--current", current.to_str().unwrap(), "-o", "json"]);
    args.extend(extra);
    let out = toucan(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["column"] == name)
        .unwrap()
}

#[test]
fn shifted_columns_drift_and_steady_ones_do_not_in_csv_and_parquet() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, current, parquet) = fixtures(dir.path());
    let from_csv = json_report(&reference, &current, &[]);
    let from_parquet = json_report(&reference, &parquet, &[]);
    for report in [&from_csv, &from_parquet] {
        let shifted = column(report, "shifted");
        assert_eq!(shifted["test"], "ks", "{shifted}");
        assert_eq!(shifted["type"], "numeric");
        assert_eq!(shifted["drifted"], true, "{shifted}");
        assert_eq!(column(report, "steady")["drifted"], false, "{report}");
        let colour = column(report, "colour");
        assert_eq!(
            (&colour["type"], &colour["test"]),
            (&"categorical".into(), &"chisquare".into())
        );
        assert_eq!(colour["drifted"], true, "{colour}");
        assert_eq!(report["summary"]["driftedColumns"], 2);
        assert_eq!(report["summary"]["datasetDrift"], true);
    }
    // The same numbers from both formats.
    for name in ["shifted", "steady", "colour"] {
        let (a, b) = (column(&from_csv, name), column(&from_parquet, name));
        let (x, y) = (
            a["statistic"].as_f64().unwrap(),
            b["statistic"].as_f64().unwrap(),
        );
        assert!(
            (x - y).abs() <= 1e-12 * x.abs().max(1.0),
            "{name}: {a} vs {b}"
        );
    }
}

#[test]
fn named_tests_thresholds_columns_and_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, current, _) = fixtures(dir.path());
    let report = json_report(
        &reference,
        &current,
        &[
            "--columns",
            "steady,shifted",
            "--column",
            "steady=psi:0.00001",
            "--column",
            "shifted=wasserstein",
        ],
    );
    assert_eq!(report["columns"].as_array().unwrap().len(), 2);
    let steady = column(&report, "steady");
    assert_eq!(
        (&steady["test"], &steady["threshold"]),
        (&"psi".into(), &1e-5.into())
    );
    assert_eq!(
        steady["drifted"], true,
        "a tiny PSI threshold flags noise: {steady}"
    );
    assert!(steady.get("pValue").is_none());
    assert_eq!(column(&report, "shifted")["test"], "wasserstein");

    let (r, c) = (reference.to_str().unwrap(), current.to_str().unwrap());
    let table = toucan(&["drift", "--reference", r, "--current", c]);
    assert_eq!(table.status.code(), Some(0));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("COLUMN"), "{text}");
    assert!(text.contains("2 of 3 columns drifted"), "{text}");
    let failing = toucan(&["drift", "--reference", r, "--current", c, "--fail-on-drift"]);
    assert_eq!(failing.status.code(), Some(1));
    let same = toucan(&["drift", "--reference", r, "--current", r, "--fail-on-drift"]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
}

#[test]
fn bad_input_names_the_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let (reference, current, _) = fixtures(dir.path());
    let r = reference.to_str().unwrap();
    let expect_error = |args: &[&str], needle: &str| {
        let out = toucan(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in {stderr}"
        );
    };
    let short_row = dir.path().join("short.csv");
    std::fs::write(&short_row, "shifted,steady,colour\n1,2,red\n3,4\n").unwrap();
    let short = short_row.to_str().unwrap();
    expect_error(
        &["drift", "--reference", r, "--current", short],
        "short.csv: row 3 has 2 fields, the header has 3",
    );
    let fewer = dir.path().join("fewer.csv");
    std::fs::write(&fewer, "shifted,colour\n1,red\n").unwrap();
    let fewer = fewer.to_str().unwrap();
    expect_error(
        &["drift", "--reference", r, "--current", fewer],
        "fewer.csv: no column \"steady\"",
    );
    expect_error(
        &["drift", "--reference", r, "--current", "/nonexistent/x.csv"],
        "/nonexistent/x.csv",
    );
    let c = current.to_str().unwrap();
    expect_error(
        &[
            "drift",
            "--reference",
            r,
            "--current",
            c,
            "--column",
            "colour=ks",
        ],
        "test ks does not apply to categorical columns",
    );
    expect_error(
        &[
            "drift",
            "--reference",
            r,
            "--current",
            c,
            "--column",
            "steady=nope",
        ],
        "unknown drift test \"nope\"",
    );
    expect_error(
        &[
            "drift",
            "--reference",
            r,
            "--current",
            c,
            "--column",
            "steady=ks:2",
        ],
        "threshold 2 for ks must be between 0 and 1",
    );
    let not_parquet = dir.path().join("broken.parquet");
    std::fs::write(&not_parquet, "PAR1 but not really").unwrap();
    expect_error(
        &[
            "drift",
            "--reference",
            r,
            "--current",
            not_parquet.to_str().unwrap(),
        ],
        "broken.parquet: reading Parquet",
    );
}
