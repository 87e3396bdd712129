//! The plan file as written: serde types that keep spans, and the source of the JSON Schema.
//!
//! Doc comments on these fields are the user reference shown by editors (via the schema).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

/// A value with its byte range in the plan file. Transparent for serde and schemars.
#[derive(Debug, Clone)]
pub struct Sp<T>(pub Spanned<T>);

impl<T> Sp<T> {
    pub fn get(&self) -> &T {
        self.0.get_ref()
    }
    pub fn span(&self) -> std::ops::Range<usize> {
        self.0.span()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Spanned::<T>::deserialize(d).map(Sp)
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

// Schema only: `load.rs` reads the top level by hand, and each section's entries as the tagged
// enums below.
/// A planrun migration plan (format version 1).
#[derive(JsonSchema)]
#[schemars(title = "planrun plan", extend("additionalProperties" = false))]
#[allow(dead_code)]
pub struct PlanSchema {
    /// Format version; must be `1`.
    version: u32,
    /// The plan's name, shown in output and used to name its runs.
    name: String,
    /// Values for templates: `{{ vars.NAME }}`. Strings, numbers, booleans or lists.
    #[serde(default)]
    vars: BTreeMap<String, serde_json::Value>,
    /// Run settings.
    #[serde(default)]
    settings: RawSettings,
    /// Milvus servers, by id.
    #[serde(default)]
    instances: BTreeMap<String, RawInstance>,
    /// Places that hold backups and Milvus data, by id.
    #[serde(default)]
    buckets: BTreeMap<String, RawBucket>,
    /// The steps, by id. Order of execution comes from `needs` and from locations.
    #[serde(default)]
    steps: BTreeMap<String, RawStep>,
}

// The tables whose `type` key selects their fields. Each enum is the one list of its types: a
// variant's name, lowercased, is the `type` that selects it, and its struct the keys it takes.
// serde reads them externally tagged (`{ backup = { ... } }`: the loader takes `type` out of the
// table by hand, since `Spanned` does not survive `#[serde(tag)]`), the schema shows them
// internally tagged (`type = "backup"` beside the other keys). The loader's names, "did you
// mean" and accepted keys come from that schema ([`Tagged::types`]).

/// `[instances.<id>]`: the `type` key selects the fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Instance", tag = "type")]
#[serde(rename_all = "lowercase")]
pub enum RawInstance {
    /// A Milvus server (2.3 or later).
    Milvus(RawMilvus),
}

/// `[buckets.<id>]`: the `type` key selects the fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Bucket", tag = "type")]
#[serde(rename_all = "lowercase")]
pub enum RawBucket {
    /// An S3-compatible bucket (AWS S3, MinIO, ...).
    S3(Box<RawS3>),
    /// A local directory.
    Local(RawLocal),
}

/// `[steps.<id>]`: the `type` key selects the fields.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "Step", tag = "type")]
#[serde(rename_all = "lowercase")]
pub enum RawStep {
    /// Back up collections of an instance into a location.
    Backup(RawBackup),
    /// Copy every object under one location to another.
    Copy(RawCopy),
    /// Restore a backup from a location into an instance.
    Restore(RawRestore),
    /// Compare collections with their copies: schema, partitions, row counts, indexes, content.
    Verify(RawVerify),
    /// Point an alias at a collection (create it, or move it from another collection).
    Alias(RawAlias),
}

impl RawStep {
    /// Ids of steps that must finish first, as written.
    pub fn needs(&self) -> &Option<Vec<Sp<String>>> {
        match self {
            RawStep::Backup(b) => &b.needs,
            RawStep::Copy(c) => &c.needs,
            RawStep::Restore(r) => &r.needs,
            RawStep::Verify(v) => &v.needs,
            RawStep::Alias(a) => &a.needs,
        }
    }
}

/// `[settings]`
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(rename = "Settings")]
#[serde(deny_unknown_fields)]
pub struct RawSettings {
    /// How many steps may run at once. Default 4.
    pub concurrency: Option<Sp<u64>>,
    /// How many collections one step works on at once (backup, restore, verify). Default 4.
    pub collections: Option<Sp<u64>>,
    /// How many imports may be in flight on one Milvus instance at once. Default 4.
    pub imports: Option<Sp<u64>>,
    /// How many object copies may be in flight at once, across steps and collections. Default 32.
    pub copies: Option<Sp<u64>>,
    /// How many times an operation that may succeed later is retried. Default 5.
    pub retries: Option<Sp<u64>>,
    /// Start a copy or restore on each collection as soon as the step before it (a backup, a
    /// copy) has finished that collection, instead of after the whole step. Default true.
    pub pipeline: Option<Sp<bool>>,
    /// Where run state is kept, relative to the plan file. Default `.planrun`.
    pub state_dir: Option<Sp<String>>,
    /// Rows mode: how many readers read one collection at once, each over its own range of
    /// primary keys. Default 2.
    pub readers: Option<Sp<u64>>,
    /// Rows mode: the size in bytes a Parquet file of a backup grows to before the next one is
    /// begun (it holds whole pages of about 16 MiB each, at least one). Default 268435456
    /// (256 MiB).
    pub file_bytes: Option<Sp<u64>>,
}

/// `[instances.<id>]` with `type = "milvus"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMilvus {
    /// `http://host:port` or `https://host:port` (gRPC port, usually 19530).
    pub uri: Sp<String>,
    /// User name (with `password`) when authentication is on.
    pub user: Option<Sp<String>>,
    /// Password of `user`. Use `{{ env.NAME }}` to keep it out of the file.
    pub password: Option<Sp<String>>,
    /// API token (`user:password` or a Zilliz Cloud key), instead of `user`/`password`.
    pub token: Option<Sp<String>>,
    /// Default database for this instance.
    pub database: Option<Sp<String>>,
    /// CA certificate (PEM) to trust, relative to the plan file.
    pub ca_cert: Option<Sp<String>>,
    /// Client certificate (PEM) for mutual TLS, relative to the plan file.
    pub client_cert: Option<Sp<String>>,
    /// Client key (PEM) for mutual TLS, relative to the plan file.
    pub client_key: Option<Sp<String>>,
    /// Name to verify the server certificate against, when it differs from the uri's host.
    pub server_name: Option<Sp<String>>,
    /// Where this instance keeps its binlogs: `"<bucket id>:<minio.rootPath>"`. Enables binlog mode.
    pub data: Option<Sp<String>>,
    /// Management HTTP address (to pause garbage collection). Default `http://<uri host>:9091`.
    pub management: Option<Sp<String>>,
    /// Per-request timeout in seconds.
    pub timeout: Option<Sp<u64>>,
    /// At most this many requests per second to this instance (default 100). A rate-limit
    /// answer slows planrun down further, and it speeds up again as calls succeed.
    pub requests_per_second: Option<Sp<u64>>,
}

