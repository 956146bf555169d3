//! A study's trials as PipelineRuns: reading an active trial's child back into the ledger,
//! and building, creating and stopping children.
//!
//! Only the children of active trials are read, one by name each, so a reconcile costs
//! `parallelTrials` reads however many trials the study has run. A trial's child is named
//! from the study and the trial ([`child_name`]); a promoted trial's later budgets get runs
//! of their own (`TRIAL-bBUDGET`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PartialObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use toucan_core::api::labels::{CHECKPOINTS_FROM_ANNOTATION, SOURCE_DIR_ANNOTATION};
use toucan_core::api::{ParamValue, PipelineRun, PipelineRunSpec, PipelineSpec, TuningStudy};
use toucan_core::manifest::{objective_of, objective_series, trial_run};
use toucan_core::records::{DocumentKind, Phase};
use toucan_core::tuning::{Study, Trial, TrialLedger, TrialState, child_name};

use super::{Note, STUDY_LABEL, TRIAL_LABEL};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::objects;

/// Children listed per page when a study's children are swept.
const SWEEP_PAGE: u32 = 200;
/// The longest label value Kubernetes takes.
const MAX_LABEL_VALUE: usize = 63;

/// What a study's trials are read and built from.
pub struct Template<'a> {
    pub study: &'a TuningStudy,
    pub name: &'a str,
    pub uid: &'a str,
    /// The Pipeline a `pipelineRef` names, with its name.
    pub referenced: Option<(&'a str, &'a PipelineSpec)>,
    /// Where that Pipeline's relative `path:` inputs are read from (its
    /// `toucan.dev/source-dir`), which every child run carries: a child holds the pipeline
    /// inline, so the run controller cannot look it up from the Pipeline.
    pub source_dir: Option<&'a str>,
    /// The step and output param the objective is read from.
    pub objective: (String, String),
    pub engine: &'a Study,
}

/// The name of the child that runs `trial`'s current budget.
pub fn child_of(study: &str, trial: &Trial) -> String {
    match trial.budget {
        Some(budget) if !trial.rungs.is_empty() => {
            child_name(study, &format!("{}-b{budget}", trial.name))
        }
        _ => child_name(study, &trial.name),
    }
}

/// The child that ran the budget a promoted trial completed last, whose checkpoints the
/// larger budget's run starts from; `None` for a trial never promoted.
pub fn previous_child(study: &str, trial: &Trial) -> Option<String> {
    let previous = trial.rungs.last()?.budget;
    if trial.budget == Some(previous) {
        return None;
    }
    Some(if trial.rungs.len() == 1 {
        child_name(study, &trial.name)
    } else {
        child_name(study, &format!("{}-b{previous}", trial.name))
    })
}

/// The study's name as a label value.
pub fn study_label(name: &str) -> String {
    let mut value: String = name.chars().take(MAX_LABEL_VALUE).collect();
    while value.ends_with(['-', '.', '_']) {
        value.pop();
    }
    value
}

/// Reads every active trial's child into the ledger (running, its objective series, its
/// result) and returns the indices of the active trials whose child exists. `run_ids` is
/// kept beside the ledger, one per trial.
pub async fn refresh(
    ctx: &Context,
    runs: &Api<PipelineRun>,
    t: &Template<'_>,
    ledger: &mut TrialLedger,
    run_ids: &mut [Option<String>],
    notes: &mut Vec<Note>,
) -> Result<BTreeSet<u32>> {
    let mut present = BTreeSet::new();
    let active: Vec<u32> = ledger
        .trials
        .iter()
        .filter(|t| t.state.is_active())
        .map(|t| t.index)
        .collect();
    for index in active {
        let trial = &ledger.trials[index as usize];
        let child = child_of(t.name, trial);
        let Some(run) = runs.get_opt(&child).await? else {
            if trial.state == TrialState::Running {
                fail(
                    ledger,
                    index,
                    notes,
                    format!("its PipelineRun {child} is gone"),
                )?;
            }
            continue;
        };
        if !owned_by(&run, t.uid) {
            fail(
                ledger,
                index,
                notes,
                format!("a PipelineRun named {child} that this study does not own is in the way"),
            )?;
            continue;
        }
        present.insert(index);
        let status = run.status.clone().unwrap_or_default();
        let Some(run_id) = status.run_id.clone().or_else(|| run.uid()) else {
            continue;
        };
        run_ids[index as usize] = Some(run_id.clone());
        let phase = status.phase.as_deref().and_then(Phase::parse);
        if run.metadata.deletion_timestamp.is_some() && !phase.is_some_and(Phase::is_terminal) {
            fail(
                ledger,
                index,
                notes,
                format!("its PipelineRun {child} was deleted"),
            )?;
            continue;
        }
        match phase {
            Some(Phase::Running) => {
                ledger.record_running(index).map_err(ledger_error)?;
                read_series(ctx, t, ledger, index, &run_id).await?;
            }
            Some(Phase::Succeeded) => {
                read_series(ctx, t, ledger, index, &run_id).await?;
                match read_objective(ctx, t, &run_id).await? {
                    Ok(objective) => {
                        ledger
                            .record_success(index, objective)
                            .map_err(ledger_error)?;
                    }
                    Err(why) => fail(ledger, index, notes, format!("{child}: {why}"))?,
                }
            }
            Some(p) if p.is_terminal() => {
                let why = status
                    .message
                    .unwrap_or_else(|| format!("its run ended {}", p.as_str()));
                fail(ledger, index, notes, format!("{child}: {why}"))?;
            }
            _ => {}
        }
    }
    Ok(present)
}

