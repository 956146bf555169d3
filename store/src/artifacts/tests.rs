use std::collections::BTreeSet;

use super::*;

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn file_round_trip_and_dedup() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(tmp.path().join("cas").to_str().unwrap()).unwrap();
    let out = tmp.path().join("out");
    write(&out.join("a.txt"), b"hello");
    let a = store.put_path(&out.join("a.txt"), &out).await.unwrap();
    assert_eq!(a.kind, ArtifactKind::File);
    assert_eq!(a.size, 5);
    assert_eq!(a.digest, Digest::of(b"hello").to_string());
    write(&out.join("b.txt"), b"hello");
    let b = store.put_path(&out.join("b.txt"), &out).await.unwrap();
    assert_eq!(a, b, "same bytes at another path have the same digest");
    let dest = tmp.path().join("restored");
    store.materialize(&a, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
}

#[tokio::test]
async fn large_file_goes_up_in_parts() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(tmp.path().join("cas").to_str().unwrap()).unwrap();
    let data: Vec<u8> = (0..(WHOLE_PUT_LIMIT as usize + 12345))
        .map(|i| (i % 251) as u8)
        .collect();
    write(&tmp.path().join("big"), &data);
    let r = store
        .put_path(&tmp.path().join("big"), tmp.path())
        .await
        .unwrap();
    assert_eq!(r.digest, Digest::of(&data).to_string());
    store
        .materialize(&r, &tmp.path().join("big2"))
        .await
        .unwrap();
    assert_eq!(std::fs::read(tmp.path().join("big2")).unwrap(), data);
}

#[tokio::test]
async fn directory_digest_depends_on_content_not_location() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open("memory://").unwrap();
    for d in ["one", "two"] {
        write(&tmp.path().join(d).join("x/y.bin"), b"123");
        write(&tmp.path().join(d).join("z.txt"), b"z");
        std::fs::create_dir_all(tmp.path().join(d).join("empty")).unwrap();
    }
    let one = store
        .put_path(&tmp.path().join("one"), tmp.path())
        .await
        .unwrap();
    let two = store
        .put_path(&tmp.path().join("two"), tmp.path())
        .await
        .unwrap();
    assert_eq!(one, two);
    assert_eq!(one.kind, ArtifactKind::Dir);
    assert_eq!(one.size, 4);
    write(&tmp.path().join("two/z.txt"), b"Z");
    let changed = store
        .put_path(&tmp.path().join("two"), tmp.path())
        .await
        .unwrap();
    assert_ne!(one.digest, changed.digest);

    let dest = tmp.path().join("restored");
    store.materialize(&one, &dest).await.unwrap();
    assert_eq!(std::fs::read(dest.join("x/y.bin")).unwrap(), b"123");
    assert!(dest.join("empty").is_dir());
}

#[tokio::test]
async fn escaping_symlinks_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open("memory://").unwrap();
    let out = tmp.path().join("out");
    write(&tmp.path().join("secret"), b"s");
    std::fs::create_dir_all(out.join("dir")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), out.join("dir/abs")).unwrap();
    let err = store.put_path(&out.join("dir"), &out).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Escapes { .. }), "{err}");

    std::fs::remove_file(out.join("dir/abs")).unwrap();
    std::os::unix::fs::symlink("../../secret", out.join("dir/rel")).unwrap();
    let err = store.put_path(&out.join("dir"), &out).await.unwrap_err();
    assert!(matches!(err, ArtifactError::Escapes { .. }), "{err}");

    std::fs::remove_file(out.join("dir/rel")).unwrap();
    write(&out.join("dir/real"), b"r");
    std::os::unix::fs::symlink("real", out.join("dir/inside")).unwrap();
    let ok = store.put_path(&out.join("dir"), &out).await.unwrap();
    let manifest = store
        .manifest(&Digest::parse(&ok.digest).unwrap())
        .await
        .unwrap();
    assert_eq!(manifest.entries.len(), 2);

    std::os::unix::fs::symlink(tmp.path().join("secret"), out.join("top")).unwrap();
    assert!(matches!(
        store.put_path(&out.join("top"), &out).await.unwrap_err(),
        ArtifactError::Escapes { .. }
    ));
    assert!(matches!(
        store
            .put_path(&out.join("nothing"), &out)
            .await
            .unwrap_err(),
        ArtifactError::Missing { .. }
    ));
}

#[tokio::test]
async fn missing_and_gc() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(tmp.path().join("cas").to_str().unwrap()).unwrap();
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

    let report = store
        .gc(&BTreeSet::from([dir.digest.clone()]), i64::MAX)
        .await
        .unwrap();
    assert_eq!(report.blobs_removed, 1, "only the unreferenced file goes");
    assert_eq!(report.blobs_kept, 3);
    let recent = store.gc(&BTreeSet::new(), 0).await.unwrap();
    assert_eq!(
        recent.blobs_removed, 0,
        "blobs newer than the cutoff are kept"
    );
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
}

#[test]
fn manifest_paths_cannot_escape() {
    for bad in ["../x", "/etc/passwd", "a/../../b", ""] {
        assert!(
            ManifestEntry::dir(bad.to_string())
                .safe_relative_path()
                .is_err(),
            "{bad}"
        );
    }
    assert!(
        ManifestEntry::dir("a/b".to_string())
            .safe_relative_path()
            .is_ok()
    );
}

#[tokio::test]
async fn a_bare_digest_resolves_to_the_file_or_directory_it_names() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(tmp.path().join("cas").to_str().unwrap()).unwrap();
    let dir = tmp.path().join("dir");
    write(&dir.join("a.txt"), b"hello");
    write(&dir.join("sub/b.txt"), b"bye");
    let tree = store.put_path(&dir, &dir).await.unwrap();
    let file = store.put_path(&dir.join("a.txt"), &dir).await.unwrap();
    // A file that looks like JSON but is no manifest is a file.
    let json = store
        .put_bytes(bytes::Bytes::from_static(b"{\"format\":\"csv\"}"))
        .await
        .unwrap();
    for (artifact, kind, size) in [
        (&tree, ArtifactKind::Dir, 8),
        (&file, ArtifactKind::File, 5),
    ] {
        let digest = Digest::parse(&artifact.digest).unwrap();
        let resolved = store.resolve(&digest).await.unwrap();
        assert_eq!(resolved, *artifact);
        assert_eq!((resolved.kind, resolved.size), (kind, size));
    }
    assert_eq!(store.resolve(&json).await.unwrap().kind, ArtifactKind::File);
    let absent = Digest::of(b"never stored");
    let err = store.resolve(&absent).await.unwrap_err().to_string();
    assert!(
        err.contains(&absent.to_string()) && err.contains("not in the artifact store"),
        "{err}"
    );
}

#[test]
fn a_manifest_begins_with_its_prefix() {
    let bytes = DirManifest::default().to_bytes();
    assert!(bytes.starts_with(tree::MANIFEST_PREFIX.as_bytes()));
}
