//! The targets of a restore: which collections of the backup, under which names and databases,
//! the refusals checked before anything is created, and creating the target collection.

use crate::checkpoint::TaskState;
use crate::format::meta::{self, BackupInfo, CollectionBackupInfo, CollectionSchema};
use crate::milvus::MilvusClient;
use crate::milvus::pb::common::{ConsistencyLevel, ImportState};
use crate::milvus::pb::schema::DataType;
use crate::plan::{OnConflict, Pattern, RestoreStep};
use crate::steps::ctx::{Result, StepCtx, fail, to_json};

/// How a backup is restored, from its format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Binlog,
    Rows,
}

/// How a backup records a loaded source collection (`LoadState`'s name).
pub const LOADED: &str = "LoadStateLoaded";

/// Milvus's default `common.maxNameLength`.
const MAX_NAME: usize = 255;

/// One collection of the backup and where it goes.
pub struct Target<'a> {
    pub info: &'a CollectionBackupInfo,
    pub db: String,
    pub name: String,
}

impl Target<'_> {
    /// The task key of the collection within the step.
    pub(super) fn key(&self) -> String {
        format!("coll/{}.{}", self.db, self.name)
    }

    /// Whether the restored collection is loaded: as the plan says, else as its source was
    /// when backed up (a backup that did not record it, e.g. milvus-backup's: loaded).
    pub fn loads(&self, step: &RestoreStep) -> bool {
        step.load
            .unwrap_or_else(|| self.info.load_state.is_empty() || self.info.load_state == LOADED)
    }

    /// The unit of work as reports name it: the target collection.
    pub fn unit(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }
}

/// The collections of a backup the step restores, with their databases and target names.
pub fn selected<'a>(step: &RestoreStep, backup: &'a BackupInfo) -> Vec<Target<'a>> {
    let patterns: Option<Vec<Pattern>> = step
        .collections
        .as_ref()
        .map(|ps| ps.iter().map(|p| Pattern::parse(p)).collect());
    backup
        .collection_backups
        .iter()
        .filter(|c| {
            patterns.as_ref().is_none_or(|ps| {
                ps.iter()
                    .any(|p| p.matches(source_db(c), &c.collection_name))
            })
        })
        .map(|c| Target {
            info: c,
            db: step
                .database
                .clone()
                .unwrap_or_else(|| source_db(c).to_string()),
            name: step.naming.target(&c.collection_name),
        })
        .collect()
}

/// The database a backed-up collection came from (milvus-backup leaves it empty for `default`).
pub(super) fn source_db(c: &CollectionBackupInfo) -> &str {
    if c.db_name.is_empty() {
        crate::plan::DEFAULT_DATABASE
    } else {
        &c.db_name
    }
}

/// Why the step cannot restore one collection, checked by the preview and, before anything is
/// created, by apply: the same strings in both.
pub(super) fn refusals(
    client: &MilvusClient,
    step: &RestoreStep,
    id: &str,
    mode: Mode,
    t: &Target,
    exists: bool,
    source: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let shown = |n: &str| -> String {
        if n.chars().count() > 48 {
            format!("{}…", n.chars().take(48).collect::<String>())
        } else {
            n.to_string()
        }
    };
    if exists && step.on_conflict == OnConflict::Fail {
        out.push(already_exists(step, id, t));
    }
    // Dropping the very collection the backup was read from would replace data with an older
    // copy of itself (or lose it if the restore fails).
    if exists
        && step.on_conflict == OnConflict::Drop
        && source == Some(step.instance.as_str())
        && t.name == t.info.collection_name
        && t.db == source_db(t.info)
    {
        out.push(format!(
            "step `{id}` would drop `{}` on `{}`, the collection its backup was taken from \
             (on_conflict = \"drop\"); restore it under another name (`suffix`, `rename` or \
             `database`)",
            t.name, step.instance
        ));
    }
    out.extend(super::capability::refusals(client, step, id, t));
    let n = t.name.chars().count();
    if n > MAX_NAME {
        out.push(format!(
            "the target name `{}` of `{}` is {n} characters, over Milvus's limit of {MAX_NAME}; \
             shorten the `suffix` or `rename` of step `{id}`",
            shown(&t.name),
            shown(&t.info.collection_name)
        ));
    }
    if let Some(lack) = lacks(client, &t.info.schema) {
        out.push(format!(
            "`{}` cannot be created on `{}`: {lack}; leave it out of `collections` in step `{id}`",
            t.info.collection_name, step.instance
        ));
    }
    // A binlog restore onto a release not run here is checked on the loaded collection.
    let release = crate::milvus::version::binlog(&step.instance, client.server_version()).ok();
    if mode == Mode::Binlog
        && let Some(release) = &release
    {
        out.extend(super::binlog::refusals(release, &step.instance, t));
    }
    let checked = mode == Mode::Binlog && release.is_some_and(|r| !r.run_here);
    // A collection loads only with an index on every vector field (Milvus Lite excepted).
    let loads = t.loads(step) || checked;
    let indexed = mode == Mode::Rows || step.indexes;
    if loads && !client.is_lite() {
        let missing: Vec<String> = t
            .info
            .schema
            .vector_fields()
            .filter(|f| !indexed || !t.info.index_infos.iter().any(|i| i.field_name == f.name))
            .map(|f| format!("`{}`", f.name))
            .collect();
        if !missing.is_empty() && checked {
            out.push(format!(
                "`{}` would have no index on {}, so `{}` could not be loaded for the exact check \
                 every binlog restore onto Milvus {} gets (binlog mode has not been run against \
                 it); build the index on the source before the backup{}, or back it up with \
                 mode = \"rows\"",
                t.info.collection_name,
                missing.join(", "),
                t.name,
                release.map(|r| r.name()).unwrap_or_default(),
                if step.indexes {
                    ""
                } else {
                    " and set indexes = true"
                }
            ));
        } else if !missing.is_empty() {
            out.push(format!(
                "`{}` would have no index on {}, so `{}` could not be loaded after the restore; \
                 build the index on the source before the backup, or set load = false{} in step \
                 `{id}`",
                t.info.collection_name,
                missing.join(", "),
                t.name,
                if step.load == Some(true) {
                    " (or leave `load` out: the copy is then released like its source)"
                } else {
                    ""
                }
            ));
        }
    }
    out
}

