//! The launcher: runs one step attempt under a [`LaunchSpec`] and writes its [`LaunchReport`].
//!
//! The steps, in order: read the spec; materialize every input from the artifact store into
//! `inputs/NAME` (fan-in inputs as `inputs/NAME/<index>`); in a cluster, restore the step's
//! newest stored checkpoint (see [`checkpoints`]); resolve the path placeholders; run the
//! command in `work/` with stdout and stderr passed through to the attempt's log, storing the
//! checkpoints it writes as it goes (the leader, in a cluster); store each declared output
//! artifact and read each declared output parameter; write the report with a temporary file
//! and a rename so the runtime never reads half of one. The command's exit code is the
//! launcher's exit code; a failure of the launcher itself exits with `LAUNCHER_FAILURE_EXIT`.
//!
//! A crate of its own so that the `toucan-launcher` binary, which every step pod runs inside
//! the step's own image, links only what it uses; `toucan-worker` offers the same
//! subcommands ([`LauncherCommand`]).

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Instant;

pub mod checkpoints;
pub mod control_plane;
use toucan_core::engine::InputSource;
use toucan_core::launch::{
    LAUNCHER_FAILURE_EXIT, LaunchReport, LaunchSpec, MAX_PARAM_BYTES, STAGE_NODE, StageSpec,
};
use toucan_core::manifest::TRIAL_PARAMS_ENV;
use toucan_core::records::StepOutputs;
use toucan_store::artifacts::{ArtifactStore, Digest};

/// The exit code of a usage error, as clap's own.
const USAGE_EXIT: u8 = 2;

/// The name `install-launcher` gives the launcher in a pod's launcher directory.
pub const LAUNCHER_BIN: &str = "toucan-launcher";

/// The launcher's subcommands, in `toucan-worker` and in `toucan-launcher`.
#[derive(Debug, clap::Subcommand)]
pub enum LauncherCommand {
    /// Run one step attempt described by a launch spec: materialize inputs, run the command,
    /// store outputs, write the report.
    Exec {
        /// The launch spec (JSON) written by the runtime.
        #[arg(
            long,
            required_unless_present = "spec_env",
            conflicts_with = "spec_env"
        )]
        spec: Option<PathBuf>,
        /// The environment variable that holds the launch spec (in a pod).
        #[arg(long)]
        spec_env: Option<String>,
    },
    /// Store a cluster run's `path:` inputs in the artifact store and report their digests
    /// (the operator runs this once per run, before the steps).
    Stage {
        /// The environment variable that holds the stage spec (JSON).
        #[arg(long)]
        spec_env: String,
    },
    /// Copy this binary to DIR/toucan-launcher: a step pod's init container installs the
    /// launcher into the pod this way.
    InstallLauncher {
        /// The directory to copy into (created when missing).
        dir: PathBuf,
    },
}

/// Runs one launcher subcommand.
pub fn main(command: LauncherCommand) -> ExitCode {
    match command {
        LauncherCommand::Exec { spec, spec_env } => {
            let source = match (spec, spec_env) {
                (Some(path), _) => SpecSource::File(path),
                (None, Some(var)) => SpecSource::Env(var),
                (None, None) => return ExitCode::from(USAGE_EXIT),
            };
            exec(&source)
        }
        LauncherCommand::Stage { spec_env } => stage(&SpecSource::Env(spec_env)),
        LauncherCommand::InstallLauncher { dir } => install(&dir),
    }
}

/// Where the launch spec comes from: a file (the local runtime) or an environment variable
/// (a pod).
#[derive(Debug)]
pub enum SpecSource {
    File(PathBuf),
    Env(String),
}

impl SpecSource {
    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        match self {
            SpecSource::File(path) => std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(|e| format!("reading launch spec {}: {e}", path.display())),
            SpecSource::Env(name) => std::env::var(name)
                .map_err(|e| e.to_string())
                .and_then(|text| serde_json::from_str(&text).map_err(|e| e.to_string()))
                .map_err(|e| format!("reading launch spec from ${name}: {e}")),
        }
    }
}

/// In a pod, `HOME` and `TMPDIR` point into the work volume (the root filesystem is
/// read-only): make them exist before anything needs them.
fn ensure_env_dirs() {
    for var in ["HOME", "TMPDIR"] {
        if let Some(dir) = std::env::var_os(var).map(PathBuf::from)
            && !dir.exists()
        {
            let _ = std::fs::create_dir_all(&dir);
        }
    }
}

