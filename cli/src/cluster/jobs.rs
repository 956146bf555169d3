//! `get jobs --cluster` and `describe job NAME --cluster`: the TrainingJobs of a cluster, from
//! their bounded status alone (phase, ready replicas, per-role counts, restarts, preemptions,
//! the last failure, the leader's progress, conditions), which the operator keeps current.
//!
//! The operator runs a job `NAME` as the PipelineRun `NAME` with one distributed step,
//! `train`: its replicas' logs are `toucan logs NAME train --cluster`.

use kube::api::DynamicObject;
use serde::Serialize;
use toucan_core::api::{TrainingJob, TrainingJobStatus};
use toucan_core::manifest::JOB_STEP;
use toucan_core::time;

use super::{Cluster, ClusterArgs, finish, newest_first_by};
use crate::Outcome;
use crate::commands::jobs::failure_summary;
use crate::output::{Format, age, duration, metric, print_structured, table, timestamp};

/// Phase shown for a job the operator has not picked up yet.
const NOT_STARTED: &str = "Pending";
/// Phase shown for a job whose status this CLI cannot read.
const UNREADABLE: &str = "Unknown";
/// Where the values of `describe job` start, after their labels.
const LABEL_WIDTH: usize = 14;

/// What `get jobs --cluster -o json|yaml` prints per TrainingJob.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrainingJobSummary {
    pub name: String,
    pub namespace: String,
    /// The status's phase; `Pending` before the operator has written one.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// The status as the operator wrote it.
    pub status: TrainingJobStatus,
    /// Why the status could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable_status: Option<String>,
    /// Creation time in milliseconds since the epoch: for ordering and ages.
    #[serde(skip)]
    created_ms: Option<i64>,
}

/// The summary of a TrainingJob read untyped: a status this CLI cannot read is said so, and
/// does not hide the job.
pub fn summarize(object: &DynamicObject) -> TrainingJobSummary {
    let (status, unreadable_status) = match object.data.get("status") {
        None => (TrainingJobStatus::default(), None),
        Some(s) => match serde_json::from_value::<TrainingJobStatus>(s.clone()) {
            Ok(status) => (status, None),
            Err(e) => (TrainingJobStatus::default(), Some(e.to_string())),
        },
    };
    let phase = match (&status.phase, &unreadable_status) {
        (Some(phase), _) => phase.clone(),
        (None, Some(_)) => UNREADABLE.into(),
        (None, None) => NOT_STARTED.into(),
    };
    let created_ms = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond());
    TrainingJobSummary {
        name: object.metadata.name.clone().unwrap_or_default(),
        namespace: object.metadata.namespace.clone().unwrap_or_default(),
        phase,
        created_at: created_ms.map(timestamp),
        status,
        unreadable_status,
        created_ms,
    }
}

/// The `get jobs --cluster` table; `now_ms` for the ages.
fn jobs_table(jobs: &[TrainingJobSummary], all_namespaces: bool, now_ms: i64) -> String {
    let mut header = vec![
        "NAME",
        "PHASE",
        "READY",
        "RESTARTS",
        "PREEMPTIONS",
        "EPOCH",
        "OBJECTIVE",
        "AGE",
    ];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let rows = jobs
        .iter()
        .map(|j| {
            let s = &j.status;
            let progress = s.progress.as_ref();
            let mut row = vec![
                j.name.clone(),
                j.phase.clone(),
                s.ready.clone().unwrap_or_else(|| "-".into()),
                s.restarts.to_string(),
                s.preemptions.to_string(),
                progress
                    .and_then(|p| p.epoch)
                    .map_or_else(|| "-".into(), |e| e.to_string()),
                progress
                    .and_then(|p| p.objective)
                    .map_or_else(|| "-".into(), metric),
                j.created_ms.map_or_else(|| "-".into(), |c| age(now_ms - c)),
            ];
            if all_namespaces {
                row.insert(0, j.namespace.clone());
            }
            row
        })
        .collect();
    table(&header, rows)
}

