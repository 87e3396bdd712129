//! The resolved plan: templates rendered, references checked, defaults applied; what the engine runs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::location::Location;
use super::mask::Masks;
use crate::secret::Secret;
use crate::storage::StorageConfig;

/// The database a collection is in when the plan names none (Milvus's own default).
pub const DEFAULT_DATABASE: &str = "default";

/// A checked plan. Build it with [`crate::plan::load`] or [`crate::plan::load_str`].
///
/// `Debug` prints the masked [`Plan::describe_json`] (`describe.rs`), never env-derived values.
#[derive(Clone)]
pub struct Plan {
    pub name: String,
    /// The plan file as given on the command line.
    pub path: PathBuf,
    pub settings: Settings,
    pub instances: BTreeMap<String, Instance>,
    pub buckets: BTreeMap<String, Bucket>,
    /// In file order.
    pub steps: Vec<Step>,
    /// What came from `env`: never shown to the user.
    pub(crate) masks: Masks,
}

/// `[settings]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How many steps run at once (default 4).
    pub concurrency: usize,
    /// How many collections one step works on at once (default 4).
    pub collections: usize,
    /// How many imports may be in flight on one instance (default 4).
    pub imports: usize,
    /// How many object copies may be in flight in the whole run (default 32).
    pub copies: usize,
    /// How many times a failed operation that may succeed later is retried (default 5).
    pub retries: u32,
    /// Whether a copy or restore starts on each collection as soon as the step before it has
    /// finished that collection, instead of waiting for the whole step (default true).
    pub pipeline: bool,
    /// Where run state is kept (default `.planrun` next to the plan file); absolute.
    pub state_dir: PathBuf,
    /// Rows mode: readers per collection, each over its own key range (default 2).
    pub readers: usize,
    /// Rows mode: the size a backup's Parquet file grows to (default 256 MiB).
    pub file_bytes: u64,
}

/// Readers per collection in rows mode when the plan says nothing: two keep a Milvus 2.3.5
/// query node busy while each waits for its answers.
pub const DEFAULT_READERS: usize = 2;
/// A rows backup's file size when the plan says nothing: few files for an import to list.
pub const DEFAULT_FILE_BYTES: u64 = 256 << 20;

/// A Milvus server.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub uri: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub database: Option<String>,
    pub tls: Option<Tls>,
    /// Where this instance keeps its binlogs (`minio.bucketName` + `minio.rootPath`).
    pub data: Option<Location>,
    /// Management HTTP address (used to pause garbage collection), e.g. `http://127.0.0.1:9091`.
    pub management: Option<String>,
    /// Per-request timeout in seconds, when set.
    pub timeout: Option<u64>,
    /// The most requests per second planrun sends it.
    pub requests_per_second: u64,
}

/// What an instance takes at most from planrun when the plan says nothing: a live cluster's
/// proxy serves far more, and rows mode's page queries and inserts are a few per second.
pub const DEFAULT_REQUESTS_PER_SECOND: u64 = 100;

/// TLS settings of an instance; paths are absolute (resolved against the plan file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// A place backups are kept: the storage layer's own description of it (an S3 bucket, whose
/// keys may be absent to use the AWS credential chain, or a local directory, absolute).
#[derive(Debug, Clone)]
pub struct Bucket {
    pub id: String,
    pub config: StorageConfig,
}

/// One node of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
    /// The plan-file `type` of this step, as the one list of step types spells it (the variants
    /// of the raw plan's step enum, `raw.rs`).
    pub type_name: &'static str,
    /// Explicit dependencies, as written.
    pub needs: Vec<String>,
    pub kind: StepKind,
}

/// Every step type. Closed on purpose: the engine dispatches with `match`.
#[derive(Debug, Clone)]
pub enum StepKind {
    Backup(BackupStep),
    Copy(CopyStep),
    Restore(RestoreStep),
    Verify(VerifyStep),
    Alias(AliasStep),
}

impl StepKind {
    /// Locations whose contents this step reads.
    pub fn reads(&self) -> Vec<&Location> {
        match self {
            StepKind::Backup(_) => vec![],
            StepKind::Copy(c) => vec![&c.from],
            StepKind::Restore(r) => vec![&r.from],
            StepKind::Verify(_) | StepKind::Alias(_) => vec![],
        }
    }

    /// Locations this step writes into.
    pub fn writes(&self) -> Vec<&Location> {
        match self {
            StepKind::Backup(b) => vec![&b.to],
            StepKind::Copy(c) => vec![&c.to],
            StepKind::Restore(_) | StepKind::Verify(_) | StepKind::Alias(_) => vec![],
        }
    }
}

/// Back up collections of an instance into a location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupStep {
    pub instance: String,
    /// As written: `name`, `db.coll`, `db.*`, globs.
    pub collections: Vec<String>,
    pub to: Location,
    pub mode: Mode,
}

/// How a backup reads its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy the instance's binlog files from its `data` bucket (fast; needs `data`).
    Binlog,
    /// Read rows through the query API (works without bucket access).
    Rows,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Binlog => "binlog",
            Mode::Rows => "rows",
        }
    }
}

/// Copy every object under one location to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyStep {
    pub from: Location,
    pub to: Location,
}

