//! The resolved plan: templates rendered, references checked, defaults applied; what the engine runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// A checked plan. Build it with [`crate::plan::load`] or [`crate::plan::load_str`].
///
/// `Debug` prints the masked [`Plan::describe_json`], never env-derived values.
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
    /// Rendered strings that used `env` (directly or through a var): never shown to the user.
    pub(crate) tainted: BTreeSet<String>,
    /// Values of env vars used by non-secret strings: masked wherever they appear.
    pub(crate) env_values: BTreeSet<String>,
}

/// `[settings]`, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// How many steps run at once (default 4).
    pub concurrency: usize,
    /// How many times a failed operation that may succeed later is retried (default 5).
    pub retries: u32,
    /// Where run state is kept (default `.planrun` next to the plan file); absolute.
    pub state_dir: PathBuf,
}

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
}

/// TLS settings of an instance; paths are absolute (resolved against the plan file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Tls {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
}

/// A place backups are kept.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub id: String,
    pub kind: BucketKind,
}

#[derive(Debug, Clone)]
pub enum BucketKind {
    /// An S3-compatible bucket. No keys = the standard AWS credential chain.
    S3 {
        endpoint: Option<String>,
        bucket: String,
        region: Option<String>,
        access_key_id: Option<Secret>,
        secret_access_key: Option<Secret>,
        session_token: Option<Secret>,
        path_style: bool,
    },
    /// A local directory (absolute; resolved against the plan file).
    Local { path: PathBuf },
}

/// `<bucket id>:<path>`, path normalised: no leading/trailing `/`, no `.`/`..`, no empty segments.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    pub bucket: String,
    pub path: String,
}

impl Location {
    /// Normalises `path`; `Err` says what is wrong with it.
    pub fn new(bucket: impl Into<String>, path: &str) -> Result<Location, String> {
        let mut segs = Vec::new();
        for seg in path.split('/') {
            match seg {
                "" => {}
                "." | ".." => {
                    return Err(format!("`{seg}` is not allowed in a location path"));
                }
                s => segs.push(s),
            }
        }
        if path.trim_matches('/').contains("//") {
            return Err("empty path segment (`//`) in a location path".into());
        }
        Ok(Location {
            bucket: bucket.into(),
            path: segs.join("/"),
        })
    }

    /// Whether `other` is this location or lies inside it (by whole path segments).
    pub fn contains(&self, other: &Location) -> bool {
        self.bucket == other.bucket
            && (self.path.is_empty()
                || other.path == self.path
                || (other.path.starts_with(&self.path)
                    && other.path.as_bytes().get(self.path.len()) == Some(&b'/')))
    }

    /// Whether one of the two contains the other.
    pub fn overlaps(&self, other: &Location) -> bool {
        self.contains(other) || other.contains(self)
    }

    /// `path` joined with `child`, for keys under this location.
    pub fn join(&self, child: &str) -> String {
        if self.path.is_empty() {
            child.to_string()
        } else {
            format!("{}/{}", self.path, child.trim_start_matches('/'))
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.bucket, self.path)
    }
}

/// One node of the plan.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: String,
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
    /// The plan-file `type` of this step.
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Backup(_) => "backup",
            StepKind::Copy(_) => "copy",
            StepKind::Restore(_) => "restore",
            StepKind::Verify(_) => "verify",
            StepKind::Alias(_) => "alias",
        }
    }

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
    pub load: bool,
}

/// One collection of one instance, as a verify step names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionRef {
    pub instance: String,
    pub collection: String,
    /// `None` = the instance's database (or `default`).
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
    /// `None` = the instance's database (or `default`).
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

/// The database a collection lives in when nothing names one.
pub const DEFAULT_DATABASE: &str = "default";

impl Naming {
    /// The name a collection gets on the target.
    pub fn target(&self, name: &str) -> String {
        match self {
            Naming::Keep => name.to_string(),
            Naming::Suffix(s) => format!("{name}{s}"),
            Naming::Rename(map) => map.get(name).cloned().unwrap_or_else(|| name.to_string()),
        }
    }

    /// The name a collection called `name` gets.
    pub fn apply(&self, name: &str) -> String {
        match self {
            Naming::Suffix(s) => format!("{name}{s}"),
            Naming::Rename(map) => map.get(name).cloned().unwrap_or_else(|| name.to_string()),
            Naming::Keep => name.to_string(),
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

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plan")
            .field("path", &self.path)
            .field("state_dir", &self.settings.state_dir)
            .field("plan", &self.describe_json())
            .finish()
    }
}

impl Plan {
    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// `value` for display: `***` when it came from `env`, and any env value inside it masked
    /// (env values are treated as secrets).
    pub fn show(&self, value: &str) -> String {
        if self.tainted.contains(value) {
            "***".to_string()
        } else {
            self.redact(value)
        }
    }

