//! Field data → Arrow: a query page as a record batch, one column per `Col`.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType as Arrow, Field};
use prost::Message;

use super::schema::{Col, UTC, arrow_schema, vector_width};
use crate::milvus::pb::schema::{
    DataType, FieldData, ScalarField, VectorField, field_data, scalar_field, vector_field,
};

/// A query page as an Arrow batch with one column per `cols`, nulls where `valid_data` says so.
pub fn page_to_batch(
    cols: &[Col],
    fields: &[FieldData],
    n: usize,
) -> std::result::Result<RecordBatch, String> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(cols.len());
    for c in cols {
        let f = fields
            .iter()
            .find(|f| {
                if c.dynamic {
                    f.is_dynamic || f.field_name == "$meta"
                } else {
                    f.field_name == c.name
                }
            })
            .ok_or_else(|| format!("the query answer has no column `{}`", c.name))?;
        let idx = crate::codec::value_index(f, n);
        let short = || format!("column `{}` is shorter than the page", c.name);
        // One scalar column: the oneof variant it must hold, and how a value is appended.
        macro_rules! column {
            ($builder:expr, $variant:ident, |$v:ident| $value:expr) => {{
                let Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::$variant(a)),
                })) = &f.field
                else {
                    return Err(format!("column `{}` has an unexpected type", c.name));
                };
                let mut b = $builder;
                for j in &idx {
                    match j {
                        Some(j) => {
                            let $v = a.data.get(*j).ok_or_else(short)?;
                            b.append_value($value)
                        }
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }};
        }
        let arr: ArrayRef = match c.ty {
            DataType::Bool => column!(BooleanBuilder::with_capacity(n), BoolData, |v| *v),
            DataType::Int8 => column!(Int8Builder::with_capacity(n), IntData, |v| *v as i8),
            DataType::Int16 => column!(Int16Builder::with_capacity(n), IntData, |v| *v as i16),
            DataType::Int32 => column!(Int32Builder::with_capacity(n), IntData, |v| *v),
            DataType::Int64 => column!(Int64Builder::with_capacity(n), LongData, |v| *v),
            DataType::Float => column!(Float32Builder::with_capacity(n), FloatData, |v| *v),
            DataType::Double => column!(Float64Builder::with_capacity(n), DoubleData, |v| *v),
            DataType::VarChar | DataType::String => {
                column!(StringBuilder::new(), StringData, |v| v)
            }
            DataType::Geometry => column!(StringBuilder::new(), GeometryWktData, |v| v),
            DataType::Timestamptz => column!(
                TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC),
                StringData,
                |v| crate::codec::timestamptz::parse(v).ok_or_else(|| format!(
                    "column `{}` holds `{v}`, which is not an RFC 3339 time with an offset",
                    c.name
                ))?
            ),
            DataType::Json => column!(BinaryBuilder::new(), JsonData, |v| v),
            // Arrays keep Milvus's own encoding of the element list: any element type, one column.
            DataType::Array => column!(BinaryBuilder::new(), ArrayData, |v| v.encode_to_vec()),
            DataType::FloatVector => {
                let Some(field_data::Field::Vectors(VectorField {
                    data: Some(vector_field::Data::FloatVector(a)),
                    ..
                })) = &f.field
                else {
                    return Err(format!("column `{}` has an unexpected type", c.name));
                };
                let mut b = FixedSizeListBuilder::new(Float32Builder::new(), c.dim as i32)
                    .with_field(Arc::new(Field::new("item", Arrow::Float32, true)));
                for j in &idx {
                    match j {
                        Some(j) => {
                            let v = a.data.get(j * c.dim..(j + 1) * c.dim).ok_or_else(short)?;
                            b.values().append_slice(v);
                            b.append(true);
                        }
                        None => {
                            b.values().append_nulls(c.dim);
                            b.append(false);
                        }
                    }
                }
                Arc::new(b.finish())
            }
            DataType::SparseFloatVector => {
                let Some(field_data::Field::Vectors(VectorField {
                    data: Some(vector_field::Data::SparseFloatVector(a)),
                    ..
                })) = &f.field
                else {
                    return Err(format!("column `{}` has an unexpected type", c.name));
                };
                let mut b = BinaryBuilder::new();
                for j in &idx {
                    match j {
                        Some(j) => b.append_value(a.contents.get(*j).ok_or_else(short)?),
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::BinaryVector
            | DataType::Float16Vector
            | DataType::BFloat16Vector
            | DataType::Int8Vector => {
                let raw = match &f.field {
                    Some(field_data::Field::Vectors(VectorField {
                        data:
                            Some(
                                vector_field::Data::BinaryVector(b)
                                | vector_field::Data::Float16Vector(b)
                                | vector_field::Data::Bfloat16Vector(b)
                                | vector_field::Data::Int8Vector(b),
                            ),
                        ..
                    })) => b,
                    _ => return Err(format!("column `{}` has an unexpected type", c.name)),
                };
                let width = vector_width(c);
                let mut b = FixedSizeBinaryBuilder::new(width as i32);
                for j in &idx {
                    match j {
                        Some(j) => b
                            .append_value(raw.get(j * width..(j + 1) * width).ok_or_else(short)?)
                            .map_err(|e| e.to_string())?,
                        None => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                return Err(format!(
                    "column `{}`: type {other:?} is not handled",
                    c.name
                ));
            }
        };
        arrays.push(arr);
    }
    RecordBatch::try_new(arrow_schema(cols), arrays).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::arrow::columns;
    use crate::codec::arrow::tests::schema;
    use crate::milvus::data::{
        dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
    };

    #[test]
    fn a_timestamptz_without_an_offset_is_named() {
        let mut s = schema();
        s.fields.push(crate::schema::FieldSchema {
            name: "t".into(),
            data_type: DataType::Timestamptz as i32,
            ..Default::default()
        });
        let cols = columns(&s).unwrap();
        let page = vec![
            int64_column("pk", vec![1]),
            float_vector_column("vec", 2, vec![0.5, 1.5]),
            varchar_column("title", vec!["a".into()]),
            json_column("meta", vec![b"{}".to_vec()]),
            dynamic_column(vec![b"{}".to_vec()]),
            crate::milvus::data::timestamptz_column("t", vec!["2024-01-02 03:04:05".into()]),
        ];
        let err = page_to_batch(&cols, &page, 1).unwrap_err();
        assert!(
            err.contains("`t`") && err.contains("2024-01-02 03:04:05"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_column_is_named() {
        let cols = columns(&schema()).unwrap();
        let err = page_to_batch(&cols, &[int64_column("pk", vec![1])], 1).unwrap_err();
        assert!(err.contains("`vec`"), "{err}");
    }
}
