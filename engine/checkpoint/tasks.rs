//! The state of every task of a run: `TaskState`, and `Tasks` that reads and writes it.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ledger::write_ledger;
use super::store::{Shared, Store};
use super::{CheckpointError, Result, TASKS, decode, encode};
use crate::secret::Veil;

/// The state of one task. `Intent` is written before a non-idempotent call; `Started` holds what
/// the server gave back (an import task id) before waiting on it; `Done` holds the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "data")]
pub enum TaskState {
    Intent(Value),
    Started(Value),
    Done(Value),
}

impl Store {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::RunStatus;
    use crate::checkpoint::testing::run;

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
}
