//! `toucan-worker train` as replicas of a data-parallel run (torch.distributed's `WORLD_SIZE`,
//! `RANK`, `MASTER_ADDR`, `MASTER_PORT`), on libtorch's Gloo collectives.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bars_dataset, free_port, train_command};
use serde_json::Value;
use tch::Tensor;

fn replica(
    data: &Path,
    out: &Path,
    extra: &[&str],
    rank: usize,
    world: usize,
    port: u16,
) -> Command {
    let mut cmd = train_command(data, out, extra);
    cmd.env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string());
    cmd
}

fn succeeded(run: &Output) {
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn weights(model: &Path) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(model.join("model.safetensors")).unwrap();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

fn largest_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(
        a.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        b.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    a.iter()
        .zip(b)
        .map(|((_, x), (_, y))| f64::try_from((x - y).abs().max()).unwrap())
        .fold(0.0, f64::max)
}

/// `|a - b| / |b|` over all the weights together (L2 norms).
fn relative_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    let (mut diff, mut norm) = (0.0, 0.0);
    for ((_, x), (_, y)) in a.iter().zip(b) {
        diff += f64::try_from((x - y).square().sum(tch::Kind::Double)).unwrap();
        norm += f64::try_from(y.square().sum(tch::Kind::Double)).unwrap();
    }
    (diff / norm).sqrt()
}

fn metrics(model: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(model.join("metrics.json")).unwrap()).unwrap()
}

/// Records of the dataset: ingest's default 80:10:10 split leaves 49 to train on, so batches of
/// 8 end with a batch of one record, of which the second of two replicas has no share.
const RECORDS: u32 = 62;

/// Two replicas, each on half of every global batch, end with the weights one process gets on
/// whole batches, including the last batch where one replica's share is empty.
#[test]
fn two_replicas_take_the_steps_of_one_process() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), RECORDS);
    // No dropout and no batch norm: both depend on how a batch is split.
    let config = work.path().join("train.yaml");
    std::fs::write(
        &config,
        "model: {kind: dnn, hidden: [16], dropout: 0, batchNorm: false}\n",
    )
    .unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "3",
        "--batch-size",
        "8",
        "--seed",
        "7",
    ];
    let alone = work.path().join("alone");
    succeeded(&train_command(&data, &alone, &args).output().unwrap());

    let port = free_port();
    let outs = [work.path().join("rank-0"), work.path().join("rank-1")];
    let children: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            replica(&data, out, &args, rank, 2, port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for run in &runs {
        succeeded(run);
    }
    assert!(String::from_utf8_lossy(&runs[1].stderr).contains("replica 1 of 2"));

    // The replicas hold identical weights, the single process's up to summation order.
    let (w0, w1, w) = (weights(&outs[0]), weights(&outs[1]), weights(&alone));
    assert_eq!(largest_difference(&w0, &w1), 0.0);
    let diff = largest_difference(&w0, &w);
    assert!(diff < 1e-4, "weights differ from one process's by {diff}");
    // The epoch figures cover every replica's share: the same as one process's.
    let (m0, m) = (metrics(&outs[0]), metrics(&alone));
    for field in ["accuracy", "val_accuracy"] {
        assert_eq!(m0[field], m[field], "{field}: {m0} vs {m}");
    }
    let (l0, l) = (m0["loss"].as_f64().unwrap(), m["loss"].as_f64().unwrap());
    assert!((l0 - l).abs() < 1e-4, "{l0} vs {l}");
}

/// A global batch that does not split evenly, or a replica without its rendezvous, is refused
/// before anything trains or waits.
#[test]
fn a_bad_replica_setup_is_refused_at_once() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 30);
    let out = work.path().join("model");
    let port = free_port();
    let run = replica(&data, &out, &["--batch-size", "8"], 0, 3, port)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(
        err.contains("batchSize") && err.contains("WORLD_SIZE=3"),
        "{err}"
    );
    let run = train_command(&data, &out, &[])
        .env("WORLD_SIZE", "2")
        .env("RANK", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{err}");
    assert!(err.contains("MASTER_ADDR"), "{err}");
    assert!(!out.exists());
}

/// The first `n` images and labels of Debian's Fashion-MNIST training files, as IDX files in
/// `dir` (the real images, few enough to train in seconds).
fn fashion_mnist_subset(dir: &Path, n: usize) -> std::path::PathBuf {
    use std::io::Read;
    let debian = Path::new("/usr/share/datasets/fashion-mnist");
    let read = |name: &str| {
        let file = std::fs::File::open(debian.join(name)).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (scripts/setup installs dataset-fashion-mnist)",
                debian.display()
            )
        });
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(file)
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    let count = (n as u32).to_be_bytes();
    let mut images = read("train-images-idx3-ubyte.gz");
    images.truncate(16 + n * 28 * 28);
    images[4..8].copy_from_slice(&count);
    let mut labels = read("train-labels-idx1-ubyte.gz");
    labels.truncate(8 + n);
    labels[4..8].copy_from_slice(&count);
    std::fs::write(source.join("train-images-idx3-ubyte"), images).unwrap();
    std::fs::write(source.join("train-labels-idx1-ubyte"), labels).unwrap();
    let out = dir.join("dataset");
    let run = common::ingest(&source, &out, &[]);
    succeeded(&run);
    out
}

/// The Fashion-MNIST CNN on real images: two replicas with the same global batch and seed
/// end within 1% of one process's weights (relative L2) and within one test image of its test
/// accuracy. Dropout is off: its masks depend on how a batch is split.
#[test]
fn two_replicas_train_the_fashion_mnist_cnn_as_one_process_does() {
    let work = tempfile::tempdir().unwrap();
    let data = fashion_mnist_subset(work.path(), 2400);
    let config = work.path().join("train.yaml");
    std::fs::write(&config, "model: {kind: cnn, dropout: 0}\n").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--epochs",
        "2",
        "--batch-size",
        "64",
        "--seed",
        "3",
    ];
    let alone = work.path().join("alone");
    succeeded(&train_command(&data, &alone, &args).output().unwrap());
    let port = free_port();
    let outs = [work.path().join("rank-0"), work.path().join("rank-1")];
    let children: Vec<_> = outs
        .iter()
        .enumerate()
        .map(|(rank, out)| {
            replica(&data, out, &args, rank, 2, port)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        succeeded(&child.wait_with_output().unwrap());
    }
    let (w0, w1, w) = (weights(&outs[0]), weights(&outs[1]), weights(&alone));
    assert_eq!(largest_difference(&w0, &w1), 0.0);
    let diff = relative_difference(&w0, &w);
    eprintln!("relative weight difference from one process: {diff:e}");
    let (m0, m) = (metrics(&outs[0]), metrics(&alone));
    eprintln!("test accuracy {} vs {}", m0["accuracy"], m["accuracy"]);
    // Adam's steps turn summation-order rounding into small drifts: 8e-4 here.
    assert!(diff < 1e-2, "weights differ from one process's by {diff}");
    let (a0, a) = (
        m0["accuracy"].as_f64().unwrap(),
        m["accuracy"].as_f64().unwrap(),
    );
    // Within one image of the 240 the test split holds.
    assert!(
        (a0 - a).abs() <= 1.0 / 240.0 + 1e-9,
        "test accuracy {a0} vs {a}"
    );
    assert!(a > 0.6, "{m}");
}
