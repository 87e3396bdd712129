//! A rows restore by insert: each Parquet file read, decoded and inserted through the proxy,
//! recorded per file; a file a crashed run may have inserted is reconciled by counting its key
//! range in the target (key ranges of files never overlap), so no row is inserted twice.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::target::make_queryable;
use crate::checkpoint::TaskState;
use crate::codec::arrow::{Col, batch_to_fields, from_parquet, row_group, row_groups};
use crate::format::meta::CollectionBackupInfo;
use crate::format::rows::{RowsCollection, RowsFile};
use crate::milvus::{MilvusClient, Pk};
use crate::plan::{Location, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, StepError, to_json};
use crate::storage::Storage;

/// One Parquet file of the backup, whole (up to the backup's `file_bytes`).
async fn read_file(store: &dyn Storage, at: &Location, key: &str) -> Result<bytes::Bytes> {
    crate::format::read_all(store, &at.join(key))
        .await?
        .ok_or_else(|| StepError::Failed(format!("`{at}/{key}` is missing from the backup")))
}

/// Inserts the files of `rc` not inserted yet into `target`, `concurrency` at a time; a file a
/// crashed run may have inserted is reconciled first.
#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_files(
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
                // A row group at a time, decoded as the one before it goes in, in inserts of
                // about a page each: one file's bytes and one row group are held, however
                // large the file.
                for i in 0..groups {
                    let (data, cols) = (data.clone(), cols.clone());
                    let pages = tokio::task::spawn_blocking(move || {
                        row_group(&data, i)?
                            .iter()
                            .map(|b| Ok((batch_to_fields(&cols, b)?, b.num_rows() as u32)))
                            .collect::<std::result::Result<Vec<_>, String>>()
                    })
                    .await
                    .map_err(|e| StepError::Failed(format!("decoding {where_}: {e}")))?
                    .map_err(|e| StepError::Failed(format!("reading {where_}: {e}")))?;
                    for (mut fields, n) in pages {
                        if new_keys {
                            fields.retain(|x| x.field_name != pk);
                        }
                        c.insert(target, part, fields, n).await?;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::arrow::columns;
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
            etag: None,
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
