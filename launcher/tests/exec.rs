//! `toucan-launcher exec` passes its command's exit code through, both as its own exit code and
//! in the report, so that the runtime can tell a usage error (2, never worth retrying) from
//! other failures; a failure of the launcher itself exits with `LAUNCHER_FAILURE_EXIT`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use toucan_core::launch::{LAUNCHER_FAILURE_EXIT, LaunchReport, LaunchSpec};

/// The exit code of a usage error, which the runtime never retries.
const EXIT_INVALID: i32 = 2;

fn launcher(args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_toucan-launcher"))
        .args(args)
        .output()
        .unwrap()
}

/// Runs `sh -c SCRIPT` under the launcher; returns its exit code and the report.
fn exec(dir: &Path, script: &str) -> (Option<i32>, LaunchReport) {
    exec_with(dir, script, Default::default())
}

fn exec_with(
    dir: &Path,
    script: &str,
    values: BTreeMap<String, Value>,
) -> (Option<i32>, LaunchReport) {
    let (spec, spec_path) = write_spec(dir, script, values);
    let run = launcher(&["exec".as_ref(), "--spec".as_ref(), spec_path.as_os_str()]);
    (run.status.code(), report(&spec))
}

/// The launch spec of `sh -c SCRIPT` in `dir`, and where it was written.
fn write_spec(
    dir: &Path,
    script: &str,
    values: BTreeMap<String, Value>,
) -> (LaunchSpec, std::path::PathBuf) {
    let spec = LaunchSpec {
        run_id: "run-1".into(),
        node: "step".into(),
        attempt: 1,
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: Default::default(),
        values,
        inputs: Default::default(),
        outputs: Default::default(),
        artifacts: dir.join("artifacts").display().to_string(),
        dir: dir.join("attempt"),
        checkpoints: None,
        collect_outputs: true,
    };
    std::fs::create_dir_all(&spec.dir).unwrap();
    let spec_path = dir.join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    (spec, spec_path)
}

fn report(spec: &LaunchSpec) -> LaunchReport {
    serde_json::from_slice(&std::fs::read(spec.report_path()).unwrap()).unwrap()
}

/// A pod's SIGTERM reaches the launcher alone; the command gets it and ends as it chooses
/// (training checkpoints and exits 75), and the launcher reports that.
#[test]
fn sigterm_is_passed_on_to_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let script = format!(
        "trap 'exit 75' TERM; touch {}; while true; do sleep 0.05; done",
        ready.display()
    );
    let (spec, spec_path) = write_spec(dir.path(), &script, BTreeMap::new());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_toucan-launcher"))
        .args(["exec".as_ref(), "--spec".as_ref(), spec_path.as_os_str()])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(75), "{status:?}");
    let report = report(&spec);
    assert_eq!((report.succeeded, report.exit_code), (false, Some(75)));
}

#[test]
fn the_commands_exit_code_is_passed_through() {
    for code in [EXIT_INVALID, 1, 75] {
        let dir = tempfile::tempdir().unwrap();
        let (exit, report) = exec(dir.path(), &format!("exit {code}"));
        assert_eq!(exit, Some(code));
        assert!(!report.succeeded);
        assert_eq!(report.exit_code, Some(code));
    }
    let dir = tempfile::tempdir().unwrap();
    let (exit, report) = exec(dir.path(), "true");
    assert_eq!(
        (exit, report.succeeded, report.exit_code),
        (Some(0), true, Some(0))
    );
}

#[test]
fn a_launcher_failure_is_not_a_command_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, "{not json").unwrap();
    let run = launcher(&["exec".as_ref(), "--spec".as_ref(), spec.as_os_str()]);
    assert_eq!(run.status.code(), Some(LAUNCHER_FAILURE_EXIT));
}

#[test]
fn the_command_reads_its_values_with_their_types() {
    let dir = tempfile::tempdir().unwrap();
    let values = BTreeMap::from([
        ("params.epochs".to_string(), json!(5)),
        ("params.lr".to_string(), json!(0.01)),
        ("item".to_string(), json!({"size": [1, 2]})),
    ]);
    let copy = dir.path().join("seen.json");
    let script = format!("cp \"$TOUCAN_VALUES\" {}", copy.display());
    let (exit, report) = exec_with(dir.path(), &script, values.clone());
    assert_eq!((exit, report.succeeded), (Some(0), true), "{report:?}");
    let seen: BTreeMap<String, Value> =
        serde_json::from_slice(&std::fs::read(&copy).unwrap()).unwrap();
    assert_eq!(seen, values);
    assert!(seen["params.epochs"].is_u64(), "an int stays a number");
}

#[test]
fn a_trials_values_reach_the_command_as_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("trial.json");
    let script = format!(
        "test -z \"${}\" && cp \"$TOUCAN_TRIAL_PARAMS\" {}",
        toucan_core::manifest::TRIAL_PARAMS_ENV,
        copy.display()
    );
    let (mut spec, spec_path) = write_spec(dir.path(), &script, BTreeMap::new());
    let values = r#"{"batch_size":32,"lr":0.01,"optimizer":"adam"}"#;
    spec.env.insert(
        toucan_core::manifest::TRIAL_PARAMS_ENV.to_string(),
        values.to_string(),
    );
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let run = launcher(&["exec".as_ref(), "--spec".as_ref(), spec_path.as_os_str()]);
    let report = report(&spec);
    assert_eq!(
        (run.status.code(), report.succeeded),
        (Some(0), true),
        "{report:?}"
    );
    // The file holds the values as given, and the JSON itself is not in the environment.
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), values);
}

/// An input a parameter left empty is nothing at all: no file, and its placeholder is the
/// empty string; the input beside it is materialized as usual.
#[test]
fn an_absent_input_is_an_empty_argument() {
    use toucan_core::engine::InputSource;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("data.csv");
    std::fs::write(&source, "label\n").unwrap();
    let store = toucan_store::artifacts::ArtifactStore::open(
        &dir.path().join("artifacts").display().to_string(),
    )
    .unwrap();
    let data = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.put_path(&source, dir.path()))
        .unwrap();
    let seen = dir.path().join("seen");
    let script = format!("printf '[%s][%s]' \"$0\" \"$1\" > {}", seen.display());
    let (mut spec, spec_path) = write_spec(dir.path(), &script, BTreeMap::new());
    spec.argv.extend([
        "{{inputs.artifacts.extra}}".into(),
        "{{inputs.artifacts.data}}".into(),
    ]);
    spec.inputs = BTreeMap::from([
        ("extra".to_string(), InputSource::Absent),
        ("data".to_string(), InputSource::Artifact(data)),
    ]);
    std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
    let run = launcher(&["exec".as_ref(), "--spec".as_ref(), spec_path.as_os_str()]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    let data_path = spec.input_path("data");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("[][{}]", data_path.display())
    );
    assert_eq!(std::fs::read_to_string(&data_path).unwrap(), "label\n");
    assert!(!spec.input_path("extra").exists());
}