    /// A location for display, masked when it came from `env`.
    pub fn show_location(&self, loc: &Location) -> String {
        let full = loc.to_string();
        if self.tainted.contains(&full) || self.tainted.contains(&loc.path) {
            format!("{}:***", loc.bucket)
        } else {
            self.redact(&full)
        }
    }

    /// Any text (an error message, a log line) with every env-derived value masked as `***`.
    pub fn redact(&self, text: &str) -> String {
        super::validate::redact(&self.env_values, text)
    }

    /// One line saying what a step does, secrets masked.
    pub fn describe_step(&self, step: &Step) -> String {
        match &step.kind {
            StepKind::Backup(b) => format!(
                "backup {} [{}] → {} ({})",
                b.instance,
                b.collections
                    .iter()
                    .map(|c| self.show(c))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.show_location(&b.to),
                b.mode.as_str()
            ),
            StepKind::Copy(c) => format!(
                "copy {} → {}",
                self.show_location(&c.from),
                self.show_location(&c.to)
            ),
            StepKind::Restore(r) => {
                let naming = match &r.naming {
                    Naming::Suffix(s) => format!("suffix `{}`", self.show(s)),
                    Naming::Rename(m) => format!(
                        "rename {}",
                        m.iter()
                            .map(|(k, v)| format!("{} → {}", self.show(k), self.show(v)))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Naming::Keep => "same names".to_string(),
                };
                format!(
                    "restore {} → {} ({naming}, on conflict {})",
                    self.show_location(&r.from),
                    r.instance,
                    r.on_conflict.as_str()
                )
            }
            StepKind::Verify(VerifyStep::Pair { source, target }) => format!(
                "verify {}:{} against {}:{}",
                target.instance,
                self.show(&target.collection),
                source.instance,
                self.show(&source.collection)
            ),
            StepKind::Verify(VerifyStep::Restore(r)) => {
                format!("verify the collections restored by `{r}` against their sources")
            }
            StepKind::Alias(a) => format!(
                "alias {}:{} → `{}`",
                a.instance,
                self.show(&a.alias),
                self.show(&a.collection)
            ),
        }
    }

    /// A canonical, secret-free description of everything that decides what a run does.
    /// Values that came from `env` appear as `***`; secrets only as `"set"`.
    pub fn describe_json(&self) -> Value {
        self.describe(true)
    }

    /// Stable hex SHA-256 of the resolved plan without secrets: a changed password leaves it
    /// unchanged, any other change (including env-derived non-secret values) changes it.
    pub fn fingerprint(&self) -> String {
        let v = self.describe(false);
        // serde_json maps are sorted (no `preserve_order`), so this text is canonical.
        let text = serde_json::to_string(&v).expect("JSON values always serialise");
        hex::encode(Sha256::digest(text.as_bytes()))
    }

    fn describe(&self, mask: bool) -> Value {
        let s = |v: &str| -> Value {
            if mask {
                Value::from(self.show(v))
            } else {
                Value::from(v)
            }
        };
        let os = |v: &Option<String>| v.as_deref().map(s).unwrap_or(Value::Null);
        let loc = |l: &Location| -> Value {
            if mask {
                Value::from(self.show_location(l))
            } else {
                Value::from(l.to_string())
            }
        };
        let set = |v: &Option<Secret>| -> Value {
            if v.is_some() {
                Value::from("set")
            } else {
                Value::Null
            }
        };
        let path = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| s(&p.display().to_string()))
                .unwrap_or(Value::Null)
        };
        let instances: serde_json::Map<String, Value> = self
            .instances
            .values()
            .map(|i| {
                (
                    i.id.clone(),
                    json!({
                        "uri": s(&i.uri),
                        "user": os(&i.user),
                        "password": set(&i.password),
                        "token": set(&i.token),
                        "database": os(&i.database),
                        "tls": i.tls.as_ref().map(|t| json!({
                            "ca_cert": path(&t.ca_cert),
                            "client_cert": path(&t.client_cert),
                            "client_key": path(&t.client_key),
                            "server_name": os(&t.server_name),
                        })),
                        "data": i.data.as_ref().map(loc),
                        "management": os(&i.management),
                        "timeout": i.timeout,
                    }),
                )
            })
            .collect();
        let buckets: serde_json::Map<String, Value> = self
            .buckets
            .values()
            .map(|b| {
                let v = match &b.kind {
                    BucketKind::S3 {
                        endpoint,
                        bucket,
                        region,
                        access_key_id,
                        secret_access_key,
                        session_token,
                        path_style,
                    } => json!({
                        "type": "s3",
                        "endpoint": os(endpoint),
                        "bucket": s(bucket),
                        "region": os(region),
                        "access_key_id": set(access_key_id),
                        "secret_access_key": set(secret_access_key),
                        "session_token": set(session_token),
                        "path_style": path_style,
                    }),
                    BucketKind::Local { path: p } => json!({
                        "type": "local",
                        "path": s(&p.display().to_string()),
                    }),
                };
                (b.id.clone(), v)
            })
            .collect();
        let list = |v: &[String]| Value::Array(v.iter().map(|c| s(c)).collect());
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|st| {
                let mut v = match &st.kind {
                    StepKind::Backup(b) => json!({
                        "instance": b.instance,
                        "collections": list(&b.collections),
                        "to": loc(&b.to),
                        "mode": b.mode.as_str(),
                    }),
                    StepKind::Copy(c) => json!({ "from": loc(&c.from), "to": loc(&c.to) }),
                    StepKind::Restore(r) => json!({
                        "instance": r.instance,
                        "from": loc(&r.from),
                        "collections": r.collections.as_deref().map(list),
                        "naming": match &r.naming {
                            Naming::Suffix(x) => json!({ "suffix": s(x) }),
                            Naming::Rename(m) => json!({ "rename": m.iter()
                                .map(|(k, x)| (k.clone(), s(x)))
                                .collect::<serde_json::Map<_, _>>() }),
                            Naming::Keep => json!("keep"),
                        },
                        "database": os(&r.database),
                        "on_conflict": r.on_conflict.as_str(),
                        "indexes": r.indexes,
                        "load": r.load,
                    }),
                    StepKind::Verify(VerifyStep::Pair { source, target }) => {
                        let cref = |c: &CollectionRef| {
                            json!({
                                "instance": c.instance,
                                "collection": s(&c.collection),
                                "database": os(&c.database),
                            })
                        };
                        json!({ "source": cref(source), "target": cref(target) })
                    }
                    StepKind::Verify(VerifyStep::Restore(r)) => json!({ "restore": r }),
                    StepKind::Alias(a) => json!({
                        "instance": a.instance,
                        "alias": s(&a.alias),
                        "collection": s(&a.collection),
                        "database": os(&a.database),
                    }),
                };
                let o = v.as_object_mut().expect("built as an object");
                o.insert("id".into(), Value::from(st.id.clone()));
                o.insert("type".into(), Value::from(st.kind.type_name()));
                o.insert("needs".into(), json!(st.needs));
                v
            })
            .collect();
        json!({
            "name": self.name,
            "settings": {
                "concurrency": self.settings.concurrency,
                "retries": self.settings.retries,
            },
            "instances": instances,
            "buckets": buckets,
            "steps": steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(b: &str, p: &str) -> Location {
        Location::new(b, p).unwrap()
    }

    #[test]
    fn location_normalises_and_rejects_dots() {
        assert_eq!(loc("b", "/a/b/").path, "a/b");
        assert_eq!(loc("b", "/a/b/").to_string(), "b:a/b");
        assert!(Location::new("b", "a/../c").is_err());
        assert!(Location::new("b", "a//c").is_err());
        assert_eq!(loc("b", "").path, "");
    }

    #[test]
    fn contains_is_by_whole_segments() {
        assert!(loc("b", "backup").contains(&loc("b", "backup/x")));
        assert!(loc("b", "backup/x").contains(&loc("b", "backup/x")));
        assert!(!loc("b", "backup/x").contains(&loc("b", "backup/xy")));
        assert!(!loc("b", "backup").contains(&loc("c", "backup")));
        assert!(loc("b", "").contains(&loc("b", "anything")));
        assert!(loc("b", "a/b").overlaps(&loc("b", "a")));
        assert!(!loc("b", "a/b").overlaps(&loc("b", "a/c")));
    }

    #[test]
    fn naming_applies() {
        assert_eq!(Naming::Suffix("_bak".into()).apply("c"), "c_bak");
        let m = Naming::Rename([("a".to_string(), "z".to_string())].into());
        assert_eq!(m.apply("a"), "z");
        assert_eq!(m.apply("b"), "b");
        assert_eq!(Naming::Keep.apply("c"), "c");
    }
}