/// The refusals of the step as a whole, made by the preview and by apply: a `rename` key or a
/// `collections` entry that names nothing in the backup is a typo that would silently restore
/// less (or, with `on_conflict = "drop"`, replace the wrong collection).
pub fn name_refusals(step: &RestoreStep, id: &str, backup: &BackupInfo) -> Vec<String> {
    let held: Vec<(&str, &str)> = backup
        .collection_backups
        .iter()
        .map(|c| (source_db(c), c.collection_name.as_str()))
        .collect();
    let listing = || {
        let names: Vec<String> = held
            .iter()
            .take(10)
            .map(|(_, c)| format!("`{c}`"))
            .collect();
        format!(
            "{}{}",
            names.join(", "),
            if held.len() > 10 { ", …" } else { "" }
        )
    };
    let mut out = Vec::new();
    if let crate::plan::Naming::Rename(map) = &step.naming {
        for from in map.keys() {
            if !held.iter().any(|(_, c)| c == from) {
                out.push(format!(
                    "`rename` in step `{id}` names `{from}`, which the backup at `{}` does not \
                     hold; it holds {}",
                    step.from,
                    listing()
                ));
            }
        }
    }
    for p in step.collections.iter().flatten() {
        let pat = Pattern::parse(p);
        if !held.iter().any(|(d, c)| pat.matches(d, c)) {
            out.push(format!(
                "`collections` in step `{id}` has `{p}`, which matches nothing in the backup at \
                 `{}`; it holds {}",
                step.from,
                listing()
            ));
        }
    }
    out
}

/// The aliases the restored collection gets: the backup's, renamed like the collections.
pub(super) fn aliases(step: &RestoreStep, t: &Target<'_>) -> Vec<String> {
    if !step.aliases {
        return Vec::new();
    }
    t.info
        .aliases
        .iter()
        .map(|a| step.naming.target(a))
        .collect()
}

/// The refusal of an alias that exists on the target for another collection (moving it would
/// redirect an application): checked by the preview and by apply before creating anything.
pub(super) async fn alias_refusals(
    client: &MilvusClient,
    step: &RestoreStep,
    id: &str,
    t: &Target<'_>,
) -> Result<Vec<String>> {
    // No alias can be there in a database the server does not have (`capability` refuses it)
    // or that the restore has yet to create.
    if !database_exists(client, &t.db).await? || !client.has_aliases() {
        // A server without aliases is refused by `capability` instead.
        return Ok(Vec::new());
    }
    let c = client.with_database(&t.db);
    let mut out = Vec::new();
    for alias in aliases(step, t) {
        if let Some(other) = c.describe_alias(&alias).await?
            && other != t.name
        {
            out.push(format!(
                "alias `{alias}` for `{}` already points at `{other}` on `{}`; set aliases = \
                 false in step `{id}`, or drop or move that alias first",
                t.name, step.instance
            ));
        }
    }
    Ok(out)
}

