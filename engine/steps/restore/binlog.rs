//! A binlog restore: create the collection, import each segment, index, load, check.
//!
//! What the import is told follows the target's release (`version::Binlog`): Milvus 2.3 as
//! run here; 2.4 to 3.0 as milvus-backup restores them, unrun here, so a restore onto those is
//! always checked exactly afterwards (`check_exactly`) and dropped when it differs.
//!
//! Creating a collection and starting an import are not idempotent: each records its intent
//! first, and a resumed run reconciles an intent without a result against the server (does the
//! collection exist with this schema? is there an import task for this segment?) instead of
//! repeating it. A collection with imports in flight is never dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::target::{Target, create_aliases, create_target, discard};
use crate::checkpoint::TaskState;
use crate::format::binlog::{Files, Live};
use crate::format::meta::{CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::pb::common::ImportState;
use crate::milvus::version::{self, Binlog};
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

/// The refusal both the preview and apply make of the target server: Milvus Lite has no import,
/// and releases outside 2.3 to 3.0 lay binlogs out in ways planrun does not know.
/// What binlog mode does on the step's instance, or why it refuses it.
pub(super) fn server_ok(client: &MilvusClient, step: &RestoreStep) -> Result<Binlog> {
    release(client, step)
}

fn release(client: &MilvusClient, step: &RestoreStep) -> Result<Binlog> {
    if client.is_lite() {
        return fail(format!(
            "instance `{}` is Milvus Lite ({}), which cannot import binlogs; back up in rows mode \
             (mode = \"rows\") to restore into it",
            step.instance,
            client.server_version()
        ));
    }
    version::binlog(&step.instance, client.server_version()).map_err(StepError::Failed)
}

/// Why one collection of the backup cannot be restored onto `release` in binlog mode.
pub(super) fn refusals(release: &Binlog, instance: &str, t: &Target<'_>) -> Vec<String> {
    let info = t.info;
    let mut out = Vec::new();
    if !release.l0 && info.segments().any(|s| s.is_l0) {
        out.push(format!(
            "`{}` holds L0 (delete-only) segments, backed up from Milvus 2.4 or later, which \
             `{instance}` (Milvus {}) cannot import; restore it onto Milvus 2.4 or later, or \
             back it up with mode = \"rows\"",
            info.collection_name,
            release.name()
        ));
    }
    // Binlogs name their fields by id, and the target numbers the fields it creates from 100
    // in order: a field added to the source after creation (Milvus 2.6, numbered after the
    // dynamic field) would get another field's binlogs.
    let mut ids: Vec<i64> = info
        .schema
        .fields
        .iter()
        .filter(|f| f.field_id >= 100 && !f.is_dynamic)
        .map(|f| f.field_id)
        .collect();
    ids.sort_unstable();
    if let Some((i, id)) = ids
        .iter()
        .enumerate()
        .find(|(i, id)| **id != 100 + *i as i64)
    {
        let name = &info
            .schema
            .fields
            .iter()
            .find(|f| f.field_id == *id)
            .expect("from the schema")
            .name;
        out.push(format!(
            "field `{name}` of `{}` has id {id} where a new collection would number it {}: it \
             was added after the collection was created, and its binlogs would be imported as \
             another field's; back the collection up with mode = \"rows\"",
            info.collection_name,
            100 + i as i64
        ));
    }
    out
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
    let release = release(client, step)?;
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
                    from_store,
                    staged.then_some(data_store),
                    import_root,
                    release,
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
    from: &Arc<dyn Storage>,
    stage: Option<&Arc<dyn Storage>>,
    import_root: &Location,
    release: Binlog,
) -> Result<String> {
    let (info, target): (&CollectionBackupInfo, &str) = (t.info, &t.name);
    let key = t.key();
    if let Some(line) = ctx.done::<String>(&key)? {
        return Ok(line);
    }
    let segments: Vec<&SegmentBackupInfo> = info.segments().collect();
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

    // Stage (copy into the instance's bucket) the files of every segment, then import each,
    // batch after batch. Owned items and a plain closure: borrowed ones make the spawned step
    // future not `Send`.
    let key_ref = key.as_str();
    let mut rows: Vec<i64> = Vec::new();
    for batch in batches(info) {
        let work: Vec<(String, SegmentBackupInfo)> =
            batch.into_iter().map(|(p, s)| (p, s.clone())).collect();
        let done: Vec<i64> = futures::stream::iter(work)
            .map(|(partition, seg): (String, SegmentBackupInfo)| async move {
                let (key, seg, partition) = (key_ref, &seg, partition.as_str());
                if let Some(data) = stage {
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
                let n = import_segment(
                    ctx,
                    client,
                    key,
                    target,
                    partition,
                    seg,
                    import_root,
                    &release,
                )
                .await?;
                let bytes: i64 = seg.size;
                ctx.events.progress(&ctx.step, 1, bytes as u64);
                // An L0 import brings deletes, not rows.
                Ok::<_, StepError>(if seg.is_l0 { 0 } else { n })
            })
            .buffer_unordered(ctx.concurrency())
            .try_collect()
            .await?;
        rows.extend(done);
    }
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
        let no_deletes = segments.iter().all(|s| !s.has_deletes());
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
    if !release.run_here {
        let checked = format!("{key}/checked");
        let line = match ctx.done::<String>(&checked)? {
            Some(line) => line,
            None => match check_exactly(ctx, step, client, t, from, &release).await? {
                Ok(line) => {
                    ctx.set(&checked, TaskState::Done(to_json(&line))).await?;
                    line
                }
                Err(why) => return discard(ctx, client, t, why).await,
            },
        };
        counted = format!(", {line}");
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

/// The order of the imports, in batches one after another, after milvus-backup's: every
/// partition's ordinary segments, then the partitions' L0 segments, then the collection-level
/// L0 segments (into partition `""`). A backup without L0 segments (Milvus 2.3) is one batch.
fn batches(info: &CollectionBackupInfo) -> Vec<Vec<(String, &SegmentBackupInfo)>> {
    let of = |l0: bool| -> Vec<(String, &SegmentBackupInfo)> {
        info.partition_backups
            .iter()
            .flat_map(|p| {
                p.segment_backups
                    .iter()
                    .filter(move |s| s.is_l0 == l0)
                    .map(|s| (p.partition_name.clone(), s))
            })
            .collect()
    };
    let all = info
        .l0_segments
        .iter()
        .map(|s| (String::new(), s))
        .collect();
    [of(false), of(true), all]
        .into_iter()
        .filter(|b| !b.is_empty())
        .collect()
}

/// What the import of one segment onto `release` is given: its files, as full keys in the
/// instance's bucket, and its options. One segment a request, L0 ones included.
///
/// Milvus 2.3 (run here) takes the segment's insert and delta log directories and
/// `backup=true`; an empty delta path would bring deleted rows back, a missing delta directory
/// (no deletes) is fine. From 2.4, as milvus-backup sends them: the group directories (the
/// delta one only when the segment has deletes), `backup=true`, `skip_disk_quota_check=true`;
/// an L0 segment sends its delta log directory alone with `l0_import=true` instead of `backup`
/// (a collection-level one has no group directory of its own); from 2.6 the segment's
/// `storage_version` when it records one. `end_ts` is not sent: a planrun backup holds exactly
/// what its flush persisted, and milvus-backup sends it only when asked to truncate by time.
fn import_request(
    release: &Binlog,
    root: &Location,
    seg: &SegmentBackupInfo,
) -> (Vec<String>, Vec<(String, String)>) {
    let dir = |rel: String| format!("{}/", root.join(&rel));
    let opt = |k: &str, v: String| (k.to_string(), v);
    if !release.l0 {
        let files = vec![dir(seg.insert_dir()), dir(seg.delta_dir())];
        return (files, vec![opt("backup", "true".into())]);
    }
    let (files, mut options) = if seg.is_l0 {
        (
            vec![dir(seg.delta_dir())],
            vec![opt("l0_import", "true".into())],
        )
    } else {
        let mut files = vec![dir(seg.insert_group_dir())];
        if seg.has_deletes() {
            files.push(dir(seg.delta_group_dir()));
        }
        (files, vec![opt("backup", "true".into())])
    };
    options.push(opt("skip_disk_quota_check", "true".into()));
    if release.storage_version && seg.storage_version > 0 {
        options.push(opt("storage_version", seg.storage_version.to_string()));
    }
    (files, options)
}

/// The exact check of a restore onto a release binlog mode has not been run against: every
/// partition must hold the rows the backup's binlogs hold once their deletes apply, counted by
/// count(*) and read by key, with the same digest of their keys. `Ok(Err(why))` is a mismatch;
/// a collection the step leaves released is loaded for the check and released again.
async fn check_exactly(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    t: &Target<'_>,
    from: &Arc<dyn Storage>,
    release: &Binlog,
) -> Result<std::result::Result<String, String>> {
    let (info, target) = (t.info, t.name.as_str());
    let Some(pk) = info.schema.fields.iter().find(|f| f.is_primary_key) else {
        return Ok(Err(format!(
            "the backup of `{}` has no primary key, which the check of a restore onto Milvus {} \
             reads; back it up with mode = \"rows\"",
            info.collection_name,
            release.name()
        )));
    };
    let expected = crate::format::binlog::live(
        from.clone(),
        Files::Backup(step.from.clone()),
        info,
        (&pk.name, pk.field_id),
    )
    .await?;
    let loading = format!("{}/check-load", t.key());
    if !t.loads(step) {
        ctx.load_to_read(client, target, &loading).await?;
    }
    // With a partition key Milvus refuses queries naming partitions: the collection is one.
    let units: Vec<(String, Vec<String>, Live)> =
        if info.schema.fields.iter().any(|f| f.is_partition_key) {
            let all = expected.values().fold(Live::default(), |a, l| Live {
                rows: a.rows + l.rows,
                keys: a.keys.wrapping_add(l.keys),
            });
            vec![("(all, partition key)".to_string(), Vec::new(), all)]
        } else {
            info.partition_backups
                .iter()
                .map(|p| {
                    let want = expected.get(&p.partition_id).copied().unwrap_or_default();
                    (
                        p.partition_name.clone(),
                        vec![p.partition_name.clone()],
                        want,
                    )
                })
                .collect()
        };
    let mut wrong = Vec::new();
    let mut rows = 0;
    for (name, part, want) in units {
        let counted = client.query_count(target, &part, "").await?;
        let (read, keys) =
            crate::steps::keys::key_digest(ctx, client, target, &part, &pk.name).await?;
        rows += read;
        if counted != want.rows || read != want.rows || keys != want.keys {
            wrong.push(format!(
                "partition `{name}`: expected {} rows (key digest {:032x}), found {counted} by \
                 count(*) and {read} read by key (key digest {keys:032x})",
                want.rows, want.keys
            ));
        }
    }
    ctx.release_read(client, target, &loading).await?;
    if !wrong.is_empty() {
        return Ok(Err(format!(
            "`{target}` on `{}` does not hold what the backup of `{}` holds after the binlog \
             restore onto Milvus {}, which binlog mode has not been run against: {}; restore \
             it from a backup made with mode = \"rows\"",
            step.instance,
            info.collection_name,
            release.name(),
            wrong.join("; ")
        )));
    }
    Ok(Ok(format!(
        "{rows} rows and their keys checked against the backup's binlogs, partition by \
         partition (Milvus {} is not run here)",
        release.name()
    )))
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
    release: &Binlog,
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
    let (files, options) = import_request(release, root, seg);
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
                        !t.state.failed()
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
                    .import(target, Some(partition), files.clone(), &options)
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
    if rows == 0 && seg.num_of_rows > 0 && !seg.has_deletes() {
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
            s if s.failed() => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::meta::{Binlog as Log, FieldBinlog, PartitionBackupInfo};

    fn release(v: &str) -> Binlog {
        version::binlog("b", v).unwrap()
    }

    /// A segment as milvus-backup records one of a Milvus 2.4+ server (facts §3), not captured.
    fn seg(
        id: i64,
        partition: i64,
        l0: bool,
        deletes: bool,
        storage_version: i64,
    ) -> SegmentBackupInfo {
        let logs = |on: bool| {
            on.then(|| FieldBinlog {
                field_id: 0,
                binlogs: vec![Log {
                    log_id: 1,
                    ..Default::default()
                }],
            })
            .into_iter()
            .collect()
        };
        SegmentBackupInfo {
            segment_id: id,
            collection_id: 1,
            partition_id: partition,
            group_id: if partition == -1 { 0 } else { id },
            is_l0: l0,
            deltalogs: logs(l0 || deletes),
            storage_version,
            ..Default::default()
        }
    }

    fn collection() -> CollectionBackupInfo {
        let part = |id: i64, name: &str, segs: Vec<SegmentBackupInfo>| PartitionBackupInfo {
            partition_id: id,
            partition_name: name.into(),
            segment_backups: segs,
            ..Default::default()
        };
        CollectionBackupInfo {
            collection_name: "c".into(),
            partition_backups: vec![
                part(
                    2,
                    "_default",
                    vec![seg(21, 2, true, false, 0), seg(20, 2, false, true, 0)],
                ),
                part(
                    3,
                    "p",
                    vec![seg(30, 3, false, false, 0), seg(31, 3, true, false, 0)],
                ),
            ],
            l0_segments: vec![seg(9, -1, true, false, 0)],
            ..Default::default()
        }
    }

    #[test]
    fn imports_go_ordinary_then_partition_l0_then_collection_l0() {
        let info = collection();
        let order: Vec<Vec<(String, i64)>> = batches(&info)
            .into_iter()
            .map(|b| b.into_iter().map(|(p, s)| (p, s.segment_id)).collect())
            .collect();
        let named = |v: &[(&str, i64)]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), *s))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            order,
            [
                named(&[("_default", 20), ("p", 30)]),
                named(&[("_default", 21), ("p", 31)]),
                named(&[("", 9)]),
            ]
        );
        // A backup of Milvus 2.3 (no L0) is a single batch, as before.
        let mut old = info.clone();
        old.l0_segments.clear();
        for p in &mut old.partition_backups {
            p.segment_backups.retain(|s| !s.is_l0);
        }
        assert_eq!(batches(&old).len(), 1);
    }

    #[test]
    fn import_requests_follow_the_target_release() {
        let root = Location::new("data", "files/planrun-staging/r").unwrap();
        let opts = |o: &[(&str, &str)]| {
            o.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        let at = "files/planrun-staging/r/binlogs";
        // 2.3, as run here: segment directories, both always, `backup` alone.
        assert_eq!(
            import_request(&release("v2.3.5"), &root, &seg(30, 3, false, false, 0)),
            (
                vec![
                    format!("{at}/insert_log/1/3/30/30/"),
                    format!("{at}/delta_log/1/3/30/30/")
                ],
                opts(&[("backup", "true")])
            )
        );
        // 2.4 and 2.5: group directories, the delta one only with deletes.
        for v in ["v2.4.13", "v2.5.4"] {
            assert_eq!(
                import_request(&release(v), &root, &seg(30, 3, false, false, 1)),
                (
                    vec![format!("{at}/insert_log/1/3/30/")],
                    opts(&[("backup", "true"), ("skip_disk_quota_check", "true")])
                ),
                "{v}"
            );
        }
        assert_eq!(
            import_request(&release("v2.5.4"), &root, &seg(20, 2, false, true, 0)).0,
            [
                format!("{at}/insert_log/1/2/20/"),
                format!("{at}/delta_log/1/2/20/")
            ]
        );
        // L0: the delta directory alone, `l0_import` instead of `backup`.
        assert_eq!(
            import_request(&release("v2.4.13"), &root, &seg(21, 2, true, false, 0)),
            (
                vec![format!("{at}/delta_log/1/2/21/21/")],
                opts(&[("l0_import", "true"), ("skip_disk_quota_check", "true")])
            )
        );
        assert_eq!(
            import_request(&release("v2.4.13"), &root, &seg(9, -1, true, false, 0)).0,
            [format!("{at}/delta_log/1/-1/9/")]
        );
        // 2.6: the segment's storage version when it records one.
        assert_eq!(
            import_request(&release("v2.6.11"), &root, &seg(30, 3, false, false, 1)).1,
            opts(&[
                ("backup", "true"),
                ("skip_disk_quota_check", "true"),
                ("storage_version", "1")
            ])
        );
        assert_eq!(
            import_request(&release("v2.6.11"), &root, &seg(9, -1, true, false, 0)).1,
            opts(&[("l0_import", "true"), ("skip_disk_quota_check", "true")])
        );
    }

    #[test]
    fn refusals_name_what_the_release_cannot_import() {
        let info = collection();
        let t = Target {
            info: &info,
            db: "default".into(),
            name: "c".into(),
        };
        let why = refusals(&release("v2.3.5"), "b", &t).join("; ");
        assert!(
            why.contains("L0 (delete-only)")
                && why.contains("`b` (Milvus 2.3.5)")
                && why.contains("mode = \"rows\""),
            "{why}"
        );
        assert!(refusals(&release("v2.4.13"), "b", &t).is_empty());
        // A field added after creation (Milvus 2.6 numbers it after the dynamic field).
        let mut added = info.clone();
        added.schema.fields = [
            (100, "id", false),
            (101, "v", false),
            (102, "$meta", true),
            (103, "late", false),
        ]
        .into_iter()
        .map(|(id, name, dynamic)| crate::schema::FieldSchema {
            field_id: id,
            name: name.into(),
            is_dynamic: dynamic,
            ..Default::default()
        })
        .collect();
        let t = Target {
            info: &added,
            db: "default".into(),
            name: "c".into(),
        };
        let why = refusals(&release("v2.6.11"), "b", &t).join("; ");
        assert!(
            why.contains("field `late` of `c` has id 103") && why.contains("number it 102"),
            "{why}"
        );
    }
}
