//! Data-parallel training: one `toucan-worker train` process per replica, on libtorch's c10d
//! ([`crate::collectives`]).
//!
//! The replicas find each other through torch.distributed's variables: `WORLD_SIZE` (the
//! number of replicas; absent or 1 means training alone), `RANK` (this one's, from 0),
//! `MASTER_ADDR` and `MASTER_PORT` (where rank 0 serves the rendezvous).
//!
//! The global batch is `batchSize`, split evenly: each epoch's shuffled order is dealt out
//! round-robin, so replica `r` gets positions `r, r + W, r + 2W, ...` and, for every global
//! batch, exactly its share of that batch's records (`batchSize / W` of them, fewer in the
//! last batch). Every replica starts from rank 0's weights, and the gradients are averaged with
//! each replica's loss weighted by its share of the batch, so the step equals the one a single
//! process takes on the whole batch: the same seed and global batch give the same weights (up
//! to floating-point summation order) whatever the number of replicas. Every replica takes
//! every step, even one whose share of the last batch is empty. The epoch's loss and accuracy
//! are summed over the replicas.
//!
//! The averaging overlaps backward, as DistributedDataParallel's does, with its own reducer:
//! buckets of gradients travel while backward computes the earlier layers'. The one step where
//! a replica may have no records (the last batch holding fewer than `W`) runs no backward on
//! that replica, so every replica averages that step's gradients at once, after backward.

use std::time::Duration;

use tch::{Device, Tensor};

use super::MlError;
use crate::collectives::{CollectiveError, Devices, ProcessGroup};

/// How long a replica waits for the others, at the rendezvous and in every collective.
const TIMEOUT: Duration = Duration::from_secs(600);

/// The largest bucket of gradients reduced at once: DistributedDataParallel's default.
const BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// This replica's place among the others.
#[derive(Debug)]
pub struct Replicas {
    group: ProcessGroup,
    /// Whether the current step's backward pass averages the gradients itself.
    reduced_in_backward: bool,
}

/// The environment of one replica, as torch.distributed defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaEnv {
    pub world_size: usize,
    pub rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// This replica's index among those on its machine (`LOCAL_RANK`, 0 when unset): which
    /// GPU it trains on.
    pub local_rank: usize,
    /// Where the others reach this replica: its own address in `TF_CONFIG` (its name behind
    /// the job's headless Service in a cluster), else `MASTER_ADDR` (every replica on one
    /// machine).
    pub own_host: String,
}

impl ReplicaEnv {
    /// Reads `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` through `var`; `None` when
    /// this process trains alone (no `WORLD_SIZE`, or 1).
    pub fn parse(var: impl Fn(&str) -> Option<String>) -> Result<Option<ReplicaEnv>, MlError> {
        let Some(world) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let world_size: usize = number("WORLD_SIZE", &world)?;
        if world_size <= 1 {
            if world_size == 0 {
                return Err(invalid("WORLD_SIZE", &world, "must be at least 1"));
            }
            return Ok(None);
        }
        let required = |name: &str| {
            var(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                MlError::InvalidArgument(format!(
                    "{name} is not set, but WORLD_SIZE={world_size} asks for data-parallel training"
                ))
            })
        };
        let rank_text = required("RANK")?;
        let rank: usize = number("RANK", &rank_text)?;
        if rank >= world_size {
            return Err(invalid(
                "RANK",
                &rank_text,
                &format!("must be below WORLD_SIZE={world_size}"),
            ));
        }
        let master_addr = required("MASTER_ADDR")?;
        let port_text = required("MASTER_PORT")?;
        let master_port: u16 = number("MASTER_PORT", &port_text)?;
        if master_port == 0 {
            return Err(invalid(
                "MASTER_PORT",
                &port_text,
                "must be a port from 1 to 65535",
            ));
        }
        let local_rank = match var("LOCAL_RANK").filter(|v| !v.is_empty()) {
            Some(text) => number("LOCAL_RANK", &text)?,
            None => 0,
        };
        let own_host = var("TF_CONFIG")
            .as_deref()
            .and_then(own_host)
            .unwrap_or_else(|| master_addr.clone());
        Ok(Some(ReplicaEnv {
            world_size,
            rank,
            master_addr,
            master_port,
            local_rank,
            own_host,
        }))
    }
}

