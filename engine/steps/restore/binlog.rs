//! A binlog restore: create the collection, import each segment, index, load, check.
//!
//! Creating a collection and starting an import are not idempotent: each records its intent
//! first, and a resumed run reconciles an intent without a result against the server (does the
//! collection exist with this schema? is there an import task for this segment?) instead of
//! repeating it. A collection with imports in flight is never dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::target::{Target, create_aliases, create_target, discard, failed};
use crate::checkpoint::TaskState;
use crate::format::meta::{CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::pb::common::ImportState;
use crate::milvus::{MilvusClient, MilvusError};
use crate::plan::{Location, RestoreStep};
use std::collections::BTreeMap;

use crate::steps::ctx::{Resources, Result, StepCtx, StepError, Units, fail, to_json};
use crate::storage::{self, Storage};

const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);
const INDEX_TIMEOUT: Duration = Duration::from_secs(3600);

/// The refusal both the preview and apply make: a binlog restore imports from the instance's own
/// bucket, which Milvus Lite does not have. `Some(bucket)` when the backup must be staged into it.
pub(super) fn target_ok(res: &Resources, step: &RestoreStep) -> Result<Option<String>> {
    let Some(data) = &res.plan.instances[&step.instance].data else {
        return fail(format!(
            "instance `{}` has no `data` (bucket and root path of its binlogs); a binlog restore \
             imports from that bucket",
            step.instance
        ));
    };
    Ok((!res.same_bucket(&data.bucket, &step.from.bucket)).then(|| data.bucket.clone()))
}

/// The refusal both the preview and apply make of the target server: Milvus Lite has no import.
pub(super) fn server_ok(client: &MilvusClient, step: &RestoreStep) -> Result<()> {
    if client.is_lite() {
        return fail(format!(
            "instance `{}` is Milvus Lite ({}), which cannot import binlogs; back up in rows mode \
             (mode = \"rows\") to restore into it",
            step.instance,
            client.server_version()
        ));
    }
    if let Some(why) =
        crate::milvus::version::binlog_untested(&step.instance, client.server_version())
    {
        return fail(why);
    }
    Ok(())
}

pub(super) async fn run(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    targets: &[Target<'_>],
    refused: &BTreeMap<String, String>,
) -> Result<Units<String>> {
    let data = ctx.res.plan.instances[&step.instance]
        .data
        .clone()
        .expect("target_ok checked `data`");
    let from_store = ctx.res.storage(&step.from.bucket).await?;
    // Milvus imports only from its own bucket: stage the backup there when it lives elsewhere.
    let staged = !ctx.res.same_bucket(&step.from.bucket, &data.bucket);
    let import_root = if staged {
        Location {
            bucket: data.bucket.clone(),
            path: data.join(&format!("planrun-staging/{}/{}", ctx.run, ctx.step)),
        }
    } else {
        step.from.clone()
    };
    let data_store = ctx.res.storage(&data.bucket).await?;

    let (from_store, data_store, import_root) = (&from_store, &data_store, &import_root);
    let units = ctx
        .each(
            targets.iter().collect(),
            |t| t.unit(),
            |t: &Target<'_>| async move {
                ctx.check_cancel()?;
                if let Some(why) = refused.get(&t.unit()) {
                    return fail(why.clone());
                }
                restore_collection(
                    ctx,
                    step,
                    &client.with_database(&t.db),
                    t,
                    staged.then_some(Stage {
                        from: from_store,
                        data: data_store,
                    }),
                    import_root,
                )
                .await
            },
        )
        .await?;
    // Staged files stay while a collection still needs them (the next apply retries it).
    if staged && units.failed.is_empty() {
        ctx.once("unstage", || async {
            let keys: Vec<String> = data_store
                .list(&format!("{}/", import_root.path))
                .map_ok(|o| o.key)
                .try_collect()
                .await?;
            data_store.delete(&keys).await?;
            Ok(true)
        })
        .await?;
    }
    Ok(units)
}

/// Where a backup outside the instance's bucket is read from and staged into.
#[derive(Clone, Copy)]
struct Stage<'a> {
    from: &'a Arc<dyn Storage>,
    data: &'a Arc<dyn Storage>,
}

