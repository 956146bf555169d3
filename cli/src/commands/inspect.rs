//! `toucan get runs`, `toucan describe run`, `toucan logs` on the local store (`--cluster`
//! reads a cluster instead: see `crate::cluster`), and the renderers both share.

use anyhow::Context;
use serde::Serialize;

use super::replica::{self, ReplicaChoice};
use super::summary::RunSummary;
use crate::Outcome;
use crate::home::Home;
use crate::output::{Format, duration, print_structured, table, timestamp};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RunRow {
    run: String,
    pipeline: String,
    phase: String,
    created_at: String,
    duration_ms: Option<i64>,
}

pub async fn get_runs(limit: u32, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let runs = store.list_runs(limit).await?;
    let rows: Vec<RunRow> = runs
        .into_iter()
        .map(|r| RunRow {
            duration_ms: r.finished_at.map(|f| f - r.created_at),
            run: r.id,
            pipeline: r.pipeline,
            phase: r.phase.to_string(),
            created_at: timestamp(r.created_at),
        })
        .collect();
    match format {
        Format::Table => {
            let body = rows
                .iter()
                .map(|r| {
                    vec![
                        r.run.clone(),
                        r.pipeline.clone(),
                        r.phase.clone(),
                        r.created_at.clone(),
                        r.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["RUN", "PIPELINE", "PHASE", "CREATED", "DURATION"], body)
            );
        }
        f => print_structured(f, &rows)?,
    }
    Ok(Outcome::Success)
}

pub async fn describe_run(id: &str, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    if store.get_run(id).await?.is_none() {
        eprintln!("error: no run {id:?}");
        return Ok(Outcome::InvalidInput);
    }
    let summary = super::summary::load(store.as_ref(), id).await?;
    print_run(&summary, format)?;
    Ok(Outcome::Success)
}

/// Prints a run as `describe run` does, whether its rows came from the store or a cluster.
pub fn print_run(summary: &RunSummary, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            if let Some(name) = &summary.pipeline_run {
                println!("PipelineRun {name}");
            }
            println!("{}", super::summary::table(summary));
            if let Some(m) = &summary.message {
                println!("\nmessage: {m}");
            }
            println!("\nDAG:");
            for s in &summary.steps {
                let after = if s.depends_on.is_empty() {
                    String::new()
                } else {
                    format!(" <- {}", s.depends_on.join(", "))
                };
                let cached = if s.cached { " (cached)" } else { "" };
                println!("  {} [{}{}]{}", s.name, s.phase, cached, after);
                if let Some(m) = &s.message {
                    println!("      {m}");
                }
            }
        }
        f => print_structured(f, summary)?,
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct LogDoc {
    run: String,
    step: String,
    attempt: u32,
    log: String,
}

pub async fn logs(
    run: &str,
    step: &str,
    attempt: Option<u32>,
    choice: &ReplicaChoice,
    metrics: bool,
    format: Format,
) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let attempts = store.list_attempts(run, step).await?;
    let chosen = match attempt {
        Some(n) => attempts.iter().find(|a| a.attempt == n),
        None => attempts.iter().max_by_key(|a| a.attempt),
    };
    let Some(chosen) = chosen else {
        let known: Vec<u32> = attempts.iter().map(|a| a.attempt).collect();
        eprintln!("error: {}", no_attempt(run, step, attempt, &known));
        return Ok(Outcome::InvalidInput);
    };
    let recorded = chosen.log_ref.as_deref().map(std::path::Path::new);
    let replicas = Home::locate()
        .attempt_dir(run, step, chosen.attempt)
        .join("replicas");
    let log = if replicas.is_dir() {
        match replica_log(&replicas, recorded, choice) {
            Ok(path) => Some(path),
            Err(message) => {
                eprintln!("error: step {step:?} of run {run:?}: {message}");
                return Ok(Outcome::InvalidInput);
            }
        }
    } else if choice.given() {
        eprintln!("error: {}", replica::not_distributed(run, step));
        return Ok(Outcome::InvalidInput);
    } else {
        recorded.map(std::path::Path::to_path_buf)
    };
    let log = log.as_deref();
    if metrics {
        let path = log.map(|l| l.with_file_name(toucan_core::launch::METRICS_FILE));
        let text = match &path {
            Some(p) if p.exists() => {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            }
            _ => String::new(),
        };
        print_metrics(&text, format)?;
        return Ok(Outcome::Success);
    }
    let text = match log {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_else(|e| format!("(log {} unreadable: {e})\n", path.display())),
        None => String::new(),
    };
    print_log(run, step, chosen.attempt, text, format)?;
    Ok(Outcome::Success)
}

/// The log of the chosen replica of a gang attempt, whose replicas' directories are under
/// `replicas` as `INCARNATION/ROLE-INDEX/`; `recorded` (the leader's first log) names the
/// leader.
fn replica_log(
    replicas: &std::path::Path,
    recorded: Option<&std::path::Path>,
    choice: &ReplicaChoice,
) -> Result<std::path::PathBuf, String> {
    let dirs = |dir: &std::path::Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    };
    let mut started: Vec<(u32, String)> = Vec::new();
    for incarnation in dirs(replicas) {
        let Ok(n) = incarnation.parse::<u32>() else {
            continue;
        };
        started.extend(
            dirs(&replicas.join(&incarnation))
                .into_iter()
                .map(|name| (n, name)),
        );
    }
    let started: Vec<(u32, &str)> = started.iter().map(|(n, r)| (*n, r.as_str())).collect();
    let leader = recorded
        .and_then(|log| log.parent())
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .map_or_else(
            || replica::leader(started.iter().map(|(_, r)| *r)),
            str::to_string,
        );
    let (incarnation, name) = started[replica::choose(&started, &leader, choice)?];
    Ok(Home::log_path(
        &replicas.join(incarnation.to_string()).join(name),
    ))
}

/// Why `logs` found no attempt to show; `known` are the step's attempts.
pub fn no_attempt(run: &str, step: &str, attempt: Option<u32>, known: &[u32]) -> String {
    let known = known
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "no {} of step {step:?} in run {run:?}{}",
        attempt.map_or("attempt".to_string(), |n| format!("attempt {n}")),
        if known.is_empty() {
            " (it never ran; cached or skipped steps have no log)".to_string()
        } else {
            format!(" (attempts: {known})")
        }
    )
}

/// Prints metrics given as JSON lines: as they are, or as a JSON/YAML list.
pub fn print_metrics(text: &str, format: Format) -> anyhow::Result<()> {
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| serde_json::Value::String(l.into())))
        .collect();
    match format {
        Format::Table => print!("{text}"),
        f => print_structured(f, &lines)?,
    }
    Ok(())
}

/// Prints an attempt's log: as it is, or wrapped in a JSON/YAML document.
pub fn print_log(
    run: &str,
    step: &str,
    attempt: u32,
    log: String,
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Table => print!("{log}"),
        f => print_structured(
            f,
            &LogDoc {
                run: run.to_string(),
                step: step.to_string(),
                attempt,
                log,
            },
        )?,
    }
    Ok(())
}