/// Creates the restored collection's aliases (idempotent: an alias already on it is kept).
pub(super) async fn create_aliases(
    client: &MilvusClient,
    step: &RestoreStep,
    t: &Target<'_>,
) -> Result<Vec<String>> {
    let mut made = Vec::new();
    for alias in aliases(step, t) {
        match client.describe_alias(&alias).await? {
            Some(on) if on == t.name => {}
            Some(other) => {
                return fail(format!(
                    "alias `{alias}` already points at `{other}` on `{}`; it is left alone",
                    step.instance
                ));
            }
            None => client.create_alias(&t.name, &alias).await?,
        }
        made.push(alias);
    }
    Ok(made)
}

/// Whether the target exists; a name over the limit cannot (Milvus refuses to look it up), nor
/// can a collection in a database the server does not have (`capability` refuses it), nor one
/// of a database the restore has yet to create (looking it up there is an error).
pub(super) async fn exists(client: &MilvusClient, t: &Target<'_>) -> Result<bool> {
    if t.name.chars().count() > MAX_NAME || !database_exists(client, &t.db).await? {
        return Ok(false);
    }
    Ok(client.with_database(&t.db).has_collection(&t.name).await?)
}

/// Whether the server has database `db` now (the default always).
async fn database_exists(client: &MilvusClient, db: &str) -> Result<bool> {
    Ok(client.lacks_database(db).is_none()
        && (db == crate::plan::DEFAULT_DATABASE
            || client.databases().await?.iter().any(|d| d == db)))
}

fn already_exists(step: &RestoreStep, id: &str, t: &Target) -> String {
    format!(
        "collection `{}` already exists on `{}` (database `{}`); set on_conflict = \"skip\" or \
         \"drop\" in step `{id}`, or drop it",
        t.name, step.instance, t.db
    )
}

