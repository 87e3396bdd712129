//! A rows backup: every collection read by primary-key pages through the query API into Parquet
//! files (`format::rows`), one checkpointed task per file.
//!
//! Each file records its last key: a resumed backup continues after the last recorded file, and
//! rewrites a file that was written but not recorded (a put is atomic, the content is the same).
//! Each file is published as it is recorded, so a restore reading `to` inserts it at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::common::{
    backup_info, collection_info, load_state_name, preview_info, preview_rows, start,
};
use crate::checkpoint::{TaskState, Tasks};
use crate::codec::{
    self,
    arrow::{Col, columns, output_fields, page_to_batch, to_parquet},
    limits,
};
use crate::format::meta::{BackupInfo, CollectionBackupInfo};
use crate::format::rows::{self, RowsCollection, RowsFile, RowsMeta, RowsPartition, safe};
use crate::milvus::{MilvusClient, Pk};
use crate::plan::BackupStep;
use crate::schema::CollectionSchema;
use crate::steps::ctx::{Result, StepCtx, StepError, fail, to_json};
use crate::steps::feed::Unit;
use crate::steps::loads::load_record;
use crate::steps::preview::{Seen, StepPreview};
use crate::storage::Storage;

/// Bytes per page (and so per Parquet file and per insert), well under gRPC's message limits.
const PAGE_BYTES: usize = 16 << 20;

#[derive(Serialize, Deserialize)]
struct Written {
    file: RowsFile,
}

pub async fn run(ctx: &StepCtx, step: &BackupStep) -> Result<String> {
    let client = ctx.res.milvus(&step.instance).await?;
    let dst = ctx.res.storage(&step.to.bucket).await?;
    let collections = start(ctx, step, &client, &dst).await?;
    let (client_ref, dst_ref) = (&client, &dst);
    let units = ctx
        .each(
            collections.clone(),
            |(db, name)| format!("{db}.{name}"),
            |(db, name)| async move {
                ctx.check_cancel()?;
                let c = client_ref.with_database(&db);
                // Refused before reading anything, as the preview refuses it.
                let desc = c.describe_collection(&name).await?;
                if let Some(why) = crate::schema::uncarried(&db, &name, &desc.schema) {
                    return fail(why);
                }
                let schema = CollectionSchema::from(&desc.schema);
                if let Some(conflict) = unreadable(&c, &db, &name, &schema).await? {
                    return fail(conflict);
                }
                let (info, rc) = backup_collection(ctx, &c, dst_ref, step, &db, &name).await?;
                publish(ctx, step, &c, &info, &rc, false);
                Ok((info, rc))
            },
        )
        .await?;
    let mut infos = Vec::new();
    let mut rows_meta = RowsMeta::default();
    for (info, rc) in units.done.iter().cloned() {
        infos.push(info);
        rows_meta.collections.push(rc);
    }
    let rows: u64 = infos.iter().filter_map(|c| c.planrun_row_count).sum();
    let files: u64 = rows_meta
        .collections
        .iter()
        .flat_map(|c| &c.partitions)
        .map(|p| p.files.len() as u64)
        .sum();
    let backup = backup_info(ctx, step, &client, infos, rows::FORMAT, files);
    // Written at every end of the step, not once: a retried collection joins the meta.
    ctx.retry("backup meta", || async {
        Ok(crate::format::write_meta(dst.as_ref(), &step.to, &backup, Some(&rows_meta)).await?)
    })
    .await?;
    units.finish(format!(
        "{} collection(s), {rows} rows in {files} Parquet files into {}",
        backup.collection_backups.len(),
        ctx.res.plan.show_location(&step.to)
    ))
}

/// Publishes `rc`, the files of one collection (with `partial`, those written so far), for the
/// steps reading `to`.
fn publish(
    ctx: &StepCtx,
    step: &BackupStep,
    c: &MilvusClient,
    info: &CollectionBackupInfo,
    rc: &RowsCollection,
    partial: bool,
) {
    let files = rc.partitions.iter().map(|p| p.files.len() as u64).sum();
    ctx.publish_unit(Unit {
        at: step.to.clone(),
        backup: backup_info(ctx, step, c, vec![info.clone()], rows::FORMAT, files),
        rows: Some(RowsMeta {
            collections: vec![rc.clone()],
            ..RowsMeta::default()
        }),
        partial,
    });
}

