//! `toucan-worker ingest` on image folders and CSV pixel tables, as a user runs it: images and
//! CSVs written here with the `image` crate, the real binary, and the dataset read back through
//! the library. Every image is one flat colour that encodes its class, so a record shows
//! whether it kept its label.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use toucan_worker::dataset::{Dataset, ImageShape, SPLITS};

mod common;

use common::{fixture, ingest, listing, tree, write_image};

/// The grey level of class `k`'s images.
fn gray(k: u16) -> u8 {
    30 + 60 * k as u8
}

/// The colour of class `k`'s images.
fn rgb(k: u16) -> [u8; 3] {
    [40 + 60 * k as u8, 200 - 50 * k as u8, 90]
}

/// JPEG is lossy, even on a flat image.
const JPEG_SLACK: u8 = 4;

fn shape(height: u32, width: u32, channels: u32) -> ImageShape {
    ImageShape {
        height,
        width,
        channels,
    }
}

/// Ingests `source` into a fresh directory and opens the result.
fn ingest_ok(source: &Path, extra: &[&str]) -> (tempfile::TempDir, Dataset) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    let run = ingest(source, &out, extra);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let ds = Dataset::open(&out).unwrap();
    (work, ds)
}

/// Every record of every split: label and pixels.
fn records(ds: &Dataset) -> Vec<(u16, Vec<u8>)> {
    let per_image = ds.index.image.pixels();
    let mut all = Vec::new();
    for split in SPLITS {
        let data = ds.read_split(split).unwrap();
        for (i, &label) in data.labels.iter().enumerate() {
            all.push((
                label,
                data.pixels[i * per_image..(i + 1) * per_image].to_vec(),
            ));
        }
    }
    all
}

/// Asserts that every value of `pixels` is within `slack` of the repeated `want`.
fn assert_flat(pixels: &[u8], want: &[u8], slack: u8, what: &str) {
    for (i, (&got, &want)) in pixels.iter().zip(want.iter().cycle()).enumerate() {
        assert!(
            got.abs_diff(want) <= slack,
            "{what}: value {i} is {got}, expected {want}±{slack}"
        );
    }
}

/// Runs an ingest that must fail: exit code 2, stderr naming `names` and saying `says`, and
/// nothing left where the dataset would have gone.
fn assert_rejected(source: &Path, extra: &[&str], names: &str, says: &str) {
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("ds");
    let run = ingest(source, &out, extra);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(names), "{stderr:?} should name {names:?}");
    assert!(stderr.contains(says), "{stderr:?} should say {says:?}");
    assert!(!out.exists());
    assert!(
        listing(work.path()).is_empty(),
        "left {:?}",
        listing(work.path())
    );
}

/// `bird/` (2 JPEG), `cat/` (3 PNG), `dog/` (2 PNG), all grayscale 4x5, with a hidden file, a
/// hidden folder and a README that are not images.
fn gray_classes() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (k, class, files) in [
        (0, "bird", &["b1.jpg", "b2.jpeg"][..]),
        (1, "cat", &["c1.png", "c2.PNG", "c3.png"][..]),
        (2, "dog", &["d1.png", "d2.png"][..]),
    ] {
        for file in files {
            write_image(&d.join(class).join(file), 4, 5, &[gray(k)]);
        }
    }
    std::fs::write(d.join("cat/.DS_Store"), b"junk").unwrap();
    std::fs::create_dir(d.join(".cache")).unwrap();
    std::fs::write(d.join("README.txt"), b"about these images").unwrap();
    dir
}

// === class folders ===

#[test]
fn class_folders_give_sorted_classes_and_one_channel_when_every_file_is_grayscale() {
    let source = gray_classes();
    let (_work, ds) = ingest_ok(source.path(), &["--split", "5:1:1"]);
    assert_eq!(ds.index.classes, ["bird", "cat", "dog"]);
    assert_eq!(ds.index.image, shape(4, 5, 1));
    let files: Vec<&str> = ds.index.sources.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        files,
        [
            "bird/b1.jpg",
            "bird/b2.jpeg",
            "cat/c1.png",
            "cat/c2.PNG",
            "cat/c3.png",
            "dog/d1.png",
            "dog/d2.png"
        ]
    );
    let all = records(&ds);
    assert_eq!(all.len(), 7);
    let mut counts = [0; 3];
    for (label, pixels) in &all {
        assert_flat(pixels, &[gray(*label)], JPEG_SLACK, "a grayscale record");
        counts[*label as usize] += 1;
    }
    assert_eq!(counts, [2, 3, 2]);
}

