//! Arrow → field data: a batch read back from Parquet as the columns of an insert, in either
//! layout a backup may have (`format::rows::Layout`): each column is read by its Arrow type.

use arrow_array::types::{Float32Type, Int8Type, UInt8Type};
use arrow_array::{
    Array, ArrowPrimitiveType, BinaryArray, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, ListArray,
    PrimitiveArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::DataType as Arrow;
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
            DataType::Timestamptz if a.data_type() == &Arrow::Utf8 => {
                scalars!(StringArray, StringData, PbStrings, |v| v
                    .unwrap_or_default()
                    .to_string())
            }
            // The first layout: the instant in microseconds.
            DataType::Timestamptz => {
                scalars!(TimestampMicrosecondArray, StringData, PbStrings, |v| {
                    crate::codec::timestamptz::format(v.unwrap_or_default())
                })
            }
            DataType::Json if a.data_type() == &Arrow::Utf8 => {
                scalars!(StringArray, JsonData, JsonArray, |v| v
                    .unwrap_or("{}")
                    .as_bytes()
                    .to_vec())
            }
            // The first layout: the JSON's bytes.
            DataType::Json => scalars!(BinaryArray, JsonData, JsonArray, |v| v
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| b"{}".to_vec())),
            DataType::Array if matches!(a.data_type(), Arrow::List(_)) => {
                scalar(scalar_field::Data::ArrayData(ArrayArray {
                    data: list_elements(c, get!(ListArray), &rows)?,
                    element_type: c.element as i32,
                }))
            }
            // The first layout: each array protobuf-encoded.
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
                let data = if matches!(a.data_type(), Arrow::List(_)) {
                    flat_values::<Float32Type>(c, get!(ListArray), c.dim, &rows)?
                } else {
                    // The first layout: a fixed-size list.
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
                    data
                };
                Some(field_data::Field::Vectors(VectorField {
                    dim: c.dim as i64,
                    data: Some(vector_field::Data::FloatVector(FloatArray { data })),
                }))
            }
            DataType::SparseFloatVector => {
                let contents: Vec<Vec<u8>> = if a.data_type() == &Arrow::Utf8 {
                    let arr = get!(StringArray);
                    rows.iter()
                        .map(|&i| match arr.is_valid(i) {
                            true => super::sparse::from_json(arr.value(i)).map_err(|e| {
                                format!("column `{}` holds a bad sparse vector: {e}", c.name)
                            }),
                            false => Ok(Vec::new()),
                        })
                        .collect::<Result<_, _>>()?
                } else {
                    // The first layout: the wire encoding's bytes.
                    let arr = get!(BinaryArray);
                    rows.iter()
                        .map(|&i| match arr.is_valid(i) {
                            true => arr.value(i).to_vec(),
                            false => Vec::new(),
                        })
                        .collect()
                };
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
                let width = super::schema::vector_width(c);
                let raw = match a.data_type() {
                    Arrow::List(item) if item.data_type() == &Arrow::Int8 => {
                        let v = flat_values::<Int8Type>(c, get!(ListArray), width, &rows)?;
                        v.into_iter().map(|x| x as u8).collect()
                    }
                    Arrow::List(_) => flat_values::<UInt8Type>(c, get!(ListArray), width, &rows)?,
                    // The first layout: fixed-size binary.
                    _ => {
                        let b = get!(FixedSizeBinaryArray);
                        let mut raw = Vec::with_capacity(rows.len() * width);
                        for &i in &rows {
                            if b.is_valid(i) {
                                raw.extend_from_slice(b.value(i));
                            } else {
                                raw.extend(std::iter::repeat_n(0u8, width));
                            }
                        }
                        raw
                    }
                };
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

/// The values of `rows` of a list column of `width` values per row, as one flat vector: copied
/// in one piece when the rows are the whole column, row by row otherwise; a null row (never
/// written so in a column that is not nullable) becomes zeros.
fn flat_values<T: ArrowPrimitiveType>(
    c: &Col,
    l: &ListArray,
    width: usize,
    rows: &[usize],
) -> Result<Vec<T::Native>, String> {
    let values: &[T::Native] = l
        .values()
        .as_any()
        .downcast_ref::<PrimitiveArray<T>>()
        .ok_or_else(|| format!("column `{}` has an unexpected Arrow type", c.name))?
        .values();
    let off = l.value_offsets();
    let bad = |i: usize| {
        format!(
            "column `{}`: row {i} holds {} values, not {width}",
            c.name,
            off[i + 1] - off[i]
        )
    };
    if let Some(i) =
        (0..l.len()).find(|&i| l.is_valid(i) && (off[i + 1] - off[i]) as usize != width)
    {
        return Err(bad(i));
    }
    let whole = l.null_count() == 0 && rows.len() == l.len();
    if whole {
        return Ok(values[off[0] as usize..off[l.len()] as usize].to_vec());
    }
    let mut out = Vec::with_capacity(rows.len() * width);
    for &i in rows {
        if l.is_valid(i) {
            out.extend_from_slice(&values[off[i] as usize..off[i + 1] as usize]);
        } else {
            out.resize(out.len() + width, T::Native::default());
        }
    }
    Ok(out)
}

/// The values of `rows` of an ARRAY column read as lists, one typed element list per row.
fn list_elements(c: &Col, l: &ListArray, rows: &[usize]) -> Result<Vec<ScalarField>, String> {
    let off = l.value_offsets();
    let wrong = || format!("column `{}` holds lists of another element type", c.name);
    // One element type: its Arrow array, the oneof variant and message it becomes, a value.
    macro_rules! elements {
        ($arrow:ty, $variant:ident, $message:ident, |$v:ident| $value:expr) => {{
            let arr = l
                .values()
                .as_any()
                .downcast_ref::<$arrow>()
                .ok_or_else(wrong)?;
            rows.iter()
                .map(|&i| ScalarField {
                    data: Some(scalar_field::Data::$variant($message {
                        data: (off[i] as usize..off[i + 1] as usize)
                            .map(|k| {
                                let $v = arr.value(k);
                                $value
                            })
                            .collect(),
                    })),
                })
                .collect()
        }};
    }
    Ok(match c.element {
        DataType::Bool => elements!(BooleanArray, BoolData, BoolArray, |v| v),
        DataType::Int8 => elements!(Int8Array, IntData, IntArray, |v| v as i32),
        DataType::Int16 => elements!(Int16Array, IntData, IntArray, |v| v as i32),
        DataType::Int32 => elements!(Int32Array, IntData, IntArray, |v| v),
        DataType::Int64 => elements!(Int64Array, LongData, LongArray, |v| v),
        DataType::Float => elements!(Float32Array, FloatData, FloatArray, |v| v),
        DataType::Double => elements!(Float64Array, DoubleData, DoubleArray, |v| v),
        _ => elements!(StringArray, StringData, PbStrings, |v| v.to_string()),
    })
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, FixedSizeBinaryArray, RecordBatch};
    use arrow_schema::{Field, Schema, TimeUnit};

    use super::*;
    use crate::codec::arrow::columns;
    use crate::codec::arrow::tests::{
        array_column, bytes_vector, field, same_rows, schema, through_parquet,
    };
    use crate::milvus::data::{
        dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
    };

    /// A backup written before the import layout (`Layout::First`): float vectors as
    /// fixed-size lists, JSON, `$meta` and sparse rows as bytes, arrays protobuf-encoded, other
    /// vectors as fixed-size binary, TIMESTAMPTZ as microseconds. Its files still insert.
    #[test]
    fn first_layout_files_still_insert() {
        use crate::milvus::data::{sparse_column, sparse_row, timestamptz_column};
        let mut s = schema();
        s.fields
            .push(field("a", DataType::Array, 0, DataType::Int64));
        s.fields
            .push(field("f16", DataType::Float16Vector, 2, DataType::None));
        s.fields
            .push(field("i8v", DataType::Int8Vector, 3, DataType::None));
        s.fields
            .push(field("sp", DataType::SparseFloatVector, 0, DataType::None));
        s.fields
            .push(field("t", DataType::Timestamptz, 0, DataType::None));
        let cols = columns(&s).unwrap();
        let longs = |v: Vec<i64>| ScalarField {
            data: Some(scalar_field::Data::LongData(LongArray { data: v })),
        };
        let sparse = vec![
            sparse_row(&[(3, 0.5), (1, 2.0)]),
            sparse_row(&[(70000, 1.0)]),
        ];
        let f16 = vec![1u8, 2, 3, 4, 5, 6, 7, 8];
        let i8v = vec![1u8, 255, 3, 4, 5, 128];
        let page = vec![
            int64_column("pk", vec![1, 2]),
            float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25]),
            varchar_column("title", vec!["a".into(), "b".into()]),
            json_column("meta", vec![br#"{"x":1}"#.to_vec(), b"[1,2]".to_vec()]),
            dynamic_column(vec![b"{}".to_vec(), br#"{"extra":"y"}"#.to_vec()]),
            array_column(
                "a",
                DataType::Int64,
                vec![
                    scalar_field::Data::LongData(LongArray { data: vec![4, 5] }),
                    scalar_field::Data::LongData(LongArray::default()),
                ],
            ),
            bytes_vector(
                "f16",
                DataType::Float16Vector,
                2,
                vector_field::Data::Float16Vector(f16.clone()),
            ),
            bytes_vector(
                "i8v",
                DataType::Int8Vector,
                3,
                vector_field::Data::Int8Vector(i8v.clone()),
            ),
            sparse_column("sp", sparse.clone()),
            timestamptz_column(
                "t",
                vec![
                    "2024-01-02T03:04:05.123456Z".into(),
                    "1970-01-01T00:00:00Z".into(),
                ],
            ),
        ];
        let fixed = |b: &[u8], w: usize| {
            Arc::new(FixedSizeBinaryArray::try_from_iter(b.chunks(w)).unwrap()) as ArrayRef
        };
        let columns: Vec<(&str, ArrayRef)> = vec![
            ("pk", Arc::new(arrow_array::Int64Array::from(vec![1, 2]))),
            (
                "vec",
                Arc::new(FixedSizeListArray::from_iter_primitive::<
                    arrow_array::types::Float32Type,
                    _,
                    _,
                >(
                    vec![
                        Some(vec![Some(0.5), Some(1.5)]),
                        Some(vec![Some(-2.0), Some(3.25)]),
                    ],
                    2,
                )),
            ),
            (
                "title",
                Arc::new(arrow_array::StringArray::from(vec!["a", "b"])),
            ),
            (
                "meta",
                Arc::new(BinaryArray::from(vec![br#"{"x":1}"#.as_ref(), b"[1,2]"])),
            ),
            (
                "$meta",
                Arc::new(BinaryArray::from(vec![b"{}".as_ref(), br#"{"extra":"y"}"#])),
            ),
            (
                "a",
                Arc::new(BinaryArray::from(vec![
                    longs(vec![4, 5]).encode_to_vec().as_slice(),
                    // An empty array as older servers answer it: without its typed list.
                    ScalarField::default().encode_to_vec().as_slice(),
                ])),
            ),
            ("f16", fixed(&f16, 4)),
            ("i8v", fixed(&i8v, 3)),
            (
                "sp",
                Arc::new(BinaryArray::from(vec![sparse[0].as_slice(), &sparse[1]])),
            ),
            (
                "t",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_704_164_645_123_456, 0])
                        .with_timezone("UTC"),
                ),
            ),
        ];
        let schema = Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        );
        let batch = RecordBatch::try_new(
            Arc::new(schema),
            columns.into_iter().map(|(_, a)| a).collect(),
        )
        .unwrap();
        let (back, out) = through_parquet(&cols, &batch);
        assert_eq!(
            back.schema().field_with_name("t").unwrap().data_type(),
            &Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        same_rows(&page, &out, 2);
        // The empty array goes in with its typed list: Milvus 2.3.5 crashes on one without.
        let a = out.iter().find(|f| f.field_name == "a").unwrap();
        let Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::ArrayData(arr)),
        })) = &a.field
        else {
            unreachable!()
        };
        assert_eq!(arr.data[1], longs(vec![]));
    }
}
