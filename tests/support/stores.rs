//! The stores of the storage tests: test data, S3 buckets of the test servers by key, and
//! what reading them back needs.

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use planrun::secret::Secret;
use planrun::storage::{ByteStream, ObjectMeta, S3Config, S3Storage, Storage, StorageError};

use crate::support;

pub const MIB: usize = 1024 * 1024;

/// Deterministic, incompressible-looking bytes (xorshift), different for each seed.
pub fn data(len: usize, seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

pub fn md5_of(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// The body as a stream of `chunk`-sized slices (no copies), like a network body.
pub fn chunked(data: Bytes, chunk: usize) -> ByteStream {
    let pieces: Vec<Result<Bytes, StorageError>> = (0..data.len())
        .step_by(chunk)
        .map(|i| Ok(data.slice(i..(i + chunk).min(data.len()))))
        .collect();
    stream::iter(pieces).boxed()
}

pub async fn read_all(store: &dyn Storage, key: &str) -> Vec<u8> {
    let mut body = store.get(key).await.unwrap();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    out
}

pub async fn keys(store: &dyn Storage, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .map_ok(|m| m.key)
        .try_collect()
        .await
        .unwrap()
}

pub fn s3_config(name: &str, bucket: &str, endpoint: &str) -> S3Config {
    s3_config_with(name, bucket, endpoint, support::S3_KEY)
}

/// A bucket of `endpoint` reached with the key `(id, secret)`.
pub fn s3_config_with(name: &str, bucket: &str, endpoint: &str, key: (&str, &str)) -> S3Config {
    S3Config {
        name: name.into(),
        endpoint: Some(endpoint.into()),
        bucket: bucket.into(),
        region: None,
        access_key_id: Some(Secret::new(key.0)),
        secret_access_key: Some(Secret::new(key.1)),
        session_token: None,
        path_style: true,
        instance_metadata: false,
        requests_per_second: 1000,
        bytes_per_second: None,
    }
}

/// A bucket of the first S3 server reached with the key `(id, secret)`.
pub async fn s3_as(name: &str, bucket: &str, key: (&str, &str)) -> S3Storage {
    support::S3.require();
    S3Storage::connect(&s3_config_with(name, bucket, &support::S3.uri(), key))
        .await
        .unwrap()
}

pub async fn s3(name: &str, bucket: &str) -> S3Storage {
    support::S3.require();
    S3Storage::connect(&s3_config(name, bucket, &support::S3.uri()))
        .await
        .unwrap()
}

/// Asserts that `meta`'s ETag is a multipart one, of `parts` parts.
#[track_caller]
pub fn assert_parts(meta: &ObjectMeta, parts: usize) {
    let suffix = format!("-{parts}");
    assert!(
        meta.etag.as_deref().is_some_and(|e| e.ends_with(&suffix)),
        "{parts} parts expected: {meta:?}"
    );
}

pub async fn cleanup(store: &dyn Storage, prefix: &str) {
    let all = keys(store, prefix).await;
    store.delete(&all).await.unwrap();
    assert!(
        keys(store, prefix).await.is_empty(),
        "cleanup of `{prefix}` left objects behind"
    );
}
