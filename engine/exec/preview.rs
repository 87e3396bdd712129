//! `plan`: what apply would do, found by looking and never by touching.
//!
//! Read-only by construction: only list, head, get, describe, show and count calls are made, and
//! the state dir is read through a private snapshot copy. The JSON shape is versioned
//! (`format_version`) and documented in docs/plan-output.md.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use serde::Serialize;

use crate::checkpoint::{RunRecord, Store, Tasks};
use crate::exec::report::human_bytes;
use crate::plan::{
    AliasStep, BackupStep, Compiled, CopyStep, Location, Mode, OnConflict, RestoreStep, StepKind,
    VerifyStep,
};
use crate::steps::alias::Change;
use crate::steps::copy::{dir_prefix, listing, present};
use crate::steps::meta::{self, BackupInfo};
use crate::steps::restore::{read_meta, selected};
use crate::steps::{Resources, join_key};

pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize)]
pub struct Preview {
    pub format_version: u32,
    pub plan: String,
    pub path: String,
    /// The unfinished run that apply would resume.
    pub resumes: Option<RunSummary>,
    pub steps: Vec<StepPreview>,
    pub summary: Summary,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub id: String,
    pub tasks_done: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub steps_to_run: usize,
    pub steps_done: usize,
    pub conflicts: usize,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct StepPreview {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `run`, `resume` (partly done in the unfinished run), or `done`.
    pub action: String,
    pub description: String,
    pub counts: Counts,
    /// One line per collection or change.
    pub changes: Vec<String>,
    pub conflicts: Vec<String>,
    /// Estimates taken from an earlier step because the data does not exist yet.
    pub estimated: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub collections: u64,
    pub partitions: u64,
    pub segments: u64,
    pub rows: u64,
    pub objects: u64,
    pub bytes: u64,
}

/// What apply would do with this plan. Never fails on an unreachable server or a missing bucket:
/// those are conflicts in the preview.
/// `state`: the plan's state dir, opened read-only ([`Store::open_snapshot`]) by the caller, who
/// may have read it already (apply checks for a changed plan first); `None` when it has none.
pub async fn preview(
    compiled: &Compiled,
    state: Option<&Store>,
) -> Result<Preview, crate::checkpoint::CheckpointError> {
    let plan = Arc::new(compiled.plan.clone());
    let res = Resources::new(plan.clone());
    let file = crate::exec::run::plan_file(&plan.path);
    let mut finished = None;
    let (run, tasks): (Option<RunRecord>, Option<Tasks>) = match state {
        Some(store) => match store.unfinished_run(&file)? {
            Some(r) if r.fingerprint == plan.fingerprint() => {
                let t = store.tasks(&r.id)?;
                (Some(r), Some(t))
            }
            Some(_) => (None, None),
            None => {
                finished = store.last_done_run(&file, &plan.fingerprint())?;
                (None, None)
            }
        },
        None => (None, None),
    };
    let mut out = Preview {
        format_version: FORMAT_VERSION,
        plan: plan.name.clone(),
        path: plan.path.display().to_string(),
        ..Default::default()
    };
    if let (Some(r), Some(t)) = (&run, &tasks) {
        out.resumes = Some(RunSummary {
            id: r.id.clone(),
            tasks_done: t.count("")?.0,
        });
    }
    // What each location will hold once earlier steps ran: backup contents by location.
    let mut produced: BTreeMap<String, (BackupInfo, Counts)> = BTreeMap::new();
    for id in compiled.dag.order() {
        let step = plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .expect("dag ids are steps");
        let mut p = StepPreview {
            id: id.to_string(),
            kind: step.kind.type_name().to_string(),
            action: "run".into(),
            ..Default::default()
        };
        if let Some(done) = &finished {
            // Applied completely before: apply would do nothing, so there is nothing to inspect.
            p.action = "done".into();
            p.description = format!(
                "{} (done by run {})",
                plan.describe_step(step),
                crate::exec::report::short(&done.id)
            );
            out.summary.steps_done += 1;
            out.steps.push(p);
            continue;
        }
        if let Some(t) = &tasks {
            if t.done::<String>(&format!("{id}/@done"))?.is_some() {
                p.action = "done".into();
            } else if t.count(&format!("{id}/"))?.1 > 0 {
                // Any record, an intent included: the target may exist because this run made it.
                p.action = "resume".into();
            }
        }
        // A missing or unreachable bucket stops a step before it does anything: say so first.
        let mut buckets: Vec<&str> = step
            .kind
            .reads()
            .into_iter()
            .chain(step.kind.writes())
            .map(|l| l.bucket.as_str())
            .collect();
        buckets.sort();
        buckets.dedup();
        for b in buckets {
            if let Some(problem) = bucket_problem(&res, b).await {
                p.conflicts.push(problem);
            }
        }
        match &step.kind {
            StepKind::Backup(b) => backup(&res, b, &mut p, &mut produced, run.is_some()).await,
            StepKind::Copy(c) => copy(&res, c, &mut p, &mut produced).await,
            StepKind::Restore(r) => restore(&res, r, &mut p, &produced).await,
            StepKind::Verify(v) => verify(&res, v, &mut p),
            StepKind::Alias(a) => alias(&res, a, &mut p).await,
        }
        // One cause seen by two checks (a missing bucket, also met by the existing-backup
        // check) is one conflict.
        let mut seen = std::collections::HashSet::new();
        p.conflicts.retain(|c| seen.insert(c.clone()));
        out.summary.conflicts += p.conflicts.len();
        if p.action == "done" {
            out.summary.steps_done += 1;
        } else {
            out.summary.steps_to_run += 1;
        }
        out.steps.push(p);
    }
    Ok(out)
}

async fn bucket_problem(res: &Resources, id: &str) -> Option<String> {
    match res.storage(id).await {
        Err(e) => Some(e.to_string()),
        Ok(s) => s.check().await.err().map(|e| e.to_string()),
    }
}

async fn backup(
    res: &Resources,
    step: &BackupStep,
    p: &mut StepPreview,
    produced: &mut BTreeMap<String, (BackupInfo, Counts)>,
    resuming: bool,
) {
    p.description = format!(
        "back up {:?} from `{}` into {}",
        step.collections, step.instance, step.to
    );
    let inst = &res.plan.instances[&step.instance];
    let client = match res.milvus(&step.instance).await {
        Ok(c) => c,
        Err(e) => return p.conflicts.push(e.to_string()),
    };
    if let Ok(dst) = res.storage(&step.to.bucket).await {
        match dst.head(&join_key(&step.to.path, meta::BACKUP_META)).await {
            Ok(Some(_)) if !resuming => p.conflicts.push(format!(
                "a backup already exists at `{}`: apply would stop",
                step.to
            )),
            Err(e) => p.conflicts.push(e.to_string()),
            _ => {}
        }
    }
    if step.mode == Mode::Rows {
        return rows_backup(&client, step, p, produced).await;
    }
    let Some(data) = &inst.data else {
        return p
            .conflicts
            .push(format!("instance `{}` has no `data`", step.instance));
    };
    let src = match res.storage(&data.bucket).await {
        Ok(s) => s,
        Err(e) => return p.conflicts.push(e.to_string()),
    };
    let mut info = BackupInfo::default();
    // The same selection the step makes, a missing literal name included.
    let selected = match crate::steps::backup::resolve(&client, &step.collections).await {
        Ok(s) => s,
        Err(e) => return p.conflicts.push(e.to_string()),
    };
    for (db, name) in selected {
        let c = client.with_database(&db);
        let parts = c.show_partitions(&name).await.unwrap_or_default();
        let segs = c
            .get_persistent_segment_info(&name)
            .await
            .unwrap_or_default();
        let desc = c.describe_collection(&name).await.ok();
        let rows = match c.query_count(&name, &[], "").await {
            Ok(n) => n,
            Err(_) => segs.iter().map(|s| s.num_rows as u64).sum(),
        };
        let (mut objects, mut bytes) = (0, 0);
        if let Some(d) = &desc {
            for s in &segs {
                for kind in ["insert_log", "delta_log"] {
                    let prefix = join_key(
                        &data.path,
                        &format!("{kind}/{}/{}/{}/", d.collection_id, s.partition_id, s.id),
                    );
                    if let Ok(list) = src.list(&prefix).try_collect::<Vec<_>>().await {
                        objects += list.len() as u64;
                        bytes += list.iter().map(|o| o.size).sum::<u64>();
                    }
                }
            }
        }
        p.counts.collections += 1;
        p.counts.partitions += parts.len() as u64;
        p.counts.segments += segs.len() as u64;
        p.counts.rows += rows;
        p.counts.objects += objects;
        p.counts.bytes += bytes;
        p.changes.push(format!(
            "+ {db}.{name}: {} partitions, {} sealed segments, {rows} rows, {objects} binlogs ({}); growing rows are flushed first",
            parts.len(),
            segs.len(),
            human_bytes(bytes)
        ));
        info.collection_backups.push(meta::CollectionBackupInfo {
            db_name: db.clone(),
            collection_name: name.clone(),
            partition_backups: parts
                .iter()
                .map(|pt| meta::PartitionBackupInfo {
                    partition_name: pt.name.clone(),
                    ..Default::default()
                })
                .collect(),
            index_infos: c
                .describe_index(&name)
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|i| meta::IndexInfo {
                    field_name: i.field_name,
                    index_name: i.index_name,
                    ..Default::default()
                })
                .collect(),
            planrun_row_count: Some(rows),
            ..Default::default()
        });
    }
    produced.insert(step.to.to_string(), (info, p.counts.clone()));
}

