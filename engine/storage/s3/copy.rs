//! Server-side copies between buckets of one endpoint: CopyObject, or UploadPartCopy above the copy threshold.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::CompletedPart;

use super::{MAX_PART, MAX_PARTS, S3Storage, encrypted_etag, unquoted};
use crate::storage::{ObjectMeta, Storage, StorageError, md5_from_etag};

impl S3Storage {
    /// Server-side copy of `src_meta` (an object of `src`, on the same endpoint) into `dst_key`
    /// here: CopyObject up to `copy_threshold`, UploadPartCopy above. Sent with this store's
    /// credentials, which must be allowed to read the source. Returns the destination as a HEAD
    /// sees it (or as CopyObject's answer tells it, when that proves the source's MD5).
    pub async fn copy_from(
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
            self.pace(0).await;
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
            let etag = unquoted(out.copy_object_result().and_then(|r| r.e_tag()));
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
        self.head(dst_key).await?.ok_or_else(|| {
            self.request_error(
                "copy into",
                dst_key,
                "the server reported success but the object is not there",
                true,
            )
        })
    }

    /// UploadPartCopy in parts of `copy_part_size` (more when 10,000 would not cover the object),
    /// aborting the upload on any failure.
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
        let upload_id = self
            .create_upload(dst_key)
            .await
            .map_err(|e| self.classify_copy(src, &src_meta.key, dst_key, e))?;
        let result = async {
            let mut parts = Vec::new();
            let mut start = 0u64;
            let mut n: i32 = 1;
            while start < size {
                let end = (start + part_size).min(size) - 1;
                self.pace(0).await;
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
            self.complete_upload(
                "complete the multipart copy into",
                dst_key,
                &upload_id,
                parts,
            )
            .await?;
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
        err: SdkError<E, HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match err.as_service_error().and_then(|e| e.code()) {
            Some("NoSuchKey") => StorageError::NotFound {
                place: src.place.clone(),
                key: src_key.to_string(),
            },
            Some("PreconditionFailed") => src.request_error(
                "copy",
                src_key,
                "the source object changed during the copy",
                true,
            ),
            _ => self.classify("copy into", dst_key, err),
        }
    }
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
}
