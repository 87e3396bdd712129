//! A binlog backup: flush, snapshot the live segments, copy their binlogs, write meta.

use std::sync::Arc;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::common::{
    backup_info, collection_info, load_state_name, preview_info, preview_rows, start,
};
use crate::format::meta::SegmentBackupInfo;
use crate::format::meta::{BackupInfo, Binlog, CollectionBackupInfo, FieldBinlog};
use crate::milvus::MilvusClient;
use crate::milvus::SegmentInfo;
use crate::milvus::pb::common::SegmentLevel;
use crate::milvus::version;
use crate::plan::{BackupStep, Location};
use crate::steps::ctx::{Resources, Result, StepCtx, StepError, fail};
use crate::steps::preview::{Look, Seen, StepPreview};
use crate::storage::{self, Storage};
use crate::text::human_bytes;

/// How long GC stays paused per backup; renewed by nothing, so it is generous.
const GC_PAUSE_SECS: u64 = 3600;

/// One object to copy from the Milvus bucket into the backup.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SourceObject {
    /// Key in the instance's data bucket.
    pub key: String,
    /// Key relative to the backup location.
    pub rel: String,
    pub size: u64,
}

/// A collection frozen at backup time: its meta (without checksums) and the objects to copy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    pub info: CollectionBackupInfo,
    pub objects: Vec<SourceObject>,
    /// Why the snapshot's live rows differ from the collection's count, when they still did
    /// after the last attempt; said as a warning.
    #[serde(default)]
    pub note: Option<String>,
}

/// How many times a snapshot is taken again while its live rows disagree with count(*), and how
/// long apart. Milvus 2.3 commits a compaction's output segment before it writes the segment's
/// delta logs (seen: 10 s later); a snapshot in between would bring deleted rows back.
const SNAPSHOT_ATTEMPTS: u32 = 12;
const SNAPSHOT_PAUSE: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the instance keeps its binlogs, and what binlog mode does with its release. The
/// refusal both the preview and apply make: a binlog backup needs the instance's bucket, and a
/// server that keeps binlogs there in a layout planrun knows (Milvus Lite has none).
fn source(
    res: &Resources,
    step: &BackupStep,
    client: &MilvusClient,
) -> Result<(Location, version::Binlog)> {
    let Some(data) = res.plan.instances[&step.instance].data.clone() else {
        return fail(format!(
            "instance `{}` has no `data` (bucket and root path of its binlogs); binlog backups \
             need it, or set mode = \"rows\"",
            step.instance
        ));
    };
    if client.is_lite() {
        return fail(format!(
            "instance `{}` is Milvus Lite ({}), which keeps no binlogs; set mode = \"rows\" in \
             the backup step",
            step.instance,
            client.server_version()
        ));
    }
    let release =
        version::binlog(&step.instance, client.server_version()).map_err(StepError::Failed)?;
    Ok((data, release))
}

pub async fn run(ctx: &StepCtx, step: &BackupStep) -> Result<String> {
    let inst = &ctx.res.plan.instances[&step.instance];
    let client = ctx.res.milvus(&step.instance).await?;
    let (data, release) = source(&ctx.res, step, &client)?;
    let src = ctx.res.storage(&data.bucket).await?;
    let dst = ctx.res.storage(&step.to.bucket).await?;

    let collections = start(ctx, step, &client, &dst).await?;

    let gc = inst.management.clone();
    if let Some(url) = &gc {
        match crate::milvus::pause_gc(url, GC_PAUSE_SECS).await {
            Ok(()) => ctx.events.info(
                &ctx.step,
                format!("paused garbage collection of `{}`", step.instance),
            ),
            Err(e) => ctx
                .events
                .warn(&ctx.step, gc_not_paused(&step.instance, &e)),
        }
    }

    let (client_ref, data_ref, src_ref, dst_ref) = (&client, &data, &src, &dst);
    let result = ctx
        .each(
            collections.clone(),
            |(db, name)| format!("{db}.{name}"),
            |(db, name)| async move {
                ctx.check_cancel()?;
                let info = backup_collection(
                    ctx, client_ref, data_ref, src_ref, dst_ref, &step.to, &db, &name, release,
                )
                .await?;
                // Complete at `to` now: the steps after this one may start on it.
                let files = file_count(std::slice::from_ref(&info));
                let one = backup_info(ctx, step, client_ref, vec![info.clone()], "", files);
                ctx.publish(&step.to, one);
                Ok(info)
            },
        )
        .await;

    if let Some(url) = &gc {
        let _ = crate::milvus::resume_gc(url).await;
    }
    let units = result?;
    let infos = units.done.clone();

    let files = file_count(&infos);
    let rows: u64 = infos.iter().filter_map(|c| c.planrun_row_count).sum();
    let backup = backup_info(ctx, step, &client, infos, "", files);
    let size = backup.size;
    // Written at every end of the step, not once: a retried collection joins the meta.
    ctx.retry("backup meta", || async {
        Ok(crate::format::write_meta(dst.as_ref(), &step.to, &backup, None).await?)
    })
    .await?;
    units.finish(format!(
        "{} collection(s), {} rows, {files} files, {} into {}",
        backup.collection_backups.len(),
        rows,
        human_bytes(size as u64),
        step.to
    ))
}

