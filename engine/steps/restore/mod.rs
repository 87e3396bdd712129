//! The `restore` step: its run and preview, dispatched to `binlog` (import the segments) or `rows`
//! (insert the Parquet files); choosing, naming, checking and creating the targets is in `target`.

mod binlog;
mod capability;
#[cfg(test)]
pub(crate) mod fixtures;
mod import;
mod import_task;
mod refusals;
mod rows;
mod rows_import;
mod rows_insert;
mod target;

use crate::format::meta::{self, BackupInfo};
use crate::format::rows::{FORMAT as ROWS_FORMAT, RowsMeta};
use crate::plan::{Keys, OnConflict, RestoreStep};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::steps::ctx::{Result, StepCtx, StepError, Units, fail};
use crate::steps::feed::Unit;
use crate::steps::preview::{Look, Seen, StepPreview};
use crate::storage::Storage;
use refusals::{alias_refusals, name_refusals, refusals};
use target::{Mode, aliases, exists, key_partitions};
pub use target::{Target, selected};

pub async fn run(ctx: &StepCtx, step: &RestoreStep) -> Result<String> {
    let from = ctx.res.storage(&step.from.bucket).await?;
    let earlier = pipelined(ctx, step, from.as_ref()).await?;
    let Some(backup) = crate::format::read_meta(from.as_ref(), &step.from).await? else {
        return fail(no_backup(step, &ctx.step));
    };
    let rows = match backup.format.as_str() {
        ROWS_FORMAT => Some(crate::format::read_rows_meta(from.as_ref(), &step.from).await?),
        _ => None,
    };
    let whole = Unit {
        at: step.from.clone(),
        backup,
        rows,
        partial: false,
    };
    let units = restore(ctx, step, from.as_ref(), &whole, &earlier, true).await?;
    let summary = units.done.join("; ");
    units.finish(summary)
}

/// Restores each collection a running step publishes at `from` as it comes (a binlog backup
/// read where the instance imports from; a staged one waits for the whole pass), and inserts
/// the files of a rows backup as they are written. Returns the collections that failed, with
/// why: the whole pass reports them without trying them again.
async fn pipelined(
    ctx: &StepCtx,
    step: &RestoreStep,
    from: &dyn Storage,
) -> Result<BTreeMap<String, String>> {
    let failed = std::sync::Mutex::new(BTreeMap::new());
    let staged = !matches!(binlog::target_ok(&ctx.res, step), Ok(None));
    // The units of one collection are restored one at a time; each lists every file so far, so
    // one that was overtaken by a newer unit before it started has nothing left to do. The lock
    // holds the files earlier partial units restored: a partial unit is checked and inserted
    // without them, not read again file by file.
    type Restored = Arc<tokio::sync::Mutex<std::collections::BTreeSet<String>>>;
    let latest = std::sync::Mutex::new(BTreeMap::<String, (usize, Restored)>::new());
    ctx.pipelined(&step.from, |unit: Unit| {
        let (failed, latest) = (&failed, &latest);
        let name = unit
            .backup
            .collection_backups
            .first()
            .map(|c| format!("{}.{}", c.db_name, c.collection_name))
            .unwrap_or_default();
        let (seq, lock) = {
            let mut l = latest.lock().expect("units lock");
            let e = l.entry(name.clone()).or_default();
            e.0 += 1;
            (e.0, e.1.clone())
        };
        async move {
            let usable = match unit.backup.format.as_str() {
                "" => !staged,
                ROWS_FORMAT => unit.rows.is_some(),
                _ => false,
            };
            if !usable || selected(step, &unit.backup).is_empty() {
                return Ok(());
            }
            let mut restored = lock.lock().await;
            let overtaken = latest.lock().expect("units lock")[&name].0 > seq;
            let failed_before = selected(step, &unit.backup).iter().any(|t| {
                failed
                    .lock()
                    .expect("failures lock")
                    .contains_key(&t.unit())
            });
            if (unit.partial && overtaken) || failed_before {
                return Ok(());
            }
            let mut unit = unit;
            if unit.partial {
                for p in partitions(&mut unit) {
                    p.files.retain(|f| !restored.contains(&f.key));
                }
            }
            let failures = match restore(ctx, step, from, &unit, &BTreeMap::new(), false).await {
                Ok(units) if units.failed.is_empty() && unit.partial => {
                    for p in partitions(&mut unit) {
                        restored.extend(p.files.iter().map(|f| f.key.clone()));
                    }
                    Vec::new()
                }
                Ok(units) => units.failed,
                Err(e @ (StepError::Interrupted | StepError::Checkpoint(_))) => return Err(e),
                Err(e) => selected(step, &unit.backup)
                    .iter()
                    .map(|t| (t.unit(), e.to_string()))
                    .collect(),
            };
            failed.lock().expect("failures lock").extend(failures);
            Ok(())
        }
    })
    .await?;
    Ok(failed.into_inner().expect("failures lock"))
}

