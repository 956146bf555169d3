//! `toucan serve FILE` (and `toucan run` on an Endpoint document): serve an Endpoint on this
//! machine; `toucan get endpoints` and `toucan describe endpoint NAME` read what it serves.
//!
//! A version's `model: {run, step, artifact}` is the named output of a local run's step, and
//! `model: {digest}` a blob of the local artifact store; either is copied once into the
//! endpoint's directory (by digest, so a version that did not change is not copied again).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use toucan_core::api::{Endpoint, ModelVersion};
use toucan_core::manifest::{self, Diagnostic, Document, LoadedDocument};
use toucan_core::records::{ArtifactKind, ArtifactRef};
use toucan_core::serving::spec::ModelSource;
use toucan_store::artifacts::{ArtifactStore, Digest};
use toucan_store::metadata::MetadataStore;

use crate::Outcome;
use crate::home::Home;
use crate::local::endpoint::{self, Binaries, LocalEndpoint, ServeRequest};
use crate::output::{self, Format};

/// Where the router listens unless `--listen` says otherwise.
const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// How many of an endpoint's newest alerts `describe endpoint` shows.
const ALERTS_SHOWN: u32 = 20;
/// How many of the newest runs are searched for a pipeline's model.
const RUNS_SEARCHED: u32 = 200;
const DEFAULT_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A manifest file holding one Endpoint.
    file: PathBuf,
    /// Where the router listens (`127.0.0.1:0` picks a free port).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
}

pub async fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    let docs = match manifest::load(std::slice::from_ref(&args.file)) {
        Ok(docs) => docs,
        Err(diagnostics) => {
            return Ok(super::invalid_input(
                &diagnostics,
                Some("nothing was served"),
            ));
        }
    };
    match endpoint_document(&docs) {
        Some(doc) => serve_document(doc, args.listen).await,
        None => Ok(super::invalid_input(
            &[Diagnostic {
                source: docs.first().map_or_else(
                    || manifest::Source {
                        file: args.file.clone(),
                        index: 0,
                    },
                    |d| d.source.clone(),
                ),
                path: "kind".into(),
                message: "no Endpoint in this file".into(),
            }],
            Some("nothing was served"),
        )),
    }
}

/// `toucan run FILE` on a file holding an Endpoint: serve it on the default address.
pub async fn run_file(file: &Path) -> anyhow::Result<Option<Outcome>> {
    let Ok(docs) = manifest::load(&[file.to_path_buf()]) else {
        // The pipeline path reports the errors.
        return Ok(None);
    };
    match endpoint_document(&docs) {
        Some(doc) => Ok(Some(serve_document(doc, DEFAULT_ADDR).await?)),
        None => Ok(None),
    }
}

fn endpoint_document(docs: &[LoadedDocument]) -> Option<&LoadedDocument> {
    docs.iter()
        .find(|d| matches!(d.document, Document::Endpoint(_)))
}

