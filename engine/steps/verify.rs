//! The `verify` step: proves a copy equals its source (schema, partitions, counts, indexes, rows).
//!
//! Row content is compared by an order-independent digest: every row is hashed canonically
//! (SHA-256 over its field names and values, sorted by field name, JSON re-serialised with sorted
//! keys) and the first 128 bits of each hash are summed. A sum, unlike XOR, does not let two
//! equal rows cancel out. Both sides are walked together by primary key, so the same pass also
//! finds a few example keys that are missing, extra or different, in bounded memory.

use std::collections::BTreeSet;
use std::fmt;

use super::ctx::{Result, StepCtx, StepError, fail, to_json};
use super::keys::{Merged, Walk, merge};
use super::preview::{Look, StepPreview};
use super::restore::{Target, selected};
use crate::checkpoint::TaskState;
use crate::codec;
use crate::format::meta::{self, BackupInfo};
use crate::milvus::MilvusClient;
use crate::milvus::pb::common::LoadState;
use crate::plan::{CollectionRef, DEFAULT_DATABASE, Keys, Plan, RestoreStep, StepKind, VerifyStep};
use crate::schema::{CollectionSchema, KeyValue};

/// Bytes one query page may carry, well under the 64 MiB message limit.
const PAGE_BYTES: usize = 8 << 20;

/// One side of a comparison: a collection of a database of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Side {
    pub instance: String,
    pub database: String,
    pub collection: String,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}.{}", self.instance, self.database, self.collection)
    }
}

impl Side {
    fn of(plan: &Plan, c: &CollectionRef) -> Side {
        Side {
            instance: c.instance.clone(),
            database: c
                .database
                .clone()
                .or_else(|| plan.instances[&c.instance].database.clone())
                .unwrap_or_else(|| DEFAULT_DATABASE.into()),
            collection: c.collection.clone(),
        }
    }
}

pub async fn run(ctx: &StepCtx, step: &VerifyStep) -> Result<String> {
    let plan = ctx.res.plan.clone();
    let pairs = match step {
        VerifyStep::Pair { source, target } => {
            vec![(Side::of(&plan, source), Side::of(&plan, target))]
        }
        VerifyStep::Restore(id) => pairs_of_restore(ctx, id).await?,
    };
    // A restore that let the target assign new keys is compared by content, not key by key.
    let new_keys = matches!(step, VerifyStep::Restore(id)
        if matches!(plan.step(id).map(|s| &s.kind),
            Some(StepKind::Restore(r)) if r.keys == Keys::New));
    let n = pairs.len();
    let units = ctx
        .each(
            pairs,
            |(_, t)| t.to_string(),
            |(source, target)| async move {
                ctx.check_cancel()?;
                let from = format!("{}.{}", source.database, source.collection);
                ctx.unit_source(&target.to_string(), &from)?;
                compare_pair(ctx, &source, &target, new_keys).await
            },
        )
        .await?;
    if !units.failed.is_empty() {
        return fail(format!(
            "verification failed ({} of {n} collection(s) differ):\n{}",
            units.failed.len(),
            units
                .failed
                .into_iter()
                .map(|(_, why)| why)
                .collect::<Vec<_>>()
                .join("\n")
        ));
    }
    Ok(units.done.join("; "))
}

/// Compares one pair; a copy that differs is an error naming the differences. What verify
/// loaded to read is released again, whatever the outcome.
async fn compare_pair(
    ctx: &StepCtx,
    source: &Side,
    target: &Side,
    new_keys: bool,
) -> Result<String> {
    {
        // Only a success is recorded: a failed comparison is made again on the next apply.
        let key = format!("pair/{target}");
        if let Some(line) = ctx.done::<String>(&key)? {
            return Ok(line);
        }
        let src = ctx
            .res
            .milvus(&source.instance)
            .await?
            .with_database(&source.database);
        let dst = ctx
            .res
            .milvus(&target.instance)
            .await?
            .with_database(&target.database);
        let compared = compare(ctx, &src, source, &dst, target, new_keys).await;
        ctx.release_read(&src, &source.collection, &loaded_key(source))
            .await?;
        ctx.release_read(&dst, &target.collection, &loaded_key(target))
            .await?;
        let report = compared?;
        if report.differences.is_empty() {
            let line = format!(
                "`{target}` equals `{source}`: {} rows in {} partitions, digest {:032x}{}",
                report.rows,
                report.partitions,
                report.digest,
                if report.notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.notes.join("; "))
                }
            );
            ctx.set(&key, TaskState::Done(to_json(&line))).await?;
            Ok(line)
        } else {
            fail(format!(
                "`{target}` differs from `{source}`:\n  - {}",
                report.differences.join("\n  - ")
            ))
        }
    }
}