/// The partitions of a rows unit's files.
fn partitions(unit: &mut Unit) -> impl Iterator<Item = &mut crate::format::rows::RowsPartition> {
    let rows = unit.rows.iter_mut().flat_map(|r| &mut r.collections);
    rows.flat_map(|c| &mut c.partitions)
}

/// Restores the collections of `unit` the step selects, each on its own: a refused or failed
/// one fails alone (as do those in `earlier`, which failed in the pipelined pass). Of a partial
/// unit, only the files it lists are inserted. `whole`: the whole backup, not one collection
/// of a running step: the step's names are checked against all it holds.
async fn restore(
    ctx: &StepCtx,
    step: &RestoreStep,
    from: &dyn Storage,
    unit: &Unit,
    earlier: &BTreeMap<String, String>,
    whole: bool,
) -> Result<Units<String>> {
    let backup = &unit.backup;
    let mode = mode(backup, step)?;
    if mode == Mode::Binlog {
        binlog::target_ok(&ctx.res, step)?;
    }
    let client = ctx.res.milvus(&step.instance).await?;
    if mode == Mode::Binlog {
        binlog::server_ok(&client, step)?;
    }
    let names = if whole {
        name_refusals(step, &ctx.step, backup)
    } else {
        Vec::new()
    };
    if !names.is_empty() {
        return fail(names.join("; "));
    }
    let targets = selected(step, backup);
    if targets.is_empty() {
        return fail(none_selected(step));
    }
    for t in &targets {
        let from = format!("{}.{}", target::source_db(t.info), t.info.collection_name);
        ctx.unit_source(&t.unit(), &from)?;
    }
    let source = ctx.res.plan.backup_source(&step.from);
    // Everything the preview refuses is refused here, before the collection is created; a
    // refused collection fails alone, the others go on.
    let damage = damaged(from, step, backup, unit.rows.as_ref()).await?;
    let mut refused = earlier.clone();
    for t in &targets {
        let create = format!("{}/create", t.key());
        if refused.contains_key(&t.unit())
            || ctx.done::<String>(&t.key())?.is_some()
            || ctx.state(&create)?.is_some()
        {
            continue;
        }
        let exists = exists(&client, t).await?;
        let mut why = refusals(&client, step, &ctx.step, mode, t, exists, source.as_deref());
        why.extend(
            damage
                .get(&(t.info.db_name.clone(), t.info.collection_name.clone()))
                .cloned(),
        );
        why.extend(alias_refusals(&client, step, &ctx.step, t).await?);
        if let Some(rows) = &unit.rows
            && let Err(e) =
                rows_import::way(&ctx.res, step, Some(&client), t.info, rows.importable())
        {
            why.push(e);
        }
        if !why.is_empty() {
            refused.insert(t.unit(), why.join("; "));
        }
    }
    match mode {
        Mode::Binlog => binlog::run(ctx, step, &client, &targets, &refused).await,
        Mode::Rows => {
            let Some(files) = &unit.rows else {
                return fail(format!("the rows meta of `{}` is missing", step.from));
            };
            rows::run(ctx, step, &client, &targets, &refused, files, unit.partial).await
        }
    }
}

