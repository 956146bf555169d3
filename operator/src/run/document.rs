//! The engine's record of a run, kept as the run's `state` document in the metadata store,
//! and its creation from a PipelineRun.

use kube::api::Api;
use toucan_core::api::{Pipeline, PipelineRun};
use toucan_core::engine::run::Effect;
use toucan_core::engine::{Run, RunPlan};
use toucan_core::records::DocumentKind;

use super::prepare::{self, Invalid};
use super::{MAX_IN_FLIGHT, now_ms, pods::RunRef, status};
use crate::context::Context;
use crate::error::{Error, Result};

/// The run's record, if it was created.
pub async fn load(ctx: &Context, run_id: &str) -> Result<Option<Run>> {
    let Some(body) = ctx
        .store
        .get_run_document(run_id, DocumentKind::State, "")
        .await?
    else {
        return Ok(None);
    };
    serde_json::from_value(body)
        .map(Some)
        .map_err(|e| Error::CorruptState {
            run_id: run_id.to_string(),
            detail: e.to_string(),
        })
}

pub async fn save(ctx: &Context, run: &Run) -> Result<()> {
    let body = serde_json::to_value(run).map_err(|e| Error::CorruptState {
        run_id: run.id.clone(),
        detail: e.to_string(),
    })?;
    ctx.store
        .put_run_document(&run.id, DocumentKind::State, "", &body, now_ms())
        .await?;
    Ok(())
}

/// Creates the run's record from the PipelineRun, with the effects that record and announce
/// it (the record is saved once they are carried out: it refers to the run's row). None: the referenced Pipeline is not there yet. An invalid run is created finished,
/// with the problems as its message.
pub async fn create(
    plr: &PipelineRun,
    run: &RunRef,
    ctx: &Context,
) -> Result<Option<(Run, Vec<Effect>)>> {
    let referenced = match &plr.spec.pipeline_ref {
        Some(r) => Api::<Pipeline>::namespaced(ctx.client.clone(), &run.namespace)
            .get_opt(&r.name)
            .await?
            .map(|p| (r.name.clone(), p.spec)),
        None => None,
    };
    let planned = prepare::plan(
        plr,
        &run.namespace,
        &run.name,
        referenced.as_ref().map(|(n, s)| (n.as_str(), s)),
    );
    let now = now_ms();
    let created = match planned {
        Ok(plan) => {
            ctx.metrics.runs_active.inc();
            Run::start(&run.uid, plan, now, MAX_IN_FLIGHT)
        }
        Err(Invalid::MissingPipeline(name)) => {
            status::waiting_for_pipeline(plr, ctx, &name).await?;
            return Ok(None);
        }
        Err(invalid) => {
            // An empty plan records the failure; nothing will run.
            let spec = plr.spec.pipeline_spec.clone().unwrap_or_default();
            let plan = RunPlan::new(
                &format!("{}/{}", run.namespace, run.name),
                spec,
                Default::default(),
            );
            Run::rejected(&run.uid, plan, &invalid.to_string(), now)
        }
    };
    created.map(Some).map_err(|e| Error::CorruptState {
        run_id: run.uid.clone(),
        detail: format!("recording the plan: {e}"),
    })
}
