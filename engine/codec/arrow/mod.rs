//! Field data ⇄ Arrow record batches ⇄ Parquet: how rows mode stores Milvus values in files.

mod insert;
mod page;
mod parquet;
mod schema;
mod sparse;

pub use self::parquet::{PageFile, from_parquet, row_group, row_groups, to_parquet};
pub use insert::batch_to_fields;
pub use page::page_to_batch;
pub use schema::{Col, arrow_schema, columns, output_fields};

#[cfg(test)]
mod tests;
