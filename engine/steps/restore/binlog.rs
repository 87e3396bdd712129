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

use futures::TryStreamExt;

use super::import::import_all;
use super::import_task::import_root;
use super::target::{Target, create_aliases, create_target, discard};
use crate::checkpoint::TaskState;
use crate::format::binlog::{Files, Live};
use crate::format::meta::{CollectionBackupInfo, SegmentBackupInfo};
use crate::milvus::MilvusClient;
use crate::milvus::version::{self, Binlog};
use crate::plan::{Location, RestoreStep};
use std::collections::BTreeMap;

use crate::steps::ctx::{Resources, Result, StepCtx, StepError, Units, fail, to_json};
use crate::storage::Storage;

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
    let release = release(client, step)?;
    let from_store = ctx.res.storage(&step.from.bucket).await?;
    let (import_root, staged) = import_root(ctx, step);
    let data_store = ctx.res.storage(&import_root.bucket).await?;

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

    let imported = import_all(ctx, step, client, t, from, stage, import_root, &release).await?;
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
            crate::steps::keys::key_digest(ctx, client, target, &part, &pk.name, "").await?;
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

#[cfg(test)]
mod tests {
    use super::super::import::fixtures::{collection, release};
    use super::*;

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
