//! Run records: one per apply of one version of a plan, and how it ended.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::store::Store;
use super::{CheckpointError, RUNS, Result, decode, encode};

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

impl Store {
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
}
