//! `logs RUN STEP --cluster`: a step attempt's log from its pod, or (`--metrics`) the metrics
//! the step pushed to the operator's API.
//!
//! Each attempt of a node is one pod, labelled with the PipelineRun's UID and the attempt and
//! annotated with the exact node name; the log is the `step` container's, read through the
//! Kubernetes API (`pods/log`), so it is there for as long as the pod is. An attempt of a
//! distributed step is one pod per replica and incarnation, labelled with both: the one shown
//! is chosen as locally (`--replica`, else the leader; `--incarnation`, else the newest).

use k8s_openapi::api::core::v1::Pod;
use toucan_core::api::PipelineRun;

use super::{ATTEMPT_LABEL, Cluster, ClusterArgs, NODE_ANNOTATION, finish};
use crate::Outcome;
use crate::commands::inspect::{no_attempt, print_log, print_metrics};
use crate::commands::replica::{self, ReplicaChoice};
use crate::output::Format;

use toucan_core::api::labels::{INCARNATION_LABEL, REPLICA_LABEL};

/// The API's 404 message when a step pushed no metrics.
const NO_METRICS: &str = "no metrics";

/// A pod of one attempt of a node, as its labels say.
#[derive(Debug)]
struct StepPod<'a> {
    pod: &'a Pod,
    attempt: u32,
    /// A distributed step's replica: `(incarnation, ROLE-INDEX)`.
    replica: Option<(u32, &'a str)>,
}

