//! Checkpoints that outlive the pod: in a cluster a step's checkpoint directory
//! (`TOUCAN_CHECKPOINT_DIR`) lives in the pod's emptyDir, so the launcher keeps the newest
//! checkpoint in the artifact store, keyed by run and node through the control-plane API, and
//! restores it into every new pod of the step (a gang restarted on new pods, a retried attempt).
//!
//! The directory's layout is `toucan-worker train`'s: a `latest` file naming the newest complete
//! `ckpt-NNNNNNNNNN/` directory, both renamed into place complete, older ones removed.
//!
//! - [`restore`], before the command, in every pod: when the directory has no `latest`, the
//!   stored checkpoint named by the step's pointer is materialized beside it and renamed in,
//!   so the command finds `latest` and the `ckpt-*` directory it names.
//! - [`Uploads`], while the command runs, in the leader's pod only (rank 0 writes the
//!   checkpoints): every [`POLL_INTERVAL`], and once more after the command ends (a stopped
//!   `toucan-worker train` checkpoints on SIGTERM, then exits), a new `latest` is taken: the
//!   files of the checkpoint it names are hard-linked into a staging directory (copied across
//!   filesystems), checked to be the same checkpoint afterwards (a checkpoint removed or saved
//!   again meanwhile is left for the next round), stored with `latest` as one directory
//!   artifact, and the pointer is `PUT`.
//!
//! Locally (`TOUCAN_API` unset) none of this runs: a step's attempts and replicas share one
//! directory there. A failure never fails the step: training from scratch is the fallback, and
//! every failure is said on stderr.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use toucan_core::launch::{CheckpointName, CheckpointPointer, LaunchSpec};

use crate::control_plane::{self, RequestError};
use crate::{LAUNCHER_BIN, Store};

/// How often the leader looks for a new checkpoint while the command runs.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// The file naming the newest checkpoint.
const LATEST: &str = "latest";
/// Where a restore is materialized: inside the checkpoint directory, so that its renames stay
/// on one filesystem, under a name `toucan-worker train` cleans up like its partial
/// checkpoints.
const RESTORING: &str = ".ckpt-restoring";
/// Where a checkpoint is staged for storing, in the attempt's directory.
const STAGING: &str = "checkpoint-upload";

/// The step's checkpoint pointer at the control-plane API.
#[derive(Debug)]
struct Pointer {
    agent: ureq::Agent,
    url: String,
    token: Option<String>,
}

impl Pointer {
    /// In a cluster (`TOUCAN_API` set): the pointer of the spec's run and node.
    fn of(spec: &LaunchSpec) -> Option<Pointer> {
        let base = control_plane::base_url()?;
        Some(Pointer {
            agent: control_plane::agent(),
            url: format!(
                "{base}/api/v1/runs/{}/steps/{}/checkpoint",
                control_plane::path_segment(&spec.run_id),
                control_plane::path_segment(&spec.node),
            ),
            token: control_plane::token(),
        })
    }

    fn get(&self) -> Result<Option<CheckpointPointer>, RequestError> {
        control_plane::get_json(&self.agent, &self.url, self.token.as_deref())
    }

    fn put(&self, pointer: &CheckpointPointer) -> Result<(), RequestError> {
        control_plane::put_json(&self.agent, &self.url, self.token.as_deref(), pointer)
    }
}

// === restore ===

