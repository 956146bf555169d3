//! `toucan-worker device`, `train`, `evaluate`, `export` and `predict` on libtorch (only with
//! the `torch` feature, which `make test` builds). The binary runs without LD_LIBRARY_PATH, so
//! these also prove that it finds libtorch through its RUNPATH.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bars_dataset, train_command, worker};
use serde_json::Value;

#[test]
fn device_reports_what_libtorch_sees() {
    let run = worker(&["device".as_ref(), "--device".as_ref(), "cpu".as_ref()]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: Value = serde_json::from_slice(&run.stdout).unwrap();
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

fn stderr(run: &Output) -> String {
    String::from_utf8_lossy(&run.stderr).into_owned()
}

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    train_command(data, out, extra).output().unwrap()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The epoch lines of a metrics.jsonl without the timing fields, which differ between runs.
fn epochs_without_timing(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.get("epoch").is_some())
        .map(|mut v| {
            let o = v.as_object_mut().unwrap();
            o.remove("images_per_sec");
            o.remove("seconds");
            v
        })
        .collect()
}

fn final_without_timing(out: &Path) -> Value {
    let mut v = json_file(&out.join("metrics.json"));
    v.as_object_mut().unwrap().remove("train_seconds");
    v
}

#[test]
fn every_architecture_learns_and_a_seed_reproduces_the_run() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 600);
    for model in ["linear", "dnn", "cnn", "resnet", "mobilenetv2"] {
        let args = [
            "--model",
            model,
            "--epochs",
            "3",
            "--batch-size",
            "32",
            "--lr",
            "0.005",
            "--seed",
            "3",
        ];
        let out = work.path().join(format!("{model}-a"));
        let run = train(&data, &out, &args);
        assert!(run.status.success(), "{model}: {}", stderr(&run));
        let last = json_file(&out.join("metrics.json"));
        assert!(
            last["accuracy"].as_f64().unwrap() > 0.9,
            "{model} should learn bars: {last}"
        );
        assert_eq!(last["model"], model);
        let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let epochs = epochs_without_timing(&lines);
        assert_eq!(epochs.len(), 3);
        for key in ["loss", "accuracy", "val_loss", "val_accuracy", "lr"] {
            assert!(epochs[2][key].is_number(), "{key} in {}", epochs[2]);
        }
        let card = json_file(&out.join("model.json"));
        assert_eq!(card["format"], "toucan.model/v1");
        assert_eq!(
            card["classes"],
            serde_json::json!(["top", "middle", "bottom"])
        );
        // The checkpoints beside --out are removed once the model is written.
        assert!(!work.path().join(format!("{model}-a.checkpoints")).exists());

        let again = work.path().join(format!("{model}-b"));
        let run = train(&data, &again, &args);
        assert!(run.status.success(), "{model}: {}", stderr(&run));
        assert_eq!(
            epochs_without_timing(&std::fs::read_to_string(again.join("metrics.jsonl")).unwrap()),
            epochs,
            "{model}: same seed, same metrics"
        );
        assert_eq!(final_without_timing(&again), final_without_timing(&out));
        // Not just the metrics: the whole model directory, byte for byte, so the pipeline
        // cache keeps everything downstream when training is repeated.
        assert_eq!(common::tree(&again), common::tree(&out), "{model}");
    }
}

/// Everything that keeps state across batches: SGD momentum, a warm-up + cosine schedule,
/// L2, dropout (dnn) and augmentation.
const STATEFUL: [&str; 22] = [
    "--model",
    "dnn",
    "--optimizer",
    "sgd",
    "--momentum",
    "0.9",
    "--lr",
    "0.05",
    "--schedule",
    "cosine",
    "--warmup-epochs",
    "1",
    "--l2",
    "0.0001",
    "--flip",
    "--rotation",
    "10",
    "--epochs",
    "6",
    "--batch-size",
    "8",
    "--seed=11",
];

#[test]
fn sigterm_writes_a_checkpoint_and_resuming_gives_the_uninterrupted_result() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 2400);
    let straight = work.path().join("straight");
    let run = train(&data, &straight, &STATEFUL);
    assert!(run.status.success(), "{}", stderr(&run));

    let out = work.path().join("stopped");
    let ckpt = work.path().join("ckpt");
    let mut args: Vec<&str> = STATEFUL.to_vec();
    args.extend(["--checkpoint-dir", ckpt.to_str().unwrap()]);
    let mut child = train_command(&data, &out, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once the first epoch is reported, i.e. somewhere in the next ones.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"epoch\":1"), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!out.exists(), "no model before the run finished");
    assert!(ckpt.join("latest").is_file());

    args.push("--resume");
    let resumed = train(&data, &out, &args);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("resuming from"));
    assert_eq!(
        epochs_without_timing(&std::fs::read_to_string(out.join("metrics.jsonl")).unwrap()),
        epochs_without_timing(&std::fs::read_to_string(straight.join("metrics.jsonl")).unwrap()),
    );
    assert_eq!(final_without_timing(&out), final_without_timing(&straight));
}

