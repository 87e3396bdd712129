//! Storage: copies between stores (server-side, streamed, verified) and what goes wrong with
//! buckets, keys and endpoints.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures::stream::TryStreamExt;
use planrun::storage::{
    LocalConfig, LocalStorage, MemoryFault, MemoryStorage, S3Storage, Storage, StorageError,
    TransferLimits, copy_object,
};

use crate::support;
use crate::support::stores::*;

/// Counts `on_bytes` calls and bytes, for progress assertions.
#[derive(Default)]
struct Progress {
    calls: AtomicUsize,
    bytes: AtomicU64,
}

impl Progress {
    fn callback(&self) -> impl Fn(u64) + Send + Sync + '_ {
        |n| {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(n, Ordering::Relaxed);
        }
    }
}

#[tokio::test]
async fn s3_server_side_copy_object_across_buckets() {
    let (a, b) = (
        s3("bucket_a", "bucket-a").await,
        s3("bucket_b", "bucket-b").await,
    );
    let prefix = format!("{}/", support::unique("copyobject"));
    let body = data(3 * MIB + 17, 20);
    let src_key = format!("{prefix}files/insert_log/1/2/3/100/1 odd+name");
    a.put_bytes(&src_key, body.clone()).await.unwrap();

    let progress = Progress::default();
    let dst_key = format!("{prefix}copied/1");
    let report = copy_object(&a, &src_key, &b, &dst_key, &progress.callback())
        .await
        .unwrap();
    assert!(report.server_side);
    assert_eq!(report.bytes_transferred, 0);
    assert_eq!(report.dst.size, body.len() as u64);
    assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&body).as_str()));
    assert_eq!(
        progress.calls.load(Ordering::Relaxed),
        1,
        "server-side: one progress call at the end"
    );
    assert_eq!(progress.bytes.load(Ordering::Relaxed), body.len() as u64);
    assert_eq!(read_all(&b, &dst_key).await, body);

    // Onto itself (S3 would refuse the request): a no-op that reports the object.
    let again = copy_object(&b, &dst_key, &b, &dst_key, &|_| {})
        .await
        .unwrap();
    assert_eq!(again.dst.md5.as_deref(), Some(md5_of(&body).as_str()));
    assert_eq!(read_all(&b, &dst_key).await, body);

    cleanup(&a, &prefix).await;
    cleanup(&b, &prefix).await;
}

#[tokio::test]
async fn s3_server_side_upload_part_copy_above_the_threshold() {
    let limits = TransferLimits {
        copy_threshold: MIB as u64,
        copy_part_size: 5 * MIB as u64,
        ..TransferLimits::default()
    };
    let a = s3("bucket_a", "bucket-a").await;
    let b = s3("bucket_b", "bucket-b")
        .await
        .with_limits(limits)
        .unwrap();
    let prefix = format!("{}/", support::unique("partcopy"));

    // A single-part source (plain MD5 ETag) and a multipart one (no MD5 in its ETag).
    let single = data(7 * MIB + 5, 21);
    a.put_bytes(&format!("{prefix}single"), single.clone())
        .await
        .unwrap();
    let multi = data(12 * MIB + 3, 22);
    let put = a
        .put(&format!("{prefix}multi"), chunked(multi.clone(), MIB))
        .await
        .unwrap();
    assert_parts(&put, 2); // 8 MiB parts

    let report = copy_object(
        &a,
        &format!("{prefix}single"),
        &b,
        &format!("{prefix}single"),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.server_side);
    // 7 MiB in 5 MiB parts: the destination's ETag shows two parts were copied.
    assert_parts(&report.dst, 2);
    assert_eq!(
        report.dst.md5.as_deref(),
        Some(md5_of(&single).as_str()),
        "known from the source"
    );
    assert_eq!(
        md5_of(&read_all(&b, &format!("{prefix}single")).await),
        md5_of(&single)
    );

    let report = copy_object(
        &a,
        &format!("{prefix}multi"),
        &b,
        &format!("{prefix}multi"),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.server_side);
    assert_parts(&report.dst, 3);
    assert_eq!(report.dst.size, multi.len() as u64);
    assert_eq!(
        report.dst.md5, None,
        "neither ETag is an MD5 and no bytes passed through planrun"
    );
    assert_eq!(
        md5_of(&read_all(&b, &format!("{prefix}multi")).await),
        md5_of(&multi)
    );

    cleanup(&a, &prefix).await;
    cleanup(&b, &prefix).await;
}

