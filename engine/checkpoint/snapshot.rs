//! Private copies of the store for readers, and the removal of those their killed owners left.

use std::fs;
use std::path::Path;

use super::lock::{lock_holder, process_alive};
use super::store::Store;
use super::{CheckpointError, LEDGER, Result};

/// Snapshot copies live in the system temp dir under this name and their owner's pid, so that
/// those of a killed reader (whose `TempDir` never dropped) can be found and removed.
const SNAPSHOT_PREFIX: &str = "planrun-snapshot-";

impl Store {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RunStatus;
    use crate::checkpoint::testing::run;

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
}
