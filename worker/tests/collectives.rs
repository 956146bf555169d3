//! libtorch's collectives through the worker's c10d bridge: a group of toucan ranks, and a
//! group where one rank is PyTorch's own `torch.distributed`.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::free_port;
use tch::{Kind, Tensor};
use toucan_worker::collectives::{CollectiveError, Devices, ProcessGroup};

const TIMEOUT: Duration = Duration::from_secs(30);

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1)).unwrap()
}

/// Every collective the worker uses, across three toucan ranks (one thread each).
#[test]
fn toucan_ranks_reduce_broadcast_and_meet() {
    let port = free_port();
    let world = 3;
    let ranks: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut group = ProcessGroup::join("127.0.0.1", port, rank, world, TIMEOUT)?;
                assert_eq!((group.rank(), group.world_size()), (rank, world));
                let r = rank as f64;
                // Two tensors of different shapes and kinds in one call.
                let mut tensors = [
                    Tensor::from_slice(&[r, 10.0 * r, 1.0]).to_kind(Kind::Float),
                    Tensor::ones([2, 2], (Kind::Double, tch::Device::Cpu)) * (r + 1.0),
                ];
                group.all_reduce_sum(&mut tensors)?;
                let sum = (values(&tensors[0]), values(&tensors[1]));
                let mut mean = [Tensor::from_slice(&[r * 3.0]).to_kind(Kind::Float)];
                group.all_reduce_mean(&mut mean)?;
                let mut weights = [Tensor::from_slice(&[r, r, r]).to_kind(Kind::Float)];
                group.broadcast(&mut weights, 2)?;
                group.barrier()?;
                Ok::<_, CollectiveError>((sum, values(&mean[0]), values(&weights[0])))
            })
        })
        .collect();
    for handle in ranks {
        let ((sum0, sum1), mean, weights) = handle.join().unwrap().unwrap();
        assert_eq!(sum0, [3.0, 30.0, 3.0]);
        assert_eq!(sum1, [6.0; 4]);
        assert_eq!(mean, [3.0]);
        assert_eq!(weights, [2.0, 2.0, 2.0]);
    }
}

/// DistributedDataParallel's reducer, attached to two ranks' parameters: an armed backward pass
/// returns with every gradient averaged, an unarmed one keeps them local, and the buckets it
/// rebuilds after the first pass (a large parameter makes two) average as well.
#[test]
fn an_armed_backward_pass_averages_the_gradients() {
    let port = free_port();
    let world = 2;
    let ranks: Vec<_> = (0..world)
        .map(|rank| {
            std::thread::spawn(move || {
                let mut group = ProcessGroup::join("127.0.0.1", port, rank, world, TIMEOUT)?;
                let cpu = (Kind::Float, tch::Device::Cpu);
                // 2 MiB: after the first pass it gets a bucket of its own.
                let params = [
                    Tensor::ones([3], cpu).set_requires_grad(true),
                    Tensor::ones([512, 1024], cpu).set_requires_grad(true),
                    Tensor::ones([2, 2], cpu).set_requires_grad(true),
                ];
                group.attach_reducer(&params, 1024 * 1024)?;
                let scale = rank as f64 + 1.0;
                let mut grads = Vec::new();
                for armed in [true, false, true, true] {
                    for p in &params {
                        let mut g = p.grad();
                        if g.defined() {
                            let _ = g.zero_();
                        }
                    }
                    if armed {
                        group.arm_reducer()?;
                    }
                    let loss = params
                        .iter()
                        .enumerate()
                        .map(|(i, p)| p.sum(Kind::Float) * scale * (i as f64 + 1.0))
                        .reduce(|a, b| a + b)
                        .unwrap();
                    loss.f_backward().unwrap();
                    grads.push(params.iter().map(|p| values(&p.grad())).collect::<Vec<_>>());
                }
                Ok::<_, CollectiveError>(grads)
            })
        })
        .collect();
    for (rank, handle) in ranks.into_iter().enumerate() {
        let passes = handle.join().unwrap().unwrap();
        let own = rank as f32 + 1.0;
        for (pass, grads) in passes.iter().enumerate() {
            // The mean of the two ranks' scales (1 and 2) when armed, this rank's own when not.
            let scale = if pass == 1 { own } else { 1.5 };
            for (i, grad) in grads.iter().enumerate() {
                let expected = scale * (i as f32 + 1.0);
                assert!(
                    grad.iter().all(|&g| g == expected),
                    "rank {rank}, pass {pass}, parameter {i}: expected {expected}, got {:?}",
                    &grad[..grad.len().min(4)]
                );
            }
        }
    }
}

