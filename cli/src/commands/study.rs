//! Studies on this machine: `toucan run study.yaml` (and `--resume STUDY_ID`), `toucan get
//! trials STUDY` and `toucan describe study STUDY`. The trials run through
//! `crate::local::study`; everything printed here is read back from the metadata store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use toucan_core::api::TrialCounts;
use toucan_core::manifest::{self, Diagnostic, StudyTarget};
use toucan_core::records::{Phase, StudyRecord, TrialRecord};
use toucan_core::time::now_ms;
use toucan_core::tuning::{Goal, ObjectiveSpec, ParamValue, Study, TrialLedger, importances};
use toucan_store::metadata::MetadataStore;

use crate::Outcome;
use crate::home::Home;
use crate::local::study::{
    NamedPipeline, StudyContext, StudyDocument, drive_study, ledger_of, warm_start,
};
use crate::output::{Format, metric, print_structured, sparkline, table, timestamp};

/// One trial as the commands print it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrialDoc {
    pub index: u32,
    pub name: String,
    pub state: String,
    pub params: BTreeMap<String, ParamValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<u64>,
    /// The run of its current budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// A study with every trial, as `run -o json` and `describe study -o json` print it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StudyDoc {
    pub id: String,
    pub name: String,
    pub phase: Phase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub objective: ObjectiveSpec,
    pub counts: TrialCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best: Option<TrialDoc>,
    /// Each parameter's share of the objective's variation (see `tuning::importances`).
    pub importances: Vec<(String, f64)>,
    pub trials: Vec<TrialDoc>,
}

/// `toucan run FILE` when the files hold a TuningStudy; `None` when they hold none.
pub async fn run_file(
    file: &Path,
    parallelism: usize,
    format: Format,
) -> anyhow::Result<Option<Outcome>> {
    let docs = match manifest::load(&[file.to_path_buf()]) {
        Ok(d) => d,
        // The pipeline path reports them.
        Err(_) => return Ok(None),
    };
    let target = match manifest::select_study(&docs) {
        None => return Ok(None),
        Some(Ok(t)) => t,
        Some(Err(diagnostics)) => {
            return Ok(Some(super::invalid_input(
                &diagnostics,
                Some("nothing was run"),
            )));
        }
    };
    let missing: Vec<Diagnostic> = docs
        .iter()
        .flat_map(super::run::missing_local_inputs)
        .collect();
    if !missing.is_empty() {
        return Ok(Some(super::invalid_input(
            &missing,
            Some("nothing was run"),
        )));
    }
    let home = Home::locate();
    let store = home.open_store().await?;
    let doc = document(&target)?;
    let ledger = match start_ledger(store.as_ref(), &doc, &target).await? {
        Ok(l) => l,
        Err(d) => return Ok(Some(super::invalid_input(&[d], Some("nothing was run")))),
    };
    let record = StudyRecord {
        id: ulid::Ulid::new().to_string().to_lowercase(),
        name: target.name.clone(),
        phase: Phase::Running,
        spec: serde_json::to_value(&doc)?,
        created_at: now_ms(),
        finished_at: None,
        message: None,
    };
    store.create_study(&record).await?;
    eprintln!(
        "study {} ({}): {} trials at most, {} at a time",
        record.name,
        record.id,
        doc.spec.budget.max_trials,
        doc.spec.engine_spec().budget.parallel_trials
    );
    drive(
        home,
        store,
        record,
        doc,
        ledger,
        Default::default(),
        parallelism,
        format,
    )
    .await
    .map(Some)
}

/// `toucan run --resume ID` when ID is a study's; `None` when it is not.
pub async fn resume(
    id: &str,
    parallelism: usize,
    format: Format,
) -> anyhow::Result<Option<Outcome>> {
    let home = Home::locate();
    let store = home.open_existing_store().await?;
    let Some(mut record) = store.get_study(id).await? else {
        return Ok(None);
    };
    if record.phase == Phase::Succeeded {
        eprintln!("error: study {id} is Succeeded; there is nothing to resume");
        return Ok(Some(Outcome::InvalidInput));
    }
    let doc: StudyDocument = serde_json::from_value(record.spec.clone())
        .with_context(|| format!("reading study {id}"))?;
    let (mut ledger, runs) = ledger_of(store.list_trials(id).await?);
    match warm_start(store.as_ref(), &doc.spec).await? {
        Ok(w) => ledger.warm_start = w,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(Some(Outcome::InvalidInput));
        }
    }
    record.phase = Phase::Running;
    store
        .set_study_phase(id, Phase::Running, None, None)
        .await?;
    eprintln!(
        "study {} ({id}): resuming with {} trial(s) recorded",
        record.name,
        ledger.trials.len()
    );
    drive(home, store, record, doc, ledger, runs, parallelism, format)
        .await
        .map(Some)
}