#[test]
fn class_names_set_the_class_order() {
    let source = gray_classes();
    let (_work, ds) = ingest_ok(source.path(), &["--class-names", "dog,cat,bird"]);
    assert_eq!(ds.index.classes, ["dog", "cat", "bird"]);
    for (label, pixels) in records(&ds) {
        assert_flat(&pixels, &[gray(2 - label)], JPEG_SLACK, "a record");
    }
}

#[test]
fn one_colour_file_makes_the_dataset_rgb() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    write_image(&d.join("a/1.png"), 3, 3, &rgb(0));
    write_image(&d.join("a/2.JPG"), 3, 3, &rgb(0));
    write_image(&d.join("b/1.png"), 3, 3, &[gray(1)]);
    let (_work, ds) = ingest_ok(d, &[]);
    assert_eq!(ds.index.image, shape(3, 3, 3));
    for (label, pixels) in records(&ds) {
        match label {
            0 => assert_flat(&pixels, &rgb(0), JPEG_SLACK, "an RGB record"),
            _ => assert_flat(&pixels, &[gray(1); 3], 0, "a grayscale file, repeated"),
        }
    }
}

#[test]
fn channels_converts_both_ways() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    write_image(&d.join("a/1.png"), 2, 2, &[255, 0, 0]);
    write_image(&d.join("b/1.png"), 2, 2, &[gray(1)]);
    let (_work, ds) = ingest_ok(d, &["--channels", "1"]);
    assert_eq!(ds.index.image, shape(2, 2, 1));
    for (label, pixels) in records(&ds) {
        // Rec. 709 luma of pure red: 0.2126 * 255 = 54.
        let want = if label == 0 { 54 } else { gray(1) };
        assert_flat(&pixels, &[want], 0, "a converted record");
    }

    let gray_only = gray_classes();
    let (_work, ds) = ingest_ok(gray_only.path(), &["--channels", "3"]);
    assert_eq!(ds.index.image, shape(4, 5, 3));
    for (label, pixels) in records(&ds) {
        assert_flat(&pixels, &[gray(label); 3], JPEG_SLACK, "a repeated record");
    }
}

#[test]
fn resize_brings_every_image_to_one_size() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    write_image(&d.join("a/big.png"), 12, 9, &rgb(0));
    write_image(&d.join("b/small.png"), 2, 3, &rgb(1));
    write_image(&d.join("b/square.jpg"), 8, 8, &rgb(1));
    let (_work, ds) = ingest_ok(d, &["--resize", "6x4"]);
    assert_eq!(ds.index.image, shape(6, 4, 3));
    let all = records(&ds);
    assert_eq!(all.len(), 3);
    for (label, pixels) in all {
        // A flat image stays flat under the bilinear filter.
        assert_flat(&pixels, &rgb(label), JPEG_SLACK, "a resized record");
    }
}

#[test]
fn the_reference_measures_the_images_as_ingested() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    for (class, level) in [("black", 0), ("white", 255)] {
        for file in ["1.png", "2.png"] {
            write_image(&d.join(class).join(file), 12, 9, &[level]);
        }
    }
    let (_work, ds) = ingest_ok(
        d,
        &["--resize", "6x4", "--channels", "3", "--split", "1:0:0"],
    );
    let rows = ds.reference().unwrap().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        // After --resize and --channels, not as the files were.
        let s = &row.stats;
        assert_eq!((s.height, s.width, s.channels), (6, 4, 3));
        let level = match row.class.as_str() {
            "white" => 1.0,
            "black" => 0.0,
            other => panic!("class {other:?}"),
        };
        assert_eq!(s.brightness, level);
        assert_eq!(s.channel_means, vec![level; 3]);
        assert_eq!((s.contrast, s.sharpness), (0.0, 0.0));
    }
}

#[test]
fn images_of_different_sizes_need_resize() {
    let source = gray_classes();
    write_image(&source.path().join("dog/d3.png"), 7, 5, &[gray(2)]);
    assert_rejected(
        source.path(),
        &[],
        "dog/d3.png",
        "the image is 7x5 (height x width) but bird/b1.jpg is 4x5",
    );
}

