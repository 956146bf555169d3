//! In a cluster (`TOUCAN_API` set) `toucan-launcher exec` keeps a step's checkpoints in the
//! artifact store: the leader stores each new one while its command runs and the one its
//! command writes as it stops, and a new pod's launcher (with an empty checkpoint directory of
//! its own) restores the newest before its command starts. Run against the real control-plane
//! API and metadata store; every pod's checkpoint directory here is a directory of its own, as
//! in separate pods.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use toucan_api::{ApiState, AuthError, Authenticator, Principal};
use toucan_core::launch::{LaunchReport, LaunchSpec};
use toucan_core::records::{DocumentKind, Phase, RunRecord};
use toucan_store::metadata::{MetadataStore, SqliteStore};

const RUN: &str = "01JRUN";
const NODE: &str = "train";
const TOKEN: &str = "pod-token";

/// The pod token of the step `train` of the run, as the cluster maps it; nothing else.
#[derive(Debug)]
struct StepPods;

#[async_trait]
impl Authenticator for StepPods {
    async fn authenticate(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        match token {
            Some(TOKEN) => Ok(Principal::Step {
                run_id: RUN.into(),
                node: NODE.into(),
            }),
            Some(_) => Err(AuthError::Rejected("unknown token".into())),
            None => Err(AuthError::Missing),
        }
    }

    async fn may_read(&self, _principal: &Principal, _pipeline: &str) -> Result<bool, AuthError> {
        Ok(false)
    }
}

/// The control-plane API on a loopback port, over a SQLite store holding the run.
struct Api {
    runtime: tokio::runtime::Runtime,
    store: Arc<dyn MetadataStore>,
    url: String,
}

