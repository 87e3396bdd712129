//! What a restore asks of its target server that the server was found, on connecting, not to
//! have. Detected from the server's answers (`MilvusClient::connect`), not from a version string:
//! Milvus Lite 2.x reports none. Type and feature gaps known from a reported version are
//! `target::lacks`.

use super::target::Target;
use crate::milvus::MilvusClient;
use crate::plan::RestoreStep;

/// The refusals of one target, in the words the preview shows and apply fails with.
pub(super) fn refusals(
    client: &MilvusClient,
    step: &RestoreStep,
    id: &str,
    t: &Target,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(e) = client.lacks_database(&t.db) {
        let hint = match &step.database {
            Some(_) => format!("leave out `database` in step `{id}`"),
            // The database comes from the backup: the collection was backed up from it.
            None => format!(
                "it was backed up from database `{}`; set database = \"default\" in step `{id}`",
                t.db
            ),
        };
        out.push(format!(
            "`{}` cannot be restored into database `{}`: {e}; {hint}",
            t.info.collection_name, t.db
        ));
    }
    // A partition key's partitions are the server's to make; named ones must be created.
    let named: Vec<String> = t
        .info
        .partition_backups
        .iter()
        .filter(|p| p.partition_name != "_default")
        .map(|p| format!("`{}`", p.partition_name))
        .collect();
    if !client.has_partitions()
        && !named.is_empty()
        && !t.info.schema.fields.iter().any(|f| f.is_partition_key)
    {
        out.push(format!(
            "`{}` has partitions {}, which `{}` cannot hold: it has no partitions (it answers \
             UNIMPLEMENTED for ShowPartitions; {}); leave it out of `collections` in step `{id}`",
            t.info.collection_name,
            named.join(", "),
            step.instance,
            client.server_version()
        ));
    }
    let aliases = super::target::aliases(step, t);
    if !client.has_aliases() && !aliases.is_empty() {
        out.push(format!(
            "`{}` has aliases {} in the backup, which `{}` cannot hold (it answers UNIMPLEMENTED \
             for ListAliases; {}); set aliases = false in step `{id}`",
            t.info.collection_name,
            aliases
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", "),
            step.instance,
            client.server_version()
        ));
    }
    if client.refuses_nullable()
        && let Some(f) = t.info.schema.fields.iter().find(|f| f.nullable)
    {
        out.push(format!(
            "`{}` cannot be created on `{}`: field `{}` is nullable, which `{}` ({}) refuses; \
             leave it out of `collections` in step `{id}`",
            t.info.collection_name,
            step.instance,
            f.name,
            step.instance,
            client.server_version()
        ));
    }
    out
}
