//! Storage: one conformance suite run against a local directory, memory and the real S3 server.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use planrun::storage::{self, LocalConfig, MemoryStorage, ObjectMeta, Storage, StorageConfig};

use crate::support;
use crate::support::stores::*;

/// The contract every store keeps. `prefix` is a fresh, empty key prefix ending in `/`.
async fn conformance(store: Arc<dyn Storage>, prefix: &str) {
    let store = store.as_ref();
    let k = |s: &str| format!("{prefix}{s}");

    // put_bytes / head / get, with the MD5 computed here as the reference.
    let small = data(1000, 1);
    let meta = store
        .put_bytes(&k("small.bin"), small.clone())
        .await
        .unwrap();
    assert_eq!(meta.key, k("small.bin"));
    assert_eq!(meta.size, 1000);
    assert_eq!(meta.md5.as_deref(), Some(md5_of(&small).as_str()));
    let head = store
        .head(&k("small.bin"))
        .await
        .unwrap()
        .expect("just written");
    assert_eq!(head.size, 1000);
    if let Some(md5) = &head.md5 {
        assert_eq!(
            *md5,
            md5_of(&small),
            "a head's MD5, when given, is the content's"
        );
    }
    assert_eq!(read_all(store, &k("small.bin")).await, small);

    // Missing keys: head says None, get says NotFound and names the key and the bucket id.
    assert_eq!(store.head(&k("missing")).await.unwrap(), None);
    let err = store
        .get(&k("missing"))
        .await
        .err()
        .expect("get of a missing key fails");
    assert!(err.is_not_found(), "{err}");
    assert!(!err.is_transient());
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("`{}`", k("missing")))
            && msg.contains(&format!("bucket `{}`", store.name())),
        "{msg}"
    );

    // A streamed put of many chunks, an empty object, and an overwrite.
    let streamed = data(300_000, 2);
    let meta = store
        .put(&k("streamed.bin"), chunked(streamed.clone(), 7_777))
        .await
        .unwrap();
    assert_eq!(
        (meta.size, meta.md5.clone()),
        (300_000, Some(md5_of(&streamed)))
    );
    assert_eq!(read_all(store, &k("streamed.bin")).await, streamed);
    let meta = store.put_bytes(&k("empty"), Bytes::new()).await.unwrap();
    assert_eq!(
        (meta.size, meta.md5.as_deref()),
        (0, Some("d41d8cd98f00b204e9800998ecf8427e"))
    );
    assert!(read_all(store, &k("empty")).await.is_empty());
    let replacement = data(10, 3);
    store
        .put_bytes(&k("small.bin"), replacement.clone())
        .await
        .unwrap();
    assert_eq!(read_all(store, &k("small.bin")).await, replacement);

    // Larger than the S3 part size (8 MiB): multipart on S3, streamed to a temp file locally.
    let big = data(20 * MIB + 123, 4);
    let meta = store
        .put(&k("big.bin"), chunked(big.clone(), MIB / 3))
        .await
        .unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert_eq!(meta.md5.as_deref(), Some(md5_of(&big).as_str()));
    assert_eq!(
        store.head(&k("big.bin")).await.unwrap().unwrap().size,
        big.len() as u64
    );
    assert_eq!(md5_of(&read_all(store, &k("big.bin")).await), md5_of(&big));
    // put_bytes above the part size takes the same path.
    let meta = store
        .put_bytes(&k("big2.bin"), big.slice(..9 * MIB))
        .await
        .unwrap();
    assert_eq!(meta.md5.as_deref(), Some(md5_of(&big[..9 * MIB]).as_str()));
    store.delete(&[k("big.bin"), k("big2.bin")]).await.unwrap();

    // Nested prefixes: listing is recursive, prefix-based (not directory-based), in key order.
    for (i, name) in [
        "n/a/1",
        "n/a/2",
        "n/a.txt",
        "n/b/c/d",
        "n/ab",
        "n/a/deep/er/x",
    ]
    .iter()
    .enumerate()
    {
        store
            .put_bytes(&k(name), data(i + 1, 10 + i as u64))
            .await
            .unwrap();
    }
    assert_eq!(
        keys(store, &k("n/")).await,
        [
            "n/a.txt",
            "n/a/1",
            "n/a/2",
            "n/a/deep/er/x",
            "n/ab",
            "n/b/c/d"
        ]
        .map(&k)
    );
    assert_eq!(
        keys(store, &k("n/a/")).await,
        ["n/a/1", "n/a/2", "n/a/deep/er/x"].map(&k)
    );
    assert_eq!(
        keys(store, &k("n/a")).await,
        ["n/a.txt", "n/a/1", "n/a/2", "n/a/deep/er/x", "n/ab"].map(&k)
    );
    assert!(keys(store, &k("n/zz")).await.is_empty());
    let listed: Vec<ObjectMeta> = store.list(&k("n/b/")).try_collect().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].key.clone(), listed[0].size), (k("n/b/c/d"), 4));

    // More than one S3 page (1,000 keys), written 32 at a time.
    let many: Vec<String> = (0..1100).map(|i| k(&format!("many/{i:05}"))).collect();
    stream::iter(many.iter().cloned())
        .map(|key| async move {
            store
                .put_bytes(&key, Bytes::from(key.clone().into_bytes()))
                .await
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let listed = keys(store, &k("many/")).await;
    assert_eq!(listed, many, "all 1100 keys, once each, in order");

    // Delete: more than one DeleteObjects batch, missing keys included.
    let mut doomed = many.clone();
    doomed.push(k("many/never-existed"));
    store.delete(&doomed).await.unwrap();
    assert!(keys(store, &k("many/")).await.is_empty());
    store.delete(&[k("never/existed")]).await.unwrap();
    store.delete(&[]).await.unwrap();

    cleanup(store, prefix).await;
}

#[tokio::test]
async fn local_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::Local(LocalConfig {
        name: "local_bucket".into(),
        path: dir.path().to_path_buf(),
    });
    let store = storage::open(&config).await.unwrap();
    store.check().await.unwrap();
    conformance(store, "conformance/").await;
    // Nothing left behind: no objects, no temporary files, no empty directories.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn memory_conformance() {
    let store = Arc::new(MemoryStorage::new("memory_bucket"));
    store.check().await.unwrap();
    conformance(store.clone(), "conformance/").await;
    assert!(keys(store.as_ref(), "").await.is_empty());
}

#[tokio::test]
async fn s3_conformance() {
    support::S3.require();
    let config = StorageConfig::S3(s3_config("bucket_a", "bucket-a", &support::S3.uri()));
    let store = storage::open(&config).await.unwrap();
    store.check().await.unwrap();
    assert!(store.as_s3().is_some());
    conformance(store, &format!("{}/", support::unique("conformance"))).await;
}
