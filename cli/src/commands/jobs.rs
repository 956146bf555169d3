//! `toucan get jobs` and `toucan describe job` on the local store: the gangs of TrainingJobs
//! and distributed pipeline steps, from the records the local runtime keeps of them (a
//! gang's engine record per attempt, with every replica's end). `--cluster` reads the
//! TrainingJobs of a cluster instead: see `crate::cluster`.

use std::collections::BTreeMap;

use serde::Serialize;
use toucan_core::api::ReplicaFailure;
use toucan_core::engine::gang::{self, Gang, ReplicaEnded};
use toucan_core::records::{DocumentKind, RunRecord};
use toucan_store::metadata::MetadataStore;

use crate::Outcome;
use crate::home::Home;
use crate::output::{Format, print_structured, table, timestamp};

/// One gang: the last attempt of one distributed step of one run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobDoc {
    run: String,
    /// The TrainingJob's name, or the pipeline's.
    job: String,
    step: String,
    attempt: u32,
    phase: String,
    /// `worker=2`.
    roles: String,
    ready: String,
    incarnation: u32,
    restarts: u32,
    max_restarts: u32,
    preemptions: u32,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_failure: Option<ReplicaFailure>,
    history: Vec<ReplicaEnded>,
}

impl JobDoc {
    fn new(run: &RunRecord, step: &str, attempt: u32, gang: Gang) -> JobDoc {
        JobDoc {
            run: run.id.clone(),
            job: run.pipeline.clone(),
            step: step.to_string(),
            attempt,
            phase: gang.phase().to_string(),
            roles: gang.plan.layout(),
            ready: gang.ready(),
            incarnation: gang.incarnation,
            restarts: gang.restarts,
            max_restarts: gang.plan.max_restarts,
            preemptions: gang.preemptions,
            created_at: timestamp(run.created_at),
            last_failure: gang.last_failure,
            history: gang.history,
        }
    }
}

/// The gangs of one run: each distributed step's last attempt, by step.
async fn gangs_of(store: &dyn MetadataStore, run: &RunRecord) -> anyhow::Result<Vec<JobDoc>> {
    let mut last: BTreeMap<String, (u32, serde_json::Value)> = BTreeMap::new();
    for (key, body) in store
        .list_run_documents(&run.id, DocumentKind::Gang)
        .await?
    {
        let Some((step, attempt)) = gang::parse_record_key(&key).map(|(s, a)| (s.to_string(), a))
        else {
            continue;
        };
        if last.get(&step).is_none_or(|(a, _)| *a < attempt) {
            last.insert(step, (attempt, body));
        }
    }
    let mut out = Vec::with_capacity(last.len());
    for (step, (attempt, body)) in last {
        let gang: Gang = serde_json::from_value(body).map_err(|e| {
            anyhow::anyhow!(
                "run {}: the record of {step}/{attempt} is unreadable: {e}",
                run.id
            )
        })?;
        out.push(JobDoc::new(run, &step, attempt, gang));
    }
    Ok(out)
}

pub async fn get_jobs(limit: u32, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let mut jobs = Vec::new();
    for run in store.list_runs(limit).await? {
        jobs.extend(gangs_of(store.as_ref(), &run).await?);
    }
    match format {
        Format::Table => {
            let rows = jobs
                .iter()
                .map(|j| {
                    vec![
                        j.run.clone(),
                        j.job.clone(),
                        j.step.clone(),
                        j.phase.clone(),
                        j.roles.clone(),
                        j.ready.clone(),
                        j.restarts.to_string(),
                        j.preemptions.to_string(),
                        j.created_at.clone(),
                    ]
                })
                .collect();
            let header = [
                "RUN",
                "JOB",
                "STEP",
                "PHASE",
                "ROLES",
                "READY",
                "RESTARTS",
                "PREEMPTIONS",
                "CREATED",
            ];
            println!("{}", table(&header, rows));
        }
        f => print_structured(f, &jobs)?,
    }
    Ok(Outcome::Success)
}

/// `id`: a run's id, or a job's name (its newest run with a gang).
pub async fn describe_job(id: &str, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let runs = match store.get_run(id).await? {
        Some(run) => vec![run],
        None => store
            .list_runs(u32::MAX)
            .await?
            .into_iter()
            .filter(|r| r.pipeline == id)
            .collect(),
    };
    let mut found = Vec::new();
    for run in &runs {
        found = gangs_of(store.as_ref(), run).await?;
        if !found.is_empty() {
            break;
        }
    }
    if found.is_empty() {
        eprintln!(
            "error: no job {id:?}: no run with that id or job name ran a distributed step \
             (`toucan get jobs` lists them)"
        );
        return Ok(Outcome::InvalidInput);
    }
    match format {
        Format::Table => {
            for job in &found {
                print_job(job);
            }
        }
        f => print_structured(f, &found)?,
    }
    Ok(Outcome::Success)
}

fn print_job(j: &JobDoc) {
    println!("Job:          {} (run {})", j.job, j.run);
    println!("Step:         {} (attempt {})", j.step, j.attempt);
    println!("Phase:        {}", j.phase);
    println!("Roles:        {} (ready {})", j.roles, j.ready);
    println!("Incarnation:  {}", j.incarnation);
    println!("Restarts:     {} of at most {}", j.restarts, j.max_restarts);
    println!("Preemptions:  {}", j.preemptions);
    if let Some(f) = &j.last_failure {
        println!("Last failure: {}", failure_summary(f));
    }
    let rows = j
        .history
        .iter()
        .map(|h| {
            vec![
                h.incarnation.to_string(),
                h.replica.to_string(),
                h.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
                if h.preempted { "yes" } else { "no" }.into(),
                if h.decisive { "yes" } else { "no" }.into(),
            ]
        })
        .collect();
    println!("Replica ends:");
    let header = ["INCARNATION", "REPLICA", "EXIT", "PREEMPTED", "DECIDED"];
    println!("{}", table(&header, rows));
}

/// A replica failure on one line: `worker-1 in incarnation 0: Error, exit code 3`.
pub(crate) fn failure_summary(f: &ReplicaFailure) -> String {
    let code = f
        .exit_code
        .map_or_else(|| "no exit code".to_string(), |c| format!("exit code {c}"));
    format!(
        "{}-{} in incarnation {}: {}, {code}",
        f.role, f.index, f.incarnation, f.reason
    )
}
