//! `toucan run`: validate, import local inputs, record the run, drive it, print the result.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use toucan_core::api::PipelineSpec;
use toucan_core::engine::run::Effect;
use toucan_core::engine::{Run, RunPlan, Unstaged};
use toucan_core::manifest::{self, Diagnostic, Document, LoadedDocument, Source};
use toucan_core::records::{ArtifactRef, Phase};
use toucan_core::time::now_ms;
use toucan_store::artifacts::{ArtifactStore, Digest};
use toucan_store::metadata::MetadataStore;

use crate::Outcome;
use crate::home::Home;
use crate::local::executor::Executor;
use crate::local::progress::Progress;
use crate::output::Format;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A manifest file or directory holding a Pipeline, a PipelineRun and its Pipeline, a
    /// TrainingJob, or a TuningStudy (and the Pipeline its trials run).
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    file: Option<PathBuf>,
    /// A parameter value, `name=value` (repeatable).
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Run every step even when a cached result exists (results are still cached).
    #[arg(long)]
    no_cache: bool,
    /// How many steps may run at once.
    #[arg(long, default_value_t = default_parallelism())]
    parallelism: usize,
    /// Continue a failed or cancelled run, reusing every step that succeeded; or an
    /// interrupted study, with the trials it recorded.
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .max(4)
}

pub async fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    let home = Home::locate();
    let parallelism = args.parallelism.max(1);
    // An Endpoint is served until Ctrl-C.
    if let (None, Some(file)) = (&args.resume, &args.file)
        && let Some(outcome) = super::serve::run_file(file).await?
    {
        return Ok(outcome);
    }
    // A study runs its trials as runs; its own id resumes it.
    let study = match (&args.resume, &args.file) {
        (Some(id), _) => super::study::resume(id, parallelism, args.output).await?,
        (None, Some(file)) => super::study::run_file(file, parallelism, args.output).await?,
        (None, None) => None,
    };
    if let Some(outcome) = study {
        return Ok(outcome);
    }
    let (run, effects, store) = match &args.resume {
        Some(id) => match resume(&home, id, parallelism).await? {
            Ok(x) => x,
            Err(message) => {
                eprintln!("error: {message}");
                return Ok(Outcome::InvalidInput);
            }
        },
        None => {
            let Some(file) = &args.file else {
                return Ok(Outcome::InvalidInput);
            };
            let plan = match prepare(file, &args.params, args.no_cache) {
                Ok(p) => p,
                Err(diagnostics) => {
                    return Ok(super::invalid_input(&diagnostics, Some("nothing was run")));
                }
            };
            let store = home.open_store().await?;
            let artifacts = home.open_artifacts()?;
            let (plan, base) = plan;
            let plan = import_local_inputs(plan, &base, &artifacts).await?;
            let id = ulid::Ulid::new().to_string().to_lowercase();
            let (run, effects) =
                Run::start(&id, plan, now_ms(), parallelism).context("recording the run's plan")?;
            (run, effects, store)
        }
    };
    let run_id = run.id.clone();
    let exec = Arc::new(Executor {
        store: store.clone(),
        artifacts: home.open_artifacts()?,
        launcher: launcher_binary()?,
        home,
        run_id: run_id.clone(),
        progress: Arc::new(Progress::new()),
        checkpoints: None,
    });
    let phase = crate::local::drive(exec, run, effects).await?;
    let summary = super::summary::load(store.as_ref(), &run_id).await?;
    match args.output {
        Format::Table => println!("{}", super::summary::table(&summary)),
        format => crate::output::print_structured(format, &summary)?,
    }
    Ok(if phase == Phase::Succeeded {
        Outcome::Success
    } else {
        Outcome::RunFailed
    })
}

