//! Field data → Arrow: a query page as a record batch, one column per `Col`, in Milvus's import
//! layout (`schema.rs` names the types).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float32Builder, Float64Builder, Int8Builder, Int16Builder, Int32Builder,
    Int64Builder, ListBuilder, StringBuilder,
};
use arrow_array::types::{Float32Type, Int8Type, UInt8Type};
use arrow_array::{ArrayRef, ArrowPrimitiveType, ListArray, PrimitiveArray, RecordBatch};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType as Arrow, Field};

use super::schema::{Col, arrow_schema, vector_width};
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
        let unexpected = || format!("column `{}` has an unexpected type", c.name);
        // One scalar column: the oneof variant it must hold, and how a value is appended.
        macro_rules! column {
            ($builder:expr, $variant:ident, |$v:ident| $value:expr) => {{
                let Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::$variant(a)),
                })) = &f.field
                else {
                    return Err(unexpected());
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
        let vectors = match &f.field {
            Some(field_data::Field::Vectors(VectorField { data: Some(d), .. })) => Some(d),
            _ => None,
        };
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
            // The instant as RFC 3339 text in UTC, checked here: a value without an offset
            // would mean another instant on another server.
            DataType::Timestamptz => column!(StringBuilder::new(), StringData, |v| {
                let t = crate::codec::timestamptz::parse(v).ok_or_else(|| {
                    format!(
                        "column `{}` holds `{v}`, which is not an RFC 3339 time with an offset",
                        c.name
                    )
                })?;
                crate::codec::timestamptz::format(t)
            }),
            DataType::Json => column!(StringBuilder::new(), JsonData, |v| json_text(c, v)?),
            DataType::Array => array_column(c, f, &idx).ok_or_else(unexpected)??,
            DataType::FloatVector => match vectors {
                Some(vector_field::Data::FloatVector(a)) => {
                    fixed_lists::<Float32Type>(&a.data, c.dim, &idx).ok_or_else(short)?
                }
                _ => return Err(unexpected()),
            },
            DataType::Int8Vector => match vectors {
                Some(vector_field::Data::Int8Vector(b)) => {
                    // The server's bytes are the values: reinterpreted, not converted.
                    let b: Vec<i8> = b.iter().map(|&x| x as i8).collect();
                    fixed_lists::<Int8Type>(&b, c.dim, &idx).ok_or_else(short)?
                }
                _ => return Err(unexpected()),
            },
            DataType::BinaryVector | DataType::Float16Vector | DataType::BFloat16Vector => {
                match vectors {
                    Some(
                        vector_field::Data::BinaryVector(b)
                        | vector_field::Data::Float16Vector(b)
                        | vector_field::Data::Bfloat16Vector(b),
                    ) => fixed_lists::<UInt8Type>(b, vector_width(c), &idx).ok_or_else(short)?,
                    _ => return Err(unexpected()),
                }
            }
            DataType::SparseFloatVector => {
                let Some(vector_field::Data::SparseFloatVector(a)) = vectors else {
                    return Err(unexpected());
                };
                let mut b = StringBuilder::new();
                for j in &idx {
                    match j {
                        Some(j) => {
                            let row = a.contents.get(*j).ok_or_else(short)?;
                            b.append_value(super::sparse::to_json(row).ok_or_else(|| {
                                format!("column `{}` holds a bad sparse vector", c.name)
                            })?)
                        }
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

/// A list column of `width` values per row over `flat`, the values of the non-null rows in
/// order (`idx`): the values are copied once, in bulk when the rows are contiguous, and the
/// offsets computed. `None` when `flat` is too short.
fn fixed_lists<T: ArrowPrimitiveType>(
    flat: &[T::Native],
    width: usize,
    idx: &[Option<usize>],
) -> Option<ArrayRef> {
    let present = idx.iter().flatten().count();
    let contiguous = idx.iter().flatten().enumerate().all(|(k, j)| k == *j);
    let values: Vec<T::Native> = if contiguous {
        flat.get(..present * width)?.to_vec()
    } else {
        let mut v = Vec::with_capacity(present * width);
        for j in idx.iter().flatten() {
            v.extend_from_slice(flat.get(j * width..(j + 1) * width)?);
        }
        v
    };
    let lengths = idx.iter().map(|j| if j.is_some() { width } else { 0 });
    Some(Arc::new(ListArray::new(
        Arc::new(Field::new("item", T::DATA_TYPE, true)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(PrimitiveArray::<T>::new(ScalarBuffer::from(values), None)),
        nulls(idx),
    )))
}

/// A JSON value's text: what the server sends is UTF-8, as JSON is.
fn json_text<'a>(c: &Col, v: &'a [u8]) -> std::result::Result<&'a str, String> {
    std::str::from_utf8(v).map_err(|_| format!("column `{}` holds JSON that is not UTF-8", c.name))
}

/// The validity of a column whose non-null rows are `idx`'s, `None` when every row has a value.
fn nulls(idx: &[Option<usize>]) -> Option<NullBuffer> {
    idx.iter()
        .any(Option::is_none)
        .then(|| NullBuffer::from_iter(idx.iter().map(Option::is_some)))
}

/// An ARRAY column as a list of its element type; `None` when it holds no array data.
fn array_column(
    c: &Col,
    f: &FieldData,
    idx: &[Option<usize>],
) -> Option<std::result::Result<ArrayRef, String>> {
    let Some(field_data::Field::Scalars(ScalarField {
        data: Some(scalar_field::Data::ArrayData(a)),
    })) = &f.field
    else {
        return None;
    };
    let short = || format!("column `{}` is shorter than the page", c.name);
    let wrong = || format!("column `{}` holds an array of another element type", c.name);
    let item = |t: Arrow| Arc::new(Field::new("item", t, true));
    // One element type: its builder, the oneof variant its values come in, how one is appended.
    macro_rules! lists {
        ($builder:expr, $arrow:expr, $variant:ident, |$b:ident, $v:ident| $append:expr) => {{
            let mut l = ListBuilder::new($builder).with_field(item($arrow));
            for j in idx {
                let Some(j) = j else {
                    l.append(false);
                    continue;
                };
                match &a.data.get(*j).ok_or_else(short)?.data {
                    Some(scalar_field::Data::$variant(v)) => {
                        let $b = l.values();
                        for $v in &v.data {
                            $append;
                        }
                    }
                    // An empty array may come back without its typed list.
                    None => {}
                    Some(_) => return Err(wrong()),
                }
                l.append(true);
            }
            Arc::new(l.finish()) as ArrayRef
        }};
    }
    Some((|| {
        Ok(match c.element {
            DataType::Bool => lists!(BooleanBuilder::new(), Arrow::Boolean, BoolData, |b, v| b
                .append_value(*v)),
            DataType::Int8 => lists!(Int8Builder::new(), Arrow::Int8, IntData, |b, v| b
                .append_value(*v as i8)),
            DataType::Int16 => lists!(Int16Builder::new(), Arrow::Int16, IntData, |b, v| b
                .append_value(*v as i16)),
            DataType::Int32 => lists!(Int32Builder::new(), Arrow::Int32, IntData, |b, v| b
                .append_value(*v)),
            DataType::Int64 => lists!(Int64Builder::new(), Arrow::Int64, LongData, |b, v| b
                .append_value(*v)),
            DataType::Float => lists!(Float32Builder::new(), Arrow::Float32, FloatData, |b, v| b
                .append_value(*v)),
            DataType::Double => {
                lists!(Float64Builder::new(), Arrow::Float64, DoubleData, |b, v| b
                    .append_value(*v))
            }
            _ => lists!(StringBuilder::new(), Arrow::Utf8, StringData, |b, v| b
                .append_value(v)),
        })
    })())
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