pub async fn preview(look: &mut Look<'_>, step: &RestoreStep, p: &mut StepPreview) {
    let existing = match look.res.storage(&step.from.bucket).await {
        Ok(s) => crate::format::read_meta(s.as_ref(), &step.from)
            .await
            .map_err(StepError::from),
        Err(e) => Err(e),
    };
    let written = look.written(&step.from);
    if let Some(line) = written.iter().find_map(|(_, w)| w.blocked_line()) {
        return p.changes.push(line);
    }
    // A restore reads one backup: only a step writing exactly there provides it.
    let upstream = written
        .iter()
        .find(|(at, _)| *at == step.from)
        .map(|(_, w)| w);
    let backup = match (existing, upstream) {
        (Ok(Some(b)), _) => b,
        (_, Some(up)) => {
            p.estimated = true;
            p.counts = up.counts.clone();
            up.backup.clone()
        }
        (Ok(None), None) => return p.conflict(no_backup(step, &p.id)),
        (Err(e), None) => return p.conflict(e),
    };
    let mode = match mode(&backup, step) {
        Ok(m) => m,
        Err(e) => return p.conflict(e),
    };
    if mode == Mode::Binlog {
        match binlog::target_ok(look.res, step) {
            Ok(Some(stage)) => p.changes.push(format!(
                "~ stage the backup into `{stage}` (the instance's own bucket) for import, removed afterwards"
            )),
            Ok(None) => {}
            Err(e) => p.conflict(e),
        }
    }
    let client = match look.res.milvus(&step.instance).await {
        Ok(c) => Some(c),
        Err(e) => {
            p.conflict(e);
            None
        }
    };
    if let Some(c) = &client
        && mode == Mode::Binlog
    {
        match binlog::server_ok(c, step) {
            Err(e) => p.conflict(e),
            Ok(b) if !b.run_here => p.changes.push(format!(
                "~ checked exactly after the import (count and key digest of every partition \
                 against the backup's binlogs; a mismatch drops the collection): binlog mode \
                 has not been run against Milvus {} here",
                b.name()
            )),
            Ok(_) => {}
        }
    }
    for why in name_refusals(step, &p.id, &backup) {
        p.conflict(why);
    }
    let targets = selected(step, &backup);
    if targets.is_empty() && p.conflicts.is_empty() {
        p.conflict(none_selected(step));
    }
    let source = look.res.plan.backup_source(&step.from);
    // A backup that exists is checked against its meta, as apply checks it.
    let mut damage = BTreeMap::new();
    // A backup still to be written is written in the import layout.
    let mut importable = true;
    if !p.estimated {
        let checked = async {
            let s = look.res.storage(&step.from.bucket).await?;
            let rows = match mode {
                Mode::Rows => Some(crate::format::read_rows_meta(s.as_ref(), &step.from).await?),
                Mode::Binlog => None,
            };
            let damage = damaged(s.as_ref(), step, &backup, rows.as_ref()).await?;
            Ok::<_, StepError>((damage, rows.is_none_or(|r| r.importable())))
        };
        match checked.await {
            Ok((d, i)) => (damage, importable) = (d, i),
            Err(e) => p.conflict(e),
        }
    }
    for t in &targets {
        let info = t.info;
        if !p.estimated {
            p.counts.collections += 1;
            p.counts.partitions += info.partition_backups.len() as u64;
            p.counts.segments += info
                .partition_backups
                .iter()
                .map(|x| x.segment_backups.len() as u64)
                .sum::<u64>();
            p.counts.rows += info.planrun_row_count.unwrap_or(0);
        }
        let what = format!(
            "{}.{} from `{}`: {} partitions, {} rows, {} indexes{}",
            t.db,
            t.name,
            info.collection_name,
            info.partition_backups.len(),
            info.planrun_row_count
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            info.index_infos.len(),
            if t.loads(step) {
                ", load"
            } else {
                ", left released (as its source)"
            }
        );
        let Some(client) = &client else {
            p.changes.push(format!("+ {what}"));
            continue;
        };
        // A collection this run already created or started is its own, as apply sees it.
        let create = format!("{}/{}/create", p.id, t.key());
        if look.recorded(&format!("{}/{}", p.id, t.key())) || look.recorded(&create) {
            p.changes.push(format!("~ {what} (resumed)"));
            continue;
        }
        let exists = match exists(client, t).await {
            Ok(e) => e,
            Err(e) => {
                p.conflict(e);
                continue;
            }
        };
        let rows = info.planrun_row_count;
        p.seen
            .push(Seen::target(&step.instance, &t.db, &t.name, exists, rows));
        let mut refused = refusals(client, step, &p.id, mode, t, exists, source.as_deref());
        refused.extend(
            damage
                .get(&(info.db_name.clone(), info.collection_name.clone()))
                .cloned(),
        );
        match alias_refusals(client, step, &p.id, t).await {
            Ok(a) => refused.extend(a),
            Err(e) => p.conflict(e),
        }
        if mode == Mode::Rows && info.schema.auto_id() {
            p.changes.push(match step.keys {
                Keys::Keep => format!(
                    "  ~ `{}` has auto_id: rows mode keeps its primary keys (auto_id = \
                     \"keep_keys\"), so `{}` is created with auto_id off; applications that insert \
                     without keys must send them after cutover (auto_id = \"new_keys\" keeps \
                     auto_id instead)",
                    info.collection_name, t.name
                ),
                Keys::New => format!(
                    "  ~ `{}` has auto_id: `{}` keeps it and `{}` assigns new primary keys \
                     (auto_id = \"new_keys\"); applications that stored ids must map them, and \
                     verify compares rows by content",
                    info.collection_name, t.name, step.instance
                ),
            });
        }
        if mode == Mode::Rows {
            match rows_import::said(look.res, step, client, t, importable) {
                Ok(line) => p.changes.push(line),
                Err(e) => refused.push(e),
            }
        }
        if mode == Mode::Binlog && step.keys == Keys::New && info.schema.auto_id() {
            p.changes.push(format!(
                "  ~ `{}`: auto_id = \"new_keys\" does not apply to a binlog backup, which \
                 keeps both its keys and auto_id",
                info.collection_name
            ));
        }
        if let Some(n) = key_partitions(info) {
            p.changes.push(format!(
                "  ~ `{}` has a partition key: `{}` asks for {n} partitions, as its source{}",
                info.collection_name,
                t.name,
                if client.is_lite() {
                    format!("; Milvus Lite (`{}`) makes its own number", step.instance)
                } else {
                    String::new()
                }
            ));
        }
        let names = aliases(step, t);
        if !names.is_empty() && refused.is_empty() {
            p.changes
                .push(format!("  + aliases {} → {}", names.join(", "), t.name));
        }
        let mark = match (exists, step.on_conflict) {
            _ if !refused.is_empty() => "!",
            (false, _) => "+",
            (true, OnConflict::Drop) => "-/+",
            (true, _) => "=",
        };
        p.changes.push(match (exists, step.on_conflict) {
            (true, OnConflict::Skip) if refused.is_empty() => {
                format!("= {} exists: skipped (on_conflict = \"skip\")", t.name)
            }
            (true, OnConflict::Drop) if refused.is_empty() => {
                format!("{mark} {what} (the existing collection is dropped first)")
            }
            _ => format!("{mark} {what}"),
        });
        p.conflicts.extend(refused);
    }
}