pub fn exec(source: &SpecSource) -> ExitCode {
    ensure_env_dirs();
    let spec: LaunchSpec = match source.read() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{LAUNCHER_BIN}: {e}");
            return ExitCode::from(LAUNCHER_FAILURE_EXIT as u8);
        }
    };
    let report = run(&spec);
    if let Err(e) = write_report(&spec, &report) {
        eprintln!("{LAUNCHER_BIN}: writing report: {e}");
        return ExitCode::from(LAUNCHER_FAILURE_EXIT as u8);
    }
    deliver(
        &spec.run_id,
        &spec.node,
        spec.attempt,
        spec.collect_outputs,
        &report,
    );
    if let Some(error) = &report.error {
        eprintln!("{LAUNCHER_BIN}: {error}");
    }
    exit_code(&report)
}

fn exit_code(report: &LaunchReport) -> ExitCode {
    match (report.succeeded, report.exit_code) {
        (true, _) => ExitCode::SUCCESS,
        (false, Some(code)) if code != 0 => ExitCode::from(code.clamp(1, 255) as u8),
        _ => ExitCode::from(LAUNCHER_FAILURE_EXIT as u8),
    }
}

/// The largest termination message Kubernetes keeps.
const TERMINATION_MESSAGE_MAX: usize = 4096;

/// Hands the report to the cluster: a `PUT` to the control-plane API (`$TOUCAN_API`), and the
/// termination message (`$TOUCAN_TERMINATION_MESSAGE_PATH`) as the fallback the operator reads
/// when the API could not be reached. A report too large for a termination message is left
/// out of it, so that the operator never reads a partial one. Locally neither is set.
///
/// Of a gang's replicas only the leader, whose report is the attempt's, reports to the API
/// (one report per attempt there); the others leave theirs in the termination message.
fn deliver(run_id: &str, node: &str, attempt: u32, to_api: bool, report: &LaunchReport) {
    if let Some(base) = control_plane::base_url().filter(|_| to_api) {
        let url = format!(
            "{base}/api/v1/runs/{}/steps/{}/attempts/{attempt}/report",
            control_plane::path_segment(run_id),
            control_plane::path_segment(node),
        );
        let token = control_plane::token();
        if let Err(e) =
            control_plane::put_json(&control_plane::agent(), &url, token.as_deref(), report)
        {
            eprintln!(
                "{LAUNCHER_BIN}: could not report to the control-plane API ({e}); the termination message carries the report"
            );
        }
    }
    if let Ok(path) = std::env::var("TOUCAN_TERMINATION_MESSAGE_PATH") {
        let text = match serde_json::to_string(report) {
            Ok(json) if json.len() <= TERMINATION_MESSAGE_MAX => json,
            _ => "the launch report is larger than a termination message; it was sent to the control-plane API".to_string(),
        };
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{LAUNCHER_BIN}: writing the termination message {path}: {e}");
        }
    }
}

/// `stage`: stores a cluster run's `path:` inputs (and the paths its parameters name), finds
/// the artifacts its parameters name by digest, and reports them.
pub fn stage(source: &SpecSource) -> ExitCode {
    ensure_env_dirs();
    let spec: StageSpec = match source.read() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{LAUNCHER_BIN}: {e}");
            return ExitCode::from(LAUNCHER_FAILURE_EXIT as u8);
        }
    };
    let started = Instant::now();
    let report = match stage_inputs(&spec) {
        Ok(outputs) => succeeded(outputs, started),
        Err(e) => failed(e, started),
    };
    deliver(&spec.run_id, STAGE_NODE, 1, true, &report);
    if let Some(error) = &report.error {
        eprintln!("{LAUNCHER_BIN}: {error}");
    }
    exit_code(&report)
}

fn stage_inputs(spec: &StageSpec) -> Result<StepOutputs, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let store = ArtifactStore::open(&spec.artifacts).map_err(|e| e.to_string())?;
    let mut outputs = StepOutputs::default();
    for input in &spec.inputs {
        if let Some(digest) = input
            .param
            .as_ref()
            .and_then(|_| Digest::parse(&input.path).ok())
        {
            let artifact = runtime
                .block_on(store.resolve(&digest))
                .map_err(|e| format!("input {:?} of step {:?}: {e}", input.input, input.step))?;
            outputs
                .artifacts
                .insert(format!("{}/{}", input.step, input.input), artifact);
            continue;
        }
        let full = std::path::absolute(&input.path)
            .and_then(|p| p.canonicalize())
            .map_err(|e| {
                format!(
                    "input {:?} of step {:?}: {}: {e}",
                    input.input, input.step, input.path
                )
            })?;
        let root = if full.is_dir() {
            full.clone()
        } else {
            full.parent().map_or(full.clone(), Path::to_path_buf)
        };
        let artifact = runtime
            .block_on(store.put_path(&full, &root))
            .map_err(|e| format!("input {:?} of step {:?}: {e}", input.input, input.step))?;
        outputs
            .artifacts
            .insert(format!("{}/{}", input.step, input.input), artifact);
    }
    Ok(outputs)
}

