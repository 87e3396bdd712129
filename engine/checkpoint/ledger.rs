//! The side record (`records.json`): how many records each tree held, and the damage it shows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{TASKS, encode};
use crate::text::short;

/// Record counts per tree. The file never claims more than the disk holds (counts are taken
/// before the flush they follow, and lowered on disk before a removal), so a crash at any moment
/// never looks like damage, while any record sled drops does.
#[derive(Default)]
pub(super) struct Ledger {
    /// Records per tree in memory: a new key adds one, a removed key takes one.
    pub(super) live: BTreeMap<String, u64>,
    /// What `records.json` says.
    pub(super) written: BTreeMap<String, u64>,
    /// Bumped by every removal: counts taken before one may include what it removed.
    pub(super) removals: u64,
}

/// Replaces `records.json` whole (write and rename). `durable` waits for the disk: a lowered count
/// must be there before the removal it allows for can be.
pub(super) fn write_ledger(
    path: &Path,
    counts: &BTreeMap<String, u64>,
    durable: bool,
) -> std::io::Result<()> {
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
    pub(super) fn find(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::testing::filled;
    use crate::checkpoint::{LEDGER, Store, TaskState};

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
}
