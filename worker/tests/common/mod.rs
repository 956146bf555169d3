//! IDX fixtures and a runner for the `toucan-worker` binary, shared by the integration tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
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
