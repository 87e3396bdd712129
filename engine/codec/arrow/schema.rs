//! The Arrow schema of a collection's files: which fields are columns (`Col`), in which types.

use std::sync::Arc;

use arrow_schema::{DataType as Arrow, Field, Schema};

use crate::milvus::pb::schema::DataType;
use crate::schema::CollectionSchema;

/// One column of the Parquet files: a user field, or `$meta` for the dynamic field.
#[derive(Clone, Debug)]
pub struct Col {
    pub name: String,
    pub ty: DataType,
    pub element: DataType,
    pub dim: usize,
    pub nullable: bool,
    pub dynamic: bool,
}

/// The columns of a schema's files. A function's output field (BM25) is none of them: the
/// target computes it from the input again, so it is neither read nor inserted.
pub fn columns(schema: &CollectionSchema) -> std::result::Result<Vec<Col>, String> {
    let mut out = Vec::new();
    for f in schema.fields.iter().filter(|f| {
        !f.is_dynamic && !f.is_function_output && (f.field_id >= 100 || f.field_id == 0)
    }) {
        let ty = match DataType::try_from(f.data_type) {
            Ok(DataType::None) | Err(_) => {
                return Err(format!(
                    "field `{}` has data type {}, which rows mode does not handle",
                    f.name, f.data_type
                ));
            }
            Ok(ty) => ty,
        };
        let dim = f
            .type_params
            .iter()
            .find(|kv| kv.key == "dim")
            .and_then(|kv| kv.value.parse().ok())
            .unwrap_or(0);
        out.push(Col {
            name: f.name.clone(),
            ty,
            element: DataType::try_from(f.element_type).unwrap_or(DataType::None),
            dim,
            nullable: f.nullable,
            dynamic: false,
        });
    }
    if schema.enable_dynamic_field {
        out.push(Col {
            name: "$meta".into(),
            ty: DataType::Json,
            element: DataType::None,
            dim: 0,
            nullable: false,
            dynamic: true,
        });
    }
    Ok(out)
}

/// The output fields a query names to read these columns (`$meta` reads the dynamic field).
/// Named rather than `*`, which would also ask for function outputs that newer servers refuse
/// to return.
pub fn output_fields(cols: &[Col]) -> Vec<String> {
    cols.iter().map(|c| c.name.clone()).collect()
}

/// Bytes per row of a fixed-width vector type.
pub(super) fn vector_width(c: &Col) -> usize {
    match c.ty {
        DataType::BinaryVector => c.dim.div_ceil(8),
        DataType::Float16Vector | DataType::BFloat16Vector => c.dim * 2,
        _ => c.dim,
    }
}

/// A list column's type, its items named and nullable as Milvus's own import schema has them.
pub(super) fn list_of(item: Arrow) -> Arrow {
    Arrow::List(Arc::new(Field::new("item", item, true)))
}

/// The Arrow type of one value of a scalar type (a column's, or an array's element).
fn scalar_type(ty: DataType) -> Arrow {
    match ty {
        DataType::Bool => Arrow::Boolean,
        DataType::Int8 => Arrow::Int8,
        DataType::Int16 => Arrow::Int16,
        DataType::Int32 => Arrow::Int32,
        DataType::Int64 => Arrow::Int64,
        DataType::Float => Arrow::Float32,
        DataType::Double => Arrow::Float64,
        _ => Arrow::Utf8,
    }
}

/// The column types of Milvus's own Parquet import (`Layout::Import`), so a file is imported
/// as it is. Source: Milvus's `internal/util/importutilv2/parquet/util.go`,
/// `convertToArrowDataType` (2.4 to 2.6), and for 2.3.5 the types verified by importing
/// (`shared/reference/milvus-parquet-import.md`). JSON, `$meta`, TIMESTAMPTZ (RFC 3339) and
/// GEOMETRY (WKT) are their text; a sparse vector is the JSON text
/// `{"indices":[..],"values":[..]}`, the one form every import since 2.4 reads (2.6 also
/// takes a struct). Nulls are Arrow nulls.
fn arrow_type(c: &Col) -> Arrow {
    match c.ty {
        DataType::Array => list_of(scalar_type(c.element)),
        DataType::FloatVector => list_of(Arrow::Float32),
        DataType::BinaryVector | DataType::Float16Vector | DataType::BFloat16Vector => {
            list_of(Arrow::UInt8)
        }
        DataType::Int8Vector => list_of(Arrow::Int8),
        other => scalar_type(other),
    }
}

pub fn arrow_schema(cols: &[Col]) -> Arc<Schema> {
    Arc::new(Schema::new(
        cols.iter()
            .map(|c| Field::new(&c.name, arrow_type(c), true))
            .collect::<Vec<_>>(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::arrow::tests::schema;

    #[test]
    fn a_type_rows_mode_does_not_know_is_named() {
        let mut s = schema();
        s.fields.push(crate::schema::FieldSchema {
            name: "day".into(),
            data_type: 28, // DATE, newer than this build
            ..Default::default()
        });
        let err = columns(&s).unwrap_err();
        assert!(err.contains("`day`") && err.contains("28"), "{err}");
    }
}
