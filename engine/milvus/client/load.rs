//! Loading collections into memory: load, progress, load state.

use std::time::Duration;

use super::poll::{POLL_FIRST, Polled};
use super::{MilvusClient, Repeat};
use crate::milvus::MilvusError;
use crate::milvus::pb::common::LoadState;
use crate::milvus::pb::milvus as m;

impl MilvusClient {
    /// Starts loading the collection into memory (one replica); `wait_loaded` waits for it.
    pub async fn load_collection(&self, collection: &str) -> Result<(), MilvusError> {
        let req = m::LoadCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            replica_number: 1,
            resource_groups: Vec::new(),
            refresh: false,
        };
        self.call(
            "LoadCollection",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.load_collection(r).await },
        )
        .await?;
        Ok(())
    }

    /// Releases the collection from memory (what planrun loaded on a source only to read it).
    pub async fn release_collection(&self, collection: &str) -> Result<(), MilvusError> {
        let req = m::ReleaseCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        self.call(
            "ReleaseCollection",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.release_collection(r).await },
        )
        .await?;
        Ok(())
    }

    /// Load progress in percent.
    pub async fn get_loading_progress(&self, collection: &str) -> Result<i64, MilvusError> {
        let req = m::GetLoadingProgressRequest {
            base: None,
            collection_name: collection.to_string(),
            partition_names: Vec::new(),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "GetLoadingProgress",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_loading_progress(r).await },
            )
            .await?;
        Ok(r.progress)
    }

    /// Polls GetLoadingProgress until 100 %.
    pub async fn wait_loaded(
        &self,
        collection: &str,
        timeout: Duration,
    ) -> Result<(), MilvusError> {
        self.poll_until(
            "LoadCollection",
            collection,
            timeout,
            POLL_FIRST,
            || async {
                let p = self.get_loading_progress(collection).await?;
                Ok(if p >= 100 {
                    Polled::Done(())
                } else {
                    Polled::Pending(format!("progress {p}%"))
                })
            },
        )
        .await
    }

    /// NotExist for a missing collection (with an OK status); Milvus Lite always says Loaded.
    pub async fn get_load_state(&self, collection: &str) -> Result<LoadState, MilvusError> {
        let req = m::GetLoadStateRequest {
            base: None,
            collection_name: collection.to_string(),
            partition_names: Vec::new(),
            db_name: self.db.clone(),
        };
        let r = self
            .call(
                "GetLoadState",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.get_load_state(r).await },
            )
            .await?;
        Ok(LoadState::try_from(r.state).unwrap_or(LoadState::NotExist))
    }
}