fn fail(ledger: &mut TrialLedger, index: u32, notes: &mut Vec<Note>, why: String) -> Result<()> {
    let name = ledger
        .trial(index)
        .map(|t| t.name.clone())
        .map_err(ledger_error)?;
    ledger.record_failure(index).map_err(ledger_error)?;
    notes.push(Note::warning("TrialFailed", format!("trial {name}: {why}")));
    Ok(())
}

pub fn ledger_error(e: toucan_core::tuning::TuningError) -> Error {
    Error::Ledger(e.to_string())
}

/// The objective series the objective's step pushed so far.
async fn read_series(
    ctx: &Context,
    t: &Template<'_>,
    ledger: &mut TrialLedger,
    index: u32,
    run_id: &str,
) -> Result<()> {
    let Some(body) = ctx
        .store
        .get_run_document(run_id, DocumentKind::Metrics, &t.objective.0)
        .await?
    else {
        return Ok(());
    };
    let epochs: Vec<serde_json::Map<String, serde_json::Value>> = body
        .get("epochs")
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default();
    let series = objective_series(&epochs, &t.study.spec.objective.metric);
    ledger.record_series(index, &series).map_err(ledger_error)?;
    Ok(())
}

/// The objective a succeeded run's step reported, or why there is none.
async fn read_objective(
    ctx: &Context,
    t: &Template<'_>,
    run_id: &str,
) -> Result<Result<f64, String>> {
    let (step, param) = &t.objective;
    let Some(record) = ctx.store.get_step(run_id, step).await? else {
        return Ok(Err(format!("its step {step:?} has no record")));
    };
    Ok(objective_of(&record, param))
}

/// The children of `study` (by UID) among `runs` whose finished trials are beyond the newest
/// `keep` ones, unless already being deleted.
pub fn expired(
    runs: &[Arc<PartialObjectMeta<PipelineRun>>],
    study: &str,
    ledger: &TrialLedger,
    keep: u32,
) -> Vec<String> {
    let expired: BTreeSet<u32> = ledger.expired_runs(keep).collect();
    if expired.is_empty() {
        return Vec::new();
    }
    runs.iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none() && owned_by(r.as_ref(), study))
        .filter(|r| {
            r.labels()
                .get(TRIAL_LABEL)
                .and_then(|i| i.parse().ok())
                .is_some_and(|i| expired.contains(&i))
        })
        .map(|r| r.name_any())
        .collect()
}

/// The PipelineRun that runs `trial`'s current budget, or why it cannot be made; a promoted
/// trial's (`run_id`: the store's id of its previous run) starts from that run's checkpoints.
pub fn child_run(
    t: &Template<'_>,
    trial: &Trial,
    run_id: Option<&str>,
) -> Result<PipelineRun, String> {
    let values = t.engine.trial_values(trial);
    let made = trial_run(t.name, &t.study.spec, t.referenced, &values)?;
    let owner = t
        .study
        .controller_owner_ref(&())
        .ok_or("the study has no uid yet")?;
    Ok(PipelineRun {
        metadata: ObjectMeta {
            name: Some(child_of(t.name, trial)),
            namespace: t.study.namespace(),
            labels: Some(BTreeMap::from([
                (STUDY_LABEL.to_string(), study_label(t.name)),
                (TRIAL_LABEL.to_string(), trial.index.to_string()),
            ])),
            annotations: annotations(t, trial, run_id),
            owner_references: Some(vec![OwnerReference {
                block_owner_deletion: Some(true),
                ..owner
            }]),
            ..ObjectMeta::default()
        },
        spec: PipelineRunSpec {
            pipeline_ref: None,
            pipeline_spec: Some(made.spec),
            params: made
                .params
                .into_iter()
                .map(|(name, value)| ParamValue { name, value })
                .collect(),
        },
        status: None,
    })
}

