//! `S3Storage`: one bucket of an S3-compatible server through aws-sdk-s3 (streamed, multipart, server-side copy).

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use md5::{Digest, Md5};

use super::error::io_kind_is_transient;
use super::{ByteStream, ObjectMeta, Place, Storage, StorageError, md5_from_etag, md5_hex};
use crate::secret::Secret;

const MIB: u64 = 1024 * 1024;
/// S3's smallest allowed part (all but the last part of a multipart upload).
const MIN_PART: u64 = 5 * MIB;
/// S3's largest allowed part, and the largest object a single CopyObject may copy.
const MAX_PART: u64 = 5 * 1024 * MIB;
/// S3's limit on the number of parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// Parts of one multipart upload sent at once; with the part being read, a put holds at most
/// this many parts plus one in memory (40 MiB at the default 8 MiB parts).
const PARTS_IN_FLIGHT: usize = 4;
/// What sending one UploadPart gives back.
type UploadPartResult = Result<
    aws_sdk_s3::operation::upload_part::UploadPartOutput,
    SdkError<
        aws_sdk_s3::operation::upload_part::UploadPartError,
        aws_sdk_s3::config::http::HttpResponse,
    >,
>;
/// DeleteObjects takes at most this many keys per request.
const DELETE_BATCH: usize = 1000;

/// One S3 bucket as a plan declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    /// The plan's bucket id, e.g. `bucket_a`.
    pub name: String,
    /// The server, e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The S3 bucket name, e.g. `bucket-a`.
    pub bucket: String,
    /// `None`: `us-east-1` with an endpoint, else the AWS default chain's region.
    pub region: Option<String>,
    /// Static credentials; with none, the default AWS chain (environment, profile, ...) applies.
    pub access_key_id: Option<Secret>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    /// Address buckets as `endpoint/bucket/key` (MinIO, moto) instead of `bucket.endpoint/key`.
    pub path_style: bool,
}

/// Sizes that decide how objects move. All part sizes are at least 5 MiB (S3's minimum).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TransferLimits {
    /// Uploads larger than this go multipart, in parts of this size; a put holds at most
    /// `PARTS_IN_FLIGHT + 1` parts in memory. Every 1,000 parts the part size doubles, so unknown-length streams still fit in
    /// S3's 10,000 parts.
    pub part_size: u64,
    /// Server-side copies of objects larger than this use UploadPartCopy instead of CopyObject.
    pub copy_threshold: u64,
    /// Part size of UploadPartCopy (no bytes pass through planrun, so it can be large).
    pub copy_part_size: u64,
}

impl Default for TransferLimits {
    fn default() -> Self {
        TransferLimits {
            part_size: 8 * MIB,
            copy_threshold: 512 * MIB,
            copy_part_size: 256 * MIB,
        }
    }
}

