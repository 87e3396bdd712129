//! A rows restore through Milvus's own bulk import: which collections can take it (and why not),
//! and importing a backup's Parquet files, staged into the instance's bucket when the backup is
//! elsewhere, one request per file, each started once and waited for (`import_task`).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::import_task::{Request, import_once, import_root};
use super::target::Target;
use crate::format::meta::CollectionBackupInfo;
use crate::format::rows::{RowsCollection, RowsFile};
use crate::milvus::pb::schema::DataType;
use crate::milvus::version;
use crate::milvus::{MilvusClient, Pk};
use crate::plan::{Keys, Method, RestoreStep};
use crate::steps::ctx::{Resources, Result, StepCtx, StepError, fail};
use crate::storage::{self, Storage};

/// How a rows restore writes one collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Way {
    /// Milvus's bulk import of the backup's files.
    Import,
    /// Inserts through the proxy, for this reason (said in the preview).
    Insert(String),
}

/// How a rows restore writes `info` on the step's instance (`client`, when connected), and why
/// not by import. `importable`: the backup's files are in the import layout. A plan that asks
/// for `method = "import"` where it cannot be done is refused with the same reason.
pub(super) fn way(
    res: &Resources,
    step: &RestoreStep,
    client: Option<&MilvusClient>,
    info: &CollectionBackupInfo,
    importable: bool,
) -> std::result::Result<Way, String> {
    let why = why_not(res, step, client, info, importable);
    match (step.method, why) {
        (Some(Method::Insert), _) => Ok(Way::Insert("method = \"insert\"".into())),
        (_, None) => Ok(Way::Import),
        (Some(Method::Import), Some(why)) => Err(format!(
            "`{}` cannot be restored by import (method = \"import\"): {why}; leave `method` out \
             to insert it instead",
            info.collection_name
        )),
        (None, Some(why)) => Ok(Way::Insert(why)),
    }
}

/// The preview's line of how `t`'s rows go in (or why `method = "import"` is refused).
pub(super) fn said(
    res: &Resources,
    step: &RestoreStep,
    client: &MilvusClient,
    t: &Target<'_>,
    importable: bool,
) -> std::result::Result<String, String> {
    Ok(match way(res, step, Some(client), t.info, importable)? {
        Way::Import => format!(
            "  ~ `{}`: the rows go in by `{}`'s own bulk import of the backup's Parquet files{}, \
             then are checked by count and key digest per partition",
            t.name,
            step.instance,
            match super::binlog::target_ok(res, step) {
                Ok(Some(stage)) => format!(" (staged into `{stage}`, its own bucket)"),
                _ => String::new(),
            }
        ),
        Way::Insert(why) => format!(
            "  ~ `{}`: the rows go in by insert through the proxy ({why})",
            t.name
        ),
    })
}

fn why_not(
    res: &Resources,
    step: &RestoreStep,
    client: Option<&MilvusClient>,
    info: &CollectionBackupInfo,
    importable: bool,
) -> Option<String> {
    if res.plan.instances[&step.instance].data.is_none() {
        return Some(format!(
            "instance `{}` has no `data`, so the bucket it imports from is not known",
            step.instance
        ));
    }
    if !importable {
        return Some(
            "the backup's files were written before planrun wrote Milvus's import layout".into(),
        );
    }
    if step.keys == Keys::New && info.schema.auto_id() {
        return Some("auto_id = \"new_keys\" (an import keeps the files' keys)".into());
    }
    let client = client?;
    if client.is_lite() {
        return Some(format!(
            "`{}` is Milvus Lite, which has no import",
            step.instance
        ));
    }
    let release = version::minor(client.server_version())?;
    info.schema
        .fields
        .iter()
        .filter(|f| !f.is_function_output)
        .find_map(|f| {
            let ty = DataType::try_from(f.data_type).unwrap_or(DataType::None);
            (!imports(release, ty)).then(|| {
                format!(
                    "field `{}` is {ty:?}, which the import of Milvus {}.{} is not known to take \
                     from Parquet",
                    f.name, release.0, release.1
                )
            })
        })
}

/// Whether the Parquet import of `release` takes a field of type `ty`. 2.3 was tried here with
/// every type it has but binary vectors; 2.4 to 3.0 as their import documentation lays the
/// columns out, untried here.
fn imports(release: (u32, u32), ty: DataType) -> bool {
    use DataType as T;
    match ty {
        T::Bool
        | T::Int8
        | T::Int16
        | T::Int32
        | T::Int64
        | T::Float
        | T::Double
        | T::VarChar
        | T::String
        | T::Json
        | T::Array
        | T::FloatVector => true,
        T::BinaryVector | T::Float16Vector | T::BFloat16Vector => release >= (2, 4),
        T::SparseFloatVector => release >= (2, 5),
        _ => false,
    }
}

