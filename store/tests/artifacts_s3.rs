#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The artifact store on a real S3-compatible server.
//!
//! The tests open `TOUCAN_TEST_S3_ARTIFACTS` (`s3://BUCKET[/PREFIX]`), with the server and
//! credentials in the standard `AWS_*` variables; each test works under a key prefix of its own
//! below it, so tests run in parallel and repeatedly. Without that variable they print why and
//! pass, unless `TOUCAN_REQUIRE_S3=1`, where they fail. To run them:
//!
//! ```text
//! tests/s3/up /tmp/toucan-s3
//! (set -a; . /tmp/toucan-s3/env; cargo test -p toucan-store --test artifacts_s3)
//! tests/s3/down /tmp/toucan-s3
//! ```

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use toucan_core::records::{ArtifactKind, ArtifactRef};
use toucan_store::artifacts::{ArtifactError, ArtifactStore, Digest};
use toucan_test_harness::s3;

/// Above the store's whole-put limit (8 MiB), so that it goes up as a multipart upload of two
/// parts.
const LARGE_FILE_SIZE: usize = 8 * 1024 * 1024 + 12345;

/// A store under a fresh prefix of the test server's location, or `None` (after the harness
/// said why) when no server is configured.
fn s3_store(test: &str) -> Option<ArtifactStore> {
    let base = s3::location().unwrap()?;
    let location = format!(
        "{}/{test}-{}",
        base.trim_end_matches('/'),
        ulid::Ulid::new().to_string().to_lowercase()
    );
    Some(ArtifactStore::open(&location).unwrap())
}

