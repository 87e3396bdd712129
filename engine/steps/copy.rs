//! The `copy` step: every object under one location into another, skipping what is already there.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::{StreamExt, TryStreamExt};

use super::ctx::{Result, StepCtx, StepError, fail};
use super::feed::Unit;
use super::preview::{Look, Produced, StepPreview};
use crate::format::meta;
use crate::plan::{CopyStep, Location};
use crate::storage::{self, ObjectMeta, Storage, StorageConfig, StorageError};
use crate::text::human_bytes;

/// The refusal both the preview and apply make of a damaged backup: when `from` holds a backup,
/// every file is checked against its meta (present, size, MD5) before anything is copied, so a
/// damaged backup never travels on as if it were whole. `Ok(Err(why))` for a damaged one;
/// otherwise the backup's meta, if `from` holds a backup.
async fn checked_backup(
    src: &dyn Storage,
    step: &CopyStep,
) -> Result<std::result::Result<Option<meta::BackupInfo>, String>> {
    let Some(backup) = crate::format::read_meta(src, &step.from).await? else {
        return Ok(Ok(None));
    };
    let rows = if backup.format == crate::format::rows::FORMAT {
        Some(crate::format::read_rows_meta(src, &step.from).await?)
    } else {
        None
    };
    let damage =
        crate::format::check::verify_backup(src, &step.from, &backup, rows.as_ref()).await?;
    if damage.is_empty() {
        return Ok(Ok(Some(backup)));
    }
    let shown: Vec<String> = damage.iter().take(5).map(|d| d.to_string()).collect();
    Ok(Err(format!(
        "the backup at `{}` does not match its meta, so it is not copied: {}{}",
        step.from,
        shown.join("; "),
        if damage.len() > 5 {
            format!(" (and {} more files)", damage.len() - 5)
        } else {
            String::new()
        }
    )))
}

/// The refusal both the preview and apply make of keys the destination cannot hold (`..`
/// segments or over-long names for a local directory, over-long keys for S3), before anything
/// is written, so no copy stops half way for it.
fn unstorable(dst: &dyn Storage, step: &CopyStep, objects: &[ObjectMeta]) -> Option<String> {
    let prefix = dir_prefix(&step.from.path);
    let bad: Vec<String> = objects
        .iter()
        .filter_map(|o| dst.check_key(&step.to.join(&o.key[prefix.len()..])).err())
        .map(|e| e.to_string())
        .collect();
    (!bad.is_empty()).then(|| {
        format!(
            "{} object(s) of `{}` cannot be stored at `{}`: {}{}",
            bad.len(),
            step.from,
            step.to,
            bad.iter().take(3).cloned().collect::<Vec<_>>().join("; "),
            if bad.len() > 3 { "; …" } else { "" }
        )
    })
}

/// The refusal both the preview and apply make: there is nothing to copy.
fn empty_source(step: &CopyStep) -> String {
    format!(
        "nothing to copy: `{}` is empty (bucket `{}`, prefix `{}`) and no earlier step writes it",
        step.from,
        step.from.bucket,
        dir_prefix(&step.from.path)
    )
}

