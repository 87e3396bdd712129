//! A rows restore: create the collection, insert every Parquet file, index, load, check. Files a
//! running rows backup publishes are inserted as they come; the rest waits for the whole backup.
//!
//! A restore records each file it inserted; a file whose insert may have happened before a crash
//! is reconciled by counting its key range in the target (key ranges of files never overlap), so
//! no row is inserted twice.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::rows_import::{self, Way, import_files};
use super::target::{Target, create_aliases, create_target, discard};
use crate::checkpoint::TaskState;
use crate::codec::arrow::{Col, batch_to_fields, columns, from_parquet, row_group, row_groups};
use crate::format::meta::CollectionBackupInfo;
use crate::format::rows::{RowsCollection, RowsFile, RowsMeta};
use crate::milvus::{MilvusClient, Pk};
use crate::plan::{Keys, Location, RestoreStep};
use std::collections::BTreeMap;

use crate::steps::ctx::{Result, StepCtx, StepError, Units, fail, to_json};
use crate::storage::Storage;

/// One Parquet file of the backup, whole (up to the backup's `file_bytes`).
async fn read_file(store: &dyn Storage, at: &Location, key: &str) -> Result<bytes::Bytes> {
    crate::format::read_all(store, &at.join(key))
        .await?
        .ok_or_else(|| StepError::Failed(format!("`{at}/{key}` is missing from the backup")))
}

