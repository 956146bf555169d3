//! `toucan drift --reference REF --current CUR`: compares two tables (CSV or Parquet) column by
//! column with the drift tests of `toucan_core::monitoring::drift` and prints, for each column,
//! the test used (Evidently's default for its type and size, or the one named with
//! `--column`), the statistic or distance, the p-value where there is one, the threshold and
//! whether it drifted, then the share of drifted columns.
//!
//! Columns are matched by name; a column is numeric when every value in both files is a
//! number, categorical otherwise. Missing cells (empty, `NA`, `NaN`, `null`, Parquet nulls) are
//! left out. Columns are compared in parallel, one per core, each read from both files only
//! when its turn comes.
//!
//! Exit status: 0 whether or not drift was found (drift is a finding, not a failure), 1 with
//! `--fail-on-drift` when the dataset drifted, 2 for invalid input (a file that cannot be read,
//! a column missing from one side, a row with the wrong number of fields, a bad `--column`).

mod tables;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Args;
use serde::Serialize;
use toucan_core::monitoring::drift::{
    Column, ColumnReport, DEFAULT_DRIFT_SHARE, DriftSummary, StatTest, TestSpec, compare_columns,
    summarize,
};

use crate::Outcome;
use crate::output::{self, Format};
use tables::{RawColumn, Table, parse_numbers};

#[derive(Debug, Args)]
pub struct DriftArgs {
    /// The reference table (CSV or Parquet), e.g. the training data.
    #[arg(long, value_name = "FILE")]
    reference: PathBuf,
    /// The current table (CSV or Parquet), e.g. recent production inputs.
    #[arg(long, value_name = "FILE")]
    current: PathBuf,
    /// Only these columns (comma-separated); every column of the reference by default.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    columns: Vec<String>,
    /// The test for a column, and optionally its threshold: `age=psi:0.2`. Tests: ks,
    /// chisquare, z, psi, wasserstein, jensenshannon. Repeatable.
    #[arg(long = "column", value_name = "NAME=TEST[:THRESHOLD]")]
    column_tests: Vec<String>,
    /// Share of drifted columns at which the dataset counts as drifted.
    #[arg(long, default_value_t = DEFAULT_DRIFT_SHARE)]
    drift_share: f64,
    /// Exit with status 1 when the dataset drifted.
    #[arg(long)]
    fail_on_drift: bool,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// What `-o json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DriftReport {
    reference: String,
    current: String,
    columns: Vec<ColumnReport>,
    summary: DriftSummary,
}

pub fn drift(args: DriftArgs) -> anyhow::Result<Outcome> {
    let report = match compare(&args) {
        Ok(report) => report,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Outcome::InvalidInput);
        }
    };
    match args.output {
        Format::Table => print_table(&report),
        format => output::print_structured(format, &report)?,
    }
    if args.fail_on_drift && report.summary.dataset_drift {
        return Ok(Outcome::RunFailed);
    }
    Ok(Outcome::Success)
}

fn compare(args: &DriftArgs) -> Result<DriftReport, String> {
    let tests = parse_column_tests(&args.column_tests)?;
    if !(0.0..=1.0).contains(&args.drift_share) {
        return Err(format!(
            "--drift-share {} must be between 0 and 1",
            args.drift_share
        ));
    }
    let selected = &args.columns;
    let wanted = |name: &str| selected.is_empty() || selected.iter().any(|c| c == name);
    let reference = Table::open(&args.reference, &wanted).map_err(|e| e.to_string())?;
    let current = Table::open(&args.current, &wanted).map_err(|e| e.to_string())?;

    let names: Vec<String> = if selected.is_empty() {
        for name in current.names() {
            if !reference.names().contains(name) {
                return Err(missing(&reference, name));
            }
        }
        reference.names().to_vec()
    } else {
        selected.clone()
    };
    for name in &names {
        for table in [&reference, &current] {
            if !table.names().contains(name) {
                return Err(missing(table, name));
            }
        }
    }
    for name in tests.keys() {
        if !names.contains(name) {
            return Err(format!(
                "--column {name}=...: no column {name:?} is compared"
            ));
        }
    }

    // One worker per core takes the next column, reads it from both files and compares it.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<ColumnReport, String>>>> =
        Mutex::new((0..names.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(names.len())
        .max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(name) = names.get(index) else { break };
                    let result = compare_one(name, &reference, &current, tests.get(name).copied());
                    let mut results = results.lock().unwrap_or_else(|p| p.into_inner());
                    results[index] = Some(result);
                }
            });
        }
    });
    let mut columns = Vec::with_capacity(names.len());
    for result in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        match result {
            Some(Ok(report)) => columns.push(report),
            Some(Err(message)) => return Err(message),
            None => return Err("a column was not compared".to_string()),
        }
    }
    let summary = summarize(&columns, args.drift_share);
    Ok(DriftReport {
        reference: args.reference.display().to_string(),
        current: args.current.display().to_string(),
        columns,
        summary,
    })
}

