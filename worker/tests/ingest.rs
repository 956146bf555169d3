//! `toucan-worker ingest` as a user runs it: real binary, IDX fixtures written here, and the
//! dataset read back through the library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toucan_worker::dataset::{Dataset, SPLITS};

mod common;

use common::{H, W, fixture, idx_bytes, ingest, listing};

#[test]
fn writes_a_complete_dataset_with_every_record_in_one_split() {
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    let run = ingest(
        source.path(),
        &out,
        &["--shard-records", "7", "--class-names", "a,b,c"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(listing(work.path()), vec!["ds"]);

    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.index.classes, vec!["a", "b", "c"]);
    assert_eq!(ds.index.sources.len(), 4);
    let sizes: Vec<u64> = ds.index.splits.iter().map(|s| s.records).collect();
    assert_eq!(sizes, vec![40, 5, 5]);
    // 40 train records in shards of at most 7.
    assert_eq!(ds.index.splits[0].shards.len(), 6);

    let mut seen = BTreeMap::new();
    for split in SPLITS {
        let data = ds.read_split(split).unwrap();
        let stats = ds.card.split(split).unwrap();
        // Each record's source file is kept as a metadata column, for sliced evaluation.
        let sources = ds.metadata_column(split, "source").unwrap();
        let mut counts = vec![0u64; 3];
        for (i, &label) in data.labels.iter().enumerate() {
            let image = &data.pixels[i * (H * W) as usize..(i + 1) * (H * W) as usize];
            let id = image[0];
            let file = if id < 40 {
                "train-images-idx3-ubyte.gz"
            } else {
                "t10k-images-idx3-ubyte"
            };
            assert_eq!(sources[i], file, "record {id} keeps its source");
            assert!(image.iter().all(|&p| p == id), "record {id} is intact");
            assert_eq!(label, u16::from(id % 3), "record {id} keeps its label");
            assert!(
                seen.insert(id, split).is_none(),
                "record {id} is in two splits"
            );
            counts[label as usize] += 1;
        }
        assert_eq!(stats.class_counts, counts);
    }
    assert_eq!(seen.len(), 50);
    let e = ds
        .metadata_column("test", "camera")
        .unwrap_err()
        .to_string();
    assert!(e.contains("test.json") && e.contains("source"), "{e}");
}

#[test]
fn the_same_source_and_seed_give_the_same_bytes() {
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let read = |name: &str, seed: &str| {
        let out = work.path().join(name);
        assert!(
            ingest(source.path(), &out, &["--seed", seed])
                .status
                .success()
        );
        std::fs::read(out.join("index.json")).unwrap()
    };
    assert_eq!(read("a", "1"), read("b", "1"));
    assert_ne!(read("c", "1"), read("d", "2"));
}

/// Breaks the fixture with `damage`, then expects exit code 2, an error naming `names`, and no
/// output at all.
fn assert_rejected(damage: impl FnOnce(&Path), names: &str, says: &str) {
    let source = fixture();
    damage(source.path());
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    let run = ingest(source.path(), &out, &[]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(names), "{stderr:?} should name {names}");
    assert!(stderr.contains(says), "{stderr:?} should say {says:?}");
    assert!(
        listing(work.path()).is_empty(),
        "left {:?}",
        listing(work.path())
    );
}

#[test]
fn rejects_a_file_with_a_bad_magic() {
    assert_rejected(
        |dir| std::fs::write(dir.join("t10k-images-idx3-ubyte"), b"\x89PNG\r\n\x1a\n...").unwrap(),
        "t10k-images-idx3-ubyte",
        "bad magic",
    );
}

#[test]
fn rejects_a_truncated_file() {
    assert_rejected(
        |dir| {
            let path = dir.join("t10k-images-idx3-ubyte");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        },
        "t10k-images-idx3-ubyte",
        "truncated",
    );
}

#[test]
fn rejects_a_corrupt_gzip_stream() {
    assert_rejected(
        |dir| {
            let path = dir.join("train-labels-idx1-ubyte.gz");
            let bytes = std::fs::read(&path).unwrap();
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        },
        "train-labels-idx1-ubyte.gz",
        "gzip",
    );
}

#[test]
fn rejects_a_missing_labels_file() {
    assert_rejected(
        |dir| std::fs::remove_file(dir.join("t10k-labels-idx1-ubyte")).unwrap(),
        "t10k-labels-idx1-ubyte",
        "no labels file",
    );
}

#[test]
fn rejects_labels_that_do_not_match_the_images() {
    assert_rejected(
        |dir| std::fs::write(dir.join("t10k-labels-idx1-ubyte"), idx_bytes(&[9], &[0; 9])).unwrap(),
        "t10k-labels-idx1-ubyte",
        "10 labels",
    );
}

#[test]
fn rejects_a_source_without_idx_files_or_that_does_not_exist() {
    let work = tempfile::tempdir().unwrap();
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for source in [empty.clone(), PathBuf::from("/nonexistent/fashion")] {
        let out = work.path().join("ds");
        let run = ingest(&source, &out, &[]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&source.display().to_string()), "{stderr}");
        assert!(!out.exists());
    }
}

#[test]
fn leaves_an_existing_output_alone() {
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"mine").unwrap();
    let run = ingest(source.path(), &out, &[]);
    assert_eq!(run.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&run.stderr).contains("already exists"));
    assert_eq!(listing(&out), vec!["keep.txt"]);
    assert_eq!(listing(work.path()), vec!["ds"]);

    // An empty directory (as the launcher makes) is fine.
    let empty = work.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(ingest(source.path(), &empty, &[]).status.success());
    assert!(empty.join("index.json").exists());
}