fn document(target: &StudyTarget) -> anyhow::Result<StudyDocument> {
    let base_dir = target
        .base_dir
        .canonicalize()
        .unwrap_or_else(|_| target.base_dir.clone());
    Ok(StudyDocument {
        spec: target.spec.clone(),
        pipeline: target.pipeline.as_ref().map(|(name, spec)| NamedPipeline {
            name: name.clone(),
            spec: spec.clone(),
        }),
        base_dir,
    })
}

/// A new study's ledger: no trials, the warm-start studies' trials, checked against the
/// space before anything runs.
async fn start_ledger(
    store: &dyn MetadataStore,
    doc: &StudyDocument,
    target: &StudyTarget,
) -> anyhow::Result<Result<TrialLedger, Diagnostic>> {
    let at = |path: &str, message: String| Diagnostic {
        source: target.source.clone(),
        path: path.to_string(),
        message,
    };
    let mut ledger = TrialLedger::new();
    match warm_start(store, &doc.spec).await? {
        Ok(w) => ledger.warm_start = w,
        Err(message) => {
            let (path, message) = message
                .split_once(": ")
                .unwrap_or(("spec.warmStart", &message));
            return Ok(Err(at(path, message.to_string())));
        }
    }
    let study = Study::new(&doc.spec.engine_spec()).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Err(e) = study.decide(&ledger) {
        return Ok(Err(at("spec.warmStart", e.to_string())));
    }
    Ok(Ok(ledger))
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    home: Home,
    store: Arc<dyn MetadataStore>,
    record: StudyRecord,
    doc: StudyDocument,
    ledger: TrialLedger,
    runs: BTreeMap<u32, String>,
    parallelism: usize,
    format: Format,
) -> anyhow::Result<Outcome> {
    let ctx = Arc::new(StudyContext {
        home,
        store: store.clone(),
        launcher: super::run::launcher_binary()?,
        parallelism,
        started: Instant::now(),
    });
    let id = record.id.clone();
    let phase = drive_study(ctx, record, doc, ledger, runs).await?;
    let study = load(store.as_ref(), &id).await?;
    match format {
        Format::Table => print_table(&study),
        format => print_structured(format, &study)?,
    }
    Ok(match phase {
        Phase::Succeeded => Outcome::Success,
        _ => Outcome::RunFailed,
    })
}

/// A study and its trials, read back from the store.
pub async fn load(store: &dyn MetadataStore, id: &str) -> anyhow::Result<StudyDoc> {
    let record = store
        .get_study(id)
        .await?
        .with_context(|| format!("no study {id:?}"))?;
    let doc: StudyDocument = serde_json::from_value(record.spec.clone())
        .with_context(|| format!("reading study {id}"))?;
    let trials = store.list_trials(id).await?;
    Ok(study_doc(record, doc.spec.objective, trials))
}

/// A study as the commands print it, from its record and trial rows (from the store, or
/// from a cluster's control-plane API).
pub fn study_doc(
    record: StudyRecord,
    objective: ObjectiveSpec,
    rows: Vec<TrialRecord>,
) -> StudyDoc {
    let (ledger, runs) = ledger_of(rows);
    let trials: Vec<TrialDoc> = ledger
        .trials
        .iter()
        .map(|t| TrialDoc {
            index: t.index,
            name: t.name.clone(),
            state: t.state.as_str().to_string(),
            params: t.params.clone(),
            objective: t.objective,
            budget: t.budget,
            run: runs.get(&t.index).cloned(),
        })
        .collect();
    let best = ledger
        .best(objective.goal)
        .and_then(|b| trials.get(b.index as usize))
        .cloned();
    StudyDoc {
        id: record.id,
        name: record.name,
        phase: record.phase,
        message: record.message,
        created_at: timestamp(record.created_at),
        finished_at: record.finished_at.map(timestamp),
        objective,
        counts: TrialCounts::of(&ledger),
        best,
        importances: importances(&ledger),
        trials,
    }
}

/// A study's id from an id or a name (the newest study of that name).
async fn find(store: &dyn MetadataStore, id_or_name: &str) -> anyhow::Result<Option<String>> {
    if store.get_study(id_or_name).await?.is_some() {
        return Ok(Some(id_or_name.to_string()));
    }
    Ok(store
        .list_studies(Some(id_or_name), 1)
        .await?
        .pop()
        .map(|s| s.id))
}

