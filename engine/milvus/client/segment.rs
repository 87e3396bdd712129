//! Segments: flush, flush state, and the persisted segments of a collection.

use std::time::Duration;

use super::{MilvusClient, POLL_FIRST, Polled, Repeat};
use crate::milvus::MilvusError;
use crate::milvus::pb::common::SegmentState;
use crate::milvus::pb::milvus as m;

/// What one `Flush` reported for one collection.
#[derive(Clone, Debug, Default)]
pub struct FlushResult {
    pub collection: String,
    /// Segments sealed by this flush; `GetFlushState` waits for these.
    pub segment_ids: Vec<i64>,
    /// Segments that were already flushed.
    pub flushed_segment_ids: Vec<i64>,
    pub flush_ts: u64,
}

/// One persisted segment of a collection.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub id: i64,
    pub collection_id: i64,
    pub partition_id: i64,
    pub num_rows: i64,
    pub state: SegmentState,
}

impl MilvusClient {
    /// Seals the growing segments of `collections`. The data is durable only once
    /// `get_flush_state` says so; `flush_and_wait` does both.
    pub async fn flush(&self, collections: &[String]) -> Result<Vec<FlushResult>, MilvusError> {
        let req = m::FlushRequest {
            base: None,
            db_name: self.db.clone(),
            collection_names: collections.to_vec(),
        };
        let first = collections.first().map(String::as_str);
        let mut r = self
            .call("Flush", first, Repeat::Always, req, |mut c, r| async move {
                c.flush(r).await
            })
            .await?;
        Ok(collections
            .iter()
            .map(|name| FlushResult {
                collection: name.clone(),
                segment_ids: r
                    .coll_seg_i_ds
                    .remove(name)
                    .map(|a| a.data)
                    .unwrap_or_default(),
                flushed_segment_ids: r
                    .flush_coll_seg_i_ds
                    .remove(name)
                    .map(|a| a.data)
                    .unwrap_or_default(),
                flush_ts: r.coll_flush_ts.get(name).copied().unwrap_or_default(),
            })
            .collect())
    }

    pub async fn get_flush_state(
        &self,
        collection: &str,
        segment_ids: &[i64],
        flush_ts: u64,
    ) -> Result<bool, MilvusError> {
        let req = m::GetFlushStateRequest {
            segment_i_ds: segment_ids.to_vec(),
            flush_ts,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let r = self
            .call(
                "GetFlushState",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_flush_state(r).await },
            )
            .await?;
        Ok(r.flushed)
    }

    /// Flush, then poll GetFlushState with the returned segments and flush timestamp until
    /// everything written before the flush is persisted.
    pub async fn flush_and_wait(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<FlushResult, MilvusError> {
        let fr = self
            .flush(&[collection.to_string()])
            .await?
            .pop()
            .unwrap_or_default();
        self.poll_until("Flush", collection, timeout, POLL_FIRST, || async {
            let flushed = self
                .get_flush_state(collection, &fr.segment_ids, fr.flush_ts)
                .await?;
            Ok(if flushed {
                Polled::Done(())
            } else {
                Polled::Pending(format!("{} segments not yet flushed", fr.segment_ids.len()))
            })
        })
        .await?;
        Ok(fr)
    }

    /// The collection's live persisted segments (sealed, flushing, flushed; not dropped).
    pub async fn get_persistent_segment_info(
        &self,
        collection: &str,
    ) -> Result<Vec<SegmentInfo>, MilvusError> {
        let req = m::GetPersistentSegmentInfoRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let r = self
            .call(
                "GetPersistentSegmentInfo",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_persistent_segment_info(r).await },
            )
            .await?;
        Ok(r.infos
            .into_iter()
            .map(|s| SegmentInfo {
                id: s.segment_id,
                collection_id: s.collection_id,
                partition_id: s.partition_id,
                num_rows: s.num_rows,
                state: SegmentState::try_from(s.state).unwrap_or(SegmentState::None),
            })
            .filter(|s| !matches!(s.state, SegmentState::Dropped | SegmentState::NotExist))
            .collect())
    }
}
