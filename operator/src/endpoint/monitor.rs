//! An Endpoint's monitoring on the cluster: the same pass as the local runtime's, over the
//! metadata store, run by the leader within the endpoint's reconcile.
//!
//! Every [`pass_interval_ms`] (the reconcile is requeued at least that often while the
//! endpoint has `spec.monitoring`) a pass
//!
//! 1. reads the endpoint's samples (stored as `NAMESPACE/NAME`) of the last [`lookback_ms`]
//!    and the drift reference: the `reference.json` of a PipelineRun's dataset output, or the
//!    samples of the reference window;
//! 2. asks core for the figures and breaches ([`assess`]) and publishes the figures as gauges
//!    on the control-plane API's `/metrics`;
//! 3. moves the endpoint's alerts ([`advance`]) in the store, each transition an event;
//! 4. for each firing alert that has not started a run, asks core whether to retrain
//!    ([`retrain::decide`]) and creates the PipelineRun (named by the alert, so a repeated
//!    pass creates nothing twice);
//! 5. once a retraining run succeeded, adds its model to the spec as a new version with
//!    `spec.rollout` from `promote.rollout` (the annotations [`CANDIDATE_ANNOTATION`] and
//!    [`ALERT_ANNOTATION`] mark it); when that rollout ends the reconcile calls
//!    [`finish_rollout`], which makes the candidate the only version or removes it.
//!
//! The spec is changed with a merge patch by the operator's own field manager: a retrained
//! model is a change of what is served, visible in the Endpoint itself (`kubectl get -o yaml`
//! shows which version serves and where its model came from).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kube::Resource;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::json;
use toucan_api::GaugeBoard;
use toucan_core::api::{
    ArtifactSource, Endpoint, EndpointSpec, ModelRef, ModelVersion, PipelineRef, PipelineRun,
    PipelineRunSpec,
};
use toucan_core::monitoring::alerts::{self, AlertPhase, ConditionValue, advance};
use toucan_core::monitoring::assess::{
    AssessInput, ReferenceRow, assess, lookback_ms, pass_interval_ms, quality_since,
    read_limit_problem,
};
use toucan_core::monitoring::drift::Embeddings;
use toucan_core::monitoring::embedding;
use toucan_core::monitoring::evaluation::LabelledSample;
use toucan_core::monitoring::evaluation::join::{sample_time, stored_range};
use toucan_core::monitoring::export::labelled_samples_csv;
use toucan_core::monitoring::retention::{self, EXPIRY_INTERVAL_MS};
use toucan_core::monitoring::retrain::{self, Alert, PastRetrain, Verdict};
use toucan_core::monitoring::rules::prometheus_rule;
use toucan_core::monitoring::spec::ReferenceSource;
use toucan_core::records::{AlertRecord, ArtifactKind, Millis, Phase};
use toucan_core::serving::rollout::QualityObservation;
use toucan_core::time::parse_rfc3339;
use toucan_store::artifacts::Digest;
use toucan_store::metadata::Expired;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::notes::Note;
use crate::objects;
use toucan_core::api::labels::{SOURCE_DIR_ANNOTATION, STAGED_INPUTS_ANNOTATION};

/// On an Endpoint: the version that a retraining run added and that is being rolled out.
pub const CANDIDATE_ANNOTATION: &str = "toucan.dev/retrained-candidate";
/// On an Endpoint: the alert episode (`KEY@ACTIVE_SINCE`) whose run made the candidate.
pub const ALERT_ANNOTATION: &str = "toucan.dev/retrained-for";
/// On a retraining PipelineRun: the Endpoint it retrains for.
pub const RETRAIN_LABEL: &str = "toucan.dev/retrains";
/// The condition that says whether the last pass judged everything it should (`False` with
/// what it could not: a reference it could not read, or of other images).
pub const MONITORING: &str = "Monitoring";
/// The field manager of the operator's changes to an Endpoint's spec.
const FIELD_MANAGER: &str = "toucan-retrain";
/// The most samples one pass reads.
const MAX_SAMPLES: u32 = 200_000;
/// The most alerts one pass reads back.
const MAX_ALERTS: u32 = 1_000;
/// The file of a dataset that holds its drift reference.
const REFERENCE_FILE: &str = "reference.json";