/// Restore a backup into an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreStep {
    pub instance: String,
    pub from: Location,
    /// Only these collections of the backup (as written); `None` = all.
    pub collections: Option<Vec<String>>,
    pub naming: Naming,
    /// Target database; `None` = the collection's own database.
    pub database: Option<String>,
    pub on_conflict: OnConflict,
    pub indexes: bool,
    /// Recreate the backup's aliases, renamed like the collections.
    pub aliases: bool,
    /// `None`: as the source was when backed up (loaded or released).
    pub load: Option<bool>,
    /// What a rows-mode restore does with the keys of an auto_id collection.
    pub keys: Keys,
    /// How a rows-mode restore writes rows; `None`: by import where it can, else by insert.
    pub method: Option<Method>,
}

/// One collection of one instance, as a verify step names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRef {
    pub instance: String,
    pub collection: String,
    /// `None` = the instance's database (or [`DEFAULT_DATABASE`]).
    pub database: Option<String>,
}

/// Compare collections with their copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyStep {
    /// One explicit pair.
    Pair {
        source: CollectionRef,
        target: CollectionRef,
    },
    /// Every collection the named restore step restores, against its source.
    Restore(String),
}

/// Point an alias at a collection (create it, or move it from another collection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasStep {
    pub instance: String,
    pub alias: String,
    pub collection: String,
    /// `None` = the instance's database (or [`DEFAULT_DATABASE`]).
    pub database: Option<String>,
}

/// How restored collections are named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Naming {
    /// Append this to every name (`suffix = "_bak"`).
    Suffix(String),
    /// Explicit new names (`rename = { coll = "coll_new" }`); others keep their name.
    Rename(BTreeMap<String, String>),
    /// Keep the names.
    Keep,
}

impl Naming {
    /// The name a collection called `name` gets when restored.
    pub fn target(&self, name: &str) -> String {
        match self {
            Naming::Suffix(s) => format!("{name}{s}"),
            Naming::Rename(map) => map.get(name).cloned().unwrap_or_else(|| name.to_string()),
            Naming::Keep => name.to_string(),
        }
    }
}

/// How a rows-mode restore writes its rows, when the plan says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Import,
    Insert,
}

impl Method {
    /// As the plan spells it (`method = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Import => "import",
            Method::Insert => "insert",
        }
    }
}

/// The primary keys of an auto_id collection restored in rows mode (a binlog restore always
/// keeps both keys and auto_id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// The source's keys; the copy is created with auto_id off.
    Keep,
    /// The copy keeps auto_id and the target assigns new keys.
    New,
}

impl Keys {
    /// As the plan spells it (`auto_id = "..."`).
    pub fn as_str(self) -> &'static str {
        match self {
            Keys::Keep => "keep_keys",
            Keys::New => "new_keys",
        }
    }
}

/// What a restore does when the target collection exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    Fail,
    Skip,
    Drop,
}

impl OnConflict {
    pub fn as_str(self) -> &'static str {
        match self {
            OnConflict::Fail => "fail",
            OnConflict::Skip => "skip",
            OnConflict::Drop => "drop",
        }
    }
}

impl Plan {
    /// The instance whose backup step's output ends up at `loc`, following copy steps.
    pub fn backup_source(&self, loc: &Location) -> Option<String> {
        self.backup_source_at(loc, self.steps.len())
    }

    /// The instance of the backup step whose output ends up at `loc`, following copies.
    fn backup_source_at(&self, loc: &Location, depth: usize) -> Option<String> {
        if depth == 0 {
            return None;
        }
        self.steps.iter().find_map(|s| match &s.kind {
            StepKind::Backup(b) if b.to.overlaps(loc) => Some(b.instance.clone()),
            StepKind::Copy(c) if c.to.overlaps(loc) => {
                let from = Location {
                    bucket: c.from.bucket.clone(),
                    path: if loc.path.len() > c.to.path.len() && loc.path.starts_with(&c.to.path) {
                        c.from
                            .join(loc.path[c.to.path.len()..].trim_start_matches('/'))
                    } else {
                        c.from.path.clone()
                    },
                };
                self.backup_source_at(&from, depth - 1)
            }
            _ => None,
        })
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// `value` for display: `***` when it came from `env`, and any env value inside it masked
    /// (env values are treated as secrets).
    pub fn show(&self, value: &str) -> String {
        self.masks.show(value)
    }

    /// A location for display, masked when it came from `env`.
    pub fn show_location(&self, loc: &Location) -> String {
        self.masks.show_location(loc)
    }

    /// Any text (an error message, a log line) with every env-derived value masked as `***`.
    pub fn redact(&self, text: &str) -> String {
        self.masks.redact(text)
    }

    /// How the state dir stores this plan's env values: hidden, and read back by this plan.
    pub fn veil(&self) -> crate::secret::Veil {
        crate::secret::Veil::new(&self.masks.env_values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_applies() {
        assert_eq!(Naming::Suffix("_bak".into()).target("c"), "c_bak");
        let m = Naming::Rename([("a".to_string(), "z".to_string())].into());
        assert_eq!(m.target("a"), "z");
        assert_eq!(m.target("b"), "b");
        assert_eq!(Naming::Keep.target("c"), "c");
    }
}