/// Reads one partition (or, with a partition key, the whole collection) page by page into
/// Parquet files, passing each to `written` as it is recorded (and those an earlier run
/// recorded). Queries follow the key cursor one after another; each page is encoded and
/// written while the next one is queried, so the source server is kept busy instead of waiting
/// for planrun's encoder and the bucket.
#[allow(clippy::too_many_arguments)]
async fn read_unit(
    ctx: &StepCtx,
    c: &MilvusClient,
    dst: &Arc<dyn Storage>,
    step: &BackupStep,
    db: &str,
    name: &str,
    key: &str,
    partition: &str,
    names: &[String],
    pk: &str,
    cols: &[Col],
    missing: &[String],
    limit: usize,
    written: &(dyn Fn(&RowsFile) + Sync),
) -> Result<Vec<RowsFile>> {
    let task = |seq: usize| file_task(key, partition, seq);
    let output = output_fields(cols);
    let output = &output;
    let cols: Arc<Vec<Col>> = Arc::new(cols.to_vec());
    let (files, ended) = recorded(ctx, key, partition)?;
    for f in &files {
        ctx.events.progress_rows(&ctx.step, f.rows);
        written(f);
    }
    if ended {
        return Ok(files);
    }
    let mut files = files;
    let mut after: Option<Pk> = files.last().map(|f| Pk::from(&f.last));
    let mut seq = files.len();
    // One page queued and two being written: with the one being queried, at most four pages
    // (16 MiB each, plus their Arrow and Parquet copies while encoding) are held at once.
    let (pages_tx, pages_rx) = tokio::sync::mpsc::channel(1);
    let query = async move {
        loop {
            ctx.check_cancel()?;
            let page = ctx
                .retry("query", || async {
                    Ok(
                        c.query_page(name, names, pk, after.as_ref(), "", limit, output)
                            .await?,
                    )
                })
                .await?;
            if page.num_rows == 0 {
                return Ok::<_, StepError>(());
            }
            after = page.last_pk.clone();
            if pages_tx.send((seq, page)).await.is_err() {
                return Ok(()); // the writer failed; its error is the one reported
            }
            seq += 1;
        }
    };
    let pages = futures::stream::unfold(pages_rx, |mut rx| async move {
        rx.recv().await.map(|page| (page, rx))
    });
    let write = pages
        .map(|(seq, page): (usize, crate::milvus::QueryPage)| {
            let cols = cols.clone();
            async move {
                let pks = page
                    .fields
                    .iter()
                    .find(|f| f.field_name == pk)
                    .and_then(crate::milvus::data::pks)
                    .unwrap_or_default();
                let (Some(first), Some(last)) = (pks.first().cloned(), pks.last().cloned()) else {
                    return fail(format!("a page of `{db}.{name}` has no primary keys"));
                };
                let rows = page.num_rows;
                let longest = limits::observe(missing, &page.fields);
                let keys = key_digest(&page.fields, pk, rows);
                // Encoding is CPU work: off the async threads, so queries and puts go on.
                let body = tokio::task::spawn_blocking(move || {
                    let batch = page_to_batch(&cols, &page.fields, page.num_rows)?;
                    to_parquet(&batch)
                })
                .await
                .map_err(|e| StepError::Failed(format!("encoding a page: {e}")))?
                .map_err(|e| {
                    StepError::Failed(format!(
                        "reading `{db}.{name}` on `{}` into Parquet: {e}",
                        step.instance
                    ))
                })?;
                let rel = format!(
                    "rows/{}/{}/{}/{seq:06}.parquet",
                    safe(db),
                    safe(name),
                    safe(partition)
                );
                let put = dst.put_bytes(&step.to.join(&rel), body.into()).await?;
                crate::fault::point("rows-file-written");
                crate::fault::pause("rows-file-written").await;
                let file = RowsFile {
                    key: rel,
                    rows: rows as u64,
                    first: first.into(),
                    last: last.into(),
                    size: Some(put.size),
                    md5: put.md5,
                    longest,
                    keys,
                };
                ctx.set(
                    &task(seq),
                    TaskState::Done(to_json(&Some(Written { file: file.clone() }))),
                )
                .await?;
                ctx.events.progress_rows(&ctx.step, rows as u64);
                Ok(file)
            }
        })
        .buffered(2)
        .inspect_ok(|f| written(f))
        .try_collect::<Vec<RowsFile>>();
    let (queried, written) = futures::join!(query, write);
    let written = written?;
    queried?;
    files.extend(written);
    // Files are numbered from 0 without gaps: the end marker takes the next number.
    ctx.set(
        &task(files.len()),
        TaskState::Done(to_json(&None::<Written>)),
    )
    .await?;
    Ok(files)
}

/// The digest of a page's primary keys, hex, as `RowsFile::keys` records it.
fn key_digest(
    fields: &[crate::milvus::pb::schema::FieldData],
    pk: &str,
    rows: usize,
) -> Option<String> {
    let col = fields.iter().find(|f| f.field_name == pk)?;
    let hashed = crate::codec::digest::hash_rows(std::slice::from_ref(col), pk, rows, true).ok()?;
    let sum = hashed.iter().fold(0u128, |s, (_, h)| s.wrapping_add(*h));
    Some(format!("{sum:032x}"))
}