#[test]
fn a_killed_run_resumes_from_its_last_periodic_checkpoint() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 1200);
    // The same settings on a CNN, for 3 epochs.
    let mut args: Vec<&str> = STATEFUL
        .iter()
        .map(|&a| match a {
            "dnn" => "cnn",
            "6" => "3",
            a => a,
        })
        .collect();
    let straight = work.path().join("straight");
    let run = train(&data, &straight, &args);
    assert!(run.status.success(), "{}", stderr(&run));

    let out = work.path().join("killed");
    let ckpt = work.path().join("ckpt");
    args.extend([
        "--checkpoint-every-steps",
        "7",
        "--checkpoint-dir",
        ckpt.to_str().unwrap(),
    ]);
    let mut child = train_command(&data, &out, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ckpt.join("latest").exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "finished too early");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists());

    args.push("--resume");
    let resumed = train(&data, &out, &args);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(final_without_timing(&out), final_without_timing(&straight));
}

/// A tuning study's promoted trial: the first run keeps its checkpoints, the second asks
/// for more epochs and continues from the first's last epoch instead of starting over.
#[test]
fn a_kept_checkpoint_continues_to_a_larger_epoch_count() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 300);
    let ckpt = work.path().join("ckpt");
    let ckpt_arg = ckpt.to_str().unwrap();
    let first = train(
        &data,
        &work.path().join("first"),
        &[
            "--epochs",
            "1",
            "--checkpoint-dir",
            ckpt_arg,
            "--keep-checkpoints",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(ckpt.join("latest").exists(), "the checkpoints are kept");
    let second = train(
        &data,
        &work.path().join("second"),
        &["--epochs", "3", "--checkpoint-dir", ckpt_arg, "--resume"],
    );
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("(epoch 2, batch 0)"),
        "{}",
        stderr(&second)
    );
    let metrics = json_file(&work.path().join("second/metrics.json"));
    assert_eq!(metrics["epochs"], 3, "{metrics}");
    assert!(
        !ckpt.exists(),
        "removed after success without --keep-checkpoints"
    );
}

#[test]
fn a_checkpoint_of_another_config_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 300);
    let ckpt = work.path().join("ckpt");
    let ckpt_arg = ckpt.to_str().unwrap();
    // A checkpoint every step, then kill: a checkpoint is certainly left behind.
    let first = work.path().join("first");
    let mut child = train_command(
        &data,
        &first,
        &[
            "--checkpoint-every-steps",
            "1",
            "--checkpoint-dir",
            ckpt_arg,
        ],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    while !ckpt.join("latest").exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let run = train(
        &data,
        &work.path().join("second"),
        &["--lr", "0.5", "--checkpoint-dir", ckpt_arg, "--resume"],
    );
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("different training config"));
}

#[test]
fn early_stopping_ends_the_run_and_restores_the_best_epoch() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 300);
    let config = work.path().join("train.yaml");
    // No later epoch can beat the first by 10: the run stops after 1 + patience epochs.
    std::fs::write(
        &config,
        "model: {kind: linear}\nepochs: 10\nearlyStopping: {metric: val_accuracy, patience: 2, minDelta: 10}\n",
    )
    .unwrap();
    let out = work.path().join("model");
    let run = train(&data, &out, &["--config", config.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let last = json_file(&out.join("metrics.json"));
    assert_eq!(last["epochs"], 3, "{last}");
    assert_eq!(last["stopped_early"], true);
    assert_eq!(last["best_epoch"], 1);
    let epochs =
        epochs_without_timing(&std::fs::read_to_string(out.join("metrics.jsonl")).unwrap());
    assert_eq!(last["val_accuracy"], epochs[0]["val_accuracy"]);
}

#[test]
fn config_errors_name_the_file_and_field_and_write_nothing() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 30);
    let config = work.path().join("train.yaml");
    let out = work.path().join("model");
    for (text, expected) in [
        ("optimizer: {kind: sgd, momentun: 0.9}\n", "optimizer"),
        ("epochs: -3\n", "epochs"),
        ("augmentation: {rotation: 720}\n", "augmentation.rotation"),
        ("model: {kind: resnet, blocks: [1, 1]}\n", "model.blocks"),
    ] {
        std::fs::write(&config, text).unwrap();
        let run = train(&data, &out, &["--config", config.to_str().unwrap()]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(2), "{text}: {err}");
        assert!(err.contains("train.yaml: "), "{text}: {err}");
        assert!(err.contains(expected), "{text}: {err}");
        assert!(!out.exists());
    }
    let run = train(&data, &out, &["--write-param", "accurracy=x"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("accurracy"));
}