async fn copy(
    res: &Resources,
    step: &CopyStep,
    p: &mut StepPreview,
    produced: &mut BTreeMap<String, (BackupInfo, Counts)>,
) {
    p.description = format!(
        "copy {} → {}{}",
        step.from,
        step.to,
        server_side_note(res, &step.from, &step.to)
    );
    let upstream = produced.get(&step.from.to_string()).cloned();
    let listed = async {
        let src = res.storage(&step.from.bucket).await?;
        let dst = res.storage(&step.to.bucket).await?;
        let prefix = dir_prefix(&step.from.path);
        let objects: Vec<_> = src.list(&prefix).try_collect().await?;
        let existing = listing(dst.as_ref(), &step.to.path).await?;
        let mut there = 0u64;
        for o in &objects {
            if let Some(have) = existing.get(&o.key[prefix.len()..])
                && present(src.as_ref(), o, dst.as_ref(), have).await?
            {
                there += 1;
            }
        }
        Ok::<_, crate::steps::StepError>((objects, there))
    }
    .await;
    match (listed, upstream) {
        (Ok((objects, present)), up) if !objects.is_empty() || up.is_none() => {
            p.counts.objects = objects.len() as u64;
            p.counts.bytes = objects.iter().map(|o| o.size).sum();
            p.changes.push(format!(
                "+ {} objects ({}), {present} already present at the destination",
                objects.len(),
                human_bytes(p.counts.bytes)
            ));
            if objects.is_empty() {
                p.conflicts.push(format!(
                    "`{}` is empty and no earlier step writes it",
                    step.from
                ));
            }
            if let Some(up) = up {
                produced.insert(step.to.to_string(), up);
            }
        }
        (_, Some((info, counts))) => {
            p.estimated = true;
            // The binlogs plus the backup's metadata files.
            p.counts.objects = counts.objects + meta::META_FILES.len() as u64;
            p.counts.bytes = counts.bytes;
            p.changes.push(format!(
                "+ about {} objects ({}) that earlier steps will write",
                p.counts.objects,
                human_bytes(counts.bytes)
            ));
            produced.insert(step.to.to_string(), (info, counts));
        }
        (Err(e), None) => p.conflicts.push(e.to_string()),
        (Ok(_), None) => unreachable!("the first arm takes every listing without an upstream"),
    }
}

