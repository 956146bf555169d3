//! Transfer learning and fine-tuning with EfficientNet-Lite0 (`torch` feature): the pretrained
//! backbone stays untouched when frozen (weights and batch-norm statistics), a new head learns
//! the classes, and fine-tuning moves the backbone by its scaled learning rate. Needs the
//! converted weights (`scripts/pretrained`, run by `make setup`).

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

fn pretrained() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../build/pretrained/efficientnet-lite0.safetensors");
    assert!(
        path.is_file(),
        "{} is missing: run `make setup` (scripts/pretrained converts the weights)",
        path.display()
    );
    path
}

/// Two classes of 32x32 RGB images: reddish and bluish, with noise.
fn colour_dataset(dir: &Path) -> PathBuf {
    let source = dir.join("images");
    for (class, base) in [("red", [200u8, 40, 40]), ("blue", [40u8, 60, 200])] {
        for i in 0..30u32 {
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let n = ((i * 37 + x * 11 + y * 5) % 50) as u8;
                image::Rgb([base[0] / 2 + n, base[1] / 2 + n, base[2] / 2 + n])
            });
            let path = source.join(class).join(format!("{i}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            img.save(path).unwrap();
        }
    }
    let out = dir.join("dataset");
    let run = common::ingest(&source, &out, &["--format", "folder"]);
    assert!(run.status.success(), "{}", stderr(&run));
    out
}

fn stderr(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toucan-worker"))
        .arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args([
            "--model",
            "efficientnet-lite0",
            "--device",
            "cpu",
            "--threads",
            "2",
        ])
        .args(["--batch-size", "16", "--seed", "5"])
        .args(extra)
        .env_remove("TOUCAN_API")
        .env_remove("TOUCAN_METRICS_FILE")
        .output()
        .unwrap()
}

fn tensors(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Mean absolute difference over the backbone's convolution kernels.
fn backbone_shift(model: &Path, reference: &HashMap<String, Tensor>) -> f64 {
    let (mut sum, mut n) = (0.0, 0i64);
    for (name, t) in tensors(&model.join("model.safetensors")) {
        let Some(key) = name.strip_prefix("backbone.") else {
            continue;
        };
        if key.ends_with("conv.weight") || key.ends_with("_conv_stem.weight") {
            sum += f64::try_from((&t - &reference[key]).abs().sum(tch::Kind::Double)).unwrap();
            n += t.numel() as i64;
        }
    }
    assert!(n > 0, "no backbone kernels in {}", model.display());
    sum / n as f64
}

#[test]
fn transfer_learning_then_fine_tuning_with_a_scaled_backbone_rate() {
    let weights = pretrained();
    let imagenet = tensors(&weights);
    let work = tempfile::tempdir().unwrap();
    let data = colour_dataset(work.path());

    // Transfer learning: frozen backbone, new head.
    let head_only = work.path().join("head-only");
    let run = train(
        &data,
        &head_only,
        &[
            "--pretrained",
            weights.to_str().unwrap(),
            "--freeze-backbone",
            "--epochs",
            "2",
            "--lr",
            "0.01",
        ],
    );
    assert!(run.status.success(), "{}", stderr(&run));
    let trained = tensors(&head_only.join("model.safetensors"));
    let mut backbone = 0;
    for (name, t) in &trained {
        if let Some(key) = name.strip_prefix("backbone.") {
            // Weights and running statistics alike: the frozen backbone is the ImageNet one.
            assert!(t.equal(&imagenet[key]), "{name} changed although frozen");
            backbone += 1;
        }
    }
    assert!(backbone > 200, "{backbone} backbone tensors");
    assert_eq!(trained["head.weight"].size(), [2, 1280]);
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(head_only.join("metrics.json")).unwrap()).unwrap();
    assert!(
        metrics["val_accuracy"].as_f64().unwrap() >= 0.8,
        "ImageNet features separate red from blue: {metrics}"
    );
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(head_only.join("model.json")).unwrap()).unwrap();
    assert_eq!(
        card["normalization"]["mean"],
        serde_json::json!([0.5, 0.5, 0.5])
    );

    // Fine-tuning from the transferred model: a tenth of the learning rate moves the backbone
    // far less than the full rate does (Adam's steps scale with the rate).
    let shift = |scale: &str| {
        let out = work.path().join(format!("finetune-{scale}"));
        let run = train(
            &data,
            &out,
            &[
                "--init-from",
                head_only.to_str().unwrap(),
                "--backbone-lr-scale",
                scale,
                "--epochs",
                "1",
                "--lr",
                "0.001",
            ],
        );
        assert!(run.status.success(), "{}", stderr(&run));
        backbone_shift(&out, &imagenet)
    };
    let (slow, full) = (shift("0.1"), shift("1"));
    assert!(slow > 0.0, "fine-tuning trains the backbone");
    assert!(slow < 0.5 * full, "scaled {slow} vs full {full}");
}

#[test]
fn a_missing_pretrained_file_is_named() {
    let work = tempfile::tempdir().unwrap();
    let data = colour_dataset(work.path());
    let out = work.path().join("m");
    // From a flag: refused while parsing the arguments, naming the flag.
    let run = train(&data, &out, &["--pretrained", "nowhere.safetensors"]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run).contains("'nowhere.safetensors' for '--pretrained"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists());
    // From the config file: naming the file and the field.
    let config = work.path().join("train.yaml");
    std::fs::write(
        &config,
        "model: {kind: efficientnet-lite0}\ntransfer: {pretrained: nowhere.safetensors}\n",
    )
    .unwrap();
    let run = train(&data, &out, &["--config", config.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(
        stderr(&run)
            .contains("train.yaml: transfer.pretrained: nowhere.safetensors does not exist"),
        "{}",
        stderr(&run)
    );
    assert!(!out.exists());
}