/// `toucan get trials STUDY`.
pub async fn get_trials(study: &str, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let Some(id) = find(store.as_ref(), study).await? else {
        eprintln!("error: no study {study:?}");
        return Ok(Outcome::InvalidInput);
    };
    let doc = load(store.as_ref(), &id).await?;
    match format {
        Format::Table => println!("{}", trials_table(&doc)),
        format => print_structured(format, &doc.trials)?,
    }
    Ok(Outcome::Success)
}

/// `toucan describe study STUDY`.
pub async fn describe_study(study: &str, format: Format) -> anyhow::Result<Outcome> {
    let store = Home::locate().open_existing_store().await?;
    let Some(id) = find(store.as_ref(), study).await? else {
        eprintln!("error: no study {study:?}");
        return Ok(Outcome::InvalidInput);
    };
    let doc = load(store.as_ref(), &id).await?;
    match format {
        Format::Table => print_description(&doc),
        format => print_structured(format, &doc)?,
    }
    Ok(Outcome::Success)
}

/// One row per trial: its name, state, objective, each parameter, and its run.
pub fn trials_table(doc: &StudyDoc) -> String {
    let mut names: Vec<String> = Vec::new();
    for t in &doc.trials {
        for k in t.params.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
    }
    let mut header = vec!["TRIAL", "STATE", doc.objective.metric.as_str()];
    header.extend(names.iter().map(String::as_str));
    header.push("RUN");
    let rows = doc
        .trials
        .iter()
        .map(|t| {
            let mut row = vec![
                t.name.clone(),
                t.state.clone(),
                t.objective.map(metric).unwrap_or_default(),
            ];
            row.extend(
                names
                    .iter()
                    .map(|n| t.params.get(n).map(short).unwrap_or_default()),
            );
            row.push(t.run.clone().unwrap_or_default());
            row
        })
        .collect();
    table(&header, rows)
}

fn short(value: &ParamValue) -> String {
    match value {
        ParamValue::Float(x) => format!("{x:.4e}")
            .parse::<f64>()
            .map_or_else(|_| x.to_string(), |v| v.to_string()),
        other => other.to_string(),
    }
}

fn print_table(doc: &StudyDoc) {
    println!("{}", trials_table(doc));
    println!();
    print_summary(doc);
}

fn print_summary(doc: &StudyDoc) {
    println!("study {} ({}): {}", doc.name, doc.id, doc.phase.as_str());
    if let Some(m) = &doc.message {
        println!("  {m}");
    }
    if let Some(best) = &doc.best {
        let params: Vec<String> = best
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "best: {} {} = {}  {}",
            best.name,
            doc.objective.metric,
            best.objective.map(metric).unwrap_or_default(),
            params.join(" ")
        );
    }
}

pub fn print_description(doc: &StudyDoc) {
    print_summary(doc);
    let c = &doc.counts;
    println!(
        "objective: {} {}\ntrials: {} ({} succeeded, {} failed, {} stopped, {} running, {} pending)",
        match doc.objective.goal {
            Goal::Maximize => "maximize",
            Goal::Minimize => "minimize",
        },
        doc.objective.metric,
        doc.trials.len(),
        c.succeeded,
        c.failed,
        c.stopped,
        c.running,
        c.pending
    );
    let values: Vec<f64> = doc.trials.iter().filter_map(|t| t.objective).collect();
    if !values.is_empty() {
        let mut best_so_far = Vec::with_capacity(values.len());
        for &v in &values {
            let next = match best_so_far.last() {
                Some(&b) => better(doc.objective.goal, v, b),
                None => v,
            };
            best_so_far.push(next);
        }
        let (lo, hi) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        println!(
            "\nby trial     {}  ({} .. {})",
            sparkline(&values),
            metric(lo),
            metric(hi)
        );
        println!("best so far  {}", sparkline(&best_so_far));
    }
    if !doc.importances.is_empty() {
        println!("\nparameter importance (share of the objective's variation):");
        let width = doc
            .importances
            .iter()
            .map(|(n, _)| n.len())
            .max()
            .unwrap_or(0);
        for (name, share) in &doc.importances {
            let bar = "█".repeat((share * 30.0).round() as usize);
            println!("  {name:width$}  {share:5.2}  {bar}");
        }
    }
    println!("\n{}", trials_table(doc));
}

fn better(goal: Goal, a: f64, b: f64) -> f64 {
    match goal {
        Goal::Maximize => a.max(b),
        Goal::Minimize => a.min(b),
    }
}
