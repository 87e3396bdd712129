//! Databases: list, create, drop.

use super::{DEFAULT_DATABASE, MilvusClient, Repeat};
use crate::milvus::MilvusError;
use crate::milvus::pb::milvus as m;

impl MilvusClient {
    /// The databases calls can address: the server's list, or the default alone on a server
    /// without databases.
    pub async fn databases(&self) -> Result<Vec<String>, MilvusError> {
        if self.info.databases {
            self.list_databases().await
        } else {
            Ok(vec![DEFAULT_DATABASE.to_string()])
        }
    }

    pub async fn list_databases(&self) -> Result<Vec<String>, MilvusError> {
        let r = self
            .call(
                "ListDatabases",
                None,
                Repeat::Always,
                m::ListDatabasesRequest { base: None },
                |mut c, r| async move { c.list_databases(r).await },
            )
            .await?;
        Ok(r.db_names)
    }

    pub async fn create_database(&self, db: &str) -> Result<(), MilvusError> {
        let req = m::CreateDatabaseRequest {
            base: None,
            db_name: db.to_string(),
        };
        self.call(
            "CreateDatabase",
            None,
            Repeat::IfNotApplied,
            req,
            |mut c, r| async move { c.create_database(r).await },
        )
        .await?;
        Ok(())
    }

    /// Drops an empty database; dropping one that does not exist succeeds.
    pub async fn drop_database(&self, db: &str) -> Result<(), MilvusError> {
        let req = m::DropDatabaseRequest {
            base: None,
            db_name: db.to_string(),
        };
        self.call(
            "DropDatabase",
            None,
            Repeat::Always,
            req,
            |mut c, r| async move { c.drop_database(r).await },
        )
        .await?;
        Ok(())
    }
}