async fn serve_document(doc: &LoadedDocument, listen: SocketAddr) -> anyhow::Result<Outcome> {
    let Document::Endpoint(endpoint) = &doc.document else {
        return Ok(Outcome::InvalidInput);
    };
    let mut endpoint: Endpoint = (**endpoint).clone();
    let Some(name) = endpoint.metadata.name.clone() else {
        return Ok(Outcome::InvalidInput);
    };
    let home = Home::locate();
    let store = home.open_store().await?;
    let artifacts = home.open_artifacts()?;
    let dir = endpoint::dir(&home.root, &name);
    std::fs::create_dir_all(dir.join("models"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let manifest = endpoint.spec.clone();
    // The versions retraining left it serving, unless their models are gone.
    let mut resolved = None;
    if let Some(versions) = endpoint::retrained_versions(&home.root, &name, &manifest)? {
        match resolve_models(store.as_ref(), &artifacts, &versions, &dir).await {
            Ok(models) => {
                eprintln!(
                    "endpoint {name}: serving {:?} as retraining left it ({} names {:?}; edit \
                     it to serve other versions)",
                    names(&versions),
                    doc.source.file.display(),
                    names(&manifest.versions)
                );
                endpoint.spec.versions = versions;
                resolved = Some(models);
            }
            Err(missing) => {
                let (i, message) = &missing[0];
                eprintln!(
                    "endpoint {name}: the retrained version {} cannot be served ({message}): \
                     serving {:?} as {} names them",
                    versions[*i].name,
                    names(&manifest.versions),
                    doc.source.file.display()
                );
            }
        }
    }
    let resolved = match resolved {
        Some(models) => Ok(models),
        None => resolve_models(store.as_ref(), &artifacts, &manifest.versions, &dir).await,
    };
    let (models, model_names) = match resolved {
        Ok(models) => models,
        Err(missing) => {
            let errors: Vec<Diagnostic> = missing
                .into_iter()
                .map(|(i, message)| Diagnostic {
                    source: doc.source.clone(),
                    path: format!("spec.versions[{i}].model"),
                    message,
                })
                .collect();
            return Ok(super::invalid_input(&errors, Some("nothing was served")));
        }
    };
    endpoint::serve(
        ServeRequest {
            endpoint,
            manifest,
            models,
            model_names,
            listen,
            dir,
            home,
        },
        store,
        Binaries::locate()?,
    )
    .await?;
    Ok(Outcome::Success)
}

fn names(versions: &[ModelVersion]) -> Vec<&str> {
    versions.iter().map(|v| v.name.as_str()).collect()
}

/// Each version's model file and its digest, by version; else, by index, each version
/// whose model cannot be had and why.
async fn resolve_models(
    store: &dyn MetadataStore,
    artifacts: &ArtifactStore,
    versions: &[ModelVersion],
    dir: &Path,
) -> Result<Resolved, Vec<(usize, String)>> {
    let mut models = BTreeMap::new();
    let mut model_names = BTreeMap::new();
    let mut missing = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        match resolve_model(store, artifacts, &v.model.source(), dir).await {
            Ok((path, digest)) => {
                models.insert(v.name.clone(), path);
                model_names.insert(v.name.clone(), digest);
            }
            Err(message) => missing.push((i, message)),
        }
    }
    if missing.is_empty() {
        Ok((models, model_names))
    } else {
        Err(missing)
    }
}

/// Each version's model file, and its digest.
type Resolved = (BTreeMap<String, PathBuf>, BTreeMap<String, String>);

/// The model file of one version, copied into the endpoint's directory, and its digest.
/// The error says what is missing, in the user's words.
pub(crate) async fn resolve_model(
    store: &dyn MetadataStore,
    artifacts: &ArtifactStore,
    source: &Result<ModelSource, String>,
    dir: &Path,
) -> Result<(PathBuf, String), String> {
    let artifact = match source.as_ref().map_err(Clone::clone)? {
        ModelSource::Output {
            run,
            step,
            artifact,
        } => {
            let record = output_step(store, run, step, artifact).await?;
            record.outputs.artifacts.get(artifact).cloned().ok_or_else(|| {
                let known: Vec<&String> = record.outputs.artifacts.keys().collect();
                format!(
                    "step {step:?} of run {run} has no output artifact {artifact:?} (it has {known:?})"
                )
            })?
        }
        ModelSource::Digest(digest) => {
            let parsed = Digest::parse(digest).map_err(|e| format!("{digest}: {e}"))?;
            let bytes = artifacts
                .get_blob(&parsed)
                .await
                .map_err(|e| format!("{digest}: {e}"))?;
            ArtifactRef {
                digest: digest.clone(),
                size: bytes.len() as u64,
                kind: ArtifactKind::File,
            }
        }
    };
    if artifact.kind != ArtifactKind::File {
        return Err(format!(
            "{} is a directory; a model is the file `toucan-worker export` writes",
            artifact.digest
        ));
    }
    let file = dir.join("models").join(artifact.digest.replace(':', "-"));
    if !file.exists() {
        artifacts
            .materialize(&artifact, &file)
            .await
            .map_err(|e| format!("copying model {}: {e}", artifact.digest))?;
    }
    Ok((file, artifact.digest))
}

/// The step `step` of the local run `run`; or, when no run has that id, of the newest run of
/// the pipeline named `run` in which that step succeeded with the output `artifact`.
pub(crate) async fn output_step(
    store: &dyn MetadataStore,
    run: &str,
    step: &str,
    artifact: &str,
) -> Result<toucan_core::records::StepRecord, String> {
    let read = |e: toucan_store::metadata::StoreError| format!("reading the local store: {e}");
    if let Some(record) = store.get_step(run, step).await.map_err(read)? {
        return Ok(record);
    }
    for candidate in store.list_runs(RUNS_SEARCHED).await.map_err(read)? {
        if candidate.pipeline != run {
            continue;
        }
        if let Some(record) = store.get_step(&candidate.id, step).await.map_err(read)?
            && record.phase == toucan_core::records::Phase::Succeeded
            && record.outputs.artifacts.contains_key(artifact)
        {
            return Ok(record);
        }
    }
    Err(format!(
        "no local run {run:?}, and no run of a pipeline {run:?} whose step {step:?} produced \
         {artifact:?} (run the pipeline first)"
    ))
}

// === get endpoints, describe endpoint ===

/// One line of `get endpoints`, local or from a cluster.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<&'a str>,
    pub name: &'a str,
    pub phase: String,
    pub url: Option<&'a str>,
    pub traffic: Option<&'a str>,
    pub ready: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<&'a str>,
}

