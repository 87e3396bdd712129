//! Every refusal of a restore in one place, composed from what each part knows (names, the
//! target's server, its version and capabilities, the binlog layout): the preview shows them as
//! conflicts and apply checks them before it creates anything, in the same words.

use super::target::{MAX_NAME, Mode, Target, aliases, already_exists, database_exists, source_db};
use super::{binlog, capability};
use crate::format::meta::BackupInfo;
use crate::milvus::MilvusClient;
use crate::milvus::pb::schema::DataType;
use crate::plan::{OnConflict, Pattern, RestoreStep};
use crate::schema::CollectionSchema;
use crate::steps::ctx::Result;

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
    out.extend(capability::refusals(client, step, id, t));
    let n = t.name.chars().count();
    if n > MAX_NAME {
        out.push(format!(
            "the target name `{}` of `{}` is {n} characters, over Milvus's limit of {MAX_NAME}; \
             shorten the `suffix` or `rename` of step `{id}`",
            shown(&t.name),
            shown(&t.info.collection_name)
        ));
    }
    if let Some(lack) = lacks(client.server_version(), client.is_lite(), &t.info.schema) {
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
        out.extend(binlog::refusals(release, &step.instance, t));
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

/// The field types and features the schema needs that the server lacks, each naming its field
/// and feature, from what the server says it is (`version`): "v2.3.5" (Milvus) or
/// "milvus_lite-3.2.2" (Milvus Lite 3, `lite`). Milvus 2.3.5 accepts most of these at
/// CreateCollection and then fails or drops them (a `nullable` flag silently; an insert leaving
/// out a field with a default value is refused), so they are refused here, before anything is
/// created.
fn lacks(version: &str, lite: bool, schema: &CollectionSchema) -> Option<String> {
    let minor = crate::milvus::version::minor(version);
    // Milvus Lite 3 (pure Python) has no binary, half-precision or int8 vectors; Lite 2.x (the
    // C++ core of Milvus 2.5, which reports no version) has them, but not the types of 2.6.
    let lite3 = lite && version.starts_with("milvus_lite-3");
    let lite2 = lite && !lite3;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Naming;
    use crate::schema::FieldSchema;
    use crate::steps::restore::fixtures::{backup, coll, step};

    #[test]
    fn a_rename_of_a_collection_the_backup_lacks_is_refused() {
        let b = backup(vec![coll("", "a", &[]), coll("shop", "b", &[])]);
        let mut s = step();
        s.naming = Naming::Rename([("a".into(), "a2".into()), ("c".into(), "c2".into())].into());
        assert_eq!(
            name_refusals(&s, "restore", &b),
            [
                "`rename` in step `restore` names `c`, which the backup at `bucket_b:backup/b1` \
              does not hold; it holds `a`, `b`"
            ]
        );
    }

    #[test]
    fn a_collections_entry_that_matches_nothing_is_refused() {
        let b = backup(vec![coll("", "a", &[]), coll("shop", "b", &[])]);
        let mut s = step();
        s.collections = Some(vec!["a".into(), "shop.*".into(), "other.b".into()]);
        assert_eq!(
            name_refusals(&s, "restore", &b),
            [
                "`collections` in step `restore` has `other.b`, which matches nothing in the \
              backup at `bucket_b:backup/b1`; it holds `a`, `b`"
            ]
        );
    }

    #[test]
    fn the_listing_of_a_large_backup_stops_at_ten_names() {
        let b = backup(
            (0..12)
                .map(|i| coll("", &format!("c{i:02}"), &[]))
                .collect(),
        );
        let mut s = step();
        s.collections = Some(vec!["nope".into()]);
        let why = name_refusals(&s, "r", &b).remove(0);
        assert!(
            why.ends_with(
                "it holds `c00`, `c01`, `c02`, `c03`, `c04`, `c05`, `c06`, `c07`, `c08`, `c09`, …"
            ),
            "{why}"
        );
    }

    #[test]
    fn names_that_all_match_are_not_refused() {
        let b = backup(vec![coll("", "a", &[])]);
        let mut s = step();
        s.naming = Naming::Rename([("a".into(), "z".into())].into());
        s.collections = Some(vec!["default.a".into()]);
        assert!(name_refusals(&s, "restore", &b).is_empty());
    }

    fn field(name: &str, ty: DataType) -> FieldSchema {
        FieldSchema {
            name: name.into(),
            data_type: ty as i32,
            ..Default::default()
        }
    }

    fn schema(fields: Vec<FieldSchema>) -> CollectionSchema {
        CollectionSchema {
            fields,
            ..Default::default()
        }
    }

    #[test]
    fn field_types_newer_than_the_target_release_are_refused_by_name() {
        let s = schema(vec![
            field("id", DataType::Int64),
            field("half", DataType::Float16Vector),
            field("at", DataType::Timestamptz),
        ]);
        assert_eq!(
            lacks("v2.3.5", false, &s).as_deref(),
            Some(
                "field `half` is a Float16Vector field, which Milvus v2.3.5 does not have (from \
                 2.4); field `at` is a Timestamptz field, which Milvus v2.3.5 does not have \
                 (from 2.6)"
            )
        );
        assert_eq!(
            lacks("v2.5.4", false, &s).as_deref(),
            Some("field `at` is a Timestamptz field, which Milvus v2.5.4 does not have (from 2.6)")
        );
        assert_eq!(lacks("v2.6.0", false, &s), None);
    }

    #[test]
    fn nullable_fields_are_refused_before_milvus_2_5() {
        let mut f = field("tag", DataType::VarChar);
        f.nullable = true;
        let s = schema(vec![f]);
        assert_eq!(
            lacks("v2.4.9", false, &s).as_deref(),
            Some("field `tag` is nullable, which Milvus v2.4.9 does not have (from 2.5)")
        );
        assert_eq!(lacks("v2.5.0", false, &s), None);
    }

    #[test]
    fn milvus_lite_3_lacks_binary_vectors_and_lite_2_the_types_of_2_6() {
        let s = schema(vec![
            field("bits", DataType::BinaryVector),
            field("at", DataType::Timestamptz),
        ]);
        assert_eq!(
            lacks("milvus_lite-3.2.2", true, &s).as_deref(),
            Some(
                "field `bits` is a BinaryVector field, which Milvus Lite (milvus_lite-3.2.2) \
                 does not have"
            )
        );
        assert_eq!(
            lacks("", true, &s).as_deref(),
            Some("field `at` is a Timestamptz field, which Milvus Lite () does not have")
        );
    }
}