fn server_side_note(res: &Resources, a: &Location, b: &Location) -> &'static str {
    use crate::plan::BucketKind;
    match (
        &res.plan.buckets[&a.bucket].kind,
        &res.plan.buckets[&b.bucket].kind,
    ) {
        (BucketKind::S3 { endpoint: e1, .. }, BucketKind::S3 { endpoint: e2, .. }) if e1 == e2 => {
            " (server-side)"
        }
        _ => " (streamed through planrun)",
    }
}

async fn restore(
    res: &Resources,
    step: &RestoreStep,
    p: &mut StepPreview,
    produced: &BTreeMap<String, (BackupInfo, Counts)>,
) {
    p.description = format!("restore {} into `{}`", step.from, step.instance);
    let existing = match res.storage(&step.from.bucket).await {
        Ok(s) => read_meta(&s, &step.from).await,
        Err(e) => Err(e),
    };
    let backup = match (existing, produced.get(&step.from.to_string())) {
        (Ok(Some(b)), _) => b,
        (_, Some((b, counts))) => {
            p.estimated = true;
            p.counts = counts.clone();
            b.clone()
        }
        (Ok(None), None) => {
            return p.conflicts.push(format!(
                "no backup at `{}` and no earlier step writes one",
                step.from
            ));
        }
        (Err(e), None) => return p.conflicts.push(e.to_string()),
    };
    let inst = &res.plan.instances[&step.instance];
    if backup.format == crate::steps::rows::FORMAT {
        // Rows are inserted through the API: no bucket access needed.
    } else if inst.data.is_none() {
        p.conflicts.push(format!(
            "instance `{}` has no `data`; a binlog restore needs it",
            step.instance
        ));
    } else if let Some(d) = &inst.data
        && !res.same_bucket(&d.bucket, &step.from.bucket)
    {
        p.changes.push(format!(
                "~ stage the backup into `{}` (the instance's own bucket) for import, removed afterwards",
                d.bucket
            ));
    }
    let client = match res.milvus(&step.instance).await {
        Ok(c) => Some(c),
        Err(e) => {
            p.conflicts.push(e.to_string());
            None
        }
    };
    for (info, target) in selected(step, &backup) {
        let db = step.database.clone().unwrap_or_else(|| {
            if info.db_name.is_empty() {
                "default".into()
            } else {
                info.db_name.clone()
            }
        });
        let segs: u64 = info
            .partition_backups
            .iter()
            .map(|x| x.segment_backups.len() as u64)
            .sum();
        if !p.estimated {
            p.counts.collections += 1;
            p.counts.partitions += info.partition_backups.len() as u64;
            p.counts.segments += segs;
            p.counts.rows += info.planrun_row_count.unwrap_or(0);
        }
        let exists = match &client {
            Some(c) => c
                .with_database(&db)
                .has_collection(&target)
                .await
                .unwrap_or(false),
            None => false,
        };
        let what = format!(
            "{db}.{target} from `{}`: {} partitions, {} rows, {} indexes{}",
            info.collection_name,
            info.partition_backups.len(),
            info.planrun_row_count
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            info.index_infos.len(),
            if step.load { ", load" } else { "" }
        );
        if exists && p.action != "done" && p.action != "resume" {
            match step.on_conflict {
                OnConflict::Fail => {
                    p.changes.push(format!("! {what}"));
                    p.conflicts.push(format!(
                        "collection `{target}` already exists on `{}`: apply would stop (on_conflict = \"fail\")",
                        step.instance
                    ));
                }
                OnConflict::Skip => p.changes.push(format!(
                    "= {target} exists: skipped (on_conflict = \"skip\")"
                )),
                OnConflict::Drop => p.changes.push(format!(
                    "-/+ {what} (the existing collection is dropped first)"
                )),
            }
        } else {
            p.changes.push(format!("+ {what}"));
        }
    }
}