#[derive(Serialize, Deserialize)]
struct Started {
    tasks: Vec<i64>,
}

#[allow(clippy::too_many_arguments)]
async fn restore_collection(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    t: &Target<'_>,
    stage: Option<Stage<'_>>,
    import_root: &Location,
) -> Result<String> {
    let (info, target): (&CollectionBackupInfo, &str) = (t.info, &t.name);
    let key = t.key();
    if let Some(line) = ctx.done::<String>(&key)? {
        return Ok(line);
    }
    let segments: Vec<&SegmentBackupInfo> = info
        .partition_backups
        .iter()
        .flat_map(|p| &p.segment_backups)
        .collect();
    let files: Vec<(String, i64, Option<String>)> =
        segments.iter().flat_map(|s| s.files()).collect();
    ctx.events.planned(
        &ctx.step,
        segments.len() as u64,
        files.iter().map(|f| f.1 as u64).sum(),
    );

    let started = Instant::now();
    let partition_key = info.schema.fields.iter().any(|f| f.is_partition_key);
    if let Some(line) = create_target(ctx, step, client, t, &info.schema, true).await? {
        return Ok(line);
    }

    ctx.once(&format!("{key}/partitions"), || async {
        // Partition-key collections make their partitions themselves and refuse new ones.
        for p in info.partition_backups.iter().filter(|_| !partition_key) {
            if !client.has_partition(target, &p.partition_name).await? {
                client.create_partition(target, &p.partition_name).await?;
            }
        }
        Ok(true)
    })
    .await?;

    // Stage (copy into the instance's bucket) the files of every segment, then import each.
    // Owned items and a plain closure: borrowed ones make the spawned step future not `Send`.
    let work: Vec<(String, SegmentBackupInfo)> = info
        .partition_backups
        .iter()
        .flat_map(|p| {
            p.segment_backups
                .iter()
                .map(|s| (p.partition_name.clone(), s.clone()))
        })
        .collect();
    let key_ref = key.as_str();
    let rows: Vec<i64> = futures::stream::iter(work)
        .map(|(partition, seg): (String, SegmentBackupInfo)| async move {
            let (key, seg, partition) = (key_ref, &seg, partition.as_str());
            if let Some(Stage { from, data }) = stage {
                for (rel, _, _) in seg.files() {
                    ctx.once_lazy(&format!("{key}/stage/{rel}"), || async {
                        let _slot = ctx.res.copies.acquire().await.expect("never closed");
                        storage::copy_object(
                            from.as_ref(),
                            &step.from.join(&rel),
                            data.as_ref(),
                            &import_root.join(&rel),
                            &|_| {},
                        )
                        .await?;
                        Ok(true)
                    })
                    .await?;
                }
            }
            let n = import_segment(ctx, client, key, target, partition, seg, import_root).await?;
            let bytes: i64 = seg.size;
            ctx.events.progress(&ctx.step, 1, bytes as u64);
            Ok::<_, StepError>(n)
        })
        .buffer_unordered(ctx.concurrency())
        .try_collect()
        .await?;
    ctx.tasks.sync().await?;
    let imported: i64 = rows.iter().sum();
    ctx.events.phase(&ctx.step, target, "import", started);

    // The index builds while the collection loads (Milvus 2.3 loads unindexed segments and
    // swaps the index in later): waiting for the build after the load costs max(load, build),
    // not their sum, and "done" still means loaded and fully indexed.
    let indexing = Instant::now();
    if step.indexes {
        ctx.once(&format!("{key}/indexes"), || async {
            let have = client.describe_index(target).await?;
            for idx in &info.index_infos {
                if !have.iter().any(|h| h.index_name == idx.index_name) {
                    client
                        .create_index(
                            target,
                            &idx.field_name,
                            &idx.index_name,
                            &idx.params.clone().into_iter().collect::<Vec<_>>(),
                        )
                        .await?;
                }
            }
            Ok(true)
        })
        .await?;
    }
    let mut counted = String::new();
    if !t.loads(step) {
        // Not loaded, so not countable by query: the imports' own counts must add up to the
        // segments' (exact when the backup holds no deletes).
        let no_deletes = segments
            .iter()
            .all(|s| s.deltalogs.iter().all(|d| d.binlogs.is_empty()));
        let expected: i64 = segments.iter().map(|s| s.num_of_rows).sum();
        if no_deletes {
            if imported != expected {
                let why = format!(
                    "`{target}` on `{}` imported {imported} rows, the backup of `{}` holds \
                     {expected}",
                    step.instance, info.collection_name
                );
                return discard(ctx, client, t, why).await;
            }
            counted = format!(
                ", {imported} rows checked against the backup (left released, as its source)"
            );
        } else {
            counted = ", left released, as its source".to_string();
        }
    }
    if t.loads(step) {
        let started = Instant::now();
        ctx.once(&format!("{key}/load"), || async {
            client.load_collection(target).await?;
            client
                .wait_loaded(target, crate::steps::ctx::LOAD_TIMEOUT)
                .await?;
            Ok(true)
        })
        .await?;
        if let Some(expected) = info.planrun_row_count {
            let got = client.query_count(target, &[], "").await?;
            if got != expected {
                let why = format!(
                    "`{target}` on `{}` holds {got} rows after the restore, the backup of `{}` \
                     had {expected}",
                    step.instance, info.collection_name
                );
                return discard(ctx, client, t, why).await;
            }
            counted = format!(", {got} rows verified by count");
        }
        ctx.events.phase(&ctx.step, target, "load", started);
    }
    if step.indexes {
        ctx.once(&format!("{key}/indexed"), || async {
            client.wait_indexed(target, INDEX_TIMEOUT).await?;
            Ok(true)
        })
        .await?;
        ctx.events.phase(&ctx.step, target, "index", indexing);
    }
    let line = format!(
        "`{}` → `{target}`: {} partitions, {} segments, {imported} rows imported{counted}",
        info.collection_name,
        info.partition_backups.len(),
        segments.len()
    );
    let made = create_aliases(client, step, t).await?;
    let line = if made.is_empty() {
        line
    } else {
        format!("{line}, aliases {}", made.join(", "))
    };
    ctx.set(&key, TaskState::Done(to_json(&line))).await?;
    Ok(line)
}

