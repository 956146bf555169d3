//! `toucan-worker device` and `train` on libtorch (only with the `torch` feature:
//! `make test-torch`). The binary runs without LD_LIBRARY_PATH, so these also prove that it
//! finds libtorch through its RUNPATH.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::path::Path;

use common::{ingest, worker};

#[test]
fn device_reports_what_libtorch_sees() {
    let run = worker(&["device".as_ref(), "--device".as_ref(), "cpu".as_ref()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(report["selected"], "cpu");
    assert_eq!(report["test_product_sum"], 12.0);
    assert!(report["cpu_threads"].as_i64().unwrap() >= 1);
    assert!(report["cuda_available"].is_boolean());
    // A CUDA build of libtorch must stay linked, or `--device auto` never finds a GPU.
    let lib = Path::new(report["libtorch_lib"].as_str().unwrap());
    if lib.join("libtorch_cuda.so").exists() {
        assert_eq!(report["libtorch_cuda_loaded"], true, "{report}");
    }
}

/// A dataset the linear model can learn: class k (of 3) has every pixel near 80 * k.
fn separable_dataset(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("source");
    std::fs::create_dir(&source).unwrap();
    let n = 300u32;
    let (h, w) = (4u32, 4u32);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = (i % 3) as u8;
        labels.push(label);
        for p in 0..h * w {
            images.push(label * 80 + ((i * 7 + p * 13) % 40) as u8);
        }
    }
    std::fs::write(
        source.join("train-images-idx3-ubyte"),
        common::idx_bytes(&[n, h, w], &images),
    )
    .unwrap();
    std::fs::write(
        source.join("train-labels-idx1-ubyte"),
        common::idx_bytes(&[n], &labels),
    )
    .unwrap();
    let out = dir.join("dataset");
    let run = ingest(&source, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

fn train(data: &Path, out: &Path, model: &str) -> std::process::Output {
    let args: Vec<&OsStr> = vec![
        "train".as_ref(),
        "--data".as_ref(),
        data.as_os_str(),
        "--model".as_ref(),
        model.as_ref(),
        "--epochs".as_ref(),
        "3".as_ref(),
        "--batch-size".as_ref(),
        "32".as_ref(),
        "--lr".as_ref(),
        "0.01".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    worker(&args)
}

/// The epoch lines without the timing fields, which differ between runs.
fn epoch_metrics(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("epoch").is_some())
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            o.remove("images_per_sec");
            o.remove("seconds");
            v
        })
        .collect()
}

#[test]
fn trains_reproducibly_and_writes_the_model() {
    let work = tempfile::tempdir().unwrap();
    let data = separable_dataset(work.path());
    for model in ["linear", "cnn"] {
        let out = work.path().join(format!("{model}-a"));
        let run = train(&data, &out, model);
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let lines = epoch_metrics(&run.stdout);
        assert_eq!(lines.len(), 3);
        for key in ["loss", "accuracy", "val_loss", "val_accuracy", "lr"] {
            assert!(lines[2][key].is_number(), "{key} in {}", lines[2]);
        }
        let last: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
        assert!(
            last["test_accuracy"].as_f64().unwrap() > 0.9,
            "{model}: {last}"
        );
        assert!(out.join("model.safetensors").metadata().unwrap().len() > 0);
        assert!(out.join("model.json").exists());
        assert_eq!(
            std::fs::read_to_string(out.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .count(),
            3
        );

        let again = train(&data, &work.path().join(format!("{model}-b")), model);
        assert_eq!(
            epoch_metrics(&again.stdout),
            lines,
            "{model}: same seed, same metrics"
        );
    }
}

#[test]
fn a_missing_dataset_is_an_input_error_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let run = train(&work.path().join("nope"), &out, "linear");
    assert_eq!(
        run.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(String::from_utf8_lossy(&run.stderr).contains("nope"));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}
