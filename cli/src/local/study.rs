//! The local runtime of a TuningStudy: its trials as runs on this machine, `parallelTrials` at
//! a time, with the engine the operator uses.
//!
//! The loop: hand the engine the ledger ([`Study::decide`]), record its decisions in the
//! ledger and write every trial they changed to the store, then carry them out — a new trial
//! becomes a run (its pipeline made concrete by `manifest::trial_run`, driven like any run by
//! [`super::drive_until`]), a stopped trial's run is cancelled — and wait for a trial's run to
//! end, a tick (to read the metrics running trials append, for median stopping), or Ctrl-C.
//! A finished run's objective is read from the step output it comes from and recorded before
//! the next decision. Decisions are written before they are carried out, so a study that
//! crashed or was interrupted continues with `toucan run --resume STUDY_ID`: the runs of its
//! active trials are resumed, and it runs the same trials as a study that never stopped.
//!
//! A trial of a multi-fidelity study (ASHA, Hyperband) keeps its steps' checkpoints in a folder
//! of its own (`studies/STUDY/INDEX/STEP` under the home) rather than in a run's: when it is
//! promoted, the run of its larger budget finds them, and a step that resumes from its newest
//! checkpoint (`toucan-worker train --resume --keep-checkpoints`) trains on from the epoch the
//! smaller budget reached.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use toucan_core::api::{PipelineSpec, TuningStudySpec};
use toucan_core::engine::{Run, RunPlan};
use toucan_core::launch::METRICS_FILE;
use toucan_core::manifest;
use toucan_core::records::{ArtifactRef, Phase, StudyRecord, TrialRecord};
use toucan_core::time::now_ms;
use toucan_core::tuning::{
    Algorithm, Decisions, StopReason, Study, StudyEnd, Trial, TrialLedger, TrialState,
    WarmStartStudy,
};
use toucan_store::metadata::MetadataStore;

use super::executor::Executor;
use super::progress::Progress;
use crate::home::Home;

/// How often running trials' metrics are read for median stopping.
const METRICS_TICK: Duration = Duration::from_secs(1);

/// What a study runs, as the store keeps it (the study record's spec): enough to resume it
/// without its files.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StudyDocument {
    pub spec: TuningStudySpec,
    /// The Pipeline `spec.trial.pipelineRef` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<NamedPipeline>,
    /// The directory `path:` inputs of the trials' pipeline are relative to.
    pub base_dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NamedPipeline {
    pub name: String,
    pub spec: PipelineSpec,
}

/// What every trial's run shares.
#[derive(Debug)]
pub struct StudyContext {
    pub home: Home,
    pub store: Arc<dyn MetadataStore>,
    /// The launcher that wraps each step attempt.
    pub launcher: PathBuf,
    /// Steps at once within one trial's run.
    pub parallelism: usize,
    pub started: Instant,
}

/// A trial's run that ended.
struct Ended {
    index: u32,
    run_id: String,
    result: anyhow::Result<Phase>,
}

/// The study's state in this process.
struct Driver {
    ctx: Arc<StudyContext>,
    record: StudyRecord,
    doc: StudyDocument,
    study: Study,
    ledger: TrialLedger,
    /// The run of each trial's current budget.
    runs: BTreeMap<u32, String>,
    /// The cancel switch of each trial whose run is being driven.
    running: HashMap<u32, watch::Sender<bool>>,
    /// `path:` inputs, imported once for every trial.
    local_inputs: Option<BTreeMap<String, BTreeMap<String, ArtifactRef>>>,
    ended: mpsc::UnboundedSender<Ended>,
    progress: Progress,
}

/// The ledger of a study from its trial rows, with the runs they became.
pub fn ledger_of(records: Vec<TrialRecord>) -> (TrialLedger, BTreeMap<u32, String>) {
    let mut runs = BTreeMap::new();
    let mut ledger = TrialLedger::new();
    for r in records {
        if let Some(run) = r.run_id {
            runs.insert(r.trial.index, run);
        }
        ledger.trials.push(r.trial);
    }
    (ledger, runs)
}