#[test]
fn the_same_folder_gives_the_same_bytes() {
    let source = gray_classes();
    let work = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let out = work.path().join(name);
        let result = ingest(
            source.path(),
            &out,
            &["--seed", seed, "--resize", "3x3", "--split", "3:2:2"],
        );
        assert!(result.status.success());
        tree(&out)
    };
    let first = run("a", "4");
    assert!(first.len() >= 5, "{:?}", first.keys());
    assert_eq!(first, run("b", "4"));
    assert_ne!(first, run("c", "5"));
}

// === labels CSV ===

#[test]
fn a_labels_csv_labels_a_nested_folder_in_path_order() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    // Class names sort as boot (0), shirt (1).
    write_image(&d.join("2.png"), 3, 2, &[gray(1)]);
    write_image(&d.join("x/1.png"), 3, 2, &[gray(0)]);
    write_image(&d.join("y/z/3.jpg"), 3, 2, &[gray(1)]);
    write_image(&d.join("unlisted.png"), 9, 9, &[0]);
    std::fs::write(
        d.join("labels.csv"),
        "label,file\nshirt,y/z/3.jpg\nboot, ./x/1.png\nshirt,2.png\n",
    )
    .unwrap();
    let (_work, ds) = ingest_ok(d, &["--labels", d.join("labels.csv").to_str().unwrap()]);
    assert_eq!(ds.index.classes, ["boot", "shirt"]);
    assert_eq!(ds.index.image, shape(3, 2, 1));
    let files: Vec<&str> = ds.index.sources.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(files, ["labels.csv", "2.png", "x/1.png", "y/z/3.jpg"]);
    let all = records(&ds);
    assert_eq!(all.len(), 3);
    for (label, pixels) in all {
        assert_flat(&pixels, &[gray(label)], JPEG_SLACK, "a listed record");
    }
}

#[test]
fn labels_csv_columns_and_numeric_labels() {
    let source = tempfile::tempdir().unwrap();
    let d = source.path();
    for k in 0..3u16 {
        write_image(&d.join(format!("img{k}.png")), 2, 2, &rgb(k));
    }
    let labels = d.join("meta.csv");
    std::fs::write(
        &labels,
        "id,path,y\n1,img0.png,0\n2,img1.png,1\n3,img2.png,2\n",
    )
    .unwrap();
    let args = [
        "--labels",
        labels.to_str().unwrap(),
        "--image-column",
        "path",
        "--label-column",
        "y",
        "--class-names",
        "red,green,blue",
    ];
    let (_work, ds) = ingest_ok(d, &args);
    assert_eq!(ds.index.classes, ["red", "green", "blue"]);
    for (label, pixels) in records(&ds) {
        assert_flat(&pixels, &rgb(label), 0, "a record labelled by number");
    }
}

// === CSV pixel tables ===