/// The task recording file `seq` of one partition (or, past the last file, its end).
fn file_task(key: &str, partition: &str, seq: usize) -> String {
    format!("{key}/{}/{seq:06}", safe(partition))
}

/// The files of one partition an earlier run recorded, in order, and whether its end is
/// recorded too (all of it read). Past the first gap nothing recorded is trusted: pages are
/// queried again from the last key before it and rewritten.
fn recorded(ctx: &StepCtx, key: &str, partition: &str) -> Result<(Vec<RowsFile>, bool)> {
    let mut files = Vec::new();
    loop {
        match ctx.done::<Option<Written>>(&file_task(key, partition, files.len()))? {
            Some(Some(w)) => files.push(w.file),
            Some(None) => return Ok((files, true)),
            None => return Ok((files, false)),
        }
    }
}

/// The task recording the load the backup makes to read a collection, and the load state the
/// collection had before: the preview of a resumed run reads it too.
fn loaded_task(db: &str, name: &str) -> String {
    format!("{}/loaded", coll_key(db, name))
}

/// The prefix of a collection's tasks.
fn coll_key(db: &str, name: &str) -> String {
    format!("coll/{db}.{name}")
}

async fn backup_collection(
    ctx: &StepCtx,
    c: &MilvusClient,
    dst: &Arc<dyn Storage>,
    step: &BackupStep,
    db: &str,
    name: &str,
) -> Result<(CollectionBackupInfo, RowsCollection)> {
    let key = coll_key(db, name);
    let desc = c.describe_collection(name).await?;
    let schema = CollectionSchema::from(&desc.schema);
    let cols = columns(&schema).map_err(|e| StepError::Failed(format!("`{db}.{name}`: {e}")))?;
    let Some(pk) = desc.primary_field().map(|f| f.name.clone()) else {
        return fail(format!(
            "`{db}.{name}` on `{}` has no primary key",
            step.instance
        ));
    };
    let partitions = c.show_partitions(name).await?;
    let indexes = c.describe_index(name).await?;
    let limit = codec::page_limit(&schema, PAGE_BYTES);
    let missing = limits::missing(&schema);
    let mut longest = BTreeMap::new();
    let mut parts = Vec::new();
    let mut total = 0;
    // With a partition key Milvus routes rows itself and refuses queries naming partitions:
    // the collection is read whole, into one unit with no partition name.
    let partition_key = schema.fields.iter().any(|f| f.is_partition_key);
    let units: Vec<String> = if partition_key {
        vec![String::new()]
    } else {
        partitions.iter().map(|p| p.name.clone()).collect()
    };
    // Read by query, so loaded; a released source is released again once read. One an
    // earlier run read to the end is not loaded again just to find that out.
    let loaded_task = loaded_task(db, name);
    let mut read = 0;
    let mut unread = false;
    for unit in &units {
        let (files, ended) = recorded(ctx, &key, unit)?;
        read += files.iter().map(|f| f.rows).sum::<u64>();
        unread |= !ended;
    }
    let was_loaded = if unread {
        let was_loaded = ctx.load_to_read(c, name, &loaded_task).await?;
        if let Ok(n) = c.query_count(name, &[], "").await {
            ctx.events.planned_rows(&ctx.step, n);
        }
        was_loaded
    } else {
        ctx.events.planned_rows(&ctx.step, read);
        ctx.loaded_before(c, name, &loaded_task).await?
    };
    // The files so far, published as each is written. Not when a field's size limit is taken
    // from the values read: the target is created from the schema before all of them are read.
    let mut early = collection_info(db, name, &desc, &partitions, &indexes, None);
    // A restore loads its target as the source was: said from the first file on.
    early.load_state = load_state_name(was_loaded);
    let so_far = std::sync::Mutex::new(RowsCollection {
        db_name: db.to_string(),
        collection_name: name.to_string(),
        partitions: Vec::new(),
    });
    let started = std::time::Instant::now();
    for unit in units {
        let names: Vec<String> = if unit.is_empty() {
            Vec::new()
        } else {
            vec![unit.clone()]
        };
        let written = |f: &RowsFile| {
            if !missing.is_empty() {
                return;
            }
            let mut rc = so_far.lock().expect("rows lock");
            match rc.partitions.iter_mut().find(|p| p.name == unit) {
                Some(p) => p.files.push(f.clone()),
                None => rc.partitions.push(RowsPartition {
                    name: unit.clone(),
                    files: vec![f.clone()],
                }),
            }
            publish(ctx, step, c, &early, &rc, true);
        };
        let files = read_unit(
            ctx, c, dst, step, db, name, &key, &unit, &names, &pk, &cols, &missing, limit, &written,
        )
        .await?;
        total += files.iter().map(|f| f.rows).sum::<u64>();
        for f in &files {
            limits::merge(&mut longest, &f.longest);
        }
        parts.push(RowsPartition { name: unit, files });
    }
    ctx.events.phase(&ctx.step, name, "read", started);
    ctx.release_read(c, name, &loaded_task).await?;
    let mut info = collection_info(db, name, &desc, &partitions, &indexes, Some(total));
    info.load_state = load_state_name(was_loaded);
    for note in limits::fill(&mut info.schema, &longest) {
        ctx.events.warn(&ctx.step, format!("`{db}.{name}`: {note}"));
    }
    Ok((
        info,
        RowsCollection {
            db_name: db.to_string(),
            collection_name: name.to_string(),
            partitions: parts,
        },
    ))
}

