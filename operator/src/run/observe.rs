//! What the cluster shows of a run's attempts, as observations for the engine: each attempt
//! that runs is matched with its pod (from the watch cache, else the API). An ended pod's
//! result is the launcher's report (from the API, else the termination message, else what
//! the pod's status says); a pod that is gone, or deleted before it finished, is a lost
//! attempt.

use k8s_openapi::api::core::v1::Pod;
use toucan_core::engine::Run;
use toucan_core::engine::run::{Observation, Stage};
use toucan_core::launch::LaunchReport;
use toucan_core::records::{DocumentKind, StepOutputs};

use super::execute::{Turn, find_pod};
use super::gang;
use super::pods::{self, PodOutcome, RunRef};
use crate::context::Context;
use crate::error::Result;

/// Observations of every attempt of `run` whose pod exists or existed. A gang's attempt is
/// one turn of its own engine ([`gang::observe`]), which ends the attempt when the gang ends.
pub async fn attempts(
    run_ref: &RunRef,
    ctx: &Context,
    run: &Run,
    suspend: bool,
    turn: &mut Turn,
) -> Result<Vec<Observation>> {
    let mut observed = Vec::new();
    for (node, flight) in &run.in_flight {
        if flight.stage != Stage::Running {
            continue;
        }
        if gang::is_gang(run, node) {
            let mut gang_turn =
                gang::observe(run_ref, ctx, run, node, flight.attempt, suspend).await?;
            observed.extend(gang_turn.ended.take());
            turn.absorb(node, gang_turn);
            continue;
        }
        let name = pods::pod_name(&run_ref.name, node, flight.attempt);
        let lost = |reason: &str| Observation::Lost {
            node: node.clone(),
            attempt: flight.attempt,
            reason: reason.to_string(),
        };
        let Some(pod) = find_pod(ctx, run_ref, &name).await? else {
            observed.push(lost("its pod is gone"));
            continue;
        };
        let deleting = pod.metadata.deletion_timestamp.is_some();
        let Some(report) = ended_report(ctx, &run_ref.uid, node, flight.attempt, &pod).await?
        else {
            continue;
        };
        // Killed because someone deleted its pod: that is not the step failing.
        if deleting && !report.succeeded {
            observed.push(lost("its pod was deleted before it finished"));
            continue;
        }
        observed.push(Observation::Ended {
            node: node.clone(),
            attempt: flight.attempt,
            report,
        });
    }
    Ok(observed)
}

/// How the attempt an ended pod ran went: the launcher's report from the API, else from the
/// termination message, else one written from the pod's status. None while the pod runs.
pub async fn ended_report(
    ctx: &Context,
    run_id: &str,
    node: &str,
    attempt: u32,
    pod: &Pod,
) -> Result<Option<LaunchReport>> {
    let PodOutcome::Ended {
        exit_code,
        reason,
        report,
        message,
    } = pods::outcome(pod)
    else {
        return Ok(None);
    };
    if let Some(report) = api_report(ctx, run_id, node, attempt).await? {
        return Ok(Some(with_pod_reason(report, reason.as_deref())));
    }
    if let Some(report) = report {
        return Ok(Some(with_pod_reason(report, reason.as_deref())));
    }
    Ok(Some(status_report(
        exit_code,
        reason.as_deref(),
        message.as_deref(),
    )))
}

/// How an ended pod's attempt went by the pod alone: the report in its termination message,
/// else one written from its status. None while the pod runs.
pub fn pod_report(pod: &Pod) -> Option<LaunchReport> {
    let PodOutcome::Ended {
        exit_code,
        reason,
        report,
        message,
    } = pods::outcome(pod)
    else {
        return None;
    };
    Some(match report {
        Some(report) => with_pod_reason(report, reason.as_deref()),
        None => status_report(exit_code, reason.as_deref(), message.as_deref()),
    })
}

