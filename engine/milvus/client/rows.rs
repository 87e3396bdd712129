//! Rows: counting and paging with Query, Insert and Delete.

use super::{MilvusClient, Repeat, kv};
use crate::milvus::MilvusError;
use crate::milvus::data::{self, Pk};
use crate::milvus::pb::common::ConsistencyLevel;
use crate::milvus::pb::milvus as m;
use crate::milvus::pb::schema::FieldData;

/// Query pages are capped by Milvus: `offset + limit` must lie in [1, 16384].
pub const MAX_QUERY_LIMIT: usize = 16384;

/// How current a query's answer must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fresh {
    /// Everything written before the call (Strong): the server waits for its next time tick,
    /// up to 200 ms on Milvus 2.3.5, measured as the largest cost of a page after its size.
    Strong,
    /// What the server holds now (Bounded): for the pages of a walk after its Strong first one,
    /// which already waited for everything written before the walk began.
    Held,
}

/// One page of a primary-key cursor walk.
#[derive(Clone, Debug, Default)]
pub struct QueryPage {
    /// One column per output field (plus the primary key).
    pub fields: Vec<FieldData>,
    pub num_rows: usize,
    /// The key of the last row; pass it as `after` for the next page. `None` when empty.
    pub last_pk: Option<Pk>,
}

#[derive(Clone, Debug)]
pub struct InsertResult {
    pub insert_count: i64,
    /// The mutation timestamp (0 on Milvus Lite).
    pub timestamp: u64,
}

impl MilvusClient {
    /// One Query; `query_count` and `query_page` differ only in the expression, the output
    /// fields and the query params.
    async fn query(
        &self,
        collection: &str,
        partitions: &[String],
        expr: String,
        output_fields: Vec<String>,
        params: Vec<(String, String)>,
        fresh: Fresh,
    ) -> Result<m::QueryResults, MilvusError> {
        let level = match fresh {
            Fresh::Strong => ConsistencyLevel::Strong,
            Fresh::Held => ConsistencyLevel::Bounded,
        };
        let req = m::QueryRequest {
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            expr,
            output_fields,
            partition_names: partitions.to_vec(),
            // Strong with guarantee_timestamp 0: the server waits until everything written
            // before the call is visible. Bounded: it answers from what it holds.
            guarantee_timestamp: 0,
            consistency_level: level as i32,
            use_default_consistency: false,
            query_params: kv(&params),
            ..Default::default()
        };
        self.call(
            "Query",
            Some(collection),
            Repeat::Always,
            req,
            |mut c, r| async move { c.query(r).await },
        )
        .await
    }

    /// The exact number of rows matching `expr` ("" = all) in `partitions` (empty = all), read
    /// with Strong consistency. GetCollectionStatistics would miss growing segments on 2.3.5.
    pub async fn query_count(
        &self,
        collection: &str,
        partitions: &[String],
        expr: &str,
    ) -> Result<u64, MilvusError> {
        self.count(collection, partitions, expr, Fresh::Strong)
            .await
    }

    /// [`MilvusClient::query_count`] as current as `fresh` asks.
    pub async fn count(
        &self,
        collection: &str,
        partitions: &[String],
        expr: &str,
        fresh: Fresh,
    ) -> Result<u64, MilvusError> {
        let r = self
            .query(
                collection,
                partitions,
                expr.to_string(),
                vec!["count(*)".into()],
                Vec::new(),
                fresh,
            )
            .await?;
        let col = r
            .fields_data
            .iter()
            .find(|f| f.field_name == "count(*)")
            .or(r.fields_data.first())
            .ok_or_else(|| {
                self.unexpected("Query", Some(collection), "count(*) returned no column")
            })?;
        match data::pks(col).and_then(|v| v.into_iter().next()) {
            Some(Pk::Int(n)) if n >= 0 => Ok(n as u64),
            _ => Err(self.unexpected("Query", Some(collection), "count(*) is not an Int64 value")),
        }
    }

    /// One page of a primary-key cursor walk: rows with `pk_field > after` (all rows when
    /// `None`) that also match `filter` ("" = no filter), sorted by key, at most `limit`
    /// (clamped to 16384), as current as `fresh` asks. `iterator=True` makes Milvus Lite sort
    /// by key too, and `reduce_stop_for_best=False` keeps 2.3.5 from returning more than
    /// `limit`. The primary key is always among the returned columns.
    #[allow(clippy::too_many_arguments)]
    pub async fn query_page(
        &self,
        collection: &str,
        partitions: &[String],
        pk_field: &str,
        after: Option<&Pk>,
        filter: &str,
        limit: usize,
        output_fields: &[String],
        fresh: Fresh,
    ) -> Result<QueryPage, MilvusError> {
        let limit = limit.clamp(1, MAX_QUERY_LIMIT);
        let cursor = after.map(|pk| format!("{pk_field} > {}", pk.to_expr()));
        let filter = filter.trim();
        let expr = match (cursor, filter.is_empty()) {
            (Some(c), true) => c,
            (Some(c), false) => format!("{c} and ({filter})"),
            (None, _) => filter.to_string(),
        };
        let mut fields = output_fields.to_vec();
        if !fields.iter().any(|f| f == pk_field) {
            fields.push(pk_field.to_string());
        }
        let params = vec![
            ("limit".to_string(), limit.to_string()),
            ("iterator".to_string(), "True".to_string()),
            ("reduce_stop_for_best".to_string(), "False".to_string()),
        ];
        let r = self
            .query(collection, partitions, expr, fields, params, fresh)
            .await?;
        let pk_col = r.fields_data.iter().find(|f| f.field_name == pk_field);
        let num_rows = pk_col
            .map(data::column_len)
            .or_else(|| r.fields_data.first().map(data::column_len))
            .unwrap_or(0);
        if num_rows > 0 && pk_col.is_none() {
            return Err(self.unexpected(
                "Query",
                Some(collection),
                format!("the answer has no primary-key column `{pk_field}`"),
            ));
        }
        let last_pk = pk_col.and_then(data::last_pk);
        Ok(QueryPage {
            fields: r.fields_data,
            num_rows,
            last_pk,
        })
    }

    /// Inserts `num_rows` rows given as columns, into `partition` (None = `_default`).
    pub async fn insert(
        &self,
        collection: &str,
        partition: Option<&str>,
        fields: Vec<FieldData>,
        num_rows: u32,
    ) -> Result<InsertResult, MilvusError> {
        let req = m::InsertRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            fields_data: fields,
            hash_keys: Vec::new(),
            num_rows,
        };
        let r = self
            .call(
                "Insert",
                Some(collection),
                Repeat::IfNotApplied,
                req,
                |mut c, r| async move { c.insert(r).await },
            )
            .await?;
        Ok(InsertResult {
            insert_count: r.insert_cnt,
            timestamp: r.timestamp,
        })
    }

    /// Deletes the rows matching `expr` (2.3.5 accepts only primary-key expressions such as
    /// `id in [1, 2]`). Returns the delete count the server reports.
    pub async fn delete(
        &self,
        collection: &str,
        partition: Option<&str>,
        expr: &str,
    ) -> Result<i64, MilvusError> {
        let req = m::DeleteRequest {
            base: None,
            db_name: self.db.clone(),
            collection_name: collection.to_string(),
            partition_name: partition.unwrap_or_default().to_string(),
            expr: expr.to_string(),
            hash_keys: Vec::new(),
        };
        let r = self
            .call(
                "Delete",
                Some(collection),
                Repeat::Always,
                req,
                |mut c, r| async move { c.delete(r).await },
            )
            .await?;
        Ok(r.delete_cnt)
    }
}