/// `[buckets.<id>]` with `type = "s3"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    /// Endpoint URL for S3-compatible stores (MinIO). Omit for AWS.
    pub endpoint: Option<Sp<String>>,
    /// Bucket name.
    pub bucket: Sp<String>,
    /// Region, e.g. `us-east-1`.
    pub region: Option<Sp<String>>,
    /// Access key id. Omit all keys to use the standard AWS credential chain.
    pub access_key_id: Option<Sp<String>>,
    /// Secret access key.
    pub secret_access_key: Option<Sp<String>>,
    /// Session token for temporary credentials.
    pub session_token: Option<Sp<String>>,
    /// Path-style addressing. Default true when `endpoint` is set, else false.
    pub path_style: Option<Sp<bool>>,
    /// Without keys, also ask the EC2 instance metadata service (IMDS) for an instance role's
    /// credentials. Default: true for AWS itself (no `endpoint`), false with an `endpoint`,
    /// whose server cannot take an EC2 role's keys.
    pub instance_metadata: Option<Sp<bool>>,
    /// At most this many requests per second to this bucket (default 1000).
    pub requests_per_second: Option<Sp<u64>>,
    /// At most this many bytes per second moved through planrun to or from this bucket
    /// (streamed copies, rows files, backups read for checks). Default: no cap.
    pub bytes_per_second: Option<Sp<u64>>,
}

/// `[buckets.<id>]` with `type = "local"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLocal {
    /// A directory, relative to the plan file.
    pub path: Sp<String>,
}

/// `mode` of a backup step.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "Mode")]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Copy binlog files from the instance's `data` bucket.
    Binlog,
    /// Read rows through the query API.
    Rows,
}

/// `on_conflict` of a restore step.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "OnConflict")]
#[serde(rename_all = "lowercase")]
pub enum RawOnConflict {
    /// Stop with an error (default).
    Fail,
    /// Leave the existing collection alone and go on.
    Skip,
    /// Drop the existing collection and restore.
    Drop,
}

/// `auto_id` of a restore step: what a rows-mode restore does with an auto_id collection's keys.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "AutoId")]
#[serde(rename_all = "snake_case")]
pub enum RawAutoId {
    /// Keep the source's primary keys; the copy is created with auto_id off (default).
    KeepKeys,
    /// Keep auto_id; the target assigns new primary keys to every row.
    NewKeys,
}

/// `method` of a restore step.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[schemars(rename = "Method")]
#[serde(rename_all = "snake_case")]
pub enum RawMethod {
    /// Milvus's bulk import of the backup's Parquet files; refused where it cannot be done.
    Import,
    /// Inserts through the proxy, batch by batch.
    Insert,
}

