//! Arrow → field data: a batch read back from Parquet as the columns of an insert.

use arrow_array::{
    Array, BinaryArray, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray, Float32Array,
    Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use prost::Message;

use super::schema::Col;
use crate::milvus::pb::schema::{
    ArrayArray, BoolArray, DataType, DoubleArray, FieldData, FloatArray, GeometryWktArray,
    IntArray, JsonArray, LongArray, ScalarField, SparseFloatArray, StringArray as PbStrings,
    VectorField, field_data, scalar_field, vector_field,
};

/// A batch read back from Parquet as insert columns. A nullable column carries only its
/// non-null values, with `valid_data` marking every row: the layout clients send and Milvus
/// 2.5 requires of an insert.
pub fn batch_to_fields(
    cols: &[Col],
    batch: &RecordBatch,
) -> std::result::Result<Vec<FieldData>, String> {
    let mut out = Vec::with_capacity(cols.len());
    for c in cols {
        let a = batch
            .column_by_name(&c.name)
            .ok_or_else(|| format!("the file has no column `{}`", c.name))?;
        let n = a.len();
        let valid: Vec<bool> = (0..n).map(|i| a.is_valid(i)).collect();
        // The rows whose values are sent; a null in a column that is not nullable (never
        // written so by a backup) is sent as the type's default value.
        let rows: Vec<usize> = (0..n).filter(|&i| !c.nullable || valid[i]).collect();
        let wrong = || format!("column `{}` has an unexpected Arrow type", c.name);
        macro_rules! get {
            ($t:ty) => {
                a.as_any().downcast_ref::<$t>().ok_or_else(wrong)?
            };
        }
        let scalar =
            |d: scalar_field::Data| Some(field_data::Field::Scalars(ScalarField { data: Some(d) }));
        // One scalar column: its Arrow array type, the oneof variant and message it becomes, and
        // the value of a row.
        macro_rules! scalars {
            ($arrow:ty, $variant:ident, $message:ident, |$v:ident| $value:expr) => {{
                let arr = get!($arrow);
                scalar(scalar_field::Data::$variant($message {
                    data: rows
                        .iter()
                        .map(|&i| {
                            let $v = arr.is_valid(i).then(|| arr.value(i));
                            $value
                        })
                        .collect(),
                }))
            }};
        }
        let field = match c.ty {
            DataType::Bool => {
                scalars!(BooleanArray, BoolData, BoolArray, |v| v.unwrap_or_default())
            }
            DataType::Int8 => {
                scalars!(Int8Array, IntData, IntArray, |v| v.unwrap_or_default()
                    as i32)
            }
            DataType::Int16 => {
                scalars!(Int16Array, IntData, IntArray, |v| v.unwrap_or_default()
                    as i32)
            }
            DataType::Int32 => scalars!(Int32Array, IntData, IntArray, |v| v.unwrap_or_default()),
            DataType::Int64 => scalars!(Int64Array, LongData, LongArray, |v| v.unwrap_or_default()),
            DataType::Float => {
                scalars!(Float32Array, FloatData, FloatArray, |v| v
                    .unwrap_or_default())
            }
            DataType::Double => {
                scalars!(Float64Array, DoubleData, DoubleArray, |v| v
                    .unwrap_or_default())
            }
            DataType::VarChar | DataType::String => {
                scalars!(StringArray, StringData, PbStrings, |v| v
                    .unwrap_or_default()
                    .to_string())
            }
            DataType::Geometry => {
                scalars!(StringArray, GeometryWktData, GeometryWktArray, |v| v
                    .unwrap_or_default()
                    .to_string())
            }
            DataType::Timestamptz => {
                scalars!(TimestampMicrosecondArray, StringData, PbStrings, |v| {
                    crate::codec::timestamptz::format(v.unwrap_or_default())
                })
            }
            DataType::Json => scalars!(BinaryArray, JsonData, JsonArray, |v| v
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| b"{}".to_vec())),
            DataType::Array => {
                let arr = get!(BinaryArray);
                let mut data = Vec::with_capacity(rows.len());
                for &i in &rows {
                    let mut elem = if arr.is_valid(i) {
                        ScalarField::decode(arr.value(i)).map_err(|e| {
                            format!("column `{}` holds a bad array value: {e}", c.name)
                        })?
                    } else {
                        ScalarField::default()
                    };
                    // An empty array may come back without its typed list; Milvus 2.3.5 crashes
                    // on an insert whose array element has none.
                    if elem.data.is_none() {
                        elem.data = Some(empty_elements(c.element));
                    }
                    data.push(elem);
                }
                scalar(scalar_field::Data::ArrayData(ArrayArray {
                    data,
                    element_type: c.element as i32,
                }))
            }
            DataType::FloatVector => {
                let l = get!(FixedSizeListArray);
                let values = l
                    .values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(wrong)?;
                let mut data = Vec::with_capacity(rows.len() * c.dim);
                for &i in &rows {
                    let start = l.value_offset_at(i);
                    data.extend((start..start + c.dim).map(|k| {
                        if values.is_valid(k) {
                            values.value(k)
                        } else {
                            0.0
                        }
                    }));
                }
                Some(field_data::Field::Vectors(VectorField {
                    dim: c.dim as i64,
                    data: Some(vector_field::Data::FloatVector(FloatArray { data })),
                }))
            }
            DataType::SparseFloatVector => {
                let arr = get!(BinaryArray);
                let contents: Vec<Vec<u8>> = rows
                    .iter()
                    .map(|&i| {
                        if arr.is_valid(i) {
                            arr.value(i).to_vec()
                        } else {
                            Vec::new()
                        }
                    })
                    .collect();
                let dim = crate::milvus::data::sparse_dim(&contents);
                Some(field_data::Field::Vectors(VectorField {
                    dim,
                    data: Some(vector_field::Data::SparseFloatVector(SparseFloatArray {
                        contents,
                        dim,
                    })),
                }))
            }
            DataType::BinaryVector
            | DataType::Float16Vector
            | DataType::BFloat16Vector
            | DataType::Int8Vector => {
                let b = get!(FixedSizeBinaryArray);
                let width = b.value_length() as usize;
                let mut raw = Vec::with_capacity(rows.len() * width);
                for &i in &rows {
                    if b.is_valid(i) {
                        raw.extend_from_slice(b.value(i));
                    } else {
                        raw.extend(std::iter::repeat_n(0u8, width));
                    }
                }
                let data = match c.ty {
                    DataType::BinaryVector => vector_field::Data::BinaryVector(raw),
                    DataType::Float16Vector => vector_field::Data::Float16Vector(raw),
                    DataType::BFloat16Vector => vector_field::Data::Bfloat16Vector(raw),
                    _ => vector_field::Data::Int8Vector(raw),
                };
                Some(field_data::Field::Vectors(VectorField {
                    dim: c.dim as i64,
                    data: Some(data),
                }))
            }
            other => {
                return Err(format!(
                    "column `{}`: type {other:?} is not handled",
                    c.name
                ));
            }
        };
        out.push(FieldData {
            r#type: c.ty as i32,
            field_name: c.name.clone(),
            field,
            field_id: 0,
            is_dynamic: c.dynamic,
            valid_data: if c.nullable { valid } else { Vec::new() },
        });
    }
    Ok(out)
}

/// An empty list of array elements of this type.
fn empty_elements(t: DataType) -> scalar_field::Data {
    match t {
        DataType::Bool => scalar_field::Data::BoolData(BoolArray::default()),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => {
            scalar_field::Data::IntData(IntArray::default())
        }
        DataType::Int64 => scalar_field::Data::LongData(LongArray::default()),
        DataType::Float => scalar_field::Data::FloatData(FloatArray::default()),
        DataType::Double => scalar_field::Data::DoubleData(DoubleArray::default()),
        _ => scalar_field::Data::StringData(PbStrings::default()),
    }
}