/// What the monitor keeps of each endpoint between passes, by UID.
#[derive(Clone, Debug, Default)]
struct Memory {
    next_pass: Millis,
    quality: BTreeMap<String, QualityObservation>,
    /// The reference rows and what they were read from (a dataset digest, or a window).
    reference: Option<(String, Arc<Vec<ReferenceRow>>)>,
    /// Each model's reference embeddings, by the model's digest.
    embeddings: BTreeMap<String, Option<Arc<Embeddings>>>,
    /// The PrometheusRule last applied (or deleted), as its text.
    rule: Option<String>,
    /// Whether the cluster was found without PrometheusRules (said once; tried again every
    /// pass, so that installing prometheus-operator later is noticed).
    rule_missing: bool,
    /// What the last pass could not judge.
    problems: Vec<String>,
    /// When samples and alerts past the retention are next deleted.
    next_expiry: Millis,
}

/// The monitors of every endpoint this replica reconciles.
#[derive(Debug)]
pub struct Monitors {
    gauges: Arc<GaugeBoard>,
    memory: Mutex<HashMap<String, Memory>>,
}

/// What one reconcile takes from the monitor.
#[derive(Debug, Default)]
pub struct Pass {
    pub notes: Vec<Note>,
    /// The monitoring conditions to set, when a pass ran (else the status keeps its own).
    pub conditions: Option<Vec<ConditionValue>>,
    /// Each version's live evaluation since the rollout's step began.
    pub quality: BTreeMap<String, QualityObservation>,
    /// The spec was patched (a retrained candidate added): the reconcile ends here and the
    /// change wakes the next one.
    pub patched: bool,
    /// When the next pass is due.
    pub next_in_ms: Option<Millis>,
}