/// `describe job --cluster` as text.
fn describe(job: &TrainingJobSummary) -> String {
    let mut out = String::new();
    let s = &job.status;
    field(
        &mut out,
        "TrainingJob",
        &format!("{}/{}", job.namespace, job.name),
    );
    field(&mut out, "Phase", &job.phase);
    if let Some(id) = &s.run_id {
        field(&mut out, "Run id", id);
        field(
            &mut out,
            "Logs",
            &format!(
                "toucan logs {} {JOB_STEP} --cluster -n {} [--replica ROLE-INDEX]",
                job.name, job.namespace
            ),
        );
    }
    if let Some(ready) = &s.ready {
        field(&mut out, "Ready", ready);
    }
    field(&mut out, "Incarnation", &s.incarnation.to_string());
    field(&mut out, "Restarts", &s.restarts.to_string());
    field(&mut out, "Preemptions", &s.preemptions.to_string());
    if let Some(started) = &s.started_at {
        field(&mut out, "Started", started);
    }
    if let Some(finished) = &s.finished_at {
        let millis = |t: &str| time::parse_rfc3339(t).ok();
        let took = match (s.started_at.as_deref().and_then(millis), millis(finished)) {
            (Some(a), Some(b)) => format!(" (after {})", duration(b - a)),
            _ => String::new(),
        };
        field(&mut out, "Finished", &format!("{finished}{took}"));
    }
    if let Some(p) = &s.progress {
        let mut parts = Vec::new();
        if let Some(epoch) = p.epoch {
            parts.push(format!("epoch {epoch}"));
        }
        if let Some(step) = p.step {
            parts.push(format!("step {step}"));
        }
        if let Some(objective) = p.objective {
            parts.push(format!("objective {}", metric(objective)));
        }
        let mut text = parts.join(", ");
        if !p.metrics.is_empty() {
            let metrics: Vec<String> = p
                .metrics
                .iter()
                .map(|(name, v)| format!("{name} {}", metric(*v)))
                .collect();
            text.push_str(&format!(" ({})", metrics.join(", ")));
        }
        field(&mut out, "Progress", text.trim_start());
    }
    if let Some(f) = &s.last_failure {
        field(&mut out, "Last failure", &failure_summary(f));
        let indent = " ".repeat(LABEL_WIDTH);
        if let Some(message) = &f.message {
            out.push_str(&format!("{indent}{message}\n"));
        }
        if let Some(tail) = f.log_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            out.push_str(&format!("{indent}log tail:\n"));
            for l in tail.trim_end().lines() {
                out.push_str(&format!("{indent}  {l}\n"));
            }
        }
    }
    if let Some(m) = &s.message {
        field(&mut out, "Message", m);
    }
    if !s.replicas.is_empty() {
        let rows = s
            .replicas
            .iter()
            .map(|(role, c)| {
                vec![
                    role.clone(),
                    c.active.to_string(),
                    c.succeeded.to_string(),
                    c.failed.to_string(),
                ]
            })
            .collect();
        out.push_str("Replicas:\n");
        out.push_str(&table(&["ROLE", "ACTIVE", "SUCCEEDED", "FAILED"], rows));
        out.push('\n');
    }
    if !s.conditions.is_empty() {
        let rows = s
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str("Conditions:\n");
        out.push_str(&table(&["TYPE", "STATUS", "REASON", "MESSAGE"], rows));
        out.push('\n');
    }
    out
}

/// One `Label:  value` line of `describe job`.
fn field(out: &mut String, label: &str, value: &str) {
    out.push_str(&format!("{:LABEL_WIDTH$}{value}\n", format!("{label}:")));
}

/// `toucan get jobs --cluster`.
pub async fn get_jobs(
    args: &ClusterArgs,
    all_namespaces: bool,
    limit: u32,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let objects = cluster.list::<TrainingJob>(all_namespaces).await?;
            let mut jobs: Vec<TrainingJobSummary> = objects.iter().map(summarize).collect();
            newest_first_by(&mut jobs, |j| (j.created_ms, &j.namespace, &j.name));
            jobs.truncate(limit as usize);
            match format {
                Format::Table => println!("{}", jobs_table(&jobs, all_namespaces, time::now_ms())),
                f => print_structured(f, &jobs)?,
            }
            Ok(Outcome::Success)
        }
        .await,
    )
}