/// `[steps.<id>]` with `type = "backup"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBackup {
    /// Ids of steps that must finish first (added to those inferred from locations).
    pub needs: Option<Vec<Sp<String>>>,
    /// Id of the instance to back up.
    pub instance: Sp<String>,
    /// Collections: `name`, `db.name`, or globs like `db.*`, `logs_*`.
    pub collections: Vec<Sp<String>>,
    /// Location to write the backup to: `"<bucket id>:<path>"`.
    pub to: Sp<String>,
    /// `binlog` (default when the instance has `data`) or `rows`.
    pub mode: Option<Sp<RawMode>>,
}

/// `[steps.<id>]` with `type = "copy"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCopy {
    /// Ids of steps that must finish first.
    pub needs: Option<Vec<Sp<String>>>,
    /// Location to copy from.
    pub from: Sp<String>,
    /// Location to copy to.
    pub to: Sp<String>,
}

/// `[steps.<id>]` with `type = "restore"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRestore {
    /// Ids of steps that must finish first.
    pub needs: Option<Vec<Sp<String>>>,
    /// Id of the instance to restore into.
    pub instance: Sp<String>,
    /// Location of the backup.
    pub from: Sp<String>,
    /// Restore only these collections of the backup (default: all).
    pub collections: Option<Vec<Sp<String>>>,
    /// Append this to every restored collection's name, e.g. `_bak`.
    pub suffix: Option<Sp<String>>,
    /// New names: `{ old = "new" }`. Collections not listed keep their name.
    pub rename: Option<BTreeMap<String, Sp<String>>>,
    /// Restore into this database (default: the collection's own).
    pub database: Option<Sp<String>>,
    /// When the target collection exists: `fail` (default), `skip` or `drop`.
    pub on_conflict: Option<Sp<RawOnConflict>>,
    /// Recreate indexes. Default true.
    pub indexes: Option<Sp<bool>>,
    /// Recreate the aliases the backup recorded, renamed like the collections (`suffix` or
    /// `rename`). Default true.
    pub aliases: Option<Sp<bool>>,
    /// Load the collection after restoring: `true`, `false`, or (by default) as the source
    /// collection was when it was backed up.
    pub load: Option<Sp<bool>>,
    /// Rows mode, collections with auto_id: `keep_keys` (default: the copy has the source's
    /// keys and auto_id off) or `new_keys` (the copy keeps auto_id and gets new keys).
    pub auto_id: Option<Sp<RawAutoId>>,
    /// Rows mode: how the rows go in. By default by Milvus's bulk import of the backup's
    /// Parquet files where the instance has `data` and its release takes every field's type,
    /// by insert otherwise (the preview says which, and why). `import` refuses a collection
    /// that cannot be imported; `insert` always inserts.
    pub method: Option<Sp<RawMethod>>,
}

/// `source`/`target` of a verify step: `{ instance = "...", collection = "..." }`.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(rename = "CollectionRef")]
#[serde(deny_unknown_fields)]
pub struct RawCollectionRef {
    /// Id of the instance.
    pub instance: Sp<String>,
    /// Collection name (or `db.name`).
    pub collection: Sp<String>,
    /// Database (default: the instance's, or `default`).
    pub database: Option<Sp<String>>,
}

/// `[steps.<id>]` with `type = "verify"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    /// Ids of steps that must finish first.
    pub needs: Option<Vec<Sp<String>>>,
    /// The original collection (with `target`; instead of `restore`).
    pub source: Option<RawCollectionRef>,
    /// The copy to check (with `source`; instead of `restore`).
    pub target: Option<RawCollectionRef>,
    /// Id of a restore step: verify every collection it restores against the collection its
    /// backup was taken from. Runs after that step.
    pub restore: Option<Sp<String>>,
}

/// `[steps.<id>]` with `type = "alias"`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAlias {
    /// Ids of steps that must finish first; must include a verify step.
    pub needs: Option<Vec<Sp<String>>>,
    /// Id of the instance.
    pub instance: Sp<String>,
    /// The alias to create or move.
    pub alias: Sp<String>,
    /// The collection the alias points at afterwards.
    pub collection: Sp<String>,
    /// Database of the alias and collection (default: the instance's, or `default`).
    pub database: Option<Sp<String>>,
}

/// The keys a table of one type accepts, and which are required, from its schema.
#[derive(Debug)]
pub struct Keys {
    pub all: Vec<String>,
    pub required: Vec<String>,
}

impl Keys {
    /// From an object schema's `properties` and `required`, without the `type` tag.
    fn from_schema(schema: &serde_json::Value) -> Keys {
        let names = |v: Option<&serde_json::Value>| -> Vec<String> {
            match v {
                Some(serde_json::Value::Object(o)) => o.keys().cloned().collect(),
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                _ => vec![],
            }
            .into_iter()
            .filter(|k| k != TAG)
            .collect()
        };
        Keys {
            all: names(schema.get("properties")),
            required: names(schema.get("required")),
        }
    }
}