/// The trials of the studies `spec.warmStart` names, newest study of each name.
pub async fn warm_start(
    store: &dyn MetadataStore,
    spec: &TuningStudySpec,
) -> anyhow::Result<Result<Vec<WarmStartStudy>, String>> {
    let mut out = Vec::new();
    for (i, w) in spec.warm_start.iter().enumerate() {
        let Some(earlier) = store.list_studies(Some(&w.study), 1).await?.pop() else {
            return Ok(Err(format!(
                "spec.warmStart[{i}].study: no study {:?} in this store",
                w.study
            )));
        };
        let doc: StudyDocument = serde_json::from_value(earlier.spec)
            .with_context(|| format!("reading study {}", earlier.id))?;
        let (ledger, _) = ledger_of(store.list_trials(&earlier.id).await?);
        out.push(WarmStartStudy {
            study: w.study.clone(),
            parameters: doc.spec.parameters,
            trials: ledger.trials,
        });
    }
    Ok(Ok(out))
}

/// Runs the study to its end (or until Ctrl-C) from the ledger recorded so far; returns its
/// phase (its message is in the store).
pub async fn drive_study(
    ctx: Arc<StudyContext>,
    record: StudyRecord,
    doc: StudyDocument,
    ledger: TrialLedger,
    runs: BTreeMap<u32, String>,
) -> anyhow::Result<Phase> {
    let study = Study::new(&doc.spec.engine_spec())
        .map_err(|e| anyhow::anyhow!("study {}: {e}", record.name))?;
    let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
    let progress = Progress::labelled(format!("study {}", record.name), ctx.started);
    let mut driver = Driver {
        ctx,
        record,
        doc,
        study,
        ledger,
        runs,
        running: HashMap::new(),
        local_inputs: None,
        ended: ended_tx,
        progress,
    };
    let (interrupt_tx, mut interrupt) = watch::channel(false);
    let mut signals = super::Signals::new()?;
    let listener = tokio::spawn(async move {
        signals.next().await;
        let _ = interrupt_tx.send(true);
        std::future::pending::<()>().await;
    });
    let outcome = driver.run(&mut ended_rx, &mut interrupt).await;
    listener.abort();
    outcome
}

