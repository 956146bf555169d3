//! `toucan-worker ingest` as a user runs it: real binary, IDX fixtures written here, and the
//! dataset read back through the library.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toucan_worker::dataset::{Dataset, SPLITS, SplitData};
use toucan_worker::stats::pixel_stats;

mod common;

use common::{H, W, fixture, idx_bytes, ingest, listing};

/// The statistics of record `i` of a split, as a server would measure the same image.
fn record_stats(ds: &Dataset, data: &SplitData, i: usize) -> toucan_core::serving::InputStats {
    let per_image = ds.index.image.pixels();
    let unit: Vec<f32> = data.pixels[i * per_image..(i + 1) * per_image]
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    let shape = ds.index.image;
    pixel_stats(&unit, shape.width, shape.height, shape.channels)
}

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

    // The drift reference: every train record (fewer than 2,000), in split order, measured
    // as ingested and named by its class.
    let train = ds.read_split("train").unwrap();
    let rows = ds
        .reference()
        .unwrap()
        .expect("ingest writes reference.json");
    assert_eq!(rows.len(), 40);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.class, ds.index.classes[train.labels[i] as usize]);
        assert_eq!(row.stats, record_stats(&ds, &train, i));
        let id = train.pixels[i * (H * W) as usize];
        assert_eq!((row.stats.width, row.stats.height), (W, H));
        assert!((row.stats.brightness - f64::from(id) / 255.0).abs() < 1e-6);
        assert_eq!(row.stats.contrast, 0.0, "record {id} is flat");
        assert!(row.attributes.is_empty());
    }
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

