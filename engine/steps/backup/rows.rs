//! A rows backup: every collection read by primary-key pages through the query API into Parquet
//! files (`format::rows`), one checkpointed task per file.
//!
//! A collection's keys are cut into `settings.readers` ranges (`split`), recorded first; each
//! range of each partition is read on its own (`read`), and its files record their last key: a
//! resumed backup continues each range after its last recorded file, and rewrites a file that
//! was written but not recorded (a put is atomic). Each file is published as it is recorded,
//! so a restore reading `to` inserts it at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::common::{
    backup_info, collection_info, load_state_name, preview_info, preview_rows, start,
};
use super::read::{PAGE_BYTES, Range, Reader, read_range, recorded};
use super::split::split_points;
use crate::checkpoint::{TaskState, Tasks};
use crate::codec::{
    self,
    arrow::{columns, output_fields},
    limits,
};
use crate::format::meta::{BackupInfo, CollectionBackupInfo};
use crate::format::rows::{self, Key, RowsCollection, RowsFile, RowsMeta, RowsPartition};
use crate::milvus::{Fresh, MAX_QUERY_LIMIT, MilvusClient, Pk};
use crate::plan::BackupStep;
use crate::schema::CollectionSchema;
use crate::steps::ctx::{Result, StepCtx, StepError, fail, to_json};
use crate::steps::feed::Unit;
use crate::steps::loads::load_record;
use crate::steps::preview::{Seen, StepPreview};
use crate::storage::Storage;

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
    let missing = limits::missing(&schema);
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
    let ranges_task = format!("{key}/ranges");
    let points = ctx.done::<Vec<Key>>(&ranges_task)?;
    let mut read = 0;
    let mut unread = points.is_none();
    for (unit, range) in work(&units, points.as_deref().unwrap_or_default()) {
        let (files, ended) = recorded(ctx, &key, &unit, range)?;
        read += files.iter().map(|f| f.rows).sum::<u64>();
        unread |= !ended;
    }
    let mut total = None;
    let was_loaded = if unread {
        let was_loaded = ctx.load_to_read(c, name, &loaded_task).await?;
        total = c.query_count(name, &[], "").await.ok();
        if let Some(n) = total {
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
    // Where the readers' key ranges meet: recorded before any file, so that a resumed backup
    // reads the same ranges.
    let points: Vec<Pk> = match points {
        Some(p) => p.iter().map(Pk::from).collect(),
        None => {
            let p = split(ctx, c, name, &pk, total).await?;
            let keys: Vec<Key> = p.iter().cloned().map(Key::from).collect();
            ctx.set(&ranges_task, TaskState::Done(to_json(&keys)))
                .await?;
            p
        }
    };
    let ranges = Range::between(&points);
    let reader = Reader {
        ctx,
        c,
        dst,
        step,
        db,
        name,
        key: &key,
        pk: &pk,
        cols: Arc::new(cols.clone()),
        output: output_fields(&cols),
        missing: missing.clone(),
        limit: codec::page_limit(&schema, PAGE_BYTES),
    };
    let (reader, ranges, so_far) = (&reader, &ranges, &so_far);
    let (missing, early) = (&missing, &early);
    // Every key range of every partition, `settings.readers` at a time.
    let read: Vec<(String, Vec<RowsFile>)> = futures::stream::iter(work(&units, &points))
        .map(|(unit, index)| async move {
            let names: Vec<String> = (!unit.is_empty())
                .then(|| unit.clone())
                .into_iter()
                .collect();
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
                publish(ctx, step, c, early, &rc, true);
            };
            let files = read_range(reader, &unit, &names, index, &ranges[index], &written).await?;
            Ok::<_, StepError>((unit, files))
        })
        .buffered(ctx.res.plan.settings.readers.max(1))
        .try_collect()
        .await?;
    let mut parts: Vec<RowsPartition> = Vec::new();
    let mut longest = BTreeMap::new();
    for (unit, files) in read {
        for f in &files {
            limits::merge(&mut longest, &f.longest);
        }
        match parts.last_mut() {
            Some(p) if p.name == unit => p.files.extend(files),
            _ => parts.push(RowsPartition { name: unit, files }),
        }
    }
    let total: u64 = parts.iter().flat_map(|p| &p.files).map(|f| f.rows).sum();
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

/// The pieces of work of one collection: every key range of every partition, partition by
/// partition (so that a partition's files come out together, in key order).
fn work(units: &[String], points: &[impl Sized]) -> Vec<(String, usize)> {
    let ranges = points.len() + 1;
    units
        .iter()
        .flat_map(|u| (0..ranges).map(move |i| (u.clone(), i)))
        .collect()
}

/// Split points for `settings.readers` readers of `name` (none for one reader, or when the
/// collection is too small to split): from one page of its first keys and `count(*)` probes
/// (`backup::split`, at most 8 per point).
async fn split(
    ctx: &StepCtx,
    c: &MilvusClient,
    name: &str,
    pk: &str,
    total: Option<u64>,
) -> Result<Vec<Pk>> {
    let readers = ctx.res.plan.settings.readers;
    let Some(total) = total.filter(|_| readers > 1) else {
        return Ok(Vec::new());
    };
    let keys = [pk.to_string()];
    let first = ctx
        .retry("query", || async {
            let p = c.query_page(
                name,
                &[],
                pk,
                None,
                "",
                MAX_QUERY_LIMIT,
                &keys,
                Fresh::Strong,
            );
            Ok(p.await?)
        })
        .await?;
    let first = first
        .fields
        .iter()
        .find(|f| f.field_name == pk)
        .and_then(crate::milvus::data::pks)
        .unwrap_or_default();
    split_points(&first, total, readers, |x: Pk| async move {
        let below = format!("{pk} < {}", x.to_expr());
        ctx.retry("count", || async {
            Ok(c.count(name, &[], &below, Fresh::Held).await?)
        })
        .await
    })
    .await
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