impl Driver {
    async fn run(
        &mut self,
        ended_rx: &mut mpsc::UnboundedReceiver<Ended>,
        interrupt: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Phase> {
        self.resume_active().await?;
        let deadline = self.doc.spec.deadline_after(self.record.created_at);
        let mut end: Option<StudyEnd> = None;
        let mut tick = tokio::time::interval(METRICS_TICK);
        loop {
            if end.is_none() {
                let decisions = self
                    .study
                    .decide_at(&self.ledger, deadline, now_ms())
                    .map_err(|e| anyhow::anyhow!("study {}: {e}", self.record.name))?;
                end = decisions.end.clone();
                self.carry_out(decisions).await?;
            }
            if let (true, Some(end)) = (self.running.is_empty(), &end) {
                return self.finish(end.clone()).await;
            }
            let until_deadline = async {
                match deadline {
                    Some(at) if end.is_none() => {
                        let ms = (at - now_ms()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(ms)).await
                    }
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(ended) = ended_rx.recv() => self.record_end(ended).await?,
                // The next pass ends the study.
                () = until_deadline => {}
                _ = tick.tick(), if self.study.median_stopping.is_some() => {
                    self.read_metrics().await?;
                }
                Ok(()) = interrupt.changed() => {
                    return self.interrupted(ended_rx).await;
                }
            }
        }
    }

    /// After `--resume`: the runs of trials that were active go on (their succeeded steps
    /// reused); trials that never got a run start.
    async fn resume_active(&mut self) -> anyhow::Result<()> {
        let active: Vec<u32> = self
            .ledger
            .trials
            .iter()
            .filter(|t| t.state.is_active())
            .map(|t| t.index)
            .collect();
        for index in active {
            match self.runs.get(&index).cloned() {
                Some(run_id) => self.resume_trial(index, &run_id).await?,
                None => self.start_trial(index).await?,
            }
        }
        Ok(())
    }

    /// Records the decisions, writes the trials they changed, then carries them out.
    async fn carry_out(&mut self, d: Decisions) -> anyhow::Result<()> {
        if d.start.is_empty() && d.stop.is_empty() && d.promote.is_empty() {
            return Ok(());
        }
        self.ledger
            .apply(&d)
            .map_err(|e| anyhow::anyhow!("study {}: {e}", self.record.name))?;
        let mut changed: Vec<u32> = d.start.iter().map(|s| s.index).collect();
        changed.extend(d.stop.iter().map(|s| s.index));
        changed.extend(d.promote.iter().map(|p| p.index));
        for p in &d.promote {
            // The larger budget is a new run of its own.
            self.runs.remove(&p.index);
        }
        self.save(&changed).await?;
        for stop in &d.stop {
            if let Some(cancel) = self.running.get(&stop.index) {
                let _ = cancel.send(true);
            }
            let why = match &stop.reason {
                StopReason::Median { step, best, median } => format!(
                    "stopped at step {step}: its best {best:.6} is worse than the median {median:.6}"
                ),
                StopReason::StudyEnded => "stopped: the study ended".to_string(),
            };
            self.progress.note(&format!("trial {} {why}", stop.name));
        }
        for index in d
            .promote
            .iter()
            .map(|p| p.index)
            .chain(d.start.iter().map(|s| s.index))
        {
            self.start_trial(index).await?;
        }
        Ok(())
    }

    /// Writes trials to the store, with their runs.
    async fn save(&self, indices: &[u32]) -> anyhow::Result<()> {
        let now = now_ms();
        let records: Vec<TrialRecord> = indices
            .iter()
            .filter_map(|&i| self.ledger.trials.get(i as usize))
            .map(|t| TrialRecord {
                study_id: self.record.id.clone(),
                trial: t.clone(),
                run_id: self.runs.get(&t.index).cloned(),
                updated_at: now,
            })
            .collect();
        self.ctx.store.put_trials(&records).await?;
        Ok(())
    }

    /// Creates the run of a trial's current budget, records it, and drives it.
    async fn start_trial(&mut self, index: u32) -> anyhow::Result<()> {
        let trial = self.trial(index)?.clone();
        let values = self.study.trial_values(&trial);
        let referenced = self
            .doc
            .pipeline
            .as_ref()
            .map(|p| (p.name.as_str(), &p.spec));
        let made = manifest::trial_run(&self.record.name, &self.doc.spec, referenced, &values);
        let plan = match made {
            Ok(r) => RunPlan::new(&r.pipeline, r.spec, r.params),
            Err(message) => {
                self.progress
                    .note(&format!("trial {} failed: {message}", trial.name));
                self.fail(index).await?;
                return Ok(());
            }
        };
        let plan = self.with_local_inputs(plan).await?;
        let run_id = ulid::Ulid::new().to_string().to_lowercase();
        let (run, effects) = Run::start(&run_id, plan, now_ms(), self.ctx.parallelism)
            .context("recording a trial's plan")?;
        self.runs.insert(index, run_id.clone());
        self.ledger
            .record_running(index)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.save(&[index]).await?;
        let shown: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.progress.note(&format!(
            "trial {} started as run {run_id}: {}",
            trial.name,
            shown.join(" ")
        ));
        self.spawn(index, run_id, run, effects);
        Ok(())
    }

    async fn resume_trial(&mut self, index: u32, run_id: &str) -> anyhow::Result<()> {
        let Some(record) = self.ctx.store.get_run(run_id).await? else {
            return self.start_trial(index).await;
        };
        if record.phase == Phase::Succeeded {
            let ended = Ended {
                index,
                run_id: run_id.to_string(),
                result: Ok(Phase::Succeeded),
            };
            let _ = self.ended.send(ended);
            let (cancel, _) = watch::channel(false);
            self.running.insert(index, cancel);
            return Ok(());
        }
        let plan: RunPlan = serde_json::from_value(record.spec.clone())
            .with_context(|| format!("reading the plan of run {run_id}"))?;
        let steps = self.ctx.store.list_steps(run_id).await?;
        let (run, effects) = Run::resume(run_id, plan, &steps, now_ms(), self.ctx.parallelism);
        self.progress.note(&format!(
            "trial {} resumed as run {run_id}",
            self.trial(index)?.name
        ));
        self.spawn(index, run_id.to_string(), run, effects);
        Ok(())
    }

    fn spawn(
        &mut self,
        index: u32,
        run_id: String,
        run: Run,
        effects: Vec<toucan_core::engine::run::Effect>,
    ) {
        let (cancel_tx, cancel) = watch::channel(false);
        self.running.insert(index, cancel_tx);
        let label = format!("trial {}", self.ledger.trials[index as usize].name);
        let exec = Arc::new(Executor {
            store: self.ctx.store.clone(),
            artifacts: match self.ctx.home.open_artifacts() {
                Ok(a) => a,
                Err(e) => {
                    let _ = self.ended.send(Ended {
                        index,
                        run_id,
                        result: Err(e),
                    });
                    return;
                }
            },
            launcher: self.ctx.launcher.clone(),
            home: self.ctx.home.clone(),
            run_id: run_id.clone(),
            progress: Arc::new(Progress::labelled(label, self.ctx.started)),
            checkpoints: self.multi_fidelity().then(|| {
                let root = &self.ctx.home.root;
                root.join("studies")
                    .join(&self.record.id)
                    .join(index.to_string())
            }),
        });
        let ended = self.ended.clone();
        tokio::spawn(async move {
            let result = super::drive_until(exec, run, effects, cancel).await;
            let _ = ended.send(Ended {
                index,
                run_id,
                result,
            });
        });
    }

    /// ASHA or Hyperband: a trial runs again with a larger budget when promoted.
    fn multi_fidelity(&self) -> bool {
        matches!(
            self.study.algorithm,
            Algorithm::Asha(_) | Algorithm::Hyperband(_)
        )
    }

    /// The trials' `path:` inputs, imported once (the same files for every trial).
    async fn with_local_inputs(&mut self, plan: RunPlan) -> anyhow::Result<RunPlan> {
        if let Some(inputs) = &self.local_inputs {
            let mut plan = plan;
            plan.local_inputs = inputs.clone();
            return Ok(plan);
        }
        let artifacts = self.ctx.home.open_artifacts()?;
        let plan =
            crate::commands::run::import_local_inputs(plan, &self.doc.base_dir, &artifacts).await?;
        self.local_inputs = Some(plan.local_inputs.clone());
        Ok(plan)
    }

    fn trial(&self, index: u32) -> anyhow::Result<&Trial> {
        self.ledger
            .trial(index)
            .map_err(|e| anyhow::anyhow!("study {}: {e}", self.record.name))
    }

    async fn fail(&mut self, index: u32) -> anyhow::Result<()> {
        self.ledger
            .record_failure(index)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        self.save(&[index]).await
    }

    /// A trial's run ended: its objective, or its failure, goes in the ledger.
    async fn record_end(&mut self, ended: Ended) -> anyhow::Result<()> {
        self.running.remove(&ended.index);
        let trial = self.trial(ended.index)?.clone();
        if trial.state == TrialState::Stopped {
            // Cancelled by the study: it stays stopped, with the series it reached.
            return Ok(());
        }
        let phase = match ended.result {
            Ok(phase) => phase,
            Err(e) => {
                self.progress
                    .note(&format!("trial {} failed: {e:#}", trial.name));
                return self.fail(ended.index).await;
            }
        };
        if phase != Phase::Succeeded {
            self.progress.note(&format!(
                "trial {} failed: run {} {phase}",
                trial.name, ended.run_id
            ));
            return self.fail(ended.index).await;
        }
        self.read_trial_metrics(ended.index, &ended.run_id).await?;
        match self.objective(&ended.run_id).await? {
            Ok(value) => {
                self.ledger
                    .record_success(ended.index, value)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                self.progress.note(&format!(
                    "trial {} succeeded: {} = {value}",
                    trial.name, self.doc.spec.objective.metric
                ));
                self.save(&[ended.index]).await
            }
            Err(message) => {
                self.progress
                    .note(&format!("trial {} failed: {message}", trial.name));
                self.fail(ended.index).await
            }
        }
    }

    /// The pipeline a trial ran (its steps named as in every trial).
    fn pipeline(&self) -> Option<PipelineSpec> {
        match &self.doc.pipeline {
            Some(p) => Some(p.spec.clone()),
            None => self.doc.spec.trial.pipeline(),
        }
    }

    /// The objective of a succeeded run, from the step output param it comes from.
    async fn objective(&self, run_id: &str) -> anyhow::Result<Result<f64, String>> {
        let Some((step, param)) = self
            .pipeline()
            .and_then(|p| manifest::objective_source(&self.doc.spec, &p))
        else {
            return Ok(Err(
                "the trial's pipeline has no step to read the objective from".into(),
            ));
        };
        let Some(record) = self.ctx.store.get_step(run_id, &step).await? else {
            return Ok(Err(format!("run {run_id} has no step {step:?}")));
        };
        Ok(manifest::objective_of(&record, &param))
    }

    /// The objective series running trials appended to their metrics files, for median
    /// stopping.
    async fn read_metrics(&mut self) -> anyhow::Result<()> {
        let running: Vec<(u32, String)> = self
            .running
            .keys()
            .filter_map(|i| Some((*i, self.runs.get(i)?.clone())))
            .collect();
        let mut changed = Vec::new();
        for (index, run_id) in running {
            if self.read_trial_metrics(index, &run_id).await? {
                changed.push(index);
            }
        }
        self.save(&changed).await
    }

    /// Reads one trial's series from the newest attempt of its objective step; whether it
    /// grew.
    async fn read_trial_metrics(&mut self, index: u32, run_id: &str) -> anyhow::Result<bool> {
        let Some((step, _)) = self
            .pipeline()
            .and_then(|p| manifest::objective_source(&self.doc.spec, &p))
        else {
            return Ok(false);
        };
        let Some(record) = self.ctx.store.get_step(run_id, &step).await? else {
            return Ok(false);
        };
        let attempt = record.attempts.max(1);
        let path = self
            .ctx
            .home
            .attempt_dir(run_id, &step, attempt)
            .join(METRICS_FILE);
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        let points: Vec<serde_json::Map<String, serde_json::Value>> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let series = manifest::objective_series(&points, &self.doc.spec.objective.metric);
        self.ledger
            .record_series(index, &series)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Ctrl-C: every trial's run is cancelled and waited for; the study can be resumed.
    async fn interrupted(
        &mut self,
        ended_rx: &mut mpsc::UnboundedReceiver<Ended>,
    ) -> anyhow::Result<Phase> {
        self.progress.note(&format!(
            "interrupted: cancelling {} running trial(s)",
            self.running.len()
        ));
        for cancel in self.running.values() {
            let _ = cancel.send(true);
        }
        while !self.running.is_empty() {
            match ended_rx.recv().await {
                Some(ended) => {
                    self.running.remove(&ended.index);
                }
                None => break,
            }
        }
        let message = format!(
            "interrupted; continue with `toucan run --resume {}`",
            self.record.id
        );
        self.ctx
            .store
            .set_study_phase(&self.record.id, Phase::Cancelled, Some(&message), None)
            .await?;
        Ok(Phase::Cancelled)
    }

    async fn finish(&mut self, end: StudyEnd) -> anyhow::Result<Phase> {
        let phase = end.phase();
        let message = end.message(&self.ledger, &self.doc.spec.objective.metric);
        self.ctx
            .store
            .set_study_phase(&self.record.id, phase, Some(&message), Some(now_ms()))
            .await?;
        self.progress.note(&message);
        Ok(phase)
    }
}
