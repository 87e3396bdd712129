//! The run lock: one `apply` per state dir, taken over from a dead holder.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::time::{format_time, now};
use super::{CheckpointError, Result, encode, io_error};

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

pub(super) fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
