//! The `backup` step in binlog mode: flush, snapshot the live segments, copy their binlogs, write meta.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::meta::{self, BackupInfo, Binlog, CollectionBackupInfo, FieldBinlog, IndexInfo};
use super::meta::{PartitionBackupInfo, PlanrunInfo, SegmentBackupInfo};
use super::select::Pattern;
use super::{Result, StepCtx, fail, join, join_key};
use crate::milvus::MilvusClient;
use crate::plan::{BackupStep, Location, Mode};
use crate::storage::{self, Storage};

/// How long GC stays paused per backup; renewed by nothing, so it is generous.
const GC_PAUSE_SECS: u64 = 3600;
const FLUSH_TIMEOUT: Duration = Duration::from_secs(600);

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
}

pub async fn run(ctx: &StepCtx, step: &BackupStep) -> Result<String> {
    if step.mode == Mode::Rows {
        return super::rows::backup(ctx, step).await;
    }
    let plan = &ctx.res.plan;
    let inst = &plan.instances[&step.instance];
    let Some(data) = inst.data.clone() else {
        return fail(format!(
            "instance `{}` has no `data` (bucket and root path of its binlogs); binlog backups need it",
            step.instance
        ));
    };
    let client = ctx.res.milvus(&step.instance).await?;
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
            Err(e) => ctx.events.warn(
                &ctx.step,
                format!(
                    "could not pause garbage collection of `{}` ({e}); compaction may remove \
                     binlogs while they are copied (a failed copy is retried on resume)",
                    step.instance
                ),
            ),
        }
    }

    let result = async {
        let mut infos = Vec::new();
        for (db, name) in &collections {
            ctx.check_cancel()?;
            let info =
                backup_collection(ctx, &client, &data, &src, &dst, &step.to, db, name).await?;
            infos.push(info);
        }
        Ok::<_, super::StepError>(infos)
    }
    .await;

    if let Some(url) = &gc {
        let _ = crate::milvus::resume_gc(url).await;
    }
    let infos = result?;

    let files: u64 = infos
        .iter()
        .flat_map(|c| &c.partition_backups)
        .flat_map(|p| &p.segment_backups)
        .map(|s| s.files().len() as u64)
        .sum();
    let size: i64 = infos.iter().map(|c| c.size).sum();
    let rows: u64 = infos.iter().filter_map(|c| c.planrun_row_count).sum();
    let name = step
        .to
        .path
        .rsplit('/')
        .next()
        .unwrap_or("backup")
        .to_string();
    let backup = BackupInfo {
        id: ctx.run.clone(),
        state_code: 2,
        name,
        backup_timestamp: crate::checkpoint::now() * 1000,
        collection_backups: infos,
        size,
        milvus_version: client.server_version().to_string(),
        format: String::new(),
        planrun: Some(PlanrunInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            run: ctx.run.clone(),
            files,
        }),
    };
    // Meta goes last: a backup without `backup_meta.json` is incomplete, for both tools.
    ctx.once("meta", || write_meta(&dst, &step.to, &backup))
        .await?;
    Ok(format!(
        "{} collection(s), {} rows, {files} files, {} into {}",
        collections.len(),
        rows,
        crate::exec::report::human_bytes(size as u64),
        step.to
    ))
}

/// What both backup modes do first: refuse to overwrite a backup that is not this run's own,
/// then fix (and checkpoint) the collections the step's patterns select.
pub(super) async fn start(
    ctx: &StepCtx,
    step: &BackupStep,
    client: &MilvusClient,
    dst: &Arc<dyn Storage>,
) -> Result<Vec<(String, String)>> {
    if ctx.done::<bool>("started")?.is_none() {
        if dst
            .head(&join(&step.to, meta::BACKUP_META))
            .await?
            .is_some()
        {
            return fail(format!(
                "a backup already exists at `{}`; choose another `to` in step `{}` or delete it",
                step.to, ctx.step
            ));
        }
        ctx.once("started", || async { Ok(true) }).await?;
    }
    let collections: Vec<(String, String)> = ctx
        .once("collections", || resolve(client, &step.collections))
        .await?;
    if collections.is_empty() {
        return fail(format!(
            "step `{}`: no collection on `{}` matches {:?}",
            ctx.step, step.instance, step.collections
        ));
    }
    Ok(collections)
}

