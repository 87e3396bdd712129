//! One range of primary keys of one partition read into Parquet files: pages follow the key
//! cursor, each added to the open file's row group while the next page is queried,
//! and a file is put, recorded and passed on once it holds `settings.file_bytes`.
//!
//! Memory stays bounded whatever the file size: a file streams to its put as it is written, so
//! a reader holds the page being queried, one queued, the one being encoded and a few chunks on
//! their way to the bucket.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::checkpoint::TaskState;
use crate::codec::arrow::{Col, PageFile, page_to_batch};
use crate::codec::limits;
use crate::format::rows::{RowsFile, safe};
use crate::milvus::pb::schema::FieldData;
use crate::milvus::{Fresh, MAX_QUERY_LIMIT, MilvusClient, Pk, QueryPage};
use crate::plan::BackupStep;
use crate::steps::ctx::{Result, StepCtx, StepError, fail, to_json};
use crate::storage::{Storage, StorageError};

/// Bytes a page is sized for (and so an insert of a restore): well under
/// gRPC's message limits, and large enough that a query's fixed cost is small beside it.
pub(super) const PAGE_BYTES: usize = 16 << 20;

/// Bytes handed to a put at a time.
const CHUNK: usize = 1 << 20;

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct Written {
    pub file: RowsFile,
}

/// Keys from `lo` (inclusive) below `hi`; `None`: unbounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Range {
    pub lo: Option<Pk>,
    pub hi: Option<Pk>,
}

impl Range {
    /// The ranges between increasing split points, together covering every key.
    pub fn between(points: &[Pk]) -> Vec<Range> {
        let mut bounds: Vec<Option<Pk>> = vec![None];
        bounds.extend(points.iter().cloned().map(Some));
        bounds.push(None);
        bounds
            .windows(2)
            .map(|w| Range {
                lo: w[0].clone(),
                hi: w[1].clone(),
            })
            .collect()
    }

    /// The range as a query expression on `pk` ("" for all keys).
    fn expr(&self, pk: &str) -> String {
        let lo = self.lo.as_ref().map(|k| format!("{pk} >= {}", k.to_expr()));
        let hi = self.hi.as_ref().map(|k| format!("{pk} < {}", k.to_expr()));
        [lo, hi]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" and ")
    }
}

/// What every reader of one collection shares.
pub(super) struct Reader<'a> {
    pub ctx: &'a StepCtx,
    pub c: &'a MilvusClient,
    pub dst: &'a Arc<dyn Storage>,
    pub step: &'a BackupStep,
    pub db: &'a str,
    pub name: &'a str,
    /// The prefix of the collection's tasks.
    pub key: &'a str,
    pub pk: &'a str,
    pub cols: Arc<Vec<Col>>,
    pub output: Vec<String>,
    /// Size limits the source does not report, taken from the values read.
    pub missing: Vec<String>,
    /// Rows of a first page, from the sizes the schema declares.
    pub limit: usize,
}

/// The task recording file `seq` of range `range` of one partition (or, past its last file,
/// its end).
pub(super) fn file_task(key: &str, partition: &str, range: usize, seq: usize) -> String {
    format!("{key}/{}/r{range}/{seq:06}", safe(partition))
}

/// The files of one range an earlier run recorded, in order, and whether its end is recorded
/// too (all of it read). Past the first gap nothing recorded is trusted: pages are queried
/// again from the last key before it and rewritten.
pub(super) fn recorded(
    ctx: &StepCtx,
    key: &str,
    partition: &str,
    range: usize,
) -> Result<(Vec<RowsFile>, bool)> {
    let mut files = Vec::new();
    loop {
        let task = file_task(key, partition, range, files.len());
        match ctx.done::<Option<Written>>(&task)? {
            Some(Some(w)) => files.push(w.file),
            Some(None) => return Ok((files, true)),
            None => return Ok((files, false)),
        }
    }
}

/// Rows for the next page: as many as fit `PAGE_BYTES` at the size the last page's rows had
/// on the wire (a schema's declared sizes are far above most values: a JSON field counts 2 KiB).
fn next_limit(page: &QueryPage) -> usize {
    use prost::Message;
    let bytes: usize = page.fields.iter().map(|f| f.encoded_len()).sum();
    let per_row = (bytes / page.num_rows.max(1)).max(1);
    (PAGE_BYTES / per_row).clamp(1, MAX_QUERY_LIMIT)
}

