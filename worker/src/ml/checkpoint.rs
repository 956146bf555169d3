//! Training checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint directory holds numbered checkpoints and a pointer to the newest:
//!
//! ```text
//! latest                      the name of the newest checkpoint (written to a temp file, renamed)
//! ckpt-0000001234/            one checkpoint, named by optimizer step; written under a temp
//!   weights.safetensors       name and renamed when complete
//!   optimizer.safetensors     the optimizer's buffers (see `optim`)
//!   best.safetensors          the best epoch's weights, with early stopping's restoreBest
//!   state.json                [`TrainState`]: epoch, batch, step, running sums, history,
//!                             early-stopping counters, the config digest
//! ```
//!
//! A crash at any moment leaves `latest` naming a complete checkpoint (or no `latest`). Older
//! checkpoints are removed after `latest` moves on. The random state needs no saving: every
//! draw is keyed by (seed, epoch, batch) (see `data` and `augment`), so the counters are the
//! random state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::VarStore;

use super::MlError;
use super::train::EpochMetrics;

pub const LATEST: &str = "latest";
const WEIGHTS: &str = "weights.safetensors";
const OPTIMIZER: &str = "optimizer.safetensors";
const BEST: &str = "best.safetensors";
const STATE: &str = "state.json";

/// The loop's counters and history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// The config this run was started with ([`super::config::TrainConfig::digest`]).
    pub config_digest: String,
    /// The epoch in progress (1-based) and how many of its batches are done.
    pub epoch: u32,
    pub next_batch: u64,
    /// Optimizer steps taken.
    pub step: u64,
    /// Running sums of the epoch in progress.
    pub loss_sum: f64,
    pub correct: f64,
    pub seen: u64,
    /// Seconds of training so far (over all sessions).
    pub train_seconds: f64,
    pub history: Vec<EpochMetrics>,
    /// Early stopping: the best monitored value, its epoch, epochs without improvement.
    pub best: Option<f64>,
    pub best_epoch: u32,
    pub bad_epochs: u32,
    /// Set when early stopping ended the run.
    pub stopped_early: bool,
}

impl TrainState {
    pub fn new(config_digest: String) -> TrainState {
        TrainState {
            config_digest,
            epoch: 1,
            next_batch: 0,
            step: 0,
            loss_sum: 0.0,
            correct: 0.0,
            seen: 0,
            train_seconds: 0.0,
            history: Vec::new(),
            best: None,
            best_epoch: 0,
            bad_epochs: 0,
            stopped_early: false,
        }
    }
}

/// What a checkpoint restores.
#[derive(Debug)]
pub struct Restored {
    pub state: TrainState,
    pub optimizer: Vec<(String, Tensor)>,
    pub best: Option<PathBuf>,
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CheckpointDir {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MlError + '_ {
    move |source| MlError::Write {
        path: path.to_path_buf(),
        source,
    }
}

impl CheckpointDir {
    pub fn new(dir: PathBuf) -> CheckpointDir {
        CheckpointDir { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Writes a checkpoint and points `latest` at it.
    pub fn save(
        &self,
        vs: &VarStore,
        optimizer: &[(String, Tensor)],
        best: Option<&[(String, Tensor)]>,
        state: &TrainState,
    ) -> Result<PathBuf, MlError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let name = format!("ckpt-{:010}", state.step);
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(&self.dir)
            .map_err(io(&self.dir))?;
        let weights = tmp.path().join(WEIGHTS);
        vs.save(&weights)
            .map_err(MlError::torch(format!("saving {}", weights.display())))?;
        let opt = tmp.path().join(OPTIMIZER);
        Tensor::write_safetensors(optimizer, &opt)
            .map_err(MlError::torch(format!("saving {}", opt.display())))?;
        if let Some(best) = best {
            let path = tmp.path().join(BEST);
            Tensor::write_safetensors(best, &path)
                .map_err(MlError::torch(format!("saving {}", path.display())))?;
        }
        let state_path = tmp.path().join(STATE);
        let json = serde_json::to_vec_pretty(state).map_err(|e| MlError::Write {
            path: state_path.clone(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(&state_path, json).map_err(io(&state_path))?;
        let final_dir = self.dir.join(&name);
        if final_dir.exists() {
            // The same step saved again (e.g. the epoch's end right after a periodic one).
            std::fs::remove_dir_all(&final_dir).map_err(io(&final_dir))?;
        }
        let kept = tmp.keep();
        std::fs::rename(&kept, &final_dir).map_err(io(&final_dir))?;
        let mut latest = tempfile::NamedTempFile::new_in(&self.dir).map_err(io(&self.dir))?;
        std::io::Write::write_all(&mut latest, name.as_bytes()).map_err(io(&self.dir))?;
        let latest_path = self.dir.join(LATEST);
        latest.persist(&latest_path).map_err(|e| MlError::Write {
            path: latest_path.clone(),
            source: e.error,
        })?;
        self.remove_all_but(&name);
        Ok(final_dir)
    }

    /// Removes older checkpoints and abandoned partial ones; failures only cost disk space.
    fn remove_all_but(&self, keep: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name != keep && (name.starts_with("ckpt-") || name.starts_with(".ckpt-")) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The newest checkpoint, if any, loaded into `vs`.
    pub fn restore(&self, vs: &mut VarStore) -> Result<Option<Restored>, MlError> {
        let latest = self.dir.join(LATEST);
        let name = match std::fs::read_to_string(&latest) {
            Ok(name) => name.trim().to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&latest)(e)),
        };
        let dir = self.dir.join(&name);
        let state_path = dir.join(STATE);
        let bytes = std::fs::read(&state_path).map_err(io(&state_path))?;
        let state: TrainState = serde_json::from_slice(&bytes)
            .map_err(|e| MlError::InvalidArgument(format!("{}: {e}", state_path.display())))?;
        let weights = dir.join(WEIGHTS);
        vs.load(&weights)
            .map_err(MlError::torch(format!("loading {}", weights.display())))?;
        let opt = dir.join(OPTIMIZER);
        let optimizer = Tensor::read_safetensors(&opt)
            .map_err(MlError::torch(format!("loading {}", opt.display())))?;
        let best = Some(dir.join(BEST)).filter(|p| p.is_file());
        Ok(Some(Restored {
            state,
            optimizer,
            best,
            dir,
        }))
    }

    /// Removes the whole directory once the run's result is safely written.
    pub fn remove(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
