//! The fashion-mnist example on the real data: it succeeds, learns, exports, and a second
//! run is served entirely from the cache. Its steps run `toucan-worker` from PATH, which must
//! be the libtorch build (`make test` puts its dev build first), and read Debian's
//! `dataset-fashion-mnist` (installed by `scripts/setup`). One epoch of the CNN keeps it short.

mod common;

use common::{Sandbox, cached, step};

/// The example trains for one epoch here; the accuracy it must reach in that epoch.
const PARAMS: [&str; 2] = ["-p", "epochs=1"];

#[test]
fn fashion_mnist_example_runs_then_comes_from_the_cache() {
    let device = std::process::Command::new("toucan-worker")
        .args(["device", "--device", "cpu"])
        .env("PATH", common::step_path())
        .output();
    assert!(
        device.as_ref().is_ok_and(|o| o.status.success()),
        "the example needs toucan-worker built with the `torch` feature first on PATH \
         (`make build-torch` builds it; `make test` passes it in TOUCAN_TEST_STEP_PATH): {device:?}"
    );
    let sb = Sandbox::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/fashion-mnist/pipeline.yaml")
        .canonicalize()
        .unwrap();
    let (code, first, stderr) = sb.run_json(&manifest, &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(first["phase"], "Succeeded");
    let accuracy: f64 = step(&first, "evaluate")["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.85,
        "test accuracy {accuracy} after one epoch of the CNN"
    );
    assert_eq!(
        step(&first, "export")["phase"],
        "Succeeded",
        "accuracy clears the gate"
    );
    assert_eq!(step(&first, "summary")["phase"], "Succeeded");

    let (code, second, stderr) = sb.run_json(&manifest, &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    for s in second["steps"].as_array().unwrap() {
        assert_eq!(s["cached"], true, "{s:#}");
    }

    // Raising the bar above the achieved accuracy skips only the export: the gate is
    // evaluated on cached outputs, the rest hits.
    let (code, third, _) = sb.run_json(&manifest, &["-p", "epochs=1", "-p", "min_accuracy=0.99"]);
    assert_eq!(code, 0);
    assert_eq!(step(&third, "export")["phase"], "Skipped");
    assert!(cached(&third, "train"));
}

#[test]
fn transfer_learning_example_fine_tunes_the_pretrained_network() {
    let sb = Sandbox::new();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/transfer-learning/pipeline.yaml")
        .canonicalize()
        .unwrap();
    // A smaller version of the example: 40 images per class at 64x64, one epoch per stage.
    let params = [
        "-p",
        "per_class=40",
        "-p",
        "size=64x64",
        "-p",
        "transfer_epochs=1",
        "-p",
        "finetune_epochs=1",
    ];
    let (code, run, stderr) = sb.run_json(&manifest, &params);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(run["phase"], "Succeeded");
    for name in ["transfer", "finetune", "evaluate"] {
        let accuracy: f64 = step(&run, name)["outputs"]["params"]["accuracy"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // Three classes: chance is 1/3.
        assert!(accuracy > 0.5, "{name}: accuracy {accuracy}");
    }
    assert_eq!(step(&run, "export")["phase"], "Succeeded");
}

/// The distributed-training example: its pipeline (ingest, a two-replica train step,
/// evaluate) and its TrainingJob, one epoch each on the real data.
#[test]
fn distributed_training_example_trains_with_two_replicas() {
    let _ = common::worker_bin();
    let sb = Sandbox::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/distributed-training")
        .canonicalize()
        .unwrap();
    let (code, run, stderr) = sb.run_json(&example.join("pipeline.yaml"), &PARAMS);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("train: 2 replicas started"), "{stderr}");
    let accuracy: f64 = step(&run, "evaluate")["outputs"]["params"]["accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.85,
        "test accuracy {accuracy} after one epoch of two replicas"
    );

    // The job, on a dataset ingested beside it as its header says.
    let job = sb.write(
        "job/job.yaml",
        &std::fs::read_to_string(example.join("job.yaml")).unwrap(),
    );
    let ingest = std::process::Command::new("toucan-worker")
        .args([
            "ingest",
            "--source",
            "/usr/share/datasets/fashion-mnist",
            "--out",
        ])
        .arg(sb.path("job/dataset"))
        .env("PATH", common::step_path())
        .output()
        .unwrap();
    assert!(ingest.status.success(), "{ingest:?}");
    let (code, run, stderr) = sb.run_json(&job, &[]);
    assert_eq!(code, 0, "{stderr}");
    let val_accuracy: f64 = step(&run, "train")["outputs"]["params"]["val_accuracy"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(val_accuracy > 0.85, "validation accuracy {val_accuracy}");
}