impl Api {
    fn start(dir: &Path) -> Api {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let (store, listener) = runtime.block_on(async {
            let store = SqliteStore::open(&dir.join("toucan.db")).await.unwrap();
            store
                .create_run(&RunRecord {
                    id: RUN.into(),
                    pipeline: "default/fmnist".into(),
                    phase: Phase::Running,
                    params: json!({}),
                    spec: json!({"steps": []}),
                    created_at: 1_000,
                    finished_at: None,
                    message: None,
                })
                .await
                .unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            (Arc::new(store) as Arc<dyn MetadataStore>, listener)
        });
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = toucan_api::router(ApiState {
            store: store.clone(),
            auth: Arc::new(StepPods),
            reports: None,
            gauges: None,
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        Api {
            runtime,
            store,
            url,
        }
    }

    /// The step's checkpoint pointer as the metadata store holds it.
    fn pointer(&self) -> Option<Value> {
        self.runtime
            .block_on(
                self.store
                    .get_run_document(RUN, DocumentKind::Checkpoint, NODE),
            )
            .unwrap()
    }

    fn put_pointer(&self, body: Value) {
        self.runtime
            .block_on(self.store.put_run_document(
                RUN,
                DocumentKind::Checkpoint,
                NODE,
                &body,
                2_000,
            ))
            .unwrap();
    }

    /// Waits until the pointer names `checkpoint`.
    fn wait_for(&self, checkpoint: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = self.pointer().filter(|p| p["checkpoint"] == checkpoint) {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "the pointer never named {checkpoint}: {:?}",
                self.pointer()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One pod of the step: its own attempt directory and checkpoint directory.
struct Pod {
    spec: LaunchSpec,
    spec_path: PathBuf,
}

impl Pod {
    fn new(root: &Path, name: &str, attempt: u32, leader: bool, script: &str) -> Pod {
        let dir = root.join(name);
        let spec = LaunchSpec {
            run_id: RUN.into(),
            node: NODE.into(),
            attempt,
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: [("TOUCAN_INCARNATION".to_string(), "0".to_string())].into(),
            values: Default::default(),
            inputs: Default::default(),
            outputs: Default::default(),
            artifacts: root.join("artifacts").display().to_string(),
            dir: dir.join("attempt"),
            checkpoints: Some(dir.join("checkpoints")),
            collect_outputs: leader,
        };
        std::fs::create_dir_all(&spec.dir).unwrap();
        let spec_path = dir.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(&spec).unwrap()).unwrap();
        Pod { spec, spec_path }
    }

    fn command(&self, api: &Api) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toucan-launcher"));
        command
            .args([
                "exec".as_ref(),
                "--spec".as_ref(),
                self.spec_path.as_os_str(),
            ])
            .env("TOUCAN_API", &api.url)
            .env("TOUCAN_API_TOKEN", TOKEN)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn report(&self) -> LaunchReport {
        serde_json::from_slice(&std::fs::read(self.spec.report_path()).unwrap()).unwrap()
    }
}

/// Shell that saves checkpoint `ckpt-<step>` holding `data` = `text` as `toucan-worker train`
/// does (complete under a temporary name, renamed; `latest` likewise; the older removed).
fn save(step: u32, text: &str) -> String {
    let name = format!("ckpt-{step:010}");
    format!(
        "d=\"$TOUCAN_CHECKPOINT_DIR\"; mkdir -p \"$d/.{name}.partial\" && \
         printf {text} > \"$d/.{name}.partial/data\" && mkdir \"$d/.{name}.partial/sub\" && \
         printf nested > \"$d/.{name}.partial/sub/file\" && \
         mv \"$d/.{name}.partial\" \"$d/{name}\" && printf {name} > \"$d/.latest.tmp\" && \
         mv \"$d/.latest.tmp\" \"$d/latest\" && \
         for old in \"$d\"/ckpt-*; do [ \"$old\" = \"$d/{name}\" ] || rm -rf \"$old\"; done"
    )
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn checkpoints_are_stored_as_written_and_restored_into_a_new_pod() {
    let root = tempfile::tempdir().unwrap();
    let api = Api::start(root.path());

    // The leader saves step 1 and runs until it is stopped; stopped, it saves step 2 and
    // exits 75, as `toucan-worker train` does.
    let leader = Pod::new(
        root.path(),
        "leader",
        1,
        true,
        &format!(
            "{}; trap '{}; exit 75' TERM; while true; do sleep 0.05; done",
            save(1, "one"),
            save(2, "two")
        ),
    );
    let child = leader.command(&api).spawn().unwrap();
    let first = api.wait_for("ckpt-0000000001");
    assert_eq!(first["attempt"], 1);
    assert_eq!(first["incarnation"], 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(75), "{}", stderr(&output));
    // Stored before the launcher exited, and before its report.
    let last = api.pointer().unwrap();
    assert_eq!(last["checkpoint"], "ckpt-0000000002", "{}", stderr(&output));
    assert_ne!(last["artifact"], first["artifact"]);
    assert_eq!(leader.report().exit_code, Some(75));
    let log = stderr(&output);
    for name in ["ckpt-0000000001", "ckpt-0000000002"] {
        assert!(
            log.contains(&format!("stored checkpoint {name} of step train")),
            "{log}"
        );
    }
    assert!(
        !leader.spec.dir.join("checkpoint-upload").exists(),
        "the staging directory is removed"
    );

    // A new pod (the next attempt; a replica other than the leader) finds the newest in its
    // own, empty checkpoint directory; it stores nothing of its own.
    let seen = root.path().join("seen");
    let replica = Pod::new(
        root.path(),
        "replica",
        2,
        false,
        &format!(
            "d=\"$TOUCAN_CHECKPOINT_DIR\"; n=$(cat \"$d/latest\") && \
             cat \"$d/$n/data\" \"$d/$n/sub/file\" > {seen} && echo \" $n\" >> {seen} && {}",
            save(3, "three"),
            seen = seen.display()
        ),
    );
    let output = replica.command(&api).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        "twonested ckpt-0000000002\n"
    );
    assert!(
        stderr(&output).contains("restored checkpoint ckpt-0000000002 of step train"),
        "{}",
        stderr(&output)
    );
    assert_eq!(api.pointer().unwrap()["checkpoint"], "ckpt-0000000002");
    let restored = replica.spec.checkpoint_dir();
    let mut left: Vec<String> = std::fs::read_dir(&restored)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["ckpt-0000000003", "latest"], "nothing else is left");

    // A pod whose directory has a checkpoint already keeps it.
    let kept = Pod::new(
        root.path(),
        "kept",
        3,
        false,
        "test \"$(cat \"$TOUCAN_CHECKPOINT_DIR/latest\")\" = ckpt-0000000007",
    );
    let dir = kept.spec.checkpoint_dir();
    std::fs::create_dir_all(dir.join("ckpt-0000000007")).unwrap();
    std::fs::write(dir.join("latest"), "ckpt-0000000007").unwrap();
    let output = kept.command(&api).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("restored"), "{}", stderr(&output));
}

#[test]
fn a_failed_restore_is_said_and_the_command_starts_without_it() {
    let root = tempfile::tempdir().unwrap();
    let api = Api::start(root.path());
    // A pointer to a checkpoint the artifact store does not hold.
    api.put_pointer(json!({
        "artifact": {"digest": format!("sha256:{}", "0".repeat(64)), "size": 1, "kind": "dir"},
        "checkpoint": "ckpt-0000000005",
    }));
    let pod = Pod::new(
        root.path(),
        "pod",
        2,
        true,
        "test ! -e \"$TOUCAN_CHECKPOINT_DIR/latest\"",
    );
    let output = pod.command(&api).output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("could not restore the checkpoint of step train")
            && log.contains("ckpt-0000000005")
            && log.contains("the command starts without it"),
        "{log}"
    );
    assert!(pod.report().succeeded);
}

#[test]
fn an_unreachable_api_never_fails_the_step() {
    let root = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let pod = Pod::new(root.path(), "pod", 1, true, &save(1, "one"));
    let output = Command::new(env!("CARGO_BIN_EXE_toucan-launcher"))
        .args([
            "exec".as_ref(),
            "--spec".as_ref(),
            pod.spec_path.as_os_str(),
        ])
        .env("TOUCAN_API", format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let log = stderr(&output);
    assert!(
        log.contains("could not restore the checkpoint of step train"),
        "{log}"
    );
    assert!(
        log.contains("could not keep the checkpoint of step train: storing ckpt-0000000001"),
        "{log}"
    );
}
