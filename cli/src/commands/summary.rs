//! The result of a run as `toucan run -o json` and `toucan describe run` print it.

use std::collections::BTreeMap;

use serde::Serialize;
use toucan_core::engine::{RunPlan, step_of};
use toucan_core::graph;
use toucan_core::records::{RunRecord, StepOutputs, StepRecord};
use toucan_store::metadata::MetadataStore;

use crate::output::{duration, table as render_table, timestamp};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub run: String,
    /// `NAMESPACE/NAME` of the PipelineRun, for a run read from a cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline_run: Option<String>,
    pub pipeline: String,
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    pub params: serde_json::Value,
    pub steps: Vec<StepSummary>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepSummary {
    pub name: String,
    pub phase: String,
    pub cached: bool,
    pub cache_key: Option<String>,
    pub attempts: u32,
    pub duration_ms: Option<i64>,
    pub outputs: StepOutputs,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Reads a run and its steps from a store; see [`from_records`].
pub async fn load(store: &dyn MetadataStore, id: &str) -> anyhow::Result<RunSummary> {
    let Some(run) = store.get_run(id).await? else {
        anyhow::bail!("no run {id:?}");
    };
    let steps = store.list_steps(id).await?;
    Ok(from_records(run, steps))
}

/// A run and its steps, ordered as the pipeline declares them (fan-out children after their
/// step, `finally` steps last). The rows come from the local store or, with `--cluster`, from
/// the operator's API.
pub fn from_records(run: RunRecord, steps: Vec<StepRecord>) -> RunSummary {
    let plan: Option<RunPlan> = serde_json::from_value(run.spec.clone()).ok();
    let order: BTreeMap<String, usize> = plan
        .as_ref()
        .map(|p| {
            p.steps()
                .enumerate()
                .map(|(i, s)| (s.step.name.clone(), i))
                .collect()
        })
        .unwrap_or_default();
    let deps: BTreeMap<String, Vec<String>> = plan
        .as_ref()
        .map(|p| {
            p.steps()
                .map(|s| {
                    (
                        s.step.name.clone(),
                        graph::dependencies(s.step).into_iter().collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut steps = steps;
    steps.sort_by_key(|s| {
        let step = step_of(&s.name);
        let index = s
            .name
            .strip_suffix(']')
            .and_then(|n| n.rsplit_once('['))
            .and_then(|(_, i)| i.parse::<i64>().ok())
            .unwrap_or(-1);
        (
            order.get(step).copied().unwrap_or(usize::MAX),
            index,
            s.name.clone(),
        )
    });
    let steps = steps
        .into_iter()
        .map(|s| StepSummary {
            depends_on: if s.name.contains('[') {
                Vec::new()
            } else {
                deps.get(&s.name).cloned().unwrap_or_default()
            },
            duration_ms: match (s.started_at, s.finished_at) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            },
            name: s.name,
            phase: s.phase.to_string(),
            cached: s.cached,
            cache_key: s.cache_key,
            attempts: s.attempts,
            outputs: s.outputs,
            message: s.message,
        })
        .collect();
    RunSummary {
        run: run.id,
        pipeline_run: None,
        pipeline: run.pipeline,
        phase: run.phase.to_string(),
        message: run.message,
        created_at: timestamp(run.created_at),
        duration_ms: run.finished_at.map(|f| f - run.created_at),
        params: run.params,
        steps,
    }
}

/// The human table of a run's steps.
pub fn table(s: &RunSummary) -> String {
    let rows = s
        .steps
        .iter()
        .map(|st| {
            vec![
                st.name.clone(),
                st.phase.clone(),
                if st.cached { "yes".into() } else { "no".into() },
                st.attempts.to_string(),
                st.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
                outputs_text(&st.outputs),
            ]
        })
        .collect();
    let mut out = format!(
        "run {} ({}) {}{}\n",
        s.run,
        s.pipeline,
        s.phase,
        s.duration_ms
            .map(|d| format!(" in {}", duration(d)))
            .unwrap_or_default()
    );
    out.push_str(&render_table(
        &["STEP", "PHASE", "CACHED", "ATTEMPTS", "DURATION", "OUTPUTS"],
        rows,
    ));
    out
}

/// Output params in full, artifacts by short digest.
pub fn outputs_text(o: &StepOutputs) -> String {
    let mut parts: Vec<String> = o
        .params
        .iter()
        .map(|(k, v)| format!("{k}={}", shorten(v, 40)))
        .collect();
    parts.extend(o.artifacts.iter().map(|(k, a)| {
        let hex = a.digest.trim_start_matches("sha256:");
        format!("{k}@{}", &hex[..hex.len().min(12)])
    }));
    parts.join(" ")
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}