impl Monitors {
    pub fn new(gauges: Arc<GaugeBoard>) -> Monitors {
        Monitors {
            gauges,
            memory: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets endpoints that are gone.
    pub fn retain(&self, live: &BTreeMap<String, String>) {
        let mut memory = self.memory.lock().unwrap_or_else(|p| p.into_inner());
        memory.retain(|uid, _| live.contains_key(uid));
        drop(memory);
        self.gauges.retain(|key| live.values().any(|k| k == key));
    }

    fn remember(&self, uid: &str) -> Memory {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn keep(&self, uid: &str, memory: Memory) {
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), memory);
    }

    /// One pass when one is due (see the module docs); `step_since` is when the rollout's
    /// current step began, while one progresses.
    pub async fn pass(
        &self,
        ctx: &Context,
        endpoint: &Endpoint,
        at: &Target<'_>,
        digests: &BTreeMap<String, String>,
        step_since: Option<Millis>,
        now: Millis,
    ) -> Result<Pass> {
        let spec = &endpoint.spec;
        let key = at.key();
        let mut memory = self.remember(at.uid);
        let mut notes = Vec::new();
        if let Some(note) = apply_rule(ctx, endpoint, at, &mut memory).await? {
            notes.push(note);
        }
        if spec.monitoring.is_none() {
            self.gauges.remove(&key);
            self.keep(at.uid, memory);
            return Ok(Pass {
                notes,
                ..Pass::default()
            });
        }
        if now < memory.next_pass {
            let next_in_ms = Some(memory.next_pass - now);
            let quality = memory.quality.clone();
            self.keep(at.uid, memory);
            return Ok(Pass {
                notes,
                quality,
                next_in_ms,
                ..Pass::default()
            });
        }
        memory.next_pass = now + pass_interval_ms(spec);
        if now >= memory.next_expiry
            && let Some(expiry) = retention::expiry(spec, now, step_since)
        {
            let gone = ctx
                .store
                .expire_monitoring(&key, expiry.samples_before, expiry.alerts_before)
                .await?;
            if gone != Expired::default() {
                tracing::info!(
                    endpoint = %key, samples = gone.samples, labels = gone.labels,
                    alerts = gone.alerts, "deleted monitoring data past its retention"
                );
            }
            memory.next_expiry = now + EXPIRY_INTERVAL_MS;
        }
        let mut pass = Pass {
            notes,
            next_in_ms: Some(pass_interval_ms(spec)),
            ..Pass::default()
        };

        let since = now.saturating_sub(lookback_ms(spec));
        let since = step_since.map_or(since, |s| s.min(since));
        let samples = ctx
            .store
            .list_labelled_samples(&key, since..Millis::MAX, MAX_SAMPLES)
            .await?;
        let mut problems: Vec<String> = read_limit_problem(&samples, MAX_SAMPLES)
            .into_iter()
            .collect();
        let reference = match self.reference(ctx, at, spec, &mut memory, now).await {
            Ok(rows) => rows,
            Err(why) => {
                problems.push(format!("the drift reference: {why}"));
                Arc::new(Vec::new())
            }
        };
        let mut embeddings = BTreeMap::new();
        if spec.monitoring.as_ref().is_some_and(|m| m.drift.is_some()) {
            for (version, digest) in digests {
                match model_embeddings(ctx, digest, &mut memory).await {
                    Ok(Some(e)) => {
                        embeddings.insert(version.clone(), (*e).clone());
                    }
                    Ok(None) => {}
                    Err(why) => problems.push(format!("version {version}: {why}")),
                }
            }
        }
        // Only the models the endpoint serves now are kept.
        memory
            .embeddings
            .retain(|digest, _| digests.values().any(|d| d == digest));
        let found = assess(&AssessInput {
            namespace: at.namespace,
            name: at.name,
            spec,
            samples: &samples,
            reference: &reference,
            embeddings: &embeddings,
            now,
        });
        self.gauges.set(&key, found.series.clone());
        problems.extend(found.problems.iter().cloned());
        if problems != memory.problems && !problems.is_empty() {
            pass.notes
                .push(Note::warning("MonitoringProblem", problems.join("; ")));
        }
        memory.problems = problems.clone();
        memory.quality = match step_since {
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
        pass.quality = memory.quality.clone();
        self.keep(at.uid, memory);

        // Alerts.
        let open = ctx.store.list_alerts(Some(&key), true, MAX_ALERTS).await?;
        let changes = advance(
            &key,
            &open,
            &found.breaches,
            |kind| alerts::hold_ms(spec, kind),
            now,
        );
        for change in &changes {
            match change.transition {
                Some(AlertPhase::Firing) => pass.notes.push(Note::warning(
                    "AlertFiring",
                    format!("{}: {}", change.record.key, change.record.summary),
                )),
                Some(AlertPhase::Resolved) => pass.notes.push(Note::normal(
                    "AlertResolved",
                    format!("{}: {}", change.record.key, change.record.summary),
                )),
                _ => {}
            }
        }
        let records: Vec<AlertRecord> = changes.into_iter().map(|c| c.record).collect();
        if !records.is_empty() {
            ctx.store.put_alerts(&records).await?;
        }

        // Retraining.
        if spec
            .monitoring
            .as_ref()
            .and_then(|m| m.retrain.as_ref())
            .is_some()
        {
            self.retrain(ctx, at, spec, &samples, now, &mut pass)
                .await?;
            if !pass.patched {
                self.candidates(ctx, endpoint, at, &mut pass).await?;
            }
        }
        let open = ctx.store.list_alerts(Some(&key), true, MAX_ALERTS).await?;
        let mut conditions = alerts::conditions(&open);
        conditions.push(match problems.is_empty() {
            true => ConditionValue {
                type_: MONITORING,
                status: "True",
                reason: "Checked",
                message: String::new(),
            },
            false => ConditionValue {
                type_: MONITORING,
                status: "False",
                reason: "MonitoringProblem",
                message: problems.join("; "),
            },
        });
        pass.conditions = Some(conditions);
        Ok(pass)
    }

    /// The drift reference's rows, read once per dataset (or once the window has ended).
    async fn reference(
        &self,
        ctx: &Context,
        at: &Target<'_>,
        spec: &EndpointSpec,
        memory: &mut Memory,
        now: Millis,
    ) -> std::result::Result<Arc<Vec<ReferenceRow>>, String> {
        let Some(drift) = spec.monitoring.as_ref().and_then(|m| m.drift.as_ref()) else {
            return Ok(Arc::new(Vec::new()));
        };
        match drift.reference.source()? {
            ReferenceSource::Window(range) => {
                let id = format!("window {}..{}", range.start, range.end);
                if let Some((from, rows)) = &memory.reference
                    && *from == id
                {
                    return Ok(rows.clone());
                }
                let (Ok(start), Ok(end)) = (parse_rfc3339(&range.start), parse_rfc3339(&range.end))
                else {
                    return Err(format!("the reference window {id} does not read"));
                };
                let samples = ctx
                    .store
                    .list_labelled_samples(&at.key(), stored_range(start..end), MAX_SAMPLES)
                    .await
                    .map_err(|e| e.to_string())?;
                let rows = Arc::new(ReferenceRow::of_samples(
                    samples
                        .iter()
                        .filter(|s| sample_time(&s.sample) < end)
                        .map(|s| &s.sample.sample),
                ));
                if now >= end {
                    memory.reference = Some((id, rows.clone()));
                }
                Ok(rows)
            }
            ReferenceSource::Dataset(source) => {
                let digest = dataset_digest(ctx, at.namespace, source).await?;
                if let Some((from, rows)) = &memory.reference
                    && *from == digest
                {
                    return Ok(rows.clone());
                }
                let rows = Arc::new(dataset_rows(ctx, &digest).await?);
                memory.reference = Some((digest, rows.clone()));
                Ok(rows)
            }
        }
    }

    /// Asks core about every firing alert that has not started a run, oldest first, and
    /// creates the runs it starts.
    async fn retrain(
        &self,
        ctx: &Context,
        at: &Target<'_>,
        spec: &EndpointSpec,
        samples: &[LabelledSample],
        now: Millis,
        pass: &mut Pass,
    ) -> Result<()> {
        let Some(retrain) = spec.monitoring.as_ref().and_then(|m| m.retrain.as_ref()) else {
            return Ok(());
        };
        let key = at.key();
        let all = ctx.store.list_alerts(Some(&key), false, MAX_ALERTS).await?;
        let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), at.namespace);
        let mut history = Vec::new();
        for alert in all.iter().filter(|a| a.run.is_some()) {
            let name = alert.run.clone().unwrap_or_default();
            let found = runs.get_opt(&name).await?;
            history.push(PastRetrain {
                started_at: found
                    .as_ref()
                    .and_then(|r| r.metadata.creation_timestamp.as_ref())
                    .map_or(alert.updated_at, |t| t.0.as_millisecond()),
                finished: found.as_ref().is_none_or(|r| run_phase(r).is_some()),
                run: name,
            });
        }
        for alert in alerts::awaiting_retrain(&all) {
            let dataset = if uses_window_samples(retrain) {
                let rows: Vec<&LabelledSample> = samples
                    .iter()
                    .filter(|s| {
                        (alert.window_start..alert.window_end).contains(&sample_time(&s.sample))
                    })
                    .collect();
                let bytes = labelled_samples_csv(&rows).into_bytes();
                ctx.artifacts.put_bytes(bytes.into()).await?.to_string()
            } else {
                String::new()
            };
            let seen = Alert {
                fingerprint: &alert.key,
                reason: &alert.summary,
                window_start: alert.window_start,
                window_end: alert.window_end,
                samples: &dataset,
            };
            let verdict = retrain::decide(retrain, at.name, &seen, &history, now)
                .map_err(Error::Monitoring)?;
            let mut next = alert.clone();
            match verdict {
                Verdict::Start { run: name, params } => {
                    let mut object = PipelineRun::new(
                        &name,
                        PipelineRunSpec {
                            pipeline_ref: Some(PipelineRef {
                                name: retrain.pipeline_ref.name.clone(),
                            }),
                            pipeline_spec: None,
                            params,
                        },
                    );
                    object.metadata.labels = Some(BTreeMap::from([(
                        RETRAIN_LABEL.to_string(),
                        at.name.to_string(),
                    )]));
                    object.metadata.annotations =
                        inputs_of_last_run(&runs, &retrain.pipeline_ref.name).await?;
                    match runs.create(&PostParams::default(), &object).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                    pass.notes.push(Note::normal(
                        "RetrainStarted",
                        format!("{}: PipelineRun {name}", alert.key),
                    ));
                    next.action = Some(format!("{STARTED} {name}"));
                    next.run = Some(name.clone());
                    history.push(PastRetrain {
                        run: name,
                        started_at: now,
                        finished: false,
                    });
                }
                Verdict::Hold {
                    reason, message, ..
                } => {
                    let action = format!("held ({}): {message}", reason.as_str());
                    if next.action.as_deref() != Some(action.as_str()) {
                        pass.notes.push(Note::normal(
                            "RetrainHeld",
                            format!("{}: {message}", alert.key),
                        ));
                    }
                    next.action = Some(action);
                }
            }
            if next != *alert {
                next.updated_at = now;
                ctx.store.put_alerts(std::slice::from_ref(&next)).await?;
            }
        }
        Ok(())
    }