impl<'a> StepPod<'a> {
    /// `pod` when it runs an attempt of `node`; a replica label without an incarnation one is
    /// no pod of ours.
    fn of_node(pod: &'a Pod, node: &str) -> Option<StepPod<'a>> {
        let meta = &pod.metadata;
        if meta.annotations.as_ref()?.get(NODE_ANNOTATION)? != node {
            return None;
        }
        let labels = meta.labels.as_ref()?;
        let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
        let replica = match labels.get(REPLICA_LABEL) {
            Some(r) => Some((labels.get(INCARNATION_LABEL)?.parse().ok()?, r.as_str())),
            None => None,
        };
        Some(StepPod {
            pod,
            attempt,
            replica,
        })
    }
}

/// Why no pod fits a `logs` command.
#[derive(Debug, PartialEq)]
enum NoPod {
    /// No such attempt; the attempts there are.
    Attempt(Vec<u32>),
    /// `--replica`/`--incarnation` for a step that is not distributed.
    NotDistributed,
    /// No such replica or incarnation of the attempt, and what there is.
    Replica(String),
}

/// The pod whose log `logs` shows, with its attempt: of `attempt` (the latest when `None`)
/// of `node`, and for a distributed step the replica `choice` names.
fn pick_pod<'a>(
    pods: &'a [Pod],
    node: &str,
    attempt: Option<u32>,
    choice: &ReplicaChoice,
) -> Result<(&'a Pod, u32), NoPod> {
    let of_node: Vec<StepPod> = pods
        .iter()
        .filter_map(|p| StepPod::of_node(p, node))
        .collect();
    let mut attempts: Vec<u32> = of_node.iter().map(|p| p.attempt).collect();
    attempts.sort_unstable();
    attempts.dedup();
    let number = match attempt {
        Some(wanted) => attempts.contains(&wanted).then_some(wanted),
        None => attempts.last().copied(),
    };
    let Some(number) = number else {
        return Err(NoPod::Attempt(attempts));
    };
    let of_attempt: Vec<&StepPod> = of_node.iter().filter(|p| p.attempt == number).collect();
    let (replica_pods, replicas): (Vec<&Pod>, Vec<(u32, &str)>) = of_attempt
        .iter()
        .filter_map(|p| Some((p.pod, p.replica?)))
        .unzip();
    if replicas.is_empty() {
        if choice.given() {
            return Err(NoPod::NotDistributed);
        }
        // A step that is not distributed runs each attempt as one pod.
        return of_attempt
            .first()
            .map(|p| (p.pod, number))
            .ok_or(NoPod::Attempt(attempts));
    }
    let leader = replica::leader(replicas.iter().map(|(_, r)| *r));
    let index = replica::choose(&replicas, &leader, choice).map_err(NoPod::Replica)?;
    Ok((replica_pods[index], number))
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
    choice: &ReplicaChoice,
    metrics: bool,
    format: Format,
) -> anyhow::Result<Outcome> {
    if metrics && choice.given() {
        eprintln!(
            "error: the toucan API keeps one metric series per step, not one per replica: \
             --replica and --incarnation choose a log"
        );
        return Ok(Outcome::InvalidInput);
    }
    finish(
        async {
            let cluster = Cluster::connect(args).await?;
            let Some(object) = cluster.get::<PipelineRun>(run).await? else {
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
            let (pod, number) = match pick_pod(&pods, step, attempt, choice) {
                Ok(found) => found,
                Err(NoPod::Attempt(known)) => {
                    eprintln!("error: {}", no_attempt(run, step, attempt, &known));
                    return Ok(Outcome::InvalidInput);
                }
                Err(NoPod::NotDistributed) => {
                    eprintln!("error: {}", replica::not_distributed(run, step));
                    return Ok(Outcome::InvalidInput);
                }
                Err(NoPod::Replica(message)) => {
                    eprintln!("error: step {step:?} of run {run:?}: {message}");
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

    /// The pod of one replica of one incarnation, named as the operator names it.
    fn replica_pod(attempt: u32, replica: &str, incarnation: &str) -> Pod {
        let mut p = pod(
            &format!("job-train-{attempt}-{replica}-{incarnation}"),
            "train",
            &attempt.to_string(),
        );
        let labels = p.metadata.labels.as_mut().unwrap();
        labels.insert(REPLICA_LABEL.into(), replica.into());
        labels.insert(INCARNATION_LABEL.into(), incarnation.into());
        p
    }

    fn picked(
        pods: &[Pod],
        node: &str,
        attempt: Option<u32>,
        replica: Option<&str>,
        incarnation: Option<u32>,
    ) -> Result<(String, u32), NoPod> {
        let choice = ReplicaChoice {
            replica: replica.map(str::to_string),
            incarnation,
        };
        pick_pod(pods, node, attempt, &choice).map(|(p, n)| (p.metadata.name.clone().unwrap(), n))
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
        let pick = |node, attempt| picked(&pods, node, attempt, None, None);
        assert_eq!(pick("train", None), Ok(("train-10".into(), 10)));
        assert_eq!(pick("train", Some(2)), Ok(("train-2".into(), 2)));
        assert_eq!(pick("shard[1]", None), Ok(("shard-1".into(), 1)));
        assert_eq!(pick("train", Some(3)), Err(NoPod::Attempt(vec![1, 2, 10])));
        assert_eq!(pick("shard", None), Err(NoPod::Attempt(vec![])));
        assert_eq!(
            picked(&pods, "train", None, Some("worker-0"), None),
            Err(NoPod::NotDistributed)
        );
        assert_eq!(
            picked(&pods, "train", None, None, Some(0)),
            Err(NoPod::NotDistributed)
        );
    }

    #[test]
    fn a_gang_shows_its_leader_of_the_newest_incarnation() {
        // Listed in no useful order, as the API server may return them.
        let pods = [
            replica_pod(2, "worker-1", "1"),
            replica_pod(2, "worker-0", "0"),
            replica_pod(2, "worker-0", "1"),
            replica_pod(2, "worker-1", "0"),
            replica_pod(1, "worker-0", "3"),
            replica_pod(2, "ps-0", "1"),
        ];
        let pick =
            |attempt, replica, incarnation| picked(&pods, "train", attempt, replica, incarnation);
        assert_eq!(
            pick(None, None, None),
            Ok(("job-train-2-worker-0-1".into(), 2))
        );
        assert_eq!(
            pick(None, Some("worker-1"), Some(0)),
            Ok(("job-train-2-worker-1-0".into(), 2))
        );
        assert_eq!(
            pick(None, Some("ps-0"), None),
            Ok(("job-train-2-ps-0-1".into(), 2))
        );
        // Incarnations are the chosen attempt's.
        assert_eq!(
            pick(Some(1), None, None),
            Ok(("job-train-1-worker-0-3".into(), 1))
        );
        assert_eq!(
            pick(None, None, Some(3)),
            Err(NoPod::Replica(
                "no incarnation 3 (incarnations: 0, 1)".into()
            ))
        );
        assert_eq!(
            pick(None, Some("worker-7"), None),
            Err(NoPod::Replica(
                "no replica \"worker-7\" in incarnation 1 (replicas: ps-0, worker-0, worker-1)"
                    .into()
            ))
        );
    }

    #[test]
    fn a_gang_with_a_chief_shows_the_chief() {
        let pods = [
            replica_pod(1, "worker-0", "0"),
            replica_pod(1, "chief-0", "0"),
            replica_pod(1, "worker-1", "0"),
        ];
        assert_eq!(
            picked(&pods, "train", None, None, None),
            Ok(("job-train-1-chief-0-0".into(), 1))
        );
    }

    #[test]
    fn a_replica_pod_without_an_incarnation_is_not_ours() {
        let mut odd = replica_pod(1, "worker-0", "0");
        odd.metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(INCARNATION_LABEL);
        assert_eq!(
            picked(&[odd], "train", None, None, None),
            Err(NoPod::Attempt(vec![]))
        );
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