/// Reads `range` of `partition` (`names`: the partition to query, none for a whole
/// partition-key collection) into files, passing each to `written` as it is recorded (and
/// those an earlier run recorded).
pub(super) async fn read_range(
    r: &Reader<'_>,
    partition: &str,
    names: &[String],
    index: usize,
    range: &Range,
    written: &(dyn Fn(&RowsFile) + Sync),
) -> Result<Vec<RowsFile>> {
    let ctx = r.ctx;
    let (mut files, ended) = recorded(ctx, r.key, partition, index)?;
    for f in &files {
        ctx.events.progress_rows(&ctx.step, f.rows);
        written(f);
    }
    if ended {
        return Ok(files);
    }
    let mut after: Option<Pk> = files.last().map(|f| Pk::from(&f.last));
    let filter = range.expr(r.pk);
    // One page queued: with the one being queried and the one being encoded, three pages.
    let (pages_tx, mut pages_rx) = mpsc::channel::<QueryPage>(1);
    let query = async move {
        let mut limit = r.limit;
        // The first page waits for everything written before it; the next ones need not.
        let mut fresh = Fresh::Strong;
        loop {
            ctx.check_cancel()?;
            let page = ctx
                .retry("query", || async {
                    let (pk, output) = (r.pk, &r.output);
                    let after = after.as_ref();
                    Ok(r.c
                        .query_page(r.name, names, pk, after, &filter, limit, output, fresh)
                        .await?)
                })
                .await?;
            if page.num_rows == 0 {
                return Ok::<_, StepError>(());
            }
            (fresh, limit, after) = (Fresh::Held, next_limit(&page), page.last_pk.clone());
            if pages_tx.send(page).await.is_err() {
                return Ok(()); // the writer failed; its error is the one reported
            }
        }
    };
    let write = async {
        let mut out = Vec::new();
        let mut seq = files.len();
        while let Some(first) = pages_rx.recv().await {
            let rel = format!(
                "rows/{}/{}/{}/r{index}-{seq:06}.parquet",
                safe(r.db),
                safe(r.name),
                safe(partition)
            );
            let file;
            (file, pages_rx) = write_file(r, rel, first, pages_rx).await?;
            crate::fault::point("rows-file-written");
            crate::fault::pause("rows-file-written").await;
            let task = file_task(r.key, partition, index, seq);
            let done = to_json(&Some(Written { file: file.clone() }));
            ctx.set(&task, TaskState::Done(done)).await?;
            ctx.events.progress_rows(&ctx.step, file.rows);
            written(&file);
            out.push(file);
            seq += 1;
        }
        Ok::<_, StepError>(out)
    };
    let (queried, wrote) = futures::join!(query, write);
    files.extend(wrote?);
    queried?;
    // Files are numbered from 0 without gaps: the end marker takes the next number.
    let end = file_task(r.key, partition, index, files.len());
    ctx.set(&end, TaskState::Done(to_json(&None::<Written>)))
        .await?;
    Ok(files)
}

/// What the encoder learnt of the rows it wrote.
#[derive(Default)]
struct Seen {
    rows: u64,
    first: Option<Pk>,
    last: Option<Pk>,
    longest: std::collections::BTreeMap<String, u64>,
    /// The sum of the hashes of the keys (`RowsFile::keys`).
    keys: u128,
}