/// The (database, collection) pairs the step's patterns select, in a stable order.
pub async fn resolve(client: &MilvusClient, patterns: &[String]) -> Result<Vec<(String, String)>> {
    let patterns: Vec<Pattern> = patterns.iter().map(|p| Pattern::parse(p)).collect();
    let mut out = Vec::new();
    let dbs = client.list_databases().await?;
    for db in dbs {
        let wanted: Vec<&Pattern> = patterns
            .iter()
            .filter(|p| super::select::glob(p.database(), &db))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let names = client.with_database(&db).show_collections().await?;
        for name in names {
            if wanted.iter().any(|p| p.matches(&db, &name)) {
                out.push((db.clone(), name));
            }
        }
    }
    // A literal name that matched nothing is a mistake the user wants to hear about.
    for p in &patterns {
        if p.is_literal() && !out.iter().any(|(d, c)| p.matches(d, c)) {
            return fail(format!(
                "collection `{}` does not exist in database `{}` on `{}`",
                p.coll,
                p.database(),
                client.name()
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
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
) -> Result<CollectionBackupInfo> {
    let key = format!("coll/{db}.{name}");
    if let Some(info) = ctx.done::<CollectionBackupInfo>(&key)? {
        return Ok(info);
    }
    let client = client.with_database(db);
    let started = Instant::now();
    let snap: Snapshot = ctx
        .once(&format!("{key}/snapshot"), || {
            snapshot(&client, data, src, db, name)
        })
        .await?;
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
                        let report = storage::copy_object(
                            src.as_ref(),
                            &o.key,
                            dst.as_ref(),
                            &join(to, &o.rel),
                            &|_| {},
                        )
                        .await
                        .map_err(|e| missing_binlog_hint(e, name))?;
                        Ok(report.dst.md5)
                    })
                    .await?;
                ctx.events.progress(&ctx.step, 1, o.size);
                Ok::<_, super::StepError>((o.rel.clone(), md5))
            }
        })
        .buffer_unordered(ctx.concurrency() * 4)
        .try_collect()
        .await?;
    ctx.tasks.sync().await?;
    ctx.events.phase(&ctx.step, name, "copy", started);

    let md5s: std::collections::HashMap<String, Option<String>> = results.into_iter().collect();
    let mut info = snap.info;
    for p in &mut info.partition_backups {
        for s in &mut p.segment_backups {
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
    }
    ctx.once(&key, || async { Ok(info.clone()) }).await
}

fn missing_binlog_hint(e: crate::storage::StorageError, coll: &str) -> super::StepError {
    if e.is_not_found() {
        super::StepError::Failed(format!(
            "{e}: a binlog of collection `{coll}` disappeared while it was copied (compaction \
             and garbage collection); run `planrun apply --restart` to take a fresh snapshot"
        ))
    } else {
        e.into()
    }
}

/// Flushes the collection and records what a backup of it holds: schema, partitions, indexes,
/// the live segments and the objects that make them up.
async fn snapshot(
    client: &MilvusClient,
    data: &Location,
    src: &Arc<dyn Storage>,
    db: &str,
    name: &str,
) -> Result<Snapshot> {
    client.flush_and_wait(name, FLUSH_TIMEOUT).await?;
    let desc = client.describe_collection(name).await?;
    let partitions = client.show_partitions(name).await?;
    let indexes = client.describe_index(name).await?;
    let segments = client.get_persistent_segment_info(name).await?;
    // count(*) needs a loaded collection on Milvus 2.3; without it the check on restore is skipped.
    let row_count = client.query_count(name, &[], "").await.ok();

    let mut objects = Vec::new();
    let mut parts: Vec<PartitionBackupInfo> = partitions
        .iter()
        .map(|p| PartitionBackupInfo {
            partition_id: p.id,
            partition_name: p.name.clone(),
            collection_id: desc.collection_id,
            ..Default::default()
        })
        .collect();
    for seg in &segments {
        let mut s = SegmentBackupInfo {
            segment_id: seg.id,
            collection_id: desc.collection_id,
            partition_id: seg.partition_id,
            num_of_rows: seg.num_rows,
            group_id: seg.id,
            ..Default::default()
        };
        let ins_prefix = join_key(
            &data.path,
            &format!(
                "insert_log/{}/{}/{}/",
                desc.collection_id, seg.partition_id, seg.id
            ),
        );
        let del_prefix = join_key(
            &data.path,
            &format!(
                "delta_log/{}/{}/{}/",
                desc.collection_id, seg.partition_id, seg.id
            ),
        );
        let ins: Vec<_> = src.list(&ins_prefix).try_collect().await?;
        let del: Vec<_> = src.list(&del_prefix).try_collect().await?;
        if ins.is_empty() {
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
    let size = parts.iter().map(|p| p.size).sum();
    let info = CollectionBackupInfo {
        id: format!("{}", desc.collection_id),
        collection_id: desc.collection_id,
        db_name: db.to_string(),
        collection_name: name.to_string(),
        schema: (&desc.schema).into(),
        shards_num: desc.shards_num,
        consistency_level: desc.consistency_level as i32,
        partition_backups: parts,
        backup_timestamp: crate::checkpoint::now() * 1000,
        size,
        has_index: !indexes.is_empty(),
        index_infos: indexes
            .iter()
            .map(|i| IndexInfo {
                field_name: i.field_name.clone(),
                index_name: i.index_name.clone(),
                index_type: i
                    .params
                    .iter()
                    .find(|(k, _)| k == "index_type")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default(),
                params: i.params.iter().cloned().collect(),
            })
            .collect(),
        load_state: String::new(),
        properties: meta::kv_from_pairs(&desc.properties),
        aliases: desc.aliases.clone(),
        planrun_row_count: row_count,
    };
    Ok(Snapshot { info, objects })
}

async fn write_meta(dst: &Arc<dyn Storage>, to: &Location, backup: &BackupInfo) -> Result<()> {
    fn json<T: Serialize>(v: &T) -> bytes::Bytes {
        serde_json::to_vec_pretty(v)
            .expect("meta serialises")
            .into()
    }
    let (b, c, p, s) = backup.split();
    // Per-level files first; `backup_meta.json`, which both tools test for, last.
    dst.put_bytes(&join(to, meta::COLLECTION_META), json(&c))
        .await?;
    dst.put_bytes(&join(to, meta::PARTITION_META), json(&p))
        .await?;
    dst.put_bytes(&join(to, meta::SEGMENT_META), json(&s))
        .await?;
    dst.put_bytes(&join(to, meta::FULL_META), json(backup))
        .await?;
    dst.put_bytes(&join(to, meta::BACKUP_META), json(&b))
        .await?;
    Ok(())
}
