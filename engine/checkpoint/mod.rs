//! Durable run state in sled: runs, the state of every task, and the lock for one apply per state dir.
//!
//! Invariant: a task's state is flushed to disk before the side effect that depends on it starts
//! (an intent before a non-idempotent call, a result before the next task relies on it). Nothing
//! secret is stored: records hold ids, names, keys, sizes and checksums only.
//!
//! What sled does not say, this module does: a state dir deleted or moved during a run (sled goes
//! on writing into files that no longer have a name), records lost to a damaged log (sled reads
//! it up to the damage and silently drops the rest; `records.json` beside it notices), a full disk.

use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

mod ledger;
mod lock;
mod runs;
mod snapshot;
mod store;
mod tasks;
mod time;

pub use ledger::Damage;
pub use lock::{RunLock, lock_holder};
pub use runs::{RunRecord, RunStatus};
pub use store::Store;
pub use tasks::{TaskState, Tasks};
pub use time::{format_time, now};

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

/// The side record of how many records each tree held at its last durable point.
const LEDGER: &str = "records.json";
const RUNS: &str = "runs";
const TASKS: &str = "tasks/";

/// Every record is JSON: runs, task states, the side record and the lock file.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("checkpoint records serialise")
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> Result<T> {
    serde_json::from_slice(value).map_err(|source| CheckpointError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// What the tests of several files start from.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use serde_json::Value;

    use super::{RunRecord, RunStatus, Store, TaskState, now};

    pub(super) fn run(id: &str, status: RunStatus) -> RunRecord {
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

    /// A store with `n` task records of run `r1`, each flushed.
    pub(super) async fn filled(dir: &Path, n: usize) {
        let store = Store::open(dir).unwrap();
        store.put_run(&run("r1", RunStatus::Running)).await.unwrap();
        let tasks = store.tasks("r1").unwrap();
        for i in 0..n {
            let state = TaskState::Done(serde_json::json!("x".repeat(50)));
            tasks.set(&format!("k/{i:04}"), &state).await.unwrap();
        }
    }
}