/// One file at `rel`: `first` and the pages after it until the file holds `file_bytes` (or
/// the pages end), encoded on a thread of its own while the put streams the bytes out. Gives
/// the page receiver back for the next file.
async fn write_file(
    r: &Reader<'_>,
    rel: String,
    first: QueryPage,
    mut pages: mpsc::Receiver<QueryPage>,
) -> Result<(RowsFile, mpsc::Receiver<QueryPage>)> {
    let key = r.step.to.join(&rel);
    let (body_tx, body_rx) = mpsc::channel::<std::result::Result<Bytes, StorageError>>(2);
    let (cols, missing, pk) = (r.cols.clone(), r.missing.clone(), r.pk.to_string());
    let file_bytes = r.ctx.res.plan.settings.file_bytes;
    let abort = StorageError::Io {
        place: Arc::new(r.dst.place().clone()),
        op: "put",
        key: key.clone(),
        source: std::io::Error::other("the file's encoding failed"),
    };
    // Encoding is CPU work: off the async threads, so queries and puts go on.
    let encode = tokio::task::spawn_blocking(move || {
        let mut seen = Seen::default();
        let mut next = Some(first);
        let out = (|| {
            let mut file: Option<PageFile<Sink>> = None;
            while let Some(page) = next.take() {
                let keys = page
                    .fields
                    .iter()
                    .find(|f| f.field_name == pk)
                    .and_then(crate::milvus::data::pks)
                    .unwrap_or_default();
                let (Some(lo), Some(hi)) = (keys.first(), keys.last()) else {
                    return Err("a page has no primary keys".to_string());
                };
                seen.first.get_or_insert_with(|| lo.clone());
                seen.last = Some(hi.clone());
                seen.rows += page.num_rows as u64;
                limits::merge(&mut seen.longest, &limits::observe(&missing, &page.fields));
                seen.keys = seen
                    .keys
                    .wrapping_add(key_digest(&page.fields, &pk, page.num_rows)?);
                let batch = page_to_batch(&cols, &page.fields, page.num_rows)?;
                drop(page);
                let f = match &mut file {
                    Some(f) => f,
                    None => {
                        let sink = Sink {
                            tx: body_tx.clone(),
                            buf: Vec::with_capacity(CHUNK),
                        };
                        file.insert(PageFile::new(sink, batch.schema())?)
                    }
                };
                f.write(&batch)?;
                if f.bytes() >= file_bytes {
                    break;
                }
                next = pages.blocking_recv();
            }
            match file {
                Some(f) => f.finish()?.send().map_err(|e| e.to_string()),
                None => Ok(()),
            }
        })();
        if out.is_err() {
            // An error in the body aborts the put: no partial object is left.
            let _ = body_tx.blocking_send(Err(abort));
        }
        out.map(|()| (seen, pages))
    });
    let body = futures::stream::unfold(body_rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    let (put, encoded) = futures::join!(r.dst.put(&key, Box::pin(body)), encode);
    let (seen, pages) = encoded
        .map_err(|e| StepError::Failed(format!("encoding a page: {e}")))?
        .map_err(|e| {
            StepError::Failed(format!(
                "reading `{}.{}` on `{}` into Parquet: {e}",
                r.db, r.name, r.step.instance
            ))
        })?;
    let put = put?;
    let (Some(first), Some(last)) = (seen.first, seen.last) else {
        return fail(format!("a file of `{}.{}` got no rows", r.db, r.name));
    };
    let file = RowsFile {
        key: rel,
        rows: seen.rows,
        first: first.into(),
        last: last.into(),
        size: Some(put.size),
        md5: put.md5,
        etag: put.etag,
        longest: seen.longest,
        keys: Some(format!("{:032x}", seen.keys)),
    };
    Ok((file, pages))
}

/// The sum of the hashes of a page's primary keys, as `codec::digest` hashes a key column.
fn key_digest(fields: &[FieldData], pk: &str, rows: usize) -> std::result::Result<u128, String> {
    let col = fields
        .iter()
        .find(|f| f.field_name == pk)
        .ok_or_else(|| format!("a page has no primary-key column `{pk}`"))?;
    let hashed = crate::codec::digest::hash_rows(std::slice::from_ref(col), pk, rows, true)?;
    Ok(hashed.iter().fold(0u128, |s, (_, h)| s.wrapping_add(*h)))
}

/// The bytes of a file on their way to its put, a chunk at a time.
struct Sink {
    tx: mpsc::Sender<std::result::Result<Bytes, StorageError>>,
    buf: Vec<u8>,
}

impl Sink {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the put stopped"))
    }
}

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(()) // chunks go when full, the rest when the file is finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_between_points_cover_every_key_once() {
        let pts = [Pk::Int(10), Pk::Int(20)];
        let r = Range::between(&pts);
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].expr("id"), "id < 10");
        assert_eq!(r[1].expr("id"), "id >= 10 and id < 20");
        assert_eq!(r[2].expr("id"), "id >= 20");
        assert_eq!(Range::between(&[]), vec![Range::default()]);
        assert_eq!(Range::default().expr("id"), "");
        let s = Range::between(&[Pk::Str("a\"b".into())]);
        assert_eq!(s[0].expr("k"), "k < \"a\\\"b\"");
    }
}
