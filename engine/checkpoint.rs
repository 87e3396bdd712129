//! Durable run state in sled: runs, the state of every task, and the lock for one apply per state dir.
//!
//! Invariant: a task's state is flushed to disk before the side effect that depends on it starts
//! (an intent before a non-idempotent call, a result before the next task relies on it). Nothing
//! secret is stored: records hold ids, names, keys, sizes and checksums only.
//!
//! What sled does not say, this module does: a state dir deleted or moved during a run (sled goes
//! on writing into files that no longer have a name), records lost to a damaged log (sled reads
//! it up to the damage and silently drops the rest; `records.json` beside it notices), a full disk.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

use crate::secret::Veil;
use crate::text::short;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "the state store `{path}` cannot be read: {}.\n\
         It is damaged (or was not written by planrun). Move the state dir aside and apply \
         again; the next apply starts without records and reconciles against the servers as \
         after a crash:\n    mv {dir} {dir}.damaged",
        sled_says(source), dir = dir.display(), path = path.display()
    )]
    Unreadable {
        dir: PathBuf,
        path: PathBuf,
        source: sled::Error,
    },
    #[error("state store at `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no space left on the disk of the state dir `{dir}`: planrun cannot record its progress \
         there. Free some space and run the command again: what was recorded before is kept, \
         and apply resumes from it as after a crash."
    )]
    DiskFull { dir: PathBuf },
    #[error(
        "the state dir `{dir}` was deleted or moved away during the run: nothing can be \
         recorded there any more"
    )]
    Gone { dir: PathBuf },
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    #[error("state store holds a record planrun cannot read ({key}): {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error(
        "another `planrun apply` (pid {pid}, started {started}) holds the state dir `{dir}`; \
         wait for it to finish, or stop it (a lock left by a dead process is taken over)"
    )]
    Locked {
        dir: PathBuf,
        pid: u32,
        started: String,
    },
    #[error("no run `{0}` in this state dir; `planrun runs PLAN` lists them")]
    NoSuchRun(String),
}

type Result<T> = std::result::Result<T, CheckpointError>;

/// sled's reason for refusing a store, in words (its `Corruption` shows a debug backtrace).
fn sled_says(e: &sled::Error) -> String {
    match e {
        sled::Error::Corruption { .. } => "sled found corrupted data in it".into(),
        e => e.to_string(),
    }
}

/// An io error while writing the state of `dir`: a full disk (or quota) gets its plain message.
fn io_error(dir: &Path, path: &Path, source: std::io::Error) -> CheckpointError {
    use std::io::ErrorKind::{QuotaExceeded, StorageFull};
    match source.kind() {
        StorageFull | QuotaExceeded => CheckpointError::DiskFull {
            dir: dir.to_path_buf(),
        },
        _ => CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Interrupted,
    Failed,
    Done,
}

/// One apply of one version of a plan.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub plan_name: String,
    pub plan_path: PathBuf,
    pub fingerprint: String,
    /// The plan as resolved for this run, without secrets, to show what changed later.
    pub plan: Value,
    pub started_at: u64,
    pub updated_at: u64,
    pub status: RunStatus,
    pub error: Option<String>,
}

/// The state of one task. `Intent` is written before a non-idempotent call; `Started` holds what
/// the server gave back (an import task id) before waiting on it; `Done` holds the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "data")]
pub enum TaskState {
    Intent(Value),
    Started(Value),
    Done(Value),
}

/// Snapshot copies live in the system temp dir under this name and their owner's pid, so that
/// those of a killed reader (whose `TempDir` never dropped) can be found and removed.
const SNAPSHOT_PREFIX: &str = "planrun-snapshot-";
/// The side record of how many records each tree held at its last durable point.
const LEDGER: &str = "records.json";
const RUNS: &str = "runs";

pub struct Store {
    runs: sled::Tree,
    shared: Arc<Shared>,
    damage: Option<Damage>,
}

