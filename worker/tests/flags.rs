//! Bad flag values are refused while the arguments are parsed: exit code 2
//! (`toucan_worker::EXIT_INVALID`, never worth retrying) and an error naming the flag, before
//! any work starts. The libtorch commands' flags are in `train_flags.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{fixture, listing, refused};

fn s(path: &std::path::Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn an_integer_out_of_range_names_the_flag() {
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    for bad in ["0", "-1", "many"] {
        let args = [
            "ingest",
            "--source",
            s(source.path()),
            "--out",
            s(&out),
            "--shard-records",
            bad,
        ];
        refused(&args, "--shard-records");
    }
    assert!(listing(work.path()).is_empty(), "nothing is written");
    let stderr = refused(
        &[
            "export-images",
            "--data",
            s(work.path()),
            "--out",
            s(&out),
            "--per-class",
            "0",
        ],
        "--per-class",
    );
    assert!(stderr.contains("must be at least 1"), "{stderr}");
}

#[test]
fn a_value_outside_a_closed_set_names_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("images");
    let stderr = refused(
        &[
            "export-images",
            "--data",
            s(work.path()),
            "--out",
            s(&out),
            "--split",
            "training",
        ],
        "--split",
    );
    // The valid values are listed.
    assert!(stderr.contains("valid"), "{stderr}");
    let source = fixture();
    refused(
        &[
            "ingest",
            "--source",
            s(source.path()),
            "--out",
            s(&out),
            "--format",
            "tiff",
        ],
        "--format",
    );
    refused(
        &[
            "ingest",
            "--source",
            s(source.path()),
            "--out",
            s(&out),
            "--channels",
            "2",
        ],
        "--channels",
    );
}

#[test]
fn a_path_that_must_exist_names_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("missing");
    let out = work.path().join("ds");
    refused(
        &["ingest", "--source", s(&missing), "--out", s(&out)],
        "--source",
    );
    let source = fixture();
    refused(
        &[
            "ingest",
            "--source",
            s(source.path()),
            "--out",
            s(&out),
            "--labels",
            s(&missing),
        ],
        "--labels",
    );
    // A file where a directory is expected.
    let file = work.path().join("file");
    std::fs::write(&file, "x").unwrap();
    refused(
        &["export-images", "--data", s(&file), "--out", s(&out)],
        "--data",
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    refused(&["ingest", "--no-such-flag"], "--no-such-flag");
    let run = common::worker(&["--help".as_ref()]);
    assert_eq!(run.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&run.stdout).contains("ingest"));
}
