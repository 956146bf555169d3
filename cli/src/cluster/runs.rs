//! `get runs --cluster` and `describe run NAME --cluster`.
//!
//! The list comes from the PipelineRuns alone: each one's status is a bounded summary (phase,
//! step counts, times), enough for a table. `describe` adds the steps, which only the
//! operator's API has; when it cannot be read the summary is shown alone, with a warning.

use kube::api::DynamicObject;
use serde::Serialize;
use toucan_core::api::{PipelineRun, PipelineRunStatus, StepCounts};
use toucan_core::time;

use super::{Cluster, ClusterArgs, finish, newest_first_by};
use crate::Outcome;
use crate::commands::inspect::print_run;
use crate::commands::summary;
use crate::output::{Format, age, duration, print_structured, table, timestamp};

/// Phase shown for a PipelineRun the operator has not picked up yet.
const NOT_STARTED: &str = "Pending";
/// Pipeline shown for a run of an inline `pipelineSpec`.
const INLINE: &str = "(inline)";

/// What `get runs --cluster -o json|yaml` prints per PipelineRun.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRunSummary {
    pub name: String,
    pub namespace: String,
    /// The referenced Pipeline; none for an inline `pipelineSpec`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub steps: StepCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Creation time in milliseconds since the epoch: for ordering and ages.
    #[serde(skip)]
    created_ms: Option<i64>,
}