#[tokio::test]
async fn s3_to_local_and_back_streams_with_md5() {
    let a = s3("bucket_a", "bucket-a").await;
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorage::new(&LocalConfig {
        name: "backup".into(),
        path: dir.path().to_path_buf(),
    });
    let prefix = format!("{}/", support::unique("streaming"));
    // Multipart at the source, so its ETag gives no MD5: the MD5 comes from the stream.
    let body = data(20 * MIB + 1, 30);
    a.put(&format!("{prefix}src"), chunked(body.clone(), MIB))
        .await
        .unwrap();

    let progress = Progress::default();
    let report = copy_object(
        &a,
        &format!("{prefix}src"),
        &local,
        "restored/obj",
        &progress.callback(),
    )
    .await
    .unwrap();
    assert!(!report.server_side);
    assert_eq!(report.bytes_transferred, body.len() as u64);
    assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&body).as_str()));
    assert_eq!(progress.bytes.load(Ordering::Relaxed), body.len() as u64);
    assert!(
        progress.calls.load(Ordering::Relaxed) > 1,
        "progress is reported as chunks move"
    );
    assert_eq!(
        md5_of(&std::fs::read(dir.path().join("restored/obj")).unwrap()),
        md5_of(&body)
    );

    // Local -> S3: streamed, multipart at the destination.
    let progress = Progress::default();
    let report = copy_object(
        &local,
        "restored/obj",
        &a,
        &format!("{prefix}back"),
        &progress.callback(),
    )
    .await
    .unwrap();
    assert!(!report.server_side);
    assert_eq!(report.bytes_transferred, body.len() as u64);
    assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&body).as_str()));
    assert_parts(&report.dst, 3);
    assert_eq!(
        md5_of(&read_all(&a, &format!("{prefix}back")).await),
        md5_of(&body)
    );

    // A small one: single-part at the destination, whose plain ETag the copy checks against.
    local.put_bytes("small", data(1234, 31)).await.unwrap();
    let report = copy_object(&local, "small", &a, &format!("{prefix}small"), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        report.dst.etag.as_deref(),
        Some(md5_of(&data(1234, 31)).as_str())
    );

    cleanup(&a, &prefix).await;
}

#[tokio::test]
async fn damaged_copy_fails_verification_and_is_removed() {
    let a = s3("bucket_a", "bucket-a").await;
    let body = data(4096, 40);
    // Reads come back with a flipped byte while the head promises the right MD5.
    let damaged = MemoryStorage::new("flaky_disk");
    damaged.put_bytes("obj", body.clone()).await.unwrap();
    damaged.inject("obj", MemoryFault::CorruptReads);
    let dst_key = format!("{}/obj", support::unique("damaged"));

    let err = copy_object(&damaged, "obj", &a, &dst_key, &|_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Verify { .. }), "{err}");
    assert!(err.is_transient(), "a fresh copy may succeed");
    let msg = err.to_string();
    assert!(
        msg.contains("bucket `flaky_disk`")
            && msg.contains("bucket `bucket_a`")
            && msg.contains(&md5_of(&body)),
        "{msg}"
    );
    assert_eq!(
        a.head(&dst_key).await.unwrap(),
        None,
        "the bad copy was deleted"
    );
}