pub async fn run(ctx: &StepCtx, step: &CopyStep) -> Result<String> {
    let src = ctx.res.storage(&step.from.bucket).await?;
    let dst = ctx.res.storage(&step.to.bucket).await?;
    // Said once per step: the same keys are refused for every object.
    let refused_said = &AtomicBool::new(false);
    let Early {
        outcomes: early,
        units: early_units,
    } = pipelined(ctx, step, &src, &dst, refused_said).await?;
    let prefix = dir_prefix(&step.from.path);
    let objects: Vec<ObjectMeta> = src.list(&prefix).try_collect().await?;
    if objects.is_empty() {
        return fail(empty_source(step));
    }
    let backup = match checked_backup(src.as_ref(), step).await? {
        Ok(backup) => backup,
        Err(why) => return fail(why),
    };
    if let Some(why) = unstorable(dst.as_ref(), step, &objects) {
        return fail(why);
    }
    let total: u64 = objects.iter().map(|o| o.size).sum();
    ctx.events.planned(&ctx.step, objects.len() as u64, total);
    let existing = listing(dst.as_ref(), &step.to.path).await?;

    let (prefix, existing) = (prefix.as_str(), &existing);
    let outcomes: Vec<Outcome> = futures::stream::iter(objects.clone())
        .map(|o: ObjectMeta| {
            let (src, dst) = (src.clone(), dst.clone());
            async move {
                let o = &o;
                let rel = &o.key[prefix.len()..];
                let (outcome, earlier) = ctx
                    .once_lazy(&format!("obj/{rel}"), || async {
                        // Present with the same size and checksum: nothing to move.
                        if let Some(have) = existing.get(rel)
                            && present(src.as_ref(), o, dst.as_ref(), have).await?
                        {
                            return Ok(Outcome::Present);
                        }
                        copy_one(ctx, step, &src, &dst, o, rel, refused_said).await
                    })
                    .await?;
                ctx.events.progress(&ctx.step, 1, o.size);
                // Copied by an earlier, interrupted apply of this run (or by the pipelined
                // copies above): nothing moved now.
                Ok::<_, StepError>(if earlier { Outcome::Present } else { outcome })
            }
        })
        .buffer_unordered(ctx.concurrency() * 4)
        .try_collect()
        .await?;
    // The backup's collections are all at `to` now.
    if let Some(backup) = &backup {
        for c in &backup.collection_backups {
            let name = format!("{}.{}", c.db_name, c.collection_name);
            if !early_units.contains(&name) {
                ctx.unit_ended(&name, None)?;
            }
        }
    }
    ctx.tasks.sync().await?;

    // What the pipelined pass copied shows as present above; count it as the copy it was.
    let present =
        (outcomes.iter().filter(|o| **o == Outcome::Present).count()).saturating_sub(early.len());
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .filter(|o| *o != Outcome::Present)
        .chain(early)
        .collect();
    let server = outcomes
        .iter()
        .filter(|o| **o == Outcome::ServerSide)
        .count();
    let streamed: u64 = outcomes
        .iter()
        .map(|o| match o {
            Outcome::Streamed(n) => *n,
            _ => 0,
        })
        .sum();
    Ok(format!(
        "{} objects ({}) into {}: {server} copied server-side, {} streamed ({}), {present} already present",
        objects.len(),
        human_bytes(total),
        step.to,
        outcomes.len() - server,
        human_bytes(streamed),
    ))
}

/// Copies each collection a running backup (or copy) publishes at `from`, as it comes, and
/// publishes it again at `to` for the steps after this one. The whole pass that follows skips
/// by their records the objects copied here. A rows backup's files are left to that pass.
/// Returns how each object it copied (not found already copied) was copied.
async fn pipelined(
    ctx: &StepCtx,
    step: &CopyStep,
    src: &Arc<dyn Storage>,
    dst: &Arc<dyn Storage>,
    refused_said: &AtomicBool,
) -> Result<Early> {
    let prefix = dir_prefix(&step.from.path);
    let prefix = prefix.as_str();
    let copied = std::sync::Mutex::new(Vec::new());
    let copied_ref = &copied;
    let units = std::sync::Mutex::new(BTreeSet::new());
    let units_ref = &units;
    ctx.pipelined(&step.from, |unit: Unit| async move {
        if !unit.backup.format.is_empty() {
            return Ok(());
        }
        let rels: Vec<String> = unit
            .backup
            .collection_backups
            .iter()
            .flat_map(|c| c.segments())
            .flat_map(|s| s.files())
            .map(|(rel, _, _)| step.from.join(&rel)[prefix.len()..].to_string())
            .collect();
        futures::stream::iter(rels)
            .map(|rel| async move {
                let key = format!("{prefix}{rel}");
                let (outcome, earlier) = ctx
                    .once_lazy(&format!("obj/{rel}"), || async {
                        let o = src
                            .head(&key)
                            .await?
                            .ok_or_else(|| StorageError::not_found(src.place(), &key))?;
                        copy_one(ctx, step, src, dst, &o, &rel, refused_said).await
                    })
                    .await?;
                if !earlier {
                    copied_ref.lock().expect("outcomes lock").push(outcome);
                }
                Ok::<(), StepError>(())
            })
            .buffer_unordered(ctx.concurrency() * 4)
            .try_collect::<Vec<()>>()
            .await?;
        for c in &unit.backup.collection_backups {
            let name = format!("{}.{}", c.db_name, c.collection_name);
            ctx.unit_ended(&name, None)?;
            units_ref.lock().expect("units lock").insert(name);
        }
        ctx.publish(&step.to, unit.backup);
        Ok(())
    })
    .await?;
    Ok(Early {
        outcomes: copied.into_inner().expect("outcomes lock"),
        units: units.into_inner().expect("units lock"),
    })
}

/// What the pipelined pass did: how each object it copied was copied, and the collections it
/// finished.
struct Early {
    outcomes: Vec<Outcome>,
    units: BTreeSet<String>,
}

