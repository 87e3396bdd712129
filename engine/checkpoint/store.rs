//! The sled store: opening it, and what the store and the tasks of its runs share.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::ledger::{Damage, Ledger, write_ledger};
use super::{CheckpointError, LEDGER, RUNS, Result, TASKS, io_error};

pub struct Store {
    pub(super) runs: sled::Tree,
    pub(super) shared: Arc<Shared>,
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

    pub(super) fn open_at(dir: &Path, db_path: &Path, check: bool) -> Result<Store> {
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
}

/// What a store and its `Tasks` share: the db, where it is, and the side record.
pub(super) struct Shared {
    pub(super) db: sled::Db,
    /// The state dir as the plan names it, for messages.
    dir: PathBuf,
    /// sled's directory (`<state dir>/state`, or a snapshot's copy of it).
    path: PathBuf,
    /// Device and inode of sled's log file when opened: a deleted or moved state dir leaves sled
    /// writing to a file without a name, so before a write counts, the name must still lead to it.
    identity: Option<(u64, u64)>,
    pub(super) ledger: Mutex<Ledger>,
}

impl Shared {
    pub(super) fn ledger_path(&self) -> PathBuf {
        self.path.join(LEDGER)
    }

    pub(super) fn check_present(&self) -> Result<()> {
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

    pub(super) fn io(&self, e: std::io::Error) -> CheckpointError {
        // Writing into a state dir that is gone fails in many ways (not found, ...): say why.
        match self.check_present() {
            Err(gone) => gone,
            Ok(()) => io_error(&self.dir, &self.path, e),
        }
    }

    pub(super) fn sled(&self, e: sled::Error) -> CheckpointError {
        match e {
            sled::Error::Io(e) => self.io(e),
            e => CheckpointError::Sled(e),
        }
    }

    pub(super) fn added(&self, tree: &str, new: bool) {
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
    pub(super) async fn seal(&self) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::checkpoint::testing::{filled, run};
    use crate::checkpoint::{RunStatus, TaskState};

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
}
