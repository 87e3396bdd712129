//! Collections and their partitions: list, describe, create, drop, rename.

use super::{MilvusClient, Repeat, kv, pairs};
use crate::milvus::MilvusError;
use crate::milvus::pb::common::ConsistencyLevel;
use crate::milvus::pb::milvus as m;
use crate::milvus::pb::schema::{CollectionSchema, FieldSchema};

/// The partition every collection has, and the only one on a server without partitions.
const DEFAULT_PARTITION: &str = "_default";

/// What `describe_collection` reports: everything needed to recreate the collection.
#[derive(Clone, Debug)]
pub struct CollectionInfo {
    pub name: String,
    pub collection_id: i64,
    pub schema: CollectionSchema,
    pub shards_num: i32,
    pub consistency_level: ConsistencyLevel,
    pub properties: Vec<(String, String)>,
    pub aliases: Vec<String>,
    pub num_partitions: i64,
    pub virtual_channels: Vec<String>,
    pub created_timestamp: u64,
}

impl CollectionInfo {
    pub fn primary_field(&self) -> Option<&FieldSchema> {
        self.schema.fields.iter().find(|f| f.is_primary_key)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub name: String,
    /// 0 on Milvus Lite, which has no partition ids.
    pub id: i64,
}

impl MilvusClient {
    pub async fn show_collections(&self) -> Result<Vec<String>, MilvusError> {
        let req = m::ShowCollectionsRequest {
            db_name: self.db.clone(),
            ..Default::default()
        };
        let r = self
            .call(
                "ShowCollections",
                None,
                Repeat::Always,
                req,
                |mut c, r| async move { c.show_collections(r).await },
            )
            .await?;
        Ok(r.collection_names)
    }

    pub async fn has_collection(&self, collection: &str) -> Result<bool, MilvusError> {
        let req = m::HasCollectionRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "HasCollection",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.has_collection(r).await },
            )
            .await?;
        Ok(r.value)
    }

    pub async fn describe_collection(
        &self,
        collection: &str,
    ) -> Result<CollectionInfo, MilvusError> {
        let req = m::DescribeCollectionRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "DescribeCollection",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_collection(r).await },
            )
            .await?;
        let schema = r.schema.ok_or_else(|| {
            self.unexpected(
                "DescribeCollection",
                Some(collection),
                "no schema in the answer",
            )
        })?;
        Ok(CollectionInfo {
            name: if r.collection_name.is_empty() {
                collection.to_string()
            } else {
                r.collection_name
            },
            collection_id: r.collection_id,
            schema,
            shards_num: r.shards_num,
            consistency_level: ConsistencyLevel::try_from(r.consistency_level)
                .unwrap_or(ConsistencyLevel::Bounded),
            properties: pairs(r.properties),
            aliases: r.aliases,
            num_partitions: r.num_partitions,
            virtual_channels: r.virtual_channel_names,
            created_timestamp: r.created_timestamp,
        })
    }

    /// Creates a collection. `schema.name` is overwritten with `name`, so a schema read from
    /// one collection can create another.
    pub async fn create_collection(
        &self,
        name: &str,
        schema: &CollectionSchema,
        shards_num: i32,
        consistency_level: ConsistencyLevel,
        properties: &[(String, String)],
    ) -> Result<(), MilvusError> {
        self.create_collection_partitioned(
            name,
            schema,
            shards_num,
            consistency_level,
            properties,
            0,
        )
        .await
    }

    /// `create_collection` with the number of partitions a partition-key collection gets
    /// (0 = the server's default).
    pub async fn create_collection_partitioned(
        &self,
        name: &str,
        schema: &CollectionSchema,
        shards_num: i32,
        consistency_level: ConsistencyLevel,
        properties: &[(String, String)],
        num_partitions: i64,
    ) -> Result<(), MilvusError> {
        let mut schema = schema.clone();
        schema.name = name.to_string();
        let req = m::CreateCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: name.to_string(),
            schema: prost::Message::encode_to_vec(&schema),
            shards_num,
            consistency_level: consistency_level as i32,
            properties: kv(properties),
            num_partitions,
        };
        self.call(
            "CreateCollection",
            Some(name),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_collection(r).await },
        )
        .await?;
        Ok(())
    }

    /// Drops a collection; dropping one that does not exist succeeds.
    pub async fn drop_collection(&self, collection: &str) -> Result<(), MilvusError> {
        let req = m::DropCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        self.call(
            "DropCollection",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.drop_collection(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn show_partitions(
        &self,
        collection: &str,
    ) -> Result<Vec<PartitionInfo>, MilvusError> {
        if !self.info.partitions {
            return Ok(vec![PartitionInfo {
                name: DEFAULT_PARTITION.to_string(),
                id: 0,
            }]);
        }
        let req = m::ShowPartitionsRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            ..Default::default()
        };
        let r = self
            .call(
                "ShowPartitions",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.show_partitions(r).await },
            )
            .await?;
        Ok(r.partition_names
            .into_iter()
            .enumerate()
            .map(|(i, name)| PartitionInfo {
                name,
                id: r.partition_i_ds.get(i).copied().unwrap_or_default(),
            })
            .collect())
    }

    pub async fn create_partition(
        &self,
        collection: &str,
        partition: &str,
    ) -> Result<(), MilvusError> {
        let req = m::CreatePartitionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.to_string(),
        };
        self.call(
            "CreatePartition",
            Some(collection),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_partition(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn has_partition(
        &self,
        collection: &str,
        partition: &str,
    ) -> Result<bool, MilvusError> {
        if !self.info.partitions {
            return Ok(partition == DEFAULT_PARTITION);
        }
        let req = m::HasPartitionRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.to_string(),
        };
        let r = self
            .call(
                "HasPartition",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.has_partition(r).await },
            )
            .await?;
        Ok(r.value)
    }

    /// Renames a collection, optionally into another database.
    pub async fn rename_collection(
        &self,
        old: &str,
        new: &str,
        new_db: Option<&str>,
    ) -> Result<(), MilvusError> {
        let req = m::RenameCollectionRequest {
            base: None,
            db_name: self.db.clone(),
            old_name: old.to_string(),
            new_name: new.to_string(),
            new_db_name: new_db.unwrap_or_default().to_string(),
        };
        self.call(
            "RenameCollection",
            Some(old),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.rename_collection(r).await },
        )
        .await?;
        Ok(())
    }
}
