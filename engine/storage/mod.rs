//! Object storage behind one small trait, with S3, local-filesystem and in-memory implementations.
//!
//! Contract every implementation keeps (and `tests/storage.rs` checks against each):
//! - keys are full keys inside the bucket, `/`-separated, without a leading `/`;
//! - `list(prefix)` yields every object whose key starts with `prefix`, recursively, in
//!   lexicographic key order, page by page;
//! - a `put` is atomic: no reader ever sees a partial object;
//! - bodies are streams: no operation holds a whole object in memory (at most a few part buffers).

mod copy;
mod error;
mod local;
mod memory;
mod s3;

use std::sync::Arc;

use futures::stream::BoxStream;
use md5::{Digest, Md5};

pub use copy::{CopyReport, copy_listed, copy_object};
pub use error::{Place, StorageError};
pub use local::{LocalConfig, LocalStorage};
pub use memory::{MemoryFault, MemoryStorage};
pub use s3::{S3Config, S3Storage, TransferLimits};

/// An object's content as a stream of chunks.
pub type ByteStream = BoxStream<'static, Result<bytes::Bytes, StorageError>>;

/// What a listing or a head tells about one object.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// The server's ETag without quotes (S3 only).
    pub etag: Option<String>,
    /// Lowercase hex MD5 of the content when known: from a plain S3 ETag, or computed while the
    /// bytes passed through planrun.
    pub md5: Option<String>,
}

/// One bucket of objects. Implementations: [`S3Storage`], [`LocalStorage`], [`MemoryStorage`].
#[async_trait::async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// The plan's bucket id, e.g. `bucket_a`, for messages.
    fn name(&self) -> &str {
        &self.place().id
    }

    /// Where the store lives, for messages (bucket id, location, the setting to fix).
    fn place(&self) -> &Place;

    /// Refuses a key this store cannot hold (checked before a copy writes anything): S3 keys end
    /// at 1024 bytes; a local directory refuses `..`, names over 255 bytes and more.
    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        if key.len() > 1024 {
            return Err(StorageError::InvalidKey {
                place: std::sync::Arc::new(self.place().clone()),
                key: format!("{}…", &key[..key.floor_char_boundary(64)]),
                reason: "S3 keys end at 1024 bytes",
            });
        }
        Ok(())
    }

    /// Every object under `prefix` (a plain key prefix, not necessarily ending in `/`), recursively,
    /// in key order, fetched page by page as the stream is polled.
    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>>;

    /// The object's metadata, or `None` when it does not exist. (On S3 a missing bucket also
    /// answers 404 to a HEAD: call [`Storage::check`] once to tell the two apart.)
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError>;

    /// The object's content as a stream; a [`StorageError::NotFound`] error when it does not exist.
    async fn get(&self, key: &str) -> Result<ByteStream, StorageError>;

    /// [`Storage::get`] together with the object's metadata. S3 takes both from one GET response;
    /// the default asks [`Storage::head`] first.
    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ByteStream), StorageError> {
        let meta = self
            .head(key)
            .await?
            .ok_or_else(|| StorageError::not_found(self.place(), key))?;
        Ok((meta, self.get(key).await?))
    }

    /// Stores `body` under `key` atomically (multipart above one part size on S3) and returns the
    /// new object's metadata with the MD5 computed as the bytes passed. An error from `body`
    /// aborts the put and is returned unchanged.
    async fn put(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StorageError>;

    /// [`Storage::put`] for content already in memory.
    async fn put_bytes(&self, key: &str, body: bytes::Bytes) -> Result<ObjectMeta, StorageError>;

    /// Deletes the objects; keys that do not exist are not an error.
    async fn delete(&self, keys: &[String]) -> Result<(), StorageError>;

    /// Verifies that the bucket (or directory) exists and is reachable with these credentials.
    async fn check(&self) -> Result<(), StorageError>;

    /// This store as S3, for server-side copies between buckets of one endpoint.
    fn as_s3(&self) -> Option<&S3Storage> {
        None
    }
}

/// Which store a plan bucket is, with everything needed to open it.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    S3(S3Config),
    Local(LocalConfig),
}

/// Opens a store. Does no network I/O beyond what loading default AWS settings needs; call
/// [`Storage::check`] to verify the bucket.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(match config {
        StorageConfig::S3(c) => Arc::new(S3Storage::connect(c).await?),
        StorageConfig::Local(c) => Arc::new(LocalStorage::new(c)),
    })
}

/// Why `key` breaks the contract's key rules (not empty, no leading `/`), if it does. S3 adds its
/// length limit; `LocalStorage` checks paths its own way, with messages about directories.
pub(crate) fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("a key may not be empty")
    } else if key.starts_with('/') {
        Some("a key may not start with `/`")
    } else {
        None
    }
}

/// Lowercase hex of a finished MD5.
pub(crate) fn md5_hex(hasher: Md5) -> String {
    hex::encode(hasher.finalize())
}

/// The MD5 an ETag stands for, when it is a plain one (32 hex digits, optionally quoted).
/// Multipart ETags (`<hex>-<parts>`) are not the MD5 of the content.
pub(crate) fn md5_from_etag(etag: &str) -> Option<String> {
    let t = etag.trim_matches('"');
    (t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_md5() {
        assert_eq!(
            md5_from_etag("\"D41D8CD98F00B204E9800998ECF8427E\"").as_deref(),
            Some("d41d8cd98f00b204e9800998ecf8427e")
        );
        assert_eq!(
            md5_from_etag("\"d41d8cd98f00b204e9800998ecf8427e-2\""),
            None
        );
        assert_eq!(md5_from_etag("abc"), None);
    }

    #[test]
    fn md5_of_empty() {
        assert_eq!(md5_hex(Md5::new()), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
