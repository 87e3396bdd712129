//! A rows restore: create the collection, import or insert every Parquet file, index, load,
//! check. Files a running rows backup publishes are written as they come; the rest waits for the
//! whole backup.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::rows_import::{self, Way, import_files};
use super::rows_insert::insert_files;
use super::target::{Target, create_aliases, create_target, discard, make_queryable};
use crate::checkpoint::TaskState;
use crate::codec::arrow::columns;
use crate::format::rows::{RowsCollection, RowsMeta};
use crate::milvus::MilvusClient;
use crate::plan::{Keys, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, StepError, Units, fail, to_json};
use crate::storage::Storage;

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
    // Not by import: imported segments are seen only by a load that comes after them (on
    // 2.3.5 a loaded collection counted none of them), and with an index 2.3 starts no
    // import before the one before it is indexed.
    let early = async {
        if partial && t.loads(step) && !by_import {
            make_queryable(ctx, c, target, info, true).await
        } else {
            Ok(())
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
        ctx.events
            .phase(&ctx.step, target, "index and load", started);
    }
    let started = std::time::Instant::now();
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
        let checked = match by_import {
            true => rows_import::check_partitions(ctx, c, target, rc, &pk).await?,
            false => Ok(""),
        };
        match checked {
            Ok(how) => format!(", {got} rows verified by count{how}"),
            Err(why) => {
                let why = format!(
                    "{why} of `{target}` on `{}` after the restore",
                    step.instance
                );
                return discard(ctx, c, t, why).await;
            }
        }
    } else {
        count_unloaded(ctx, c, t, rc, total).await?
    };
    ctx.events.phase(&ctx.step, target, "checks", started);
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