/// A Kaggle-style table `label,pixel1..pixelN` whose row `r` has label `labels[r]` and pixel
/// `i` equal to `10 * r + i` (mod 256).
fn pixel_table(path: &Path, pixels: usize, labels: &[&str]) {
    let mut text = String::from("label");
    for i in 1..=pixels {
        text.push_str(&format!(",pixel{i}"));
    }
    text.push('\n');
    for (r, label) in labels.iter().enumerate() {
        text.push_str(label);
        for i in 0..pixels {
            text.push_str(&format!(",{}", (10 * r + i) % 256));
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_pixel_table_gives_square_grayscale_images() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("fashion-mnist_train.csv");
    pixel_table(&table, 16, &["2", "0", "1", "2", "0"]);
    let (_work, ds) = ingest_ok(&table, &["--split", "1:1:1"]);
    assert_eq!(ds.index.image, shape(4, 4, 1));
    assert_eq!(ds.index.classes, ["0", "1", "2"]);
    assert_eq!(ds.index.sources[0].file, "fashion-mnist_train.csv");
    let mut all = records(&ds);
    all.sort_by_key(|(_, p)| p[0]);
    let want_labels = [2, 0, 1, 2, 0];
    for (r, (label, pixels)) in all.iter().enumerate() {
        assert_eq!(*label, want_labels[r]);
        let want: Vec<u8> = (0..16).map(|i| (10 * r + i) as u8).collect();
        assert_eq!(*pixels, want, "row {r} keeps its pixel order");
    }
}

#[test]
fn a_pixel_table_with_a_shape_names_and_a_channel_change() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("rgb.csv");
    pixel_table(&table, 12, &["cat", "dog", "cat"]);
    let (_work, ds) = ingest_ok(&table, &["--image-shape", "2x2x3", "--format", "csv"]);
    assert_eq!(ds.index.image, shape(2, 2, 3));
    assert_eq!(ds.index.classes, ["cat", "dog"]);

    let (_work, ds) = ingest_ok(&table, &["--image-shape", "2x2x3", "--channels", "1"]);
    assert_eq!(ds.index.image, shape(2, 2, 1));
    assert_eq!(records(&ds).len(), 3);
}

#[test]
fn idx_sources_take_channels_and_resize_too() {
    let source = fixture();
    let (_work, ds) = ingest_ok(source.path(), &["--channels", "3", "--resize", "6x4"]);
    assert_eq!(ds.index.image, shape(6, 4, 3));
    for (label, pixels) in records(&ds) {
        // The fixture's record i is flat at value i, labelled i % 3.
        let id = pixels[0];
        assert_eq!(label, u16::from(id % 3));
        assert_flat(&pixels, &[id], 0, "a resized IDX record");
    }
}

// === errors ===

#[test]
fn rejects_a_corrupt_or_truncated_image() {
    let source = gray_classes();
    let path = source.path().join("dog/d2.png");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert_rejected(source.path(), &[], "dog/d2.png", "cannot decode the image");

    let source = gray_classes();
    std::fs::write(source.path().join("bird/b1.jpg"), b"not a jpeg at all").unwrap();
    assert_rejected(source.path(), &[], "bird/b1.jpg", "cannot decode the image");
}

#[test]
fn rejects_other_files_and_folders_in_class_folders() {
    let source = gray_classes();
    std::fs::write(source.path().join("cat/notes.txt"), b"x").unwrap();
    assert_rejected(
        source.path(),
        &[],
        "cat/notes.txt",
        "not a .png, .jpg or .jpeg file",
    );

    let source = gray_classes();
    write_image(&source.path().join("cat/kittens/k1.png"), 4, 5, &[gray(1)]);
    assert_rejected(
        source.path(),
        &[],
        "cat/kittens",
        "a folder inside a class folder",
    );

    let source = gray_classes();
    write_image(&source.path().join("stray.png"), 4, 5, &[0]);
    assert_rejected(source.path(), &[], "stray.png", "has no class");
}

#[test]
fn rejects_an_empty_class_folder() {
    let source = gray_classes();
    std::fs::create_dir(source.path().join("emu")).unwrap();
    std::fs::write(source.path().join("emu/.keep"), b"").unwrap();
    assert_rejected(source.path(), &[], "emu", "empty class folder");
}

#[test]
fn rejects_a_source_without_images() {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("README.txt"), b"nothing here").unwrap();
    let dir = source.path().display().to_string();
    assert_rejected(source.path(), &[], &dir, "nothing to ingest");
    assert_rejected(source.path(), &["--format", "folder"], &dir, "no images");

    let labels = source.path().join("labels.csv");
    std::fs::write(&labels, "file,label\n").unwrap();
    assert_rejected(
        source.path(),
        &["--labels", labels.to_str().unwrap()],
        "labels.csv",
        "no images",
    );
}

#[test]
fn rejects_a_class_folder_missing_from_class_names() {
    let source = gray_classes();
    assert_rejected(
        source.path(),
        &["--class-names", "bird,cat,dgo"],
        "dog",
        "\"dog\" is not one of --class-names (did you mean \"dgo\"?)",
    );
}

/// A folder with `a.png` and `b.png` and a labels CSV with `text`.
fn with_labels(text: &str) -> (tempfile::TempDir, String) {
    let source = tempfile::tempdir().unwrap();
    write_image(&source.path().join("a.png"), 2, 2, &[gray(0)]);
    write_image(&source.path().join("b.png"), 2, 2, &[gray(1)]);
    let labels = source.path().join("labels.csv");
    std::fs::write(&labels, text).unwrap();
    (source, labels.to_str().unwrap().to_string())
}

