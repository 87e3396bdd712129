//! `copy_object`: one object from one store to another, server-side when possible, verified either way.

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};

use super::{ByteStream, ObjectMeta, Storage, StorageError};

/// Chunks in flight between the reading and the writing half of a streamed copy. With the writer's
/// few part buffers this bounds a copy's memory.
const CHANNEL_DEPTH: usize = 8;

/// What a finished copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// The destination object, with its MD5 when known (always after a streamed copy: every
    /// store's `put` hashes what it writes).
    pub dst: ObjectMeta,
    /// True when the server copied the bytes itself (CopyObject or UploadPartCopy).
    pub server_side: bool,
    /// Bytes that passed through planrun; 0 for a server-side copy.
    pub bytes_transferred: u64,
    /// Why the server would not copy between these buckets of one endpoint, so the bytes streamed.
    pub refused: Option<String>,
}

/// Copies `src_key` of `src` to `dst_key` of `dst` and verifies the result: the size always, the
/// MD5 wherever one is known (plain S3 ETags, and the hash computed while streaming).
///
/// Between buckets on one S3 endpoint the server copies the bytes (CopyObject, or UploadPartCopy
/// above the destination's `copy_threshold`); if the destination's credentials may not read the
/// source (AccessDenied), it falls back to streaming. Otherwise the bytes stream through with
/// bounded memory.
///
/// `on_bytes(n)` reports progress as a delta: it is called with each chunk's size as the chunk is
/// read from the source, or once with the object's size after a server-side copy.
///
/// A copy that fails verification is deleted from the destination before the error is returned.
pub async fn copy_object(
    src: &dyn Storage,
    src_key: &str,
    dst: &dyn Storage,
    dst_key: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, StorageError> {
    let meta = src
        .head(src_key)
        .await?
        .ok_or_else(|| StorageError::not_found(src.place(), src_key))?;
    let refused = match server_side(src, &meta, true, dst, dst_key, on_bytes).await? {
        Attempt::Done(report) => return Ok(report),
        Attempt::Stream(refused) => refused,
    };
    let body = src.get(src_key).await?;
    let report = stream_copy(src, &meta, body, dst, dst_key, on_bytes).await?;
    Ok(CopyReport { refused, ..report })
}

/// [`copy_object`] for an object that a [`Storage::list`] of `src` just returned: the listing
/// stands in for the source HEAD, so a server-side copy is one request (CopyObject) and a
/// streamed one two (GET, PUT). Verified as strictly: whatever the listing cannot vouch for
/// (an ETag that is no MD5, e.g. under SSE-KMS) is checked against a HEAD of the source or the
/// GET response.
pub async fn copy_listed(
    src: &dyn Storage,
    listed: &ObjectMeta,
    dst: &dyn Storage,
    dst_key: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, StorageError> {
    let refused = match server_side(src, listed, false, dst, dst_key, on_bytes).await? {
        Attempt::Done(report) => return Ok(report),
        Attempt::Stream(refused) => refused,
    };
    let (meta, body) = src.get_with_meta(&listed.key).await?;
    let report = stream_copy(src, &meta, body, dst, dst_key, on_bytes).await?;
    Ok(CopyReport { refused, ..report })
}

/// What the server-side attempt came to.
enum Attempt {
    Done(CopyReport),
    /// Stream the bytes instead; with the server's refusal when it refused.
    Stream(Option<String>),
}

/// The server-side copy when both stores are buckets of one S3 endpoint; `Stream` when the bytes
/// must stream instead (another server, or credentials that may not read the source). `meta`
/// comes from a HEAD (`from_head`) or a listing, whose MD5 is only trusted when the copy's
/// ETag confirms it.
async fn server_side(
    src: &dyn Storage,
    meta: &ObjectMeta,
    from_head: bool,
    dst: &dyn Storage,
    dst_key: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<Attempt, StorageError> {
    let src_key = meta.key.as_str();
    let (Some(s3_src), Some(s3_dst)) = (src.as_s3(), dst.as_s3()) else {
        return Ok(Attempt::Stream(None));
    };
    if !s3_dst.same_endpoint(s3_src) {
        return Ok(Attempt::Stream(None));
    }
    // S3 refuses to copy an object onto itself; it is already where it should be.
    if s3_src.bucket() == s3_dst.bucket() && src_key == dst_key {
        on_bytes(meta.size);
        return Ok(Attempt::Done(CopyReport {
            dst: meta.clone(),
            server_side: true,
            bytes_transferred: 0,
            refused: None,
        }));
    }
    tracing::debug!(
        src = src.name(),
        src_key,
        dst = dst.name(),
        dst_key,
        size = meta.size,
        "server-side copy"
    );
    let copied = match s3_dst.copy_from(s3_src, meta, dst_key).await {
        Ok(copied) => copied,
        Err(e) if e.is_access_denied() => {
            tracing::warn!(
                src = src.name(),
                dst = dst.name(),
                key = src_key,
                error = %e,
                "server-side copy refused; streaming the object through planrun instead"
            );
            return Ok(Attempt::Stream(Some(e.to_string())));
        }
        Err(e) => return Err(e),
    };
    let confirmed = copied.md5.is_some() && copied.md5 == meta.md5 && copied.size == meta.size;
    let head;
    let meta = if from_head || confirmed {
        meta
    } else {
        // A listing's ETag may be no MD5 (SSE-KMS): ask the source itself before judging.
        head = src
            .head(src_key)
            .await?
            .ok_or_else(|| StorageError::not_found(src.place(), src_key))?;
        &head
    };
    let fail = |detail: String| Failure {
        src,
        src_key,
        dst,
        dst_key,
        detail,
    };
    if copied.size != meta.size {
        return Err(fail(format!(
            "the source has {} bytes, the copy {}",
            meta.size, copied.size
        ))
        .into_error()
        .await);
    }
    if let (Some(a), Some(b)) = (&meta.md5, &copied.md5)
        && a != b
    {
        return Err(fail(format!("the source's MD5 is {a}, the copy's {b}"))
            .into_error()
            .await);
    }
    on_bytes(meta.size);
    // After UploadPartCopy the destination's ETag is no MD5, but its bytes are the source's,
    // whose MD5 we know.
    let md5 = copied.md5.clone().or(meta.md5.clone());
    Ok(Attempt::Done(CopyReport {
        dst: ObjectMeta { md5, ..copied },
        server_side: true,
        bytes_transferred: 0,
        refused: None,
    }))
}

/// How the reading half of a streamed copy ended.
enum Pump {
    Done {
        bytes: u64,
    },
    /// The source failed; its error went to the writer, which returns it.
    SourceFailed,
    /// The writer stopped reading (it failed and will say why).
    WriterGone,
}

/// Streams `body` (the content of `meta`, an object of `src`) into `dst_key` of `dst`.
async fn stream_copy(
    src: &dyn Storage,
    meta: &ObjectMeta,
    mut body: ByteStream,
    dst: &dyn Storage,
    dst_key: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, StorageError> {
    let src_key = meta.key.as_str();
    tracing::debug!(
        src = src.name(),
        src_key,
        dst = dst.name(),
        dst_key,
        size = meta.size,
        "streaming copy"
    );
    // The put needs a 'static stream but `on_bytes` is borrowed: read here, hand chunks over a
    // bounded channel, and drive both halves together in this task.
    let (mut tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    // No hashing here: the put hashes the same bytes as they pass (the trait's contract), and
    // MD5 is most of a fast copy's CPU time.
    let pump = async move {
        let mut bytes = 0u64;
        while let Some(item) = body.next().await {
            match item {
                Ok(chunk) => {
                    bytes += chunk.len() as u64;
                    on_bytes(chunk.len() as u64);
                    if tx.send(Ok(chunk)).await.is_err() {
                        return Pump::WriterGone;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return Pump::SourceFailed;
                }
            }
        }
        Pump::Done { bytes }
    };
    let (pumped, put) = futures::join!(pump, dst.put(dst_key, rx.boxed()));
    let written = put?;
    let fail = |detail: String| Failure {
        src,
        src_key,
        dst,
        dst_key,
        detail,
    };
    let bytes = match pumped {
        Pump::Done { bytes } => bytes,
        Pump::SourceFailed | Pump::WriterGone => {
            return Err(fail("the destination accepted an incomplete stream".into())
                .into_error()
                .await);
        }
    };
    if bytes != meta.size {
        return Err(fail(format!(
            "the source has {} bytes but {bytes} were read",
            meta.size
        ))
        .into_error()
        .await);
    }
    if written.size != bytes {
        return Err(fail(format!(
            "{bytes} bytes were sent but the copy has {}",
            written.size
        ))
        .into_error()
        .await);
    }
    if let (Some(expected), Some(got)) = (&meta.md5, &written.md5)
        && expected != got
    {
        return Err(fail(format!(
            "the source's MD5 is {expected} but the bytes read hash to {got}"
        ))
        .into_error()
        .await);
    }
    Ok(CopyReport {
        dst: written,
        server_side: false,
        bytes_transferred: bytes,
        refused: None,
    })
}

/// A failed verification: removes the bad copy, then becomes the error.
struct Failure<'a> {
    src: &'a dyn Storage,
    src_key: &'a str,
    dst: &'a dyn Storage,
    dst_key: &'a str,
    detail: String,
}

impl Failure<'_> {
    async fn into_error(self) -> StorageError {
        // A damaged object must not look like a finished copy to a resumed run.
        if let Err(e) = self.dst.delete(&[self.dst_key.to_string()]).await {
            tracing::warn!(dst = self.dst.name(), key = self.dst_key, error = %e, "could not remove a bad copy");
        }
        StorageError::Verify {
            src: self.src.name().to_string(),
            src_key: self.src_key.to_string(),
            dst: self.dst.name().to_string(),
            dst_key: self.dst_key.to_string(),
            detail: self.detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalConfig, LocalStorage};
    use bytes::Bytes;
    use md5::{Digest, Md5};
    use std::sync::atomic::{AtomicU64, Ordering};
    use tempfile::TempDir;

    /// Two empty local stores, `src` and `dst`, with the directories behind them.
    fn two_stores() -> (TempDir, TempDir, LocalStorage, LocalStorage) {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let local = |name: &str, dir: &TempDir| {
            LocalStorage::new(&LocalConfig {
                name: name.into(),
                path: dir.path().to_path_buf(),
            })
        };
        let (src, dst) = (local("src", &a), local("dst", &b));
        (a, b, src, dst)
    }

    fn md5_of(data: &[u8]) -> String {
        hex::encode(Md5::digest(data))
    }

    #[tokio::test]
    async fn local_to_local_streams_and_reports_progress() {
        let (_a, b, src, dst) = two_stores();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        src.put_bytes("x/obj", Bytes::from(data.clone()))
            .await
            .unwrap();
        let seen = AtomicU64::new(0);
        let report = copy_object(&src, "x/obj", &dst, "y/obj", &|n| {
            seen.fetch_add(n, Ordering::Relaxed);
        })
        .await
        .unwrap();
        assert!(!report.server_side);
        assert_eq!(report.bytes_transferred, data.len() as u64);
        assert_eq!(seen.load(Ordering::Relaxed), data.len() as u64);
        assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&data).as_str()));
        assert_eq!(std::fs::read(b.path().join("y/obj")).unwrap(), data);
    }

    #[tokio::test]
    async fn copy_listed_uses_the_listing_and_still_verifies() {
        let (_a, b, src, dst) = two_stores();
        let data = Bytes::from(vec![7u8; 300_000]);
        src.put_bytes("x/obj", data.clone()).await.unwrap();
        let listed: Vec<ObjectMeta> = futures::TryStreamExt::try_collect(src.list("x/"))
            .await
            .unwrap();
        let report = copy_listed(&src, &listed[0], &dst, "y/obj", &|_| {})
            .await
            .unwrap();
        assert_eq!(report.bytes_transferred, data.len() as u64);
        assert_eq!(std::fs::read(b.path().join("y/obj")).unwrap(), data);

        // A streamed copy trusts the GET, not the listing: an object changed since it was
        // listed is copied as it is now, and verified against what was read.
        let changed = Bytes::from(vec![8u8; 200_000]);
        src.put_bytes("x/obj", changed.clone()).await.unwrap();
        let report = copy_listed(&src, &listed[0], &dst, "y/changed", &|_| {})
            .await
            .unwrap();
        assert_eq!(report.dst.size, changed.len() as u64);
        assert_eq!(report.dst.md5.as_deref(), Some(md5_of(&changed).as_str()));
        assert_eq!(std::fs::read(b.path().join("y/changed")).unwrap(), changed);
    }

    #[tokio::test]
    async fn missing_source_is_not_found_and_names_it() {
        let (_a, b, src, dst) = two_stores();
        let err = copy_object(&src, "nope", &dst, "nope", &|_| {})
            .await
            .unwrap_err();
        assert!(err.is_not_found());
        assert!(
            err.to_string().contains("`nope` not found in bucket `src`"),
            "{err}"
        );
        assert!(!b.path().join("nope").exists());
    }
}

#[cfg(test)]
mod bounded_memory {
    //! A 64 MiB copy from a memory store into a slow one: the bytes read but not yet written
    //! stay within the channel's few chunks, whatever the object's size.
    use super::*;
    use crate::storage::{MemoryFault, MemoryStorage};
    use bytes::Bytes;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    const CHUNK: usize = MemoryStorage::READ_CHUNK;
    const SIZE: u64 = 64 * 1024 * 1024;

    #[tokio::test]
    async fn a_large_streamed_copy_keeps_only_a_few_chunks_in_flight() {
        let src = Arc::new(MemoryStorage::new("source"));
        src.put_bytes("big", Bytes::from(vec![0x5a; SIZE as usize]))
            .await
            .unwrap();
        // Slower than the source, so the reader would race ahead if nothing held it back.
        let dst = MemoryStorage::new("sink");
        dst.inject("big", MemoryFault::SlowWrites);
        let max_ahead = Arc::new(AtomicU64::new(0));
        let (read, ahead) = (src.clone(), max_ahead.clone());
        dst.watch_puts(move |consumed| {
            ahead.fetch_max(read.bytes_read() - consumed, Ordering::SeqCst);
        });
        let report = copy_object(src.as_ref(), "big", &dst, "big", &|_| {})
            .await
            .unwrap();
        assert_eq!(report.bytes_transferred, SIZE);
        assert_eq!(report.dst.size, SIZE);
        let max_ahead = max_ahead.load(Ordering::SeqCst);
        // The channel's 8 slots, one per sender, the chunk in the reader's hand: about ten
        // chunks (640 KiB) ahead, for a 64 MiB object.
        assert!(
            max_ahead <= 16 * CHUNK as u64,
            "read {max_ahead} bytes ahead of the writer"
        );
        assert!(
            max_ahead >= CHUNK as u64,
            "the measurement saw the pipeline"
        );
    }
}
