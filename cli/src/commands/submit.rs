//! `toucan submit FILE`: runs a manifest on a cluster, with its `path:` inputs.
//!
//! The manifest is loaded and validated as `toucan run` does, and its parameters resolved.
//! The `path:` inputs are files on this machine, which the cluster cannot read: they are
//! stored in the artifact store the operator uses (`--artifacts`, as the operator's own flag),
//! from here, and the PipelineRun carries their digests in the
//! `toucan.dev/staged-inputs` annotation, so the operator starts the steps without storing
//! anything itself. The PipelineRun holds the Pipeline's spec inline, with the resolved
//! parameters, under the name `PIPELINE-xxxxx`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use kube::Api;
use kube::api::PostParams;
use toucan_core::api::PipelineRun;
use toucan_core::api::labels::STAGED_INPUTS_ANNOTATION;
use toucan_store::artifacts::ArtifactStore;

use crate::Outcome;
use crate::cluster::{Cluster, ClusterArgs, ClusterError};

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// A manifest file or directory holding a Pipeline, or a PipelineRun and its Pipeline.
    file: PathBuf,
    /// Set a parameter (repeatable); the value is parsed by the parameter's declared type.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// The artifact store the operator uses (its `--artifacts`, e.g. `s3://bucket/toucan`):
    /// the `path:` inputs are stored there from this machine. S3 credentials come from the
    /// standard `AWS_*` variables.
    #[arg(long, env = "TOUCAN_ARTIFACTS", value_name = "LOCATION")]
    artifacts: String,
    /// Wait until the run has finished; the exit code then says how it ended.
    #[arg(long)]
    wait: bool,
    /// The kubeconfig context to use.
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
    /// The namespace; the context's namespace when omitted, else `default`.
    #[arg(short = 'n', long, value_name = "NS")]
    namespace: Option<String>,
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<Outcome> {
    let (plan, base) = match super::run::prepare(&args.file, &args.params, false) {
        Ok(p) => p,
        Err(diagnostics) => {
            return Ok(super::invalid_input(
                &diagnostics,
                Some("nothing was submitted"),
            ));
        }
    };
    let cluster = match Cluster::connect(&ClusterArgs {
        cluster: true,
        context: args.context.clone(),
        namespace: args.namespace.clone(),
        api: None,
        operator_namespace: String::new(),
    })
    .await
    {
        Ok(c) => c,
        Err(e) => return Ok(failed(e)),
    };
    let artifacts = ArtifactStore::open(&args.artifacts)
        .with_context(|| format!("opening the artifact store {}", args.artifacts))?;
    let plan = super::run::import_local_inputs(plan, &base, &artifacts).await?;

    let params: Vec<serde_json::Value> = plan
        .params
        .iter()
        .map(|(name, value)| serde_json::json!({"name": name, "value": value}))
        .collect();
    let run: PipelineRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "toucan.dev/v1alpha1",
        "kind": "PipelineRun",
        "metadata": {
            "generateName": format!("{}-", plan.pipeline.replace('_', "-")),
            "annotations": {
                STAGED_INPUTS_ANNOTATION: serde_json::to_string(&plan.local_inputs)?,
            },
        },
        "spec": {"pipelineSpec": plan.spec, "params": params},
    }))
    .context("building the PipelineRun")?;
    let api: Api<PipelineRun> = Api::namespaced(cluster.client(), cluster.namespace());
    let created = match api.create(&PostParams::default(), &run).await {
        Ok(created) => created,
        Err(e) => return Ok(failed(cluster.error("creating the PipelineRun".into(), e))),
    };
    let name = created.metadata.name.unwrap_or_default();
    println!("pipelinerun/{name} created in {}", cluster.namespace());
    if !args.wait {
        return Ok(Outcome::Success);
    }
    loop {
        let run = match api.get(&name).await {
            Ok(run) => run,
            Err(e) => {
                return Ok(failed(
                    cluster.error(format!("reading pipelinerun/{name}"), e),
                ));
            }
        };
        let status = run.status.unwrap_or_default();
        match status.phase.as_deref() {
            Some(phase @ ("Succeeded" | "Failed" | "Cancelled")) => {
                let message = status.message.unwrap_or_default();
                println!("pipelinerun/{name} {phase} {message}");
                return Ok(if phase == "Succeeded" {
                    Outcome::Success
                } else {
                    Outcome::RunFailed
                });
            }
            _ => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Prints a cluster error with its causes; its outcome.
fn failed(e: ClusterError) -> Outcome {
    let outcome = e.outcome();
    eprintln!("error: {:#}", anyhow::Error::from(e));
    outcome
}