#[tokio::test]
async fn missing_bucket_names_the_bucket_and_the_setting() {
    let store = s3("bucket_x", "planrun-no-such-bucket").await;
    let expected = format!(
        "bucket `bucket_x` (s3 bucket `planrun-no-such-bucket` at {}) does not exist: create it or fix `buckets.bucket_x.bucket`",
        support::S3.uri()
    );
    let err = store.check().await.unwrap_err();
    assert_eq!(err.to_string(), expected);
    assert!(!err.is_transient() && !err.is_not_found());
    let err = store.list("").try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = store
        .put_bytes("k", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), expected);
    let err = store.get("k").await.err().unwrap();
    assert_eq!(err.to_string(), expected);
    let err = store
        .put("big", chunked(data(9 * MIB, 50), MIB))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), expected, "multipart path");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-there");
    let local = LocalStorage::new(&LocalConfig {
        name: "backup".into(),
        path: missing.clone(),
    });
    let err = local.check().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "bucket `backup` (local directory `{}`) does not exist: create it or fix `buckets.backup.path`",
            missing.display()
        )
    );
}

#[tokio::test]
async fn missing_key_is_not_found_everywhere() {
    let a = s3("bucket_a", "bucket-a").await;
    let key = format!("{}/nothing-here", support::unique("missing"));
    assert_eq!(a.head(&key).await.unwrap(), None);
    let err = a.get(&key).await.err().unwrap();
    assert!(err.is_not_found());
    assert_eq!(
        err.to_string(),
        format!(
            "object `{key}` not found in bucket `bucket_a` (s3 bucket `bucket-a` at {})",
            support::S3.uri()
        )
    );
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStorage::new(&LocalConfig {
        name: "backup".into(),
        path: dir.path().to_path_buf(),
    });
    let err = copy_object(&a, &key, &local, "x", &|_| {})
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("bucket `bucket_a`"),
        "{err}"
    );
    let err = copy_object(&local, "x", &a, &key, &|_| {})
        .await
        .unwrap_err();
    assert!(
        err.is_not_found() && err.to_string().contains("bucket `backup`"),
        "{err}"
    );
}

#[tokio::test]
async fn unreachable_endpoint_names_the_bucket_and_the_address() {
    // A port that was just free: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let store = S3Storage::connect(&s3_config("bucket_gone", "bucket-a", &endpoint))
        .await
        .unwrap();
    let err = store.check().await.unwrap_err();
    assert!(matches!(err, StorageError::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach bucket `bucket_gone` (s3 bucket `bucket-a` at {endpoint}): connection refused; \
             check that the server is running and `buckets.bucket_gone.endpoint` is right"
        )
    );
    let err = store.get("k").await.err().unwrap();
    assert!(
        err.to_string().contains(&endpoint) && err.to_string().contains("bucket `bucket_gone`"),
        "{err}"
    );
    // Secrets never reach messages or Debug output.
    assert!(!format!("{err:?} {store:?}").contains(support::S3_KEY.1));
}

#[tokio::test]
async fn missing_credentials_say_what_to_set() {
    support::S3.require();
    let mut config = s3_config("bucket_a", "bucket-a", &support::S3.uri());
    config.access_key_id = None;
    config.secret_access_key = None;
    // An empty environment: the default chain finds no keys (and no instance role here).
    let store = S3Storage::connect(&config).await.unwrap();
    for err in [
        store.check().await.unwrap_err(),
        store.get("k").await.err().unwrap(),
    ] {
        assert!(matches!(err, StorageError::Credentials { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with("no usable credentials for bucket `bucket_a` (s3 bucket `bucket-a` at")
                && msg.contains(
                    "set `buckets.bucket_a.access_key_id` and `buckets.bucket_a.secret_access_key`"
                ),
            "{msg}"
        );
        assert!(
            !msg.contains("DispatchFailure"),
            "no Debug dumps in messages: {msg}"
        );
    }
}

#[tokio::test]
async fn s3_on_different_endpoints_streams_in_small_parts() {
    support::S3.require();
    support::S3_B.require();
    let a = s3("bucket_a", "bucket-a").await;
    // Another Garage server: no server-side copy is possible, the bytes stream.
    let other = s3_config("bucket_b", "bucket-b", &support::S3_B.uri());
    let limits = TransferLimits {
        part_size: 5 * MIB as u64,
        ..TransferLimits::default()
    };
    let b = S3Storage::connect(&other)
        .await
        .unwrap()
        .with_limits(limits)
        .unwrap();
    assert!(!b.same_endpoint(&a));
    let prefix = format!("{}/", support::unique("endpoints"));
    let body = data(24 * MIB + 7, 60);
    a.put_bytes(&format!("{prefix}obj"), body.clone())
        .await
        .unwrap();

    let progress = Progress::default();
    let report = copy_object(
        &a,
        &format!("{prefix}obj"),
        &b,
        &format!("{prefix}obj"),
        &progress.callback(),
    )
    .await
    .unwrap();
    assert!(!report.server_side);
    assert_eq!(report.bytes_transferred, body.len() as u64);
    assert_eq!(progress.bytes.load(Ordering::Relaxed), body.len() as u64);
    assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&body).as_str()));
    // 24 MiB in 5 MiB parts.
    assert_parts(&report.dst, 5);
    assert_eq!(
        md5_of(&read_all(&b, &format!("{prefix}obj")).await),
        md5_of(&body)
    );

    cleanup(&a, &prefix).await;
    cleanup(&b, &prefix).await;
}