/// Loads, validates and selects what to run; resolves its parameters. Writes nothing.
pub(crate) fn prepare(
    file: &Path,
    cli_params: &[String],
    no_cache: bool,
) -> Result<(RunPlan, PathBuf), Vec<Diagnostic>> {
    let docs = manifest::load(&[file.to_path_buf()])?;
    let target = manifest::select(&docs)?;
    let mut errors: Vec<Diagnostic> = docs.iter().flat_map(missing_local_inputs).collect();
    let mut given = target.params.clone();
    for p in cli_params {
        match p.split_once('=') {
            Some((name, value)) => {
                given.retain(|(n, _)| n != name);
                given.push((
                    name.to_string(),
                    serde_json::Value::String(value.to_string()),
                ));
            }
            None => errors.push(Diagnostic {
                source: target.source.clone(),
                path: format!("-p {p}"),
                message: "expected NAME=VALUE".to_string(),
            }),
        }
    }
    let params = match manifest::resolve_params(&target.spec, &given, &target.source) {
        Ok(p) => Some(p),
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut plan = RunPlan::new(
        &target.pipeline_name,
        target.spec.clone(),
        params.unwrap_or_default(),
    );
    plan.no_cache = no_cache;
    Ok((plan, target.base_dir.clone()))
}

/// Every `path:` input of a document that does not exist, as diagnostics.
pub fn missing_local_inputs(doc: &LoadedDocument) -> Vec<Diagnostic> {
    let job;
    let (spec, prefix): (Option<&PipelineSpec>, &str) = match &doc.document {
        Document::Pipeline(p) => (Some(&p.spec), "spec"),
        Document::PipelineRun(r) => (r.spec.pipeline_spec.as_ref(), "spec.pipelineSpec"),
        Document::TrainingJob(j) => {
            job = PipelineSpec {
                steps: vec![j.spec.step(manifest::JOB_STEP)],
                ..PipelineSpec::default()
            };
            (Some(&job), "spec")
        }
        Document::TuningStudy(s) => (
            s.spec.trial.pipeline_spec.as_ref(),
            "spec.trial.pipelineSpec",
        ),
        // An Endpoint reads no local files.
        Document::Endpoint(_) => (None, "spec"),
    };
    let Some(spec) = spec else { return Vec::new() };
    let is_job = matches!(doc.document, Document::TrainingJob(_));
    let mut out = Vec::new();
    for (list, steps) in [("steps", &spec.steps), ("finally", &spec.finally)] {
        for (i, step) in steps.iter().enumerate() {
            let at = if is_job {
                prefix.to_string()
            } else {
                format!("{prefix}.{list}[{i}]")
            };
            for (j, a) in step.inputs.iter().flat_map(|x| &x.artifacts).enumerate() {
                if let Some(path) = &a.path {
                    let full = doc.base_dir.join(path);
                    if !full.exists() {
                        out.push(diagnostic(
                            &doc.source,
                            format!("{at}.inputs.artifacts[{j}].path"),
                            format!("no such file or directory: {}", full.display()),
                        ));
                    }
                }
            }
        }
    }
    out
}

fn diagnostic(source: &Source, path: String, message: String) -> Diagnostic {
    Diagnostic {
        source: source.clone(),
        path,
        message,
    }
}

/// Stores every `path:` input (relative to `base`) and every path a parameter names as an
/// input artifact (relative to the current directory) in the artifact store, and finds the
/// artifacts parameters name by digest: their digests enter the cache key.
pub(crate) async fn import_local_inputs(
    mut plan: RunPlan,
    base: &Path,
    artifacts: &ArtifactStore,
) -> anyhow::Result<RunPlan> {
    let mut seen: BTreeMap<PathBuf, ArtifactRef> = BTreeMap::new();
    for Unstaged {
        step,
        input,
        path,
        param,
    } in plan.unstaged_inputs()
    {
        let what = match &param {
            Some(p) => format!("input {input:?} of step {step:?} (parameter {p:?})"),
            None => format!("input {input:?} of step {step:?}"),
        };
        let by_digest = param.as_ref().and_then(|_| Digest::parse(&path).ok());
        let artifact = if let Some(digest) = by_digest {
            artifacts
                .resolve(&digest)
                .await
                .with_context(|| what.clone())?
        } else {
            let full = match param {
                Some(_) => std::path::absolute(&path)?,
                None => base.join(&path),
            };
            let full = full
                .canonicalize()
                .with_context(|| format!("{what}: {}", full.display()))?;
            match seen.get(&full) {
                Some(r) => r.clone(),
                None => {
                    let root = if full.is_dir() {
                        full.clone()
                    } else {
                        full.parent().map_or(full.clone(), Path::to_path_buf)
                    };
                    let r = artifacts
                        .put_path(&full, &root)
                        .await
                        .with_context(|| format!("importing {what}"))?;
                    seen.insert(full, r.clone());
                    r
                }
            }
        };
        plan.local_inputs
            .entry(step)
            .or_default()
            .insert(input, artifact);
    }
    Ok(plan)
}

type Resumed = (Run, Vec<Effect>, Arc<dyn MetadataStore>);

/// Reloads a run from the store and the engine's record to continue from.
async fn resume(
    home: &Home,
    id: &str,
    parallelism: usize,
) -> anyhow::Result<Result<Resumed, String>> {
    let store = home.open_existing_store().await?;
    let Some(run) = store.get_run(id).await? else {
        return Ok(Err(format!("no run {id:?} in {}", home.database_url())));
    };
    if run.phase == Phase::Succeeded {
        return Ok(Err(format!(
            "run {id} is {}; there is nothing to resume",
            run.phase
        )));
    }
    let plan: RunPlan = serde_json::from_value(run.spec.clone())
        .with_context(|| format!("reading the plan of run {id}"))?;
    let steps = store.list_steps(id).await?;
    let (run, effects) = Run::resume(id, plan, &steps, now_ms(), parallelism);
    Ok(Ok((run, effects, store)))
}

/// The launcher that wraps each step attempt: `toucan-launcher` (`TOUCAN_LAUNCHER`, next to
/// this executable, or on PATH), which links nothing but the C library, else `toucan-worker`,
/// which has the same `exec` but loads libtorch first: about 0.4 s of CPU for every step.
pub(crate) fn launcher_binary() -> anyhow::Result<PathBuf> {
    let launcher = crate::local::sibling_binary("toucan-launcher", "TOUCAN_LAUNCHER")?;
    if launcher.is_absolute() || crate::local::on_path(&launcher) {
        return Ok(launcher);
    }
    crate::local::sibling_binary("toucan-worker", "TOUCAN_WORKER")
}