/// The summary of a PipelineRun read untyped; what is missing or malformed stays empty.
pub fn summarize(object: &DynamicObject) -> PipelineRunSummary {
    let status: PipelineRunStatus = object
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let millis = |t: &Option<String>| t.as_deref().and_then(|t| time::parse_rfc3339(t).ok());
    let duration_ms = match (millis(&status.started_at), millis(&status.finished_at)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let created_ms = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    PipelineRunSummary {
        name: object.metadata.name.clone().unwrap_or_default(),
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        pipeline: object
            .data
            .pointer("/spec/pipelineRef/name")
            .and_then(|v| v.as_str())
            .map(str::to_string),
        phase: status.phase.unwrap_or_else(|| NOT_STARTED.into()),
        run_id: status.run_id,
        created_at: created_ms.map(timestamp),
        started_at: status.started_at,
        finished_at: status.finished_at,
        duration_ms,
        steps: status.steps.unwrap_or_default(),
        message: status.message,
        created_ms,
    }
}

/// Newest first (by creation, then name), at most `limit`.
fn newest_first(mut runs: Vec<PipelineRunSummary>, limit: u32) -> Vec<PipelineRunSummary> {
    newest_first_by(&mut runs, |r| (r.created_ms, &r.namespace, &r.name));
    runs.truncate(limit as usize);
    runs
}

/// The `get runs --cluster` table; `now_ms` for the ages.
fn runs_table(runs: &[PipelineRunSummary], all_namespaces: bool, now_ms: i64) -> String {
    let mut header = vec![
        "NAME",
        "PIPELINE",
        "PHASE",
        "SUCCEEDED",
        "CACHED",
        "TOTAL",
        "DURATION",
        "AGE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows = runs
        .iter()
        .map(|r| {
            let mut row = vec![
                r.name.clone(),
                r.pipeline.clone().unwrap_or_else(|| INLINE.into()),
                r.phase.clone(),
                r.steps.succeeded.to_string(),
                r.steps.cached.to_string(),
                r.steps.total.to_string(),
                r.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                r.created_ms
                    .map(|c| age(now_ms - c))
                    .unwrap_or_else(|| "-".into()),
            ];
            if all_namespaces {
                row.insert(0, r.namespace.clone());
            }
            row
        })
        .collect();
    table(&header, rows)
}

/// A PipelineRun's status summary alone, for when its steps cannot be read.
fn print_status(run: &PipelineRunSummary, format: Format) -> anyhow::Result<()> {
    if format != Format::Table {
        return print_structured(format, run);
    }
    println!(
        "PipelineRun {}/{} ({}) {}{}",
        run.namespace,
        run.name,
        run.pipeline.as_deref().unwrap_or("inline"),
        run.phase,
        run.duration_ms
            .map(|d| format!(" in {}", duration(d)))
            .unwrap_or_default()
    );
    if let Some(id) = &run.run_id {
        println!("run id: {id}");
    }
    let s = &run.steps;
    println!(
        "steps: {} total, {} succeeded ({} cached), {} failed, {} skipped, {} running, {} pending",
        s.total, s.succeeded, s.cached, s.failed, s.skipped, s.running, s.pending
    );
    if let Some(m) = &run.message {
        println!("message: {m}");
    }
    Ok(())
}

/// `toucan get runs --cluster`.
pub async fn get_runs(
    args: &ClusterArgs,
    all_namespaces: bool,
    limit: u32,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let objects = cluster.list::<PipelineRun>(all_namespaces).await?;
            let runs = newest_first(objects.iter().map(summarize).collect(), limit);
            match format {
                Format::Table => println!("{}", runs_table(&runs, all_namespaces, time::now_ms())),
                f => print_structured(f, &runs)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// `toucan describe run NAME --cluster`.
pub async fn describe_run(
    args: &ClusterArgs,
    name: &str,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(object) = cluster.get::<PipelineRun>(name).await? else {
                eprintln!(
                    "error: no PipelineRun {name:?} in namespace {:?}",
                    cluster.namespace
                );
                return Ok(Outcome::InvalidInput);
            };
            let status = summarize(&object);
            let Some(run_id) = &status.run_id else {
                eprintln!(
                    "note: the operator has not started PipelineRun {}/{name} yet; showing its status only",
                    cluster.namespace
                );
                print_status(&status, format)?;
                return Ok(Outcome::Success);
            };
            match cluster.api.run(run_id).await {
                Ok(detail) => {
                    let mut run = summary::from_records(detail.run, detail.steps);
                    run.pipeline_run = Some(format!("{}/{name}", cluster.namespace));
                    print_run(&run, format)?;
                }
                Err(e) => {
                    eprintln!(
                        "warning: the run's steps are unavailable: {}; showing the PipelineRun's status only",
                        e.explain()
                    );
                    print_status(&status, format)?;
                }
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(yaml: &str) -> DynamicObject {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    const FINISHED: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: PipelineRun
metadata: {name: nightly-1, namespace: ml, creationTimestamp: "2025-03-01T10:00:00Z"}
spec: {pipelineRef: {name: nightly}}
status:
  phase: Succeeded
  runId: 9b1c
  startedAt: "2025-03-01T10:00:01Z"
  finishedAt: "2025-03-01T10:02:06Z"
  steps: {total: 3, pending: 0, running: 0, succeeded: 3, failed: 0, skipped: 0, cached: 1}
"#;

    const NEW: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: PipelineRun
metadata: {name: adhoc, namespace: ml, creationTimestamp: "2025-03-01T11:00:00Z"}
spec: {pipelineSpec: {steps: []}, someFutureField: true}
"#;

    #[test]
    fn a_finished_run_is_summarized_from_its_status() {
        let s = summarize(&object(FINISHED));
        assert_eq!(s.name, "nightly-1");
        assert_eq!(s.pipeline.as_deref(), Some("nightly"));
        assert_eq!(s.phase, "Succeeded");
        assert_eq!(s.run_id.as_deref(), Some("9b1c"));
        assert_eq!(s.duration_ms, Some(125_000));
        assert_eq!(s.created_at.as_deref(), Some("2025-03-01T10:00:00Z"));
        assert_eq!(
            (s.steps.succeeded, s.steps.cached, s.steps.total),
            (3, 1, 3)
        );
    }

    #[test]
    fn a_run_without_status_or_with_unknown_fields_is_pending() {
        let s = summarize(&object(NEW));
        assert_eq!(s.phase, NOT_STARTED);
        assert_eq!(s.pipeline, None);
        assert_eq!(s.run_id, None);
        assert_eq!(s.duration_ms, None);
        assert_eq!(s.steps, StepCounts::default());
    }

    #[test]
    fn runs_are_listed_newest_first_and_limited() {
        let runs = vec![summarize(&object(FINISHED)), summarize(&object(NEW))];
        let names = |r: &[PipelineRunSummary]| r.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&newest_first(runs.clone(), 10)),
            ["adhoc", "nightly-1"]
        );
        assert_eq!(names(&newest_first(runs, 1)), ["adhoc"]);
    }

    #[test]
    fn the_table_has_the_step_counts_and_ages() {
        let runs = newest_first(
            vec![summarize(&object(FINISHED)), summarize(&object(NEW))],
            10,
        );
        let now = time::parse_rfc3339("2025-03-01T12:00:00Z").unwrap();
        let text = runs_table(&runs, false, now);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            vec![
                vec![
                    "NAME",
                    "PIPELINE",
                    "PHASE",
                    "SUCCEEDED",
                    "CACHED",
                    "TOTAL",
                    "DURATION",
                    "AGE"
                ],
                vec!["adhoc", "(inline)", "Pending", "0", "0", "0", "-", "1h"],
                vec![
                    "nightly-1",
                    "nightly",
                    "Succeeded",
                    "3",
                    "1",
                    "3",
                    "2m05s",
                    "2h"
                ],
            ]
        );
        assert!(runs_table(&runs, true, now).starts_with("NAMESPACE"));
    }
}
