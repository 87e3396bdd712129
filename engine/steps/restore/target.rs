//! The targets of a restore: which collections of the backup, under which names and databases,
//! the refusals checked before anything is created, creating the target collection, and indexing
//! and loading it.

use crate::checkpoint::TaskState;
use crate::format::meta::{BackupInfo, CollectionBackupInfo};
use crate::milvus::MilvusClient;
use crate::milvus::pb::common::ConsistencyLevel;
use crate::plan::{OnConflict, Pattern, RestoreStep};
use crate::schema::{self, CollectionSchema};
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
pub(super) const MAX_NAME: usize = 255;

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
pub(super) async fn database_exists(client: &MilvusClient, db: &str) -> Result<bool> {
    Ok(client.lacks_database(db).is_none()
        && (db == crate::plan::DEFAULT_DATABASE
            || client.databases().await?.iter().any(|d| d == db)))
}

pub(super) fn already_exists(step: &RestoreStep, id: &str, t: &Target) -> String {
    format!(
        "collection `{}` already exists on `{}` (database `{}`); set on_conflict = \"skip\" or \
         \"drop\" in step `{id}`, or drop it",
        t.name, step.instance, t.db
    )
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
                            .filter(|t| t.state.in_flight())
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
                &schema::kv_to_pairs(&info.properties),
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

/// Indexes (as in the backup) and load: needed to query the copy, and wanted at the end.
pub(super) async fn make_queryable(
    ctx: &StepCtx,
    c: &MilvusClient,
    target: &str,
    info: &CollectionBackupInfo,
    load: bool,
) -> Result<()> {
    let have = c.describe_index(target).await?;
    for idx in &info.index_infos {
        if !have.iter().any(|h| h.field_name == idx.field_name) {
            let params: Vec<(String, String)> = idx.params.clone().into_iter().collect();
            if let Err(e) = c
                .create_index(target, &idx.field_name, &idx.index_name, &params)
                .await
            {
                // Milvus Lite reports an index without its build params (no `nlist`), which
                // another server may refuse: fall back to AUTOINDEX with the same metric.
                let metric: Vec<(String, String)> = idx
                    .params
                    .iter()
                    .filter(|(k, _)| k.as_str() == "metric_type")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .chain([("index_type".to_string(), "AUTOINDEX".to_string())])
                    .collect();
                ctx.events.warn(
                    &ctx.step,
                    format!(
                        "index `{}` of `{target}` could not be created as in the backup ({e}); \
                         creating AUTOINDEX instead",
                        idx.index_name
                    ),
                );
                c.create_index(target, &idx.field_name, &idx.index_name, &metric)
                    .await?;
            }
        }
    }
    if !load {
        return Ok(());
    }
    ctx.once(&format!("coll/{}.{target}/load", c.database()), || async {
        c.load_collection(target).await?;
        c.wait_loaded(target, crate::steps::ctx::LOAD_TIMEOUT)
            .await?;
        Ok(true)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Naming;
    use crate::schema::FieldSchema;
    use crate::steps::restore::fixtures::{backup, coll, step};

    fn names(targets: &[Target<'_>]) -> Vec<String> {
        targets.iter().map(|t| t.unit()).collect()
    }

    #[test]
    fn a_restore_without_collections_selects_every_collection_of_the_backup() {
        let b = backup(vec![coll("", "a", &[]), coll("shop", "b", &[])]);
        assert_eq!(names(&selected(&step(), &b)), ["default.a", "shop.b"]);
    }

    #[test]
    fn collections_patterns_select_by_database_and_name() {
        let b = backup(vec![
            coll("", "a", &[]),
            coll("shop", "items", &[]),
            coll("shop", "orders", &[]),
        ]);
        let mut s = step();
        s.collections = Some(vec!["shop.o*".into(), "a".into()]);
        assert_eq!(names(&selected(&s, &b)), ["default.a", "shop.orders"]);
    }

    #[test]
    fn targets_are_named_by_suffix_or_rename_and_put_in_the_step_database() {
        let b = backup(vec![coll("", "a", &[]), coll("shop", "b", &[])]);
        let mut s = step();
        s.naming = Naming::Suffix("_bak".into());
        assert_eq!(names(&selected(&s, &b)), ["default.a_bak", "shop.b_bak"]);
        s.naming = Naming::Rename([("b".to_string(), "b2".to_string())].into());
        s.database = Some("copy".into());
        let t = selected(&s, &b);
        assert_eq!(names(&t), ["copy.a", "copy.b2"]);
        assert_eq!(t[1].key(), "coll/copy.b2");
        assert_eq!(
            t[1].info.collection_name, "b",
            "the source stays the backup's"
        );
    }

    #[test]
    fn an_empty_backup_database_is_the_default_one() {
        assert_eq!(source_db(&coll("", "a", &[])), "default");
        assert_eq!(source_db(&coll("shop", "a", &[])), "shop");
    }

    #[test]
    fn a_target_loads_as_the_plan_says_else_as_its_source_was() {
        let mut c = coll("", "a", &[]);
        let b = backup(vec![c.clone()]);
        let mut s = step();
        assert!(
            selected(&s, &b)[0].loads(&s),
            "no load state recorded: loaded"
        );
        c.load_state = "LoadStateNotLoad".into();
        let released = backup(vec![c.clone()]);
        assert!(!selected(&s, &released)[0].loads(&s));
        c.load_state = LOADED.into();
        assert!(selected(&s, &backup(vec![c]))[0].loads(&s));
        s.load = Some(true);
        assert!(selected(&s, &released)[0].loads(&s));
    }

    #[test]
    fn aliases_are_renamed_like_the_collections_and_left_out_when_off() {
        let mut c = coll("", "a", &[]);
        c.aliases = vec!["live".into(), "a_alias".into()];
        let b = backup(vec![c]);
        let mut s = step();
        s.naming = Naming::Suffix("_bak".into());
        let t = selected(&s, &b);
        assert_eq!(aliases(&s, &t[0]), ["live_bak", "a_alias_bak"]);
        s.aliases = false;
        assert!(aliases(&s, &t[0]).is_empty());
    }

    #[test]
    fn a_partition_key_collection_asks_for_its_source_partitions_but_default() {
        let mut c = coll("", "a", &["_default", "_default_0", "_default_1", "p"]);
        assert_eq!(
            key_partitions(&c),
            None,
            "no partition key: the server's own"
        );
        c.schema.fields.push(FieldSchema {
            name: "tenant".into(),
            is_partition_key: true,
            ..Default::default()
        });
        assert_eq!(key_partitions(&c), Some(3));
    }

    #[test]
    fn an_existing_target_is_refused_naming_the_way_out() {
        let b = backup(vec![coll("shop", "a", &[])]);
        let s = step();
        assert_eq!(
            already_exists(&s, "restore", &selected(&s, &b)[0]),
            "collection `a` already exists on `milvus_b` (database `shop`); set on_conflict = \
             \"skip\" or \"drop\" in step `restore`, or drop it"
        );
    }
}
