//! The endpoint's monitoring on this machine: the same loop the operator runs, over the local
//! store.
//!
//! Every [`pass_interval_ms`] the monitor reads the endpoint's samples (with their labels) of
//! the last [`lookback_ms`] and the drift reference, asks core for the figures and breaches
//! ([`assess`]), publishes the figures as gauges on the local API's `/metrics`, moves the
//! endpoint's alerts ([`advance`]) and stores them, and for each firing alert that has not
//! started a run asks core whether to retrain ([`retrain::decide`]). A retraining run is the
//! newest local run of the named pipeline, run again with the spec's parameters; when it
//! succeeds, its model (the same step and artifact as the serving version's) comes back to
//! the serve loop as a candidate, which rolls it out under `promote.rollout` and tells the
//! monitor how that ended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use toucan_api::GaugeBoard;
use toucan_core::api::{EndpointSpec, ModelRef, ModelVersion, RolloutSpec};
use toucan_core::engine::Run;
use toucan_core::engine::RunPlan;
use toucan_core::manifest::{self, Source};
use toucan_core::monitoring::alerts::{self, advance};
use toucan_core::monitoring::assess::{
    AssessInput, ReferenceRow, assess, lookback_ms, pass_interval_ms, quality_since,
    read_limit_problem,
};
use toucan_core::monitoring::drift::Embeddings;
use toucan_core::monitoring::embedding;
use toucan_core::monitoring::evaluation::LabelledSample;
use toucan_core::monitoring::retention::{self, EXPIRY_INTERVAL_MS};
use toucan_core::monitoring::retrain::{self, Alert, PastRetrain, Verdict};
use toucan_core::monitoring::spec::ReferenceSource;
use toucan_core::records::{AlertRecord, Millis, Phase};
use toucan_core::serving::rollout::QualityObservation;
use toucan_core::serving::spec::ModelSource;
use toucan_core::time::{now_ms, parse_rfc3339};
use toucan_store::metadata::{Expired, MetadataStore};

use crate::home::Home;
use crate::local::executor::Executor;
use crate::local::progress::Progress;

/// The most samples one pass reads.
const MAX_SAMPLES: u32 = 200_000;
/// The most alerts one pass reads back.
const MAX_ALERTS: u32 = 1_000;
/// How many of the newest runs are searched for the pipeline to retrain.
const RUNS_SEARCHED: u32 = 200;

/// A retrained model, ready to be rolled out.
#[derive(Debug)]
pub struct Retrained {
    /// The new version, its model named by the run's step output.
    pub version: ModelVersion,
    /// The model file and its digest.
    pub path: PathBuf,
    pub digest: String,
    /// How it is rolled out against the serving version.
    pub rollout: RolloutSpec,
    /// The alert that started it.
    pub alert: AlertKey,
}

/// Which alert episode something belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertKey {
    pub key: String,
    pub active_since: Millis,
}

/// A retraining run that ended.
struct Ended {
    alert: AlertKey,
    run: String,
    result: anyhow::Result<Phase>,
}

pub struct Monitor {
    name: String,
    store: Arc<dyn MetadataStore>,
    gauges: Arc<GaugeBoard>,
    home: Home,
    /// The endpoint's directory: retraining runs' sample files go under it.
    dir: PathBuf,
    reference: Option<Vec<ReferenceRow>>,
    /// Each model file's reference embeddings.
    embeddings: BTreeMap<PathBuf, Option<Embeddings>>,
    next_pass: Millis,
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    /// The runs going, to cancel on shutdown.
    running: Vec<watch::Sender<bool>>,
    /// Each version's evaluation since the rollout's step began (for evaluation gates).
    pub quality: BTreeMap<String, QualityObservation>,
    /// What the last pass could not judge (said again only when it changes).
    problems: Vec<String>,
    /// When samples and alerts past the retention are next deleted.
    next_expiry: Millis,
}

impl Monitor {
    pub fn new(
        name: &str,
        store: Arc<dyn MetadataStore>,
        gauges: Arc<GaugeBoard>,
        home: Home,
        dir: PathBuf,
    ) -> Monitor {
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        Monitor {
            name: name.to_string(),
            store,
            gauges,
            home,
            dir,
            reference: None,
            embeddings: BTreeMap::new(),
            next_pass: 0,
            ended_tx,
            ended_rx,
            running: Vec::new(),
            quality: BTreeMap::new(),
            problems: Vec::new(),
            next_expiry: 0,
        }
    }