/// The bucket and the full key of a blob, read back from the store's location.
fn blob_key(store: &ArtifactStore, digest: &str) -> (String, ObjectPath) {
    let rest = store.location().strip_prefix("s3://").unwrap();
    let (bucket, prefix) = rest.split_once('/').unwrap();
    let hex = Digest::parse(digest).unwrap().hex();
    let key = format!("{prefix}/blobs/sha256/{}/{hex}", &hex[..2]);
    (bucket.to_string(), ObjectPath::from(key))
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn large_content() -> Vec<u8> {
    (0..LARGE_FILE_SIZE).map(|i| (i % 251) as u8).collect()
}

/// A step's output: a small file, and a tree with a large file, an executable and an empty
/// directory.
fn write_outputs(out: &Path) {
    write(&out.join("metrics.json"), br#"{"accuracy": 0.93}"#);
    write(&out.join("model/weights.bin"), &large_content());
    write(&out.join("model/config.json"), br#"{"layers": 3}"#);
    write(
        &out.join("model/bin/serve.sh"),
        b"#!/bin/sh\necho serving\n",
    );
    std::fs::set_permissions(
        out.join("model/bin/serve.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::create_dir_all(out.join("model/empty")).unwrap();
}

#[tokio::test]
async fn file_and_tree_round_trip_with_the_filesystem_store_digests() {
    let Some(store) = s3_store("round-trip") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    write_outputs(&out);

    let file = store
        .put_path(&out.join("metrics.json"), &out)
        .await
        .unwrap();
    let tree = store.put_path(&out.join("model"), &out).await.unwrap();
    assert_eq!(file.kind, ArtifactKind::File);
    assert_eq!(tree.kind, ArtifactKind::Dir);
    assert_eq!(
        tree.size,
        LARGE_FILE_SIZE as u64 + 13 + 23,
        "the tree's size is its files' sizes"
    );

    // The same content in a directory store has the same digests.
    let fs_store = ArtifactStore::open(tmp.path().join("cas").to_str().unwrap()).unwrap();
    assert_eq!(
        fs_store
            .put_path(&out.join("metrics.json"), &out)
            .await
            .unwrap(),
        file
    );
    assert_eq!(
        fs_store.put_path(&out.join("model"), &out).await.unwrap(),
        tree
    );
    // Storing it again changes nothing.
    assert_eq!(
        store.put_path(&out.join("model"), &out).await.unwrap(),
        tree
    );

    let restored = tmp.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    store
        .materialize(&file, &restored.join("metrics.json"))
        .await
        .unwrap();
    store
        .materialize(&tree, &restored.join("model"))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(restored.join("metrics.json")).unwrap(),
        std::fs::read(out.join("metrics.json")).unwrap()
    );
    for rel in ["weights.bin", "config.json", "bin/serve.sh"] {
        assert!(
            std::fs::read(restored.join("model").join(rel)).unwrap()
                == std::fs::read(out.join("model").join(rel)).unwrap(),
            "{rel} comes back with other bytes"
        );
    }
    let mode = std::fs::metadata(restored.join("model/bin/serve.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "the executable stays executable");
    assert!(restored.join("model/empty").is_dir());
    assert!(store.missing([&file, &tree]).await.unwrap().is_empty());
    cleanup(&store).await;
}

#[tokio::test]
async fn large_files_go_up_in_parts_under_the_prefix() {
    let Some(store) = s3_store("multipart") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = large_content();
    write(&tmp.path().join("big"), &data);
    let big = store
        .put_path(&tmp.path().join("big"), tmp.path())
        .await
        .unwrap();
    assert_eq!(big.digest, Digest::of(&data).to_string());
    assert_eq!(big.size, LARGE_FILE_SIZE as u64);

    // Straight from the bucket: the blob is at PREFIX/blobs/sha256/xx/HEX, and its ETag is a
    // multipart upload's (`"<hash>-<number of parts>"`).
    let (bucket, key) = blob_key(&store, &big.digest);
    let s3 = AmazonS3Builder::from_env()
        .with_bucket_name(&bucket)
        .build()
        .unwrap();
    let meta = s3.head(&key).await.unwrap();
    assert_eq!(meta.size, LARGE_FILE_SIZE as u64);
    let e_tag = meta.e_tag.unwrap_or_default();
    assert!(
        e_tag.trim_matches('"').ends_with("-2"),
        "{key}: ETag {e_tag} is not that of a two-part upload"
    );

    store
        .materialize(&big, &tmp.path().join("big2"))
        .await
        .unwrap();
    assert!(std::fs::read(tmp.path().join("big2")).unwrap() == data);
    cleanup(&store).await;
}

#[tokio::test]
async fn missing_blobs_and_gc() {
    let Some(store) = s3_store("gc") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("d/a"), b"a");
    write(&tmp.path().join("d/b"), b"b");
    write(&tmp.path().join("f"), b"f");
    let dir = store
        .put_path(&tmp.path().join("d"), tmp.path())
        .await
        .unwrap();
    let file = store
        .put_path(&tmp.path().join("f"), tmp.path())
        .await
        .unwrap();
    assert!(store.missing([&dir, &file]).await.unwrap().is_empty());

    // The listing's last-modified times are real: blobs written just now are newer than ten
    // minutes ago, and older than ten minutes from now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let recent = store.gc(&BTreeSet::new(), now_ms - 600_000).await.unwrap();
    assert_eq!(recent.blobs_removed, 0, "blobs newer than the cutoff stay");
    assert_eq!(recent.blobs_kept, 4, "a manifest, two files and a file");
    let report = store
        .gc(&BTreeSet::from([dir.digest.clone()]), now_ms + 600_000)
        .await
        .unwrap();
    assert_eq!(report.blobs_removed, 1, "only the unreferenced file goes");
    assert_eq!(report.bytes_removed, 1);
    assert_eq!(report.blobs_kept, 3);

    assert!(!store.has_blob(&Digest::of(b"f")).await.unwrap());
    assert_eq!(
        store.missing([&file]).await.unwrap(),
        vec![file.digest.clone()]
    );
    assert!(store.missing([&dir]).await.unwrap().is_empty());
    store.delete_blob(&Digest::of(b"a")).await.unwrap();
    assert_eq!(
        store.missing([&dir]).await.unwrap(),
        vec![Digest::of(b"a").to_string()]
    );
    let err = store
        .materialize(&file, &tmp.path().join("gone"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ArtifactError::Backend {
                source: object_store::Error::NotFound { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(store.location()), "{err}");
    cleanup(&store).await;
}

#[tokio::test]
async fn a_corrupt_manifest_is_reported() {
    let Some(store) = s3_store("corrupt") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let digest = store
        .put_bytes(bytes::Bytes::from_static(b"not a manifest"))
        .await
        .unwrap();
    let not_a_tree = ArtifactRef {
        digest: digest.to_string(),
        size: 14,
        kind: ArtifactKind::Dir,
    };
    let err = store
        .materialize(&not_a_tree, &tmp.path().join("tree"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
    cleanup(&store).await;
}

#[tokio::test]
async fn bad_locations_are_named_in_errors() {
    for bad in ["s3://", "s3://Not_A_Bucket/x", "s3://toucan/a//b"] {
        let err = ArtifactStore::open(bad).unwrap_err();
        assert!(
            matches!(err, ArtifactError::Location { .. }),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains(bad), "{bad}: {err}");
    }
    let err = ArtifactStore::open("gs://toucan").unwrap_err();
    assert!(
        err.to_string().contains("s3://"),
        "the accepted schemes: {err}"
    );

    // A bucket the server does not have: opening contacts nothing, the first write fails.
    if s3_store("no-bucket").is_none() {
        return;
    }
    let location = format!(
        "s3://toucan-missing-{}/x",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let store = ArtifactStore::open(&location).unwrap();
    let err = store
        .put_bytes(bytes::Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, ArtifactError::Backend { .. }), "{err}");
    assert!(err.to_string().contains(&location), "{err}");
}

/// Removes everything the test stored (its prefix is its own).
async fn cleanup(store: &ArtifactStore) {
    store.gc(&BTreeSet::new(), i64::MAX).await.unwrap();
}