pub async fn get_endpoints(format: Format) -> anyhow::Result<Outcome> {
    let home = Home::locate();
    let endpoints = endpoint::read_all(&home.root)?;
    let rows: Vec<EndpointRow> = endpoints.iter().map(row).collect();
    print_endpoints(&rows, false, format)?;
    Ok(Outcome::Success)
}

/// Prints `get endpoints` rows as a table (with a namespace column for `--all-namespaces`)
/// or as data.
pub fn print_endpoints(
    rows: &[EndpointRow],
    all_namespaces: bool,
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Table => {
            let mut header = vec!["NAME", "PHASE", "READY", "TRAFFIC", "CANDIDATE", "URL"];
            if all_namespaces {
                header.insert(0, "NAMESPACE");
            }
            let dash = |s: Option<&str>| s.unwrap_or("-").to_string();
            let lines = rows
                .iter()
                .map(|r| {
                    let mut line = vec![
                        r.name.to_string(),
                        r.phase.clone(),
                        dash(r.ready),
                        dash(r.traffic),
                        dash(r.candidate),
                        dash(r.url),
                    ];
                    if all_namespaces {
                        line.insert(0, dash(r.namespace));
                    }
                    line
                })
                .collect();
            println!("{}", output::table(&header, lines));
        }
        format => output::print_structured(format, &rows)?,
    }
    Ok(())
}

fn row(e: &LocalEndpoint) -> EndpointRow<'_> {
    let serving = e.serving();
    EndpointRow {
        namespace: None,
        name: &e.name,
        phase: if serving {
            e.status.phase.clone().unwrap_or_default()
        } else {
            "Stopped".into()
        },
        url: e.status.url.as_deref().filter(|_| serving),
        traffic: e.status.traffic_summary.as_deref(),
        ready: e.status.ready.as_deref(),
        candidate: e.status.rollout.as_ref().map(|r| r.candidate.as_str()),
    }
}

/// `describe endpoint`: the versions, the split, the rollout, and the router's figures.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointDetail<'a> {
    #[serde(flatten)]
    endpoint: &'a LocalEndpoint,
    serving: bool,
    stats: Option<toucan_router::admin::EndpointStats>,
    /// The endpoint's alerts, newest first.
    alerts: &'a [toucan_core::records::AlertRecord],
}

pub async fn describe_endpoint(name: &str, format: Format) -> anyhow::Result<Outcome> {
    let home = Home::locate();
    let Some(e) = endpoint::read_one(&home.root, name)? else {
        eprintln!(
            "error: no endpoint {name:?} was served from {}",
            home.root.display()
        );
        return Ok(Outcome::InvalidInput);
    };
    let serving = e.serving();
    let stats = match (&e.status.url, serving) {
        (Some(url), true) => endpoint::router_stats(url).await.ok(),
        _ => None,
    };
    let store = home.open_store().await?;
    let alerts: Vec<toucan_core::records::AlertRecord> = store
        .list_alerts(Some(name), false, ALERTS_SHOWN)
        .await?
        .into_iter()
        .filter(|a| a.phase != toucan_core::monitoring::alerts::AlertPhase::Cleared)
        .collect();
    let detail = EndpointDetail {
        endpoint: &e,
        serving,
        stats,
        alerts: &alerts,
    };
    match format {
        Format::Table => print!(
            "{}",
            describe_text(&EndpointView {
                name: &e.name,
                phase: if serving {
                    e.status.phase.as_deref().unwrap_or("-")
                } else {
                    "Stopped"
                },
                status: &e.status,
                started_at: Some(e.started_at),
                restarts: &e.restarts,
                stats: detail.stats.as_ref(),
                events: &[],
                alerts: &alerts,
            })
        ),
        format => output::print_structured(format, &detail)?,
    }
    Ok(Outcome::Success)
}