/// The report of a pod whose launcher wrote none: from its status. A container the memory
/// cgroup's OOM killer emptied, launcher included, reads as any OOM kill does.
fn status_report(
    exit_code: Option<i32>,
    reason: Option<&str>,
    message: Option<&str>,
) -> LaunchReport {
    let oom = reason == Some("OOMKilled");
    let report = LaunchReport {
        succeeded: false,
        exit_code,
        signal: None,
        outputs: StepOutputs::default(),
        error: Some(failure_text(exit_code, reason.filter(|_| !oom), message)),
        duration_ms: 0,
    };
    with_pod_reason(report, reason)
}

/// A failed attempt's report with the reason the container runtime gave, when that reason
/// says more than the launcher saw: the memory cgroup's OOM killer takes the step's command
/// (the launcher only sees a SIGKILL), and the runtime reports the container `OOMKilled`.
fn with_pod_reason(mut report: LaunchReport, reason: Option<&str>) -> LaunchReport {
    if report.succeeded || reason != Some("OOMKilled") {
        return report;
    }
    let detail = report.error.take().unwrap_or_default();
    report.error = Some(if detail.is_empty() {
        "OOMKilled: the step went over its memory limit".into()
    } else {
        format!("OOMKilled: the step went over its memory limit ({detail})")
    });
    report
}

/// The launcher's report of one attempt, as it reached the API. A report that does not read
/// is logged and left for the termination message.
async fn api_report(
    ctx: &Context,
    run_id: &str,
    node: &str,
    attempt: u32,
) -> Result<Option<LaunchReport>> {
    let key = toucan_api::report_key(node, attempt);
    let Some(body) = ctx
        .store
        .get_run_document(run_id, DocumentKind::Report, &key)
        .await?
    else {
        return Ok(None);
    };
    match serde_json::from_value(body) {
        Ok(report) => Ok(Some(report)),
        Err(e) => {
            tracing::warn!(
                run = run_id,
                node,
                attempt,
                "unreadable launcher report: {e}"
            );
            Ok(None)
        }
    }
}

/// Why a pod failed, from its status, for a report nobody wrote.
fn failure_text(exit_code: Option<i32>, reason: Option<&str>, message: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(code) = exit_code {
        parts.push(format!("exit code {code}"));
    }
    if let Some(reason) = reason {
        parts.push(reason.to_string());
    }
    if let Some(message) = message.map(str::trim).filter(|m| !m.is_empty()) {
        // The message may be the log's tail (FallbackToLogsOnError): keep it short.
        let tail: String = message
            .chars()
            .rev()
            .take(300)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        parts.push(tail);
    }
    if parts.is_empty() {
        "the pod failed".into()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn failed(error: &str) -> LaunchReport {
        LaunchReport {
            succeeded: false,
            exit_code: None,
            signal: Some(9),
            outputs: StepOutputs::default(),
            error: Some(error.into()),
            duration_ms: 5,
        }
    }

    #[test]
    fn an_oom_kill_is_named_in_the_report() {
        let report = with_pod_reason(failed("command killed by signal 9"), Some("OOMKilled"));
        assert_eq!(
            report.error.as_deref(),
            Some("OOMKilled: the step went over its memory limit (command killed by signal 9)")
        );
        let other = with_pod_reason(failed("command exited with code 3"), Some("Error"));
        assert_eq!(other.error.as_deref(), Some("command exited with code 3"));
        let mut ok = failed("");
        ok.succeeded = true;
        ok.error = None;
        assert_eq!(with_pod_reason(ok, Some("OOMKilled")).error, None);
        // No report at all: the launcher went with its command.
        assert_eq!(
            status_report(Some(137), Some("OOMKilled"), Some("Killed"))
                .error
                .as_deref(),
            Some("OOMKilled: the step went over its memory limit (exit code 137: Killed)")
        );
        assert_eq!(
            status_report(Some(1), Some("Error"), None).error.as_deref(),
            Some("exit code 1: Error")
        );
    }
}
