//! The Arrow schema of a collection's files: which fields are columns (`Col`), in which types.

use std::sync::Arc;

use arrow_schema::{DataType as Arrow, Field, Schema, TimeUnit};

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

/// The zone of TIMESTAMPTZ columns: they hold instants, whatever zone the server wrote them in.
pub(super) const UTC: &str = "UTC";

fn arrow_type(c: &Col) -> Arrow {
    match c.ty {
        DataType::Bool => Arrow::Boolean,
        DataType::Int8 => Arrow::Int8,
        DataType::Int16 => Arrow::Int16,
        DataType::Int32 => Arrow::Int32,
        DataType::Int64 => Arrow::Int64,
        DataType::Float => Arrow::Float32,
        DataType::Double => Arrow::Float64,
        // A geometry keeps the WKT text the server answered with.
        DataType::VarChar | DataType::String | DataType::Geometry => Arrow::Utf8,
        DataType::Timestamptz => Arrow::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        DataType::FloatVector => Arrow::FixedSizeList(
            Arc::new(Field::new("item", Arrow::Float32, true)),
            c.dim as i32,
        ),
        DataType::BinaryVector
        | DataType::Float16Vector
        | DataType::BFloat16Vector
        | DataType::Int8Vector => Arrow::FixedSizeBinary(vector_width(c) as i32),
        // JSON keeps its exact bytes; an array keeps its protobuf encoding (element type and
        // all); a sparse vector its wire encoding, (u32 index, f32 value) pairs little-endian.
        _ => Arrow::Binary,
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