pub(super) async fn run(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    targets: &[Target<'_>],
    refused: &BTreeMap<String, String>,
    rows_meta: &RowsMeta,
    partial: bool,
) -> Result<Units<String>> {
    let from = &ctx.res.storage(&step.from.bucket).await?;
    let work = |t| restore_one(ctx, step, client, from, refused, rows_meta, t, partial);
    if !partial {
        return ctx.each(targets.iter().collect(), |t| t.unit(), work).await;
    }
    // Not finished by these files: no unit event; a failure is kept for the whole pass.
    let mut out = Units {
        done: Vec::new(),
        failed: Vec::new(),
    };
    for t in targets {
        match work(t).await {
            Ok(_) => {}
            Err(e @ (StepError::Interrupted | StepError::Checkpoint(_))) => return Err(e),
            Err(e) => out.failed.push((t.unit(), e.to_string())),
        }
    }
    Ok(out)
}

/// One target: refused, or restored from its files in `rows_meta`.
#[allow(clippy::too_many_arguments)]
async fn restore_one(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    from: &Arc<dyn Storage>,
    refused: &BTreeMap<String, String>,
    rows_meta: &RowsMeta,
    t: &Target<'_>,
    partial: bool,
) -> Result<String> {
    ctx.check_cancel()?;
    if let Some(why) = refused.get(&t.unit()) {
        return fail(why.clone());
    }
    let Some(rc) = rows_meta
        .collections
        .iter()
        .find(|c| c.db_name == t.info.db_name && c.collection_name == t.info.collection_name)
    else {
        return fail(format!(
            "the rows meta of `{}` lists no files for `{}`",
            step.from, t.info.collection_name
        ));
    };
    restore_collection(
        ctx,
        step,
        client,
        from,
        t,
        rc,
        rows_meta.importable(),
        partial,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn restore_collection(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    from: &Arc<dyn Storage>,
    t: &Target<'_>,
    rc: &RowsCollection,
    importable: bool,
    partial: bool,
) -> Result<String> {
    let (db, info, target) = (t.db.as_str(), t.info, t.name.as_str());
    let key = t.key();
    if let Some(line) = ctx.done::<String>(&key)? {
        return Ok(line);
    }
    let c = client.with_database(db);
    let cols = columns(&info.schema)
        .map_err(|e| StepError::Failed(format!("`{}`: {e}", info.collection_name)))?;
    // `keep_keys`: the copy gets the same primary keys, so auto_id is off. `new_keys`: the
    // target assigns keys, so the files' key column is not sent.
    let new_keys = step.keys == Keys::New && info.schema.auto_id();
    let mut schema = info.schema.clone();
    if !new_keys {
        schema.auto_id = false;
        for f in &mut schema.fields {
            f.auto_id = false;
        }
    }
    let files = || rc.partitions.iter().flat_map(|p| &p.files);
    if new_keys
        && files().any(|f| {
            matches!(
                ctx.state(&format!("{key}/insert/{}", f.key)),
                Ok(Some(TaskState::Intent(_)))
            )
        })
    {
        // Rows of a file inserted before a crash cannot be found again by their new keys.
        ctx.events.warn(
            &ctx.step,
            format!(
                "`{target}`: a file may have been partly inserted when the last run stopped; \
                 with new keys its rows cannot be told apart, so `{target}` is dropped and \
                 restored again"
            ),
        );
        c.drop_collection(target).await?;
        ctx.forget(&key).await?;
    }
    if let Some(line) = create_target(ctx, step, &c, t, &schema, false).await? {
        return Ok(line);
    }
    // Every partition of the source, also those whose files have not arrived yet (a running
    // backup publishes files as it writes them). With a partition key the server makes them.
    let by_key = info.schema.fields.iter().any(|f| f.is_partition_key);
    ctx.once(&format!("{key}/partitions"), || async {
        let names = info.partition_backups.iter().map(|p| &p.partition_name);
        for name in names.chain(rc.partitions.iter().map(|p| &p.name)) {
            if !by_key && !name.is_empty() && !c.has_partition(target, name).await? {
                c.create_partition(target, name).await?;
            }
        }
        Ok(true)
    })
    .await?;
    let pk = info
        .schema
        .fields
        .iter()
        .find(|f| f.is_primary_key)
        .map(|f| f.name.clone())
        .unwrap_or_default();
    let total: u64 = rc
        .partitions
        .iter()
        .flat_map(|p| &p.files)
        .map(|f| f.rows)
        .sum();
    let way = rows_import::way(&ctx.res, step, Some(client), info, importable)
        .map_err(StepError::Failed)?;
    let by_import = way == Way::Import;
    let verb = match way {
        Way::Import => "import",
        Way::Insert(_) => "insert",
    };
    // Planned as files come to be written: once per file, also when the files of a running
    // backup arrive over several calls.
    let mut planned = 0;
    for f in files() {
        if !matches!(
            ctx.state(&format!("{key}/{verb}/{}", f.key))?,
            Some(TaskState::Done(_))
        ) {
            planned += f.rows;
        }
    }
    ctx.events.planned_rows(&ctx.step, planned);
    let started = std::time::Instant::now();
    let c = &c;
    let writes = async {
        match way {
            Way::Import => import_files(ctx, step, c, &key, target, rc, from).await,
            Way::Insert(_) => {
                let (key, pk) = (&key, &pk);
                insert_files(
                    ctx, step, c, key, target, info, rc, from, cols, pk, new_keys,
                )
                .await
            }
        }
    };
    // Files still arriving from a running backup: index and load beside the first inserts, so
    // that little is left for the end. (On a finished backup this only moves those seconds.)
    // Imported segments are seen by a load that comes after them (on 2.3.5 a loaded
    // collection counted none of them): by import, only the index is made early.
    let early = async {
        match partial && t.loads(step) {
            true => make_queryable(ctx, c, target, info, !by_import).await,
            false => Ok(()),
        }
    };
    let (written, early) = futures::join!(writes, early);
    written?;
    early?;
    if partial {
        return Ok(String::new());
    }
    ctx.events.phase(&ctx.step, target, verb, started);
    let started = std::time::Instant::now();
    let loads = t.loads(step);
    if step.indexes || loads {
        make_queryable(ctx, c, target, info, loads).await?;
    }
    let counted = if loads {
        let got = c.query_count(target, &[], "").await?;
        if got != total {
            let why = format!(
                "`{target}` on `{}` holds {got} rows after the restore, the backup of `{}` had \
                 {total}",
                step.instance, info.collection_name
            );
            return discard(ctx, c, t, why).await;
        }
        // Each partition too: an import names its partition, and a file imported into the
        // wrong one would still add up in the whole. (Milvus Lite, which only ever inserts,
        // counts the whole collection whatever partition is named.)
        let each = rc
            .partitions
            .iter()
            .filter(|p| by_import && !p.name.is_empty());
        for p in each {
            let want: u64 = p.files.iter().map(|f| f.rows).sum();
            let got = c
                .query_count(target, std::slice::from_ref(&p.name), "")
                .await?;
            if got != want {
                let why = format!(
                    "partition `{}` of `{target}` on `{}` holds {got} rows after the restore, \
                     the backup of `{}` had {want}",
                    p.name, step.instance, info.collection_name
                );
                return discard(ctx, c, t, why).await;
            }
        }
        // And their keys, against the digests the backup's files record (none in older ones).
        let mut keyed = by_import;
        for p in rc.partitions.iter().filter(|_| by_import) {
            let Some(want) = crate::format::rows::key_digest(&p.files) else {
                keyed = false;
                continue;
            };
            let named: Vec<String> = (!p.name.is_empty())
                .then(|| p.name.clone())
                .into_iter()
                .collect();
            let (_, keys) = crate::steps::keys::key_digest(ctx, c, target, &named, &pk).await?;
            if keys != want {
                let why = format!(
                    "the primary keys of {} of `{target}` on `{}` are not the backup's after \
                     the restore (key digest {keys:032x}, the backup's {want:032x})",
                    match p.name.as_str() {
                        "" => "the whole".to_string(),
                        name => format!("partition `{name}`"),
                    },
                    step.instance
                );
                return discard(ctx, c, t, why).await;
            }
        }
        match (by_import, keyed) {
            (true, true) => {
                format!(", {got} rows verified by count and key digest in each partition")
            }
            (true, false) => format!(", {got} rows verified by count in each partition"),
            (false, _) => format!(", {got} rows verified by count"),
        }
    } else {
        count_unloaded(ctx, c, t, rc, total).await?
    };
    if step.indexes || loads {
        ctx.events
            .phase(&ctx.step, target, "index and load", started);
    }
    let line = format!(
        "`{}` → `{target}`: {} partitions, {total} rows {verb}ed from Parquet{counted}",
        info.collection_name,
        rc.partitions.len()
    );
    let made = create_aliases(&client.with_database(db), step, t).await?;
    let line = if made.is_empty() {
        line
    } else {
        format!("{line}, aliases {}", made.join(", "))
    };
    ctx.set(&key, TaskState::Done(to_json(&line))).await?;
    Ok(line)
}

/// Inserts the files of `rc` not inserted yet into `target`, `concurrency` at a time; a file a
/// crashed run may have inserted is reconciled first.
#[allow(clippy::too_many_arguments)]
async fn insert_files(
    ctx: &StepCtx,
    step: &RestoreStep,
    c: &MilvusClient,
    key: &str,
    target: &str,
    info: &CollectionBackupInfo,
    rc: &RowsCollection,
    from: &Arc<dyn Storage>,
    cols: Vec<Col>,
    pk: &str,
    new_keys: bool,
) -> Result<()> {
    // Files a crashed run may have inserted are reconciled first, one by one: count the file's
    // key range in the target; all there → done, some → delete them and insert the file again.
    let mut queryable = false;
    let mut todo: Vec<(String, RowsFile)> = Vec::new();
    for p in &rc.partitions {
        for f in &p.files {
            let task = format!("{key}/insert/{}", f.key);
            match ctx.state(&task)? {
                Some(TaskState::Done(_)) => continue,
                Some(TaskState::Intent(_)) => {
                    if !queryable {
                        make_queryable(ctx, c, target, info, true).await?;
                        queryable = true;
                    }
                    let range = format!(
                        "{pk} >= {} and {pk} <= {}",
                        Pk::from(&f.first).to_expr(),
                        Pk::from(&f.last).to_expr()
                    );
                    // In the file's partition: files of two partitions may share a range.
                    let part: Vec<String> = (!p.name.is_empty())
                        .then(|| p.name.clone())
                        .into_iter()
                        .collect();
                    let have = c.query_count(target, &part, &range).await?;
                    if have == f.rows {
                        ctx.set(&task, TaskState::Done(to_json(&f.rows))).await?;
                        ctx.events.progress_rows(&ctx.step, f.rows);
                        continue;
                    }
                    if have > 0 {
                        let keys = file_keys(from, step, &cols, pk, f).await?;
                        c.delete(target, None, &format!("{pk} in [{keys}]")).await?;
                        // Deleted rows stay in flushed segments' counts until compaction.
                        let redo = format!("{key}/redo/{}", f.key);
                        ctx.set(&redo, TaskState::Done(to_json(&have))).await?;
                    }
                }
                _ => {}
            }
            todo.push((p.name.clone(), f.clone()));
        }
    }
    // The rest, `concurrency` files at a time (files never share a key, so their inserts are
    // independent): the target server works on one insert while the next file is decoded.
    let cols = Arc::new(cols);
    let inserts = futures::stream::iter(todo)
        .map(|(partition, f): (String, RowsFile)| {
            let cols = cols.clone();
            async move {
                ctx.check_cancel()?;
                let task = format!("{key}/insert/{}", f.key);
                let data = read_file(from.as_ref(), &step.from, &f.key).await?;
                let where_ = format!("`{}/{}`", step.from, f.key);
                let groups = row_groups(&data)
                    .map_err(|e| StepError::Failed(format!("reading {where_}: {e}")))?;
                ctx.set(&task, TaskState::Intent(to_json(&f.rows))).await?;
                let part = (!partition.is_empty()).then_some(partition.as_str());
                // A row group (a page of the backup) per insert, decoded as the one before it
                // goes in: one file's bytes and one page are held, however large the file.
                for i in 0..groups {
                    let (data, cols) = (data.clone(), cols.clone());
                    let (mut fields, n) = tokio::task::spawn_blocking(move || {
                        let b = row_group(&data, i)?;
                        Ok::<_, String>((batch_to_fields(&cols, &b)?, b.num_rows() as u32))
                    })
                    .await
                    .map_err(|e| StepError::Failed(format!("decoding {where_}: {e}")))?
                    .map_err(|e| StepError::Failed(format!("reading {where_}: {e}")))?;
                    if new_keys {
                        fields.retain(|x| x.field_name != pk);
                    }
                    c.insert(target, part, fields, n).await?;
                }
                crate::fault::point("rows-inserted");
                ctx.set(&task, TaskState::Done(to_json(&f.rows))).await?;
                ctx.events.progress_rows(&ctx.step, f.rows);
                Ok::<_, StepError>(())
            }
        })
        .buffer_unordered(ctx.concurrency())
        .try_collect::<Vec<()>>();
    inserts.await?;
    Ok(())
}

/// Checks the rows of a restored collection left released (as its source): a count needs a
/// load, so the rows of its flushed segments are summed instead, which still include the rows a
/// resumed run deleted to insert a file again.
async fn count_unloaded(
    ctx: &StepCtx,
    c: &MilvusClient,
    t: &Target<'_>,
    rc: &RowsCollection,
    total: u64,
) -> Result<String> {
    let target = t.name.as_str();
    let segments = match c
        .flush_and_wait(target, crate::steps::ctx::FLUSH_TIMEOUT)
        .await
    {
        Ok(_) => c.get_persistent_segment_info(target).await,
        Err(e) => Err(e),
    };
    let Ok(segments) = segments else {
        // Milvus Lite has no flush or segment API.
        return Ok(
            ", left released as its source (not counted: the server cannot count \
                   rows of a released collection)"
                .to_string(),
        );
    };
    let flushed: u64 = segments.iter().map(|s| s.num_rows as u64).sum();
    let mut redone = 0;
    for f in rc.partitions.iter().flat_map(|p| &p.files) {
        redone += ctx
            .done::<u64>(&format!("{}/redo/{}", t.key(), f.key))?
            .unwrap_or(0);
    }
    if flushed != total + redone {
        let why = format!(
            "`{target}` on `{}` holds {flushed} flushed rows after the restore, the backup of \
             `{}` had {total}{}",
            c.name(),
            t.info.collection_name,
            if redone > 0 {
                format!(" (plus {redone} deleted when a file was inserted again)")
            } else {
                String::new()
            }
        );
        return discard(ctx, c, t, why).await;
    }
    Ok(format!(
        ", {total} rows checked against flushed segments (left released, as its source)"
    ))
}

/// The keys of one file, as an expression list, to delete a partly inserted file.
async fn file_keys(
    from: &Arc<dyn Storage>,
    step: &RestoreStep,
    cols: &[Col],
    pk: &str,
    f: &RowsFile,
) -> Result<String> {
    let batches = from_parquet(read_file(from.as_ref(), &step.from, &f.key).await?)
        .map_err(|e| StepError::Failed(format!("reading `{}/{}`: {e}", step.from, f.key)))?;
    let mut keys = Vec::new();
    for b in &batches {
        let fields = batch_to_fields(cols, b).map_err(StepError::Failed)?;
        if let Some(col) = fields.iter().find(|x| x.field_name == pk) {
            keys.extend(crate::milvus::data::pks(col).unwrap_or_default());
        }
    }
    Ok(keys.iter().map(Pk::to_expr).collect::<Vec<_>>().join(", "))
}

/// Indexes (as in the backup) and load: needed to query the copy, and wanted at the end.
async fn make_queryable(
    ctx: &StepCtx,
    c: &MilvusClient,
    target: &str,
    info: &CollectionBackupInfo,
    load: bool,
) -> Result<()> {
    let have = c.describe_index(target).await?;
    for idx in &info.index_infos {
        if !have.iter().any(|h| h.field_name == idx.field_name) {
            let params: Vec<(String, String)> = idx.params.clone().into_iter().collect();
            if let Err(e) = c
                .create_index(target, &idx.field_name, &idx.index_name, &params)
                .await
            {
                // Milvus Lite reports an index without its build params (no `nlist`), which
                // another server may refuse: fall back to AUTOINDEX with the same metric.
                let metric: Vec<(String, String)> = idx
                    .params
                    .iter()
                    .filter(|(k, _)| k.as_str() == "metric_type")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([("index_type".to_string(), "AUTOINDEX".to_string())])
                    .collect();
                ctx.events.warn(
                    &ctx.step,
                    format!(
                        "index `{}` of `{target}` could not be created as in the backup ({e}); \
                         creating AUTOINDEX instead",
                        idx.index_name
                    ),
                );
                c.create_index(target, &idx.field_name, &idx.index_name, &metric)
                    .await?;
            }
        }
    }
    if !load {
        return Ok(());
    }
    ctx.once(&format!("coll/{}.{target}/load", c.database()), || async {
        c.load_collection(target).await?;
        c.wait_loaded(target, crate::steps::ctx::LOAD_TIMEOUT)
            .await?;
        Ok(true)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::arrow::{page_to_batch, to_parquet};
    use crate::format::rows::Key;
    use crate::milvus::data::{int64_column, varchar_column};
    use crate::milvus::pb::schema::{DataType, FieldData};
    use crate::schema::{CollectionSchema, FieldSchema, kv_from_pairs};
    use crate::steps::restore::fixtures::step;
    use crate::storage::MemoryStorage;

    /// The columns of a collection of these (name, type) fields, the first its primary key.
    fn cols(fields: &[(&str, DataType)]) -> Vec<Col> {
        let field = |(i, (name, ty)): (usize, &(&str, DataType))| FieldSchema {
            field_id: 100 + i as i64,
            name: name.to_string(),
            data_type: *ty as i32,
            is_primary_key: i == 0,
            type_params: match ty {
                DataType::VarChar => kv_from_pairs(&[("max_length".into(), "9".into())]),
                _ => Vec::new(),
            },
            ..Default::default()
        };
        columns(&CollectionSchema {
            fields: fields.iter().enumerate().map(field).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    /// A rows file of the backup at the step's `from`, holding `fields` (`n` rows).
    async fn file(
        store: &Arc<dyn Storage>,
        cols: &[Col],
        fields: &[FieldData],
        n: usize,
    ) -> RowsFile {
        let body = to_parquet(&page_to_batch(cols, fields, n).unwrap()).unwrap();
        let key = "rows/default/c/_default/000000.parquet".to_string();
        store
            .put_bytes(&step().from.join(&key), body.into())
            .await
            .unwrap();
        RowsFile {
            key,
            rows: n as u64,
            first: Key::Int(0),
            last: Key::Int(0),
            size: None,
            md5: None,
            longest: Default::default(),
            keys: None,
        }
    }

    #[tokio::test]
    async fn a_partly_inserted_file_is_deleted_by_its_own_integer_keys() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new("bucket_b"));
        let cols = cols(&[("id", DataType::Int64), ("title", DataType::VarChar)]);
        let titles = vec!["a".to_string(), "b".into(), "c".into()];
        let fields = [
            int64_column("id", vec![7, 3, 12]),
            varchar_column("title", titles),
        ];
        let f = file(&store, &cols, &fields, 3).await;
        assert_eq!(
            file_keys(&store, &step(), &cols, "id", &f).await.unwrap(),
            "7, 3, 12"
        );
    }

    #[tokio::test]
    async fn string_keys_of_a_partly_inserted_file_are_quoted_and_escaped() {
        let store: Arc<dyn Storage> = Arc::new(MemoryStorage::new("bucket_b"));
        let cols = cols(&[("id", DataType::VarChar), ("n", DataType::Int64)]);
        let ids = vec!["a\"b".to_string(), "c\\d".into()];
        let fields = [varchar_column("id", ids), int64_column("n", vec![1, 2])];
        let f = file(&store, &cols, &fields, 2).await;
        assert_eq!(
            file_keys(&store, &step(), &cols, "id", &f).await.unwrap(),
            r#""a\"b", "c\\d""#
        );
    }

    #[tokio::test]
    async fn a_file_missing_from_the_backup_is_named() {
        let store = MemoryStorage::new("bucket_b");
        let e = read_file(&store, &step().from, "rows/x.parquet")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`bucket_b:backup/b1/rows/x.parquet` is missing from the backup"
        );
    }
}