    /// Retraining runs that ended: a succeeded one's model becomes the candidate (one at a
    /// time), a failed one's alert says so.
    async fn candidates(
        &self,
        ctx: &Context,
        endpoint: &Endpoint,
        at: &Target<'_>,
        pass: &mut Pass,
    ) -> Result<()> {
        let key = at.key();
        let all = ctx.store.list_alerts(Some(&key), false, MAX_ALERTS).await?;
        let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), at.namespace);
        for alert in all.iter().filter(|a| {
            a.run
                .as_ref()
                .is_some_and(|run| a.action.as_deref() == Some(format!("{STARTED} {run}").as_str()))
        }) {
            let run = alert.run.clone().unwrap_or_default();
            let Some(found) = runs.get_opt(&run).await? else {
                note(ctx, alert, format!("retraining run {run} is gone")).await?;
                continue;
            };
            match run_phase(&found) {
                None => continue,
                Some(Phase::Succeeded) => {}
                Some(phase) => {
                    pass.notes.push(Note::warning(
                        "RetrainFailed",
                        format!("PipelineRun {run} ended {}", phase.as_str()),
                    ));
                    note(
                        ctx,
                        alert,
                        format!("retraining run {run} ended {}", phase.as_str()),
                    )
                    .await?;
                    continue;
                }
            }
            let spec = &endpoint.spec;
            if spec.rollout.is_some() {
                note(
                    ctx,
                    alert,
                    format!("the model of run {run} was not rolled out: a rollout is going"),
                )
                .await?;
                continue;
            }
            let Some(serving) = spec.versions.first() else {
                continue;
            };
            let (Some(step), Some(artifact)) = (&serving.model.step, &serving.model.artifact)
            else {
                note(
                    ctx,
                    alert,
                    format!(
                        "version {} names its model by digest: which output of run {run} is the \
                         model is not known",
                        serving.name
                    ),
                )
                .await?;
                continue;
            };
            let version = ModelVersion {
                name: retrain::candidate_name(spec, &run),
                model: ModelRef {
                    run: Some(run.clone()),
                    step: Some(step.clone()),
                    artifact: Some(artifact.clone()),
                    digest: None,
                },
                ..serving.clone()
            };
            let digest = match super::models::resolve(ctx, at.namespace, &version).await? {
                Ok(digest) => digest,
                Err(why) => {
                    note(ctx, alert, format!("retraining run {run}: {why}")).await?;
                    continue;
                }
            };
            let rollout =
                retrain::candidate_rollout(spec, &version.name).map_err(Error::Monitoring)?;
            let mut versions = spec.versions.clone();
            versions.push(version.clone());
            let patch = json!({
                "metadata": {"annotations": {
                    CANDIDATE_ANNOTATION: version.name,
                    ALERT_ANNOTATION: format!("{}@{}", alert.key, alert.active_since),
                }},
                "spec": {"versions": versions, "rollout": rollout},
            });
            let endpoints: Api<Endpoint> = Api::namespaced(ctx.client.clone(), at.namespace);
            endpoints
                .patch(
                    at.name,
                    &PatchParams::apply(FIELD_MANAGER),
                    &Patch::Merge(&patch),
                )
                .await?;
            pass.notes.push(Note::normal(
                "RetrainedVersionAdded",
                format!(
                    "version {} serves the model of PipelineRun {run} ({digest}), rolled out \
                     against {}",
                    version.name, serving.name
                ),
            ));
            note(
                ctx,
                alert,
                format!(
                    "retraining run {run} exported {digest}: rolling it out as version {}",
                    version.name
                ),
            )
            .await?;
            pass.patched = true;
            return Ok(());
        }
        Ok(())
    }
}