/// What Milvus 2.3's binlog import takes for one segment: its insert and delta log directories,
/// as full keys in the instance's bucket. An empty delta path would bring deleted rows back; a
/// missing delta directory (no deletes) is fine.
fn import_files(root: &Location, seg: &SegmentBackupInfo) -> Vec<String> {
    vec![
        format!("{}/", root.join(&seg.insert_dir())),
        format!("{}/", root.join(&seg.delta_dir())),
    ]
}

#[allow(clippy::too_many_arguments)]
async fn import_segment(
    ctx: &StepCtx,
    client: &MilvusClient,
    key: &str,
    target: &str,
    partition: &str,
    seg: &SegmentBackupInfo,
    root: &Location,
) -> Result<i64> {
    let task = format!("{key}/import/{}", seg.segment_id);
    // One of the instance's import slots (`settings.imports`), held while the import runs and
    // is waited for: collections restored at once queue here instead of flooding the server.
    let _slot = if matches!(ctx.state(&task)?, Some(TaskState::Done(_))) {
        None
    } else {
        Some(
            ctx.res
                .imports(client.name())
                .acquire_owned()
                .await
                .expect("never closed"),
        )
    };
    let files = import_files(root, seg);
    let tasks: Vec<i64> = match ctx.state(&task)? {
        Some(TaskState::Done(v)) => return Ok(serde_json::from_value(v).unwrap_or(0)),
        Some(TaskState::Started(v)) => {
            serde_json::from_value::<Started>(v)
                .map_err(|e| StepError::Failed(format!("checkpoint of {task}: {e}")))?
                .tasks
        }
        state => {
            // An intent without a task id: the import may have started before the crash.
            let adopted = if matches!(state, Some(TaskState::Intent(_))) {
                client
                    .list_import_tasks(target, 0)
                    .await?
                    .into_iter()
                    .filter(|t| {
                        !failed(t.state)
                            && t.info("files")
                                .is_some_and(|f| f.contains(files[0].as_str()))
                    })
                    .map(|t| t.id)
                    .collect::<Vec<_>>()
            } else {
                Vec::new()
            };
            if adopted.is_empty() {
                ctx.check_cancel()?;
                ctx.set(&task, TaskState::Intent(to_json(&files))).await?;
                let ids = client
                    .import(
                        target,
                        Some(partition),
                        files.clone(),
                        &[("backup".to_string(), "true".to_string())],
                    )
                    .await?;
                crate::fault::point("import-started");
                ctx.set(
                    &task,
                    TaskState::Started(to_json(&Started { tasks: ids.clone() })),
                )
                .await?;
                ids
            } else {
                ctx.set(
                    &task,
                    TaskState::Started(to_json(&Started {
                        tasks: adopted.clone(),
                    })),
                )
                .await?;
                adopted
            }
        }
    };
    let mut rows = 0;
    for id in tasks {
        rows += wait_import(ctx, client, target, seg, id).await?;
    }
    // Milvus 2.3 "completes" an import of a path it cannot see with 0 rows and no error.
    let no_deletes = seg.deltalogs.iter().all(|d| d.binlogs.is_empty());
    if rows == 0 && seg.num_of_rows > 0 && no_deletes {
        return fail(format!(
            "importing segment {} into `{target}` on `{}` read 0 of its {} rows from `{}`: \
             the instance does not see those files; check that `data` of `{}` names its \
             minio.bucketName and minio.rootPath",
            seg.segment_id,
            client.name(),
            seg.num_of_rows,
            files[0],
            client.name()
        ));
    }
    ctx.set(&task, TaskState::Done(to_json(&rows))).await?;
    Ok(rows)
}

