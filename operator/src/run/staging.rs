//! Storing a run's `path:` inputs and finding the artifacts its parameters name: one pod runs
//! the launcher's `stage` command in the image of the first step that has such inputs, from
//! the directory named by the `toucan.dev/source-dir` annotation (of the run, else the
//! Pipeline), for whatever its submitter did not store already. Its result reaches the engine
//! as `Staged` or `StagingFailed`.

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::api::Api;
use toucan_core::api::{Pipeline, PipelineRun};
use toucan_core::engine::run::Observation;
use toucan_core::engine::{Run, RunPlan, StagedInputs, Unstaged};
use toucan_core::launch::{STAGE_NODE, StageInput, StageSpec};
use toucan_core::records::{ArtifactRef, DocumentKind};

use super::execute::{create_pod, find_pod};
use super::observe::ended_report;
use super::pods::{self, LauncherPod, RunRef, SOURCE_DIR_ANNOTATION};
use crate::context::Context;
use crate::error::{Error, Result};
use toucan_core::api::labels::{CHECKPOINTS_FROM_ANNOTATION, STAGED_INPUTS_ANNOTATION};

/// Creates the stage pod, or observes how it ended.
pub async fn observe(
    plr: &PipelineRun,
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
) -> Result<Vec<Observation>> {
    let submitted = match plr.annotations().get(STAGED_INPUTS_ANNOTATION) {
        None => StagedInputs::new(),
        Some(text) => match already_staged(&run.plan, text) {
            Ok(inputs) => inputs,
            Err(message) => return Ok(vec![Observation::StagingFailed { message }]),
        },
    };
    let inputs: Vec<Unstaged> = run
        .plan
        .unstaged_inputs()
        .into_iter()
        .filter(|u| {
            !submitted
                .get(&u.step)
                .is_some_and(|m| m.contains_key(&u.input))
        })
        .collect();
    let Some(first) = inputs.first() else {
        return Ok(vec![Observation::Staged { inputs: submitted }]);
    };
    let pod_name = pods::pod_name(&run_ref.name, STAGE_NODE, 1);
    let Some(pod) = find_pod(ctx, run_ref, &pod_name).await? else {
        let Some(sp) = run.plan.step(&first.step) else {
            return Ok(Vec::new());
        };
        let spec = StageSpec {
            run_id: run_ref.uid.clone(),
            artifacts: ctx.pod_defaults.artifacts.clone(),
            inputs: inputs
                .iter()
                .map(|u| StageInput {
                    step: u.step.clone(),
                    input: u.input.clone(),
                    path: u.path.clone(),
                    param: u.param.clone(),
                })
                .collect(),
        };
        let spec_json = serde_json::to_string(&spec).map_err(|e| Error::CorruptState {
            run_id: run_ref.uid.clone(),
            detail: format!("encoding the stage spec: {e}"),
        })?;
        let pod = pods::build_pod(
            run_ref,
            &ctx.pod_defaults,
            &LauncherPod {
                node: STAGE_NODE,
                step: STAGE_NODE,
                attempt: 1,
                image: &sp.step.image,
                subcommand: "stage",
                spec_json,
                resources: None,
                pod: sp.step.pod.as_ref(),
                timeout_ms: None,
                working_dir: source_dir(plr, ctx, run_ref).await?,
            },
        );
        create_pod(ctx, run_ref, pod).await?;
        return Ok(Vec::new());
    };
    let Some(report) = ended_report(ctx, &run_ref.uid, STAGE_NODE, 1, &pod).await? else {
        return Ok(Vec::new());
    };
    if report.succeeded {
        let mut inputs = submitted;
        for (step, by_input) in staged_inputs(report.outputs.artifacts) {
            inputs.entry(step).or_default().extend(by_input);
        }
        return Ok(vec![Observation::Staged { inputs }]);
    }
    let why = report
        .error
        .unwrap_or_else(|| "the stage pod failed".into());
    tracing::warn!(run = %run_ref.uid, "storing the run's inputs failed: {why}");
    Ok(vec![Observation::StagingFailed { message: why }])
}