    /// One tick of the serve loop: a pass when one is due, and the retraining runs that
    /// ended. Returns the models to roll out.
    pub async fn tick(
        &mut self,
        spec: &EndpointSpec,
        models: &BTreeMap<String, PathBuf>,
        step_since: Option<Millis>,
    ) -> anyhow::Result<Vec<Retrained>> {
        let mut retrained = Vec::new();
        while let Ok(ended) = self.ended_rx.try_recv() {
            if let Some(model) = self.run_ended(spec, ended).await? {
                retrained.push(model);
            }
        }
        let now = now_ms();
        if spec.monitoring.is_none() || now < self.next_pass {
            return Ok(retrained);
        }
        self.next_pass = now + pass_interval_ms(spec);
        self.pass(spec, models, step_since, now).await?;
        if now >= self.next_expiry
            && let Some(expiry) = retention::expiry(spec, now, step_since)
        {
            let gone = self
                .store
                .expire_monitoring(&self.name, expiry.samples_before, expiry.alerts_before)
                .await?;
            if gone != Expired::default() {
                eprintln!(
                    "endpoint {}: deleted {} samples, {} labels and {} alerts past the retention",
                    self.name, gone.samples, gone.labels, gone.alerts
                );
            }
            self.next_expiry = now + EXPIRY_INTERVAL_MS;
        }
        Ok(retrained)
    }

    async fn pass(
        &mut self,
        spec: &EndpointSpec,
        models: &BTreeMap<String, PathBuf>,
        step_since: Option<Millis>,
        now: Millis,
    ) -> anyhow::Result<()> {
        let since = now.saturating_sub(lookback_ms(spec));
        let since = step_since.map_or(since, |s| s.min(since));
        let samples = self
            .store
            .list_labelled_samples(&self.name, since..Millis::MAX, MAX_SAMPLES)
            .await?;
        let reference = self.reference(spec, now).await?;
        let mut problems: Vec<String> = read_limit_problem(&samples, MAX_SAMPLES)
            .into_iter()
            .collect();
        let mut embeddings = BTreeMap::new();
        if spec.monitoring.as_ref().is_some_and(|m| m.drift.is_some()) {
            for (version, path) in models {
                match self.model_embeddings(path) {
                    Ok(Some(e)) => {
                        embeddings.insert(version.clone(), e);
                    }
                    Ok(None) => {}
                    Err(e) => problems.push(format!("version {version}: {e:#}")),
                }
            }
        }
        self.embeddings
            .retain(|path, _| models.values().any(|p| p == path));
        let mut found = assess(&AssessInput {
            namespace: super::LOCAL_NAMESPACE,
            name: &self.name,
            spec,
            samples: &samples,
            reference: &reference,
            embeddings: &embeddings,
            now,
        });
        found.problems.extend(problems);
        if found.problems != self.problems {
            for problem in &found.problems {
                eprintln!("endpoint {}: monitoring: {problem}", self.name);
            }
            self.problems = found.problems.clone();
        }
        self.gauges.set(&self.name, found.series.clone());
        self.quality = match step_since {
            Some(since) => {
                let maturity = spec
                    .monitoring
                    .as_ref()
                    .and_then(|m| m.evaluation.as_ref())
                    .map_or(0, |e| Millis::try_from(e.maturity_ms()).unwrap_or(0));
                quality_since(&samples, since, maturity, now)
            }
            None => BTreeMap::new(),
        };

        let open = self
            .store
            .list_alerts(Some(&self.name), true, MAX_ALERTS)
            .await?;
        let changes = advance(
            &self.name,
            &open,
            &found.breaches,
            |kind| alerts::hold_ms(spec, kind),
            now,
        );
        for change in changes.iter().filter(|c| c.transition.is_some()) {
            eprintln!(
                "endpoint {}: alert {} {}: {}",
                self.name,
                change.record.key,
                change.record.phase.as_str(),
                change.record.summary
            );
        }
        let records: Vec<AlertRecord> = changes.into_iter().map(|c| c.record).collect();
        if !records.is_empty() {
            self.store.put_alerts(&records).await?;
        }
        self.retrain(spec, &samples, now).await
    }