/// The (source, target) pairs of every collection a restore step restores. The source instance
/// is the one whose backup step wrote the restored location (following copy steps).
pub async fn pairs_of_restore(ctx: &StepCtx, id: &str) -> Result<Vec<(Side, Side)>> {
    let plan = &ctx.res.plan;
    let Some(StepKind::Restore(r)) = plan.step(id).map(|s| &s.kind) else {
        return fail(format!("step `{id}` is not a restore step"));
    };
    let Some(source_instance) = plan.backup_source(&r.from) else {
        return fail(format!(
            "cannot tell which instance the backup at `{}` (restored by `{id}`) was taken from: \
             no backup step of this plan writes it. Name the collections with `source` and \
             `target` in step `{}` instead",
            plan.show_location(&r.from),
            ctx.step
        ));
    };
    let store = ctx.res.storage(&r.from.bucket).await?;
    let Some(backup) = crate::format::read_meta(store.as_ref(), &r.from).await? else {
        return fail(format!(
            "no backup at `{}` (`{}` not found), so the collections restored by `{id}` are unknown",
            plan.show_location(&r.from),
            meta::BACKUP_META
        ));
    };
    let out = pairs(&source_instance, r, &backup);
    if out.is_empty() {
        return fail(format!(
            "restore step `{id}` restores no collection of the backup at `{}`; nothing to verify",
            plan.show_location(&r.from)
        ));
    }
    Ok(out)
}

/// The (source, target) pair of each collection of `backup` that restore `r` selects, its
/// source on `source_instance`.
fn pairs(source_instance: &str, r: &RestoreStep, backup: &BackupInfo) -> Vec<(Side, Side)> {
    let pair = |t: Target<'_>| {
        let db = match t.info.db_name.as_str() {
            "" => DEFAULT_DATABASE,
            db => db,
        };
        let source = Side {
            instance: source_instance.to_string(),
            database: db.to_string(),
            collection: t.info.collection_name.clone(),
        };
        let target = Side {
            instance: r.instance.clone(),
            database: t.db,
            collection: t.name,
        };
        (source, target)
    };
    selected(r, backup).into_iter().map(pair).collect()
}

/// What a comparison found.
#[derive(Debug, Default)]
pub struct Report {
    pub rows: u64,
    pub partitions: usize,
    /// The sum of the partition digests of the source.
    pub digest: u128,
    /// One line per difference; empty when the copy is equal.
    pub differences: Vec<String>,
    /// What differs by design (a size limit the restore filled in, keys kept without auto_id).
    pub notes: Vec<String>,
}

/// Both schemas without what differs by design, each difference noted: a size limit one side
/// does not report (Milvus Lite forgets `max_length` of a VARCHAR array; a rows backup fills it
/// in from the data), and auto_id turned off because rows mode kept the source's keys.
fn by_design(
    source: &CollectionSchema,
    target: &CollectionSchema,
    notes: &mut Vec<String>,
) -> (CollectionSchema, CollectionSchema) {
    let (mut s, mut t) = (source.clone(), target.clone());
    for tf in &mut t.fields {
        let Some(sf) = s.fields.iter_mut().find(|s| s.name == tf.name) else {
            continue;
        };
        let only = |a: &[KeyValue], b: &[KeyValue]| -> Vec<KeyValue> {
            a.iter()
                .filter(|kv| !b.iter().any(|x| x.key == kv.key))
                .cloned()
                .collect()
        };
        let (in_target, in_source) = (
            only(&tf.type_params, &sf.type_params),
            only(&sf.type_params, &tf.type_params),
        );
        for kv in &in_target {
            notes.push(format!(
                "`{}` has {}={} (filled in)",
                tf.name, kv.key, kv.value
            ));
        }
        for kv in &in_source {
            notes.push(format!(
                "`{}`: {}={} not reported by the target",
                tf.name, kv.key, kv.value
            ));
        }
        tf.type_params.retain(|kv| !in_target.contains(kv));
        sf.type_params.retain(|kv| !in_source.contains(kv));
        if sf.auto_id && !tf.auto_id {
            tf.auto_id = true;
            notes.push(format!("`{}` kept its keys (auto_id off)", tf.name));
        }
    }
    (s, t)
}

