//! The pretrained EfficientNet-Lite0 (only with the `torch` feature: `make test`): the
//! converted ImageNet weights fill the Rust model exactly, classify foolbox's 20 labelled
//! ImageNet samples, and carry over to a backbone with a new head. The files come from
//! `scripts/pretrained` (run by `make setup`); without them these tests fail.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use toucan_worker::ml::efficientnet::{
    self, Backbone, EfficientNetLite0, FEATURES, Head, IMAGENET_CLASSES, INPUT_SIZE,
};

/// foolbox's samples are labelled so that a plain PyTorch forward pass of these weights gets
/// 17 of the 20 right (with the same input scaling).
const MIN_TOP1: usize = 17;
const SAMPLES: usize = 20;

/// A file or directory made by `scripts/pretrained`; its absence fails the test.
fn pretrained(name: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = workspace.join("build/pretrained").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (scripts/pretrained makes it)",
        path.display()
    );
    path
}

fn weights() -> PathBuf {
    pretrained("efficientnet-lite0.safetensors")
}

fn imagenet_model() -> (nn::VarStore, EfficientNetLite0) {
    let mut vs = nn::VarStore::new(Device::Cpu);
    let model = EfficientNetLite0::new(&vs.root(), IMAGENET_CLASSES);
    vs.load(weights()).unwrap();
    (vs, model)
}

fn shapes(tensors: impl IntoIterator<Item = (String, Tensor)>) -> BTreeMap<String, Vec<i64>> {
    tensors.into_iter().map(|(n, t)| (n, t.size())).collect()
}

#[test]
fn the_converted_file_fills_exactly_the_model_variables() {
    let (vs, _model) = imagenet_model();
    let file = shapes(Tensor::read_safetensors(weights()).unwrap());
    let model = shapes(vs.variables());
    let only_in_file: Vec<_> = file.keys().filter(|n| !model.contains_key(*n)).collect();
    let only_in_model: Vec<_> = model.keys().filter(|n| !file.contains_key(*n)).collect();
    assert!(
        only_in_file.is_empty(),
        "not in the model: {only_in_file:?}"
    );
    assert!(
        only_in_model.is_empty(),
        "not in the file: {only_in_model:?}"
    );
    assert_eq!(file, model);
    let values: i64 = model.values().map(|s| s.iter().product::<i64>()).sum();
    // The note's count of the state dict's values.
    assert_eq!(values, 4_694_024);
}

/// `imagenet_<index>_<class>.jpg` -> class.
fn label(path: &Path) -> i64 {
    let stem = path.file_stem().unwrap().to_str().unwrap();
    stem.rsplit('_').next().unwrap().parse().unwrap()
}

