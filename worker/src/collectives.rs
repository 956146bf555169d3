//! Collectives across the replicas of a data-parallel job, on libtorch's own c10d: a `TCPStore`
//! rendezvous, a process group (Gloo for CPU tensors, NCCL for CUDA ones), and
//! DistributedDataParallel's gradient reducer, through the C++ bridge in
//! `csrc/c10d_bridge.cpp` (compiled by the build script with the `torch` feature).
//!
//! The rendezvous and the transport are torch.distributed's, so a rank running PyTorch
//! (`torch.distributed.TCPStore` and `ProcessGroupGloo` on the same address) and ranks running
//! toucan-worker form one group and reduce together.
// The one module with FFI: the bridge's functions take raw pointers to tch's tensors. Every call
// is wrapped in a safe method of `ProcessGroup`, which owns the group's handle.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use tch::{Kind, Tensor};
use torch_sys::C_tensor;

unsafe extern "C" {
    fn toucan_c10d_join(
        host: *const c_char,
        port: u16,
        local_host: *const c_char,
        rank: c_int,
        world_size: c_int,
        timeout_ms: i64,
        nccl: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn toucan_c10d_all_reduce_sum(
        group: *mut c_void,
        tensor: *mut C_tensor,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn toucan_c10d_broadcast(
        group: *mut c_void,
        tensor: *mut C_tensor,
        root: c_int,
        err: *mut c_char,
        err_len: usize,
    ) -> c_int;
    fn toucan_c10d_barrier(group: *mut c_void, err: *mut c_char, err_len: usize) -> c_int;
    fn toucan_c10d_reducer_new(
        group: *mut c_void,
        params: *const *const C_tensor,
        count: usize,
        bucket_bytes: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn toucan_c10d_reducer_prepare(reducer: *mut c_void, err: *mut c_char, err_len: usize)
    -> c_int;
    fn toucan_c10d_reducer_free(reducer: *mut c_void);
    fn toucan_c10d_leave(group: *mut c_void);
}

/// Why a collective failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("rank {rank} of {world_size} could not join the group at {host}:{port}: {reason}")]
    Join {
        host: String,
        port: u16,
        rank: usize,
        world_size: usize,
        reason: String,
    },
    #[error("{operation} on rank {rank}: {reason}")]
    Operation {
        operation: &'static str,
        rank: usize,
        reason: String,
    },
    #[error("invalid process group: {0}")]
    Invalid(String),
}

/// Where a group's tensors live, which decides what reduces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Devices {
    /// CPU tensors only: Gloo.
    Cpu,
    /// CUDA tensors too, reduced by NCCL (CPU tensors still by Gloo). Joining fails when this
    /// toucan-worker has no NCCL (a build whose libtorch lacks CUDA, the CPU image) or the
    /// machine no GPU.
    Cuda,
}

/// The longest error text the bridge reports.
const ERROR_LEN: usize = 2048;

/// One rank's membership of a group of `world_size` ranks. Leaving happens on drop.
pub struct ProcessGroup {
    handle: NonNull<c_void>,
    /// DDP's gradient reducer, once [`ProcessGroup::attach_reducer`] made one; freed before the
    /// group is left.
    reducer: Option<NonNull<c_void>>,
    rank: usize,
    world_size: usize,
}

// The c10d process group is thread-safe; this handle is only ever used through `&mut self`.
unsafe impl Send for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .finish_non_exhaustive()
    }
}

impl ProcessGroup {
    /// Joins the group whose store rank 0 serves at `host:port` (rank 0 starts it), as in
    /// torch.distributed's `MASTER_ADDR`/`MASTER_PORT` rendezvous. Fails when the others do not
    /// arrive within `timeout`, which also bounds every later collective. This rank's own
    /// connections use `host`'s address too, which holds when every rank shares a machine;
    /// see [`ProcessGroup::join_from`].
    pub fn join(
        host: &str,
        port: u16,
        rank: usize,
        world_size: usize,
        timeout: Duration,
    ) -> Result<Self, CollectiveError> {
        Self::join_from(host, port, host, rank, world_size, timeout, Devices::Cpu)
    }

