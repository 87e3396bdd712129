//! Indexes: describe, create, and wait for the build.

use std::time::Duration;

use super::poll::{POLL_FIRST, Polled};
use super::{MilvusClient, Repeat, kv, pairs};
use crate::milvus::MilvusError;
use crate::milvus::error::CODE_INDEX_NOT_FOUND;
use crate::milvus::pb::common::{ErrorCode, IndexState};
use crate::milvus::pb::milvus as m;

#[derive(Clone, Debug)]
pub struct IndexInfo {
    pub index_name: String,
    pub field_name: String,
    /// `index_type`, `metric_type`, `params` (a JSON string) and whatever else the server echoes.
    pub params: Vec<(String, String)>,
    pub state: i32,
    pub indexed_rows: i64,
    pub total_rows: i64,
    pub pending_index_rows: i64,
    pub fail_reason: String,
}

impl MilvusClient {
    /// The collection's indexes; empty when it has none (code 700 is not an error here).
    pub async fn describe_index(&self, collection: &str) -> Result<Vec<IndexInfo>, MilvusError> {
        let req = m::DescribeIndexRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = match self
            .call(
                "DescribeIndex",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_index(r).await },
            )
            .await
        {
            Ok(r) => r,
            Err(MilvusError::Status {
                code, error_code, ..
            }) if code == CODE_INDEX_NOT_FOUND || error_code == ErrorCode::IndexNotExist as i32 => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        Ok(r.index_descriptions
            .into_iter()
            .map(|d| IndexInfo {
                index_name: d.index_name,
                field_name: d.field_name,
                params: pairs(d.params),
                state: d.state,
                indexed_rows: d.indexed_rows,
                total_rows: d.total_rows,
                pending_index_rows: d.pending_index_rows,
                fail_reason: d.index_state_fail_reason,
            })
            .collect())
    }

    /// `params` are sent as the request's `extra_params`: `index_type`, `metric_type` and
    /// `params` (a JSON object string such as `{"nlist": 128}`).
    pub async fn create_index(
        &self,
        collection: &str,
        field: &str,
        index_name: &str,
        params: &[(String, String)],
    ) -> Result<(), MilvusError> {
        let req = m::CreateIndexRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            field_name: field.to_string(),
            extra_params: kv(params),
            index_name: index_name.to_string(),
        };
        // Creating the same index twice is accepted by Milvus, so a repeat is harmless.
        self.call(
            "CreateIndex",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.create_index(r).await },
        )
        .await?;
        Ok(())
    }

    /// Polls DescribeIndex until every index of the collection covers all its rows, so that a
    /// load which follows does not wait on index builds it cannot report.
    pub async fn wait_indexed(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<(), MilvusError> {
        self.poll_until("index build", collection, timeout, POLL_FIRST, || async {
            let indexes = self.describe_index(collection).await?;
            if let Some(f) = indexes
                .iter()
                .find(|i| i.state == IndexState::Failed as i32)
            {
                return Err(MilvusError::IndexFailed {
                    instance: self.info.name.clone(),
                    collection: collection.to_string(),
                    index: f.index_name.clone(),
                    reason: f.fail_reason.clone(),
                });
            }
            let built = |i: &IndexInfo| {
                i.indexed_rows >= i.total_rows
                    && i.pending_index_rows == 0
                    && matches!(
                        IndexState::try_from(i.state),
                        Ok(IndexState::Finished | IndexState::None)
                    )
            };
            let (done, all) = indexes
                .iter()
                .fold((0, 0), |(d, a), i| (d + i.indexed_rows, a + i.total_rows));
            Ok(if indexes.iter().all(built) {
                Polled::Done(())
            } else {
                Polled::Pending(format!("{done} of {all} rows indexed"))
            })
        })
        .await
    }
}