/// One request seen by [`recording_server`]: request line, authorization header, JSON body.
type Recorded = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A one-thread HTTP server that answers 204 to everything and records each request.
fn recording_server() -> (String, Recorded) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            loop {
                let mut head = Vec::new();
                let mut line = String::new();
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                if head.is_empty() {
                    break;
                }
                let header = |name: &str| {
                    head.iter()
                        .find_map(|h| {
                            let (k, v) = h.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                let length: usize = header("content-length").parse().unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                record.lock().unwrap().push((
                    head[0].clone(),
                    header("authorization"),
                    serde_json::from_slice(&body).unwrap_or(Value::Null),
                ));
                writer
                    .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    .unwrap();
            }
        }
    });
    (url, seen)
}

#[test]
fn metrics_go_to_the_metrics_file_the_api_and_the_output_params() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 300);
    let (api, requests) = recording_server();
    let out = work.path().join("model");
    let metrics_file = work.path().join("launcher-metrics.jsonl");
    let accuracy = work.path().join("accuracy");
    let epochs = work.path().join("epochs");
    let run = train_command(
        &data,
        &out,
        &[
            "--model",
            "linear",
            "--epochs",
            "2",
            "--write-param",
            &format!("accuracy={}", accuracy.display()),
            "--write-param",
            &format!("epochs={}", epochs.display()),
        ],
    )
    .env("TOUCAN_API", &api)
    .env("TOUCAN_RUN_ID", "run 1")
    .env("TOUCAN_STEP", "train")
    .env("TOUCAN_ATTEMPT", "2")
    .env("TOUCAN_API_TOKEN", "secret-token")
    .env("TOUCAN_METRICS_FILE", &metrics_file)
    .output()
    .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));

    let last = json_file(&out.join("metrics.json"));
    let written: f64 = std::fs::read_to_string(&accuracy).unwrap().parse().unwrap();
    assert_eq!(written, last["accuracy"].as_f64().unwrap());
    assert_eq!(std::fs::read_to_string(&epochs).unwrap(), "2");
    // The launcher's file has the timings; the model's copy is the same lines without them.
    let timed = std::fs::read_to_string(&metrics_file).unwrap();
    assert!(timed.contains("images_per_sec"));
    let untimed = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(!untimed.contains("images_per_sec") && !untimed.contains("seconds"));
    assert_eq!(
        epochs_without_timing(&timed),
        epochs_without_timing(&untimed)
    );

    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 2, "one push per epoch: {requests:?}");
    for (i, (line, auth, body)) in requests.iter().enumerate() {
        assert_eq!(
            line,
            "PUT /api/v1/runs/run%201/steps/train/metrics HTTP/1.1"
        );
        assert_eq!(auth, "Bearer secret-token");
        assert_eq!(body["attempt"], 2);
        // The whole series every time: a repeated push replaces, never duplicates.
        assert_eq!(body["epochs"].as_array().unwrap().len(), i + 1);
    }
    assert!(!stderr(&run).contains("secret-token"));
}

#[test]
fn an_unreachable_api_does_not_fail_training() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 60);
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = train_command(&data, &work.path().join("m"), &["--epochs", "1"])
        .env("TOUCAN_API", format!("http://127.0.0.1:{port}"))
        .env("TOUCAN_RUN_ID", "r")
        .env("TOUCAN_STEP", "s")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stderr(&run).contains("could not push metrics"));
}