/// How many binlogs the collections' segments hold.
pub(super) fn file_count(infos: &[CollectionBackupInfo]) -> u64 {
    infos
        .iter()
        .flat_map(|c| c.segments())
        .map(|s| s.files().len() as u64)
        .sum()
}

#[allow(clippy::too_many_arguments)]
async fn backup_collection(
    ctx: &StepCtx,
    client: &MilvusClient,
    data: &Location,
    src: &Arc<dyn Storage>,
    dst: &Arc<dyn Storage>,
    to: &Location,
    db: &str,
    name: &str,
    release: version::Binlog,
) -> Result<CollectionBackupInfo> {
    let key = format!("coll/{db}.{name}");
    if let Some(info) = ctx.done::<CollectionBackupInfo>(&key)? {
        return Ok(info);
    }
    let client = client.with_database(db);
    let started = Instant::now();
    let snap: Snapshot = ctx
        .once(&format!("{key}/snapshot"), || {
            snapshot(&client, data, src, db, name, release)
        })
        .await?;
    if let Some(note) = &snap.note {
        ctx.events.warn(&ctx.step, note.clone());
    }
    let bytes: u64 = snap.objects.iter().map(|o| o.size).sum();
    ctx.events
        .planned(&ctx.step, snap.objects.len() as u64, bytes);
    // "flush" also covers describing the collection and listing its segments' binlogs.
    ctx.events.phase(&ctx.step, name, "flush", started);
    let started = Instant::now();

    // Copy every object, checkpointing each; a crash repeats at most the copies in flight.
    // Owned items and a plain closure: borrowed ones make the spawned step future not `Send`.
    let results: Vec<(String, Option<String>)> = futures::stream::iter(snap.objects.clone())
        .map(|o: SourceObject| {
            let task = format!("{key}/obj/{}", o.rel);
            async move {
                let (md5, _cached): (Option<String>, bool) = ctx
                    .once_lazy(&task, || async {
                        let _slot = ctx.res.copies.acquire().await.expect("never closed");
                        let report = storage::copy_object(
                            src.as_ref(),
                            &o.key,
                            dst.as_ref(),
                            &to.join(&o.rel),
                            &|_| {},
                        )
                        .await
                        .map_err(|e| missing_binlog_hint(e, name))?;
                        Ok(report.dst.md5)
                    })
                    .await?;
                ctx.events.progress(&ctx.step, 1, o.size);
                Ok::<_, StepError>((o.rel.clone(), md5))
            }
        })
        .buffer_unordered(ctx.concurrency() * 4)
        .try_collect()
        .await?;
    ctx.tasks.sync().await?;
    ctx.events.phase(&ctx.step, name, "copy", started);

    let md5s: std::collections::HashMap<String, Option<String>> = results.into_iter().collect();
    let mut info = snap.info;
    for s in info.segments_mut() {
        let (ins, del) = (s.insert_dir(), s.delta_dir());
        for fb in &mut s.binlogs {
            for b in &mut fb.binlogs {
                b.md5 = md5s
                    .get(&format!("{ins}/{}/{}", fb.field_id, b.log_id))
                    .cloned()
                    .flatten();
            }
        }
        for fb in &mut s.deltalogs {
            for b in &mut fb.binlogs {
                b.md5 = md5s.get(&format!("{del}/{}", b.log_id)).cloned().flatten();
            }
        }
    }
    ctx.once(&key, || async { Ok(info.clone()) }).await
}

