//! `toucan-worker serve` as a client sees it: a tiny model trained and exported once, then
//! served by the real binary on 127.0.0.1 (port 0, read back from its JSON line) and called
//! over TF Serving REST, the Open Inference Protocol's REST and gRPC, with its batching,
//! limits, metrics, payload samples and shutdown.

#![cfg(feature = "torch")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{bars_dataset, train_command, worker};
use proptest::prelude::*;
use serde_json::{Value, json};
use toucan_core::serving::SampleBatch;
use toucan_worker::serve::grpc::inference;
use toucan_worker::serve::grpc::inference::grpc_inference_service_client::GrpcInferenceServiceClient;

const NAME: &str = "bars";
/// The model's input: 12x12 grey.
const SIDE: usize = 12;

/// The model, the images and what `toucan-worker predict` says about them.
struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    /// Test records as PNG files (12x12 grey), then one 48x48 RGB JPEG that must be resized.
    files: Vec<PathBuf>,
    /// The PNGs' pixels.
    pixels: Vec<Vec<u8>>,
    /// Per file: the predicted class and every class's probability, by class name.
    expected: Vec<(String, BTreeMap<String, f64>)>,
    classes: Vec<String>,
    /// The first held-out record training embedded for the drift reference, and the first
    /// row of the reference embeddings the exported model carries.
    held_out: Vec<u8>,
    reference_embedding: Vec<f64>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = fixture_dir();
        let data = bars_dataset(dir.path(), 60);
        let trained = dir.path().join("trained");
        let run = train_command(
            &data,
            &trained,
            &["--model", "cnn", "--epochs", "1", "--seed", "3"],
        )
        .output()
        .unwrap();
        assert!(run.status.success(), "{}", stderr(&run.stderr));
        let model = dir.path().join("model.safetensors");
        let run = worker(&[
            "export".as_ref(),
            "--model".as_ref(),
            trained.as_os_str(),
            "--out".as_ref(),
            model.as_os_str(),
        ]);
        assert!(run.status.success(), "{}", stderr(&run.stderr));

        let dataset = toucan_worker::dataset::Dataset::open(&data).unwrap();
        let split = dataset.read_split("train").unwrap();
        let per = SIDE * SIDE;
        let held_out = ["valid", "test", "train"]
            .iter()
            .map(|name| dataset.read_split(name).unwrap())
            .find(|s| !s.labels.is_empty())
            .unwrap()
            .pixels[..per]
            .to_vec();
        let reference = toucan_core::monitoring::embedding::reference_from_safetensors(
            &std::fs::read(&model).unwrap(),
        )
        .unwrap()
        .expect("the exported model carries reference embeddings");
        let reference_embedding = reference.row(0).to_vec();
        let mut files = Vec::new();
        let mut pixels = Vec::new();
        for record in 0..4 {
            let p = split.pixels[record * per..(record + 1) * per].to_vec();
            let path = dir.path().join(format!("record{record}.png"));
            image::GrayImage::from_raw(SIDE as u32, SIDE as u32, p.clone())
                .unwrap()
                .save(&path)
                .unwrap();
            files.push(path);
            pixels.push(p);
        }
        let big = image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(SIDE as u32, SIDE as u32, pixels[0].clone()).unwrap(),
        )
        .resize_exact(48, 48, image::imageops::FilterType::Nearest)
        .to_rgb8();
        let jpeg = dir.path().join("big.jpg");
        big.save(&jpeg).unwrap();
        files.push(jpeg);

        let mut args = vec![
            "predict".as_ref(),
            "--model".as_ref(),
            model.as_os_str(),
            "--device".as_ref(),
            "cpu".as_ref(),
        ];
        args.extend(files.iter().map(|f| f.as_os_str()));
        let run = worker(&args);
        assert!(run.status.success(), "{}", stderr(&run.stderr));
        let expected = String::from_utf8(run.stdout)
            .unwrap()
            .lines()
            .map(|line| {
                let v: Value = serde_json::from_str(line).unwrap();
                let probs = v["top"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pair| {
                        (
                            pair[0].as_str().unwrap().to_string(),
                            pair[1].as_f64().unwrap(),
                        )
                    })
                    .collect();
                (v["class"].as_str().unwrap().to_string(), probs)
            })
            .collect();
        Fixture {
            _dir: dir,
            model,
            files,
            pixels,
            expected,
            classes: vec!["top".into(), "middle".into(), "bottom".into()],
            held_out,
            reference_embedding,
        }
    })
}

/// A directory for the fixture under the target's temporary directory. A static is never
/// dropped, so the directories of earlier runs (more than an hour old) are removed here.
fn fixture_dir() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(3600));
            if old
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("serve-fixture-")
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    tempfile::Builder::new()
        .prefix("serve-fixture-")
        .tempdir_in(root)
        .unwrap()
}