/// What `describe endpoint` shows, wherever the endpoint runs.
pub struct EndpointView<'a> {
    pub name: &'a str,
    pub phase: &'a str,
    pub status: &'a toucan_core::api::EndpointStatus,
    pub started_at: Option<toucan_core::records::Millis>,
    /// Replicas of each version that exited and were started again.
    pub restarts: &'a BTreeMap<String, u32>,
    /// The router's figures, when it could be asked.
    pub stats: Option<&'a toucan_router::admin::EndpointStats>,
    /// Recent events (`REASON: message`), newest last.
    pub events: &'a [String],
    /// The endpoint's alerts, newest first: the monitoring loop's history.
    pub alerts: &'a [toucan_core::records::AlertRecord],
}

pub fn describe_text(d: &EndpointView) -> String {
    let s = d.status;
    let mut out = format!(
        "Name:     {}\nPhase:    {}\nURL:      {}\nTraffic:  {}\nStarted:  {}\n",
        d.name,
        d.phase,
        s.url.as_deref().unwrap_or("-"),
        s.traffic_summary.as_deref().unwrap_or("-"),
        d.started_at.map_or("-".into(), output::timestamp),
    );
    if let Some(r) = &s.rollout {
        out.push_str(&format!(
            "Rollout:  {} at {}% ({}){}\n",
            r.candidate,
            r.weight,
            r.phase.as_str(),
            r.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    if let Some(m) = &s.message {
        out.push_str(&format!("Message:  {m}\n"));
    }
    let figures = |name: &str| d.stats.and_then(|s| s.versions.get(name));
    let rows = s
        .versions
        .iter()
        .map(|v| {
            let f = figures(&v.name);
            let ms = |x: Option<f64>| x.map_or("-".into(), |x| format!("{x:.1}ms"));
            vec![
                v.name.clone(),
                format!("{}/{}", v.ready_replicas, v.replicas),
                v.desired_replicas.to_string(),
                f.map_or("-".into(), |f| f.requests.to_string()),
                f.map_or("-".into(), |f| {
                    if f.requests == 0 {
                        "-".into()
                    } else {
                        format!("{:.2}%", 100.0 * f.errors as f64 / f.requests as f64)
                    }
                }),
                ms(f.and_then(|f| f.latency_ms.p50)),
                ms(f.and_then(|f| f.latency_ms.p99)),
                d.restarts.get(&v.name).copied().unwrap_or(0).to_string(),
                v.model_digest.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&output::table(
        &[
            "VERSION", "READY", "DESIRED", "REQUESTS", "ERRORS", "P50", "P99", "RESTARTS", "MODEL",
        ],
        rows,
    ));
    out.push('\n');
    if !s.conditions.is_empty() {
        out.push_str("Conditions:\n");
        for c in &s.conditions {
            out.push_str(&format!("  {} {}: {}\n", c.type_, c.status, c.message));
        }
    }
    if !d.alerts.is_empty() {
        out.push_str("Alerts:\n");
        for a in d.alerts {
            out.push_str(&format!(
                "  {} {} {} ({})",
                output::timestamp(a.firing_since.unwrap_or(a.active_since)),
                a.key,
                a.phase.as_str(),
                a.summary
            ));
            if let Some(action) = &a.action {
                out.push_str(&format!("\n    -> {action}"));
            }
            out.push('\n');
        }
    }
    if !d.events.is_empty() {
        out.push_str("Events:\n");
        for e in d.events {
            out.push_str(&format!("  {e}\n"));
        }
    }
    out
}