pub(super) fn missing_binlog_hint(e: crate::storage::StorageError, coll: &str) -> StepError {
    if e.is_not_found() {
        StepError::Failed(format!(
            "{e}: a binlog of collection `{coll}` disappeared while it was copied (compaction \
             and garbage collection); run `planrun apply --restart` to take a fresh snapshot"
        ))
    } else {
        e.into()
    }
}

/// Flushes the collection and records what a backup of it holds: schema, partitions, indexes,
/// the live segments and the objects that make them up, and how many rows they hold once their
/// deletes apply, read from the binlogs themselves. Taken again while that number disagrees
/// with count(*) (a loaded collection): the backup's row count is what its files hold, and the
/// restore checks the target against it. On a release binlog mode has not been run against, a
/// count that still disagrees fails the collection: planrun may be misreading its layout.
async fn snapshot(
    client: &MilvusClient,
    data: &Location,
    src: &Arc<dyn Storage>,
    db: &str,
    name: &str,
    release: version::Binlog,
) -> Result<Snapshot> {
    let mut attempt = 1;
    loop {
        client
            .flush_and_wait(name, crate::steps::ctx::FLUSH_TIMEOUT)
            .await?;
        // count(*) needs a loaded collection on Milvus 2.3; an unloaded one is not compared.
        let counted = client.query_count(name, &[], "").await.ok();
        let mut snap = snapshot_once(client, data, src, db, name).await?;
        let held = snap.info.planrun_row_count.unwrap_or(0);
        match counted {
            Some(c) if c != held && attempt < SNAPSHOT_ATTEMPTS => {
                tracing::info!(
                    collection = name,
                    counted = c,
                    held,
                    attempt,
                    "snapshot retaken"
                );
                attempt += 1;
                tokio::time::sleep(SNAPSHOT_PAUSE).await;
            }
            Some(c) if c != held && !release.run_here => {
                return fail(format!(
                    "the binlogs of `{name}` hold {held} live rows but the collection counts {c}, \
                     after {attempt} snapshots {}s apart, on Milvus {}, which binlog mode has \
                     not been run against: planrun may be misreading its binlogs, so no backup \
                     is recorded; back it up with mode = \"rows\"",
                    SNAPSHOT_PAUSE.as_secs(),
                    release.name()
                ));
            }
            Some(c) if c != held => {
                snap.note = Some(format!(
                    "the binlogs of `{name}` hold {held} live rows but the collection counts {c},                      after {attempt} snapshots {}s apart: it was written to during the backup,                      or Milvus has not persisted some deletes; the backup records {held}",
                    SNAPSHOT_PAUSE.as_secs()
                ));
                return Ok(snap);
            }
            _ => return Ok(snap),
        }
    }
}

/// Whether a listed segment holds only deletes (L0), or why it is refused: a level or a
/// storage format planrun does not know, or storage v2, whose files it cannot read to count
/// the backup's rows.
pub(super) fn l0(name: &str, seg: &SegmentInfo) -> Result<bool> {
    let level = SegmentLevel::try_from(seg.level);
    let why = match (level, seg.storage_version) {
        (Err(_), _) => format!(
            "level {}, which this version of planrun does not know (it knows Legacy, L0, L1, L2)",
            seg.level
        ),
        (_, 2) => "in storage format v2 (Milvus 2.6), whose files planrun cannot read to count \
                   the backup's rows"
            .to_string(),
        (_, v) if v > 2 => {
            format!("in storage format v{v}, newer than any planrun knows (it knows v1 and v2)")
        }
        (Ok(level), _) => return Ok(level == SegmentLevel::L0),
    };
    fail(format!(
        "segment {} of collection `{name}` is {why}; back the collection up with mode = \"rows\"",
        seg.id
    ))
}