/// The field types and features the schema needs that the server lacks, each naming its field
/// and feature, from what the server says it is: "v2.3.5" (Milvus) or "milvus_lite-3.2.2"
/// (Milvus Lite 3). Milvus 2.3.5 accepts most of these at CreateCollection and then fails or
/// drops them (a `nullable` flag silently; an insert leaving out a field with a default value
/// is refused), so they are refused here, before anything is created.
fn lacks(client: &MilvusClient, schema: &CollectionSchema) -> Option<String> {
    let version = client.server_version();
    let minor = crate::milvus::version::minor(version);
    // Milvus Lite 3 (pure Python) has no binary, half-precision or int8 vectors; Lite 2.x (the
    // C++ core of Milvus 2.5, which reports no version) has them, but not the types of 2.6.
    let lite3 = client.is_lite() && version.starts_with("milvus_lite-3");
    let lite2 = client.is_lite() && !lite3;
    let before = |since: (u32, u32)| minor.is_some_and(|have| have < since);
    let milvus = |since: (u32, u32)| {
        format!(
            "which Milvus {version} does not have (from {}.{})",
            since.0, since.1
        )
    };
    let mut out = Vec::new();
    for f in &schema.fields {
        let ty = DataType::try_from(f.data_type).unwrap_or(DataType::None);
        let since = match ty {
            DataType::Float16Vector | DataType::BFloat16Vector | DataType::SparseFloatVector => {
                Some((2, 4))
            }
            // Milvus 2.3.5 creates GEOMETRY and TIMESTAMPTZ fields, then refuses geometry
            // inserts; one here took timestamptz rows and went down when they were dropped.
            DataType::Int8Vector | DataType::Geometry | DataType::Timestamptz => Some((2, 6)),
            _ => None,
        };
        let typed = || format!("field `{}` is a {} field", f.name, ty.as_str_name());
        if let Some(since) = since.filter(|s| before(*s)) {
            out.push(format!("{}, {}", typed(), milvus(since)));
        }
        let lite_lacks = match ty {
            DataType::BinaryVector
            | DataType::Float16Vector
            | DataType::BFloat16Vector
            | DataType::Int8Vector => lite3,
            DataType::Geometry | DataType::Timestamptz => lite2,
            _ => false,
        };
        if lite_lacks {
            out.push(format!(
                "{}, which Milvus Lite ({version}) does not have",
                typed()
            ));
        }
        if f.nullable && before((2, 5)) {
            out.push(format!(
                "field `{}` is nullable, {}",
                f.name,
                milvus((2, 5))
            ));
        }
        if f.default_value().is_some() && before((2, 5)) {
            out.push(format!(
                "field `{}` has a default value, {}",
                f.name,
                milvus((2, 5))
            ));
        }
    }
    for func in &schema.functions {
        if before((2, 5)) {
            out.push(format!(
                "field(s) {} are computed by {} function `{}`, {}",
                func.output_field_names
                    .iter()
                    .map(|o| format!("`{o}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                func.kind_name(),
                func.name,
                milvus((2, 5))
            ));
        }
    }
    (!out.is_empty()).then(|| out.join("; "))
}

/// A restored collection whose rows do not add up (`why`) is not left half-made: it is dropped
/// and its recorded work forgotten, so the next apply restores it from the start.
pub(super) async fn discard<T>(
    ctx: &StepCtx,
    client: &MilvusClient,
    t: &Target<'_>,
    why: String,
) -> Result<T> {
    client.drop_collection(&t.name).await?;
    ctx.forget(&t.key()).await?;
    fail(format!(
        "{why}; `{}` was dropped, so the next apply restores it again",
        t.name
    ))
}

/// Creates the restore's target collection (and its database), intent first; on resume an existing collection
/// with the intent recorded and the same schema shape is the one a crashed run created. One
/// that is not ours is handled by `on_conflict`. `imports`: a binlog restore, whose target is
/// never dropped while imports into it run (that wedges Milvus 2.3's import queue). Returns
/// the step's line when the collection is skipped.
pub(super) async fn create_target(
    ctx: &StepCtx,
    step: &RestoreStep,
    client: &MilvusClient,
    t: &Target<'_>,
    schema: &CollectionSchema,
    imports: bool,
) -> Result<Option<String>> {
    let (db, target, info, key) = (t.db.as_str(), t.name.as_str(), t.info, t.key());
    if db != crate::plan::DEFAULT_DATABASE {
        ctx.once(&format!("db/{db}"), || async {
            if !database_exists(client, db).await?
                && let Err(e) = client.create_database(db).await
                // Collections restored at once into a new database all create it; one wins.
                && !database_exists(client, db).await?
            {
                return Err(e.into());
            }
            Ok(true)
        })
        .await?;
    }
    let create_key = format!("{key}/create");
    let intent = match ctx.state(&create_key)? {
        Some(TaskState::Done(_)) => return Ok(None),
        intent => intent,
    };
    if client.has_collection(target).await? {
        let ours = matches!(intent, Some(TaskState::Intent(_))) && {
            let desc = client.describe_collection(target).await?;
            CollectionSchema::from(&desc.schema).shape() == schema.shape()
        };
        if !ours {
            match step.on_conflict {
                OnConflict::Fail => return fail(already_exists(step, &ctx.step, t)),
                OnConflict::Skip => {
                    let line = format!("`{target}` exists, skipped (on_conflict = \"skip\")");
                    ctx.events.info(&ctx.step, &line);
                    ctx.set(&key, TaskState::Done(to_json(&line))).await?;
                    return Ok(Some(line));
                }
                OnConflict::Drop => {
                    if imports {
                        let pending = client
                            .list_import_tasks(target, 0)
                            .await?
                            .into_iter()
                            .filter(|t| in_flight(t.state))
                            .count();
                        if pending > 0 {
                            return fail(format!(
                                "collection `{target}` on `{}` has {pending} import(s) in \
                                 flight; it is not dropped while they run (that wedges \
                                 Milvus 2.3's import queue). Wait and apply again",
                                step.instance
                            ));
                        }
                    }
                    ctx.events.warn(
                        &ctx.step,
                        format!("dropping existing `{target}` (on_conflict = \"drop\")"),
                    );
                    client.drop_collection(target).await?;
                }
            }
        }
    }
    if !client.has_collection(target).await? {
        ctx.set(&create_key, TaskState::Intent(to_json(&target)))
            .await?;
        let partitions = key_partitions(info).unwrap_or(0);
        client
            .create_collection_partitioned(
                target,
                &schema.to_pb(target),
                info.shards_num.max(1),
                ConsistencyLevel::try_from(info.consistency_level)
                    .unwrap_or(ConsistencyLevel::Bounded),
                &meta::kv_to_pairs(&info.properties),
                partitions,
            )
            .await?;
    }
    if let Some(asked) = key_partitions(info) {
        let made = client.show_partitions(target).await?.len() as i64;
        if made != asked {
            ctx.events.warn(
                &ctx.step,
                format!(
                    "`{target}` has a partition key: {} made {made} partitions where the source \
                     had {asked} (the server decides; rows are routed by key either way)",
                    step.instance
                ),
            );
        }
    }
    ctx.set(&create_key, TaskState::Done(to_json(&true)))
        .await?;
    Ok(None)
}

/// The partitions a partition-key collection asks its server for: as many as the source had,
/// so every segment (or file) finds its partition by name. Milvus Lite lists a `_default`
/// partition beside its key partitions, which is not one of them.
pub fn key_partitions(info: &CollectionBackupInfo) -> Option<i64> {
    info.schema
        .fields
        .iter()
        .any(|f| f.is_partition_key)
        .then(|| {
            info.partition_backups
                .iter()
                .filter(|p| p.partition_name != "_default")
                .count() as i64
        })
}

pub(super) fn failed(s: ImportState) -> bool {
    matches!(
        s,
        ImportState::ImportFailed | ImportState::ImportFailedAndCleaned
    )
}

fn in_flight(s: ImportState) -> bool {
    !failed(s) && s != ImportState::ImportCompleted
}