/// The key that selects an entry's type.
const TAG: &str = "type";

/// The keys `[settings]` accepts, computed once from the schema so they never drift.
pub fn settings_keys() -> &'static Keys {
    static KEYS: LazyLock<Keys> =
        LazyLock::new(|| Keys::from_schema(schemars::schema_for!(RawSettings).as_value()));
    &KEYS
}

/// The types of one tagged table, in declaration order, each with the keys it accepts.
#[derive(Debug)]
pub struct Types(Vec<(String, Keys)>);

impl Types {
    /// Read from the schema of a tagged enum: one `oneOf` entry per variant, its `type` a const.
    fn of<T: JsonSchema>() -> Types {
        let schema = schemars::schema_for!(T);
        let variants = schema.get("oneOf").and_then(|v| v.as_array());
        Types(
            variants
                .into_iter()
                .flatten()
                .map(|v| {
                    let name = v
                        .pointer(&format!("/properties/{TAG}/const"))
                        .and_then(|n| n.as_str())
                        .expect("a tagged variant's schema has a const `type`");
                    (name.to_string(), Keys::from_schema(v))
                })
                .collect(),
        )
    }

    /// The `type` names, as the plan spells them.
    pub fn names(&'static self) -> impl Iterator<Item = &'static str> + Clone {
        self.0.iter().map(|(n, _)| n.as_str())
    }

    /// The type called `name` (its `'static` spelling) and its keys.
    pub fn get(&'static self, name: &str) -> Option<(&'static str, &'static Keys)> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, k)| (n.as_str(), k))
    }
}

/// A table whose `type` key selects its fields (see the enums above).
pub trait Tagged: JsonSchema + for<'de> Deserialize<'de> {
    /// Its types, computed once from its schema.
    fn types() -> &'static Types;
}

macro_rules! tagged {
    ($($t:ty),*) => {$(
        impl Tagged for $t {
            fn types() -> &'static Types {
                static TYPES: LazyLock<Types> = LazyLock::new(Types::of::<$t>);
                &TYPES
            }
        }
    )*};
}

tagged!(RawInstance, RawBucket, RawStep);

/// The JSON Schema of the plan format, as written to `schemas/plan.schema.json`.
pub fn schema_json() -> String {
    let mut schema = schemars::schema_for!(PlanSchema).to_value();
    drop_null(&mut schema);
    let mut text = serde_json::to_string_pretty(&schema).expect("schemas always serialise");
    text.push('\n');
    text
}

/// TOML has no null (optional keys are simply absent): remove the `null` alternatives schemars
/// adds for `Option` fields so editors do not suggest it.
fn drop_null(v: &mut serde_json::Value) {
    use serde_json::Value;
    let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
    if let Value::Object(o) = v {
        if let Some(Value::Array(types)) = o.get_mut("type") {
            types.retain(|t| t.as_str() != Some("null"));
            if types.len() == 1 {
                let only = types.remove(0);
                o.insert("type".into(), only);
            }
        }
        if let Some(Value::Array(alts)) = o.get("anyOf")
            && alts.len() == 2
            && alts.iter().any(is_null)
        {
            let keep = alts
                .iter()
                .find(|a| !is_null(a))
                .cloned()
                .unwrap_or_default();
            o.remove("anyOf");
            if let Value::Object(k) = keep {
                for (key, val) in k {
                    o.entry(key).or_insert(val);
                }
            }
        }
        for child in o.values_mut() {
            drop_null(child);
        }
    } else if let Value::Array(a) = v {
        for child in a {
            drop_null(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_come_from_the_enums_in_declaration_order() {
        let names = |t: &'static Types| t.names().collect::<Vec<_>>();
        assert_eq!(
            names(RawStep::types()),
            ["backup", "copy", "restore", "verify", "alias"]
        );
        assert_eq!(names(RawBucket::types()), ["s3", "local"]);
        assert_eq!(names(RawInstance::types()), ["milvus"]);
    }

    #[test]
    fn keys_come_from_each_variant_without_the_tag() {
        let (name, k) = RawStep::types().get("backup").unwrap();
        assert_eq!(name, "backup");
        assert_eq!(k.all, ["collections", "instance", "mode", "needs", "to"]);
        assert_eq!(k.required, ["instance", "collections", "to"]);
        let (_, k) = RawBucket::types().get("local").unwrap();
        assert_eq!(
            (k.all.as_slice(), k.required.as_slice()),
            (&["path".to_string()][..], &["path".to_string()][..])
        );
        assert!(RawStep::types().get("Backup").is_none());
        assert!(settings_keys().all.contains(&"state_dir".to_string()));
        assert!(settings_keys().required.is_empty());
    }
}
