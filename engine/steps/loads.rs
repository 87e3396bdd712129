//! What a step loads on a source only to read it (rows backups, verify), and how it is given
//! back: the state before the run is recorded once and counts on every resume, and every load
//! planrun makes is undone, after a crash at the latest when the resumed step ends.

use serde::Serialize;

use super::ctx::{Result, StepCtx, StepError, ensure_loaded, to_json};
use crate::checkpoint::{TaskState, Tasks};
use crate::milvus::MilvusClient;
use crate::milvus::pb::common::LoadState;

impl StepCtx {
    /// Loads a collection to read it, and returns whether it was loaded before planrun touched
    /// it. That state is recorded (under `task`) the first time, before any load, and is the one
    /// returned on every resume: a load a killed run left behind is not mistaken for the
    /// source's own. A load planrun makes is recorded as an `Intent` before it is made, so
    /// [`StepCtx::release_read`] (or the step's end, [`StepCtx::release_reads`]) undoes it,
    /// even after a crash in between.
    pub async fn load_to_read(&self, c: &MilvusClient, coll: &str, task: &str) -> Result<bool> {
        let recorded = load_record(&self.tasks, &self.step, task)?;
        let live = c.get_load_state(coll).await? == LoadState::Loaded;
        let held = recorded.as_ref().is_some_and(|r| r.held);
        let was_loaded = recorded.as_ref().map_or(live, |r| r.was_loaded);
        let record = ReadLoad {
            instance: c.name().to_string(),
            database: c.database().to_string(),
            collection: coll.to_string(),
            was_loaded,
        };
        if !live && !held {
            // Also when planrun loaded and released it before: the record is armed again.
            self.set(&load_key(task), TaskState::Intent(to_json(&record)))
                .await?;
        } else if recorded.is_none() {
            self.set(&load_key(task), TaskState::Done(to_json(&record)))
                .await?;
        }
        ensure_loaded(c, coll).await?;
        Ok(was_loaded)
    }

    /// Whether the collection was loaded before planrun touched it: as recorded by
    /// [`StepCtx::load_to_read`], else (never loaded by this run) as it is now.
    pub async fn loaded_before(&self, c: &MilvusClient, coll: &str, task: &str) -> Result<bool> {
        match load_record(&self.tasks, &self.step, task)? {
            Some(r) => Ok(r.was_loaded),
            None => Ok(c.get_load_state(coll).await? == LoadState::Loaded),
        }
    }

    /// Releases what [`StepCtx::load_to_read`] loaded: the collection ends as it was.
    pub async fn release_read(&self, c: &MilvusClient, coll: &str, task: &str) -> Result<()> {
        if let Some(TaskState::Intent(record)) = self.state(&load_key(task))? {
            c.release_collection(coll).await?;
            self.set(&load_key(task), TaskState::Done(record)).await?;
        }
        Ok(())
    }

    /// Releases every load the step still holds: those of collections that failed, were
    /// interrupted, or were left by a killed run and not read again on resume. Run at every end
    /// of a step, so no load outlives the step that made it (short of a crash, whose records
    /// the resumed step's end releases).
    pub async fn release_reads(&self) -> Result<()> {
        let prefix = self.key(&format!("{LOAD}/"));
        for (key, state) in self.tasks.scan(&prefix)? {
            let TaskState::Intent(v) = state else {
                continue;
            };
            let Ok(r) = serde_json::from_value::<ReadLoad>(v) else {
                continue;
            };
            let task = &key[prefix.len()..];
            let c = self
                .res
                .milvus(&r.instance)
                .await?
                .with_database(&r.database);
            self.release_read(&c, &r.collection, task)
                .await
                .map_err(|e| {
                    StepError::Failed(format!(
                        "`{}.{}` on `{}`, loaded by planrun to read it, could not be released \
                         ({e}); the next apply releases it",
                        r.database, r.collection, r.instance
                    ))
                })?;
        }
        Ok(())
    }
}

/// Where a step records the loads it makes to read collections: under one prefix, so that the
/// step's end finds those it still holds without walking all its records.
const LOAD: &str = "@load";

fn load_key(task: &str) -> String {
    format!("{LOAD}/{task}")
}

/// The record of a collection planrun loads to read: where it is, and whether it was loaded
/// before planrun touched it (written once, carried along on every change of the record). An
/// `Intent` while planrun holds a load of it to undo, `Done` otherwise.
#[derive(Serialize, serde::Deserialize)]
struct ReadLoad {
    instance: String,
    database: String,
    collection: String,
    was_loaded: bool,
}

/// What a run recorded of a collection that step `step` loads to read (`task` as given to
/// [`StepCtx::load_to_read`]).
pub struct LoadRecord {
    /// Whether it was loaded before the run touched it.
    pub was_loaded: bool,
    /// Whether the run holds a load of it that is still to be undone.
    pub held: bool,
}

/// Read also by the preview of a resumed run, which shows a source as it was before the run,
/// not as a killed run left it.
pub fn load_record(tasks: &Tasks, step: &str, task: &str) -> Result<Option<LoadRecord>> {
    let (held, v) = match tasks.get(&format!("{step}/{}", load_key(task)))? {
        Some(TaskState::Intent(v)) => (true, v),
        Some(TaskState::Done(v)) => (false, v),
        _ => return Ok(None),
    };
    Ok(serde_json::from_value::<ReadLoad>(v)
        .ok()
        .map(|r| LoadRecord {
            was_loaded: r.was_loaded,
            held,
        }))
}
