//! Helpers for the end-to-end tests: run the real `toucan` binary (with the real
//! `toucan-worker` launcher) in a private TOUCAN_HOME.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod serving;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Once;

/// The PATH steps run with: `TOUCAN_TEST_STEP_PATH` (where `make test` puts the libtorch
/// build of toucan-worker) before the test's own PATH. Kept out of cargo's PATH, which build
/// scripts watch.
pub fn step_path() -> std::ffi::OsString {
    let mut dirs: Vec<PathBuf> = std::env::var_os("TOUCAN_TEST_STEP_PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(dirs).expect("PATH entries without separators")
}

pub fn toucan_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_toucan"))
}

/// The launcher binary next to `toucan`, brought up to date once per test binary (a plain
/// `cargo test -p toucan` does not build other packages' binaries).
pub fn worker_bin() -> PathBuf {
    static BUILD: Once = Once::new();
    let path = toucan_bin().with_file_name("toucan-worker");
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // The selection `make test` built (`TOUCAN_CARGO_SELECTION`: the workspace with the
        // worker's `torch` feature), so that this builds nothing and never replaces the
        // libtorch toucan-worker the steps run; a plain `cargo test` builds the workspace.
        let selection =
            std::env::var("TOUCAN_CARGO_SELECTION").unwrap_or_else(|_| "--workspace".to_string());
        let status = Command::new(cargo)
            .arg("build")
            .args(selection.split_whitespace())
            .args(["--bins", "--tests"])
            .status()
            .expect("running cargo build for the workspace's binaries");
        assert!(status.success(), "building toucan-worker failed");
    });
    assert!(path.exists(), "{} is missing", path.display());
    path
}

/// A scratch workspace: a TOUCAN_HOME and a directory for manifests.
#[derive(Debug)]
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Default for Sandbox {
    fn default() -> Sandbox {
        Sandbox::new()
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, text).expect("write");
        p
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(toucan_bin());
        c.args(args)
            .env("TOUCAN_HOME", self.home())
            .env("TOUCAN_WORKER", worker_bin())
            .env("PATH", step_path())
            .env_remove("TOUCAN_DATABASE_URL")
            .env_remove("TOUCAN_ARTIFACTS")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("running toucan")
    }

    /// `toucan run FILE -o json [extra...]`, parsed.
    pub fn run_json(&self, file: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
        let mut args = vec!["run", file.to_str().expect("utf-8 path"), "-o", "json"];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let doc: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{stdout}\nstderr:\n{stderr}")
        });
        (out.status.code().unwrap_or(-1), doc, stderr)
    }
}

/// The step named `name` in a run document.
pub fn step<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no step {name} in {doc:#}"))
}

pub fn cached(doc: &serde_json::Value, name: &str) -> bool {
    step(doc, name)["cached"]
        .as_bool()
        .expect("cached is a bool")
}