/// `install-launcher DIR`: copies this binary to `DIR/toucan-launcher`, as a step pod's init
/// container does into the pod's shared emptyDir.
pub fn install(dir: &Path) -> ExitCode {
    let result = std::env::current_exe()
        .map_err(|e| format!("locating this binary: {e}"))
        .and_then(|exe| {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            let dest = dir.join(LAUNCHER_BIN);
            let tmp = dir.join(format!(".{LAUNCHER_BIN}.tmp"));
            std::fs::copy(&exe, &tmp)
                .map_err(|e| format!("copying {} to {}: {e}", exe.display(), tmp.display()))?;
            std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{LAUNCHER_BIN}: {e}");
            ExitCode::from(LAUNCHER_FAILURE_EXIT as u8)
        }
    }
}

/// The report of an attempt whose command exited 0 and whose outputs were all collected.
fn succeeded(outputs: StepOutputs, started: Instant) -> LaunchReport {
    LaunchReport {
        succeeded: true,
        exit_code: Some(0),
        signal: None,
        outputs,
        error: None,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

fn failed(error: String, started: Instant) -> LaunchReport {
    LaunchReport {
        succeeded: false,
        exit_code: None,
        signal: None,
        outputs: StepOutputs::default(),
        error: Some(error),
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// The artifact store and an async runtime to talk to it, made only when the step has inputs
/// or outputs: a step without them starts faster.
struct Store {
    runtime: tokio::runtime::Runtime,
    artifacts: ArtifactStore,
}

impl Store {
    fn open(spec: &LaunchSpec) -> Result<Store, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting the runtime: {e}"))?;
        let artifacts = ArtifactStore::open(&spec.artifacts).map_err(|e| e.to_string())?;
        Ok(Store { runtime, artifacts })
    }
}

fn run(spec: &LaunchSpec) -> LaunchReport {
    let started = Instant::now();
    let needs_store =
        !spec.inputs.is_empty() || (spec.collect_outputs && !spec.outputs.artifacts.is_empty());
    let store = match needs_store.then(|| Store::open(spec)).transpose() {
        Ok(s) => s,
        Err(e) => return failed(e, started),
    };
    if let Err(e) = prepare_dirs(spec) {
        return failed(e, started);
    }
    if let Some(store) = &store
        && let Err(e) = store
            .runtime
            .block_on(materialize_inputs(spec, &store.artifacts))
    {
        return failed(e, started);
    }
    let mut argv = Vec::with_capacity(spec.argv.len());
    for a in &spec.argv {
        match spec.resolve_paths(a) {
            Ok(s) => argv.push(s),
            Err(e) => return failed(e, started),
        }
    }
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k == TRIAL_PARAMS_ENV {
            // A trial's values reach the command as a file, `TOUCAN_TRIAL_PARAMS`.
            let path = spec.dir.join("trial-params.json");
            if let Err(e) = std::fs::write(&path, v) {
                return failed(format!("writing {}: {e}", path.display()), started);
            }
            env.push((
                "TOUCAN_TRIAL_PARAMS".to_string(),
                path.display().to_string(),
            ));
            continue;
        }
        match spec.resolve_paths(v) {
            Ok(s) => env.push((k.clone(), s)),
            Err(e) => return failed(format!("env {k}: {e}"), started),
        }
    }
    let Some((program, args)) = argv.split_first() else {
        return failed("empty command".into(), started);
    };
    checkpoints::restore(spec);
    let uploads = checkpoints::Uploads::start(spec);
    let child = std::process::Command::new(program)
        .args(args)
        .envs(env)
        .env("TOUCAN_RUN_ID", &spec.run_id)
        .env("TOUCAN_STEP", &spec.node)
        .env("TOUCAN_ATTEMPT", spec.attempt.to_string())
        .env("TOUCAN_OUTPUTS", spec.outputs_dir())
        // The values the step's templates used, with their types (`{"params.epochs": 5}`).
        .env("TOUCAN_VALUES", spec.values_path())
        // Where `toucan-worker train` (or any command) appends its metrics as JSON lines; the
        // file stays with the attempt's log (`toucan logs --metrics`).
        .env("TOUCAN_METRICS_FILE", spec.metrics_path())
        // Shared by the step's attempts (in a cluster, restored into each new pod), so that
        // a retry resumes from a checkpoint.
        .env("TOUCAN_CHECKPOINT_DIR", spec.checkpoint_dir())
        .current_dir(spec.work_dir())
        .stdin(Stdio::null())
        .spawn();
    let status = child.and_then(wait_forwarding_stops);
    // Before the report: whoever reacts to it (a new incarnation, a retry) finds the newest
    // checkpoint recorded.
    if let Some(uploads) = uploads {
        uploads.finish();
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return failed(format!("starting {program:?}: {e}"), started),
    };
    use std::os::unix::process::ExitStatusExt;
    if !status.success() {
        let error = match (status.code(), status.signal()) {
            (Some(code), _) => format!("command exited with code {code}"),
            (None, Some(sig)) => format!("command killed by signal {sig}"),
            _ => "command failed".to_string(),
        };
        return LaunchReport {
            succeeded: false,
            exit_code: status.code(),
            signal: status.signal(),
            outputs: StepOutputs::default(),
            error: Some(error),
            duration_ms: started.elapsed().as_millis() as u64,
        };
    }
    let mut outputs = StepOutputs::default();
    if !spec.collect_outputs {
        return succeeded(outputs, started);
    }
    let collected = read_params(spec, &mut outputs).and_then(|()| match &store {
        Some(store) => {
            store
                .runtime
                .block_on(store_artifacts(spec, &store.artifacts, &mut outputs))
        }
        None => Ok(()),
    });
    match collected.map(|()| outputs) {
        Ok(outputs) => succeeded(outputs, started),
        Err(e) => LaunchReport {
            exit_code: Some(0),
            ..failed(e, started)
        },
    }
}

/// Waits for the command, passing SIGTERM and SIGINT on to it rather than dying of them: in
/// a pod the launcher is the process the kubelet signals, and the command (training, say)
/// needs the signal to checkpoint and exit by itself within the grace period.
fn wait_forwarding_stops(
    mut child: std::process::Child,
) -> std::io::Result<std::process::ExitStatus> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let handle = signals.handle();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let forwarder = std::thread::spawn(move || {
        for signal in signals.forever() {
            if let Ok(signal) = nix::sys::signal::Signal::try_from(signal) {
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    });
    let status = child.wait();
    handle.close();
    let _ = forwarder.join();
    status
}

fn prepare_dirs(spec: &LaunchSpec) -> Result<(), String> {
    let mut dirs = vec![spec.work_dir()];
    if !spec.inputs.is_empty() {
        dirs.push(spec.inputs_dir());
    }
    if !spec.outputs.artifacts.is_empty() {
        dirs.push(spec.outputs_dir().join("artifacts"));
    }
    if !spec.outputs.params.is_empty() {
        dirs.push(spec.outputs_dir().join("params"));
    }
    for dir in dirs {
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let values = spec.values_path();
    let json = serde_json::to_vec_pretty(&spec.values).map_err(|e| e.to_string())?;
    std::fs::write(&values, json).map_err(|e| format!("writing {}: {e}", values.display()))
}

async fn materialize_inputs(spec: &LaunchSpec, store: &ArtifactStore) -> Result<(), String> {
    for (name, source) in &spec.inputs {
        let dest = spec.input_path(name);
        match source {
            InputSource::Artifact(a) => store
                .materialize(a, &dest)
                .await
                .map_err(|e| format!("input {name}: {e}"))?,
            InputSource::FanIn(items) => {
                std::fs::create_dir_all(&dest)
                    .map_err(|e| format!("creating {}: {e}", dest.display()))?;
                for (i, a) in items.iter().enumerate() {
                    store
                        .materialize(a, &dest.join(i.to_string()))
                        .await
                        .map_err(|e| format!("input {name}[{i}]: {e}"))?;
                }
            }
            InputSource::Absent => {}
        }
    }
    Ok(())
}

/// Reads the declared output parameters the command wrote.
fn read_params(spec: &LaunchSpec, outputs: &mut StepOutputs) -> Result<(), String> {
    for name in &spec.outputs.params {
        let path = spec.output_param_path(name);
        let bytes = std::fs::read(&path).map_err(|e| {
            format!(
                "output param {name:?} was not written to {}: {e}",
                path.display()
            )
        })?;
        if bytes.len() > MAX_PARAM_BYTES {
            return Err(format!(
                "output param {name:?} is {} bytes; params are limited to {MAX_PARAM_BYTES}, use an artifact",
                bytes.len()
            ));
        }
        let text =
            String::from_utf8(bytes).map_err(|_| format!("output param {name:?} is not UTF-8"))?;
        outputs
            .params
            .insert(name.clone(), text.trim_end().to_string());
    }
    Ok(())
}

/// Stores the declared output artifacts, refusing anything that escapes the outputs directory.
async fn store_artifacts(
    spec: &LaunchSpec,
    store: &ArtifactStore,
    outputs: &mut StepOutputs,
) -> Result<(), String> {
    let root = spec.outputs_dir();
    for name in &spec.outputs.artifacts {
        let path = spec.output_artifact_path(name);
        let artifact = store
            .put_path(&path, &root)
            .await
            .map_err(|e| format!("output artifact {name:?}: {e}"))?;
        outputs.artifacts.insert(name.clone(), artifact);
    }
    Ok(())
}

fn write_report(spec: &LaunchSpec, report: &LaunchReport) -> Result<(), String> {
    let path = spec.report_path();
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))
}