    /// [`ProcessGroup::join`], with this rank's peers reaching it at the address `local_host`
    /// resolves to (its own name behind a headless Service, in a cluster), for tensors on
    /// `devices`.
    pub fn join_from(
        host: &str,
        port: u16,
        local_host: &str,
        rank: usize,
        world_size: usize,
        timeout: Duration,
        devices: Devices,
    ) -> Result<Self, CollectiveError> {
        let join_error = |reason: String| CollectiveError::Join {
            host: host.to_string(),
            port,
            rank,
            world_size,
            reason,
        };
        if world_size == 0 || rank >= world_size {
            return Err(CollectiveError::Invalid(format!(
                "rank {rank} is not in a group of {world_size}"
            )));
        }
        let (Ok(c_rank), Ok(c_world)) = (c_int::try_from(rank), c_int::try_from(world_size)) else {
            return Err(CollectiveError::Invalid(format!(
                "a group of {world_size} ranks is too large"
            )));
        };
        let c_host = CString::new(host)
            .map_err(|_| CollectiveError::Invalid(format!("host {host:?} contains NUL")))?;
        let c_local = CString::new(local_host)
            .map_err(|_| CollectiveError::Invalid(format!("host {local_host:?} contains NUL")))?;
        let timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let mut err = [0u8; ERROR_LEN];
        // SAFETY: every pointer is valid for the call; the bridge copies `host` and writes at
        // most ERROR_LEN bytes, NUL-terminated, into `err`.
        let handle = unsafe {
            toucan_c10d_join(
                c_host.as_ptr(),
                port,
                c_local.as_ptr(),
                c_rank,
                c_world,
                timeout_ms,
                c_int::from(devices == Devices::Cuda),
                err.as_mut_ptr().cast(),
                ERROR_LEN,
            )
        };
        match NonNull::new(handle) {
            Some(handle) => Ok(ProcessGroup {
                handle,
                reducer: None,
                rank,
                world_size,
            }),
            None => Err(join_error(error_text(&err))),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// Sums each tensor element-wise across the group, in place. Every rank passes tensors of
    /// the same shapes and kinds, in the same order, on one device (CUDA tensors only in a
    /// group joined for [`Devices::Cuda`]). Tensors of one
    /// kind travel together in one buffer (one collective per kind, not per tensor), as
    /// gradient buckets do.
    pub fn all_reduce_sum(&mut self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        self.bucketed("all-reduce", tensors, |group, bucket| {
            let mut err = [0u8; ERROR_LEN];
            // SAFETY: the handle is live (owned by the group); the tensor is tch's, borrowed
            // mutably for the call, as the bridge expects (`at::Tensor*`).
            let status = unsafe {
                toucan_c10d_all_reduce_sum(
                    group.handle.as_ptr(),
                    bucket.as_mut_ptr(),
                    err.as_mut_ptr().cast(),
                    ERROR_LEN,
                )
            };
            group.check("all-reduce", status, &err)
        })
    }

    /// Averages each tensor element-wise across the group, in place (a sum, then a division by
    /// the group's size): what data-parallel training does to gradients.
    pub fn all_reduce_mean(&mut self, tensors: &mut [Tensor]) -> Result<(), CollectiveError> {
        self.all_reduce_sum(tensors)?;
        let _no_grad = tch::no_grad_guard();
        let size = self.world_size as f64;
        for tensor in tensors.iter_mut() {
            // In place; the returned handle is the same tensor.
            let _ = tensor
                .f_div_scalar_(size)
                .map_err(|e| self.failed("all-reduce mean", e))?;
        }
        Ok(())
    }

    /// Overwrites each tensor with rank `root`'s, in place: how replicas start from identical
    /// weights. Bucketed by kind as [`ProcessGroup::all_reduce_sum`].
    pub fn broadcast(
        &mut self,
        tensors: &mut [Tensor],
        root: usize,
    ) -> Result<(), CollectiveError> {
        let Some(c_root) = c_int::try_from(root)
            .ok()
            .filter(|_| root < self.world_size)
        else {
            return Err(CollectiveError::Invalid(format!(
                "broadcast root {root} is not in a group of {}",
                self.world_size
            )));
        };
        self.bucketed("broadcast", tensors, |group, bucket| {
            let mut err = [0u8; ERROR_LEN];
            // SAFETY: as in all_reduce_sum.
            let status = unsafe {
                toucan_c10d_broadcast(
                    group.handle.as_ptr(),
                    bucket.as_mut_ptr(),
                    c_root,
                    err.as_mut_ptr().cast(),
                    ERROR_LEN,
                )
            };
            group.check("broadcast", status, &err)
        })
    }

    /// Runs `collective` once per kind of tensor: on the tensor itself when it is alone of its
    /// kind and contiguous, else on one flat buffer holding all of that kind, copied back after.
    fn bucketed(
        &mut self,
        operation: &'static str,
        tensors: &mut [Tensor],
        mut collective: impl FnMut(&mut Self, &mut Tensor) -> Result<(), CollectiveError>,
    ) -> Result<(), CollectiveError> {
        // The tensors may be parameters that require gradients: these writes are not training.
        let _no_grad = tch::no_grad_guard();
        let kinds = tensors
            .iter()
            .map(Tensor::f_kind)
            .collect::<Result<Vec<Kind>, _>>()
            .map_err(|e| self.failed(operation, e))?;
        // Each kind once, in the order it first appears (the same on every rank).
        let mut order: Vec<Kind> = Vec::new();
        for kind in &kinds {
            if !order.contains(kind) {
                order.push(*kind);
            }
        }
        for kind in order {
            let members: Vec<usize> = (0..tensors.len()).filter(|&i| kinds[i] == kind).collect();
            if let [only] = members[..]
                && tensors[only].is_contiguous()
            {
                collective(self, &mut tensors[only])?;
                continue;
            }
            let flat: Vec<Tensor> = members.iter().map(|&i| tensors[i].reshape([-1])).collect();
            let mut bucket = Tensor::f_cat(&flat, 0).map_err(|e| self.failed(operation, e))?;
            collective(self, &mut bucket)?;
            let mut offset = 0;
            for &i in &members {
                let n = tensors[i].numel() as i64;
                let part = bucket
                    .f_narrow(0, offset, n)
                    .and_then(|part| part.f_view_as(&tensors[i]))
                    .map_err(|e| self.failed(operation, e))?;
                tensors[i]
                    .f_copy_(&part)
                    .map_err(|e| self.failed(operation, e))?;
                offset += n;
            }
        }
        Ok(())
    }

    fn failed(&self, operation: &'static str, e: tch::TchError) -> CollectiveError {
        CollectiveError::Operation {
            operation,
            rank: self.rank,
            reason: e.to_string(),
        }
    }

    /// Waits until every rank has reached this call.
    pub fn barrier(&mut self) -> Result<(), CollectiveError> {
        let mut err = [0u8; ERROR_LEN];
        // SAFETY: the handle is live; err as in join.
        let status = unsafe {
            toucan_c10d_barrier(self.handle.as_ptr(), err.as_mut_ptr().cast(), ERROR_LEN)
        };
        self.check("barrier", status, &err)
    }

    /// Hands the averaging of `params`' gradients to DistributedDataParallel's reducer (c10d's
    /// `Reducer`): in every backward pass armed by [`ProcessGroup::arm_reducer`], each bucket
    /// of at most `bucket_bytes` is all-reduced while backward goes on computing the earlier
    /// layers' gradients, and the averages are in the parameters' gradients when backward
    /// returns. Every rank passes the same parameters in the same order, and each of them
    /// must get a gradient in every armed pass. A second call replaces the reducer.
    pub fn attach_reducer(
        &mut self,
        params: &[Tensor],
        bucket_bytes: usize,
    ) -> Result<(), CollectiveError> {
        self.free_reducer();
        let pointers: Vec<*const C_tensor> = params.iter().map(Tensor::as_ptr).collect();
        let bucket_bytes = i64::try_from(bucket_bytes).unwrap_or(i64::MAX);
        let mut err = [0u8; ERROR_LEN];
        // SAFETY: the group handle is live; `pointers` holds `params.len()` live tensors,
        // which the bridge copies (sharing their storage) before returning; err as in join.
        let reducer = unsafe {
            toucan_c10d_reducer_new(
                self.handle.as_ptr(),
                pointers.as_ptr(),
                pointers.len(),
                bucket_bytes,
                err.as_mut_ptr().cast(),
                ERROR_LEN,
            )
        };
        match NonNull::new(reducer) {
            Some(reducer) => {
                self.reducer = Some(reducer);
                Ok(())
            }
            None => Err(self.failed_with("attaching the gradient reducer", &err)),
        }
    }

    /// Makes the next backward pass average the gradients through the reducer: call it before
    /// the step's forward, on every rank. A pass not armed keeps its gradients local.
    pub fn arm_reducer(&mut self) -> Result<(), CollectiveError> {
        let Some(reducer) = self.reducer else {
            return Err(CollectiveError::Invalid(
                "no gradient reducer is attached".into(),
            ));
        };
        let mut err = [0u8; ERROR_LEN];
        // SAFETY: the reducer is live (owned by this group); err as in join.
        let status = unsafe {
            toucan_c10d_reducer_prepare(reducer.as_ptr(), err.as_mut_ptr().cast(), ERROR_LEN)
        };
        self.check("arming the gradient reducer", status, &err)
    }

    fn free_reducer(&mut self) {
        if let Some(reducer) = self.reducer.take() {
            // SAFETY: the reducer came from toucan_c10d_reducer_new and is freed exactly once.
            unsafe { toucan_c10d_reducer_free(reducer.as_ptr()) }
        }
    }

    fn failed_with(&self, operation: &'static str, err: &[u8; ERROR_LEN]) -> CollectiveError {
        CollectiveError::Operation {
            operation,
            rank: self.rank,
            reason: error_text(err),
        }
    }

    fn check(
        &self,
        operation: &'static str,
        status: c_int,
        err: &[u8; ERROR_LEN],
    ) -> Result<(), CollectiveError> {
        if status == 0 {
            return Ok(());
        }
        Err(self.failed_with(operation, err))
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.free_reducer();
        // SAFETY: the handle came from toucan_c10d_join and is released exactly once, here.
        unsafe { toucan_c10d_leave(self.handle.as_ptr()) }
    }
}

fn error_text(err: &[u8; ERROR_LEN]) -> String {
    // The bridge NUL-terminates within the buffer, which starts zeroed.
    CStr::from_bytes_until_nul(err)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown error".to_string())
}