/// A child's annotations: where a promoted trial's checkpoints come from, and where the
/// Pipeline's `path:` inputs are read from.
fn annotations(
    t: &Template<'_>,
    trial: &Trial,
    run_id: Option<&str>,
) -> Option<BTreeMap<String, String>> {
    let checkpoints = previous_child(t.name, trial)
        .and(run_id)
        .map(|id| (CHECKPOINTS_FROM_ANNOTATION.to_string(), id.to_string()));
    let source = t
        .source_dir
        .map(|dir| (SOURCE_DIR_ANNOTATION.to_string(), dir.to_string()));
    let all: BTreeMap<String, String> = checkpoints.into_iter().chain(source).collect();
    (!all.is_empty()).then_some(all)
}

/// Creates a child; one already there (a repeated reconcile) is left as it is.
pub async fn create(runs: &Api<PipelineRun>, run: &PipelineRun) -> Result<()> {
    match runs.create(&PostParams::default(), run).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a trial's child, with its pods: a stopped trial's, which the run controller records
/// as cancelled, or a finished one's, whose records stay as they are.
pub async fn delete(runs: &Api<PipelineRun>, child: &str) -> Result<()> {
    objects::delete(runs, child, &DeleteParams::background()).await
}

/// Deletes the unfinished children of stopped trials, page by page: after a crash between
/// recording a stop and deleting the child, nothing else would. Run once per study and
/// operator start (and again after a failed stop).
pub async fn sweep(runs: &Api<PipelineRun>, t: &Template<'_>, ledger: &TrialLedger) -> Result<()> {
    let stopped: BTreeSet<u32> = ledger
        .trials
        .iter()
        .filter(|t| t.state == TrialState::Stopped)
        .map(|t| t.index)
        .collect();
    if stopped.is_empty() {
        return Ok(());
    }
    let mut params = ListParams::default()
        .labels(&format!("{STUDY_LABEL}={}", study_label(t.name)))
        .limit(SWEEP_PAGE);
    loop {
        let page = runs.list(&params).await?;
        for run in &page.items {
            let index = run
                .labels()
                .get(TRIAL_LABEL)
                .and_then(|i| i.parse::<u32>().ok());
            let finished = run
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .and_then(Phase::parse)
                .is_some_and(Phase::is_terminal);
            if let Some(index) = index
                && stopped.contains(&index)
                && owned_by(run, t.uid)
                && !finished
                && run.metadata.deletion_timestamp.is_none()
            {
                delete(runs, &run.name_any()).await?;
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

fn owned_by(run: &impl Resource, uid: &str) -> bool {
    run.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.kind == "TuningStudy")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use toucan_core::tuning::RungResult;

    use super::*;

    fn trial(budget: Option<u64>, rungs: &[u64]) -> Trial {
        Trial {
            index: 3,
            name: "3-0123456789".into(),
            params: BTreeMap::new(),
            state: TrialState::Pending,
            budget,
            bracket: None,
            series: Vec::new(),
            objective: None,
            rungs: rungs
                .iter()
                .map(|&budget| RungResult {
                    budget,
                    objective: 0.5,
                })
                .collect(),
        }
    }

    #[test]
    fn a_promoted_trial_runs_each_budget_in_a_run_of_its_own() {
        assert_eq!(child_of("fmnist", &trial(None, &[])), "fmnist-3-0123456789");
        assert_eq!(
            child_of("fmnist", &trial(Some(1), &[])),
            "fmnist-3-0123456789"
        );
        assert_eq!(
            child_of("fmnist", &trial(Some(3), &[1])),
            "fmnist-3-0123456789-b3"
        );
        assert_eq!(
            child_of("fmnist", &trial(Some(9), &[1, 3])),
            "fmnist-3-0123456789-b9"
        );
        // Each budget's run starts from the checkpoints of the run before it.
        assert_eq!(previous_child("fmnist", &trial(Some(1), &[])), None);
        assert_eq!(previous_child("fmnist", &trial(Some(1), &[1])), None);
        assert_eq!(
            previous_child("fmnist", &trial(Some(3), &[1])).as_deref(),
            Some("fmnist-3-0123456789")
        );
        assert_eq!(
            previous_child("fmnist", &trial(Some(9), &[1, 3])).as_deref(),
            Some("fmnist-3-0123456789-b3")
        );
        let long = child_of(&"s".repeat(80), &trial(Some(27), &[9]));
        assert!(
            long.len() <= 63 && long.ends_with("-3-0123456789-b27"),
            "{long}"
        );
    }

    #[test]
    fn a_study_label_is_a_valid_label_value() {
        assert_eq!(study_label("fmnist"), "fmnist");
        let long = format!("{}-x", "a".repeat(62));
        assert_eq!(study_label(&long), "a".repeat(62));
    }
}