/// What a pass is about.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
}

impl Target<'_> {
    /// The endpoint's key in the store.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Applies the endpoint's `PrometheusRule` ([`prometheus_rule`]), owned by the endpoint, or
/// deletes it when the spec has nothing to alert on; only when it changed since the last
/// time. Where the cluster has no prometheus-operator, an event says so once, and the next
/// passes try again.
async fn apply_rule(
    ctx: &Context,
    endpoint: &Endpoint,
    at: &Target<'_>,
    memory: &mut Memory,
) -> Result<Option<Note>> {
    let rule = prometheus_rule(at.namespace, at.name, &endpoint.spec);
    let text = rule.as_ref().map(ToString::to_string).unwrap_or_default();
    if memory.rule.as_deref() == Some(text.as_str()) {
        return Ok(None);
    }
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "monitoring.coreos.com",
        "v1",
        "PrometheusRule",
    ));
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), at.namespace, &resource);
    match rule {
        Some(mut value) => {
            if let Some(owner) = endpoint.controller_owner_ref(&()) {
                value["metadata"]["ownerReferences"] = json!([owner]);
            }
            let object: DynamicObject = serde_json::from_value(value)
                .map_err(|e| Error::Monitoring(format!("the PrometheusRule: {e}")))?;
            match api
                .patch(
                    at.name,
                    &PatchParams::apply(crate::status::FIELD_MANAGER).force(),
                    &Patch::Apply(&object),
                )
                .await
            {
                Ok(_) => memory.rule_missing = false,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    let first = !memory.rule_missing;
                    memory.rule_missing = true;
                    return Ok(first.then(|| {
                        Note::warning(
                        "PrometheusRuleMissing",
                        "the cluster has no PrometheusRule resource (monitoring.coreos.com/v1): \
                         install prometheus-operator's CRDs for the endpoint's alerting rules; \
                         the gauges are on the API's /metrics meanwhile"
                            .to_string(),
                    )
                    }));
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => objects::delete(&api, at.name, &DeleteParams::default()).await?,
    }
    memory.rule = Some(text);
    Ok(None)
}

/// The action of an alert whose run is going.
const STARTED: &str = "started retraining run";

/// Where the newest run of `pipeline` took its `path:` inputs from (the source directory,
/// and the inputs it staged), so that a retraining run reads the same ones, as a local
/// retraining run reuses its last run's.
async fn inputs_of_last_run(
    runs: &Api<PipelineRun>,
    pipeline: &str,
) -> Result<Option<BTreeMap<String, String>>> {
    let all = runs.list(&kube::api::ListParams::default()).await?;
    let newest = all
        .items
        .iter()
        .filter(|r| {
            r.spec
                .pipeline_ref
                .as_ref()
                .is_some_and(|p| p.name == pipeline)
        })
        .max_by_key(|r| r.metadata.creation_timestamp.clone());
    let kept: BTreeMap<String, String> = newest
        .and_then(|r| r.metadata.annotations.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| k == SOURCE_DIR_ANNOTATION || k == STAGED_INPUTS_ANNOTATION)
        .collect();
    Ok((!kept.is_empty()).then_some(kept))
}

/// A run's phase once it has ended.
fn run_phase(run: &PipelineRun) -> Option<Phase> {
    let phase = run.status.as_ref()?.phase.as_deref()?;
    [Phase::Succeeded, Phase::Failed, Phase::Cancelled]
        .into_iter()
        .find(|p| p.as_str() == phase)
}

fn uses_window_samples(retrain: &toucan_core::api::RetrainSpec) -> bool {
    retrain.params.iter().any(|p| {
        p.value
            .as_str()
            .is_some_and(|s| s.contains("alert.window.samples"))
    })
}

/// Records what became of a retraining on the alert that started it.
async fn note(ctx: &Context, alert: &AlertRecord, action: String) -> Result<()> {
    let mut record = alert.clone();
    record.action = Some(action);
    record.updated_at = toucan_core::time::now_ms();
    ctx.store.put_alerts(&[record]).await?;
    Ok(())
}

/// Ends a retrained candidate's rollout in the spec: promoted, it becomes the only version
/// and takes every request; rolled back, it is removed. Records the outcome on the alert,
/// then clears the annotations. Returns the event.
pub async fn finish_rollout(
    ctx: &Context,
    endpoint: &Endpoint,
    namespace: &str,
    candidate: &str,
    promoted: bool,
    reason: &str,
) -> Result<Note> {
    let spec = &endpoint.spec;
    let versions: Vec<&ModelVersion> = spec
        .versions
        .iter()
        .filter(|v| (v.name == candidate) == promoted)
        .collect();
    let traffic: Vec<_> = if promoted {
        Vec::new()
    } else {
        spec.traffic
            .iter()
            .filter(|t| t.version != candidate)
            .collect()
    };
    let patch = json!({
        "metadata": {"annotations": {CANDIDATE_ANNOTATION: null, ALERT_ANNOTATION: null}},
        "spec": {"versions": versions, "traffic": traffic, "rollout": null},
    });
    let name = kube::ResourceExt::name_any(endpoint);
    let outcome = if promoted { "promoted" } else { "rolled back" };
    // The outcome goes on the alert first: whoever sees the spec change finds it recorded.
    if let Some((key, since)) = kube::ResourceExt::annotations(endpoint)
        .get(ALERT_ANNOTATION)
        .and_then(|a| a.rsplit_once('@'))
        && let Ok(since) = since.parse::<Millis>()
    {
        let all = ctx
            .store
            .list_alerts(Some(&format!("{namespace}/{name}")), false, MAX_ALERTS)
            .await?;
        if let Some(alert) = all.iter().find(|a| a.key == key && a.active_since == since) {
            note(
                ctx,
                alert,
                format!("version {candidate} {outcome}: {reason}"),
            )
            .await?;
        }
    }
    let endpoints: Api<Endpoint> = Api::namespaced(ctx.client.clone(), namespace);
    endpoints
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(if promoted {
        Note::normal(
            "RetrainedVersionPromoted",
            format!("{candidate} serves every request: {reason}"),
        )
    } else {
        Note::warning(
            "RetrainedVersionRolledBack",
            format!("{candidate} removed: {reason}"),
        )
    })
}

/// The digest of a PipelineRun's dataset output.
async fn dataset_digest(
    ctx: &Context,
    namespace: &str,
    source: &ArtifactSource,
) -> std::result::Result<String, String> {
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), namespace);
    let found = runs
        .get_opt(&source.run)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no PipelineRun {:?} for the drift reference", source.run))?;
    let run_id = found
        .status
        .as_ref()
        .and_then(|s| s.run_id.clone())
        .or_else(|| found.metadata.uid.clone())
        .ok_or_else(|| format!("PipelineRun {:?} has not started", source.run))?;
    let step = ctx
        .store
        .get_step(&run_id, &source.step)
        .await
        .map_err(|e| e.to_string())?
        .filter(|s| s.phase == Phase::Succeeded)
        .ok_or_else(|| {
            format!(
                "step {:?} of PipelineRun {:?} has not succeeded",
                source.step, source.run
            )
        })?;
    let output = step
        .outputs
        .artifacts
        .get(&source.artifact)
        .ok_or_else(|| {
            format!(
                "step {:?} of PipelineRun {:?} has no output {:?}",
                source.step, source.run, source.artifact
            )
        })?;
    if output.kind != ArtifactKind::Dir {
        return Err(format!(
            "{} is a file; a dataset is the directory `toucan-worker ingest` writes",
            output.digest
        ));
    }
    Ok(output.digest.clone())
}

