//! `S3Storage`, one bucket of an S3-compatible server through aws-sdk-s3: the store and its `Storage` impl; `connect`, `upload`, `copy` and `sdk_error` hold the rest.

mod connect;
mod copy;
mod sdk_error;
mod upload;

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::types::{Delete, ObjectIdentifier, ServerSideEncryption};
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};

pub use connect::{S3Config, TransferLimits};
use sdk_error::{answered_404, chain_text};
use upload::PartReader;

use super::{ByteStream, ObjectMeta, Place, Storage, StorageError, key_problem, md5_from_etag};
use crate::throttle::Throttle;

const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (all but the last part of a multipart upload).
const MIN_PART: u64 = 5 * MIB;
/// S3's largest allowed part, and the largest object a single CopyObject may copy.
const MAX_PART: u64 = 5 * 1024 * MIB;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// DeleteObjects takes at most this many keys per request.
const DELETE_BATCH: usize = 1000;

/// A bucket on an S3-compatible server.
pub struct S3Storage {
    place: Arc<Place>,
    client: Client,
    bucket: String,
    endpoint: Option<String>,
    limits: TransferLimits,
    /// Requests and bytes per second this bucket is sent at most (`requests_per_second`,
    /// `bytes_per_second` of the plan).
    requests: Arc<Throttle>,
    bytes: Arc<Throttle>,
}

impl S3Storage {
    /// Waits for a request's turn (and for `bytes` sent in it) under the bucket's caps.
    async fn pace(&self, bytes: u64) {
        self.requests.acquire(1.0).await;
        if bytes > 0 {
            self.bytes.acquire(bytes as f64).await;
        }
    }
}

// By hand: the SDK client's own Debug is long and we want no chance of printing credentials.
impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("name", &self.place.id)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("limits", &self.limits)
            .finish()
    }
}

impl S3Storage {
    pub fn limits(&self) -> TransferLimits {
        self.limits
    }

    /// The SDK client, for what the trait does not cover (tests inspect multipart uploads with it).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The S3 bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The endpoint override, without a trailing `/`.
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// Whether a server-side copy from `other` into this bucket can work: one server (the same
    /// endpoint, or both on AWS). Credentials may still forbid it; callers fall back on AccessDenied.
    pub fn same_endpoint(&self, other: &S3Storage) -> bool {
        self.endpoint == other.endpoint
    }

    fn key_error(&self, key: &str) -> Option<StorageError> {
        let reason = match key_problem(key) {
            Some(reason) => reason,
            None if key.len() > 1024 => "S3 keys are at most 1024 bytes",
            None => return None,
        };
        Some(StorageError::InvalidKey {
            place: self.place.clone(),
            key: key.to_string(),
            reason,
        })
    }

    fn check_key(&self, key: &str) -> Result<(), StorageError> {
        self.key_error(key).map_or(Ok(()), Err)
    }

    /// A request that failed before the server could judge it, or whose answer made no sense.
    fn request_error(
        &self,
        op: &'static str,
        key: &str,
        reason: impl Into<String>,
        transient: bool,
    ) -> StorageError {
        StorageError::Request {
            place: self.place.clone(),
            op,
            key: key.to_string(),
            reason: reason.into(),
            transient,
        }
    }
}

/// SSE-KMS (and SSE-C) ETags are not the MD5 of the content.
fn encrypted_etag(sse: Option<&ServerSideEncryption>) -> bool {
    use ServerSideEncryption as Sse;
    matches!(sse, Some(Sse::AwsKms | Sse::AwsKmsDsse))
}

/// An ETag without the quotes S3 puts around it.
fn unquoted(etag: Option<&str>) -> Option<String> {
    etag.map(|e| e.trim_matches('"').to_string())
}