/// A bucket on an S3-compatible server.
pub struct S3Storage {
    place: Arc<Place>,
    client: Client,
    bucket: String,
    endpoint: Option<String>,
    limits: TransferLimits,
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
    /// Builds the client. No request is sent; [`Storage::check`] verifies the bucket.
    pub async fn connect(config: &S3Config) -> Result<Self, StorageError> {
        let endpoint = config
            .endpoint
            .as_ref()
            .map(|e| e.trim_end_matches('/').to_string());
        let mut place = Place {
            id: config.name.clone(),
            location: match &endpoint {
                Some(e) => format!("s3 bucket `{}` at {e}", config.bucket),
                None => format!("s3 bucket `{}` on AWS", config.bucket),
            },
            setting: "bucket",
            endpoint_setting: Some("endpoint"),
        };
        let misconfigured = |place: &Place, reason: String| StorageError::Config {
            place: Arc::new(place.clone()),
            reason,
        };
        if config.bucket.is_empty() {
            return Err(misconfigured(
                &place,
                format!(
                    "the bucket name is empty: set `buckets.{}.bucket`",
                    config.name
                ),
            ));
        }
        if let Some(e) = &endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            return Err(misconfigured(
                &place,
                format!(
                    "the endpoint must start with http:// or https://: fix `buckets.{}.endpoint`",
                    config.name
                ),
            ));
        }

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // A streamed copy stops reading its download while it uploads a part, which stalled
            // stream protection mistakes for a dead connection; the read timeout below covers those.
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .timeout_config(
                // Connecting is quick or not happening; whole transfers may take long, so no
                // operation timeout, but a stalled read fails instead of hanging.
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        match (&config.region, &endpoint) {
            (Some(r), _) => loader = loader.region(Region::new(r.clone())),
            // With a custom endpoint the region only feeds the signature; skip the default
            // chain, which would ask the instance metadata service.
            (None, Some(_)) => loader = loader.region(Region::new("us-east-1")),
            (None, None) => {}
        }
        match (&config.access_key_id, &config.secret_access_key) {
            (Some(id), Some(secret)) => {
                let creds = Credentials::new(
                    id.expose(),
                    secret.expose(),
                    config
                        .session_token
                        .as_ref()
                        .map(|t| t.expose().to_string()),
                    None,
                    "planrun-plan",
                );
                loader = loader.credentials_provider(creds);
            }
            (None, None) => {}
            _ => {
                return Err(misconfigured(
                    &place,
                    format!(
                        "set both `buckets.{0}.access_key_id` and `buckets.{0}.secret_access_key`, or neither \
                         to use the default AWS credentials",
                        config.name
                    ),
                ));
            }
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            // Only what the operation requires: other S3-compatible servers reject some flexible
            // checksums, and we verify content ourselves with MD5.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = &endpoint {
            builder = builder.endpoint_url(e);
        }
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if endpoint.is_none() {
            let region = config
                .region
                .clone()
                .or_else(|| shared.region().map(|r| r.to_string()))
                .unwrap_or_else(|| "us-east-1".into());
            place.location = format!("s3 bucket `{}` on AWS, region `{region}`", config.bucket);
        }
        Ok(S3Storage {
            place: Arc::new(place),
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            endpoint,
            limits: TransferLimits::default(),
        })
    }