/// Every file of the backup checked against its meta (present, size, MD5), by collection:
/// a damaged collection is refused before it is created, the others are restored.
async fn damaged(
    store: &dyn crate::storage::Storage,
    step: &RestoreStep,
    backup: &BackupInfo,
    rows: Option<&RowsMeta>,
) -> Result<BTreeMap<(String, String), String>> {
    let damage = crate::format::check::verify_backup(store, &step.from, backup, rows).await?;
    Ok(crate::format::check::by_collection(&damage)
        .into_iter()
        .map(|(k, ds)| {
            let shown: Vec<String> = ds.iter().take(3).map(|d| d.to_string()).collect();
            let more = if ds.len() > 3 {
                format!(" (and {} more files)", ds.len() - 3)
            } else {
                String::new()
            };
            (k, format!("{}{more}", shown.join("; ")))
        })
        .collect())
}

fn no_backup(step: &RestoreStep, id: &str) -> String {
    format!(
        "no backup at `{}` (`{}` not found) and no earlier step writes one; check `from` in step `{id}`",
        step.from,
        meta::BACKUP_META,
    )
}

fn none_selected(step: &RestoreStep) -> String {
    match &step.collections {
        Some(c) => format!(
            "the backup at `{}` holds none of the collections {}; check `collections` in the \
             restore step",
            step.from,
            c.iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        // A backup step whose patterns matched nothing writes (or would write) no collection.
        None => format!(
            "the backup at `{}` holds no collection: the backup step's `collections` matched \
             none on its instance",
            step.from
        ),
    }
}

fn mode(backup: &BackupInfo, step: &RestoreStep) -> Result<Mode> {
    match backup.format.as_str() {
        "" => {
            let unknown: Vec<String> = backup
                .collection_backups
                .iter()
                .filter_map(|c| c.unknown_layout())
                .collect();
            if !unknown.is_empty() {
                return fail(format!(
                    "the backup at `{}` was made from a newer Milvus: {}",
                    step.from,
                    unknown.join("; ")
                ));
            }
            Ok(Mode::Binlog)
        }
        ROWS_FORMAT => Ok(Mode::Rows),
        other => fail(format!(
            "the backup at `{}` has format `{other}`, which this version of planrun cannot restore",
            step.from
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::meta::SegmentBackupInfo;
    use fixtures::{backup, coll, step};

    #[test]
    fn the_backup_format_decides_the_restore_mode() {
        let mut b = backup(vec![coll("", "a", &["_default"])]);
        assert_eq!(mode(&b, &step()).unwrap(), Mode::Binlog);
        b.format = ROWS_FORMAT.into();
        assert_eq!(mode(&b, &step()).unwrap(), Mode::Rows);
        b.format = "planrun-rows-v9".into();
        assert_eq!(
            mode(&b, &step()).unwrap_err().to_string(),
            "the backup at `bucket_b:backup/b1` has format `planrun-rows-v9`, which this version \
             of planrun cannot restore"
        );
    }

    #[test]
    fn a_binlog_backup_in_storage_format_v2_is_refused() {
        let mut c = coll("", "a", &["_default"]);
        c.partition_backups[0]
            .segment_backups
            .push(SegmentBackupInfo {
                segment_id: 7,
                storage_version: 2,
                ..Default::default()
            });
        let e = mode(&backup(vec![c]), &step()).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "the backup at `bucket_b:backup/b1` was made from a newer Milvus: segment 7 of \
                 `a` is in storage format v2"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_restore_selecting_nothing_says_which_names_it_asked_for() {
        let mut s = step();
        assert_eq!(
            none_selected(&s),
            "the backup at `bucket_b:backup/b1` holds no collection: the backup step's \
             `collections` matched none on its instance"
        );
        s.collections = Some(vec!["a".into(), "shop.*".into()]);
        assert_eq!(
            none_selected(&s),
            "the backup at `bucket_b:backup/b1` holds none of the collections `a`, `shop.*`; \
             check `collections` in the restore step"
        );
    }

    #[test]
    fn a_missing_backup_names_its_meta_file_and_the_step() {
        assert_eq!(
            no_backup(&step(), "restore"),
            format!(
                "no backup at `bucket_b:backup/b1` (`{}` not found) and no earlier step writes \
                 one; check `from` in step `restore`",
                meta::BACKUP_META
            )
        );
    }

    #[test]
    fn the_files_of_a_rows_unit_are_reached_through_its_partitions() {
        use crate::format::rows::{RowsCollection, RowsFile, RowsPartition};
        let part = |name: &str, keys: &[&str]| RowsPartition {
            name: name.into(),
            files: keys.iter().map(|k| RowsFile::named(k)).collect(),
        };
        let mut unit = Unit {
            at: step().from,
            backup: backup(vec![]),
            rows: Some(RowsMeta {
                collections: vec![RowsCollection {
                    partitions: vec![part("p1", &["f1", "f2"]), part("p2", &["f3"])],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            partial: true,
        };
        let keys: Vec<String> = partitions(&mut unit)
            .flat_map(|p| p.files.iter().map(|f| f.key.clone()))
            .collect();
        assert_eq!(keys, ["f1", "f2", "f3"]);
    }
}