/// The task that records that verify loaded `side` (released again after the comparison).
fn loaded_key(side: &Side) -> String {
    format!("loaded/{side}")
}

async fn ensure_loaded(ctx: &StepCtx, c: &MilvusClient, side: &Side) -> Result<()> {
    match c.get_load_state(&side.collection).await? {
        LoadState::NotExist => fail(format!(
            "collection `{side}` does not exist; check the step's `source`/`target`"
        )),
        state => {
            // Queries on Milvus 2.3 need the collection in memory.
            if state != LoadState::Loaded {
                ctx.events
                    .info(&ctx.step, format!("loading `{side}` to read its rows"));
            }
            // Also when loaded: it may be a load a killed run of this step made, which the
            // record says to undo; a collection loaded before the run is recorded as such.
            ctx.load_to_read(c, &side.collection, &loaded_key(side))
                .await
                .map(|_| ())
        }
    }
}

/// Compares `target` with `source`; differences are returned, errors reaching a server are not.
pub async fn compare(
    ctx: &StepCtx,
    src: &MilvusClient,
    source: &Side,
    dst: &MilvusClient,
    target: &Side,
    new_keys: bool,
) -> Result<Report> {
    let mut report = Report::default();
    for (c, side) in [(src, source), (dst, target)] {
        if !c.has_collection(&side.collection).await? {
            return fail(format!(
                "collection `{side}` does not exist; check the step's `source`/`target` \
                 (or that the restore created it)"
            ));
        }
    }
    let sd = src.describe_collection(&source.collection).await?;
    let td = dst.describe_collection(&target.collection).await?;
    let (ss, ts) = (
        CollectionSchema::from(&sd.schema),
        CollectionSchema::from(&td.schema),
    );
    let (sshape, tshape) = {
        let (s, t) = by_design(&ss, &ts, &mut report.notes);
        (s.shape(), t.shape())
    };
    let diff = &mut report.differences;
    if sshape != tshape {
        let only_s: Vec<&String> = sshape.iter().filter(|f| !tshape.contains(f)).collect();
        let only_t: Vec<&String> = tshape.iter().filter(|f| !sshape.contains(f)).collect();
        diff.push(format!(
            "schema: source has {only_s:?}, target has {only_t:?} \
             (name:type:element type:params:primary:auto id:partition key)"
        ));
    }

    let parts = |v: Vec<crate::milvus::PartitionInfo>| -> BTreeSet<String> {
        v.into_iter().map(|p| p.name).collect()
    };
    let sp = parts(src.show_partitions(&source.collection).await?);
    let tp = parts(dst.show_partitions(&target.collection).await?);
    // With a partition key the server makes and names the partitions (Milvus Lite: `_pk_N`
    // and a `_default`; Milvus: `_default_N`): the rows are compared whole instead.
    let partition_key = ss.fields.iter().any(|f| f.is_partition_key);
    if sp != tp && !partition_key {
        diff.push(format!(
            "partitions: only in source {:?}, only in target {:?}",
            sp.difference(&tp).collect::<Vec<_>>(),
            tp.difference(&sp).collect::<Vec<_>>()
        ));
    }

    // Presence by field: Milvus Lite reports the field name as the index name.
    let indexed = |v: Vec<crate::milvus::IndexInfo>| -> BTreeSet<String> {
        v.into_iter().map(|i| i.field_name).collect()
    };
    let si = indexed(src.describe_index(&source.collection).await?);
    let ti = indexed(dst.describe_index(&target.collection).await?);
    if si != ti {
        diff.push(format!(
            "indexes: fields indexed only in source {:?}, only in target {:?}",
            si.difference(&ti).collect::<Vec<_>>(),
            ti.difference(&si).collect::<Vec<_>>()
        ));
    }

    let Some(pk) = sd.primary_field().map(|f| f.name.clone()) else {
        return fail(format!("`{source}` has no primary key field"));
    };
    if td.primary_field().map(|f| f.name.as_str()) != Some(pk.as_str()) {
        diff.push(format!(
            "primary key: source `{pk}`, target {:?}",
            td.primary_field().map(|f| &f.name)
        ));
        return Ok(report);
    }
    for (c, side) in [(src, source), (dst, target)] {
        match ensure_loaded(ctx, c, side).await {
            Ok(()) => {}
            // A copy already known to differ may be unloadable (no index): report, don't hide.
            Err(e) if !diff.is_empty() => {
                diff.push(format!("rows not compared: `{side}` cannot be loaded: {e}"));
                return Ok(report);
            }
            Err(e) => return Err(e),
        }
    }

    // Keys the target assigned anew (an auto_id source restored with `new_keys`) match no
    // source key: the rows are compared as a whole, by a digest of everything but the key.
    let by_content = new_keys && ss.auto_id() && ts.auto_id();
    if by_content {
        report
            .notes
            .push("new keys: rows compared by content".to_string());
    }
    // A function's output (BM25) is the server's own computation from fields that are
    // compared; newer servers refuse to return it, so it is left out and noted.
    let output = match codec::arrow::columns(&ss) {
        Ok(cols) => codec::arrow::output_fields(&cols),
        Err(_) => vec!["*".to_string()],
    };
    for f in ss.fields.iter().filter(|f| f.is_function_output) {
        let by = ss
            .producer(&f.name)
            .map(|func| format!(" by {} function `{}`", func.kind_name(), func.name))
            .unwrap_or_default();
        report.notes.push(format!(
            "`{}` is computed{by} on each side, not compared row by row",
            f.name
        ));
    }
    let limit = codec::page_limit(&ss, PAGE_BYTES);
    let common: Vec<&String> = sp.intersection(&tp).collect();
    report.partitions = if partition_key {
        tp.len()
    } else {
        common.len()
    };
    // With a partition key Milvus refuses queries naming partitions: compare the collection whole.
    let units: Vec<(String, Vec<String>)> = if partition_key {
        vec![("(all, partition key)".to_string(), Vec::new())]
    } else {
        common
            .iter()
            .map(|p| (p.to_string(), vec![p.to_string()]))
            .collect()
    };
    // Exact counts first, so progress knows how many rows both walks will read. Milvus Lite
    // ignores the partition in count(*) (it counts the whole collection), so there the walk's
    // count stands for the partition and the collection total is checked separately.
    let count = |c: &'_ MilvusClient, coll: &'_ str, part: &'_ [String]| {
        let (c, coll, part) = (c.clone(), coll.to_string(), part.to_vec());
        async move {
            if c.is_lite() && !part.is_empty() {
                Ok::<_, StepError>(None)
            } else {
                Ok(Some(c.query_count(&coll, &part, "").await?))
            }
        }
    };
    let mut counts = Vec::with_capacity(units.len());
    for (_, part) in &units {
        let sc = count(src, &source.collection, part).await?;
        let tc = count(dst, &target.collection, part).await?;
        counts.push((sc, tc));
    }
    let s_total = src.query_count(&source.collection, &[], "").await?;
    let t_total = dst.query_count(&target.collection, &[], "").await?;
    ctx.events.planned_rows(&ctx.step, s_total + t_total);
    let (mut s_walked, mut t_walked) = (0, 0);
    for ((p, part), (sc, tc)) in units.into_iter().zip(counts) {
        ctx.check_cancel()?;
        let mut a = Walk::new(
            src,
            &source.collection,
            &part,
            &pk,
            &output,
            limit,
            !by_content,
        );
        let mut b = Walk::new(
            dst,
            &target.collection,
            &part,
            &pk,
            &output,
            limit,
            !by_content,
        );
        let m = if by_content {
            let ((source_rows, source_digest), (target_rows, target_digest)) =
                (a.sum(ctx).await?, b.sum(ctx).await?);
            Merged {
                source_rows,
                source_digest,
                target_rows,
                target_digest,
                ..Default::default()
            }
        } else {
            merge(ctx, &mut a, &mut b).await?
        };
        report.rows += m.source_rows;
        report.digest = report.digest.wrapping_add(m.source_digest);
        s_walked += m.source_rows;
        t_walked += m.target_rows;
        let mut what = Vec::new();
        let (sn, tn) = (sc.unwrap_or(m.source_rows), tc.unwrap_or(m.target_rows));
        if sn != tn {
            what.push(format!("{sn} rows in source, {tn} in target"));
        }
        if sn != m.source_rows || tn != m.target_rows {
            what.push(format!(
                "reading by key found {} and {} rows where count(*) says {sn} and {tn}",
                m.source_rows, m.target_rows
            ));
        }
        if m.source_digest != m.target_digest {
            what.push(format!(
                "content digests differ ({:032x} vs {:032x})",
                m.source_digest, m.target_digest
            ));
        }
        if !what.is_empty() {
            let examples = m.examples();
            diff.push(format!(
                "partition `{p}`: {}{}",
                what.join("; "),
                if examples.is_empty() {
                    String::new()
                } else {
                    format!("; {examples}")
                }
            ));
        }
    }
    if diff.is_empty() && (s_total != s_walked || t_total != t_walked) {
        diff.push(format!(
            "count(*) says {s_total} rows in source and {t_total} in target, reading by key \
             found {s_walked} and {t_walked}"
        ));
    }
    Ok(report)
}