    /// The drift reference's rows: the samples of the reference window (read once the
    /// window has ended), or nothing without drift monitoring.
    async fn reference(
        &mut self,
        spec: &EndpointSpec,
        now: Millis,
    ) -> anyhow::Result<Vec<ReferenceRow>> {
        if let Some(rows) = &self.reference {
            return Ok(rows.clone());
        }
        let Some(drift) = spec.monitoring.as_ref().and_then(|m| m.drift.as_ref()) else {
            return Ok(Vec::new());
        };
        match drift.reference.source() {
            Ok(ReferenceSource::Window(range)) => {
                let (Ok(start), Ok(end)) = (parse_rfc3339(&range.start), parse_rfc3339(&range.end))
                else {
                    return Ok(Vec::new());
                };
                let samples = self
                    .store
                    .list_labelled_samples(
                        &self.name,
                        toucan_core::monitoring::evaluation::join::stored_range(start..end),
                        MAX_SAMPLES,
                    )
                    .await?;
                let rows = ReferenceRow::of_samples(
                    samples
                        .iter()
                        .filter(|s| {
                            toucan_core::monitoring::evaluation::join::sample_time(&s.sample) < end
                        })
                        .map(|s| &s.sample.sample),
                );
                if now >= end {
                    self.reference = Some(rows.clone());
                }
                Ok(rows)
            }
            Ok(ReferenceSource::Dataset(source)) => {
                let rows = super::reference::dataset_rows(self.store.as_ref(), &self.home, source)
                    .await
                    .with_context(|| {
                        format!(
                            "reading the drift reference: step {:?} of run {:?}, artifact {:?}",
                            source.step, source.run, source.artifact
                        )
                    })?;
                self.reference = Some(rows.clone());
                Ok(rows)
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The reference embeddings a model carries (read once per model file).
    fn model_embeddings(&mut self, path: &Path) -> anyhow::Result<Option<Embeddings>> {
        if let Some(known) = self.embeddings.get(path) {
            return Ok(known.clone());
        }
        let read = model_embeddings(path)?;
        self.embeddings.insert(path.to_path_buf(), read.clone());
        Ok(read)
    }

    /// Asks core about every firing alert that has not started a run, oldest first.
    async fn retrain(
        &mut self,
        spec: &EndpointSpec,
        samples: &[LabelledSample],
        now: Millis,
    ) -> anyhow::Result<()> {
        let Some(retrain) = spec.monitoring.as_ref().and_then(|m| m.retrain.as_ref()) else {
            return Ok(());
        };
        let recorded = self
            .store
            .list_alerts(Some(&self.name), false, MAX_ALERTS)
            .await?;
        let mut history = Vec::new();
        for alert in recorded.iter().filter(|a| a.run.is_some()) {
            let run = alert.run.clone().unwrap_or_default();
            let record = self.store.get_run(&run).await?;
            history.push(PastRetrain {
                started_at: record.as_ref().map_or(alert.updated_at, |r| r.created_at),
                finished: record.is_none_or(|r| r.phase.is_terminal()),
                run,
            });
        }
        for alert in alerts::awaiting_retrain(&recorded) {
            let samples_file = self.window_samples(alert, samples, retrain)?;
            let seen = Alert {
                fingerprint: &alert.key,
                reason: &alert.summary,
                window_start: alert.window_start,
                window_end: alert.window_end,
                samples: &samples_file,
            };
            let verdict = retrain::decide(retrain, &self.name, &seen, &history, now)
                .map_err(|e| anyhow::anyhow!(e))?;
            let mut next = alert.clone();
            match verdict {
                Verdict::Start { run, params } => {
                    let given: Vec<(String, serde_json::Value)> =
                        params.into_iter().map(|p| (p.name, p.value)).collect();
                    match self
                        .start_run(&retrain.pipeline_ref.name, &run, &given)
                        .await
                    {
                        Ok(()) => {
                            eprintln!(
                                "endpoint {}: alert {} started retraining run {run}",
                                self.name, alert.key
                            );
                            next.action = Some(format!("started retraining run {run}"));
                            next.run = Some(run.clone());
                            history.push(PastRetrain {
                                run,
                                started_at: now,
                                finished: false,
                            });
                        }
                        Err(e) => {
                            next.action = Some(format!("could not retrain: {e:#}"));
                        }
                    }
                }
                Verdict::Hold {
                    reason, message, ..
                } => {
                    next.action = Some(format!("held ({}): {message}", reason.as_str()));
                }
            }
            if next != *alert {
                next.updated_at = now;
                self.store.put_alerts(std::slice::from_ref(&next)).await?;
            }
        }
        Ok(())
    }

    /// The labelled samples of the alert's window as a CSV file, when a parameter uses
    /// `{{alert.window.samples}}` (else an empty string).
    fn window_samples(
        &self,
        alert: &AlertRecord,
        samples: &[LabelledSample],
        retrain: &toucan_core::api::RetrainSpec,
    ) -> anyhow::Result<String> {
        let used = retrain.params.iter().any(|p| {
            p.value
                .as_str()
                .is_some_and(|s| s.contains("alert.window.samples"))
        });
        if !used {
            return Ok(String::new());
        }
        let path = self.dir.join("retrain").join(format!(
            "{}-{}.csv",
            alert.key.replace('/', "_"),
            alert.active_since
        ));
        let in_window: Vec<&LabelledSample> = samples
            .iter()
            .filter(|s| {
                let at = toucan_core::monitoring::evaluation::join::sample_time(&s.sample);
                (alert.window_start..alert.window_end).contains(&at) && s.label.is_some()
            })
            .collect();
        super::samples_csv::write(&path, &in_window)?;
        Ok(path.display().to_string())
    }

    /// Starts run `id`: the newest local run of `pipeline` again, with `given` parameters
    /// over its own.
    async fn start_run(
        &mut self,
        pipeline: &str,
        id: &str,
        given: &[(String, serde_json::Value)],
    ) -> anyhow::Result<()> {
        let runs = self.store.list_runs(RUNS_SEARCHED).await?;
        let last = runs
            .iter()
            .filter(|r| r.pipeline == pipeline)
            .max_by_key(|r| r.created_at)
            .with_context(|| {
                format!("no local run of pipeline {pipeline:?} to retrain from (run it once)")
            })?;
        let old: RunPlan = serde_json::from_value(last.spec.clone())
            .with_context(|| format!("reading the plan of run {}", last.id))?;
        let mut params: Vec<(String, serde_json::Value)> = old
            .params
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, value) in given {
            params.retain(|(n, _)| n != name);
            params.push((name.clone(), value.clone()));
        }
        let source = Source {
            file: PathBuf::from(format!("spec.monitoring.retrain of endpoint {}", self.name)),
            index: 0,
        };
        let resolved = manifest::resolve_params(&old.spec, &params, &source).map_err(|d| {
            let lines: Vec<String> = d
                .iter()
                .map(|d| format!("{}: {}", d.path, d.message))
                .collect();
            anyhow::anyhow!(lines.join("; "))
        })?;
        let mut plan = RunPlan::new(pipeline, old.spec.clone(), resolved);
        plan.local_inputs = plan.path_inputs_only(old.local_inputs.clone());
        let artifacts = self.home.open_artifacts()?;
        let plan = crate::commands::run::import_local_inputs(plan, &self.dir, &artifacts).await?;
        let (run, effects) =
            Run::start(id, plan, now_ms(), 2).context("recording the run's plan")?;
        let exec = Arc::new(Executor {
            store: self.store.clone(),
            artifacts,
            launcher: crate::commands::run::launcher_binary()?,
            home: self.home.clone(),
            run_id: id.to_string(),
            progress: Arc::new(Progress::labelled(
                format!("retrain {id}"),
                std::time::Instant::now(),
            )),
            checkpoints: None,
        });
        let (cancel_tx, cancel) = watch::channel(false);
        self.running.push(cancel_tx);
        let ended = self.ended_tx.clone();
        let alert = AlertKey {
            key: String::new(),
            active_since: 0,
        };
        let run_id = id.to_string();
        let store = self.store.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let result = crate::local::drive_until(exec, run, effects, cancel).await;
            // The alert that started it, read back by its run.
            let alert = match store.list_alerts(Some(&name), false, MAX_ALERTS).await {
                Ok(all) => all
                    .into_iter()
                    .find(|a| a.run.as_deref() == Some(run_id.as_str()))
                    .map_or(alert, |a| AlertKey {
                        key: a.key,
                        active_since: a.active_since,
                    }),
                Err(_) => alert,
            };
            let _ = ended.send(Ended {
                alert,
                run: run_id,
                result,
            });
        });
        Ok(())
    }