/// Before the command: restores the step's newest stored checkpoint into its checkpoint
/// directory, unless that already has one. A failure is reported on stderr, and the command
/// starts without the checkpoint.
pub fn restore(spec: &LaunchSpec) {
    let Some(pointer) = Pointer::of(spec) else {
        return;
    };
    let dir = spec.checkpoint_dir();
    if dir.join(LATEST).exists() {
        return;
    }
    match restore_from(&pointer, spec, &dir) {
        Ok(Some(name)) => eprintln!(
            "{LAUNCHER_BIN}: restored checkpoint {name} of step {} into {}",
            spec.node,
            dir.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!(
            "{LAUNCHER_BIN}: could not restore the checkpoint of step {}: {e}; the command starts without it",
            spec.node
        ),
    }
}

fn restore_from(
    pointer: &Pointer,
    spec: &LaunchSpec,
    dir: &Path,
) -> Result<Option<CheckpointName>, String> {
    let Some(stored) = pointer
        .get()
        .map_err(|e| format!("reading its pointer: {e}"))?
    else {
        return Ok(None);
    };
    let store = Store::open(spec)?;
    let staging = dir.join(RESTORING);
    remove_all(&staging)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let installed = store
        .runtime
        .block_on(store.artifacts.materialize(&stored.artifact, &staging))
        .map_err(|e| format!("{} ({}): {e}", stored.checkpoint, stored.artifact.digest))
        .and_then(|()| install(&staging, dir, &stored.checkpoint));
    let _ = std::fs::remove_dir_all(&staging);
    installed.map(|()| Some(stored.checkpoint))
}

/// Moves a materialized checkpoint into `dir`: its `ckpt-*` directory first, then `latest`, so
/// that `latest` never names a checkpoint that is not there.
fn install(staging: &Path, dir: &Path, name: &CheckpointName) -> Result<(), String> {
    let latest = staging.join(LATEST);
    let named = std::fs::read_to_string(&latest)
        .map_err(|e| format!("the stored checkpoint has no readable {LATEST}: {e}"))?;
    if named.trim() != name.as_str() {
        return Err(format!(
            "the stored checkpoint's {LATEST} names {:?}, its pointer {name}",
            named.trim()
        ));
    }
    let from = staging.join(name.as_str());
    if !from.is_dir() {
        return Err(format!("the stored checkpoint has no directory {name}"));
    }
    let to = dir.join(name.as_str());
    remove_all(&to)?;
    rename(&from, &to)?;
    rename(&latest, &dir.join(LATEST))
}

// === uploads ===

/// The leader's uploads of new checkpoints while its command runs (see the module docs).
#[derive(Debug)]
pub struct Uploads {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Uploads {
    /// Starts looking for new checkpoints: in a cluster, and for the step's leader only.
    pub fn start(spec: &LaunchSpec) -> Option<Uploads> {
        if !spec.collect_outputs {
            return None;
        }
        let pointer = Pointer::of(spec)?;
        let mut uploader = Uploader::new(spec, pointer);
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("checkpoint-uploads".into())
            .spawn(move || {
                loop {
                    let last = !matches!(
                        stopped.recv_timeout(POLL_INTERVAL),
                        Err(mpsc::RecvTimeoutError::Timeout)
                    );
                    uploader.round();
                    if last {
                        break;
                    }
                }
                uploader.clean_up();
            });
        match thread {
            Ok(thread) => Some(Uploads { stop, thread }),
            Err(e) => {
                eprintln!("{LAUNCHER_BIN}: checkpoints will not be stored: starting a thread: {e}");
                None
            }
        }
    }

    /// After the command ended: takes the checkpoint it may have written as it stopped, and
    /// waits for the uploads in progress.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// What identifies one saved checkpoint: `latest` is replaced by a new file at every save,
/// and a checkpoint directory saved again is a new directory, so a new save changes one or
/// the other; removing a checkpoint's files changes its directory's times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Saved {
    latest: FileId,
    dir: FileId,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileId {
    fn of(path: &Path) -> std::io::Result<FileId> {
        let m = std::fs::symlink_metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Why a round stored nothing.
#[derive(Debug)]
enum Skip {
    /// The command moved on while the checkpoint was being taken: the next round takes the
    /// newer one.
    Raced,
    Failed(String),
}

impl From<std::io::Error> for Skip {
    fn from(e: std::io::Error) -> Skip {
        match e.kind() {
            ErrorKind::NotFound => Skip::Raced,
            _ => Skip::Failed(e.to_string()),
        }
    }
}

struct Uploader {
    spec: LaunchSpec,
    pointer: Pointer,
    dir: PathBuf,
    staging: PathBuf,
    store: Option<Store>,
    /// The newest checkpoint stored, or there when the command started (restored).
    done: Option<Saved>,
    /// The last failure said, so that a lasting one is said once.
    said: Option<String>,
}

impl Uploader {
    fn new(spec: &LaunchSpec, pointer: Pointer) -> Uploader {
        let dir = spec.checkpoint_dir();
        let done = newest(&dir).ok().flatten().map(|(_, saved)| saved);
        Uploader {
            spec: spec.clone(),
            pointer,
            dir,
            staging: spec.dir.join(STAGING),
            store: None,
            done,
            said: None,
        }
    }

    fn round(&mut self) {
        let (name, saved) = match newest(&self.dir) {
            Ok(Some(found)) if Some(found.1) != self.done => found,
            Ok(_) | Err(Skip::Raced) => return,
            Err(Skip::Failed(e)) => return self.say(format!("reading {LATEST}: {e}")),
        };
        let taken = self.take(&name, saved);
        let stored = taken.and_then(|()| self.store(&name));
        let _ = std::fs::remove_dir_all(&self.staging);
        match stored {
            Ok(()) => {
                self.done = Some(saved);
                self.said = None;
                eprintln!(
                    "{LAUNCHER_BIN}: stored checkpoint {name} of step {}",
                    self.spec.node
                );
            }
            Err(Skip::Raced) => {}
            Err(Skip::Failed(e)) => self.say(format!("storing {name}: {e}")),
        }
    }

    /// Links (or copies) `latest` and the checkpoint it names into the staging directory, and
    /// checks that they are still the same save afterwards.
    fn take(&self, name: &CheckpointName, saved: Saved) -> Result<(), Skip> {
        remove_all(&self.staging).map_err(Skip::Failed)?;
        std::fs::create_dir_all(&self.staging)?;
        std::fs::write(self.staging.join(LATEST), name.as_str())?;
        link_tree(
            &self.dir.join(name.as_str()),
            &self.staging.join(name.as_str()),
        )?;
        match newest(&self.dir)? {
            Some((_, now)) if now == saved => Ok(()),
            _ => Err(Skip::Raced),
        }
    }

    /// Stores the staged checkpoint and points the step's pointer at it.
    fn store(&mut self, name: &CheckpointName) -> Result<(), Skip> {
        if self.store.is_none() {
            self.store = Some(Store::open(&self.spec).map_err(Skip::Failed)?);
        }
        let Some(store) = &self.store else {
            return Err(Skip::Failed("the artifact store is not open".into()));
        };
        let artifact = store
            .runtime
            .block_on(store.artifacts.put_path(&self.staging, &self.staging))
            .map_err(|e| Skip::Failed(e.to_string()))?;
        let pointer = CheckpointPointer {
            artifact,
            checkpoint: name.clone(),
            attempt: Some(self.spec.attempt),
            incarnation: self
                .spec
                .env
                .get("TOUCAN_INCARNATION")
                .and_then(|i| i.parse().ok()),
            updated_at: None,
        };
        match self.pointer.put(&pointer) {
            Ok(()) => Ok(()),
            // A later checkpoint is recorded already (a later incarnation's): nothing to do.
            Err(RequestError::Refused { status: 409, .. }) => Ok(()),
            Err(e) => Err(Skip::Failed(format!("recording its pointer: {e}"))),
        }
    }

    fn say(&mut self, message: String) {
        if self.said.as_ref() != Some(&message) {
            eprintln!(
                "{LAUNCHER_BIN}: could not keep the checkpoint of step {}: {message}",
                self.spec.node
            );
            self.said = Some(message);
        }
    }

    fn clean_up(&self) {
        let _ = std::fs::remove_dir_all(&self.staging);
    }
}

/// The checkpoint `latest` names in `dir`, and what identifies its save; `None` when there is
/// none.
fn newest(dir: &Path) -> Result<Option<(CheckpointName, Saved)>, Skip> {
    let latest = dir.join(LATEST);
    let before = match FileId::of(&latest) {
        Ok(id) => id,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let text = std::fs::read_to_string(&latest)?;
    let name = CheckpointName::parse(text.trim()).map_err(Skip::Failed)?;
    let dir_id = FileId::of(&dir.join(name.as_str()))?;
    // `latest` replaced while it was read: the next round reads the new one.
    if FileId::of(&latest)? != before {
        return Err(Skip::Raced);
    }
    Ok(Some((
        name,
        Saved {
            latest: before,
            dir: dir_id,
        },
    )))
}

/// Recreates the tree at `from` under `to` with hard links to its files (copies where links
/// cannot be made): the command may remove its checkpoint at any time, but not the files
/// linked here.
fn link_tree(from: &Path, to: &Path) -> Result<(), Skip> {
    std::fs::create_dir(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (source, dest) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_tree(&source, &dest)?;
        } else if kind.is_file() {
            if let Err(e) = std::fs::hard_link(&source, &dest) {
                if e.kind() == ErrorKind::NotFound {
                    return Err(Skip::Raced);
                }
                std::fs::copy(&source, &dest)?;
            }
        } else {
            return Err(Skip::Failed(format!(
                "{}: a checkpoint holds only files and directories",
                source.display()
            )));
        }
    }
    Ok(())
}

fn remove_all(path: &Path) -> Result<(), String> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", path.display()))
        }
        _ => Ok(()),
    }
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to)
        .map_err(|e| format!("moving {} to {}: {e}", from.display(), to.display()))
}