/// This task's host in a `TF_CONFIG`: `cluster[task.type][task.index]` without its port.
fn own_host(tf_config: &str) -> Option<String> {
    let config: serde_json::Value = serde_json::from_str(tf_config).ok()?;
    let task = config.get("task")?;
    let role = task.get("type")?.as_str()?;
    let index = usize::try_from(task.get("index")?.as_u64()?).ok()?;
    let address = config.get("cluster")?.get(role)?.get(index)?.as_str()?;
    let host = match address.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, MlError> {
    text.trim()
        .parse()
        .map_err(|_| invalid(name, text, "must be a whole number"))
}

fn invalid(name: &str, value: &str, rule: &str) -> MlError {
    MlError::InvalidArgument(format!("{name}={value:?}: {rule}"))
}

impl Replicas {
    /// The device replica `env` trains on when `--device` resolved to `device`: a CUDA replica
    /// takes the GPU of its `LOCAL_RANK`, as under torchrun.
    pub fn device(env: &ReplicaEnv, device: Device) -> Result<Device, MlError> {
        if !device.is_cuda() {
            return Ok(device);
        }
        let gpus = tch::Cuda::device_count().max(0) as usize;
        if env.local_rank >= gpus {
            return Err(MlError::InvalidArgument(format!(
                "LOCAL_RANK={}: this machine has {gpus} CUDA device(s) visible",
                env.local_rank
            )));
        }
        Ok(Device::Cuda(env.local_rank))
    }

    /// Joins the other replicas, after checking that the global batch splits evenly among them
    /// and that every replica gets records. Replicas on CUDA reduce gradients with NCCL.
    pub fn join(
        env: &ReplicaEnv,
        device: Device,
        batch_size: i64,
        records: i64,
    ) -> Result<Replicas, MlError> {
        let world = env.world_size as i64;
        if batch_size % world != 0 {
            return Err(MlError::Flag {
                flag: "batchSize".into(),
                message: format!(
                    "{batch_size} does not split evenly among WORLD_SIZE={world} replicas"
                ),
            });
        }
        if records < world {
            return Err(MlError::InvalidArgument(format!(
                "the train split has {records} records, fewer than WORLD_SIZE={world} replicas"
            )));
        }
        let group = ProcessGroup::join_from(
            &env.master_addr,
            env.master_port,
            &env.own_host,
            env.rank,
            env.world_size,
            TIMEOUT,
            if device.is_cuda() {
                Devices::Cuda
            } else {
                Devices::Cpu
            },
        )?;
        Ok(Replicas {
            group,
            reduced_in_backward: false,
        })
    }

    pub fn rank(&self) -> usize {
        self.group.rank()
    }

    pub fn world_size(&self) -> usize {
        self.group.world_size()
    }

    /// This replica's records of an epoch's order: positions `rank, rank + W, ...`.
    pub fn shard(&self, order: &[i64]) -> Vec<i64> {
        order
            .iter()
            .skip(self.rank())
            .step_by(self.world_size())
            .copied()
            .collect()
    }

    /// How many records of global batch `index` this replica trains on, and how many the whole
    /// batch holds, for an epoch of `records` records in batches of `batch_size`.
    pub fn share(&self, index: u64, batch_size: i64, records: i64) -> (i64, i64) {
        let start = index as i64 * batch_size;
        let total = (records - start).clamp(0, batch_size);
        let (rank, world) = (self.rank() as i64, self.world_size() as i64);
        let mine = if rank < total {
            (total - rank + world - 1) / world
        } else {
            0
        };
        (mine, total)
    }

    /// A backward pass that gives every parameter a zero gradient: the step of a replica whose
    /// share of the batch is empty, which still takes part in the average.
    pub fn contribute_nothing(params: &[Tensor]) {
        if let Some(total) = params
            .iter()
            .map(|p| (p * 0.0).sum(p.kind()))
            .reduce(|a, b| a + b)
        {
            total.backward();
        }
    }

    /// Makes every replica's variables rank 0's.
    pub fn broadcast(&mut self, variables: &mut [Tensor]) -> Result<(), MlError> {
        Ok(self.group.broadcast(variables, 0)?)
    }

    /// From now on, the gradients of `params` (the trained parameters, the same on every
    /// replica) are averaged during backward; see [`Replicas::start_step`].
    pub fn reduce_during_backward(&mut self, params: &[Tensor]) -> Result<(), MlError> {
        Ok(self.group.attach_reducer(params, BUCKET_BYTES)?)
    }

    /// Called before the forward pass of global batch `index`: when every replica has records
    /// in it, its backward pass averages the gradients as it goes.
    pub fn start_step(&mut self, index: u64, batch_size: i64, records: i64) -> Result<(), MlError> {
        let (_, total) = self.share(index, batch_size, records);
        self.reduced_in_backward = total >= self.world_size() as i64;
        if self.reduced_in_backward {
            self.group.arm_reducer()?;
        }
        Ok(())
    }

    /// The backward pass of this replica's (weighted) loss; a failure of the averaging it
    /// carries is a collective's failure.
    pub fn backward(&self, loss: &Tensor) -> Result<(), MlError> {
        loss.f_backward().map_err(|e| {
            if self.reduced_in_backward {
                MlError::Collective(CollectiveError::Operation {
                    operation: "gradient all-reduce",
                    rank: self.rank(),
                    reason: e.to_string(),
                })
            } else {
                MlError::torch("computing gradients")(e)
            }
        })
    }

    /// Called after the backward pass: averages the step's gradients unless backward did.
    pub fn finish_step(&mut self, params: &[Tensor]) -> Result<(), MlError> {
        if self.reduced_in_backward {
            return Ok(());
        }
        self.average_gradients(params)
    }

    /// Averages the gradients of `params` over the replicas, in place. A parameter without a
    /// gradient yet gets zeros first, so every replica reduces the same tensors.
    pub fn average_gradients(&mut self, params: &[Tensor]) -> Result<(), MlError> {
        let mut grads = Vec::with_capacity(params.len());
        for p in params {
            let mut grad = p.grad();
            if !grad.defined() {
                (p * 0.0).sum(p.kind()).backward();
                grad = p.grad();
            }
            grads.push(grad);
        }
        Ok(self.group.all_reduce_mean(&mut grads)?)
    }

    /// Whether any replica's `flag` is set.
    pub fn any(&mut self, flag: bool) -> Result<bool, MlError> {
        let mut v = [f64::from(u8::from(flag))];
        self.sum(&mut v)?;
        Ok(v[0] > 0.0)
    }

    /// Sums `values` (an epoch's loss sum, correct count and records seen) over the replicas.
    pub fn sum(&mut self, values: &mut [f64]) -> Result<(), MlError> {
        let mut t = [Tensor::from_slice(values)];
        self.group.all_reduce_sum(&mut t)?;
        let summed =
            Vec::<f64>::try_from(&t[0]).map_err(MlError::torch("reading summed metrics"))?;
        values.copy_from_slice(&summed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Option<ReplicaEnv>, MlError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ReplicaEnv::parse(|name| map.get(name).cloned())
    }

    #[test]
    fn alone_unless_world_size_says_otherwise() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        let two = env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "1"),
            ("MASTER_ADDR", "fmnist-ddp-worker-0.fmnist-ddp"),
            ("MASTER_PORT", "23456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            two,
            ReplicaEnv {
                world_size: 2,
                rank: 1,
                master_addr: "fmnist-ddp-worker-0.fmnist-ddp".into(),
                master_port: 23456,
                local_rank: 0,
                own_host: "fmnist-ddp-worker-0.fmnist-ddp".into(),
            }
        );
        let third = env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "23456"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(third.local_rank, 1);
        // The CPU whatever the local rank; CUDA needs a GPU of that index.
        assert_eq!(Replicas::device(&third, Device::Cpu).unwrap(), Device::Cpu);
        if tch::Cuda::device_count() < 2 {
            let err = Replicas::device(&third, Device::Cuda(0)).unwrap_err();
            assert!(err.to_string().contains("LOCAL_RANK=1"), "{err}");
        }
    }

    #[test]
    fn a_replica_is_reached_at_its_own_address_in_tf_config() {
        let tf_config = r#"{"cluster":{"chief":["chief-0.job:29500"],"worker":["worker-0.job:29500","worker-1.job:29500"]},"task":{"type":"worker","index":1}}"#;
        let mine = env(&[
            ("WORLD_SIZE", "3"),
            ("RANK", "2"),
            ("MASTER_ADDR", "chief-0.job"),
            ("MASTER_PORT", "29500"),
            ("TF_CONFIG", tf_config),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(mine.own_host, "worker-1.job");
        assert_eq!(
            own_host(r#"{"cluster":{"worker":["[::1]:80"]},"task":{"type":"worker","index":0}}"#)
                .as_deref(),
            Some("::1")
        );
        assert_eq!(own_host(r#"{"task":{"type":"worker","index":3}}"#), None);
        assert_eq!(own_host("not json"), None);
    }

    #[test]
    fn a_bad_variable_is_named() {
        for (pairs, name) in [
            (vec![("WORLD_SIZE", "two")], "WORLD_SIZE"),
            (vec![("WORLD_SIZE", "0")], "WORLD_SIZE"),
            (vec![("WORLD_SIZE", "2")], "RANK"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "2")], "RANK"),
            (vec![("WORLD_SIZE", "2"), ("RANK", "0")], "MASTER_ADDR"),
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "0"), ("MASTER_ADDR", "h")],
                "MASTER_PORT",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "7000"),
                    ("LOCAL_RANK", "first"),
                ],
                "LOCAL_RANK",
            ),
        ] {
            let err = env(&pairs).unwrap_err().to_string();
            assert!(err.starts_with(name), "{pairs:?}: {err}");
        }
    }
}