impl Store {
    /// Opens (creating) the store in `dir` for writing. Records lost to damage are reported by
    /// [`Store::damage`] once: from then on the side record counts what is left.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, dir, e))?;
        let store = Self::open_at(dir, &dir.join("state"), true)?;
        let s = &store.shared;
        let mut l = s.ledger.lock().expect("ledger lock");
        l.written = l.live.clone();
        write_ledger(&s.ledger_path(), &l.written, false).map_err(|e| s.io(e))?;
        drop(l);
        Ok(store)
    }

    /// Opens a private copy of the store so that readers (`plan`, `runs`, `status`) never write
    /// to the state dir and are not blocked by a running apply. `None` when there is no store yet.
    pub fn open_snapshot(dir: &Path) -> Result<Option<(Store, tempfile::TempDir)>> {
        let src = dir.join("state");
        if !src.exists() {
            return Ok(None);
        }
        remove_stale_snapshots(&std::env::temp_dir());
        let tmp = tempfile::Builder::new()
            .prefix(&format!("{SNAPSHOT_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|source| CheckpointError::Io {
                path: std::env::temp_dir(),
                source,
            })?;
        let copy = tmp.path().join("state");
        let writing = lock_holder(dir).is_some();
        copy_dir(&src, &copy).map_err(|source| CheckpointError::Io {
            path: tmp.path().to_path_buf(),
            source,
        })?;
        // A copy taken while an apply writes may hold fewer records than the side record it
        // copied first: only a quiet state dir is checked for damage.
        let quiet = !writing && lock_holder(dir).is_none();
        let store = Self::open_at(dir, &copy, quiet)?;
        Ok(Some((store, tmp)))
    }

    fn open_at(dir: &Path, db_path: &Path, check: bool) -> Result<Store> {
        let db =
            // Lazily written records (object copies) reach the disk within 100 ms.
            sled::Config::new()
                .path(db_path)
                .flush_every_ms(Some(100))
                .open()
                .map_err(|source| match source {
                    sled::Error::Io(e) if db_path == dir.join("state") => io_error(dir, db_path, e),
                    // A snapshot's copy, in the temp dir: not the state dir's disk.
                    sled::Error::Io(source) => CheckpointError::Io {
                        path: db_path.to_path_buf(),
                        source,
                    },
                    // Named as the state dir holds it, also when this is a snapshot's copy.
                    source => CheckpointError::Unreadable {
                        dir: dir.to_path_buf(),
                        path: dir.join("state"),
                        source,
                    },
                })?;
        // Opening a tree may write (a new tree, or sled's flusher failing in between): a full
        // disk is said as such here too.
        let sled = |e: sled::Error| match e {
            sled::Error::Io(e) if db_path == dir.join("state") => io_error(dir, db_path, e),
            e => CheckpointError::Sled(e),
        };
        let runs = db.open_tree(RUNS).map_err(sled)?;
        let mut live = BTreeMap::new();
        for name in db.tree_names() {
            let name = String::from_utf8_lossy(&name).into_owned();
            if name == RUNS || name.starts_with(TASKS) {
                live.insert(
                    name.clone(),
                    db.open_tree(&name).map_err(sled)?.len() as u64,
                );
            }
        }
        let log = db_path.join("db");
        let ledger_path = db_path.join(LEDGER);
        let damage = if check {
            // Missing or unreadable (never written, or cut by a power loss): nothing to compare.
            let expected: BTreeMap<String, u64> = fs::read(&ledger_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let run_ids = runs
                .iter()
                .keys()
                .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
                .collect::<Result<BTreeSet<String>>>()?;
            Damage::find(&dir.join("state"), &expected, &live, &run_ids)
        } else {
            None
        };
        let identity = fs::metadata(&log).ok().map(|m| (m.dev(), m.ino()));
        Ok(Store {
            runs,
            damage,
            shared: Arc::new(Shared {
                db,
                dir: dir.to_path_buf(),
                path: db_path.to_path_buf(),
                identity,
                ledger: Mutex::new(Ledger {
                    live,
                    ..Ledger::default()
                }),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Records that the side record expected and the store no longer holds, found at open.
    pub fn damage(&self) -> Option<&Damage> {
        self.damage.as_ref()
    }

    pub async fn put_run(&self, run: &RunRecord) -> Result<()> {
        let s = &self.shared;
        s.check_present()?;
        let old = self
            .runs
            .insert(run.id.as_bytes(), encode(run))
            .map_err(|e| s.sled(e))?;
        s.added(RUNS, old.is_none());
        s.seal().await
    }

    pub fn run(&self, id: &str) -> Result<RunRecord> {
        // Accept a unique prefix, as people type the short id the CLI prints.
        let mut found = self.runs.scan_prefix(id.as_bytes()).map(|kv| {
            kv.map_err(CheckpointError::from)
                .and_then(|(k, v)| decode(&k, &v))
        });
        match (found.next(), found.next()) {
            (Some(run), None) => run,
            _ => Err(CheckpointError::NoSuchRun(id.to_string())),
        }
    }

    /// All runs, oldest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>> {
        let mut runs = self
            .runs
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                decode::<RunRecord>(&k, &v)
            })
            .collect::<Result<Vec<_>>>()?;
        runs.sort_by_key(|r| (r.started_at, r.id.clone()));
        Ok(runs)
    }

    /// The newest run of the plan at `plan_path` that did not finish.
    pub fn unfinished_run(&self, plan_path: &Path) -> Result<Option<RunRecord>> {
        Ok(self
            .runs()?
            .into_iter()
            .rev()
            .find(|r| r.plan_path == plan_path && r.status != RunStatus::Done))
    }

    /// The newest finished run of the plan, to recognise a second apply that has nothing to do.
    pub fn last_done_run(&self, plan_path: &Path, fingerprint: &str) -> Result<Option<RunRecord>> {
        Ok(self.runs()?.into_iter().rev().find(|r| {
            r.plan_path == plan_path && r.status == RunStatus::Done && r.fingerprint == fingerprint
        }))
    }

    pub fn tasks(&self, run: &str) -> Result<Tasks> {
        let name = format!("{TASKS}{run}");
        let tree = self.shared.db.open_tree(&name)?;
        self.shared
            .ledger
            .lock()
            .expect("ledger lock")
            .live
            .entry(name.clone())
            .or_insert(0);
        Ok(Tasks {
            tree,
            veil: Veil::default(),
            name,
            shared: self.shared.clone(),
        })
    }
}

const TASKS: &str = "tasks/";

/// What a store and its `Tasks` share: the db, where it is, and the side record.
struct Shared {
    db: sled::Db,
    /// The state dir as the plan names it, for messages.
    dir: PathBuf,
    /// sled's directory (`<state dir>/state`, or a snapshot's copy of it).
    path: PathBuf,
    /// Device and inode of sled's log file when opened: a deleted or moved state dir leaves sled
    /// writing to a file without a name, so before a write counts, the name must still lead to it.
    identity: Option<(u64, u64)>,
    ledger: Mutex<Ledger>,
}

/// Record counts per tree. The file never claims more than the disk holds (counts are taken
/// before the flush they follow, and lowered on disk before a removal), so a crash at any moment
/// never looks like damage, while any record sled drops does.
#[derive(Default)]
struct Ledger {
    /// Records per tree in memory: a new key adds one, a removed key takes one.
    live: BTreeMap<String, u64>,
    /// What `records.json` says.
    written: BTreeMap<String, u64>,
    /// Bumped by every removal: counts taken before one may include what it removed.
    removals: u64,
}

impl Shared {
    fn ledger_path(&self) -> PathBuf {
        self.path.join(LEDGER)
    }

    fn check_present(&self) -> Result<()> {
        let now = fs::metadata(self.path.join("db"))
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if self.identity.is_some() && now != self.identity {
            return Err(CheckpointError::Gone {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn io(&self, e: std::io::Error) -> CheckpointError {
        // Writing into a state dir that is gone fails in many ways (not found, ...): say why.
        match self.check_present() {
            Err(gone) => gone,
            Ok(()) => io_error(&self.dir, &self.path, e),
        }
    }

    fn sled(&self, e: sled::Error) -> CheckpointError {
        match e {
            sled::Error::Io(e) => self.io(e),
            e => CheckpointError::Sled(e),
        }
    }

    fn added(&self, tree: &str, new: bool) {
        if new {
            *self
                .ledger
                .lock()
                .expect("ledger lock")
                .live
                .entry(tree.to_string())
                .or_insert(0) += 1;
        }
    }

    /// Flushes everything written so far, then records how many records that made durable.
    async fn seal(&self) -> Result<()> {
        let (counts, removals) = {
            let l = self.ledger.lock().expect("ledger lock");
            (l.live.clone(), l.removals)
        };
        self.db.flush_async().await.map_err(|e| self.sled(e))?;
        // Only a flush into the file the state dir still names is on disk.
        self.check_present()?;
        let mut l = self.ledger.lock().expect("ledger lock");
        if l.removals != removals {
            return Ok(());
        }
        for (tree, n) in counts {
            let w = l.written.entry(tree).or_insert(0);
            *w = (*w).max(n);
        }
        write_ledger(&self.ledger_path(), &l.written, false).map_err(|e| self.io(e))
    }
}

/// Replaces `records.json` whole (write and rename). `durable` waits for the disk: a lowered count
/// must be there before the removal it allows for can be.
fn write_ledger(path: &Path, counts: &BTreeMap<String, u64>, durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&encode(counts))?;
    if durable {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if durable && let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Records a damaged store lost: per tree, how many the side record expected and how many are left.
#[derive(Clone, Debug)]
pub struct Damage {
    path: PathBuf,
    /// (tree, found, expected) for every tree that holds fewer records than expected.
    lost: Vec<(String, u64, u64)>,
    /// Runs whose task records are known but whose run record is gone.
    runs_gone: Vec<String>,
}

impl Damage {
    fn find(
        path: &Path,
        expected: &BTreeMap<String, u64>,
        live: &BTreeMap<String, u64>,
        run_ids: &BTreeSet<String>,
    ) -> Option<Damage> {
        let lost: Vec<(String, u64, u64)> = expected
            .iter()
            .map(|(tree, &want)| (tree.clone(), live.get(tree).copied().unwrap_or(0), want))
            .filter(|(_, found, want)| found < want)
            .collect();
        let runs_gone = expected
            .keys()
            .filter_map(|t| t.strip_prefix(TASKS))
            .filter(|id| !run_ids.contains(*id))
            .map(String::from)
            .collect();
        (!lost.is_empty()).then(|| Damage {
            path: path.to_path_buf(),
            lost,
            runs_gone,
        })
    }

    /// How many records were lost in all.
    pub fn records(&self) -> u64 {
        self.lost.iter().map(|(_, found, want)| want - found).sum()
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what: Vec<String> = self
            .lost
            .iter()
            .map(|(tree, found, want)| {
                let n = want - found;
                match tree.strip_prefix(TASKS) {
                    Some(run) => format!("{n} of {want} task records of run {}", short(run)),
                    None if self.runs_gone.is_empty() => format!("{n} of {want} run records"),
                    None => format!(
                        "{n} of {want} run records (run {})",
                        self.runs_gone
                            .iter()
                            .map(|r| short(r))
                            .collect::<Vec<_>>()
                            .join(", run ")
                    ),
                }
            })
            .collect();
        write!(
            f,
            "the state store `{}` is damaged (truncated or corrupted): sled read it up to the \
             damage and dropped the rest without an error. Lost: {}.\n\
             Apply goes on from what is left, reconciling against the servers as after a crash: \
             copies found present are verified, not made again; a backup or collection it can no \
             longer tell is its own shows as a conflict and is not touched.",
            self.path.display(),
            what.join("; ")
        )
    }
}

/// The tasks of one run, keyed by a path-like task key (`backup/coll/seg/443/obj/...`).
#[derive(Clone)]
pub struct Tasks {
    tree: sled::Tree,
    name: String,
    shared: Arc<Shared>,
    /// Env values in keys and records are stored hidden (see [`Veil`]).
    veil: Veil,
}

impl Tasks {
    /// These tasks with the plan's env values hidden in what is stored, and read back.
    pub fn veiled(mut self, veil: Veil) -> Tasks {
        self.veil = veil;
        self
    }

    /// A stored record as the plan wrote it (env values put back); as stored without a veil,
    /// so the many per-object records of a plan without env values are not copied.
    fn revealed<'a>(&self, stored: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.veil.is_empty() {
            return stored.into();
        }
        self.veil
            .reveal(&String::from_utf8_lossy(stored))
            .into_bytes()
            .into()
    }

    pub fn get(&self, key: &str) -> Result<Option<TaskState>> {
        let key = self.veil.hide(key);
        self.tree
            .get(key.as_bytes())?
            .map(|v| decode(key.as_bytes(), &self.revealed(&v)))
            .transpose()
    }

    /// The result of a finished task, if it finished.
    pub fn done<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        match self.get(key)? {
            Some(TaskState::Done(v)) => {
                serde_json::from_value(v)
                    .map(Some)
                    .map_err(|source| CheckpointError::Corrupt {
                        key: key.to_string(),
                        source,
                    })
            }
            _ => Ok(None),
        }
    }

    /// Writes a task's state and waits until it is on disk.
    pub async fn set(&self, key: &str, state: &TaskState) -> Result<()> {
        self.set_lazy(key, state)?;
        self.shared.seal().await?;
        crate::fault::point("checkpoint");
        Ok(())
    }

    /// Writes without waiting for disk: for results whose loss only means redoing idempotent work
    /// (an object copy that a later run finds present and verified). `sync` makes them durable.
    pub fn set_lazy(&self, key: &str, state: &TaskState) -> Result<()> {
        // One stat: a run whose state dir is gone stops at its next record, not at its end.
        self.shared.check_present()?;
        let value = encode(state);
        let value = if self.veil.is_empty() {
            value
        } else {
            self.veil
                .hide(&String::from_utf8_lossy(&value))
                .into_bytes()
        };
        let old = self
            .tree
            .insert(self.veil.hide(key).as_bytes(), value)
            .map_err(|e| self.shared.sled(e))?;
        self.shared.added(&self.name, old.is_none());
        Ok(())
    }

    pub async fn sync(&self) -> Result<()> {
        self.shared.seal().await
    }

    pub fn remove_prefix(&self, prefix: &str) -> Result<()> {
        let s = &self.shared;
        let keys = self
            .tree
            .scan_prefix(self.veil.hide(prefix).as_bytes())
            .keys()
            .collect::<std::result::Result<Vec<_>, _>>()?;
        // Held throughout, so that no count taken before the removal is written after it.
        let mut l = s.ledger.lock().expect("ledger lock");
        l.removals += 1;
        let w = l.written.entry(self.name.clone()).or_insert(0);
        *w = w.saturating_sub(keys.len() as u64);
        write_ledger(&s.ledger_path(), &l.written, true).map_err(|e| s.io(e))?;
        for k in keys {
            if self.tree.remove(k).map_err(|e| s.sled(e))?.is_some() {
                let n = l.live.entry(self.name.clone()).or_insert(0);
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }

    /// Every record under a key prefix, keys and values as the plan wrote them.
    pub fn scan(&self, prefix: &str) -> Result<Vec<(String, TaskState)>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(self.veil.hide(prefix).as_bytes()) {
            let (k, v) = kv?;
            let state = decode(&k, &self.revealed(&v))?;
            let key = String::from_utf8_lossy(&k);
            out.push((self.veil.reveal(&key), state));
        }
        Ok(out)
    }

    /// (finished, all) task counts under a key prefix.
    pub fn count(&self, prefix: &str) -> Result<(usize, usize)> {
        let mut done = 0;
        let mut all = 0;
        for kv in self.tree.scan_prefix(self.veil.hide(prefix).as_bytes()) {
            let (k, v) = kv?;
            all += 1;
            if matches!(decode(&k, &self.revealed(&v))?, TaskState::Done(_)) {
                done += 1;
            }
        }
        Ok((done, all))
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("checkpoint records serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|source| CheckpointError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// Copies sled's files, the side record first: a store copied while someone writes then holds at
/// least what the copied side record counts. Only regular files (a device is never read whole).
fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dst)?;
    let mut entries = fs::read_dir(src)?.collect::<std::io::Result<Vec<_>>>()?;
    entries.sort_by_key(|e| e.file_name() != LEDGER);
    for entry in entries {
        let to = dst.join(entry.file_name());
        let meta = fs::metadata(entry.path())?;
        if meta.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else if meta.is_file() {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

/// Removes the snapshot copies of readers that are gone: killed, they never dropped theirs.
fn remove_stale_snapshots(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SNAPSHOT_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        if let Some(pid) = pid
            && !process_alive(pid)
        {
            // Another user's copy is not ours to remove: the error is ignored.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The lock that makes `apply` exclusive per state dir. Dropped = released.
pub struct RunLock {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct LockInfo {
    pid: u32,
    started: u64,
}

impl RunLock {
    /// Takes the lock, or takes it over when the process that holds it is gone.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, dir, e))?;
        let path = dir.join("lock");
        let info = LockInfo {
            pid: std::process::id(),
            started: now(),
        };
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&encode(&info))
                        .and_then(|_| f.sync_all())
                        .map_err(|e| io_error(dir, &path, e))?;
                    return Ok(RunLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = fs::read(&path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok());
                    match holder {
                        Some(h) if process_alive(h.pid) && h.pid != std::process::id() => {
                            return Err(CheckpointError::Locked {
                                dir: dir.to_path_buf(),
                                pid: h.pid,
                                started: format_time(h.started),
                            });
                        }
                        // Dead holder, or a half-written lock file: take it over.
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                Err(e) => return Err(io_error(dir, &path, e)),
            }
        }
        Err(CheckpointError::Io {
            path,
            source: std::io::Error::other("the lock file keeps reappearing"),
        })
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The live process holding the apply lock of `dir`, if any.
pub fn lock_holder(dir: &Path) -> Option<u32> {
    let info: LockInfo = serde_json::from_slice(&fs::read(dir.join("lock")).ok()?).ok()?;
    process_alive(info.pid).then_some(info.pid)
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, status: RunStatus) -> RunRecord {
        RunRecord {
            id: id.into(),
            plan_name: "p".into(),
            plan_path: "/x/p.toml".into(),
            fingerprint: "f".into(),
            plan: Value::Null,
            started_at: now(),
            updated_at: now(),
            status,
            error: None,
        }
    }

    #[tokio::test]
    async fn task_states_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_run(&run("r1", RunStatus::Running)).await.unwrap();
            let tasks = store.tasks("r1").unwrap();
            tasks
                .set("a/1", &TaskState::Intent(serde_json::json!({"x": 1})))
                .await
                .unwrap();
            tasks
                .set("a/2", &TaskState::Done(serde_json::json!(42)))
                .await
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let tasks = store.tasks("r1").unwrap();
        assert_eq!(
            tasks.get("a/1").unwrap(),
            Some(TaskState::Intent(serde_json::json!({"x": 1})))
        );
        assert_eq!(tasks.done::<u32>("a/2").unwrap(), Some(42));
        assert_eq!(tasks.count("a/").unwrap(), (1, 2));
        assert_eq!(
            store
                .unfinished_run(Path::new("/x/p.toml"))
                .unwrap()
                .unwrap()
                .id,
            "r1"
        );
        assert_eq!(store.run("r").unwrap().id, "r1");
    }

    #[tokio::test]
    async fn snapshot_readers_do_not_write_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Store::open_snapshot(dir.path()).unwrap().is_none());
        {
            let store = Store::open(dir.path()).unwrap();
            store.put_run(&run("r1", RunStatus::Done)).await.unwrap();
        }
        let (snap, _tmp) = Store::open_snapshot(dir.path()).unwrap().unwrap();
        snap.put_run(&run("r2", RunStatus::Running)).await.unwrap();
        drop(snap);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.runs().unwrap().len(), 1);
    }

    #[test]
    fn lock_is_exclusive_and_dead_holders_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        // A lock held by a live process (pid 1) refuses.
        fs::write(
            dir.path().join("lock"),
            encode(&LockInfo { pid: 1, started: 0 }),
        )
        .unwrap();
        let err = RunLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains("pid 1"), "{err}");
        // A lock of a pid that does not exist is taken over.
        fs::write(
            dir.path().join("lock"),
            encode(&LockInfo {
                pid: u32::MAX - 1,
                started: 0,
            }),
        )
        .unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        assert!(dir.path().join("lock").exists());
        drop(lock);
        assert!(!dir.path().join("lock").exists());
    }

    /// A store with `n` task records of run `r1`, each flushed.
    async fn filled(dir: &Path, n: usize) {
        let store = Store::open(dir).unwrap();
        store.put_run(&run("r1", RunStatus::Running)).await.unwrap();
        let tasks = store.tasks("r1").unwrap();
        for i in 0..n {
            let state = TaskState::Done(serde_json::json!("x".repeat(50)));
            tasks.set(&format!("k/{i:04}"), &state).await.unwrap();
        }
    }

    fn ledger(dir: &Path) -> BTreeMap<String, u64> {
        serde_json::from_slice(&fs::read(dir.join("state").join(LEDGER)).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn records_lost_to_a_damaged_log_are_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 300).await;
        // sled reads a cut log up to the cut and drops the rest without an error.
        let db = dir.path().join("state/db");
        let bytes = fs::read(&db).unwrap();
        fs::write(&db, &bytes[..bytes.len() / 2]).unwrap();

        // Readers report it and leave the state dir as it is; the writer reports it once.
        let (snap, _tmp) = Store::open_snapshot(dir.path()).unwrap().unwrap();
        let seen = snap.damage().expect("damage found").to_string();
        let left = snap.tasks("r1").unwrap().count("").unwrap().1 as u64;
        assert!(left < 300, "{left}");
        assert!(
            seen.contains(&format!(
                "Lost: {} of 300 task records of run r1",
                300 - left
            )),
            "{seen}"
        );
        assert!(seen.contains("reconciling against the servers"), "{seen}");
        drop(snap);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.damage().unwrap().records(), 300 - left);
        drop(store);
        assert!(Store::open(dir.path()).unwrap().damage().is_none());
    }

    #[tokio::test]
    async fn the_side_record_never_counts_more_than_the_disk_holds() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 10).await;
        let store = Store::open(dir.path()).unwrap();
        let tasks = store.tasks("r1").unwrap();
        assert_eq!(ledger(dir.path())["tasks/r1"], 10);
        // Lazy records count once flushed; a removal lowers the count before it happens.
        let state = TaskState::Done(serde_json::json!(1));
        tasks.set_lazy("lazy/1", &state).unwrap();
        assert_eq!(ledger(dir.path())["tasks/r1"], 10);
        tasks.sync().await.unwrap();
        assert_eq!(ledger(dir.path())["tasks/r1"], 11);
        tasks.remove_prefix("k/").unwrap();
        assert_eq!(ledger(dir.path())["tasks/r1"], 1);
        tasks.set("k/again", &state).await.unwrap();
        assert_eq!(ledger(dir.path())["tasks/r1"], 2);
        assert_eq!(ledger(dir.path())["runs"], 1);
        drop((tasks, store));
        assert!(Store::open(dir.path()).unwrap().damage().is_none());
    }

    #[tokio::test]
    async fn a_state_dir_deleted_under_a_run_stops_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s");
        let store = Store::open(&state).unwrap();
        let tasks = store.tasks("r1").unwrap();
        let done = TaskState::Done(serde_json::json!(1));
        tasks.set("a", &done).await.unwrap();
        fs::remove_dir_all(&state).unwrap();
        for err in [
            tasks.set_lazy("b", &done).unwrap_err(),
            tasks.set("c", &done).await.unwrap_err(),
            store
                .put_run(&run("r1", RunStatus::Done))
                .await
                .unwrap_err(),
        ] {
            assert!(matches!(err, CheckpointError::Gone { .. }), "{err}");
            assert!(
                err.to_string().contains("was deleted or moved away"),
                "{err}"
            );
        }
    }

    #[tokio::test]
    async fn a_full_disk_is_said_plainly() {
        // /dev/full fails every write with ENOSPC, as a full disk does.
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("state")).unwrap();
        std::os::unix::fs::symlink("/dev/full", dir.path().join("state/db")).unwrap();
        // sled may already write while it opens (what it writes at open depends on its
        // flusher's timing), so the open or the first record fails: either says it plainly.
        let err = match Store::open(dir.path()) {
            Err(err) => err,
            Ok(store) => store
                .put_run(&run("r1", RunStatus::Running))
                .await
                .unwrap_err(),
        };
        assert!(matches!(err, CheckpointError::DiskFull { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "no space left on the disk of the state dir `{}`: planrun cannot record its \
                 progress there. Free some space and run the command again: what was recorded \
                 before is kept, and apply resumes from it as after a crash.",
                dir.path().display()
            )
        );
        // A snapshot never reads a device.
        let (snap, _tmp) = Store::open_snapshot(dir.path()).unwrap().unwrap();
        assert!(snap.runs().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_store_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        filled(dir.path(), 1).await;
        let conf = dir.path().join("state/conf");
        let bytes = fs::read(&conf).unwrap();
        fs::write(&conf, &bytes[..bytes.len() / 2]).unwrap();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        let d = dir.path().display();
        assert_eq!(
            err,
            format!(
                "the state store `{d}/state` cannot be read: sled found corrupted data in it.\n\
                 It is damaged (or was not written by planrun). Move the state dir aside and \
                 apply again; the next apply starts without records and reconciles against the \
                 servers as after a crash:\n    mv {d} {d}.damaged"
            )
        );
    }

    #[test]
    fn snapshots_of_dead_readers_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dead = tmp
            .path()
            .join(format!("{SNAPSHOT_PREFIX}{}-abc", u32::MAX - 1));
        let live = tmp
            .path()
            .join(format!("{SNAPSHOT_PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("planrun-other-1");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("state")).unwrap();
        }
        remove_stale_snapshots(tmp.path());
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_486_462), "2026-11-24 02:14:22 UTC");
    }
}