#[test]
fn a_train_split_over_2000_records_gives_2000_evenly_spaced_reference_rows() {
    // 2,500 records of 4x4 whose pixel values add up to the record's number, so that every
    // record has its own brightness and a row tells which record it measured.
    const N: usize = 2_500;
    const SIDE: u32 = 4;
    let images: Vec<u8> = (0..N)
        .flat_map(|r| {
            (0..(SIDE * SIDE) as usize).map(move |k| r.saturating_sub(255 * k).min(255) as u8)
        })
        .collect();
    let labels: Vec<u8> = (0..N).map(|r| (r % 3) as u8).collect();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(
        source.path().join("train-images-idx3-ubyte"),
        idx_bytes(&[N as u32, SIDE, SIDE], &images),
    )
    .unwrap();
    std::fs::write(
        source.path().join("train-labels-idx1-ubyte"),
        idx_bytes(&[N as u32], &labels),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    let run = ingest(
        source.path(),
        &out,
        &["--split", "1:0:0", "--class-names", "x,y,z"],
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    let ds = Dataset::open(&out).unwrap();
    let train = ds.read_split("train").unwrap();
    assert_eq!(train.labels.len(), N);
    let rows = ds.reference().unwrap().unwrap();
    assert_eq!(rows.len(), 2_000);
    let all: Vec<_> = (0..N).map(|i| record_stats(&ds, &train, i)).collect();
    let measured: Vec<usize> = rows
        .iter()
        .map(|row| all.iter().position(|s| *s == row.stats).unwrap())
        .collect();
    assert_eq!(measured[0], 0, "the first row is the split's first record");
    // Every 1.25th record: strides of 1 and 2, reaching the end of the split.
    for (j, &i) in measured.iter().enumerate() {
        assert_eq!(i, j * N / 2_000, "row {j}");
        assert_eq!(rows[j].class, ds.index.classes[train.labels[i] as usize]);
    }
    assert_eq!(*measured.last().unwrap(), N - 2);
}

#[test]
fn a_dataset_without_a_reference_still_opens() {
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    assert!(ingest(source.path(), &out, &[]).status.success());
    std::fs::remove_file(out.join("reference.json")).unwrap();
    let ds = Dataset::open(&out).unwrap();
    assert_eq!(ds.reference().unwrap(), None);
    assert_eq!(ds.read_split("train").unwrap().labels.len(), 40);
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

/// A labelled production sample of class `class` whose recorded image is flat at `value`, as
/// a model server of the fixture's shape records it.
fn production_sample(
    id: &str,
    class: &str,
    value: u8,
) -> toucan_core::monitoring::evaluation::LabelledSample {
    use toucan_core::monitoring::evaluation::{LabelRecord, LabelledSample};
    use toucan_core::records::SampleRecord;
    use toucan_core::serving::{PayloadSample, SampledInstance};
    let unit = vec![f32::from(value) / 255.0; (H * W) as usize];
    LabelledSample {
        sample: SampleRecord {
            endpoint: "default/ep".into(),
            sample: PayloadSample {
                request_id: id.into(),
                model: "m".into(),
                version: "v1".into(),
                received_at: "2026-12-06T00:00:00Z".into(),
                protocol: "v1".into(),
                latency_ms: 1.0,
                instances: vec![SampledInstance {
                    stats: pixel_stats(&unit, W, H, 1),
                    input: Some(vec![f32::from(value); (H * W) as usize]),
                    embedding: None,
                    label: 0,
                    class: "a".into(),
                    probabilities: vec![1.0, 0.0, 0.0],
                }],
                attributes: BTreeMap::new(),
            },
            stored_at: 0,
        },
        label: Some(LabelRecord {
            endpoint: "default/ep".into(),
            request_id: id.into(),
            label: class.into(),
            labelled_at: 0,
            received_at: 0,
        }),
    }
}

#[test]
fn labelled_production_samples_join_the_training_split_only() {
    use toucan_core::monitoring::export::labelled_samples_csv;
    let source = fixture();
    let work = tempfile::tempdir().unwrap();
    let samples = [
        production_sample("r1", "b", 201),
        production_sample("r2", "c", 202),
    ];
    let table = work.path().join("window.csv");
    std::fs::write(
        &table,
        labelled_samples_csv(&samples.iter().collect::<Vec<_>>()),
    )
    .unwrap();
    let empty = work.path().join("empty.csv");
    std::fs::write(&empty, labelled_samples_csv(&[])).unwrap();
    let args = ["--class-names", "a,b,c"];
    let base = work.path().join("base");
    assert!(ingest(source.path(), &base, &args).status.success());
    let out = work.path().join("with");
    let run = ingest(
        source.path(),
        &out,
        &[
            &args[..],
            &["--add-train", table.to_str().unwrap()],
            &["--add-train", empty.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (base, with) = (Dataset::open(&base).unwrap(), Dataset::open(&out).unwrap());
    // Validation and test are the very same; train has the two samples at its end, with their
    // labels and their file as source.
    for split in ["valid", "test"] {
        assert_eq!(
            base.read_split(split).unwrap().pixels,
            with.read_split(split).unwrap().pixels
        );
    }
    let (before, after) = (
        base.read_split("train").unwrap(),
        with.read_split("train").unwrap(),
    );
    assert_eq!(after.labels.len(), before.labels.len() + 2);
    assert_eq!(after.labels[before.labels.len()..], [1, 2]);
    let per = (H * W) as usize;
    assert!(
        after.pixels[before.pixels.len()..before.pixels.len() + per]
            .iter()
            .all(|&p| p == 201)
    );
    assert!(
        after.pixels[before.pixels.len() + per..]
            .iter()
            .all(|&p| p == 202)
    );
    let sources = with.metadata_column("train", "source").unwrap();
    assert_eq!(sources[before.labels.len()..], ["window.csv", "window.csv"]);
    assert!(with.index.sources.iter().any(|s| s.file == "window.csv"));

    // A class the dataset does not have is refused, naming the table and its line.
    let unknown = work.path().join("unknown.csv");
    std::fs::write(
        &unknown,
        labelled_samples_csv(&[&production_sample("r3", "zebra", 9)]),
    )
    .unwrap();
    let run = ingest(
        source.path(),
        &work.path().join("refused"),
        &[&args[..], &["--add-train", unknown.to_str().unwrap()]].concat(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("unknown.csv") && stderr.contains("line 2") && stderr.contains("zebra"),
        "{stderr}"
    );
    assert!(!work.path().join("refused").exists());

    // Images of another size: the message says which shape the table had to have.
    let small = work.path().join("small.csv");
    std::fs::write(&small, "label,pixel1,pixel2\nb,1,2\n").unwrap();
    let run = ingest(
        source.path(),
        &work.path().join("refused"),
        &[&args[..], &["--add-train", small.to_str().unwrap()]].concat(),
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("small.csv")
            && stderr
                .contains("the dataset's image shape 3x2x1 needs 6 pixel columns, the file has 2"),
        "{stderr}"
    );
}
