//! Importing a binlog backup's segments: staged into the instance's bucket when the backup is
//! elsewhere, in milvus-backup's order, each with the request its release takes, started once
//! and waited for (`import_task`).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::import_task::{Request, import_once};
use super::target::Target;
use crate::format::meta::{CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::MilvusClient;
use crate::milvus::version::Binlog;
use crate::plan::{Location, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, StepError};
use crate::storage::{self, Storage};

/// Imports every segment of `t` (staging its files first when `stage` is the instance's bucket),
/// batch after batch, `concurrency` requests at a time: the rows the imports reported.
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
    // Where the instance reads the files: its bucket when staged, else the backup's.
    let root_store = stage.unwrap_or(from).as_ref();
    // Stage (copy into the instance's bucket) the files of every segment, then import each
    // request, batch after batch. Owned items and a plain closure: borrowed ones make the
    // spawned step future not `Send`.
    let key_ref = key.as_str();
    let mut rows: Vec<i64> = Vec::new();
    for batch in batches(info) {
        let work = requests(batch, release);
        let done: Vec<i64> = futures::stream::iter(work)
            .map(
                |(partition, segs): (String, Vec<SegmentBackupInfo>)| async move {
                    let (key, partition) = (key_ref, partition.as_str());
                    if let Some(data) = stage {
                        // Side by side, as many as the step's copy slots allow.
                        let files: Vec<String> =
                            segs.iter().flat_map(|s| s.files()).map(|f| f.0).collect();
                        futures::stream::iter(files)
                            .map(|rel: String| async move {
                                ctx.once_lazy(&format!("{key}/stage/{rel}"), || async {
                                    let _slot =
                                        ctx.res.copies.acquire().await.expect("never closed");
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
                                .await
                            })
                            .buffer_unordered(STAGE_AT_ONCE)
                            .try_collect::<Vec<(bool, bool)>>()
                            .await?;
                    }
                    let whole = whole_partition(ctx, key, root_store, import_root, &segs).await?;
                    let got: Vec<i64> = futures::stream::iter(chunk(segs, whole))
                        .map(|part| async move {
                            let got = import_segments(
                                ctx,
                                client,
                                key,
                                target,
                                partition,
                                &part,
                                import_root,
                                release,
                            )
                            .await?;
                            let bytes: i64 = part.iter().map(|s| s.size).sum();
                            ctx.events
                                .progress(&ctx.step, part.len() as u64, bytes as u64);
                            // An L0 import brings deletes, not rows.
                            Ok::<_, StepError>(if part[0].is_l0 { 0 } else { got })
                        })
                        .buffer_unordered(ctx.concurrency())
                        .try_collect()
                        .await?;
                    Ok::<_, StepError>(got.iter().sum::<i64>())
                },
            )
            .buffer_unordered(ctx.concurrency())
            .try_collect()
            .await?;
        rows.extend(done);
    }
    ctx.tasks.sync().await?;
    let imported: i64 = rows.iter().sum();
    Ok(imported)
}

/// The segments of one batch, grouped for their requests. Milvus 2.3 runs one import at a time
/// and frees its data node on a 2-second tick, so every request costs at least 2 s: the
/// ordinary segments of one partition go together, and `whole_partition` decides whether they
/// go as one request. Other releases: a segment each.
fn requests(
    batch: Vec<(String, &SegmentBackupInfo)>,
    release: &Binlog,
) -> Vec<(String, Vec<SegmentBackupInfo>)> {
    let mut out: Vec<(String, Vec<SegmentBackupInfo>)> = Vec::new();
    for (partition, seg) in batch {
        let joins = |(p, segs): &&mut (String, Vec<SegmentBackupInfo>)| {
            !release.l0 && !seg.is_l0 && *p == partition && segs[0].partition_id == seg.partition_id
        };
        match out.last_mut().filter(joins) {
            Some((_, segs)) => segs.push(seg.clone()),
            None => out.push((partition, vec![seg.clone()])),
        }
    }
    out
}

/// Staging copies one request's group starts at once (the step's copy slots bound them all).
const STAGE_AT_ONCE: usize = 16;

/// The most bytes of segments imported by one partition request: larger segments are worth
/// their 2 s each, and a failed request is imported again whole.
const PARTITION_REQUEST_BYTES: i64 = 1 << 30;

/// The requests of a group of segments: all of them in one (`whole`), or one each.
fn chunk(segs: Vec<SegmentBackupInfo>, whole: bool) -> Vec<Vec<SegmentBackupInfo>> {
    match whole {
        true => vec![segs],
        false => segs.into_iter().map(|s| vec![s]).collect(),
    }
}

/// Whether several segments of one partition go in one request of their partition's
/// directories: only where those hold exactly their files (a directory with anything else, an
/// older backup's segment left at the same place, would import it too), and never for a
/// collection whose segments an earlier run began importing one by one (their tasks are found
/// and adopted instead). Once decided, the partition's task records it.
async fn whole_partition(
    ctx: &StepCtx,
    key: &str,
    store: &dyn Storage,
    root: &Location,
    segs: &[SegmentBackupInfo],
) -> Result<bool> {
    if segs.len() < 2 || segs.iter().map(|s| s.size).sum::<i64>() > PARTITION_REQUEST_BYTES {
        return Ok(false);
    }
    if ctx.state(&partition_task(key, &segs[0]))?.is_some() {
        return Ok(true);
    }
    for s in segs {
        if ctx.state(&segment_task(key, s))?.is_some() {
            return Ok(false);
        }
    }
    let want: std::collections::BTreeSet<String> = segs
        .iter()
        .flat_map(|s| s.files())
        .map(|(rel, _, _)| root.join(&rel))
        .collect();
    let mut found = std::collections::BTreeSet::new();
    for dir in partition_dirs(&segs[0]) {
        let mut listing = store.list(&format!("{}/", root.join(&dir)));
        while let Some(o) = listing.try_next().await? {
            found.insert(o.key);
        }
    }
    Ok(found == want)
}

fn segment_task(key: &str, seg: &SegmentBackupInfo) -> String {
    format!("{key}/import/{}", seg.segment_id)
}

fn partition_task(key: &str, seg: &SegmentBackupInfo) -> String {
    format!("{key}/import/partition-{}", seg.partition_id)
}

/// A partition's insert and delta log directories, relative to the backup location.
fn partition_dirs(seg: &SegmentBackupInfo) -> [String; 2] {
    ["insert_log", "delta_log"]
        .map(|kind| format!("binlogs/{kind}/{}/{}", seg.collection_id, seg.partition_id))
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

/// Imports one segment (see [`import_request`]), or several of one partition by their
/// partition's directories (Milvus 2.3), started once and waited for.
#[allow(clippy::too_many_arguments)]
async fn import_segments(
    ctx: &StepCtx,
    client: &MilvusClient,
    key: &str,
    target: &str,
    partition: &str,
    segs: &[SegmentBackupInfo],
    root: &Location,
    release: &Binlog,
) -> Result<i64> {
    let seg = &segs[0];
    // With deletes, fewer rows than the segments' (or none) is right.
    let rows = match segs.iter().any(|s| s.has_deletes()) {
        true => None,
        false => Some(segs.iter().map(|s| s.num_of_rows).sum()),
    };
    let req = match segs {
        [seg] => {
            let (files, options) = import_request(release, root, seg);
            Request {
                task: segment_task(key, seg),
                target,
                partition,
                files,
                options,
                what: format!("segment {}", seg.segment_id),
                rows,
            }
        }
        _ => Request {
            task: partition_task(key, seg),
            target,
            partition,
            files: partition_dirs(seg)
                .map(|d| format!("{}/", root.join(&d)))
                .into(),
            options: vec![("backup".to_string(), "true".to_string())],
            what: format!(
                "the {} segments of partition `{partition}` (one request)",
                segs.len()
            ),
            rows,
        },
    };
    import_once(ctx, client, &req).await
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
    fn on_2_3_the_segments_of_a_partition_go_together() {
        let mut info = collection();
        info.l0_segments.clear();
        for p in &mut info.partition_backups {
            p.segment_backups.retain(|s| !s.is_l0);
            p.segment_backups.push(seg(
                p.partition_id * 10 + 5,
                p.partition_id,
                false,
                false,
                0,
            ));
        }
        let shape = |v: &str| -> Vec<(String, Vec<i64>)> {
            let b = batches(&info).remove(0);
            requests(b, &release(v))
                .into_iter()
                .map(|(p, segs)| (p, segs.iter().map(|s| s.segment_id).collect()))
                .collect()
        };
        let named = |v: &[(&str, &[i64])]| {
            v.iter()
                .map(|(p, s)| (p.to_string(), s.to_vec()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shape("v2.3.5"),
            named(&[("_default", &[20, 25]), ("p", &[30, 35])])
        );
        // 2.4 on: a request per segment, as milvus-backup sends them.
        assert_eq!(
            shape("v2.4.13"),
            named(&[
                ("_default", &[20]),
                ("_default", &[25]),
                ("p", &[30]),
                ("p", &[35])
            ])
        );
        assert_eq!(
            partition_dirs(&seg(30, 3, false, false, 0)),
            ["binlogs/insert_log/1/3", "binlogs/delta_log/1/3"]
        );
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