/// A rows-mode backup: what it would read, by counting (no bucket access needed).
async fn rows_backup(
    client: &crate::milvus::MilvusClient,
    step: &BackupStep,
    p: &mut StepPreview,
    produced: &mut BTreeMap<String, (BackupInfo, Counts)>,
) {
    let mut info = BackupInfo {
        format: crate::steps::rows::FORMAT.to_string(),
        ..Default::default()
    };
    // The same selection the step makes, a missing literal name included.
    let selected = match crate::steps::backup::resolve(client, &step.collections).await {
        Ok(s) => s,
        Err(e) => return p.conflicts.push(e.to_string()),
    };
    for (db, name) in selected {
        let c = client.with_database(&db);
        let parts = c.show_partitions(&name).await.unwrap_or_default();
        let rows = c.query_count(&name, &[], "").await.ok();
        p.counts.collections += 1;
        p.counts.partitions += parts.len() as u64;
        p.counts.rows += rows.unwrap_or(0);
        p.changes.push(format!(
            "+ {db}.{name}: {} partitions, {} rows read by primary key into Parquet files",
            parts.len(),
            rows.map_or("?".to_string(), |n| n.to_string())
        ));
        info.collection_backups.push(meta::CollectionBackupInfo {
            db_name: db.clone(),
            collection_name: name.clone(),
            partition_backups: parts
                .iter()
                .map(|pt| meta::PartitionBackupInfo {
                    partition_name: pt.name.clone(),
                    ..Default::default()
                })
                .collect(),
            planrun_row_count: rows,
            ..Default::default()
        });
    }
    produced.insert(step.to.to_string(), (info, p.counts.clone()));
}