fn lines_json(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn export_predict_and_evaluate_agree_with_training() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 600);
    let trained = work.path().join("trained");
    let run = train(&data, &trained, &["--model", "cnn", "--epochs", "2"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let accuracy = json_file(&trained.join("metrics.json"))["accuracy"]
        .as_f64()
        .unwrap();

    // A pipeline's output path has no extension: the file must load whatever its name.
    let exported = work.path().join("exported-model");
    let run = worker(&[
        "export".as_ref(),
        "--model".as_ref(),
        trained.as_os_str(),
        "--out".as_ref(),
        exported.as_os_str(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));

    // evaluate on the exported file gives training's test accuracy.
    let report_dir = work.path().join("report");
    let acc_param = work.path().join("acc");
    let run = worker(&[
        "evaluate".as_ref(),
        "--model".as_ref(),
        exported.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        report_dir.as_os_str(),
        "--top-k".as_ref(),
        "1,2".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--write-param".as_ref(),
        format!("accuracy={}", acc_param.display()).as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report = json_file(&report_dir.join("report.json"));
    let evaluated = report["overall"]["accuracy"].as_f64().unwrap();
    assert!(
        (evaluated - accuracy).abs() < 1e-12,
        "{evaluated} vs {accuracy}"
    );
    let param: f64 = std::fs::read_to_string(&acc_param)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(param, evaluated);
    assert_eq!(report["overall"]["top_k_accuracy"][1]["k"], 2);
    let png = std::fs::read(report_dir.join("confusion_matrix.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // predict over the dataset: its accuracy is the same.
    let run = worker(&[
        "predict".as_ref(),
        "--model".as_ref(),
        exported.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let predictions = lines_json(&run.stdout);
    let hits = predictions
        .iter()
        .filter(|p| p["class"] == p["truth"])
        .count();
    assert!((hits as f64 / predictions.len() as f64 - accuracy).abs() < 1e-12);

    // predict on image files: a PNG of a record gets the record's prediction, and a larger
    // RGB JPEG of the same picture is converted and resized as the card says.
    let dataset = toucan_worker::dataset::Dataset::open(&data).unwrap();
    let test = dataset.read_split("test").unwrap();
    let pixels: Vec<u8> = test.pixels[..144].to_vec();
    let png_path = work.path().join("record0.png");
    image::GrayImage::from_raw(12, 12, pixels.clone())
        .unwrap()
        .save(&png_path)
        .unwrap();
    let big = image::DynamicImage::ImageLuma8(image::GrayImage::from_raw(12, 12, pixels).unwrap())
        .resize_exact(48, 48, image::imageops::FilterType::Nearest)
        .to_rgb8();
    let jpg_path = work.path().join("record0.jpg");
    big.save(&jpg_path).unwrap();
    let run = worker(&[
        "predict".as_ref(),
        "--model".as_ref(),
        trained.as_os_str(),
        png_path.as_os_str(),
        jpg_path.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let files = lines_json(&run.stdout);
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["class"], predictions[0]["class"]);
    assert!(
        (files[0]["confidence"].as_f64().unwrap() - predictions[0]["confidence"].as_f64().unwrap())
            .abs()
            < 1e-6
    );
    assert_eq!(files[1]["class"], predictions[0]["class"]);

    // The latency benchmark prints one JSON object.
    let run = worker(&[
        "predict".as_ref(),
        "--model".as_ref(),
        exported.as_os_str(),
        "--data".as_ref(),
        data.as_os_str(),
        "--benchmark".as_ref(),
        "5".as_ref(),
        "--batch-size".as_ref(),
        "16".as_ref(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let bench: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(bench["benchmark"]["batch_size"], 16);
    assert!(bench["benchmark"]["single_ms"]["p50"].as_f64().unwrap() > 0.0);

    // A file that is not a model is refused with its name.
    let run = worker(&[
        "predict".as_ref(),
        "--model".as_ref(),
        png_path.as_os_str(),
        png_path.as_os_str(),
    ]);
    assert_eq!(run.status.code(), Some(2));
    assert!(stderr(&run).contains("record0.png"), "{}", stderr(&run));
}

#[test]
fn a_missing_dataset_is_an_input_error_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("model");
    let run = train(&work.path().join("nope"), &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", stderr(&run));
    assert!(stderr(&run).contains("nope"));
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

#[test]
fn labelled_tables_join_the_training_split_of_one_run() {
    let work = tempfile::tempdir().unwrap();
    let data = bars_dataset(work.path(), 30);
    let header: Vec<String> = std::iter::once("request_id,label".to_string())
        .chain((1..=144).map(|i| format!("pixel{i}")))
        .collect();
    let row = |id: &str, class: &str| {
        let pixels: Vec<String> = (0..144).map(|i| ((i * 7) % 256).to_string()).collect();
        format!("{id},{class},{}", pixels.join(","))
    };
    let table = work.path().join("window.csv");
    std::fs::write(
        &table,
        format!(
            "{}\n{}\n{}\n",
            header.join(","),
            row("r1", "top"),
            row("r2", "bottom")
        ),
    )
    .unwrap();
    let run = train_command(
        &data,
        &work.path().join("model"),
        &[
            "--model",
            "linear",
            "--epochs",
            "1",
            "--add-train",
            table.to_str().unwrap(),
            "--add-train",
            "",
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "2 records of {} join the training split",
            table.display()
        )),
        "{stderr}"
    );

    // A class the dataset lacks is refused with the table's line, and nothing is written.
    std::fs::write(
        &table,
        format!("{}\n{}\n", header.join(","), row("r3", "zebra")),
    )
    .unwrap();
    let out = work.path().join("refused");
    let run = train_command(
        &data,
        &out,
        &[
            "--model",
            "linear",
            "--epochs",
            "1",
            "--add-train",
            table.to_str().unwrap(),
        ],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("window.csv") && stderr.contains("line 2") && stderr.contains("zebra"),
        "{stderr}"
    );
    assert!(!out.exists());
}
