//! `train`'s flags and config under the same rules: a bad flag value is refused while the
//! arguments are parsed and the error names the flag (not the config file); a bad value in
//! the config file names the file and the field. Both exit 2 (`toucan_worker::EXIT_INVALID`)
//! before the dataset is read. Only with the `torch` feature, like `train.rs`.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::refused;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `train` on an empty directory as the dataset: every error here must come before it is read.
fn train(dir: &Path, extra: &[&str]) -> String {
    let out = dir.join("model");
    let mut args = vec!["train", "--data", s(dir), "--out", s(&out)];
    args.extend(extra);
    refused_any(&args)
}

fn refused_any(args: &[&str]) -> String {
    let run = common::worker(&args.iter().map(std::ffi::OsStr::new).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(
        run.status.code(),
        Some(i32::from(toucan_worker::EXIT_INVALID)),
        "{stderr}"
    );
    stderr
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("train.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_bad_epochs_flag_names_the_flag_not_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "epochs: 3\n");
    let out = dir.path().join("model");
    for bad in ["0", "-1"] {
        let args = [
            "train",
            "--data",
            s(dir.path()),
            "--out",
            s(&out),
            "--config",
            s(&config),
            "--epochs",
            bad,
        ];
        let stderr = refused(&args, "--epochs");
        assert!(stderr.contains("must be at least 1"), "{stderr}");
        assert!(!stderr.contains("train.yaml"), "{stderr}");
    }
}

#[test]
fn a_bad_value_in_the_config_file_names_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "epochs: 0\n");
    let stderr = train(dir.path(), &["--config", s(&config)]);
    assert!(
        stderr.contains("train.yaml: epochs: must be at least 1"),
        "{stderr}"
    );
    assert!(!stderr.contains("--epochs"), "{stderr}");
    let config = write_config(dir.path(), "optimizer: {momentum: 1.5}\n");
    let stderr = train(dir.path(), &["--config", s(&config)]);
    assert!(
        stderr.contains("train.yaml: optimizer.momentum: must be in [0, 1)"),
        "{stderr}"
    );
}

#[test]
fn a_float_out_of_range_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    for (flag, bad, says) in [
        ("--lr", "0", "must be a positive number"),
        ("--lr", "nan", "must be a positive number"),
        ("--momentum", "1", "must be in [0, 1)"),
        ("--zoom", "0.95", "must be between 0 and 0.9"),
        ("--l2", "-0.1", "must be zero or more"),
        ("--backbone-lr-scale", "0", "must be a positive number"),
    ] {
        let args = [
            "train",
            "--data",
            s(dir.path()),
            "--out",
            s(&out),
            flag,
            bad,
        ];
        let stderr = refused(&args, flag);
        assert!(stderr.contains(says), "{flag} {bad}: {stderr}");
    }
}

#[test]
fn integer_enum_and_path_flags_of_the_ml_commands_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("missing");
    let d = s(dir.path());
    refused(
        &["train", "--data", d, "--out", s(&out), "--batch-size", "0"],
        "--batch-size",
    );
    refused(
        &[
            "train",
            "--data",
            d,
            "--out",
            s(&out),
            "--checkpoint-every-steps",
            "0",
        ],
        "--checkpoint-every-steps",
    );
    refused(
        &["train", "--data", d, "--out", s(&out), "--threads", "0"],
        "--threads",
    );
    refused(
        &[
            "train",
            "--data",
            d,
            "--out",
            s(&out),
            "--optimizer",
            "rmsprop",
        ],
        "--optimizer",
    );
    refused(
        &["train", "--data", s(&missing), "--out", s(&out)],
        "--data",
    );
    refused(
        &[
            "train",
            "--data",
            d,
            "--out",
            s(&out),
            "--config",
            s(&missing),
        ],
        "--config",
    );
    refused(
        &[
            "train",
            "--data",
            d,
            "--out",
            s(&out),
            "--pretrained",
            s(&missing),
        ],
        "--pretrained",
    );
    refused(&["predict", "--model", d, "--top-k", "0"], "--top-k");
    refused(
        &["predict", "--model", d, "--batch-size", "0"],
        "--batch-size",
    );
    refused(&["predict", "--model", s(&missing)], "--model");
    refused(
        &[
            "evaluate",
            "--model",
            d,
            "--data",
            d,
            "--out",
            s(&out),
            "--top-k",
            "1,0",
        ],
        "--top-k",
    );
    refused(
        &[
            "evaluate",
            "--model",
            d,
            "--data",
            d,
            "--out",
            s(&out),
            "--split",
            "dev",
        ],
        "--split",
    );
}

#[test]
fn a_flag_that_conflicts_with_the_config_is_blamed() {
    let dir = tempfile::tempdir().unwrap();
    // `--lr` below the file's minimum learning rate: the flag is at fault.
    let config = write_config(
        dir.path(),
        "schedule: {kind: cosine, minLearningRate: 0.01}\n",
    );
    let stderr = train(dir.path(), &["--config", s(&config), "--lr", "0.001"]);
    assert!(
        stderr.contains("--lr: must be at least schedule.minLearningRate (0.01)"),
        "{stderr}"
    );
    // Transfer learning asked for by a flag, for a model without pretrained weights.
    let weights = dir.path().join("weights.safetensors");
    std::fs::write(&weights, "").unwrap();
    let stderr = train(dir.path(), &["--model", "cnn", "--pretrained", s(&weights)]);
    assert!(stderr.contains("--model: "), "{stderr}");
    let config = write_config(dir.path(), "model: {kind: cnn}\n");
    let stderr = train(
        dir.path(),
        &["--config", s(&config), "--pretrained", s(&weights)],
    );
    assert!(stderr.contains("--pretrained: "), "{stderr}");
    assert!(!stderr.contains("train.yaml"), "{stderr}");
}