/// The refusal both the preview and apply make for one collection: rows mode reads through
/// queries, so the collection must be loadable (loaded, or an index on every vector field) and
/// every field of a type rows mode can store.
async fn unreadable(
    c: &MilvusClient,
    db: &str,
    name: &str,
    schema: &CollectionSchema,
) -> Result<Option<String>> {
    if let Err(e) = columns(schema) {
        return Ok(Some(format!("`{db}.{name}` on `{}`: {e}", c.name())));
    }
    if c.get_load_state(name).await? == crate::milvus::pb::common::LoadState::Loaded {
        return Ok(None);
    }
    let indexed: Vec<String> = c
        .describe_index(name)
        .await?
        .into_iter()
        .map(|i| i.field_name)
        .collect();
    let missing: Vec<&str> = schema
        .vector_fields()
        .filter(|f| !indexed.iter().any(|i| i == &f.name))
        .map(|f| f.name.as_str())
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "`{db}.{name}` on `{}` is not loaded and cannot be: field(s) {} have no index, so rows \
             mode cannot query it; build an index on them, or use mode = \"binlog\"",
            c.name(),
            missing
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }))
}

/// What a rows backup would read, by counting (no bucket access needed).
/// `tasks`: the records of the run apply would resume, whose load states are shown, not the
/// ones its killed runs left.
pub(super) async fn preview(
    client: &MilvusClient,
    selected: &[(String, String)],
    tasks: Option<&Tasks>,
    p: &mut StepPreview,
) -> Option<BackupInfo> {
    let mut info = BackupInfo {
        format: rows::FORMAT.to_string(),
        ..Default::default()
    };
    for (db, name) in selected {
        let c = client.with_database(db);
        let parts = c.show_partitions(name).await.unwrap_or_default();
        let desc = c.describe_collection(name).await.ok();
        let schema: Option<CollectionSchema> = desc.as_ref().map(|d| (&d.schema).into());
        let mut notes = Vec::new();
        if let Some(why) = desc
            .as_ref()
            .and_then(|d| crate::schema::uncarried(db, name, &d.schema))
        {
            p.conflict(why);
        }
        if let Some(s) = &schema {
            match unreadable(&c, db, name, s).await {
                Ok(Some(conflict)) => p.conflict(conflict),
                Ok(None) => {}
                Err(e) => p.conflict(e),
            }
            for m in limits::missing(s) {
                let (field, what) = m.split_once('/').unwrap_or((&m, ""));
                notes.push(format!(
                    "  ~ {db}.{name}: field `{field}` has no {what} on `{}`; the backup records \
                     one derived from the longest value it reads",
                    c.name()
                ));
            }
        }
        let (rows, shown) = preview_rows(&c, name).await;
        p.counts.collections += 1;
        p.counts.partitions += parts.len() as u64;
        p.counts.rows += rows;
        p.seen
            .push(Seen::source(client.name(), db, name, rows, None));
        p.changes.push(format!(
            "+ {db}.{name}: {} partitions, {shown} rows read by primary key into Parquet files",
            parts.len(),
        ));
        p.changes.extend(notes);
        let mut backup = preview_info(&c, db, name, &parts, desc.as_ref(), Some(rows)).await;
        if let Some(t) = tasks
            && let Ok(Some(r)) = load_record(t, &p.id, &loaded_task(db, name))
        {
            backup.load_state = load_state_name(r.was_loaded);
            if r.held {
                p.changes.push(format!(
                    "  ~ {db}.{name}: loaded by the stopped run to read it, released again once \
                     read"
                ));
            }
        }
        info.collection_backups.push(backup);
    }
    Some(info)
}