async fn snapshot_once(
    client: &MilvusClient,
    data: &Location,
    src: &Arc<dyn Storage>,
    db: &str,
    name: &str,
) -> Result<Snapshot> {
    let desc = client.describe_collection(name).await?;
    if let Some(why) = crate::schema::uncarried(db, name, &desc.schema) {
        return fail(why);
    }
    let partitions = client.show_partitions(name).await?;
    let indexes = client.describe_index(name).await?;
    let segments = client.get_persistent_segment_info(name).await?;

    let mut objects = Vec::new();
    let mut parts = collection_info(db, name, &desc, &partitions, &[], None).partition_backups;
    let mut l0_segments = Vec::new();
    for seg in &segments {
        let is_l0 = l0(name, seg)?;
        let mut s = SegmentBackupInfo {
            segment_id: seg.id,
            collection_id: desc.collection_id,
            partition_id: seg.partition_id,
            num_of_rows: seg.num_rows,
            // milvus-backup gives collection-level L0 segments no group directory.
            group_id: if seg.partition_id == SegmentBackupInfo::ALL_PARTITIONS {
                0
            } else {
                seg.id
            },
            is_l0,
            storage_version: seg.storage_version,
            ..Default::default()
        };
        let ins_prefix = data.join(&format!(
            "insert_log/{}/{}/{}/",
            desc.collection_id, seg.partition_id, seg.id
        ));
        let del_prefix = data.join(&format!(
            "delta_log/{}/{}/{}/",
            desc.collection_id, seg.partition_id, seg.id
        ));
        let ins: Vec<_> = src.list(&ins_prefix).try_collect().await?;
        let del: Vec<_> = src.list(&del_prefix).try_collect().await?;
        // An L0 segment holds only delta logs.
        if ins.is_empty() && !is_l0 {
            return fail(format!(
                "segment {} of collection `{name}` has no insert logs under `{}:{ins_prefix}`; \
                 check `data` of instance `{}` (bucket and root path must be the instance's \
                 minio.bucketName and minio.rootPath)",
                seg.id,
                data.bucket,
                client.name()
            ));
        }
        for o in ins {
            // <prefix><field>/<log>
            let rest = &o.key[ins_prefix.len()..];
            let Some((field, log)) = rest.split_once('/') else {
                continue;
            };
            let (Ok(field_id), Ok(log_id)) = (field.parse::<i64>(), log.parse::<i64>()) else {
                continue;
            };
            let b = Binlog {
                log_path: o.key.clone(),
                log_size: o.size as i64,
                log_id,
                md5: None,
            };
            match s.binlogs.iter_mut().find(|f| f.field_id == field_id) {
                Some(f) => f.binlogs.push(b),
                None => s.binlogs.push(FieldBinlog {
                    field_id,
                    binlogs: vec![b],
                }),
            }
            objects.push(SourceObject {
                key: o.key.clone(),
                rel: format!("{}/{field_id}/{log_id}", s.insert_dir()),
                size: o.size,
            });
            s.size += o.size as i64;
        }
        let mut deltas = FieldBinlog {
            field_id: 0,
            binlogs: Vec::new(),
        };
        for o in del {
            let rest = &o.key[del_prefix.len()..];
            let Ok(log_id) = rest.parse::<i64>() else {
                continue;
            };
            deltas.binlogs.push(Binlog {
                log_path: o.key.clone(),
                log_size: o.size as i64,
                log_id,
                md5: None,
            });
            objects.push(SourceObject {
                key: o.key.clone(),
                rel: format!("{}/{log_id}", s.delta_dir()),
                size: o.size,
            });
            s.size += o.size as i64;
        }
        if !deltas.binlogs.is_empty() {
            s.deltalogs.push(deltas);
        }
        s.binlogs.sort_by_key(|f| f.field_id);
        if s.partition_id == SegmentBackupInfo::ALL_PARTITIONS {
            l0_segments.push(s);
            continue;
        }
        match parts
            .iter_mut()
            .find(|p| p.partition_id == seg.partition_id)
        {
            Some(p) => {
                p.size += s.size;
                p.segment_backups.push(s);
            }
            None => {
                return fail(format!(
                    "segment {} of `{name}` belongs to partition {} that ShowPartitions did not list",
                    seg.id, seg.partition_id
                ));
            }
        }
    }
    let size =
        parts.iter().map(|p| p.size).sum::<i64>() + l0_segments.iter().map(|s| s.size).sum::<i64>();
    let mut info = collection_info(db, name, &desc, &partitions, &indexes, None);
    info.load_state = load_state_name(
        client.get_load_state(name).await? == crate::milvus::pb::common::LoadState::Loaded,
    );
    info.partition_backups = parts;
    info.l0_segments = l0_segments;
    info.size = size;
    // A segment whose field binlogs are incomplete (compaction or GC raced the backup, or an
    // object went missing) is refused before the snapshot is recorded: that collection fails,
    // and the next apply takes a fresh snapshot of it.
    crate::format::check::check_collection(&info).map_err(StepError::Failed)?;
    let Some(pk) = desc.primary_field() else {
        return fail(format!("collection `{name}` has no primary key field"));
    };
    let live = crate::format::binlog::live(
        src.clone(),
        crate::format::binlog::Files::Source,
        &info,
        (&pk.name, pk.field_id),
    )
    .await?;
    info.planrun_row_count = Some(live.values().map(|l| l.rows).sum());
    Ok(Snapshot {
        info,
        objects,
        note: None,
    })
}