/// A verify step only reads; the preview says what it will compare.
fn verify(res: &Resources, step: &VerifyStep, p: &mut StepPreview) {
    match step {
        VerifyStep::Pair { source, target } => {
            p.description = format!(
                "verify `{}` on `{}` against `{}` on `{}`",
                res.plan.show(&target.collection),
                target.instance,
                res.plan.show(&source.collection),
                source.instance
            );
            p.counts.collections = 1;
        }
        VerifyStep::Restore(r) => {
            p.description = format!("verify every collection restored by `{r}` against its source")
        }
    }
    p.changes.push(
        "? compare schema, partitions, row counts per partition, indexes and a digest of every row"
            .into(),
    );
}

async fn alias(res: &Resources, step: &AliasStep, p: &mut StepPreview) {
    let db = crate::steps::alias::database(&res.plan, step);
    p.description = format!(
        "point alias `{}` at `{}` on `{}`",
        step.alias, step.collection, step.instance
    );
    let client = match res.milvus(&step.instance).await {
        Ok(c) => c.with_database(&db),
        Err(e) => return p.conflicts.push(e.to_string()),
    };
    match crate::steps::alias::change(&client, step).await {
        Ok(Change::Create) => p.changes.push(format!(
            "+ alias `{}`: (none) → `{}`",
            step.alias, step.collection
        )),
        Ok(Change::Move(old)) => p.changes.push(format!(
            "~ alias `{}`: `{old}` → `{}`",
            step.alias, step.collection
        )),
        Ok(Change::Unchanged) => p.changes.push(format!(
            "= alias `{}` already points at `{}`",
            step.alias, step.collection
        )),
        Err(e) => p.conflicts.push(e.to_string()),
    }
}

/// The preview for people: one block per step, then a summary line.
pub fn render(p: &Preview) -> String {
    let mut s = String::new();
    if let Some(r) = &p.resumes {
        s += &format!(
            "An unfinished run {} of this plan exists: apply resumes it ({} tasks already done).\n\n",
            crate::exec::report::short(&r.id),
            r.tasks_done
        );
    }
    for st in &p.steps {
        let mark = match st.action.as_str() {
            "done" => "=",
            "resume" => "~",
            _ => "+",
        };
        s += &format!("{mark} {} ({}): {}\n", st.id, st.kind, st.description);
        if st.action == "done" && p.resumes.is_some() {
            s += "    already done in the unfinished run\n";
        }
        for c in &st.changes {
            s += &format!("    {c}\n");
        }
        let c = &st.counts;
        let parts: Vec<String> = [
            (c.collections, "collections"),
            (c.partitions, "partitions"),
            (c.segments, "segments"),
            (c.rows, "rows"),
            (c.objects, "objects"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .chain((c.bytes > 0).then(|| human_bytes(c.bytes)))
        .collect();
        if !parts.is_empty() {
            let approx = if st.estimated { "about " } else { "" };
            s += &format!("    {approx}{}\n", parts.join(", "));
        }
        for c in &st.conflicts {
            s += &format!("    ! {c}\n");
        }
    }
    s += &format!(
        "\nPlan: {} step(s) to run, {} already done, {} conflict(s).\n",
        p.summary.steps_to_run, p.summary.steps_done, p.summary.conflicts
    );
    s
}
