//! Live progress on stderr: a spinner per running step on a terminal, plain lines otherwise
//! (and always when stdout carries JSON for a program to read, the lines go to stderr).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use toucan_core::engine::gang::GangEvent;
use toucan_core::engine::run::RunEvent;

/// How many lines of a failed step's log are shown.
const LOG_TAIL_LINES: usize = 20;

#[derive(Debug)]
pub struct Progress {
    started: Instant,
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    /// Put before every line: which trial of a study the run is.
    label: Option<String>,
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        let bars = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Progress {
            started: Instant::now(),
            bars,
            label: None,
        }
    }

    /// Plain lines, each starting with `label`: one of several runs at once (a study's
    /// trials), whose spinners would interleave.
    pub fn labelled(label: String, started: Instant) -> Progress {
        Progress {
            started,
            bars: None,
            label: Some(label),
        }
    }

    /// A line of its own (a study's news).
    pub fn note(&self, text: &str) {
        self.line(text);
    }

    fn line(&self, text: &str) {
        if let Some(label) = &self.label {
            let t = self.started.elapsed().as_secs_f64();
            eprintln!("[{t:7.2}s] {label}: {text}");
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => {
                let t = self.started.elapsed().as_secs_f64();
                eprintln!("[{t:7.2}s] {text}");
            }
        }
    }

    fn finish_bar(&self, node: &str) {
        if let Some((multi, bars)) = &self.bars {
            let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(bar) = bars.remove(node) {
                bar.finish_and_clear();
                multi.remove(&bar);
            }
        }
    }

    /// Shows one of the engine's events.
    pub fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::RunStarted { run_id, pipeline } => self.run_started(run_id, pipeline),
            RunEvent::StepStarted { node, attempt } => self.started(node, *attempt),
            RunEvent::StepCached { node } => self.cached(node),
            RunEvent::StepSucceeded {
                node, duration_ms, ..
            } => self.succeeded(node, *duration_ms),
            RunEvent::StepRetrying {
                node,
                attempt,
                message,
                delay_ms,
            } => self.retrying(node, *attempt, message, *delay_ms),
            RunEvent::StepFailed { node, message, log } => {
                self.failed(node, message, log.as_deref().map(Path::new))
            }
            RunEvent::StepSkipped { node, reason } => self.skipped(node, reason),
            RunEvent::StepCancelled { node } => self.cancelled(node),
            RunEvent::FannedOut { step, count } => self.fanned_out(step, *count),
            RunEvent::Cancelling => self.cancelling(),
            RunEvent::AttemptLost { node, .. } | RunEvent::CacheUnavailable { node, .. } => {
                self.finish_bar(node);
                self.line(&format!("warning: {}", event.message()));
            }
            RunEvent::RunInvalid { .. } | RunEvent::StagingFailed { .. } => {
                self.line(&format!("error: {}", event.message()))
            }
            // The summary printed after the run says how it ended.
            RunEvent::RunFinished { .. } => {}
        }
    }

    /// Shows what a distributed step's gang did; its end shows as the step's.
    pub fn gang_event(&self, node: &str, event: &GangEvent) {
        let text = match event {
            GangEvent::Launched {
                incarnation: 0,
                replicas,
            } => format!("{node}: {replicas} replicas started"),
            GangEvent::Launched {
                incarnation,
                replicas,
            } => format!("{node}: {replicas} replicas started (incarnation {incarnation})"),
            GangEvent::ReplicaEnded {
                replica,
                exit_code,
                decisive: true,
                ..
            } => match exit_code {
                Some(code) => format!("{node}: {replica} ended with code {code}"),
                None => format!("{node}: {replica} ended"),
            },
            GangEvent::Restarting { reason, .. } => {
                format!("{node}: restarting the gang from its newest checkpoint ({reason})")
            }
            GangEvent::Preempted { replica, .. } => format!("{node}: {replica} was preempted"),
            GangEvent::Suspended => format!("{node}: suspended"),
            GangEvent::Resumed => format!("{node}: resumed"),
            GangEvent::ReplicaEnded { .. } | GangEvent::Succeeded | GangEvent::Failed(_) => {
                return;
            }
        };
        self.line(&text);
    }

    fn run_started(&self, run: &str, pipeline: &str) {
        self.line(&format!("run {run} of pipeline {pipeline}"));
    }

    fn started(&self, node: &str, attempt: u32) {
        match &self.bars {
            Some((multi, bars)) => {
                let bar = multi.add(ProgressBar::new_spinner());
                let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                bar.set_style(style);
                let suffix = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                bar.set_message(format!("{node}{suffix}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(node.to_string(), bar);
            }
            None => {
                let suffix = if attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                self.line(&format!("{node}: started{suffix}"));
            }
        }
    }

    fn cached(&self, node: &str) {
        self.finish_bar(node);
        self.line(&format!("{node}: cached"));
    }

    fn succeeded(&self, node: &str, ms: i64) {
        self.finish_bar(node);
        self.line(&format!(
            "{node}: succeeded in {}",
            crate::output::duration(ms)
        ));
    }

    fn retrying(&self, node: &str, attempt: u32, message: &str, delay_ms: i64) {
        self.finish_bar(node);
        self.line(&format!(
            "{node}: attempt {attempt} failed ({message}); retrying in {}",
            crate::output::duration(delay_ms)
        ));
    }

    fn failed(&self, node: &str, message: &str, log: Option<&Path>) {
        self.finish_bar(node);
        let mut text = format!("{node}: failed: {message}");
        if let Some(log) = log {
            let tail = log_tail(log, LOG_TAIL_LINES);
            if !tail.is_empty() {
                text.push_str(&format!("\n  last lines of {}:\n", log.display()));
                for l in tail {
                    text.push_str(&format!("  | {l}\n"));
                }
                text.pop();
            }
        }
        self.line(&text);
    }

    fn skipped(&self, node: &str, reason: &str) {
        self.line(&format!("{node}: skipped ({reason})"));
    }

    fn cancelled(&self, node: &str) {
        self.finish_bar(node);
        self.line(&format!("{node}: cancelled"));
    }

    fn fanned_out(&self, step: &str, n: usize) {
        self.line(&format!("{step}: fanned out over {n} item(s)"));
    }

    fn cancelling(&self) {
        self.line("cancelling: stopping running steps");
    }
}

/// The last `n` lines of a file.
pub fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|s| s.to_string())
        .collect()
}
