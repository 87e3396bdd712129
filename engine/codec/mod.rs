//! Milvus values as planrun reads and writes them: Arrow/Parquet for rows mode, the row digest for
//! verify, and the page size both use to keep memory bounded.

pub mod arrow;
pub mod digest;
pub mod limits;
pub mod timestamptz;

use crate::milvus::pb::schema::{DataType, FieldData};
use crate::schema::{self, CollectionSchema};

/// Rows per page so that one page stays near `PAGE_BYTES`, from the schema's declared sizes.
pub fn page_limit(schema: &CollectionSchema, budget: usize) -> usize {
    let param = |f: &schema::FieldSchema, k: &str| -> Option<usize> {
        f.type_params
            .iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.parse().ok())
    };
    let mut row = 64usize;
    for f in &schema.fields {
        let dim = param(f, "dim").unwrap_or(0);
        row += match DataType::try_from(f.data_type).unwrap_or(DataType::None) {
            DataType::FloatVector => dim * 4,
            DataType::Float16Vector | DataType::BFloat16Vector => dim * 2,
            DataType::BinaryVector => dim.div_ceil(8),
            DataType::SparseFloatVector => 4096,
            DataType::VarChar | DataType::String => param(f, "max_length").unwrap_or(256),
            // JSON and WKT geometries are as long as their values; a timestamptz travels as text.
            DataType::Json | DataType::Geometry => 2048,
            DataType::Timestamptz => 32,
            DataType::Array => param(f, "max_capacity").unwrap_or(64) * 64,
            _ => 8,
        };
    }
    if schema.enable_dynamic_field {
        row += 2048;
    }
    (budget / row).clamp(1, crate::milvus::MAX_QUERY_LIMIT)
}

/// Where row `i`'s value sits in the column, `None` for a null. Nullable columns come either
/// full length (a placeholder under each null) or compacted to the valid values.
pub fn value_index(f: &FieldData, n: usize) -> Vec<Option<usize>> {
    if f.valid_data.is_empty() {
        return (0..n).map(Some).collect();
    }
    let compact = crate::milvus::data::column_len(f) < n;
    let mut next = 0;
    f.valid_data
        .iter()
        .enumerate()
        .map(|(i, &valid)| {
            if !valid {
                None
            } else if compact {
                next += 1;
                Some(next - 1)
            } else {
                Some(i)
            }
        })
        .chain(std::iter::repeat(None))
        .take(n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_limit_follows_row_size() {
        let schema = |dim: &str| CollectionSchema {
            fields: vec![schema::FieldSchema {
                name: "v".into(),
                data_type: DataType::FloatVector as i32,
                type_params: vec![schema::KeyValue {
                    key: "dim".into(),
                    value: dim.into(),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(
            page_limit(&schema("8"), 8 << 20),
            crate::milvus::MAX_QUERY_LIMIT
        );
        let big = page_limit(&schema("4096"), 8 << 20);
        assert!(big < 1000 && big > 100, "{big}");
    }
}