#[tokio::test]
async fn a_source_failing_mid_multipart_aborts_the_upload() {
    let a = s3("bucket_a", "bucket-a").await;
    let body = data(20 * MIB, 70);
    let flaky = MemoryStorage::new("flaky_disk");
    flaky.put_bytes("obj", body.clone()).await.unwrap();
    // Fails in the second 8 MiB part, as a dropped connection would: one part is already uploaded.
    flaky.inject("obj", MemoryFault::FailReadsAfter(12 * MIB as u64));
    let dst_key = format!("{}/obj", support::unique("aborted"));

    let err = copy_object(&flaky, "obj", &a, &dst_key, &|_| {})
        .await
        .unwrap_err();
    assert!(
        matches!(err, StorageError::Io { .. }) && err.is_transient(),
        "the source's own error comes back: {err:?}"
    );
    assert!(err.to_string().contains("bucket `flaky_disk`"), "{err}");
    assert_eq!(
        a.head(&dst_key).await.unwrap(),
        None,
        "nothing was completed"
    );
    let pending = a
        .client()
        .list_multipart_uploads()
        .bucket(a.bucket())
        .prefix(&dst_key)
        .send()
        .await
        .unwrap();
    assert!(
        pending.uploads().is_empty(),
        "the upload was aborted: {pending:?}"
    );
}

#[tokio::test]
async fn wrong_keys_are_refused_and_name_the_bucket_and_its_settings() {
    let (id, secret) = support::S3_KEY;
    let wrong_secret = format!("{}0", &secret[..secret.len() - 1]);
    let unknown_id = "GK000000000000000000000000";
    for (key, code) in [
        ((id, wrong_secret.as_str()), "SignatureDoesNotMatch"),
        ((unknown_id, secret), "InvalidAccessKeyId"),
    ] {
        support::S3.require();
        let config = s3_config_with("bucket_a", "bucket-a", &support::S3.uri(), key);
        let store = S3Storage::connect(&config).await.unwrap();
        for err in [
            store.check().await.unwrap_err(),
            store.get("k").await.err().unwrap(),
            store
                .put_bytes("k", Bytes::from_static(b"x"))
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(err, StorageError::AccessDenied { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(
                msg.contains("bucket `bucket_a`")
                    && msg.contains("check the credentials in `buckets.bucket_a`"),
                "{msg}"
            );
            assert!(
                !msg.contains(secret) && !msg.contains(&wrong_secret),
                "{msg}"
            );
        }
        // Nothing was written with the wrong key.
        let good = s3("bucket_a", "bucket-a").await;
        assert!(good.head("k").await.unwrap().is_none(), "{code}");
    }
}

#[tokio::test]
async fn a_destination_key_that_may_not_read_the_source_streams_the_copy_and_says_why() {
    let a = s3_as("bucket_a", "bucket-a", support::ONLY_A_KEY).await;
    let b = s3_as("bucket_b", "bucket-b", support::ONLY_B_KEY).await;
    assert!(
        b.same_endpoint(&a),
        "one server: a server-side copy is tried first"
    );
    // The key of bucket_b may not read bucket_a.
    let b_key_on_a = s3_as("a_as_b", "bucket-a", support::ONLY_B_KEY).await;
    assert!(matches!(
        b_key_on_a.list("").try_collect::<Vec<_>>().await,
        Err(StorageError::AccessDenied { .. })
    ));
    let key = format!("{}/obj", support::unique("refused"));
    let body = data(3 * MIB + 11, 61);
    a.put_bytes(&key, body.clone()).await.unwrap();

    let report = copy_object(&a, &key, &b, &key, &|_| {}).await.unwrap();
    assert!(!report.server_side);
    assert_eq!(report.bytes_transferred, body.len() as u64);
    let why = report.refused.expect("the refusal is reported");
    assert!(why.contains("access denied"), "{why}");
    assert_eq!(read_all(&b, &key).await, body.to_vec());
    assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&body).as_str()));

    // With one key allowed on both buckets the same copy is server-side.
    let both = s3("bucket_b", "bucket-b").await;
    let again = format!("{key}.2");
    let report = copy_object(&a, &key, &both, &again, &|_| {}).await.unwrap();
    assert!(report.server_side && report.refused.is_none());
    assert_eq!(report.bytes_transferred, 0);
}

