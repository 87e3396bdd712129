//! Bulk import: start tasks, read their state, list them, wait for them.

use std::time::Duration;

use super::poll::Polled;
use super::{MilvusClient, Repeat, Wait, kv, pairs};
use crate::milvus::MilvusError;
use crate::milvus::pb::common::ImportState;
use crate::milvus::pb::milvus as m;

/// The state of one bulk-import task.
#[derive(Clone, Debug)]
pub struct ImportTask {
    pub id: i64,
    pub state: ImportState,
    pub row_count: i64,
    /// The server's `failed_reason` info, empty unless the task failed.
    pub failed_reason: String,
    /// All infos the server reports (`files`, `collection`, `partition`, `progress_percent`, ...).
    pub infos: Vec<(String, String)>,
    pub collection_id: i64,
    pub segment_ids: Vec<i64>,
    pub create_ts: i64,
}

impl ImportState {
    /// The task ended without its rows (and is not retried by the server).
    pub fn failed(self) -> bool {
        matches!(
            self,
            ImportState::ImportFailed | ImportState::ImportFailedAndCleaned
        )
    }

    /// The task may still write rows.
    pub fn in_flight(self) -> bool {
        !self.failed() && self != ImportState::ImportCompleted
    }
}

impl ImportTask {
    fn from_pb(r: m::GetImportStateResponse) -> Self {
        let infos = pairs(r.infos);
        let failed_reason = infos
            .iter()
            .find(|(k, _)| k == "failed_reason")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        ImportTask {
            id: r.id,
            state: ImportState::try_from(r.state).unwrap_or(ImportState::ImportPending),
            row_count: r.row_count,
            failed_reason,
            infos,
            collection_id: r.collection_id,
            segment_ids: r.segment_ids,
            create_ts: r.create_ts,
        }
    }

    pub fn info(&self, key: &str) -> Option<&str> {
        self.infos
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The first pause of `wait_import`. It has always been 300 ms rather than the 200 ms of the
/// other waits; kept so that moving the loop onto `poll_until` changed no timing.
const IMPORT_POLL_FIRST: Duration = Duration::from_millis(300);

impl MilvusClient {
    /// Starts a bulk import of `files` (paths inside the instance's own bucket and root path)
    /// into `partition` (None = `_default`). Returns the task ids.
    pub async fn import(
        &self,
        collection: &str,
        partition: Option<&str>,
        files: Vec<String>,
        options: &[(String, String)],
    ) -> Result<Vec<i64>, MilvusError> {
        let req = m::ImportRequest {
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            channel_names: Vec::new(),
            row_based: false,
            files,
            options: kv(options),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "Import",
                Some(collection),
                Repeat::IfNotApplied,
                req,
                |mut c, r| async move { c.import(r).await },
            )
            .await?;
        if r.tasks.is_empty() {
            return Err(self.unexpected(
                "Import",
                Some(collection),
                "the server returned no task id",
            ));
        }
        Ok(r.tasks)
    }

    /// The state of one import task. Milvus 2.3.5 dies on a cancelled GetImportState, so this
    /// call is never cancelled (`Wait::Patient`): on a stalled link it keeps waiting, passing
    /// `stalled` a message for each per-call timeout without an answer, and fails with a
    /// `Timeout` only after `STALL_LIMIT`, leaving the call in flight. Do not ask again about a
    /// task after that `Timeout` in the same process: the first call may still be in flight.
    pub async fn get_import_state(
        &self,
        task: i64,
        stalled: &(dyn Fn(String) + Sync),
    ) -> Result<ImportTask, MilvusError> {
        let r = self
            .call_waiting(
                Wait::Patient(stalled),
                "GetImportState",
                None,
                Repeat::Always,
                m::GetImportStateRequest { task },
                |mut c, r| async move { c.get_import_state(r).await },
            )
            .await?;
        let mut t = ImportTask::from_pb(r);
        // 2.3.5 leaves `id` empty in this answer; the caller asked by id.
        if t.id == 0 {
            t.id = task;
        }
        Ok(t)
    }

    /// The newest `limit` import tasks of `collection` ("" = all collections; limit 0 = all).
    pub async fn list_import_tasks(
        &self,
        collection: &str,
        limit: i64,
    ) -> Result<Vec<ImportTask>, MilvusError> {
        let req = m::ListImportTasksRequest {
            collection_name: collection.to_string(),
            limit,
            db_name: self.db.clone(),
        };
        let site = (!collection.is_empty()).then_some(collection);
        let r = self
            .call(
                "ListImportTasks",
                site,
                Repeat::Always,
                req,
                |mut c, r| async move { c.list_import_tasks(r).await },
            )
            .await?;
        Ok(r.tasks.into_iter().map(ImportTask::from_pb).collect())
    }

    /// Polls every task until all are `ImportCompleted`; fails with `ImportFailed` (carrying
    /// the server's reason) as soon as one fails. Tasks are asked about one after another, so
    /// at most one GetImportState is in flight; a stall is logged as a warning.
    pub async fn wait_import(
        &self,
        collection: &str,
        tasks: &[i64],
        timeout: Duration,
    ) -> Result<Vec<ImportTask>, MilvusError> {
        let stalled = |msg: String| tracing::warn!(collection, "{msg}");
        self.poll_until("Import", collection, timeout, IMPORT_POLL_FIRST, || async {
            let mut states = Vec::with_capacity(tasks.len());
            for &t in tasks {
                let s = self.get_import_state(t, &stalled).await?;
                if matches!(
                    s.state,
                    ImportState::ImportFailed | ImportState::ImportFailedAndCleaned
                ) {
                    return Err(MilvusError::ImportFailed {
                        instance: self.info.name.clone(),
                        collection: collection.to_string(),
                        task: t,
                        reason: if s.failed_reason.is_empty() {
                            format!("state {:?}", s.state)
                        } else {
                            s.failed_reason
                        },
                    });
                }
                states.push(s);
            }
            if states
                .iter()
                .all(|s| s.state == ImportState::ImportCompleted)
            {
                return Ok(Polled::Done(states));
            }
            let last = states
                .iter()
                .map(|s| format!("task {} {:?}", s.id, s.state))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Polled::Pending(last))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::pb::common::KeyValuePair;

    #[test]
    fn import_task_reads_failed_reason() {
        let t = ImportTask::from_pb(m::GetImportStateResponse {
            state: ImportState::ImportFailed as i32,
            infos: vec![KeyValuePair {
                key: "failed_reason".into(),
                value: "unsupported file type".into(),
            }],
            ..Default::default()
        });
        assert_eq!(t.state, ImportState::ImportFailed);
        assert_eq!(t.failed_reason, "unsupported file type");
        assert_eq!(t.info("failed_reason"), Some("unsupported file type"));
    }
}
