//! Where the epoch metrics go: one JSON line each to stdout, appended to
//! `$TOUCAN_METRICS_FILE` when the launcher sets it, to the model's `metrics.jsonl` without the
//! timings (so that the model directory's bytes depend on its inputs only and downstream
//! steps stay cached when training is repeated), and, when `TOUCAN_API` is set, to the
//! control-plane API.
//!
//! The API call is idempotent by construction: after every epoch the whole series so far is
//! `PUT` to `$TOUCAN_API/api/v1/runs/$TOUCAN_RUN_ID/steps/$TOUCAN_STEP/metrics`, replacing what
//! the server holds for that (run, step). A retried request, a second attempt or a resumed run
//! sends a series that supersedes the earlier one instead of appending duplicates. The bearer
//! token is `$TOUCAN_API_TOKEN`, else the pod's service-account token. A failed push is
//! reported on stderr and retried with the next epoch; it never fails the training.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::MlError;
use super::train::EpochMetrics;
use toucan_launcher::control_plane;

#[derive(Debug, Clone)]
pub struct ApiTarget {
    pub url: String,
    pub token: Option<String>,
    pub attempt: Option<u32>,
}

impl ApiTarget {
    /// From `TOUCAN_API`, `TOUCAN_RUN_ID`, `TOUCAN_STEP` (all three needed), `TOUCAN_ATTEMPT`.
    pub fn from_env() -> Option<ApiTarget> {
        let base = control_plane::base_url()?;
        let run = std::env::var("TOUCAN_RUN_ID").ok()?;
        let step = std::env::var("TOUCAN_STEP").ok()?;
        let token = control_plane::token();
        Some(ApiTarget {
            url: format!(
                "{base}/api/v1/runs/{}/steps/{}/metrics",
                control_plane::path_segment(&run),
                control_plane::path_segment(&step)
            ),
            token,
            attempt: std::env::var("TOUCAN_ATTEMPT")
                .ok()
                .and_then(|a| a.parse().ok()),
        })
    }
}

#[derive(Debug, Serialize)]
struct SeriesBody<'a> {
    attempt: Option<u32>,
    epochs: &'a [EpochMetrics],
}

#[derive(Debug)]
pub struct MetricsSink {
    files: Vec<PathBuf>,
    /// Files that get the lines without timings (the model directory's `metrics.jsonl`, whose
    /// bytes must depend on the inputs only).
    untimed: Vec<PathBuf>,
    api: Option<(ApiTarget, ureq::Agent)>,
}

/// The fields that measure time rather than the model.
pub const TIMING_FIELDS: [&str; 3] = ["seconds", "images_per_sec", "train_seconds"];

/// A metrics line's JSON without [`TIMING_FIELDS`].
pub fn untimed_json<T: Serialize>(value: &T) -> String {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        for key in TIMING_FIELDS {
            o.remove(key);
        }
    }
    v.to_string()
}

impl MetricsSink {
    pub fn new(files: Vec<PathBuf>, untimed: Vec<PathBuf>, api: Option<ApiTarget>) -> MetricsSink {
        let api = api.map(|target| (target, control_plane::agent()));
        MetricsSink {
            files,
            untimed,
            api,
        }
    }

    /// Records one epoch; `series` is every epoch so far, this one last.
    pub fn emit(&self, series: &[EpochMetrics]) -> Result<(), MlError> {
        let Some(line) = series.last() else {
            return Ok(());
        };
        let json = serde_json::to_string(line).map_err(|e| MlError::Write {
            path: PathBuf::from("<stdout>"),
            source: std::io::Error::other(e),
        })?;
        println!("{json}");
        for file in &self.files {
            append_line(file, &json)?;
        }
        for file in &self.untimed {
            append_line(file, &untimed_json(line))?;
        }
        if let Some((target, agent)) = &self.api {
            let body = SeriesBody {
                attempt: target.attempt,
                epochs: series,
            };
            let mut request = agent.put(&target.url);
            if let Some(token) = &target.token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            if let Err(e) = request.send_json(&body) {
                eprintln!(
                    "toucan-worker: could not push metrics to {}: {e} (will retry with the next epoch)",
                    target.url
                );
            }
        }
        Ok(())
    }
}

/// Appends one line to a file, creating it.
pub fn append_line(path: &Path, line: &str) -> Result<(), MlError> {
    let err = |source| MlError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    writeln!(f, "{line}").map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(control_plane::path_segment("run-01_a.b"), "run-01_a.b");
        assert_eq!(control_plane::path_segment("a/b c"), "a%2Fb%20c");
    }
}
