//! Segments: flush, flush state, and the persisted segments of a collection.

use std::time::Duration;

use super::poll::{POLL_FIRST, Polled};
use super::{MilvusClient, Repeat};
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
    /// `SegmentLevel` as sent, so that a level this build does not know can be refused: L0
    /// segments (Milvus 2.4 on) hold only deletes; 2.3.5 sends none (Legacy).
    pub level: i32,
    /// The segment's storage format (Milvus 2.6 on; 0 when not sent): 2 is storage v2.
    pub storage_version: i64,
}

impl SegmentInfo {
    fn from_pb(s: m::PersistentSegmentInfo) -> Self {
        SegmentInfo {
            id: s.segment_id,
            collection_id: s.collection_id,
            partition_id: s.partition_id,
            num_rows: s.num_rows,
            state: SegmentState::try_from(s.state).unwrap_or(SegmentState::None),
            level: s.level,
            storage_version: s.storage_version,
        }
    }
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
            .map(SegmentInfo::from_pb)
            .filter(|s| !matches!(s.state, SegmentState::Dropped | SegmentState::NotExist))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::pb::common::SegmentLevel;
    use prost::Message as _;

    /// An answer shaped like a Milvus 2.6 server's (fields 6 and 8 of `PersistentSegmentInfo`,
    /// from the protocol facts), encoded and decoded as on the wire; and a 2.3.5 one without them.
    #[test]
    fn segment_infos_decode_level_and_storage_version() {
        let sent = m::GetPersistentSegmentInfoResponse {
            status: None,
            infos: vec![
                m::PersistentSegmentInfo {
                    segment_id: 11,
                    collection_id: 1,
                    partition_id: 2,
                    num_rows: 100,
                    state: SegmentState::Flushed as i32,
                    level: SegmentLevel::L1 as i32,
                    storage_version: 2,
                },
                m::PersistentSegmentInfo {
                    segment_id: 12,
                    collection_id: 1,
                    partition_id: -1,
                    num_rows: 3,
                    state: SegmentState::Flushed as i32,
                    level: SegmentLevel::L0 as i32,
                    storage_version: 1,
                },
                m::PersistentSegmentInfo {
                    segment_id: 13,
                    level: 9,
                    ..Default::default()
                },
            ],
        };
        let got = m::GetPersistentSegmentInfoResponse::decode(sent.encode_to_vec().as_slice())
            .unwrap()
            .infos
            .into_iter()
            .map(SegmentInfo::from_pb)
            .collect::<Vec<_>>();
        assert_eq!((got[0].level, got[0].storage_version), (2, 2));
        assert_eq!((got[1].level, got[1].partition_id), (1, -1));
        // A level this build does not know stays visible, to be refused.
        assert_eq!(got[2].level, 9);
        let old = m::PersistentSegmentInfo {
            segment_id: 5,
            num_rows: 7,
            state: SegmentState::Sealed as i32,
            ..Default::default()
        };
        let s = SegmentInfo::from_pb(
            m::PersistentSegmentInfo::decode(old.encode_to_vec().as_slice()).unwrap(),
        );
        assert_eq!(
            (s.level, s.storage_version, s.state),
            (0, 0, SegmentState::Sealed)
        );
    }
}