/// One object from `from` to `to` (`rel` below both), server-side where the server allows it.
async fn copy_one(
    ctx: &StepCtx,
    step: &CopyStep,
    src: &Arc<dyn Storage>,
    dst: &Arc<dyn Storage>,
    o: &ObjectMeta,
    rel: &str,
    refused_said: &AtomicBool,
) -> Result<Outcome> {
    let _slot = ctx.res.copies.acquire().await.expect("never closed");
    let r =
        storage::copy_listed(src.as_ref(), o, dst.as_ref(), &step.to.join(rel), &|_| {}).await?;
    if let Some(why) = &r.refused
        && !refused_said.swap(true, Ordering::Relaxed)
    {
        ctx.events.warn(
            &ctx.step,
            format!(
                "the server would not copy from bucket `{}` into bucket `{}` itself ({why}), \
                 so objects stream through planrun; to copy server-side, let the key of `{}` \
                 read `{}`",
                step.from.bucket, step.to.bucket, step.to.bucket, step.from.bucket
            ),
        );
    }
    Ok(if r.server_side {
        Outcome::ServerSide
    } else {
        Outcome::Streamed(r.bytes_transferred)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Present,
    ServerSide,
    Streamed(u64),
}

/// What a location holds, by key relative to it: one listing instead of a HEAD per object (no
/// other step may write there, so it cannot change under a copy).
async fn listing(store: &dyn Storage, path: &str) -> Result<HashMap<String, ObjectMeta>> {
    let prefix = dir_prefix(path);
    Ok(store
        .list(&prefix)
        .map_ok(|o| (o.key[prefix.len()..].to_string(), o))
        .try_collect()
        .await?)
}

/// A location's path as a listing prefix that matches only what is inside it.
fn dir_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    }
}

/// Whether `dst` already holds `src`'s content. Sizes decide most cases; with equal sizes the MD5s
/// decide, read from the content where a store does not report one (local files, multipart
/// uploads), which costs a read but never a wrong skip.
async fn present(
    src_store: &dyn Storage,
    src: &ObjectMeta,
    dst_store: &dyn Storage,
    dst: &ObjectMeta,
) -> Result<bool> {
    if src.size != dst.size {
        return Ok(false);
    }
    let a = match &src.md5 {
        Some(m) => m.clone(),
        None => md5_of(src_store, &src.key).await?,
    };
    let b = match &dst.md5 {
        Some(m) => m.clone(),
        None => md5_of(dst_store, &dst.key).await?,
    };
    Ok(a == b)
}

async fn md5_of(store: &dyn Storage, key: &str) -> Result<String> {
    use md5::Digest;
    let mut h = md5::Md5::new();
    let mut body = store.get(key).await?;
    while let Some(chunk) = body.next().await {
        h.update(&chunk?);
    }
    Ok(hex::encode(h.finalize()))
}