/// What a listing, HEAD or GET answer tells about `key`. The ETag stands for the MD5 only when
/// it is a plain one and no encryption (`sse`) changed its meaning.
fn answer_meta(
    key: &str,
    size: Option<i64>,
    etag: Option<&str>,
    sse: Option<&ServerSideEncryption>,
) -> ObjectMeta {
    let etag = unquoted(etag);
    ObjectMeta {
        key: key.to_string(),
        size: size.unwrap_or(0).max(0) as u64,
        md5: if encrypted_etag(sse) {
            None
        } else {
            etag.as_deref().and_then(md5_from_etag)
        },
        etag,
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    fn place(&self) -> &Place {
        &self.place
    }

    fn list(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StorageError>> {
        let prefix = prefix.to_string();
        // State: `Some(token)` while pages remain (the first page has no token), `None` when done.
        let pages = stream::try_unfold(Some(None::<String>), move |state| {
            let prefix = prefix.clone();
            async move {
                let Some(token) = state else { return Ok(None) };
                self.pace(0).await;
                let out = self
                    .client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(&prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| self.classify("list objects under", &prefix, e))?;
                let items: Vec<ObjectMeta> = out
                    .contents()
                    .iter()
                    // A listing says nothing of encryption: SSE-KMS ETags pass for MD5s here, which
                    // is why a copy checks a listed MD5 against the source before trusting it.
                    .filter_map(|o| Some(answer_meta(o.key()?, o.size(), o.e_tag(), None)))
                    .collect();
                let next = match (out.is_truncated(), out.next_continuation_token()) {
                    (Some(true), Some(t)) => Some(Some(t.to_string())),
                    _ => None,
                };
                Ok(Some((items, next)))
            }
        });
        pages
            .map_ok(|items| stream::iter(items.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StorageError> {
        self.check_key(key)?;
        self.pace(0).await;
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => Ok(Some(answer_meta(
                key,
                out.content_length(),
                out.e_tag(),
                out.server_side_encryption(),
            ))),
            Err(e) if answered_404(&e) => Ok(None),
            Err(e) => Err(self.classify("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StorageError> {
        Ok(self.get_with_meta(key).await?.1)
    }

    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.check_key(key)?;
        self.pace(0).await;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("get", key, e))?;
        // The same facts a HEAD would give, from this response: a copy needs no separate HEAD.
        let meta = answer_meta(
            key,
            out.content_length(),
            out.e_tag(),
            out.server_side_encryption(),
        );
        let place = self.place.clone();
        let key = key.to_string();
        let bytes = self.bytes.clone();
        let body = stream::try_unfold(out.body, move |mut body| {
            let place = place.clone();
            let key = key.clone();
            let bytes = bytes.clone();
            async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => {
                        // Read no faster than the bucket's bytes per second.
                        bytes.acquire(chunk.len() as f64).await;
                        Ok(Some((chunk, body)))
                    }
                    Ok(None) => Ok(None),
                    // Mid-body failures are dropped or stalled connections: worth a retry.
                    Err(e) => Err(StorageError::Request {
                        place,
                        op: "read",
                        key,
                        reason: chain_text(&e),
                        transient: true,
                    }),
                }
            }
        });
        Ok((meta, body.boxed()))
    }

    async fn put(&self, key: &str, body: ByteStream) -> Result<ObjectMeta, StorageError> {
        self.check_key(key)?;
        let mut reader = PartReader::new(body);
        let first = reader
            .next_part(self.part_size_for(1))
            .await?
            .unwrap_or_default();
        if reader.at_end().await? {
            self.put_single(key, first).await
        } else {
            self.put_multipart(key, first, &mut reader).await
        }
    }

    async fn put_bytes(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StorageError> {
        self.check_key(key)?;
        if body.len() <= self.part_size_for(1) {
            self.put_single(key, body).await
        } else {
            self.put(key, stream::once(async move { Ok(body) }).boxed())
                .await
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut objects = Vec::with_capacity(batch.len());
            for key in batch {
                self.check_key(key)?;
                objects.push(
                    ObjectIdentifier::builder()
                        .key(key)
                        .build()
                        .map_err(|e| self.request_error("delete", key, e.to_string(), false))?,
                );
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.request_error("delete", &batch[0], e.to_string(), false))?;
            self.pace(0).await;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.classify("delete", &batch[0], e))?;
            // Quiet mode reports only failures; a missing key is not one.
            if let Some(e) = out.errors().first() {
                return Err(self.error_for_code(
                    "delete",
                    e.key().unwrap_or(""),
                    e.code(),
                    None,
                    e.message().unwrap_or(""),
                ));
            }
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), StorageError> {
        self.pace(0).await;
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if answered_404(&e) => Err(StorageError::BucketNotFound {
                place: self.place.clone(),
            }),
            Err(e) => Err(self.classify("access the bucket", "", e)),
        }
    }

    fn as_s3(&self) -> Option<&S3Storage> {
        Some(self)
    }
}
