//! Serving the model a test run exported: `toucan serve` as a child process, real
//! Fashion-MNIST test images as PNG files, and plain HTTP calls through the router.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Sandbox;

const TEST_IMAGES: &str = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
const TEST_LABELS: &str = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz";
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The first `n` Fashion-MNIST test images as PNG files in the sandbox, with their labels.
pub fn test_images(sb: &Sandbox, n: usize) -> Vec<(PathBuf, usize)> {
    let read = |path: &str| {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    };
    let (images, labels) = (read(TEST_IMAGES), read(TEST_LABELS));
    std::fs::create_dir_all(sb.path("images")).unwrap();
    (0..n)
        .map(|i| {
            let pixels = images[16 + i * 784..16 + (i + 1) * 784].to_vec();
            let image = image::GrayImage::from_raw(28, 28, pixels).unwrap();
            let path = sb.path(&format!("images/{i}.png"));
            image.save(&path).unwrap();
            (path, usize::from(labels[8 + i]))
        })
        .collect()
}

/// The same images made brighter and flatter (each pixel `p` becomes `255 - 0.3 (255 - p)`),
/// as a camera overexposing would: a shift of the inputs drift detection must see.
pub fn brightened(sb: &Sandbox, images: &[(PathBuf, usize)]) -> Vec<(PathBuf, usize)> {
    images
        .iter()
        .enumerate()
        .map(|(i, (path, label))| {
            let mut image = image::open(path).unwrap().to_luma8();
            for p in image.pixels_mut() {
                p.0[0] = 255 - ((255 - u32::from(p.0[0])) * 3 / 10) as u8;
            }
            let out = sb.path(&format!("images/bright-{i}.png"));
            image.save(&out).unwrap();
            (out, *label)
        })
        .collect()
}

/// POST `body` to `url` as JSON; the response's JSON.
pub fn post_json(url: &str, body: &serde_json::Value) -> serde_json::Value {
    ureq::post(url)
        .send_json(body)
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// A running `toucan serve`; interrupted (Ctrl-C) when dropped.
pub struct Served {
    pub child: Child,
    /// The router's base URL, as `toucan serve` printed it.
    pub url: String,
    /// What it wrote to stderr so far (read as it comes, so the pipe never fills).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Served {
    /// `toucan serve FILE --listen 127.0.0.1:0`, once it printed its URL.
    pub fn start(sb: &Sandbox, file: &Path) -> Served {
        let mut child = sb
            .command(&["serve", file.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let errors = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(errors).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            for _ in lines {}
        });
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(Ok(url))) => Served { child, url, stderr },
            other => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(200));
                let text = stderr.lock().unwrap().clone();
                panic!("toucan serve printed no URL ({other:?}):\n{text}");
            }
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Ctrl-C, and the exit status.
    pub fn interrupt(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "toucan serve did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.interrupt();
        }
    }
}

/// A TF Serving `:predict` of one PNG, with a request id and headers; the status, the
/// version that answered and the body.
pub fn predict(
    url: &str,
    model: &str,
    png: &Path,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, serde_json::Value) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(std::fs::read(png).unwrap());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut request = agent.post(format!("{url}/v1/models/{model}:predict"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request
        .send_json(serde_json::json!({"instances": [{"b64": b64}]}))
        .unwrap();
    let version = response
        .headers()
        .get("x-toucan-version")
        .map(|v| v.to_str().unwrap().to_string());
    let status = response.status().as_u16();
    let body = response.body_mut().read_json().unwrap_or_default();
    (status, version, body)
}

/// GET `url` as JSON.
pub fn get_json(url: &str) -> serde_json::Value {
    ureq::get(url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Polls `check` every 200 ms until it gives a value, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
