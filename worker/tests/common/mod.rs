//! IDX and image fixtures and a runner for the `toucan-worker` binary, shared by the
//! integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const H: u32 = 3;
pub const W: u32 = 2;

pub fn idx_bytes(dims: &[u32], values: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// Writes `PREFIX-images-idx3-ubyte[.gz]` and labels for records `first..first+n`: every pixel
/// of record i is `i`, its label `i % 3`, so a record can be traced through the split.
pub fn write_pair(dir: &Path, prefix: &str, first: u8, n: u8, gz: bool) {
    let images: Vec<u8> = (first..first + n)
        .flat_map(|i| std::iter::repeat_n(i, (H * W) as usize))
        .collect();
    let labels: Vec<u8> = (first..first + n).map(|i| i % 3).collect();
    let ext = if gz { ".gz" } else { "" };
    let enc = |b: Vec<u8>| if gz { gzip(&b) } else { b };
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
        enc(idx_bytes(&[n as u32, H, W], &images)),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
        enc(idx_bytes(&[n as u32], &labels)),
    )
    .unwrap();
}

pub fn fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_pair(dir.path(), "train", 0, 40, true);
    write_pair(dir.path(), "t10k", 40, 10, false);
    dir
}

/// Runs `toucan-worker ARGS...` (no LD_LIBRARY_PATH needed, even with libtorch).
pub fn worker(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_toucan-worker"))
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap()
}

pub fn ingest(source: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "ingest".as_ref(),
        "--source".as_ref(),
        source.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    worker(&args)
}

/// Writes a `height`x`width` image whose every pixel is `pixel` (one value: grayscale, three:
/// RGB), as PNG or JPEG by the extension of `path`, creating its folder.
pub fn write_image(path: &Path, height: u32, width: u32, pixel: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let data: Vec<u8> = pixel.repeat((height * width) as usize);
    let color = match pixel.len() {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        n => panic!("{n} channels"),
    };
    image::save_buffer(path, &data, width, height, color).unwrap();
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every file under `dir` by relative path, with its bytes: two datasets are the same when
/// these are equal.
pub fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Runs `toucan-worker ARGS...`, which must be refused as a usage error: exit code
/// [`toucan_worker::EXIT_INVALID`] and an error on stderr that names `flag`. Returns stderr.
pub fn refused(args: &[&str], flag: &str) -> String {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let run = worker(&args);
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert_eq!(
        run.status.code(),
        Some(i32::from(toucan_worker::EXIT_INVALID)),
        "{stderr}"
    );
    assert!(stderr.contains(flag), "expected {flag} in: {stderr}");
    stderr
}

/// A dataset a small model can learn: class k (of 3) is a bright bar in row band k, on noise.
/// `n` records of 12x12.
pub fn bars_dataset(dir: &Path, n: u32) -> PathBuf {
    let source = dir.join("source");
    std::fs::create_dir_all(&source).unwrap();
    let (h, w) = (12u32, 12u32);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..n {
        let label = i % 3;
        labels.push(label as u8);
        for y in 0..h {
            for x in 0..w {
                let noise = ((i * 31 + y * 7 + x * 13) % 60) as u8;
                let bar = y / 4 == label;
                images.push(if bar { 150 + noise } else { noise });
            }
        }
    }
    std::fs::write(
        source.join("train-images-idx3-ubyte"),
        idx_bytes(&[n, h, w], &images),
    )
    .unwrap();
    std::fs::write(
        source.join("train-labels-idx1-ubyte"),
        idx_bytes(&[n], &labels),
    )
    .unwrap();
    let out = dir.join("dataset");
    let run = ingest(
        &source,
        &out,
        &[
            "--class-names",
            "top,middle,bottom",
            "--shard-records",
            "256",
        ],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// `toucan-worker train` on the CPU with one thread, without the environment of a step or of a
/// replica.
pub fn train_command(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_toucan-worker"));
    cmd.arg("train")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--threads", "1"])
        .args(extra)
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("TOUCAN_API")
        .env_remove("TOUCAN_METRICS_FILE")
        .env_remove("TOUCAN_CHECKPOINT_DIR")
        .env_remove("WORLD_SIZE");
    cmd
}

/// A TCP port free on the loopback a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