    /// A retraining run ended: its model becomes a candidate, or the alert says why not.
    async fn run_ended(
        &mut self,
        spec: &EndpointSpec,
        ended: Ended,
    ) -> anyhow::Result<Option<Retrained>> {
        let outcome = match &ended.result {
            Ok(Phase::Succeeded) => self.candidate(spec, &ended).await,
            Ok(phase) => Err(anyhow::anyhow!(
                "retraining run {} ended {}",
                ended.run,
                phase.as_str()
            )),
            Err(e) => Err(anyhow::anyhow!("retraining run {}: {e:#}", ended.run)),
        };
        match outcome {
            Ok(model) => {
                self.note(
                    &ended.alert,
                    format!(
                        "retraining run {} exported {}: rolling it out as version {}",
                        ended.run, model.digest, model.version.name
                    ),
                )
                .await?;
                Ok(Some(model))
            }
            Err(e) => {
                eprintln!("endpoint {}: {e:#}", self.name);
                self.note(&ended.alert, format!("{e:#}")).await?;
                Ok(None)
            }
        }
    }

    /// The model of a succeeded retraining run, as a version like the serving one.
    async fn candidate(&self, spec: &EndpointSpec, ended: &Ended) -> anyhow::Result<Retrained> {
        let serving = spec
            .versions
            .first()
            .context("the endpoint has no version")?;
        let (Some(step), Some(artifact)) = (&serving.model.step, &serving.model.artifact) else {
            anyhow::bail!(
                "version {} names its model by digest: which output of run {} is the model is not \
                 known (name the serving model by run, step and artifact)",
                serving.name,
                ended.run
            );
        };
        let model = ModelRef {
            run: Some(ended.run.clone()),
            step: Some(step.clone()),
            artifact: Some(artifact.clone()),
            digest: None,
        };
        let source: Result<ModelSource, String> = Ok(ModelSource::Output {
            run: ended.run.clone(),
            step: step.clone(),
            artifact: artifact.clone(),
        });
        let artifacts = self.home.open_artifacts()?;
        let (path, digest) = crate::commands::serve::resolve_model(
            self.store.as_ref(),
            &artifacts,
            &source,
            &self.dir,
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            spec.monitoring
                .as_ref()
                .is_some_and(|m| m.retrain.is_some()),
            "retraining is no longer in the spec"
        );
        let name = retrain::candidate_name(spec, &ended.run);
        let rollout = retrain::candidate_rollout(spec, &name).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Retrained {
            version: ModelVersion {
                name,
                model,
                ..serving.clone()
            },
            path,
            digest,
            rollout,
            alert: ended.alert.clone(),
        })
    }

    /// Records what became of a retraining on the alert that started it.
    pub async fn note(&self, alert: &AlertKey, action: String) -> anyhow::Result<()> {
        let all = self
            .store
            .list_alerts(Some(&self.name), false, MAX_ALERTS)
            .await?;
        if let Some(mut record) = all
            .into_iter()
            .find(|a| a.key == alert.key && a.active_since == alert.active_since)
        {
            record.action = Some(action);
            record.updated_at = now_ms();
            self.store.put_alerts(&[record]).await?;
        }
        Ok(())
    }

    /// Cancels the retraining runs still going.
    pub fn stop(&mut self) {
        for cancel in self.running.drain(..) {
            let _ = cancel.send(true);
        }
        self.gauges.remove(&self.name);
    }
}

/// The reference embeddings of a model: an exported model file, or a training directory's
/// embeddings file. `None` for a model trained before models carried them.
fn model_embeddings(path: &Path) -> anyhow::Result<Option<Embeddings>> {
    let file = if path.is_dir() {
        let file = path.join(embedding::REFERENCE_FILE);
        if !file.exists() {
            return Ok(None);
        }
        file
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    embedding::reference_from_safetensors(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}