#[test]
fn classifies_the_imagenet_samples() {
    let dir = pretrained("imagenet-samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    assert_eq!(files.len(), SAMPLES, "samples in {}", dir.display());

    let (_vs, model) = imagenet_model();
    let inputs: Vec<Tensor> = files
        .iter()
        .map(|f| efficientnet::image_input(&image::open(f).unwrap()))
        .collect();
    let batch = Tensor::stack(&inputs, 0);
    assert_eq!(batch.size(), [SAMPLES as i64, 3, INPUT_SIZE, INPUT_SIZE]);
    let start = Instant::now();
    let probs = tch::no_grad(|| model.forward_t(&batch, false)).softmax(-1, Kind::Float);
    let elapsed = start.elapsed();
    let (top_p, top_class) = probs.topk(5, -1, true, true);

    let (mut top1, mut top5) = (0, 0);
    println!(
        "{:<22} {:>5} {:>5} {:>6}  top-5",
        "image", "label", "top-1", "p"
    );
    for (i, file) in files.iter().enumerate() {
        let i = i as i64;
        let label = label(file);
        let classes = Vec::<i64>::try_from(top_class.get(i)).unwrap();
        let p = top_p.get(i).double_value(&[0]);
        let hit1 = classes[0] == label;
        let hit5 = classes.contains(&label);
        top1 += usize::from(hit1);
        top5 += usize::from(hit5);
        let mark = if hit1 {
            ""
        } else if hit5 {
            "  (top-5 only)"
        } else {
            "  (miss)"
        };
        println!(
            "{:<22} {label:>5} {:>5} {p:>6.3}  {classes:?}{mark}",
            file.file_name().unwrap().to_string_lossy(),
            classes[0],
        );
    }
    println!("top-1 {top1}/{SAMPLES}, top-5 {top5}/{SAMPLES}, forward pass {elapsed:.2?}");
    assert!(
        top1 >= MIN_TOP1,
        "top-1 {top1}/{SAMPLES}, expected at least {MIN_TOP1}"
    );
}

#[test]
fn a_new_head_on_the_pretrained_backbone() {
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = Backbone::new(&(vs.root() / "backbone"));
    backbone.load_imagenet(&weights()).unwrap();
    let head = Head::new(&(vs.root().set_group(1) / "head"), 10);
    let model = EfficientNetLite0::from_parts(backbone, head);

    let zeros = Tensor::zeros([2, 3, INPUT_SIZE, INPUT_SIZE], (Kind::Float, Device::Cpu));
    let logits = tch::no_grad(|| model.forward_t(&zeros, false));
    assert_eq!(logits.size(), [2, 10]);
    assert_eq!(logits.kind(), Kind::Float);

    // The same embedding as the ImageNet model's: every backbone tensor was copied, whatever
    // the path it lives under.
    let (_imagenet_vs, imagenet) = imagenet_model();
    let input =
        Tensor::rand([2, 3, INPUT_SIZE, INPUT_SIZE], (Kind::Float, Device::Cpu)) * 2.0 - 1.0;
    let ours = tch::no_grad(|| model.features(&input, false));
    let theirs = tch::no_grad(|| imagenet.features(&input, false));
    assert_eq!(ours.size(), [2, FEATURES]);
    assert!(ours.allclose(&theirs, 1e-5, 1e-5, false));

    // Only the head is in group 1, ready for its own learning rate.
    let head_vars = vs
        .variables()
        .into_keys()
        .filter(|n| n.starts_with("head."))
        .count();
    assert_eq!(head_vars, 2);
}

#[test]
fn load_imagenet_refuses_a_file_that_does_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let file = Tensor::read_safetensors(weights()).unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let backbone = Backbone::new(&vs.root());
    let before = vs.variables()["_conv_stem.weight"].copy();
    let write = |name: &str, tensors: &[(String, Tensor)]| {
        let path = dir.path().join(name);
        Tensor::write_safetensors(tensors, &path).unwrap();
        path
    };

    let missing: Vec<_> = file
        .iter()
        .filter(|(n, _)| n != "_blocks.7._bn1.running_var")
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    let err = backbone
        .load_imagenet(&write("missing.safetensors", &missing))
        .unwrap_err();
    assert!(
        err.to_string().contains("_blocks.7._bn1.running_var"),
        "{err}"
    );

    let mut reshaped: Vec<_> = file
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    for (name, tensor) in &mut reshaped {
        if name == "_conv_head.weight" {
            *tensor = tensor.narrow(0, 0, 1000);
        }
    }
    let err = backbone
        .load_imagenet(&write("reshaped.safetensors", &reshaped))
        .unwrap_err();
    assert!(err.to_string().contains("_conv_head.weight"), "{err}");

    let mut foreign: Vec<_> = file
        .iter()
        .map(|(n, t)| (n.clone(), t.shallow_clone()))
        .collect();
    foreign.push((
        "_blocks.3._se_reduce.weight".into(),
        Tensor::zeros([4], (Kind::Float, Device::Cpu)),
    ));
    let err = backbone
        .load_imagenet(&write("foreign.safetensors", &foreign))
        .unwrap_err();
    assert!(
        err.to_string().contains("_blocks.3._se_reduce.weight"),
        "{err}"
    );

    // Nothing was copied by the refused loads.
    assert!(vs.variables()["_conv_stem.weight"].equal(&before));
}