/// A verify step only reads; the preview says what it will compare.
pub fn preview(_look: &mut Look<'_>, step: &VerifyStep, p: &mut StepPreview) {
    if let VerifyStep::Pair { .. } = step {
        p.counts.collections = 1;
    }
    p.changes.push(
        "? compare schema, partitions, row counts per partition, indexes and a digest of every row"
            .into(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Naming;
    use crate::schema::FieldSchema;
    use crate::steps::restore::fixtures::{backup, coll, step};

    #[test]
    fn a_restore_pairs_each_source_collection_with_its_renamed_target() {
        let mut r = step();
        (r.naming, r.database) = (Naming::Suffix("_v2".into()), Some("copy".into()));
        r.collections = Some(vec!["shop.*".into(), "a".into()]);
        let c = |db, name| coll(db, name, &[]);
        let b = backup(vec![c("", "a"), c("shop", "b"), c("x", "c")]);
        let shown: Vec<String> = pairs("milvus_a", &r, &b)
            .iter()
            .map(|(s, t)| format!("{s} -> {t}"))
            .collect();
        assert_eq!(
            shown,
            [
                "milvus_a:default.a -> milvus_b:copy.a_v2",
                "milvus_a:shop.b -> milvus_b:copy.b_v2"
            ]
        );
    }

    fn field(name: &str, params: &[(&str, &str)], auto_id: bool) -> FieldSchema {
        let kv = |(k, v): &(&str, &str)| KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        };
        FieldSchema {
            name: name.into(),
            type_params: params.iter().map(kv).collect(),
            auto_id,
            ..Default::default()
        }
    }

    #[test]
    fn filled_in_limits_and_kept_keys_differ_by_design_and_are_noted() {
        let of = |fields| CollectionSchema {
            fields,
            ..Default::default()
        };
        let source = of(vec![
            field("id", &[], true),
            field("tags", &[], false),
            field("vec", &[("dim", "4")], false),
        ]);
        let target = of(vec![
            field("id", &[], false),
            field("tags", &[("max_length", "12")], false),
            field("vec", &[], false),
        ]);
        let mut notes = Vec::new();
        let (s, t) = by_design(&source, &target, &mut notes);
        assert_eq!(s.shape(), t.shape());
        assert_eq!(
            notes,
            [
                "`id` kept its keys (auto_id off)",
                "`tags` has max_length=12 (filled in)",
                "`vec`: dim=4 not reported by the target"
            ]
        );
        let mut other = target.clone();
        other.fields[2] = field("vec", &[("dim", "8")], false);
        let (s, t) = by_design(&source, &other, &mut Vec::new());
        assert_ne!(s.shape(), t.shape(), "a changed dimension is a difference");
    }
}