/// What the copy would move, from a listing of both ends; a source that an earlier step writes
/// is estimated from that step's preview.
pub async fn preview(look: &mut Look<'_>, step: &CopyStep, p: &mut StepPreview) {
    let plan = &look.res.plan;
    p.changes.push(
        match (
            &plan.buckets[&step.from.bucket].config,
            &plan.buckets[&step.to.bucket].config,
        ) {
            (StorageConfig::S3(a), StorageConfig::S3(b)) if a.endpoint == b.endpoint => {
                "~ objects copied server-side (both buckets on one S3 endpoint)"
            }
            _ => "~ objects streamed through planrun (the buckets are on different servers)",
        }
        .to_string(),
    );
    // What earlier steps write into `from`, where it will arrive under `to`: a backup written
    // at `from/x` is copied to `to/x`, one written around `from` arrives (in part) at `to`.
    let upstream: Vec<(Location, Produced)> = look
        .written(&step.from)
        .into_iter()
        .map(|(at, w)| {
            let rel = if step.from.contains(&at) {
                &at.path[step.from.path.len()..]
            } else {
                ""
            };
            let to = Location {
                bucket: step.to.bucket.clone(),
                path: step.to.join(rel),
            };
            (to, w)
        })
        .collect();
    if let Some(line) = upstream.iter().find_map(|(_, w)| w.blocked_line()) {
        p.changes.push(line);
        look.produced.extend(upstream);
        return;
    }
    let listed = async {
        let src = look.res.storage(&step.from.bucket).await?;
        let dst = look.res.storage(&step.to.bucket).await?;
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
        Ok::<_, StepError>((objects, there))
    }
    .await;
    match (listed, upstream.is_empty()) {
        (Ok((objects, present)), none_upstream) if !objects.is_empty() || none_upstream => {
            p.counts.objects = objects.len() as u64;
            p.counts.bytes = objects.iter().map(|o| o.size).sum();
            p.changes.push(format!(
                "+ {} objects ({}), {present} already present at the destination",
                objects.len(),
                human_bytes(p.counts.bytes)
            ));
            if let Ok(dst) = look.res.storage(&step.to.bucket).await
                && let Some(why) = unstorable(dst.as_ref(), step, &objects)
            {
                p.conflict(why);
            }
            if objects.is_empty() {
                p.conflict(empty_source(step));
            } else if let Ok(src) = look.res.storage(&step.from.bucket).await {
                match checked_backup(src.as_ref(), step).await {
                    Ok(Err(why)) => p.conflict(why),
                    Ok(Ok(_)) => {}
                    Err(e) => p.conflict(e),
                }
            }
            look.produced.extend(upstream);
        }
        (_, false) => {
            p.estimated = true;
            for (_, up) in &upstream {
                // The binlogs plus the backup's metadata files.
                p.counts.objects += up.counts.objects + meta::META_FILES.len() as u64;
                p.counts.bytes += up.counts.bytes;
            }
            p.changes.push(format!(
                "+ about {} objects ({}) that earlier steps will write",
                p.counts.objects,
                human_bytes(p.counts.bytes)
            ));
            look.produced.extend(upstream);
        }
        (Err(e), true) => p.conflict(e),
        (Ok(_), true) => unreachable!("the first arm takes every listing without an upstream"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalConfig, LocalStorage, MemoryStorage};

    fn step(from: &str, to: &str) -> CopyStep {
        CopyStep {
            from: Location::new("src", from).unwrap(),
            to: Location::new("dst", to).unwrap(),
        }
    }

    fn object(key: &str, size: u64, md5: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            etag: None,
            md5: md5.map(str::to_string),
        }
    }

    #[test]
    fn a_location_lists_only_what_is_inside_it() {
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("backup/b1"), "backup/b1/");
    }

    #[tokio::test]
    async fn a_listing_is_keyed_relative_to_the_location_and_leaves_out_its_neighbours() {
        let store = MemoryStorage::new("dst");
        for key in ["backup/b1/a", "backup/b1/d/b", "backup/b10/c", "backup/b1"] {
            store.put_bytes(key, "x".into()).await.unwrap();
        }
        let mut keys: Vec<String> = listing(&store, "backup/b1")
            .await
            .unwrap()
            .into_keys()
            .collect();
        keys.sort();
        assert_eq!(keys, ["a", "d/b"]);
    }

    #[test]
    fn an_empty_source_is_refused_naming_bucket_and_prefix() {
        assert_eq!(
            empty_source(&step("backup/b1", "in")),
            "nothing to copy: `src:backup/b1` is empty (bucket `src`, prefix `backup/b1/`) and \
             no earlier step writes it"
        );
    }

    #[test]
    fn keys_the_destination_cannot_hold_are_refused_before_copying() {
        let dst = LocalStorage::new(&LocalConfig {
            name: "dst".into(),
            path: "/srv/dst".into(),
        });
        let s = step("backup/b1", "in");
        let ok = [object("backup/b1/d/ok", 1, None)];
        assert_eq!(unstorable(&dst, &s, &ok), None);
        let bad: Vec<ObjectMeta> = ["ok", "a\\b", "d/", "x/../y", "z/.planrun-tmp.1"]
            .iter()
            .map(|rel| object(&format!("backup/b1/{rel}"), 1, None))
            .collect();
        assert_eq!(
            unstorable(&dst, &s, &bad).as_deref(),
            Some(
                "4 object(s) of `src:backup/b1` cannot be stored at `dst:in`: invalid key \
                 `in/a\\b` for bucket `dst` (local directory `/srv/dst`): a key may not contain \
                 `\\` or NUL in a local directory; invalid key `in/d/` for bucket `dst` (local \
                 directory `/srv/dst`): a key may not start or end with `/` in a local \
                 directory; invalid key `in/x/../y` for bucket `dst` (local directory \
                 `/srv/dst`): a key may not contain `.` or `..` segments; …"
            )
        );
    }

    #[tokio::test]
    async fn an_object_is_present_only_with_the_same_size_and_content() {
        let (src, dst) = (MemoryStorage::new("src"), MemoryStorage::new("dst"));
        src.put_bytes("a", "hello".into()).await.unwrap();
        dst.put_bytes("same", "hello".into()).await.unwrap();
        dst.put_bytes("other", "jello".into()).await.unwrap();
        // Without a reported MD5 the content is read and hashed.
        let a = object("a", 5, None);
        assert!(
            present(&src, &a, &dst, &object("same", 5, None))
                .await
                .unwrap()
        );
        assert!(
            !present(&src, &a, &dst, &object("other", 5, None))
                .await
                .unwrap()
        );
        // A size that differs decides without reading (these keys do not exist).
        let gone = object("gone", 5, None);
        assert!(
            !present(&src, &gone, &dst, &object("gone", 6, None))
                .await
                .unwrap()
        );
        // Reported MD5s decide without reading.
        let (x, y) = (object("gone", 5, Some("aa")), object("gone", 5, Some("bb")));
        assert!(!present(&src, &x, &dst, &y).await.unwrap());
        assert!(present(&src, &x, &dst, &x).await.unwrap());
    }
}