/// The run's inputs as its submitter stored them, as the plan keeps them
/// ([`RunPlan::submitted_inputs`]).
fn already_staged(plan: &RunPlan, annotation: &str) -> std::result::Result<StagedInputs, String> {
    let inputs = serde_json::from_str(annotation).map_err(|e| {
        format!("annotation {STAGED_INPUTS_ANNOTATION} is not {{STEP: {{INPUT: artifact}}}}: {e}")
    })?;
    Ok(plan.submitted_inputs(inputs))
}

/// The stage report's artifacts, keyed `STEP/INPUT`, by step and input.
fn staged_inputs(artifacts: BTreeMap<String, ArtifactRef>) -> StagedInputs {
    let mut by_step = StagedInputs::new();
    for (key, artifact) in artifacts {
        if let Some((step, input)) = key.split_once('/') {
            by_step
                .entry(step.to_string())
                .or_default()
                .insert(input.to_string(), artifact);
        }
    }
    by_step
}

async fn source_dir(plr: &PipelineRun, ctx: &Context, run: &RunRef) -> Result<Option<String>> {
    if let Some(dir) = plr.annotations().get(SOURCE_DIR_ANNOTATION) {
        return Ok(Some(dir.clone()));
    }
    let Some(reference) = &plr.spec.pipeline_ref else {
        return Ok(None);
    };
    let pipeline = Api::<Pipeline>::namespaced(ctx.client.clone(), &run.namespace)
        .get_opt(&reference.name)
        .await?;
    Ok(pipeline.and_then(|p| p.annotations().get(SOURCE_DIR_ANNOTATION).cloned()))
}

/// A PipelineRun annotated [`CHECKPOINTS_FROM_ANNOTATION`] (a promoted trial's larger budget):
/// the newest checkpoint pointer of each step of the run with that id is recorded for the
/// same step of this one, so that its pods restore it and training goes on from there. The
/// pointers are the store's, so the earlier PipelineRun may be gone. Best effort, as every
/// checkpoint is: a run that cannot inherit them trains from the start, and says why.
pub async fn inherit_checkpoints(plr: &PipelineRun, run: &RunRef, ctx: &Context) {
    let Some(from) = plr.annotations().get(CHECKPOINTS_FROM_ANNOTATION) else {
        return;
    };
    let result = async {
        let pointers = ctx
            .store
            .list_run_documents(from, DocumentKind::Checkpoint)
            .await?;
        for (node, body) in &pointers {
            ctx.store
                .put_run_document(
                    &run.uid,
                    DocumentKind::Checkpoint,
                    node,
                    body,
                    super::now_ms(),
                )
                .await?;
        }
        Ok::<_, Error>(pointers.len())
    }
    .await;
    match result {
        Ok(n) => {
            tracing::info!(run = %run.name, from = %from, checkpoints = n, "inherited checkpoints")
        }
        Err(e) => {
            tracing::warn!(run = %run.name, from = %from, error = %e, "inheriting checkpoints")
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn inputs_staged_by_the_submitter_are_taken_unless_a_parameter_names_another() {
        let spec: toucan_core::api::PipelineSpec = serde_yaml_ng::from_str(
            r#"
params: [{name: extra, default: ""}]
steps:
  - name: ingest
    image: i
    command: [a]
    inputs:
      artifacts:
        - {name: raw, path: data}
        - {name: extra, from: "{{params.extra}}"}
"#,
        )
        .unwrap();
        let text = r#"{"ingest": {"raw": {"digest": "sha256:ab", "size": 3, "kind": "file"},
                                  "extra": {"digest": "sha256:cd", "size": 3, "kind": "file"}}}"#;
        let plan = |extra: &str| {
            let params = [("extra".to_string(), serde_json::json!(extra))].into();
            RunPlan::new("p", spec.clone(), params)
        };
        for (value, kept) in [("sha256:cd", true), ("sha256:ef", false), ("x.csv", true)] {
            let inputs = already_staged(&plan(value), text).unwrap();
            assert_eq!(inputs["ingest"]["raw"].digest, "sha256:ab");
            assert_eq!(inputs["ingest"].contains_key("extra"), kept, "{value}");
        }
        let message = already_staged(&plan(""), "[1]").unwrap_err();
        assert!(message.contains(STAGED_INPUTS_ANNOTATION), "{message}");
    }
}