    /// Replaces the transfer sizes (tests lower them to exercise multipart paths on small objects).
    pub fn with_limits(mut self, limits: TransferLimits) -> Result<Self, StorageError> {
        for (name, v) in [
            ("part_size", limits.part_size),
            ("copy_part_size", limits.copy_part_size),
        ] {
            if !(MIN_PART..=MAX_PART).contains(&v) {
                return Err(StorageError::Config {
                    place: self.place.clone(),
                    reason: format!("{name} {v} is outside S3's part size limits (5 MiB to 5 GiB)"),
                });
            }
        }
        if limits.copy_threshold > MAX_PART {
            return Err(StorageError::Config {
                place: self.place.clone(),
                reason: format!(
                    "copy_threshold {} is above CopyObject's 5 GiB limit",
                    limits.copy_threshold
                ),
            });
        }
        self.limits = limits;
        Ok(self)
    }

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
        let reason = if key.is_empty() {
            "a key may not be empty"
        } else if key.starts_with('/') {
            "a key may not start with `/`"
        } else if key.len() > 1024 {
            "S3 keys are at most 1024 bytes"
        } else {
            return None;
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

    /// The error for an S3 error code / HTTP status from a service answer.
    fn error_for_code(
        &self,
        op: &'static str,
        key: &str,
        code: Option<&str>,
        status: Option<u16>,
        message: &str,
    ) -> StorageError {
        let place = self.place.clone();
        let key = key.to_string();
        let code_text = code.unwrap_or("").to_string();
        match (code.unwrap_or(""), status) {
            ("NoSuchBucket", _) => StorageError::BucketNotFound { place },
            ("NoSuchKey", _) => StorageError::NotFound { place, key },
            (
                "AccessDenied"
                | "InvalidAccessKeyId"
                | "SignatureDoesNotMatch"
                | "AllAccessDisabled"
                | "InvalidToken"
                | "ExpiredToken"
                | "AccountProblem",
                _,
            )
            | (_, Some(401 | 403)) => {
                let detail = match (code, message) {
                    (Some(c), "") => c.to_string(),
                    (Some(c), m) => format!("{c}: {m}"),
                    (None, _) => format!("HTTP {}", status.unwrap_or(403)),
                };
                StorageError::AccessDenied {
                    place,
                    op,
                    key,
                    detail,
                }
            }
            (c, s) => {
                let transient = matches!(
                    c,
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "RequestTimeout"
                        | "RequestTimeTooSkewed"
                        | "InternalError"
                        | "ServiceUnavailable"
                        | "OperationAborted"
                ) || matches!(s, Some(408 | 429 | 500..=599));
                StorageError::Service {
                    place,
                    op,
                    key,
                    code: if code_text.is_empty() {
                        format!("HTTP {}", s.unwrap_or(0))
                    } else {
                        code_text
                    },
                    message: message.to_string(),
                    status: s,
                    transient,
                }
            }
        }
    }

    /// Turns an SDK failure into a `StorageError` naming this bucket, the operation and the key.
    fn classify<E>(
        &self,
        op: &'static str,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let place = self.place.clone();
        let chain = chain_text(&err);
        match &err {
            // The SDK resolves credentials while dispatching; its error type is not public, so
            // recognise the failure by its message.
            SdkError::DispatchFailure(_) if chain.contains("loading credentials") => {
                let marker = "loading credentials: ";
                let reason = match chain.find(marker) {
                    Some(i) => &chain[i + marker.len()..],
                    None => &chain,
                };
                StorageError::Credentials {
                    place,
                    reason: reason.trim_end_matches('.').to_string(),
                }
            }
            SdkError::ServiceError(ctx) => {
                let status = ctx.raw().status().as_u16();
                self.error_for_code(
                    op,
                    key,
                    ctx.err().code(),
                    Some(status),
                    ctx.err().message().unwrap_or(""),
                )
            }
            SdkError::TimeoutError(_) => StorageError::Timeout {
                place,
                op,
                key: key.to_string(),
                reason: innermost(&err),
            },
            SdkError::DispatchFailure(d) if d.is_timeout() => StorageError::Timeout {
                place,
                op,
                key: key.to_string(),
                reason: innermost(&err),
            },
            SdkError::DispatchFailure(d) if d.is_io() => match find_io(&err) {
                Some(io) => StorageError::Unreachable {
                    place,
                    reason: describe_io(io),
                    transient: io_kind_is_transient(io.kind()),
                },
                None => StorageError::Unreachable {
                    place,
                    reason: innermost(&err),
                    transient: true,
                },
            },
            SdkError::DispatchFailure(_) => StorageError::Request {
                place,
                op,
                key: key.to_string(),
                reason: chain.clone(),
                transient: false,
            },
            // A malformed or cut-off answer: usually a proxy or a dropped connection.
            SdkError::ResponseError(_) => StorageError::Request {
                place,
                op,
                key: key.to_string(),
                reason: chain.clone(),
                transient: true,
            },
            // Includes "no credentials found" from the default chain.
            _ => StorageError::Request {
                place,
                op,
                key: key.to_string(),
                reason: chain.clone(),
                transient: false,
            },
        }
    }

    fn part_size_for(&self, n: i32) -> usize {
        part_size(&self.limits, n)
    }

    async fn put_single(&self, key: &str, body: Bytes) -> Result<ObjectMeta, StorageError> {
        let md5 = Md5::digest(&body);
        let md5_hex = hex::encode(md5);
        let size = body.len() as u64;
        let out = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_length(size as i64)
            // Servers that check it reject a damaged upload outright.
            .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
            .body(aws_sdk_s3::primitives::ByteStream::from(body))
            .send()
            .await
            .map_err(|e| self.classify("put", key, e))?;
        let etag = out.e_tag().map(|e| e.trim_matches('"').to_string());
        if let Some(server_md5) = etag.as_deref().and_then(md5_from_etag)
            && !encrypted_etag(out.server_side_encryption())
            && server_md5 != md5_hex
        {
            let _ = self.delete(&[key.to_string()]).await;
            return Err(StorageError::Corrupt {
                place: self.place.clone(),
                key: key.to_string(),
                detail: format!("the server stored MD5 {server_md5}, planrun sent {md5_hex}"),
            });
        }
        Ok(ObjectMeta {
            key: key.to_string(),
            size,
            etag,
            md5: Some(md5_hex),
        })
    }

    /// Uploads `first` and the rest of `reader` as a multipart upload, [`PARTS_IN_FLIGHT`] parts
    /// at a time; aborts the upload on any failure so no orphaned parts stay billed.
    async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        reader: &mut PartReader,
    ) -> Result<ObjectMeta, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("start a multipart upload of", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut whole = Md5::new();
            let mut parts = Vec::new();
            let mut size = 0u64;
            let mut part = first;
            let mut n: i32 = 1;
            // Parts upload while the next ones are read: a few in flight keep both connections
            // busy. Dropping the set (on an error) cancels the uploads still running.
            let mut uploads = tokio::task::JoinSet::new();
            loop {
                whole.update(&part);
                size += part.len() as u64;
                let request = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .content_length(part.len() as i64);
                // The part's own MD5 is computed in its task, in parallel with the whole
                // object's here: hashing is most of the CPU a streamed copy costs.
                uploads.spawn(async move {
                    let md5 = Md5::digest(&part);
                    let sent = request
                        .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
                        .body(aws_sdk_s3::primitives::ByteStream::from(part))
                        .send()
                        .await;
                    (n, md5.into(), sent)
                });
                if uploads.len() >= PARTS_IN_FLIGHT {
                    let done = uploads.join_next().await.expect("a part is in flight");
                    parts.push(self.uploaded_part(key, done)?);
                }
                n += 1;
                match reader.next_part(self.part_size_for(n)).await? {
                    Some(next) if n > MAX_PARTS => {
                        drop(next);
                        return Err(StorageError::Request {
                            place: self.place.clone(),
                            op: "put",
                            key: key.to_string(),
                            reason:
                                "the object needs more than S3's 10,000 parts; raise the part size"
                                    .into(),
                            transient: false,
                        });
                    }
                    Some(next) => part = next,
                    None => break,
                }
            }
            while let Some(done) = uploads.join_next().await {
                parts.push(self.uploaded_part(key, done)?);
            }
            parts.sort_by_key(|(p, _)| p.part_number());
            let mut part_md5s = Vec::with_capacity(16 * parts.len());
            for (_, md5) in &parts {
                part_md5s.extend_from_slice(md5);
            }
            let parts: Vec<CompletedPart> = parts.into_iter().map(|(p, _)| p).collect();
            let count = parts.len();
            tracing::debug!(bucket = %self.place.id, key, parts = count, size, "completing multipart upload");
            let done = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.classify("complete the multipart upload of", key, e))?;
            let etag = done.e_tag().map(|e| e.trim_matches('"').to_string());
            // The usual multipart ETag is md5(concatenated part MD5s)-count; check it when the
            // server follows that convention.
            let expected = format!("{}-{count}", hex::encode(Md5::digest(&part_md5s)));
            if let Some(got) = etag.as_deref()
                && got.contains('-')
                && !encrypted_etag(done.server_side_encryption())
                && got != expected
            {
                let _ = self.delete(&[key.to_string()]).await;
                return Err(StorageError::Corrupt {
                    place: self.place.clone(),
                    key: key.to_string(),
                    detail: format!("the server's multipart ETag is {got}, expected {expected}"),
                });
            }
            Ok(ObjectMeta {
                key: key.to_string(),
                size,
                etag,
                md5: Some(md5_hex(whole)),
            })
        }
        .await;
        if result.is_err() {
            self.abort(key, &upload_id).await;
        }
        result
    }

    /// The finished upload of one part, checked against the MD5 planrun sent.
    fn uploaded_part(
        &self,
        key: &str,
        joined: Result<(i32, [u8; 16], UploadPartResult), tokio::task::JoinError>,
    ) -> Result<(CompletedPart, [u8; 16]), StorageError> {
        let (n, md5, sent) = joined.map_err(|e| StorageError::Request {
            place: self.place.clone(),
            op: "upload a part of",
            key: key.to_string(),
            reason: format!("the upload task failed: {e}"),
            transient: false,
        })?;
        let out = sent.map_err(|e| self.classify("upload a part of", key, e))?;
        let sent_md5 = hex::encode(md5);
        let etag = out.e_tag().unwrap_or_default().to_string();
        if let Some(server) = md5_from_etag(&etag)
            && !encrypted_etag(out.server_side_encryption())
            && server != sent_md5
        {
            return Err(StorageError::Corrupt {
                place: self.place.clone(),
                key: key.to_string(),
                detail: format!(
                    "part {n}: the server stored MD5 {server}, planrun sent {sent_md5}"
                ),
            });
        }
        Ok((
            CompletedPart::builder().part_number(n).e_tag(etag).build(),
            md5,
        ))
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                bucket = %self.place.id,
                key,
                error = %self.classify("abort the multipart upload of", key, e),
                "could not abort a failed multipart upload; its parts stay until a lifecycle rule removes them"
            );
        }
    }

    /// Server-side copy of `src_meta` (an object of `src`, on the same endpoint) into `dst_key`
    /// here: CopyObject up to `copy_threshold`, UploadPartCopy above. Sent with this store's
    /// credentials, which must be allowed to read the source. Returns the destination as a HEAD
    /// sees it (or as CopyObject's answer tells it, when that proves the source's MD5).
    pub(crate) async fn copy_from(
        &self,
        src: &S3Storage,
        src_meta: &ObjectMeta,
        dst_key: &str,
    ) -> Result<ObjectMeta, StorageError> {
        self.check_key(dst_key)?;
        let source = format!("{}/{}", src.bucket, encode_key(&src_meta.key));
        // Pins the copy to the version we looked at, so the MD5 we know is the MD5 copied.
        let if_match = src_meta.etag.as_ref().map(|e| format!("\"{e}\""));
        if src_meta.size <= self.limits.copy_threshold.min(MAX_PART) {
            let out = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(dst_key)
                .copy_source(&source)
                .set_copy_source_if_match(if_match)
                .send()
                .await
                .map_err(|e| self.classify_copy(src, &src_meta.key, dst_key, e))?;
            // The answer carries the new object's ETag: when it is the source's MD5, the copy holds
            // the source's bytes (so its size too), and a HEAD would only repeat that. Half the
            // requests of a copy of many small objects.
            let etag = out
                .copy_object_result()
                .and_then(|r| r.e_tag())
                .map(|e| e.trim_matches('"').to_string());
            let md5 = etag.as_deref().and_then(md5_from_etag);
            if md5.is_some() && md5 == src_meta.md5 && !encrypted_etag(out.server_side_encryption())
            {
                return Ok(ObjectMeta {
                    key: dst_key.to_string(),
                    size: src_meta.size,
                    etag,
                    md5,
                });
            }
        } else {
            self.copy_multipart(src, src_meta, dst_key, &source, if_match)
                .await?;
        }
        self.head(dst_key)
            .await?
            .ok_or_else(|| StorageError::Request {
                place: self.place.clone(),
                op: "copy into",
                key: dst_key.to_string(),
                reason: "the server reported success but the object is not there".into(),
                transient: true,
            })
    }

    async fn copy_multipart(
        &self,
        src: &S3Storage,
        src_meta: &ObjectMeta,
        dst_key: &str,
        source: &str,
        if_match: Option<String>,
    ) -> Result<(), StorageError> {
        let size = src_meta.size;
        let part_size = self
            .limits
            .copy_part_size
            .max(size.div_ceil(MAX_PARTS as u64))
            .min(MAX_PART);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(dst_key)
            .send()
            .await
            .map_err(|e| self.classify_copy(src, &src_meta.key, dst_key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut n: i32 = 1;
            while start < size {
                let end = (start + part_size).min(size) - 1;
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(dst_key)
                    .upload_id(&upload_id)
                    .part_number(n)
                    .copy_source(source)
                    .copy_source_range(format!("bytes={start}-{end}"))
                    .set_copy_source_if_match(if_match.clone())
                    .send()
                    .await
                    .map_err(|e| self.classify_copy(src, &src_meta.key, dst_key, e))?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string();
                parts.push(CompletedPart::builder().part_number(n).e_tag(etag).build());
                start = end + 1;
                n += 1;
            }
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(dst_key)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.classify("complete the multipart copy into", dst_key, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            self.abort(dst_key, &upload_id).await;
        }
        result
    }

    /// Copy errors about the source (missing key, changed since we looked) name the source bucket;
    /// everything else names the destination, whose credentials sent the request.
    fn classify_copy<E>(
        &self,
        src: &S3Storage,
        src_key: &str,
        dst_key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match err.as_service_error().and_then(|e| e.code()) {
            Some("NoSuchKey") => StorageError::NotFound {
                place: src.place.clone(),
                key: src_key.to_string(),
            },
            Some("PreconditionFailed") => StorageError::Request {
                place: src.place.clone(),
                op: "copy",
                key: src_key.to_string(),
                reason: "the source object changed during the copy".into(),
                transient: true,
            },
            _ => self.classify("copy into", dst_key, err),
        }
    }
}

/// Part size for part number `n` (1-based): doubles every 1,000 parts, capped at S3's maximum.
fn part_size(limits: &TransferLimits, n: i32) -> usize {
    let shift = ((n - 1) / 1000).clamp(0, 20) as u32;
    limits.part_size.saturating_mul(1 << shift).min(MAX_PART) as usize
}

/// SSE-KMS (and SSE-C) ETags are not the MD5 of the content.
fn encrypted_etag(sse: Option<&aws_sdk_s3::types::ServerSideEncryption>) -> bool {
    use aws_sdk_s3::types::ServerSideEncryption as Sse;
    matches!(sse, Some(Sse::AwsKms | Sse::AwsKmsDsse))
}

/// Percent-encodes a key for `x-amz-copy-source`, keeping `/` and unreserved characters.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The first `std::io::Error` in an error's source chain (connection refused, reset, ...).
fn find_io<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = e.source();
    }
    None
}