#[tokio::test]
async fn a_server_side_copy_is_pinned_to_the_version_that_was_looked_at() {
    let a = s3("bucket_a", "bucket-a").await;
    let b = s3("bucket_b", "bucket-b").await;
    let key = format!("{}/obj", support::unique("if_match"));
    a.put_bytes(&key, data(1000, 1)).await.unwrap();
    let seen = a.head(&key).await.unwrap().unwrap();
    // The object changes between the look and the copy.
    a.put_bytes(&key, data(1000, 2)).await.unwrap();
    let err = b.copy_from(&a, &seen, &key).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("the source object changed during the copy"),
        "{err}"
    );
    assert!(b.head(&key).await.unwrap().is_none(), "nothing was copied");
    // Looked at again, the copy goes through and holds the new bytes.
    let now = a.head(&key).await.unwrap().unwrap();
    let copied = b.copy_from(&a, &now, &key).await.unwrap();
    assert_eq!(copied.md5, now.md5);
    assert_eq!(read_all(&b, &key).await, data(1000, 2).to_vec());
}

#[tokio::test]
async fn the_copy_step_says_when_the_keys_force_a_streamed_copy() {
    support::S3.require();
    let uri = support::S3.uri();
    let a = s3_as("bucket_a", "bucket-a", support::ONLY_A_KEY).await;
    let prefix = support::unique("keys");
    for i in 0..3 {
        a.put_bytes(&format!("{prefix}/f{i}"), data(100 + i, i as u64))
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let bucket = |name: &str, bucket: &str, key: (&str, &str)| {
        format!(
            "[buckets.{name}]\ntype = \"s3\"\nendpoint = \"{uri}\"\nbucket = \"{bucket}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
            key.0, key.1
        )
    };
    let plan = format!(
        "version = 1\nname = \"keys\"\n{}{}\n[steps.copy]\ntype = \"copy\"\n\
         from = \"bucket_a:{prefix}\"\nto = \"bucket_b:{prefix}\"\n\n[settings]\nstate_dir = \"{}\"\n",
        bucket("bucket_a", "bucket-a", support::ONLY_A_KEY),
        bucket("bucket_b", "bucket-b", support::ONLY_B_KEY),
        dir.path().join("state").display()
    );
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, plan).unwrap();
    let out = support::planrun()
        .args(["apply", "--yes", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains(
            "the server would not copy from bucket `bucket_a` into bucket `bucket_b` itself"
        ) && err.contains("let the key of `bucket_b` read `bucket_a`"),
        "{err}"
    );
    assert_eq!(err.matches("would not copy").count(), 1, "said once: {err}");
    assert!(err.contains("0 copied server-side, 3 streamed"), "{err}");
    assert!(!err.contains(support::ONLY_B_KEY.1), "{err}");
    let b = s3("bucket_b", "bucket-b").await;
    assert_eq!(keys(&b, &format!("{prefix}/")).await.len(), 3);
}
