//! Importing a binlog backup's segments: staged into the instance's bucket when the backup is
//! elsewhere, in milvus-backup's order, each with the request its release takes, started once
//! (an intent first; a resumed run adopts the server's task instead of starting another) and
//! waited for.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::target::Target;
use crate::checkpoint::TaskState;
use crate::format::meta::{CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::pb::common::ImportState;
use crate::milvus::version::Binlog;
use crate::milvus::{MilvusClient, MilvusError};
use crate::plan::{Location, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, StepError, fail, to_json};
use crate::storage::{self, Storage};

const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// An import whose state and progress have not changed for this long is said to be stuck.
const STUCK_AFTER: Duration = Duration::from_secs(180);

#[derive(Serialize, Deserialize)]
struct Started {
    tasks: Vec<i64>,
}

/// Imports every segment of `t` (staging its files first when `stage` is the instance's bucket),
/// batch after batch, `concurrency` at a time: the rows the imports reported.
#[allow(clippy::too_many_arguments)]
pub(super) async fn import_all(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    t: &Target<'_>,
    from: &Arc<dyn Storage>,
    stage: Option<&Arc<dyn Storage>>,
    import_root: &Location,
    release: &Binlog,
) -> Result<i64> {
    let (info, target, key) = (t.info, t.name.as_str(), t.key());
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
                    release,
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
    Ok(imported)
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
            let recorded = serde_json::from_value::<Started>(v)
                .map_err(|e| StepError::Failed(format!("checkpoint of {task}: {e}")))?
                .tasks;
            // Started by an earlier apply and failed since (a server restart fails the imports
            // it had in flight): a failed import leaves no rows, so it is started anew instead
            // of failing the collection again. One that failed in this apply fails its unit.
            let mut failed = None;
            for id in &recorded {
                let st = client.get_import_state(*id, &|_| {}).await?;
                if st.state.failed() {
                    failed = Some(st.failed_reason);
                }
            }
            match failed {
                None => recorded,
                Some(why) => {
                    ctx.events.warn(
                        &ctx.step,
                        format!(
                            "the import of segment {} into `{target}` started by an earlier apply \
                             failed on `{}` ({why}); importing it again",
                            seg.segment_id,
                            client.name()
                        ),
                    );
                    start_import(ctx, client, &task, target, partition, &files, &options).await?
                }
            }
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
                start_import(ctx, client, &task, target, partition, &files, &options).await?
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

/// Starts the import of `files`, its intent recorded first and its task ids after.
async fn start_import(
    ctx: &StepCtx,
    client: &MilvusClient,
    task: &str,
    target: &str,
    partition: &str,
    files: &[String],
    options: &[(String, String)],
) -> Result<Vec<i64>> {
    ctx.check_cancel()?;
    ctx.set(task, TaskState::Intent(to_json(&files))).await?;
    let ids = client
        .import(target, Some(partition), files.to_vec(), options)
        .await?;
    crate::fault::point("import-started");
    ctx.set(
        task,
        TaskState::Started(to_json(&Started { tasks: ids.clone() })),
    )
    .await?;
    Ok(ids)
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
    // What the server last said of the task, and since when: a wait that does not move is said.
    let mut seen: Option<(ImportState, String, Instant, bool)> = None;
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
        let progress = st.info("progress_percent").unwrap_or_default().to_string();
        match &mut seen {
            Some((state, p, since, said)) if *state == st.state && *p == progress => {
                if !*said && since.elapsed() >= STUCK_AFTER {
                    *said = true;
                    stalled(format!(
                        "`{}` has answered {:?}{} since {} s ago, without progress; still \
                         waiting (up to {} min in all)",
                        client.name(),
                        st.state,
                        if progress.is_empty() {
                            String::new()
                        } else {
                            format!(" at {progress} %")
                        },
                        since.elapsed().as_secs(),
                        IMPORT_TIMEOUT.as_secs() / 60
                    ));
                }
            }
            _ => seen = Some((st.state, progress, Instant::now(), false)),
        }
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

/// Backups of Milvus 2.4+ servers as milvus-backup records them, for this file's tests and the
/// binlog restore's.
#[cfg(test)]
pub(super) mod fixtures {
    use super::*;
    use crate::format::meta::{Binlog as Log, FieldBinlog, PartitionBackupInfo};
    use crate::milvus::version;

    pub fn release(v: &str) -> Binlog {
        version::binlog("b", v).unwrap()
    }

    /// A segment as milvus-backup records one of a Milvus 2.4+ server (facts §3), not captured.
    pub fn seg(
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

    pub fn collection() -> CollectionBackupInfo {
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
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

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
}
