//! `logs RUN STEP --cluster`: a step attempt's log from its pod, or (`--metrics`) the metrics
//! the step pushed to the operator's API.
//!
//! Each attempt of a node is one pod, labelled with the PipelineRun's UID and the attempt and
//! annotated with the exact node name; the log is the `step` container's, read through the
//! Kubernetes API (`pods/log`), so it is there for as long as the pod is.

use k8s_openapi::api::core::v1::Pod;

use super::{ATTEMPT_LABEL, Cluster, ClusterArgs, NODE_ANNOTATION, finish};
use crate::Outcome;
use crate::commands::inspect::{no_attempt, print_log, print_metrics};
use crate::output::Format;

/// The API's 404 message when a step pushed no metrics.
const NO_METRICS: &str = "no metrics";

/// The pod of `attempt` (the latest when `None`) of `node`, with its attempt number; else the
/// attempts there are.
fn pick_attempt<'a>(
    pods: &'a [Pod],
    node: &str,
    attempt: Option<u32>,
) -> Result<(&'a Pod, u32), Vec<u32>> {
    let mut of_node: Vec<(&Pod, u32)> = pods
        .iter()
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(NODE_ANNOTATION))
                .is_some_and(|n| n == node)
        })
        .filter_map(|p| {
            let n = p
                .metadata
                .labels
                .as_ref()?
                .get(ATTEMPT_LABEL)?
                .parse()
                .ok()?;
            Some((p, n))
        })
        .collect();
    of_node.sort_by_key(|(_, n)| *n);
    let chosen = match attempt {
        Some(wanted) => of_node.iter().find(|(_, n)| *n == wanted),
        None => of_node.last(),
    };
    chosen
        .copied()
        .ok_or_else(|| of_node.iter().map(|(_, n)| *n).collect())
}

/// The series as the local metrics file holds it: one JSON object a line.
fn metrics_lines(epochs: &[serde_json::Map<String, serde_json::Value>]) -> String {
    epochs
        .iter()
        .map(|e| format!("{}\n", serde_json::Value::Object(e.clone())))
        .collect()
}

/// `toucan logs RUN STEP --cluster`.
pub async fn logs(
    args: &ClusterArgs,
    run: &str,
    step: &str,
    attempt: Option<u32>,
    metrics: bool,
    format: Format,
) -> anyhow::Result<Outcome> {
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(object) = cluster.pipeline_run(run).await? else {
                eprintln!(
                    "error: no PipelineRun {run:?} in namespace {:?}",
                    cluster.namespace
                );
                return Ok(Outcome::InvalidInput);
            };
            if metrics {
                return step_metrics(&cluster, &object, run, step, attempt, format).await;
            }
            let uid = object.metadata.uid.clone().unwrap_or_default();
            let pods = cluster.step_pods(&uid).await?;
            let (pod, number) = match pick_attempt(&pods, step, attempt) {
                Ok(found) => found,
                Err(known) => {
                    eprintln!("error: {}", no_attempt(run, step, attempt, &known));
                    return Ok(Outcome::InvalidInput);
                }
            };
            let name = pod.metadata.name.clone().unwrap_or_default();
            let text = cluster.step_log(&name).await?;
            print_log(run, step, number, text, format)?;
            Ok(Outcome::Success)
        }
        .await,
    )
}

async fn step_metrics(
    cluster: &Cluster,
    object: &kube::api::DynamicObject,
    run: &str,
    step: &str,
    attempt: Option<u32>,
    format: Format,
) -> anyhow::Result<Outcome> {
    let Some(run_id) = super::runs::summarize(object).run_id else {
        // Not started: no step has run, so none pushed metrics.
        print_metrics("", format)?;
        return Ok(Outcome::Success);
    };
    let series = match cluster.api.metrics(&run_id, step).await {
        Ok(series) => series,
        Err(e) if e.is_missing(NO_METRICS) => {
            print_metrics("", format)?;
            return Ok(Outcome::Success);
        }
        Err(e) => {
            eprintln!(
                "error: the metrics of step {step:?} of run {run:?} are unavailable: {}",
                e.explain()
            );
            return Ok(Outcome::ClusterUnavailable);
        }
    };
    if let (Some(wanted), Some(kept)) = (attempt, series.attempt)
        && wanted != kept
    {
        eprintln!(
            "error: the toucan API keeps the metrics of the latest attempt only \
             (attempt {kept} of step {step:?})"
        );
        return Ok(Outcome::InvalidInput);
    }
    print_metrics(&metrics_lines(&series.epochs), format)?;
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, attempt: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "labels": {ATTEMPT_LABEL: attempt},
                "annotations": {NODE_ANNOTATION: node},
            }
        }))
        .unwrap()
    }

    fn picked(pods: &[Pod], node: &str, attempt: Option<u32>) -> Result<(String, u32), Vec<u32>> {
        pick_attempt(pods, node, attempt).map(|(p, n)| (p.metadata.name.clone().unwrap(), n))
    }

    #[test]
    fn the_latest_attempt_of_the_exact_node_is_picked() {
        let pods = [
            pod("train-1", "train", "1"),
            pod("train-10", "train", "10"),
            pod("train-2", "train", "2"),
            pod("shard-1", "shard[1]", "1"),
            pod("unlabelled", "train", "x"),
        ];
        assert_eq!(picked(&pods, "train", None), Ok(("train-10".into(), 10)));
        assert_eq!(picked(&pods, "train", Some(2)), Ok(("train-2".into(), 2)));
        assert_eq!(picked(&pods, "shard[1]", None), Ok(("shard-1".into(), 1)));
        assert_eq!(picked(&pods, "train", Some(3)), Err(vec![1, 2, 10]));
        assert_eq!(picked(&pods, "shard", None), Err(vec![]));
    }

    #[test]
    fn metrics_become_json_lines() {
        let series: toucan_api::MetricSeries = serde_json::from_value(serde_json::json!({
            "attempt": 1,
            "epochs": [{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25}],
        }))
        .unwrap();
        assert_eq!(
            metrics_lines(&series.epochs),
            "{\"epoch\":1,\"loss\":0.5}\n{\"epoch\":2,\"loss\":0.25}\n"
        );
        assert_eq!(metrics_lines(&[]), "");
    }
}
