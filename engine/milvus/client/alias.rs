//! Aliases: create, alter, drop, describe, list.

use super::{MilvusClient, Repeat};
use crate::milvus::MilvusError;
use crate::milvus::error::{CODE_ALIAS_NOT_FOUND, CODE_COLLECTION_NOT_FOUND};
use crate::milvus::pb::milvus as m;

impl MilvusClient {
    pub async fn create_alias(&self, collection: &str, alias: &str) -> Result<(), MilvusError> {
        let req = m::CreateAliasRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            alias: alias.to_string(),
        };
        self.call(
            "CreateAlias",
            Some(collection),
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_alias(r).await },
        )
        .await?;
        Ok(())
    }

    /// Points an existing alias at `collection`.
    pub async fn alter_alias(&self, collection: &str, alias: &str) -> Result<(), MilvusError> {
        let req = m::AlterAliasRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            alias: alias.to_string(),
        };
        self.call(
            "AlterAlias",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.alter_alias(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn drop_alias(&self, alias: &str) -> Result<(), MilvusError> {
        let req = m::DropAliasRequest {
            base: None,
            db_name: self.db.clone(),
            alias: alias.to_string(),
        };
        self.call(
            "DropAlias",
            None,
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.drop_alias(r).await },
        )
        .await?;
        Ok(())
    }

    /// The collection an alias points at, or `None` when the alias does not exist.
    pub async fn describe_alias(&self, alias: &str) -> Result<Option<String>, MilvusError> {
        let req = m::DescribeAliasRequest {
            base: None,
            db_name: self.db.clone(),
            alias: alias.to_string(),
        };
        match self
            .call(
                "DescribeAlias",
                None,
                Repeat::Always,
                req,
                |mut c, r| async move { c.describe_alias(r).await },
            )
            .await
        {
            Ok(r) => Ok(Some(r.collection)),
            // 2.3.5 says 1600 "alias not found"; Lite says 100.
            Err(MilvusError::Status { code, .. })
                if code == CODE_ALIAS_NOT_FOUND || code == CODE_COLLECTION_NOT_FOUND =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The aliases of `collection` ("" = all aliases of the database).
    pub async fn list_aliases(&self, collection: &str) -> Result<Vec<String>, MilvusError> {
        let req = m::ListAliasesRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
        };
        let site = (!collection.is_empty()).then_some(collection);
        let r = self
            .call(
                "ListAliases",
                site,
                Repeat::Always,
                req,
                |mut c, r| async move { c.list_aliases(r).await },
            )
            .await?;
        Ok(r.aliases)
    }
}