fn missing(table: &Table, name: &str) -> String {
    format!(
        "{}: no column {name:?} (columns: {})",
        table.path().display(),
        table.names().join(", ")
    )
}

fn compare_one(
    name: &str,
    reference: &Table,
    current: &Table,
    spec: Option<TestSpec>,
) -> Result<ColumnReport, String> {
    let raw_reference = reference.take(name).map_err(|e| e.to_string())?;
    let raw_current = current.take(name).map_err(|e| e.to_string())?;
    let (reference_column, current_column) = typed(raw_reference, raw_current);
    for (table, column) in [(reference, &reference_column), (current, &current_column)] {
        if column.is_empty() {
            return Err(format!(
                "{}: column {name:?} has no values",
                table.path().display()
            ));
        }
    }
    compare_columns(name, reference_column, current_column, spec).map_err(|e| e.to_string())
}

/// Numeric when both sides are numbers, categorical otherwise.
fn typed(reference: RawColumn, current: RawColumn) -> (Column, Column) {
    let numbers = |raw: &RawColumn| match raw {
        RawColumn::Numbers(values) => Some(values.clone()),
        RawColumn::Text(cells) => parse_numbers(cells),
    };
    // Parse text once; typed numbers pass through without a copy.
    match (reference, current) {
        (RawColumn::Numbers(a), RawColumn::Numbers(b)) => (Column::Numeric(a), Column::Numeric(b)),
        (a, b) => match (numbers(&a), numbers(&b)) {
            (Some(a), Some(b)) => (Column::Numeric(a), Column::Numeric(b)),
            _ => (
                Column::Categorical(labels(a)),
                Column::Categorical(labels(b)),
            ),
        },
    }
}

fn labels(raw: RawColumn) -> Vec<String> {
    match raw {
        RawColumn::Numbers(values) => values.iter().map(f64::to_string).collect(),
        RawColumn::Text(cells) => cells,
    }
}

/// `NAME=TEST[:THRESHOLD]` options, by column.
fn parse_column_tests(options: &[String]) -> Result<HashMap<String, TestSpec>, String> {
    let mut tests = HashMap::new();
    for option in options {
        let (name, rest) = option
            .split_once('=')
            .ok_or_else(|| format!("--column {option}: expected NAME=TEST[:THRESHOLD]"))?;
        let (test, threshold) = match rest.split_once(':') {
            Some((test, threshold)) => {
                let value: f64 = threshold.parse().map_err(|_| {
                    format!("--column {option}: threshold {threshold:?} is not a number")
                })?;
                (test, Some(value))
            }
            None => (rest, None),
        };
        let test: StatTest = test
            .parse()
            .map_err(|e| format!("--column {option}: {e}"))?;
        if tests
            .insert(name.to_string(), TestSpec { test, threshold })
            .is_some()
        {
            return Err(format!("--column {name}=...: given twice"));
        }
    }
    Ok(tests)
}

fn print_table(report: &DriftReport) {
    let rows = report
        .columns
        .iter()
        .map(|c| {
            vec![
                c.column.clone(),
                c.kind.to_string(),
                c.test.to_string(),
                number(c.statistic),
                c.p_value.map_or_else(|| "-".to_string(), number),
                number(c.threshold),
                if c.drifted { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    println!(
        "{}",
        output::table(
            &[
                "COLUMN",
                "TYPE",
                "TEST",
                "STATISTIC",
                "P-VALUE",
                "THRESHOLD",
                "DRIFT"
            ],
            rows
        )
    );
    let s = &report.summary;
    println!(
        "\n{} of {} columns drifted ({:.1}%); dataset drift: {} (at a share of {})",
        s.drifted_columns,
        s.columns,
        100.0 * s.share_of_drifted_columns,
        if s.dataset_drift { "yes" } else { "no" },
        s.drift_share
    );
}

fn number(value: f64) -> String {
    if value != 0.0 && value.is_finite() && (value.abs() < 1e-4 || value.abs() >= 1e6) {
        format!("{value:.4e}")
    } else {
        format!("{value:.6}")
    }
}