fn describe_io(io: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match io.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        TimedOut => "connection timed out".into(),
        _ => io.to_string(),
    }
}

/// Every message of an error chain joined with `: ` (the SDK's Display shows one level, and
/// `aws_sdk_s3::error::DisplayErrorContext` appends a Debug dump that is no use to a person).
fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let text = e.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// The innermost message of an error chain: the SDK's outer layers say little ("dispatch failure").
fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Cuts a body stream into parts of a requested size, holding at most one part (plus one chunk).
pub(crate) struct PartReader {
    body: ByteStream,
    buf: BytesMut,
    ended: bool,
}

impl PartReader {
    pub(crate) fn new(body: ByteStream) -> Self {
        PartReader {
            body,
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// The next `size` bytes (fewer only at the end), or `None` when nothing is left.
    pub(crate) async fn next_part(&mut self, size: usize) -> Result<Option<Bytes>, StorageError> {
        while self.buf.len() < size && !self.ended {
            match self.body.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    if self.buf.is_empty() && chunk.len() == size {
                        // Common for in-memory bodies: hand the chunk over without copying.
                        return Ok(Some(chunk));
                    }
                    if self.buf.capacity() - self.buf.len() < chunk.len() {
                        // A first chunk may be the whole (small) object: size the buffer to it.
                        // A second one means a part is filling: allocate the rest of it once,
                        // instead of doubling past the part size.
                        let more = if self.buf.is_empty() {
                            chunk.len()
                        } else {
                            (size - self.buf.len()).max(chunk.len())
                        };
                        self.buf.reserve(more);
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                None => self.ended = true,
            }
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        let n = size.min(self.buf.len());
        Ok(Some(self.buf.split_to(n).freeze()))
    }

    /// Whether the body has no more bytes (reads ahead at most one chunk).
    pub(crate) async fn at_end(&mut self) -> Result<bool, StorageError> {
        while self.buf.is_empty() && !self.ended {
            match self.body.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => self.ended = true,
            }
        }
        Ok(self.buf.is_empty())
    }
}

#[async_trait::async_trait]
impl Storage for S3Storage {
    fn name(&self) -> &str {
        &self.place.id
    }

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
                    .filter_map(|o| {
                        let etag = o.e_tag().map(|e| e.trim_matches('"').to_string());
                        Some(ObjectMeta {
                            key: o.key()?.to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                            md5: etag.as_deref().and_then(md5_from_etag),
                            etag,
                        })
                    })
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
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let etag = out.e_tag().map(|e| e.trim_matches('"').to_string());
                let md5 = if encrypted_etag(out.server_side_encryption()) {
                    None
                } else {
                    etag.as_deref().and_then(md5_from_etag)
                };
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    etag,
                    md5,
                }))
            }
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(self.classify("head", key, e)),
        }
    }

    async fn get(&self, key: &str) -> Result<ByteStream, StorageError> {
        Ok(self.get_with_meta(key).await?.1)
    }

    async fn get_with_meta(&self, key: &str) -> Result<(ObjectMeta, ByteStream), StorageError> {
        self.check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify("get", key, e))?;
        // The same facts a HEAD would give, from this response: a copy needs no separate HEAD.
        let etag = out.e_tag().map(|e| e.trim_matches('"').to_string());
        let meta = ObjectMeta {
            key: key.to_string(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            md5: if encrypted_etag(out.server_side_encryption()) {
                None
            } else {
                etag.as_deref().and_then(md5_from_etag)
            },
            etag,
        };
        let place = self.place.clone();
        let key = key.to_string();
        let body = stream::try_unfold(out.body, move |mut body| {
            let place = place.clone();
            let key = key.clone();
            async move {
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, body))),
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
                objects.push(ObjectIdentifier::builder().key(key).build().map_err(|e| {
                    StorageError::Request {
                        place: self.place.clone(),
                        op: "delete",
                        key: key.clone(),
                        reason: e.to_string(),
                        transient: false,
                    }
                })?);
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::Request {
                    place: self.place.clone(),
                    op: "delete",
                    key: batch[0].clone(),
                    reason: e.to_string(),
                    transient: false,
                })?;
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
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(StorageError::BucketNotFound {
                    place: self.place.clone(),
                })
            }
            Err(e) => Err(self.classify("access the bucket", "", e)),
        }
    }

    fn as_s3(&self) -> Option<&S3Storage> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(
            encode_key("files/insert_log/1/2/3"),
            "files/insert_log/1/2/3"
        );
        assert_eq!(encode_key("a b/ü+%.bin"), "a%20b/%C3%BC%2B%25.bin");
    }

    #[tokio::test]
    async fn part_reader_cuts_exact_parts() {
        let chunks: Vec<Result<Bytes, StorageError>> =
            (0..10u8).map(|i| Ok(Bytes::from(vec![i; 3]))).collect();
        let mut r = PartReader::new(stream::iter(chunks).boxed());
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        while let Some(p) = r.next_part(7).await.unwrap() {
            sizes.push(p.len());
            all.extend_from_slice(&p);
        }
        assert_eq!(sizes, [7, 7, 7, 7, 2]);
        assert_eq!(all.len(), 30);
        assert_eq!(&all[..4], &[0, 0, 0, 1]);
        assert!(r.at_end().await.unwrap());
    }

    #[tokio::test]
    async fn at_end_reads_ahead_without_losing_bytes() {
        let chunks: Vec<Result<Bytes, StorageError>> = vec![
            Ok(Bytes::from_static(b"abcd")),
            Ok(Bytes::new()),
            Ok(Bytes::from_static(b"ef")),
        ];
        let mut r = PartReader::new(stream::iter(chunks).boxed());
        assert_eq!(
            r.next_part(4).await.unwrap().unwrap(),
            Bytes::from_static(b"abcd")
        );
        assert!(!r.at_end().await.unwrap());
        assert_eq!(
            r.next_part(4).await.unwrap().unwrap(),
            Bytes::from_static(b"ef")
        );
        assert!(r.at_end().await.unwrap());
    }

    #[tokio::test]
    async fn config_errors_name_the_setting_and_hide_secrets() {
        let mut config = S3Config {
            name: "bucket_a".into(),
            endpoint: Some("127.0.0.1:9000".into()),
            bucket: "bucket-a".into(),
            region: None,
            access_key_id: Some(Secret::new("AKIDSECRETVALUE")),
            secret_access_key: Some(Secret::new("topsecretkey")),
            session_token: None,
            path_style: true,
        };
        let err = S3Storage::connect(&config).await.unwrap_err();
        assert!(
            err.to_string().contains("fix `buckets.bucket_a.endpoint`"),
            "{err}"
        );
        config.endpoint = Some("http://127.0.0.1:9000/".into());
        config.secret_access_key = None;
        let err = S3Storage::connect(&config).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("`buckets.bucket_a.secret_access_key`"),
            "{err}"
        );
        config.secret_access_key = Some(Secret::new("topsecretkey"));
        let s = S3Storage::connect(&config).await.unwrap();
        assert_eq!(s.endpoint(), Some("http://127.0.0.1:9000"));
        let shown = format!("{s:?} {config:?}");
        assert!(
            !shown.contains("topsecretkey") && !shown.contains("AKIDSECRETVALUE"),
            "{shown}"
        );
        let err = s
            .with_limits(TransferLimits {
                part_size: 1024,
                ..TransferLimits::default()
            })
            .unwrap_err();
        assert!(err.to_string().contains("part_size 1024"), "{err}");
    }

    #[test]
    fn part_size_doubles_every_thousand_parts() {
        let limits = TransferLimits::default();
        let base = limits.part_size as usize;
        assert_eq!(part_size(&limits, 1), base);
        assert_eq!(part_size(&limits, 1000), base);
        assert_eq!(part_size(&limits, 1001), 2 * base);
        assert_eq!(part_size(&limits, 10_000), 512 * base);
        let big = TransferLimits {
            part_size: 100 * MIB,
            ..limits
        };
        assert_eq!(part_size(&big, 10_000), MAX_PART as usize);
    }
}
