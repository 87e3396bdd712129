//! Puts: one PutObject up to a part size, else a multipart upload with growing parts, a few in flight, MD5-checked, aborted on failure.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput;
use aws_sdk_s3::operation::create_multipart_upload::CreateMultipartUploadError;
use aws_sdk_s3::operation::upload_part::{UploadPartError, UploadPartOutput};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use md5::{Digest, Md5};

use super::{MAX_PART, MAX_PARTS, S3Storage, TransferLimits, encrypted_etag, unquoted};
use crate::storage::{ByteStream, ObjectMeta, Storage, StorageError, md5_from_etag, md5_hex};

/// Parts of one multipart upload sent at once; with the part being read, a put holds at most
/// this many parts plus one in memory (40 MiB at the default 8 MiB parts).
const PARTS_IN_FLIGHT: usize = 4;
/// What sending one UploadPart gives back.
type UploadPartResult = Result<UploadPartOutput, SdkError<UploadPartError, HttpResponse>>;

impl S3Storage {
    pub(super) fn part_size_for(&self, n: i32) -> usize {
        part_size(&self.limits, n)
    }

    pub(super) async fn put_single(
        &self,
        key: &str,
        body: Bytes,
    ) -> Result<ObjectMeta, StorageError> {
        let md5 = Md5::digest(&body);
        let md5_hex = hex::encode(md5);
        let size = body.len() as u64;
        self.pace(size).await;
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
        let etag = unquoted(out.e_tag());
        if let Some(server_md5) = etag.as_deref().and_then(md5_from_etag)
            && !encrypted_etag(out.server_side_encryption())
            && server_md5 != md5_hex
        {
            return Err(self
                .discard_corrupt(
                    key,
                    format!("the server stored MD5 {server_md5}, planrun sent {md5_hex}"),
                )
                .await);
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
    pub(super) async fn put_multipart(
        &self,
        key: &str,
        first: Bytes,
        reader: &mut PartReader,
    ) -> Result<ObjectMeta, StorageError> {
        let upload_id = self
            .create_upload(key)
            .await
            .map_err(|e| self.classify("start a multipart upload of", key, e))?;
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
                self.pace(part.len() as u64).await;
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
                        return Err(self.request_error(
                            "put",
                            key,
                            "the object needs more than S3's 10,000 parts; raise the part size",
                            false,
                        ));
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
                .complete_upload("complete the multipart upload of", key, &upload_id, parts)
                .await?;
            let etag = unquoted(done.e_tag());
            // The usual multipart ETag is md5(concatenated part MD5s)-count; check it when the
            // server follows that convention.
            let expected = format!("{}-{count}", hex::encode(Md5::digest(&part_md5s)));
            if let Some(got) = etag.as_deref()
                && got.contains('-')
                && !encrypted_etag(done.server_side_encryption())
                && got != expected
            {
                return Err(self
                    .discard_corrupt(
                        key,
                        format!("the server's multipart ETag is {got}, expected {expected}"),
                    )
                    .await);
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
        let (n, md5, sent) = joined.map_err(|e| {
            self.request_error(
                "upload a part of",
                key,
                format!("the upload task failed: {e}"),
                false,
            )
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

    /// Gives up on an upload so its parts stop being stored (and billed); a failure is only logged:
    /// the error that caused the abort is the one worth returning.
    pub(super) async fn abort(&self, key: &str, upload_id: &str) {
        self.pace(0).await;
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

    /// Starts a multipart upload of `key` and returns its id; the caller names the failure
    /// (a put and a server-side copy blame different buckets).
    pub(super) async fn create_upload(
        &self,
        key: &str,
    ) -> Result<String, SdkError<CreateMultipartUploadError, HttpResponse>> {
        self.pace(0).await;
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await?;
        Ok(created.upload_id().unwrap_or_default().to_string())
    }

    /// Completes upload `upload_id` of `key` from its parts, in part-number order.
    pub(super) async fn complete_upload(
        &self,
        op: &'static str,
        key: &str,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<CompleteMultipartUploadOutput, StorageError> {
        self.pace(0).await;
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.classify(op, key, e))
    }

    /// Removes an object the server stored damaged, then says so: a resumed run must not find
    /// it and take it for a finished upload.
    async fn discard_corrupt(&self, key: &str, detail: String) -> StorageError {
        let _ = self.delete(&[key.to_string()]).await;
        StorageError::Corrupt {
            place: self.place.clone(),
            key: key.to_string(),
            detail,
        }
    }
}

/// Part size for part number `n` (1-based): doubles every 1,000 parts, capped at S3's maximum.
fn part_size(limits: &TransferLimits, n: i32) -> usize {
    let shift = ((n - 1) / 1000).clamp(0, 20) as u32;
    limits.part_size.saturating_mul(1 << shift).min(MAX_PART) as usize
}

/// Cuts a body stream into parts of a requested size, holding at most one part (plus one chunk).
pub(super) struct PartReader {
    body: ByteStream,
    buf: BytesMut,
    ended: bool,
}

impl PartReader {
    pub(super) fn new(body: ByteStream) -> Self {
        PartReader {
            body,
            buf: BytesMut::new(),
            ended: false,
        }
    }

    /// The next `size` bytes (fewer only at the end), or `None` when nothing is left.
    pub(super) async fn next_part(&mut self, size: usize) -> Result<Option<Bytes>, StorageError> {
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
    pub(super) async fn at_end(&mut self) -> Result<bool, StorageError> {
        while self.buf.is_empty() && !self.ended {
            match self.body.next().await {
                Some(chunk) => self.buf.extend_from_slice(&chunk?),
                None => self.ended = true,
            }
        }
        Ok(self.buf.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::s3::MIB;
    use futures::stream;

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
