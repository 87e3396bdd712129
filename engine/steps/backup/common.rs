//! What both backup modes share: the existing-backup guard, the collection selection, the meta.

use std::sync::Arc;

use crate::format::meta::{self, BackupInfo, CollectionBackupInfo, PartitionBackupInfo};
use crate::milvus::{CollectionInfo, IndexInfo, MilvusClient, PartitionInfo};
use crate::plan::{BackupStep, Location, Pattern};
use crate::steps::ctx::{Result, StepCtx, fail};
use crate::storage::Storage;

/// The refusal both the preview and apply make: a backup that is not this run's own is never
/// overwritten.
pub(super) async fn existing_backup(
    dst: &dyn Storage,
    to: &Location,
    step: &str,
) -> Result<Option<String>> {
    Ok(dst.head(&to.join(meta::BACKUP_META)).await?.map(|_| {
        format!(
            "a backup already exists at `{to}`; choose another `to` in step `{step}` or delete it"
        )
    }))
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
        if let Some(conflict) = existing_backup(dst.as_ref(), &step.to, &ctx.step).await? {
            return fail(conflict);
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
pub async fn resolve(client: &MilvusClient, written: &[String]) -> Result<Vec<(String, String)>> {
    // A server without databases has only the default one: a pattern for another names
    // collections that cannot be there, and would otherwise just match nothing.
    for raw in written {
        let p = Pattern::parse(raw);
        if !p.matches_database(crate::plan::DEFAULT_DATABASE)
            && let Some(e) = client.lacks_database(p.database())
        {
            return fail(format!(
                "`collections` has `{raw}`: {e}; name its collections without a database"
            ));
        }
    }
    let patterns: Vec<Pattern> = written.iter().map(|p| Pattern::parse(p)).collect();
    let mut out = Vec::new();
    let dbs = client.databases().await?;
    for db in dbs {
        let wanted: Vec<&Pattern> = patterns
            .iter()
            .filter(|p| p.matches_database(&db))
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
    // Patterns that together select nothing would write an empty backup and fail later steps.
    if out.is_empty() {
        return fail(format!(
            "`collections` {} match no collection on `{}`; nothing to back up",
            written
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(", "),
            client.name()
        ));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The finished backup's meta, the same for both modes but for `format`, size and file count.
pub(super) fn backup_info(
    ctx: &StepCtx,
    step: &BackupStep,
    client: &MilvusClient,
    collections: Vec<CollectionBackupInfo>,
    format: &str,
    files: u64,
) -> BackupInfo {
    BackupInfo {
        id: ctx.run.clone(),
        state_code: 2,
        name: step
            .to
            .path
            .rsplit('/')
            .next()
            .unwrap_or("backup")
            .to_string(),
        backup_timestamp: crate::checkpoint::now() * 1000,
        size: collections.iter().map(|c| c.size).sum(),
        collection_backups: collections,
        milvus_version: client.server_version().to_string(),
        format: format.to_string(),
        planrun: Some(meta::PlanrunInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            run: ctx.run.clone(),
            files,
        }),
    }
}

/// The rows the preview shows for a collection: counted when it is loaded; otherwise (a count
/// needs a loaded collection) the rows of its flushed segments, before deletes.
pub(super) async fn preview_rows(c: &MilvusClient, name: &str) -> (u64, String) {
    if let Ok(n) = c.query_count(name, &[], "").await {
        return (n, n.to_string());
    }
    let n = c
        .get_persistent_segment_info(name)
        .await
        .unwrap_or_default()
        .iter()
        .map(|s| s.num_rows as u64)
        .sum();
    (
        n,
        format!("about {n} (not loaded: flushed rows before deletes)"),
    )
}

/// What the preview knows of a collection a backup will hold: enough for a later restore's
/// preview (names, partitions, indexes, rows) and its checks.
pub(super) async fn preview_info(
    c: &MilvusClient,
    db: &str,
    name: &str,
    parts: &[PartitionInfo],
    desc: Option<&CollectionInfo>,
    rows: Option<u64>,
) -> CollectionBackupInfo {
    // Looked at once here for both modes: what a later restore's preview checks.
    let indexes = c.describe_index(name).await.unwrap_or_default();
    let loaded = matches!(
        c.get_load_state(name).await,
        Ok(crate::milvus::pb::common::LoadState::Loaded)
    );
    CollectionBackupInfo {
        db_name: db.to_string(),
        collection_name: name.to_string(),
        partition_backups: parts
            .iter()
            .map(|pt| PartitionBackupInfo {
                partition_name: pt.name.clone(),
                ..Default::default()
            })
            .collect(),
        has_index: !indexes.is_empty(),
        index_infos: indexes
            .into_iter()
            .map(|i| meta::IndexInfo {
                field_name: i.field_name,
                index_name: i.index_name,
                ..Default::default()
            })
            .collect(),
        schema: desc.map(|d| (&d.schema).into()).unwrap_or_default(),
        aliases: desc.map(|d| d.aliases.clone()).unwrap_or_default(),
        planrun_row_count: rows,
        load_state: load_state_name(loaded),
        ..Default::default()
    }
}

/// A collection's meta as both modes record it: schema, partitions (without segments),
/// indexes with their build params, properties and aliases.
pub(super) fn collection_info(
    db: &str,
    name: &str,
    desc: &CollectionInfo,
    partitions: &[PartitionInfo],
    indexes: &[IndexInfo],
    rows: Option<u64>,
) -> CollectionBackupInfo {
    CollectionBackupInfo {
        id: desc.collection_id.to_string(),
        collection_id: desc.collection_id,
        db_name: db.to_string(),
        collection_name: name.to_string(),
        schema: (&desc.schema).into(),
        shards_num: desc.shards_num,
        consistency_level: desc.consistency_level as i32,
        partition_backups: partitions
            .iter()
            .map(|p| PartitionBackupInfo {
                partition_id: p.id,
                partition_name: p.name.clone(),
                collection_id: desc.collection_id,
                ..Default::default()
            })
            .collect(),
        backup_timestamp: crate::checkpoint::now() * 1000,
        size: 0,
        has_index: !indexes.is_empty(),
        index_infos: indexes
            .iter()
            .map(|i| {
                let params: std::collections::BTreeMap<String, String> =
                    i.params.iter().cloned().collect();
                meta::IndexInfo {
                    field_name: i.field_name.clone(),
                    index_name: i.index_name.clone(),
                    index_type: params.get("index_type").cloned().unwrap_or_default(),
                    params,
                }
            })
            .collect(),
        load_state: String::new(),
        properties: crate::schema::kv_from_pairs(&desc.properties),
        aliases: desc.aliases.clone(),
        planrun_row_count: rows,
        l0_segments: Vec::new(),
    }
}

/// How the meta records whether the source collection was loaded (`LoadState`'s names), so a
/// restore ends in the same state.
pub(super) fn load_state_name(loaded: bool) -> String {
    use crate::milvus::pb::common::LoadState;
    if loaded {
        LoadState::Loaded
    } else {
        LoadState::NotLoad
    }
    .as_str_name()
    .to_string()
}
