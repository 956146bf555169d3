//! Which bundle each version serves: a `{digest}` as written, or a `{run, step, artifact}`
//! read from the metadata store, where the run controller records every step's outputs under
//! the PipelineRun's run id (`status.runId`, its UID).
//!
//! A reference that cannot be served yet (the run does not exist, has not finished the step,
//! or the step has no such output) is a wait with the reason in words, not an error: the
//! endpoint is looked at again a little later.

use kube::api::Api;
use toucan_core::api::{ModelVersion, PipelineRun};
use toucan_core::records::{ArtifactKind, Phase};
use toucan_core::serving::spec::ModelSource;

use crate::context::Context;
use crate::error::Result;

/// A version's bundle digest, or why it has none yet.
pub async fn resolve(
    ctx: &Context,
    namespace: &str,
    version: &ModelVersion,
) -> Result<Result<String, String>> {
    let source = match version.model.source() {
        Ok(source) => source,
        Err(e) => return Ok(Err(e)),
    };
    let (run, step, artifact) = match source {
        ModelSource::Digest(digest) => return Ok(Ok(digest)),
        ModelSource::Output {
            run,
            step,
            artifact,
        } => (run, step, artifact),
    };
    let runs: Api<PipelineRun> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(found) = runs.get_opt(&run).await? else {
        return Ok(Err(format!(
            "waiting for PipelineRun {run:?} in namespace {namespace}"
        )));
    };
    let run_id = found
        .status
        .as_ref()
        .and_then(|s| s.run_id.clone())
        .or_else(|| found.metadata.uid.clone());
    let Some(run_id) = run_id else {
        return Ok(Err(format!("waiting for PipelineRun {run:?} to start")));
    };
    let Some(record) = ctx.store.get_step(&run_id, &step).await? else {
        return Ok(Err(format!(
            "waiting for step {step:?} of PipelineRun {run:?}"
        )));
    };
    if record.phase != Phase::Succeeded {
        return Ok(Err(format!(
            "waiting for step {step:?} of PipelineRun {run:?} to succeed (it is {})",
            record.phase.as_str()
        )));
    }
    let Some(output) = record.outputs.artifacts.get(&artifact) else {
        let known: Vec<&String> = record.outputs.artifacts.keys().collect();
        return Ok(Err(format!(
            "step {step:?} of PipelineRun {run:?} has no output artifact {artifact:?} (it has {known:?})"
        )));
    };
    if output.kind != ArtifactKind::File {
        return Ok(Err(format!(
            "{run}/{step}/{artifact} is a directory; a model is the file `toucan-worker export` writes"
        )));
    }
    Ok(Ok(output.digest.clone()))
}
