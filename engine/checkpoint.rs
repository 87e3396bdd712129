//! Durable run state in sled: runs, the state of every task, and the lock for one apply per state dir.
//!
//! Invariant: a task's state is flushed to disk before the side effect that depends on it starts
//! (an intent before a non-idempotent call, a result before the next task relies on it). Nothing
//! secret is stored: records hold ids, names, keys, sizes and checksums only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot open the state store at `{path}`: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("state store at `{path}`: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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

pub struct Store {
    db: sled::Db,
    runs: sled::Tree,
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the store in `dir` for writing.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        Self::open_at(dir, &dir.join("state"))
    }

    /// Opens a private copy of the store so that readers (`plan`, `runs`, `status`) never write
    /// to the state dir and are not blocked by a running apply. `None` when there is no store yet.
    pub fn open_snapshot(dir: &Path) -> Result<Option<(Store, tempfile::TempDir)>> {
        let src = dir.join("state");
        if !src.exists() {
            return Ok(None);
        }
        let tmp = tempfile::tempdir().map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let copy = tmp.path().join("state");
        copy_dir(&src, &copy).map_err(|source| CheckpointError::Io {
            path: src.clone(),
            source,
        })?;
        let store = Self::open_at(dir, &copy)?;
        Ok(Some((store, tmp)))
    }

    fn open_at(dir: &Path, db_path: &Path) -> Result<Store> {
        let db =
            // Lazily written records (object copies) reach the disk within 100 ms.
            sled::Config::new()
                .path(db_path)
                .flush_every_ms(Some(100))
                .open()
                .map_err(|source| CheckpointError::Open {
                    path: db_path.to_path_buf(),
                    source,
                })?;
        let runs = db.open_tree("runs")?;
        Ok(Store {
            db,
            runs,
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub async fn put_run(&self, run: &RunRecord) -> Result<()> {
        self.runs.insert(run.id.as_bytes(), encode(run))?;
        self.runs.flush_async().await?;
        Ok(())
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
        Ok(Tasks {
            tree: self.db.open_tree(format!("tasks/{run}"))?,
        })
    }
}

/// The tasks of one run, keyed by a path-like task key (`backup/coll/seg/443/obj/...`).
#[derive(Clone)]
pub struct Tasks {
    tree: sled::Tree,
}

impl Tasks {
    pub fn get(&self, key: &str) -> Result<Option<TaskState>> {
        self.tree
            .get(key.as_bytes())?
            .map(|v| decode(key.as_bytes(), &v))
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
        self.tree.insert(key.as_bytes(), encode(state))?;
        self.tree.flush_async().await?;
        crate::fault::point("checkpoint");
        Ok(())
    }

    /// Writes without waiting for disk: for results whose loss only means redoing idempotent work
    /// (an object copy that a later run finds present and verified). `sync` makes them durable.
    pub fn set_lazy(&self, key: &str, state: &TaskState) -> Result<()> {
        self.tree.insert(key.as_bytes(), encode(state))?;
        Ok(())
    }

    pub async fn sync(&self) -> Result<()> {
        self.tree.flush_async().await?;
        Ok(())
    }

    pub fn remove_prefix(&self, prefix: &str) -> Result<()> {
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, _) = kv?;
            self.tree.remove(k)?;
        }
        Ok(())
    }

    /// (finished, all) task counts under a key prefix.
    pub fn count(&self, prefix: &str) -> Result<(usize, usize)> {
        let mut done = 0;
        let mut all = 0;
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, v) = kv?;
            all += 1;
            if matches!(decode(&k, &v)?, TaskState::Done(_)) {
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

fn copy_dir(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
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
        fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
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
                        .map_err(|source| CheckpointError::Io {
                            path: path.clone(),
                            source,
                        })?;
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
                Err(source) => return Err(CheckpointError::Io { path, source }),
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

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_795_486_462), "2026-11-24 02:14:22 UTC");
    }
}