/// A group joined for CUDA tensors reaches libtorch's NCCL process group through the NCCL
/// library the build made: on a machine with a GPU it reduces a CUDA tensor; without one,
/// NCCL's own constructor is what refuses.
#[test]
fn a_cuda_group_reduces_with_nccl() {
    let port = free_port();
    let joined =
        ProcessGroup::join_from("127.0.0.1", port, "127.0.0.1", 0, 1, TIMEOUT, Devices::Cuda);
    if tch::Cuda::is_available() {
        let mut group = joined.unwrap();
        let mut t = [Tensor::from_slice(&[1.0f32, 2.0]).to_device(tch::Device::Cuda(0))];
        group.all_reduce_sum(&mut t).unwrap();
        assert_eq!(values(&t[0].to_device(tch::Device::Cpu)), [1.0, 2.0]);
        return;
    }
    let err = joined.unwrap_err().to_string();
    let libtorch_has_cuda = option_env!("TOUCAN_LIBTORCH_LIB")
        .is_some_and(|lib| Path::new(lib).join("libtorch_cuda.so").exists());
    if libtorch_has_cuda {
        assert!(
            err.contains("ProcessGroupNCCL is only supported with GPUs"),
            "{err}"
        );
    } else {
        assert!(err.contains("NCCL is not available"), "{err}");
    }
}

/// Rank 0 is toucan-worker's bridge, rank 1 is PyTorch (`torch.distributed`, Gloo) in another
/// process: the same rendezvous and transport, one all-reduce.
#[test]
fn a_pytorch_rank_and_a_toucan_rank_reduce_together() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup --torch",
        python.display()
    );
    let port = free_port();
    let script = format!(
        r#"
import datetime, torch, torch.distributed as dist
timeout = datetime.timedelta(seconds={timeout})
store = dist.TCPStore("127.0.0.1", {port}, 2, False, timeout=timeout)
group = dist.ProcessGroupGloo(store, 1, 2, timeout)
t = torch.tensor([2.0, 20.0, 200.0])
group.allreduce([t]).wait()
print(",".join(str(v) for v in t.tolist()), flush=True)
# The group before the store it talks through, not in whatever order the interpreter's exit
# picks.
del group
del store
"#,
        timeout = TIMEOUT.as_secs()
    );
    let pytorch = Command::new(&python)
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut group = ProcessGroup::join("127.0.0.1", port, 0, 2, TIMEOUT).unwrap();
    let mut t = [Tensor::from_slice(&[1.0f32, 10.0, 100.0])];
    group.all_reduce_sum(&mut t).unwrap();
    let out = pytorch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the PyTorch rank failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(values(&t[0]), [3.0, 30.0, 300.0]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "3.0,30.0,300.0"
    );
    drop(group);
}

/// A rank whose peers never come gets an error naming the address, not a hang.
#[test]
fn a_missing_peer_is_an_error_after_the_timeout() {
    let port = free_port();
    let err = ProcessGroup::join("127.0.0.1", port, 0, 2, Duration::from_secs(2)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(
        !text.contains("frame #"),
        "c10's C++ backtrace is left out: {text}"
    );
    assert!(matches!(
        ProcessGroup::join("127.0.0.1", port, 2, 2, TIMEOUT),
        Err(CollectiveError::Invalid(_))
    ));
}