fn stderr(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `toucan-worker serve`, stopped (SIGKILL) when dropped.
struct Server {
    child: Child,
    rest: String,
    grpc: Option<String>,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        Server::start_model(fixture().model.as_os_str(), extra)
    }

    fn start_model(model: &std::ffi::OsStr, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_toucan-worker"))
            .arg("serve")
            .arg("--model")
            .arg(model)
            .args(["--name", NAME, "--listen", "127.0.0.1:0", "--device", "cpu"])
            .args(["--threads", "1"])
            .args(extra)
            .env_remove("LD_LIBRARY_PATH")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            let _ = child.wait();
            panic!("no JSON line ({e}): {line:?}; {}", log.lock().unwrap())
        });
        assert_eq!(ready["model"], NAME);
        assert_eq!(ready["version"], "1");
        Server {
            child,
            rest: format!("http://{}", ready["listening"].as_str().unwrap()),
            grpc: ready["grpc"].as_str().map(|a| format!("http://{a}")),
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.rest)
    }

    /// SIGTERM, then the exit status.
    fn terminate(mut self) -> ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `/metrics` until `ok` holds (the server's state has no event to wait on from
    /// outside), for 10 s at most.
    fn await_metrics(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.metrics();
            if ok(&text) {
                return;
            }
            assert!(Instant::now() < deadline, "waiting for {what}:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn metrics(&self) -> String {
        let (status, _, body) = get(&self.url("/metrics"));
        assert_eq!(status, 200);
        String::from_utf8(body).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample named exactly `name` (with its labels), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

type Reply = (u16, BTreeMap<String, String>, Vec<u8>);

fn reply(response: ureq::http::Response<ureq::Body>) -> Reply {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = response
        .into_body()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .unwrap();
    (status, headers, body)
}

fn get(url: &str) -> Reply {
    reply(agent().get(url).call().unwrap())
}

fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut request = agent().post(url).header("content-type", "application/json");
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    reply(request.send(body).unwrap())
}

fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let (status, _, bytes) = post(url, &[], body.to_string().as_bytes());
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", stderr(&bytes))),
    )
}

fn b64_file(path: &Path) -> String {
    B64.encode(std::fs::read(path).unwrap())
}

/// The record PNGs' pixels as nested [12][12][1] arrays.
fn nested(pixels: &[u8]) -> Value {
    Value::Array(
        pixels
            .chunks(SIDE)
            .map(|row| Value::Array(row.iter().map(|&p| json!([p])).collect()))
            .collect(),
    )
}