/// The reference embeddings a model file carries (read once per digest); `None` for a model
/// trained before models carried them.
async fn model_embeddings(
    ctx: &Context,
    digest: &str,
    memory: &mut Memory,
) -> std::result::Result<Option<Arc<Embeddings>>, String> {
    if let Some(known) = memory.embeddings.get(digest) {
        return Ok(known.clone());
    }
    let parsed = Digest::parse(digest).map_err(|e| e.to_string())?;
    let bytes = ctx
        .artifacts
        .get_blob(&parsed)
        .await
        .map_err(|e| format!("reading model {digest}: {e}"))?;
    let read = embedding::reference_from_safetensors(&bytes)
        .map_err(|e| format!("model {digest}: {e}"))?
        .map(Arc::new);
    memory.embeddings.insert(digest.to_string(), read.clone());
    Ok(read)
}

/// The rows of a dataset's `reference.json`.
async fn dataset_rows(
    ctx: &Context,
    digest: &str,
) -> std::result::Result<Vec<ReferenceRow>, String> {
    let parsed = Digest::parse(digest).map_err(|e| e.to_string())?;
    let manifest = ctx
        .artifacts
        .manifest(&parsed)
        .await
        .map_err(|e| e.to_string())?;
    let entry = manifest
        .entries
        .iter()
        .find(|e| e.path == REFERENCE_FILE)
        .and_then(|e| e.digest.clone())
        .ok_or_else(|| {
            format!(
                "dataset {digest} has no {REFERENCE_FILE}: ingest it again with this toucan-worker"
            )
        })?;
    let bytes = ctx
        .artifacts
        .get_blob(&Digest::parse(&entry).map_err(|e| e.to_string())?)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&bytes).map_err(|e| format!("reading {REFERENCE_FILE} of {digest}: {e}"))
}