/// Imports the files of `rc` not imported yet into `target`, `concurrency` at a time (bounded
/// per instance by `settings.imports`), each checked for the rows its file holds.
pub(super) async fn import_files(
    ctx: &StepCtx,
    step: &RestoreStep,
    c: &MilvusClient,
    key: &str,
    target: &str,
    rc: &RowsCollection,
    from: &Arc<dyn Storage>,
) -> Result<()> {
    // The files are staged into the instance's bucket when the backup lives elsewhere, and
    // removed once imported.
    let (root, staged) = import_root(ctx, step);
    let stage = match staged {
        true => Some(ctx.res.storage(&root.bucket).await?),
        false => None,
    };
    let (root, stage) = (&root, &stage);
    let work: Vec<(String, RowsFile)> = rc
        .partitions
        .iter()
        .flat_map(|p| p.files.iter().map(|f| (p.name.clone(), f.clone())))
        .collect();
    futures::stream::iter(work)
        .map(|(partition, f): (String, RowsFile)| async move {
            ctx.check_cancel()?;
            let task = format!("{key}/import/{}", f.key);
            if ctx.done::<i64>(&task)?.is_some() {
                return Ok(());
            }
            if let Some(stage) = stage {
                ctx.once_lazy(&format!("{key}/stage/{}", f.key), || async {
                    let _slot = ctx.res.copies.acquire().await.expect("never closed");
                    storage::copy_object(
                        from.as_ref(),
                        &step.from.join(&f.key),
                        stage.as_ref(),
                        &root.join(&f.key),
                        &|_| {},
                    )
                    .await?;
                    Ok(true)
                })
                .await?;
            }
            let req = Request {
                task,
                target,
                partition: &partition,
                files: vec![root.join(&f.key)],
                options: Vec::new(),
                what: format!("file `{}`", f.key),
                rows: Some(f.rows as i64),
            };
            let got = import_once(ctx, c, &req).await?;
            if got != f.rows as i64 {
                return fail(format!(
                    "importing `{}` into `{target}` on `{}` brought {got} rows, the file holds {}",
                    f.key, step.instance, f.rows
                ));
            }
            if let Some(stage) = stage
                && let Err(e) = stage.delete(&[root.join(&f.key)]).await
            {
                // The rows are in; only a copy is left behind, which is said.
                ctx.events.warn(
                    &ctx.step,
                    format!("could not remove the staged copy of `{}`: {e}", f.key),
                );
            }
            ctx.events.progress_rows(&ctx.step, f.rows);
            Ok::<_, StepError>(())
        })
        .buffer_unordered(ctx.concurrency())
        .try_collect::<Vec<()>>()
        .await?;
    ctx.tasks.sync().await?;
    Ok(())
}

/// Key walks a check runs side by side: the server answers one page at a time per walk.
const CHECK_WALKS: usize = 4;

/// Checks each partition of an imported collection, loaded: its `count(*)` against its files'
/// rows (an import names its partition, and a file imported into the wrong one would still add
/// up in the whole), and the keys in each file's key range, walked (several files at once),
/// against the digest the file records (none in older backups): with the counts, every key is
/// accounted for. What was checked, said after "verified by count", or what differs.
pub(super) async fn check_partitions(
    ctx: &StepCtx,
    c: &MilvusClient,
    target: &str,
    rc: &RowsCollection,
    pk: &str,
) -> Result<std::result::Result<&'static str, String>> {
    let on = format!("`{target}` on `{}`", c.name());
    let mut keyed = true;
    for p in &rc.partitions {
        // A partition-key collection's files are its whole: the server routed their rows.
        let (named, what) = match p.name.as_str() {
            "" => (Vec::new(), on.clone()),
            name => (
                vec![name.to_string()],
                format!("partition `{name}` of {on}"),
            ),
        };
        let want: u64 = p.files.iter().map(|f| f.rows).sum();
        let got = c.query_count(target, &named, "").await?;
        if got != want {
            return Ok(Err(format!(
                "{what} holds {got} rows after the restore, the backup's files {want}"
            )));
        }
        if crate::format::rows::key_digest(&p.files).is_none() {
            keyed = false;
            continue;
        }
        let (named, what) = (&named, &what);
        // Owned files: a stream of borrowed ones makes the step's future not `Send` (rustc's
        // higher-ranked lifetime limits).
        let wrong: Vec<Option<String>> = futures::stream::iter(p.files.clone())
            .map(|f: RowsFile| async move {
                let want = crate::format::rows::key_digest(std::slice::from_ref(&f));
                let (lo, hi) = (Pk::from(&f.first).to_expr(), Pk::from(&f.last).to_expr());
                let within = format!("{pk} >= {lo} and {pk} <= {hi}");
                let (rows, keys) =
                    crate::steps::keys::key_digest(ctx, c, target, named, pk, &within).await?;
                Ok::<_, StepError>((rows != f.rows || Some(keys) != want).then(|| {
                    format!(
                        "the primary keys of {what} from {lo} to {hi} are not those of the \
                         backup's file `{}` after the restore ({rows} rows, key digest \
                         {keys:032x}; the file's {} rows, {})",
                        f.key,
                        f.rows,
                        f.keys.as_deref().unwrap_or_default()
                    )
                }))
            })
            .buffer_unordered(CHECK_WALKS)
            .try_collect()
            .await?;
        if let Some(why) = wrong.into_iter().flatten().next() {
            return Ok(Err(why));
        }
    }
    Ok(Ok(match keyed {
        true => " and key digest in each partition",
        false => " in each partition",
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_each_release_imports() {
        assert!(imports((2, 3), DataType::FloatVector));
        assert!(imports((2, 3), DataType::Json));
        assert!(!imports((2, 3), DataType::BinaryVector));
        assert!(imports((2, 4), DataType::Float16Vector));
        assert!(!imports((2, 4), DataType::SparseFloatVector));
        assert!(imports((2, 6), DataType::SparseFloatVector));
        assert!(!imports((2, 6), DataType::Int8Vector));
    }
}