/// `class` and `probabilities` (in class order) of each prediction equal `predict`'s for the
/// files `which` (indices into the fixture's files).
fn assert_predict_agrees(which: &[usize], classes: &[String], probabilities: &[Vec<f64>]) {
    let f = fixture();
    assert_eq!(classes.len(), which.len());
    for ((&file, class), probs) in which.iter().zip(classes).zip(probabilities) {
        let (want_class, want_probs) = &f.expected[file];
        assert_eq!(class, want_class, "file {file}");
        assert_eq!(probs.len(), f.classes.len());
        for (name, p) in f.classes.iter().zip(probs) {
            let want = want_probs[name];
            assert!((p - want).abs() < 1e-5, "file {file} {name}: {p} vs {want}");
        }
    }
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The rows of a v1 row-format response.
fn v1_rows(body: &Value) -> (Vec<String>, Vec<Vec<f64>>) {
    let rows = body["predictions"].as_array().unwrap();
    (
        rows.iter()
            .map(|r| r["class"].as_str().unwrap().to_string())
            .collect(),
        rows.iter().map(|r| floats(&r["probabilities"])).collect(),
    )
}

/// Classes and probability rows of a v2 JSON response.
fn v2_outputs(body: &Value) -> (Vec<String>, Vec<Vec<f64>>) {
    let outputs = body["outputs"].as_array().unwrap();
    let by_name = |n: &str| outputs.iter().find(|o| o["name"] == n).unwrap();
    let probs = by_name("probabilities");
    let k = probs["shape"][1].as_u64().unwrap() as usize;
    let classes = by_name("class")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let rows = floats(&probs["data"])
        .chunks(k)
        .map(<[f64]>::to_vec)
        .collect();
    (classes, rows)
}

/// A server with the default flags and gRPC. Each test starts its own: a server kept in a
/// static would outlive the test binary.
fn main_server() -> Server {
    Server::start(&["--grpc-listen", "127.0.0.1:0"])
}

#[test]
fn v1_predict_agrees_with_predict_in_row_and_columnar_form() {
    let f = fixture();
    let server = &main_server();
    let all: Vec<usize> = (0..f.files.len()).collect();
    let instances: Vec<Value> = f
        .files
        .iter()
        .map(|p| json!({ "b64": b64_file(p) }))
        .collect();
    let (status, body) = post_json(
        &server.url(&format!("/v1/models/{NAME}:predict")),
        &json!({ "instances": instances }),
    );
    assert_eq!(status, 200, "{body}");
    let (classes, probs) = v1_rows(&body);
    assert_predict_agrees(&all, &classes, &probs);
    for row in body["predictions"].as_array().unwrap() {
        let label = row["label"].as_u64().unwrap() as usize;
        assert_eq!(row["class"], f.classes[label].as_str());
    }

    // Named version, pixel arrays (HxWxC, HxW and flat), and an instance under its input name.
    let pngs = [0, 1, 2];
    let p = &f.pixels;
    let instances = json!([
        nested(&p[0]),
        p[1].chunks(SIDE).collect::<Vec<_>>(),
        { "image": p[2] },
    ]);
    let (status, body) = post_json(
        &server.url(&format!("/v1/models/{NAME}/versions/1:predict")),
        &json!({ "instances": instances }),
    );
    assert_eq!(status, 200, "{body}");
    let (classes, probs) = v1_rows(&body);
    assert_predict_agrees(&pngs, &classes, &probs);

    // Columnar: answered in columns, as TF Serving does.
    let (status, body) = post_json(
        &server.url(&format!("/v1/models/{NAME}:predict")),
        &json!({ "inputs": { "image": instances_b64(&[0, 4]) } }),
    );
    assert_eq!(status, 200, "{body}");
    let outputs = &body["outputs"];
    let classes: Vec<String> = outputs["class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let probs: Vec<Vec<f64>> = outputs["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    assert_predict_agrees(&[0, 4], &classes, &probs);
}

fn instances_b64(which: &[usize]) -> Vec<Value> {
    which
        .iter()
        .map(|&i| json!({ "b64": b64_file(&fixture().files[i]) }))
        .collect()
}

#[test]
fn v2_infer_agrees_with_predict_for_bytes_fp32_uint8_and_binary_data() {
    let f = fixture();
    let server = &main_server();
    let url = server.url(&format!("/v2/models/{NAME}/infer"));
    let all: Vec<usize> = (0..f.files.len()).collect();
    let files: Vec<String> = f.files.iter().map(|p| b64_file(p)).collect();
    let (status, body) = post_json(
        &url,
        &json!({
            "id": "abc",
            "inputs": [{ "name": "image", "shape": [files.len()], "datatype": "BYTES", "data": files }]
        }),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "abc");
    assert_eq!(body["model_name"], NAME);
    let (classes, probs) = v2_outputs(&body);
    assert_predict_agrees(&all, &classes, &probs);
    let labels = body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap();
    assert_eq!(labels["datatype"], "INT64");
    assert_eq!(labels["shape"], json!([files.len()]));

    let flat: Vec<u8> = f.pixels.concat();
    let n = f.pixels.len();
    for datatype in ["FP32", "UINT8"] {
        let (status, body) = post_json(
            &server.url(&format!("/v2/models/{NAME}/versions/1/infer")),
            &json!({
                "inputs": [{ "name": "image", "shape": [n, SIDE, SIDE, 1], "datatype": datatype, "data": flat }]
            }),
        );
        assert_eq!(status, 200, "{body}");
        let (classes, probs) = v2_outputs(&body);
        assert_predict_agrees(&(0..n).collect::<Vec<_>>(), &classes, &probs);
    }

    // Only the outputs asked for, one of them as binary data after the JSON.
    let raw: Vec<u8> = flat
        .iter()
        .flat_map(|&p| f32::from(p).to_le_bytes())
        .collect();
    let head = json!({
        "inputs": [{ "name": "image", "shape": [n, SIDE * SIDE], "datatype": "FP32",
                     "parameters": { "binary_data_size": raw.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "binary_data": true } },
                    { "name": "class" }]
    })
    .to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(&raw);
    let length = head.len().to_string();
    let (status, headers, reply) = post(
        &url,
        &[("inference-header-content-length", length.as_str())],
        &body,
    );
    assert_eq!(status, 200, "{}", stderr(&reply));
    let json_len: usize = headers["inference-header-content-length"].parse().unwrap();
    let head: Value = serde_json::from_slice(&reply[..json_len]).unwrap();
    let outputs = head["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[0]["name"], "probabilities");
    let size = outputs[0]["parameters"]["binary_data_size"]
        .as_u64()
        .unwrap() as usize;
    let binary = &reply[json_len..];
    assert_eq!(binary.len(), size);
    let probs: Vec<Vec<f64>> = binary
        .chunks_exact(4)
        .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
        .collect::<Vec<_>>()
        .chunks(3)
        .map(<[f64]>::to_vec)
        .collect();
    let classes: Vec<String> = outputs[1]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_predict_agrees(&(0..n).collect::<Vec<_>>(), &classes, &probs);
}

#[test]
fn grpc_model_infer_agrees_with_predict() {
    let f = fixture();
    let server = &main_server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = GrpcInferenceServiceClient::connect(server.grpc.clone().unwrap())
            .await
            .unwrap();
        let live = client
            .server_live(inference::ServerLiveRequest {})
            .await
            .unwrap();
        assert!(live.get_ref().live);
        let meta = client
            .model_metadata(inference::ModelMetadataRequest {
                name: NAME.into(),
                version: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(meta.inputs[0].shape, vec![-1, 12, 12, 1]);
        assert_eq!(meta.outputs.len(), 3);
        let missing = client
            .model_ready(inference::ModelReadyRequest {
                name: "other".into(),
                version: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);

        let input = |datatype: &str, shape: Vec<i64>, contents| {
            inference::model_infer_request::InferInputTensor {
                name: "image".into(),
                datatype: datatype.into(),
                shape,
                parameters: Default::default(),
                contents,
            }
        };
        let read = |response: &inference::ModelInferResponse| -> (Vec<String>, Vec<Vec<f64>>) {
            let by_name = |n: &str| response.outputs.iter().position(|o| o.name == n).unwrap();
            let (p, c) = (by_name("probabilities"), by_name("class"));
            if response.raw_output_contents.is_empty() {
                let probs = &response.outputs[p].contents.as_ref().unwrap().fp32_contents;
                let classes = &response.outputs[c]
                    .contents
                    .as_ref()
                    .unwrap()
                    .bytes_contents;
                (
                    classes
                        .iter()
                        .map(|b| String::from_utf8(b.clone()).unwrap())
                        .collect(),
                    probs
                        .chunks(3)
                        .map(|r| r.iter().map(|&x| f64::from(x)).collect())
                        .collect(),
                )
            } else {
                let probs: Vec<f64> = response.raw_output_contents[p]
                    .chunks_exact(4)
                    .map(|b| f64::from(f32::from_le_bytes(b.try_into().unwrap())))
                    .collect();
                let mut classes = Vec::new();
                let mut rest = &response.raw_output_contents[c][..];
                while !rest.is_empty() {
                    let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
                    classes.push(String::from_utf8(rest[4..4 + len].to_vec()).unwrap());
                    rest = &rest[4 + len..];
                }
                (classes, probs.chunks(3).map(<[f64]>::to_vec).collect())
            }
        };

        // Typed BYTES contents: the image files.
        let files: Vec<Vec<u8>> = f.files.iter().map(|p| std::fs::read(p).unwrap()).collect();
        let mut request = tonic::Request::new(inference::ModelInferRequest {
            model_name: NAME.into(),
            id: "grpc-1".into(),
            inputs: vec![input(
                "BYTES",
                vec![files.len() as i64],
                Some(inference::InferTensorContents {
                    bytes_contents: files.clone(),
                    ..Default::default()
                }),
            )],
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-request-id", "grpc-req-7".parse().unwrap());
        let response = client.model_infer(request).await.unwrap();
        assert_eq!(
            response.metadata().get("x-request-id").unwrap(),
            "grpc-req-7"
        );
        let response = response.into_inner();
        assert_eq!(response.id, "grpc-1");
        let (classes, probs) = read(&response);
        assert_predict_agrees(&(0..files.len()).collect::<Vec<_>>(), &classes, &probs);

        // Raw FP32 contents in, raw contents out.
        let n = f.pixels.len();
        let raw: Vec<u8> = f
            .pixels
            .concat()
            .iter()
            .flat_map(|&p| f32::from(p).to_le_bytes())
            .collect();
        let response = client
            .model_infer(inference::ModelInferRequest {
                model_name: NAME.into(),
                model_version: "1".into(),
                inputs: vec![input("FP32", vec![n as i64, 12, 12, 1], None)],
                raw_input_contents: vec![raw],
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(response.metadata().get("x-request-id").is_some());
        let response = response.into_inner();
        assert_eq!(response.raw_output_contents.len(), 3);
        let (classes, probs) = read(&response);
        assert_predict_agrees(&(0..n).collect::<Vec<_>>(), &classes, &probs);

        // A wrong shape is INVALID_ARGUMENT naming the shape the model takes.
        let bad = client
            .model_infer(inference::ModelInferRequest {
                model_name: NAME.into(),
                inputs: vec![input(
                    "FP32",
                    vec![1, 5],
                    Some(inference::InferTensorContents {
                        fp32_contents: vec![0.0; 5],
                        ..Default::default()
                    }),
                )],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(
            bad.message().contains("[-1, 12, 12, 1]"),
            "{}",
            bad.message()
        );
        assert!(bad.metadata().get("x-request-id").is_some());
    });
}

#[test]
fn metadata_health_and_readiness() {
    let server = &main_server();
    let (status, _, body) = get(&server.url(&format!("/v1/models/{NAME}")));
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        body,
        json!({"name": NAME, "ready": true,
               "model_version_status": [{"version": "1", "state": "AVAILABLE",
               "status": {"error_code": "OK", "error_message": ""}}]})
    );
    let (status, _, _) = get(&server.url(&format!("/v1/models/{NAME}/versions/1")));
    assert_eq!(status, 200);
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(get(&server.url(path)).0, 200, "{path}");
    }
    let (_, _, body) = get(&server.url("/v2"));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["name"], "toucan-worker");
    for path in [
        format!("/v2/models/{NAME}"),
        format!("/v2/models/{NAME}/versions/1"),
    ] {
        let (status, _, body) = get(&server.url(&path));
        assert_eq!(status, 200, "{path}");
        let meta: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(meta["name"], NAME);
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, 12, 12, 1]));
        assert_eq!(meta["outputs"][0]["name"], "probabilities");
        assert_eq!(meta["outputs"][0]["datatype"], "FP32");
        assert_eq!(meta["outputs"][0]["shape"], json!([-1, 3]));
    }
    for path in [
        format!("/v2/models/{NAME}/ready"),
        format!("/v2/models/{NAME}/versions/1/ready"),
    ] {
        assert_eq!(get(&server.url(&path)).0, 200, "{path}");
    }
}

#[test]
fn request_ids_are_echoed_or_generated() {
    let server = &main_server();
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    let body = json!({ "instances": instances_b64(&[0]) }).to_string();
    let (status, headers, _) = post(&url, &[("x-request-id", "client-id-1")], body.as_bytes());
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "client-id-1");
    let (_, first, _) = post(&url, &[], body.as_bytes());
    let (_, second, _) = post(&url, &[], b"{");
    assert_eq!(first["x-request-id"].len(), 26, "a ULID");
    assert_ne!(first["x-request-id"], second["x-request-id"]);
    let (_, headers, _) = get(&server.url("/v2/health/live"));
    assert!(headers.contains_key("x-request-id"));
}

#[test]
fn errors_have_their_status_and_the_error_shape() {
    let server = &main_server();
    let predict = server.url(&format!("/v1/models/{NAME}:predict"));
    let infer = server.url(&format!("/v2/models/{NAME}/infer"));
    let cases: Vec<(u16, String, Option<String>, &str)> = vec![
        (404, server.url("/v1/models/other"), None, "other"),
        (404, server.url(&format!("/v1/models/{NAME}/versions/9")), None, "9"),
        (404, server.url("/v1/models/other:predict"), Some("{}".into()), "other"),
        (404, server.url("/v2/models/other"), None, "other"),
        (404, server.url(&format!("/v2/models/{NAME}/versions/2/infer")), Some("{}".into()), "2"),
        (404, server.url("/nowhere"), None, "/nowhere"),
        (400, predict.clone(), Some("{\"instances\": [".into()), "JSON"),
        (400, predict.clone(), Some(r#"{"instances": [[1, 2, 3]]}"#.into()), "[12, 12"),
        (400, predict.clone(), Some(r#"{"instances": [{"b64": "!!!"}]}"#.into()), "base64"),
        (400, predict.clone(), Some(r#"{"instances": [{"b64": "aGVsbG8="}]}"#.into()), "decode"),
        (
            400,
            infer.clone(),
            Some(r#"{"inputs": [{"name": "image", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}"#.into()),
            "[-1, 12, 12, 1]",
        ),
        (
            400,
            infer.clone(),
            Some(r#"{"inputs": [{"name": "image", "shape": [1], "datatype": "INT32", "data": [1]}]}"#.into()),
            "INT32",
        ),
        (
            400,
            infer.clone(),
            Some(r#"{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}], "outputs": [{"name": "logits"}]}"#.into()),
            "logits",
        ),
    ];
    for (want, url, body, needle) in cases {
        let (status, _, reply) = match &body {
            Some(b) => post(&url, &[], b.as_bytes()),
            None => get(&url),
        };
        assert_eq!(status, want, "{url} {body:?}: {}", stderr(&reply));
        let error: Value = serde_json::from_slice(&reply).unwrap();
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(needle), "{url}: {message}");
    }
}

#[test]
fn a_body_over_the_limit_is_413_and_a_full_queue_is_429() {
    let f = fixture();
    // The batch being formed waits 300 ms holding the queue's one place.
    let server = Server::start(&[
        "--max-body-bytes",
        "4096",
        "--queue",
        "1",
        "--max-delay-ms",
        "300",
        "--max-batch-size",
        "64",
    ]);
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    let big = json!({ "instances": [vec![0u8; 4096]] }).to_string();
    let (status, _, body) = post(&url, &[], big.as_bytes());
    assert_eq!(status, 413);
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert!(error["error"].as_str().unwrap().contains("4096"));
    let two = json!({ "instances": [nested(&f.pixels[0]), nested(&f.pixels[1])] }).to_string();
    let (status, _, _) = post(&url, &[], two.as_bytes());
    assert_eq!(status, 413, "two instances can never fit a queue of one");

    let one = Arc::new(json!({ "instances": [nested(&f.pixels[0])] }).to_string());
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (url, one, barrier) = (url.clone(), Arc::clone(&one), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let (status, _, body) = post(&url, &[], one.as_bytes());
                (status, body)
            })
        })
        .collect();
    let replies: Vec<(u16, Vec<u8>)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<&(u16, Vec<u8>)> = replies.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + refused.len(), 8, "{replies:?}");
    assert!(
        ok >= 1 && !refused.is_empty(),
        "{ok} ok, {} refused",
        refused.len()
    );
    let error: Value = serde_json::from_slice(&refused[0].1).unwrap();
    assert!(error["error"].as_str().unwrap().contains("queue is full"));
    assert_eq!(get(&server.url("/v2/health/live")).0, 200);
    assert!(server.metrics().contains(r#"code="429""#));
}

#[test]
fn concurrent_requests_share_forward_passes() {
    let f = fixture();
    let server = Server::start(&["--max-delay-ms", "50"]);
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    let body = Arc::new(json!({ "instances": [nested(&f.pixels[0])] }).to_string());
    let batched = |text: &str| -> bool {
        metric(text, "toucan_serve_batch_size_count")
            > metric(text, r#"toucan_serve_batch_size_bucket{le="1.0"}"#)
    };
    // Concurrent arrivals within 50 ms of each other cannot be guaranteed on a busy machine,
    // so a few rounds are allowed before concluding that nothing was batched.
    for _ in 0..5 {
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (url, body, barrier) = (url.clone(), Arc::clone(&body), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    post(&url, &[], body.as_bytes()).0
                })
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap(), 200);
        }
        if batched(&server.metrics()) {
            return;
        }
    }
    panic!(
        "no forward pass took more than one instance:\n{}",
        server.metrics()
    );
}

/// A sink that records every batch it receives with its authorization header.
struct Sink {
    url: String,
    received: std::sync::mpsc::Receiver<(String, SampleBatch)>,
    _runtime: tokio::runtime::Runtime,
}

fn sink() -> Sink {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (tx, received) = std::sync::mpsc::channel();
    let tx = Arc::new(Mutex::new(tx));
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        &format!("/api/v1/endpoints/{NAME}/samples"),
        axum::routing::post(
            move |headers: axum::http::HeaderMap, axum::Json(batch): axum::Json<SampleBatch>| {
                let tx = Arc::clone(&tx);
                async move {
                    let auth = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    let _ = tx.lock().unwrap().send((auth, batch));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Sink {
        url,
        received,
        _runtime: runtime,
    }
}

#[test]
fn sampled_requests_reach_the_sink_with_their_ids_stats_and_attributes() {
    let f = fixture();
    let sink = sink();
    let work = tempfile::tempdir().unwrap();
    let token = work.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let server = Server::start(&[
        "--sample-rate",
        "1",
        "--sample-sink",
        &sink.url,
        "--sample-token-file",
        token.to_str().unwrap(),
        "--sample-attributes",
        "X-Tenant",
        "--sample-inputs",
        "--grpc-listen",
        "127.0.0.1:0",
    ]);
    let v1 = server.url(&format!("/v1/models/{NAME}:predict"));
    let jpeg = json!({ "instances": instances_b64(&[4]) }).to_string();
    let (status, _, _) = post(
        &v1,
        &[("x-request-id", "sample-1"), ("x-tenant", "acme")],
        jpeg.as_bytes(),
    );
    assert_eq!(status, 200);
    let pixels = json!({ "instances": [nested(&f.pixels[1]), nested(&f.pixels[2])] }).to_string();
    let (status, _, _) = post(&v1, &[("x-request-id", "sample-2")], pixels.as_bytes());
    assert_eq!(status, 200);
    let v2 = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                                  "data": [b64_file(&f.files[0])] }] })
    .to_string();
    let (status, _, _) = post(
        &server.url(&format!("/v2/models/{NAME}/infer")),
        &[("x-request-id", "sample-3")],
        v2.as_bytes(),
    );
    assert_eq!(status, 200);
    let held_out = json!({ "instances": [nested(&f.held_out)] }).to_string();
    let (status, _, _) = post(&v1, &[("x-request-id", "sample-4")], held_out.as_bytes());
    assert_eq!(status, 200);

    let mut samples = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.len() < 4 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (auth, batch) = sink.received.recv_timeout(left).expect("samples in time");
        assert_eq!(auth, "Bearer s3cret");
        for s in batch.samples {
            samples.insert(s.request_id.clone(), s);
        }
    }
    let first = &samples["sample-1"];
    assert_eq!(first.model, NAME);
    assert_eq!(first.version, "1");
    assert_eq!(first.protocol, "v1");
    assert_eq!(
        first.attributes.get("x-tenant").map(String::as_str),
        Some("acme")
    );
    assert!(first.latency_ms > 0.0);
    let instance = &first.instances[0];
    // The JPEG as sent (48x48 RGB), not as the model saw it.
    assert_eq!((instance.stats.width, instance.stats.height), (48, 48));
    assert_eq!(instance.stats.channels, 3);
    assert_eq!(instance.input.as_ref().unwrap().len(), SIDE * SIDE);
    assert_eq!(instance.class, f.expected[4].0);
    let second = &samples["sample-2"];
    assert_eq!(second.instances.len(), 2);
    // The image as the model took it: the pixels sent, at the model's size.
    let sent: Vec<f32> = f.pixels[1].iter().map(|&p| f32::from(p)).collect();
    assert_eq!(second.instances[0].input.as_ref(), Some(&sent));
    assert!(second.attributes.is_empty());
    assert_eq!(second.instances[0].stats.width, SIDE as u32);
    let mean = f.pixels[1].iter().map(|&p| f64::from(p)).sum::<f64>() / (SIDE * SIDE) as f64;
    assert!((second.instances[0].stats.brightness - mean / 255.0).abs() < 1e-6);
    assert_eq!(samples["sample-3"].protocol, "v2");
    assert_eq!(samples["sample-3"].instances[0].class, f.expected[0].0);
    // Every instance carries the model's embedding; the server's of a held-out record is the
    // one training wrote into the drift reference for it.
    for sample in samples.values() {
        for instance in &sample.instances {
            assert_eq!(instance.embedding.as_ref().map(Vec::len), Some(32));
        }
    }
    let served = samples["sample-4"].instances[0].embedding.clone().unwrap();
    for (i, (s, r)) in served.iter().zip(&f.reference_embedding).enumerate() {
        assert!(
            (f64::from(*s) - r).abs() <= 1e-4 * r.abs().max(1.0),
            "embedding[{i}]: served {s}, reference {r}"
        );
    }

    // The sink answers before the server counts the shipment.
    server.await_metrics("4 samples shipped", |m| {
        metric(m, "toucan_serve_samples_shipped_total") == 4.0
    });
    assert!(server.terminate().success());
}

/// Resident memory of the process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn an_unreachable_sink_drops_samples_and_requests_still_succeed() {
    let f = fixture();
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let server = Server::start(&[
        "--sample-rate",
        "1",
        "--sample-sink",
        &closed,
        "--sample-queue",
        "4",
        "--sample-batch",
        "2",
    ]);
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    let body = json!({ "instances": [nested(&f.pixels[0])] }).to_string();
    for i in 0..30 {
        let id = format!("lost-{i}");
        let (status, _, _) = post(&url, &[("x-request-id", id.as_str())], body.as_bytes());
        assert_eq!(status, 200);
    }
    server.await_metrics("samples dropped for the sink", |m| {
        metric(m, r#"toucan_serve_sample_drops_total{reason="sink_error"}"#) > 0.0
    });
    assert_eq!(
        metric(&server.metrics(), "toucan_serve_samples_shipped_total"),
        0.0
    );
    assert!(server.log.lock().unwrap().contains("dropped"));
}

/// A sink that takes connections and never answers: the worst a slow sink can do. Every
/// request is sampled with its input, the queue fills and stays full, and the server's memory
/// stays where it was while the drops are counted.
#[test]
fn a_sink_that_never_answers_leaves_memory_flat_and_counts_the_drops() {
    let f = fixture();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sink = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let server = Server::start(&[
        "--sample-rate",
        "1",
        "--sample-inputs",
        "--sample-sink",
        &sink,
        "--sample-queue",
        "64",
    ]);
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    // 32 instances a request, each sampled with its input: about 100 KB a sample.
    let body = json!({ "instances": vec![nested(&f.pixels[0]); 32] }).to_string();
    let send = |from: usize, to: usize| {
        for i in from..to {
            let id = format!("slow-{i}");
            let (status, _, _) = post(&url, &[("x-request-id", id.as_str())], body.as_bytes());
            assert_eq!(status, 200);
        }
    };
    // Warm up: the queue fills, the allocator settles.
    send(0, 300);
    let before = rss(server.child.id());
    send(300, 1300);
    let after = rss(server.child.id());
    // 1,000 samples with their inputs kept would take about 100 MiB; a bounded queue, none.
    // The allocator's arenas still move by tens of MiB on a loaded machine (26 MiB once after
    // 200 requests of warm-up), hence the margin.
    let grown = after.saturating_sub(before);
    assert!(
        grown < 40 << 20,
        "resident memory grew by {grown} bytes over 1,000 requests ({before} -> {after})"
    );
    // Most are dropped and counted: the others wait in the queue (64) or in the batch in
    // hand, or were given up at the sink's timeout (counted once it passes).
    let m = server.metrics();
    let dropped = metric(
        &m,
        r#"toucan_serve_sample_drops_total{reason="queue_full"}"#,
    ) + metric(
        &m,
        r#"toucan_serve_sample_drops_total{reason="sink_error"}"#,
    );
    assert!(dropped >= 800.0, "dropped {dropped}\n{m}");
    assert_eq!(metric(&m, "toucan_serve_samples_shipped_total"), 0.0);
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let f = fixture();
    // The request waits a second for company: long enough to be in flight at the signal.
    let server = Server::start(&["--max-delay-ms", "1000"]);
    let url = server.url(&format!("/v1/models/{NAME}:predict"));
    let body = json!({ "instances": [nested(&f.pixels[0])] }).to_string();
    let in_flight = std::thread::spawn(move || post(&url, &[], body.as_bytes()).0);
    server.await_metrics("the request queued", |m| {
        metric(m, "toucan_serve_queue_depth") == 1.0
    });
    let rest = server.rest.clone();
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert_eq!(in_flight.join().unwrap(), 200);
    assert!(
        agent()
            .get(&format!("{rest}/v2/health/live"))
            .call()
            .is_err()
    );
}

/// Request bodies a client might send by mistake or malice.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    let valid = json!({ "instances": [[[0, 1], [2, 3]]] }).to_string();
    let v2 = json!({ "inputs": [{ "name": "image", "shape": [1, 12, 12, 1], "datatype": "FP32", "data": [1, 2] }] })
        .to_string();
    let nested_deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        (0..valid.len()).prop_map(move |cut| valid.as_bytes()[..cut].to_vec()),
        (0..v2.len()).prop_map(move |cut| v2.as_bytes()[..cut].to_vec()),
        (1usize..5000).prop_map(move |d| format!(r#"{{"instances": [{}]}}"#, nested_deep(d)).into_bytes()),
        prop::sample::select(vec![
            r#"{"instances": [[NaN]]}"#.to_string(),
            r#"{"instances": [[1e999]]}"#.to_string(),
            r#"{"instances": [[-1e308, 1e308]]}"#.to_string(),
            r#"{"instances": [[18446744073709551616]]}"#.to_string(),
            r#"{"instances": {"b64": 1}}"#.to_string(),
            r#"{"instances": [null, true, "x", {}]}"#.to_string(),
            r#"{"inputs": {"a": 1, "b": 2}}"#.to_string(),
            r#"{"inputs": [{"name": "image", "shape": [9223372036854775807, 2], "datatype": "FP32", "data": [1]}]}"#.to_string(),
            r#"{"inputs": [{"name": "image", "shape": [-5], "datatype": "BYTES", "data": ["AA=="]}]}"#.to_string(),
            r#"{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["iVBORw0KGgo="]}]}"#.to_string(),
            r#"{"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 99}}]}"#.to_string(),
            r#"{"inputs": []}"#.to_string(),
            "\u{feff}{}".to_string(),
        ])
        .prop_map(String::into_bytes),
        (prop::collection::vec(any::<i64>(), 0..6), "[A-Z0-9]{0,6}", prop::collection::vec(any::<f64>(), 0..20))
            .prop_map(|(shape, datatype, data)| {
                let data: Vec<Value> = data.into_iter().map(|d| serde_json::Number::from_f64(d).map_or(Value::Null, Value::Number)).collect();
                json!({ "inputs": [{ "name": "image", "shape": shape, "datatype": datatype, "data": data }] })
                    .to_string()
                    .into_bytes()
            }),
    ]
}

#[test]
fn hostile_bodies_never_take_the_server_down() {
    let server = &main_server();
    let targets = [
        server.url(&format!("/v1/models/{NAME}:predict")),
        server.url(&format!("/v2/models/{NAME}/infer")),
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        hostile_body(),
        0..targets.len(),
        prop::option::of(0usize..600),
    );
    runner
        .run(&strategy, |(body, target, header_length)| {
            let length = header_length.map(|l| l.to_string());
            let headers: Vec<(&str, &str)> = match (&length, target) {
                (Some(l), 1) => vec![("inference-header-content-length", l.as_str())],
                _ => vec![],
            };
            let (status, _, reply) = post(&targets[target], &headers, &body);
            prop_assert!(
                [200, 400, 413].contains(&status),
                "{status} for {:?}: {}",
                String::from_utf8_lossy(&body),
                stderr(&reply)
            );
            if status != 200 {
                let error: Value = serde_json::from_slice(&reply).unwrap();
                prop_assert!(error["error"].is_string());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(get(&server.url("/v2/health/live")).0, 200);
}

#[test]
fn a_model_named_by_digest_is_fetched_from_the_artifact_store_and_cached() {
    let f = fixture();
    let work = tempfile::tempdir().unwrap();
    let store_dir = work.path().join("store");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let digest = runtime.block_on(async {
        let store =
            toucan_store::artifacts::ArtifactStore::open(store_dir.to_str().unwrap()).unwrap();
        store.put_file(&f.model).await.unwrap().0
    });
    let cache = work.path().join("cache");
    let digest = digest.to_string();
    let args = [
        "--artifacts",
        store_dir.to_str().unwrap(),
        "--model-cache",
        cache.to_str().unwrap(),
    ];
    let server = Server::start_model(digest.as_ref(), &args);
    let body = json!({ "instances": instances_b64(&[0]) });
    let (status, reply) = post_json(&server.url(&format!("/v1/models/{NAME}:predict")), &body);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["predictions"][0]["class"], f.expected[0].0.as_str());
    let cached = cache
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"));
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(&f.model).unwrap()
    );
    assert!(server.terminate().success());

    // The store is gone: the cached copy serves.
    std::fs::remove_dir_all(&store_dir).unwrap();
    let server = Server::start_model(digest.as_ref(), &args);
    assert_eq!(get(&server.url(&format!("/v1/models/{NAME}"))).0, 200);
}

#[test]
fn bad_flags_and_models_are_refused_before_serving() {
    let f = fixture();
    let model = f.model.to_str().unwrap();
    let serve = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = vec!["serve", "--model", model, "--name", NAME];
        args.extend_from_slice(extra);
        args
    };
    common::refused(&serve(&["--sample-rate", "1.5"]), "--sample-rate");
    common::refused(&serve(&["--sample-rate", "0.5"]), "--sample-sink");
    common::refused(&serve(&["--queue", "0"]), "--queue");
    common::refused(&["serve", "--model", model, "--name", "a/b"], "--name");
    let png = f.files[0].to_str().unwrap();
    common::refused(&["serve", "--model", png, "--name", NAME], "record0.png");
    common::refused(
        &["serve", "--model", "sha256:00", "--name", NAME],
        "--model",
    );
    let digest = format!("sha256:{}", "0".repeat(64));
    common::refused(
        &["serve", "--model", &digest, "--name", NAME],
        "--artifacts",
    );
}

/// Third-party clients, as users run them (`tests/serving/clients.py`, in the project venv
/// with `scripts/setup --serving`): KServe's Python SDK over v1 and v2 REST and gRPC, and stubs
/// grpcio-tools builds from `worker/proto/grpc_predict_v2.proto`, each get the probabilities
/// `toucan-worker predict` computes for the same PNG files.
#[test]
fn third_party_clients_get_the_same_predictions_as_predict() {
    let f = fixture();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup --serving",
        python.display()
    );
    let server = main_server();
    let grpc = server
        .grpc
        .as_deref()
        .unwrap()
        .trim_start_matches("http://");
    let pngs: Vec<usize> = (0..4).collect();
    let run = Command::new(&python)
        .arg(root.join("tests/serving/clients.py"))
        .args(["--rest", &server.rest, "--grpc", grpc, "--model", NAME])
        .arg("--proto")
        .arg(root.join("worker/proto/grpc_predict_v2.proto"))
        .args(pngs.iter().map(|&i| &f.files[i]))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}\n{}",
        stderr(&run.stderr),
        server.log.lock().unwrap()
    );
    let answers: Value = serde_json::from_slice(&run.stdout).unwrap();
    for client in ["v1", "v2", "grpc", "protoc"] {
        let rows: Vec<Vec<f64>> = answers[client]
            .as_array()
            .unwrap_or_else(|| panic!("{client}: {answers}"))
            .iter()
            .map(floats)
            .collect();
        let classes: Vec<String> = rows
            .iter()
            .map(|r| {
                let best = (0..r.len()).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap();
                f.classes[best].clone()
            })
            .collect();
        assert_predict_agrees(&pngs, &classes, &rows);
    }
}