/// `toucan describe job NAME --cluster`.
pub async fn describe_job(
    args: &ClusterArgs,
    name: &str,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(object) = cluster.get::<TrainingJob>(name).await? else {
                eprintln!(
                    "error: no TrainingJob {name:?} in namespace {:?}",
                    cluster.namespace
                );
                return Ok(Outcome::InvalidInput);
            };
            let job = summarize(&object);
            if let Some(e) = &job.unreadable_status {
                eprintln!(
                    "warning: the status of TrainingJob {}/{name} is unreadable: {e}",
                    cluster.namespace
                );
            }
            match format {
                Format::Table => print!("{}", describe(&job)),
                f => print_structured(f, &job)?,
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

    const RESTARTED: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: TrainingJob
metadata: {name: fmnist-ddp, namespace: ml, creationTimestamp: "2025-03-01T10:00:00Z"}
spec: {image: w, command: [train], roles: {chief: {replicas: 1}, worker: {replicas: 2}}}
status:
  phase: Running
  runId: 9b1c
  ready: 3/3
  replicas:
    chief: {active: 1, succeeded: 0, failed: 0}
    worker: {active: 2, succeeded: 0, failed: 0}
  restarts: 1
  preemptions: 2
  incarnation: 3
  startedAt: "2025-03-01T10:00:01Z"
  lastFailure:
    role: worker
    index: 1
    incarnation: 0
    exitCode: 9
    reason: Error
    message: worker-1 ended with code 9
    logTail: "epoch 2\nboom\n"
  progress: {epoch: 3, step: 1200, objective: 0.912345, metrics: {accuracy: 0.93, loss: 0.2}}
  conditions:
    - {type: Running, status: "True", reason: GangRunning, message: all 3 replicas run,
       lastTransitionTime: "2025-03-01T10:01:00Z"}
  message: restarted after worker-1 failed
"#;

    const NEW: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: TrainingJob
metadata: {name: adhoc, namespace: ml, creationTimestamp: "2025-03-01T11:00:00Z"}
spec: {image: w, command: [train], roles: {worker: {replicas: 1}}, someFutureField: true}
"#;

    const ODD: &str = r#"
apiVersion: toucan.dev/v1alpha1
kind: TrainingJob
metadata: {name: odd, namespace: other, creationTimestamp: "2025-03-01T09:00:00Z"}
spec: {}
status: {phase: Running, restarts: many}
"#;

    #[test]
    fn a_job_is_summarized_from_its_status() {
        let j = summarize(&object(RESTARTED));
        assert_eq!(
            (j.name.as_str(), j.namespace.as_str()),
            ("fmnist-ddp", "ml")
        );
        assert_eq!(j.phase, "Running");
        assert_eq!(j.created_at.as_deref(), Some("2025-03-01T10:00:00Z"));
        assert_eq!(j.status.ready.as_deref(), Some("3/3"));
        assert_eq!((j.status.restarts, j.status.preemptions), (1, 2));
        assert_eq!(j.status.replicas["worker"].active, 2);
        assert_eq!(j.unreadable_status, None);
    }

    #[test]
    fn a_job_without_status_is_pending_and_an_unreadable_one_says_why() {
        let j = summarize(&object(NEW));
        assert_eq!(j.phase, NOT_STARTED);
        assert_eq!(j.status, TrainingJobStatus::default());
        assert_eq!(j.unreadable_status, None);
        let j = summarize(&object(ODD));
        assert_eq!(j.phase, UNREADABLE);
        assert!(
            j.unreadable_status
                .as_deref()
                .is_some_and(|e| e.contains("invalid type")),
            "{j:?}"
        );
    }

    #[test]
    fn the_table_lists_jobs_newest_first_with_progress_and_ages() {
        let mut jobs: Vec<TrainingJobSummary> = [RESTARTED, ODD, NEW]
            .iter()
            .map(|y| summarize(&object(y)))
            .collect();
        newest_first_by(&mut jobs, |j| (j.created_ms, &j.namespace, &j.name));
        let now = time::parse_rfc3339("2025-03-01T12:00:00Z").unwrap();
        let rows = |all| -> Vec<Vec<String>> {
            jobs_table(&jobs, all, now)
                .lines()
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect()
        };
        assert_eq!(
            rows(false),
            [
                "NAME PHASE READY RESTARTS PREEMPTIONS EPOCH OBJECTIVE AGE",
                "adhoc Pending - 0 0 - - 1h",
                "fmnist-ddp Running 3/3 1 2 3 0.9123 2h",
                "odd Unknown - 0 0 - - 3h",
            ]
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
        );
        assert_eq!(rows(true)[0][0], "NAMESPACE");
        assert_eq!(rows(true)[3][..2], ["other", "odd"]);
    }

    #[test]
    fn describe_shows_the_failure_progress_counts_and_conditions() {
        let text = describe(&summarize(&object(RESTARTED)));
        for expected in [
            "TrainingJob:  ml/fmnist-ddp\n",
            "Phase:        Running\n",
            "Run id:       9b1c\n",
            "Logs:         toucan logs fmnist-ddp train --cluster -n ml",
            "Ready:        3/3\n",
            "Incarnation:  3\n",
            "Restarts:     1\n",
            "Preemptions:  2\n",
            "Progress:     epoch 3, step 1200, objective 0.9123 (accuracy 0.93, loss 0.2)\n",
            "Last failure: worker-1 in incarnation 0: Error, exit code 9\n",
            "              worker-1 ended with code 9\n",
            "              log tail:\n                epoch 2\n                boom\n",
            "Message:      restarted after worker-1 failed\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        let table: Vec<Vec<&str>> = text
            .lines()
            .skip_while(|l| *l != "Replicas:")
            .skip(1)
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(table[0], ["ROLE", "ACTIVE", "SUCCEEDED", "FAILED"]);
        assert_eq!(table[1], ["chief", "1", "0", "0"]);
        assert_eq!(table[2], ["worker", "2", "0", "0"]);
        assert_eq!(table[3], ["Conditions:"]);
        assert_eq!(table[4], ["TYPE", "STATUS", "REASON", "MESSAGE"]);
        assert_eq!(
            table[5],
            [
                "Running",
                "True",
                "GangRunning",
                "all",
                "3",
                "replicas",
                "run"
            ]
        );
    }

    #[test]
    fn describe_leaves_out_what_a_new_job_has_not_got() {
        let text = describe(&summarize(&object(NEW)));
        assert_eq!(
            text,
            "TrainingJob:  ml/adhoc\nPhase:        Pending\nIncarnation:  0\n\
             Restarts:     0\nPreemptions:  0\n"
        );
    }
}