/// Why garbage collection stays on during the copy, in the dry run's and apply's words.
fn gc_not_paused(instance: &str, e: &crate::milvus::MilvusError) -> String {
    format!(
        "could not pause garbage collection of `{instance}` ({e}); compaction may remove binlogs \
         while they are copied (a failed copy is retried on resume)"
    )
}

/// What a binlog backup would copy, by listing the live segments' files.
pub(super) async fn preview(
    look: &Look<'_>,
    step: &BackupStep,
    client: &MilvusClient,
    selected: &[(String, String)],
    p: &mut StepPreview,
) -> Option<BackupInfo> {
    let (data, _) = match source(look.res, step, client) {
        Ok(d) => d,
        Err(e) => {
            p.conflict(e);
            return None;
        }
    };
    let src = match look.res.storage(&data.bucket).await {
        Ok(s) => s,
        Err(e) => {
            p.conflict(e);
            return None;
        }
    };
    p.changes.push(match &look.res.plan.instances[&step.instance].management {
        // Asked the way apply asks, so that the dry run says what apply will do.
        Some(url) => match crate::milvus::probe_gc(url).await {
            Ok(()) => format!(
                "~ garbage collection of `{}` paused through {url} while its binlogs are copied",
                step.instance
            ),
            Err(e) => format!("~ {}", gc_not_paused(&step.instance, &e)),
        },
        None => format!(
            "! garbage collection of `{}` is not paused (no `management` address and its uri is \
             not on the default port 19530); set `management` so compaction cannot remove \
             binlogs mid-copy",
            step.instance
        ),
    });
    let mut info = BackupInfo::default();
    for (db, name) in selected {
        let c = client.with_database(db);
        let parts = c.show_partitions(name).await.unwrap_or_default();
        let segs = c
            .get_persistent_segment_info(name)
            .await
            .unwrap_or_default();
        let desc = c.describe_collection(name).await.ok();
        let (rows, shown) = preview_rows(&c, name).await;
        let (mut objects, mut bytes) = (0, 0);
        if let Some(d) = &desc {
            for s in &segs {
                for kind in ["insert_log", "delta_log"] {
                    let prefix = data.join(&format!(
                        "{kind}/{}/{}/{}/",
                        d.collection_id, s.partition_id, s.id
                    ));
                    if let Ok(list) = src.list(&prefix).try_collect::<Vec<_>>().await {
                        objects += list.len() as u64;
                        bytes += list.iter().map(|o| o.size).sum::<u64>();
                    }
                }
            }
        }
        if let Some(why) = desc
            .as_ref()
            .and_then(|d| crate::schema::uncarried(db, name, &d.schema))
        {
            p.conflict(why);
        }
        p.counts.collections += 1;
        p.counts.partitions += parts.len() as u64;
        p.counts.segments += segs.len() as u64;
        p.counts.rows += rows;
        p.counts.objects += objects;
        p.counts.bytes += bytes;
        let segments = Some(segs.len() as u64);
        p.seen
            .push(Seen::source(&step.instance, db, name, rows, segments));
        p.changes.push(format!(
            "+ {db}.{name}: {} partitions, {} sealed segments, {shown} rows, {objects} binlogs ({}); growing rows are flushed first",
            parts.len(),
            segs.len(),
            human_bytes(bytes)
        ));
        info.collection_backups
            .push(preview_info(&c, db, name, &parts, desc.as_ref(), Some(rows)).await);
    }
    Some(info)
}