async fn wait_import(
    ctx: &StepCtx,
    client: &MilvusClient,
    target: &str,
    seg: &SegmentBackupInfo,
    id: i64,
) -> Result<i64> {
    let deadline = tokio::time::Instant::now() + IMPORT_TIMEOUT;
    let mut delay = Duration::from_millis(500);
    let what = format!(
        "import task {id} (segment {} into `{target}`)",
        seg.segment_id
    );
    let stalled = |msg: String| ctx.events.warn(&ctx.step, format!("{what}: {msg}"));
    loop {
        // One poll at a time, never cancelled (see `MilvusClient::get_import_state`): Ctrl-C
        // ends this wait, while the poll in flight runs on by itself.
        let poll = ctx.retry("import state", || async {
            match client.get_import_state(id, &stalled).await {
                // Still in flight: asking again would put a second poll beside it.
                Err(MilvusError::Timeout { timeout, .. }) => fail(format!(
                    "`{}` has not answered about {what} for {timeout:?}: the link or the server \
                     is stalled; the question was left in flight, not cancelled (Milvus 2.3.5 \
                     dies of a cancelled GetImportState), the import goes on on the server and \
                     the next apply waits for it",
                    client.name()
                )),
                r => Ok(r?),
            }
        });
        let st = tokio::select! {
            st = poll => st?,
            _ = ctx.cancel.cancelled() => return Err(StepError::Interrupted),
        };
        match st.state {
            ImportState::ImportCompleted => return Ok(st.row_count),
            s if failed(s) => {
                return fail(format!(
                    "import of segment {} into `{target}` on `{}` failed: {}",
                    seg.segment_id,
                    client.name(),
                    st.failed_reason
                ));
            }
            _ => {}
        }
        if tokio::time::Instant::now() > deadline {
            return fail(format!(
                "import task {id} (segment {} into `{target}`) did not finish within {:?}; \
                 apply again to keep waiting for it",
                seg.segment_id, IMPORT_TIMEOUT
            ));
        }
        // Interrupted while waiting: the task id is recorded, a resumed run waits for it.
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.cancel.cancelled() => return Err(StepError::Interrupted),
        }
        delay = (delay * 2).min(crate::milvus::POLL_MAX);
    }
}