#[test]
fn rejects_labels_csv_problems_with_their_line() {
    let cases = [
        (
            "file,label\na.png,x\nmissing.png,y\n",
            "line 3, column \"file\": missing.png does not exist in",
        ),
        (
            "file,label\na.png,x\n../b.png,y\n",
            "line 3, column \"file\": ../b.png: paths must be relative to --source",
        ),
        (
            "file,label\na.png,x\n./a.png,y\n",
            "a.png is listed twice (lines 2 and 3)",
        ),
        (
            "file,label\na.png,x\nb.gif,y\n",
            "line 3, column \"file\": b.gif: not a .png, .jpg or .jpeg file",
        ),
        ("file,label\na.png,x\nb.png\n", "line 3"),
        (
            "file,label\na.png,\n",
            "line 2, column \"label\": the label is empty",
        ),
    ];
    for (text, says) in cases {
        let (source, labels) = with_labels(text);
        assert_rejected(source.path(), &["--labels", &labels], "labels.csv", says);
    }
}

#[test]
fn rejects_a_wrong_column_and_suggests_the_closest() {
    let (source, labels) = with_labels("file,label\na.png,x\n");
    assert_rejected(
        source.path(),
        &["--labels", &labels, "--label-column", "lable"],
        "labels.csv",
        "no column \"lable\" (--label-column) (did you mean \"label\"?); the columns are: file, label",
    );
    assert_rejected(
        source.path(),
        &["--labels", &labels, "--image-column", "filename"],
        "labels.csv",
        "no column \"filename\" (--image-column) (did you mean \"file\"?)",
    );
    assert_rejected(
        source.path(),
        &[
            "--labels",
            &source.path().join("nope.csv").display().to_string(),
        ],
        "--labels",
        "nope.csv' for '--labels <FILE.csv>': does not exist",
    );

    let table = source.path().join("t.csv");
    pixel_table(&table, 4, &["0"]);
    assert_rejected(
        &table,
        &["--label-column", "class"],
        "t.csv",
        "no column \"class\" (--label-column); the columns are: label, pixel1, pixel2, pixel3, pixel4",
    );
}

#[test]
fn rejects_pixel_values_that_are_not_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.csv");
    for (bad, says) in [
        ("256", "\"256\" is not an integer in 0..=255"),
        ("-1", "\"-1\" is not an integer in 0..=255"),
        ("1.5", "\"1.5\" is not an integer in 0..=255"),
    ] {
        std::fs::write(
            &table,
            format!("label,pixel1,pixel2,pixel3,pixel4\n0,1,2,3,4\n1,1,2,{bad},4\n"),
        )
        .unwrap();
        assert_rejected(&table, &[], "t.csv", "line 3, column 4 (\"pixel3\")");
        assert_rejected(&table, &[], "t.csv", says);
    }
}

#[test]
fn rejects_a_pixel_table_whose_shape_is_unclear() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.csv");
    pixel_table(&table, 12, &["0", "1"]);
    assert_rejected(&table, &[], "t.csv", "12 pixel columns");
    assert_rejected(&table, &[], "t.csv", "give --image-shape HxWxC");
    assert_rejected(
        &table,
        &["--image-shape", "2x2x1"],
        "t.csv",
        "--image-shape 2x2x1 needs 4 pixel columns, the file has 12",
    );
    std::fs::write(&table, "label,pixel1\n").unwrap();
    assert_rejected(&table, &[], "t.csv", "no records");
}

#[test]
fn rejects_more_than_65535_classes() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t.csv");
    let names: Vec<String> = (0..65_536).map(|i| format!("c{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    pixel_table(&table, 1, &names);
    assert_rejected(
        &table,
        &[],
        "t.csv",
        "65536 distinct labels; at most 65535 classes are supported",
    );
    pixel_table(&table, 1, &["0", "65535"]);
    assert_rejected(
        &table,
        &[],
        "t.csv",
        "line 3, column 1 (\"label\"): label 65535 is too large",
    );
}

#[test]
fn rejects_a_format_or_flag_that_does_not_fit_the_source() {
    let source = gray_classes();
    let dir = source.path().display().to_string();
    assert_rejected(source.path(), &["--format", "csv"], &dir, "is a directory");
    assert_rejected(
        source.path(),
        &["--image-shape", "4x5x1"],
        "--image-shape",
        "read as folder",
    );
    assert_rejected(
        source.path(),
        &["--image-column", "file"],
        "--image-column",
        "give --labels",
    );
    let idx = fixture();
    let labels = tempfile::NamedTempFile::new().unwrap();
    assert_rejected(
        idx.path(),
        &[
            "--format",
            "idx",
            "--labels",
            labels.path().to_str().unwrap(),
        ],
        "--labels",
        "read as idx",
    );
    let table = source.path().join("README.txt");
    assert_rejected(&table, &[], "README.txt", "only .csv files");
}
