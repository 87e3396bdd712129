//! Field data ⇄ Arrow record batches ⇄ Parquet: how rows mode stores Milvus values in files.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, FixedSizeBinaryBuilder, FixedSizeListBuilder, Float32Builder,
    Float64Builder, Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, FixedSizeBinaryArray, FixedSizeListArray,
    Float32Array, Float64Array, Int8Array, Int16Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType as Arrow, Field, Schema, TimeUnit};
use prost::Message;

use crate::milvus::pb::schema::{
    ArrayArray, BoolArray, DataType, DoubleArray, FieldData, FloatArray, GeometryWktArray,
    IntArray, JsonArray, LongArray, ScalarField, SparseFloatArray, StringArray as PbStrings,
    VectorField, field_data, scalar_field, vector_field,
};
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
fn vector_width(c: &Col) -> usize {
    match c.ty {
        DataType::BinaryVector => c.dim.div_ceil(8),
        DataType::Float16Vector | DataType::BFloat16Vector => c.dim * 2,
        _ => c.dim,
    }
}

/// The zone of TIMESTAMPTZ columns: they hold instants, whatever zone the server wrote them in.
const UTC: &str = "UTC";

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
        let idx = super::value_index(f, n);
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
                |v| super::timestamptz::parse(v).ok_or_else(|| format!(
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
                    super::timestamptz::format(v.unwrap_or_default())
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

pub fn to_parquet(batch: &RecordBatch) -> std::result::Result<Vec<u8>, String> {
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.close().map_err(|e| e.to_string())?;
    Ok(buf)
}

pub fn from_parquet(data: bytes::Bytes) -> std::result::Result<Vec<RecordBatch>, String> {
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(data)
        .map_err(|e| e.to_string())?
        .with_batch_size(1 << 20)
        .build()
        .map_err(|e| e.to_string())?;
    reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::data::{
        dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
    };

    fn schema() -> CollectionSchema {
        let f = |name: &str, ty: DataType, params: &[(&str, &str)], pk: bool| {
            crate::schema::FieldSchema {
                field_id: 100,
                name: name.into(),
                data_type: ty as i32,
                is_primary_key: pk,
                type_params: params
                    .iter()
                    .map(|(k, v)| crate::schema::KeyValue {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            }
        };
        CollectionSchema {
            fields: vec![
                f("pk", DataType::Int64, &[], true),
                f("vec", DataType::FloatVector, &[("dim", "2")], false),
                f("title", DataType::VarChar, &[("max_length", "10")], false),
                f("meta", DataType::Json, &[], false),
            ],
            enable_dynamic_field: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_page_round_trips_through_parquet() {
        let cols = columns(&schema()).unwrap();
        let page = vec![
            varchar_column("title", vec!["a".into(), "b".into()]),
            int64_column("pk", vec![1, 2]),
            float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25]),
            json_column("meta", vec![br#"{"x":1}"#.to_vec(), b"[1,2]".to_vec()]),
            dynamic_column(vec![b"{}".to_vec(), br#"{"extra":"y"}"#.to_vec()]),
        ];
        let batch = page_to_batch(&cols, &page, 2).unwrap();
        let back = from_parquet(to_parquet(&batch).unwrap().into()).unwrap();
        assert_eq!(back.len(), 1);
        let fields = batch_to_fields(&cols, &back[0]).unwrap();
        let a = crate::codec::digest::hash_rows(&page, "pk", 2, true).unwrap();
        let b = crate::codec::digest::hash_rows(&fields, "pk", 2, true).unwrap();
        assert_eq!(a, b, "every value survives the round trip");
        let dynamic = fields.iter().find(|f| f.is_dynamic).unwrap();
        assert_eq!(dynamic.field_name, "$meta");
    }

    /// A vector column of one of the byte-encoded types.
    fn bytes_vector(name: &str, ty: DataType, dim: i64, data: vector_field::Data) -> FieldData {
        FieldData {
            r#type: ty as i32,
            field_name: name.into(),
            field: Some(field_data::Field::Vectors(VectorField {
                dim,
                data: Some(data),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn newer_types_nulls_and_function_outputs_round_trip() {
        use crate::milvus::data::{sparse_column, sparse_row};
        let mut s = schema();
        let field = |name: &str, ty: DataType, dim: &str| crate::schema::FieldSchema {
            name: name.into(),
            data_type: ty as i32,
            type_params: vec![crate::schema::KeyValue {
                key: "dim".into(),
                value: dim.into(),
            }],
            ..Default::default()
        };
        s.fields.push(field("sp", DataType::SparseFloatVector, ""));
        s.fields.push(field("f16", DataType::Float16Vector, "2"));
        s.fields.push(field("bf16", DataType::BFloat16Vector, "2"));
        s.fields.push(field("i8v", DataType::Int8Vector, "3"));
        s.fields.push(crate::schema::FieldSchema {
            nullable: true,
            ..field("n", DataType::Int32, "")
        });
        s.fields.push(crate::schema::FieldSchema {
            is_function_output: true,
            ..field("bm", DataType::SparseFloatVector, "")
        });
        let cols = columns(&s).unwrap();
        assert!(cols.iter().all(|c| c.name != "bm"), "outputs are not read");
        let fields = output_fields(&cols);
        assert!(fields.contains(&"$meta".to_string()) && !fields.contains(&"bm".to_string()));
        // A nullable column as a server may send it: compacted to its one value.
        let mut n = crate::milvus::data::int_column("n", DataType::Int32, vec![7]);
        n.valid_data = vec![false, true];
        let page = vec![
            int64_column("pk", vec![1, 2]),
            float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25]),
            varchar_column("title", vec!["a".into(), "b".into()]),
            json_column("meta", vec![b"{}".to_vec(), b"1".to_vec()]),
            dynamic_column(vec![b"{}".to_vec(), b"{}".to_vec()]),
            sparse_column(
                "sp",
                vec![
                    sparse_row(&[(3, 0.5), (1, 2.0)]),
                    sparse_row(&[(70000, 1.0)]),
                ],
            ),
            bytes_vector(
                "f16",
                DataType::Float16Vector,
                2,
                vector_field::Data::Float16Vector(vec![1, 2, 3, 4, 5, 6, 7, 8]),
            ),
            bytes_vector(
                "bf16",
                DataType::BFloat16Vector,
                2,
                vector_field::Data::Bfloat16Vector(vec![8, 7, 6, 5, 4, 3, 2, 1]),
            ),
            bytes_vector(
                "i8v",
                DataType::Int8Vector,
                3,
                vector_field::Data::Int8Vector(vec![1, 255, 3, 4, 5, 128]),
            ),
            n,
        ];
        let batch = page_to_batch(&cols, &page, 2).unwrap();
        let back = from_parquet(to_parquet(&batch).unwrap().into()).unwrap();
        let out = batch_to_fields(&cols, &back[0]).unwrap();
        let a = crate::codec::digest::hash_rows(&page, "pk", 2, true).unwrap();
        let b = crate::codec::digest::hash_rows(&out, "pk", 2, true).unwrap();
        assert_eq!(a, b, "every value survives the round trip");
        // Inserts carry a nullable column compacted, as clients do and Milvus 2.5 requires.
        let n = out.iter().find(|f| f.field_name == "n").unwrap();
        assert_eq!(n.valid_data, [false, true]);
        assert_eq!(crate::milvus::data::column_len(n), 1);
        let sp = out.iter().find(|f| f.field_name == "sp").unwrap();
        let Some(field_data::Field::Vectors(v)) = &sp.field else {
            unreachable!()
        };
        assert_eq!(v.dim, 70001);
    }

    #[test]
    fn geometries_and_timestamptz_round_trip_with_nulls() {
        use crate::milvus::data::{geometry_column, timestamptz_column};
        let mut s = schema();
        for (name, ty) in [("g", DataType::Geometry), ("t", DataType::Timestamptz)] {
            s.fields.push(crate::schema::FieldSchema {
                name: name.into(),
                data_type: ty as i32,
                nullable: true,
                ..Default::default()
            });
        }
        let cols = columns(&s).unwrap();
        // As Milvus Lite 3 answers: WKT as inserted, UTC text, a placeholder under each null.
        let mut g = geometry_column("g", vec!["POINT(1 2)".into(), String::new()]);
        g.valid_data = vec![true, false];
        let mut t = timestamptz_column(
            "t",
            vec![String::new(), "2024-01-02T03:04:05.123456Z".into()],
        );
        t.valid_data = vec![false, true];
        let page = vec![
            int64_column("pk", vec![1, 2]),
            float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25]),
            varchar_column("title", vec!["a".into(), "b".into()]),
            json_column("meta", vec![b"{}".to_vec(), b"1".to_vec()]),
            dynamic_column(vec![b"{}".to_vec(), b"{}".to_vec()]),
            g,
            t,
        ];
        let batch = page_to_batch(&cols, &page, 2).unwrap();
        let back = from_parquet(to_parquet(&batch).unwrap().into()).unwrap();
        let t_type = back[0]
            .schema()
            .field_with_name("t")
            .unwrap()
            .data_type()
            .clone();
        assert_eq!(
            t_type,
            Arrow::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        let out = batch_to_fields(&cols, &back[0]).unwrap();
        let a = crate::codec::digest::hash_rows(&page, "pk", 2, true).unwrap();
        let b = crate::codec::digest::hash_rows(&out, "pk", 2, true).unwrap();
        assert_eq!(a, b, "every value survives the round trip");
        // Inserts carry what the server takes: WKT and RFC 3339 text, without the nulls.
        let text = |name: &str| {
            let f = out.iter().find(|f| f.field_name == name).unwrap();
            let data = match &f.field {
                Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::GeometryWktData(a)),
                })) => a.data.clone(),
                Some(field_data::Field::Scalars(ScalarField {
                    data: Some(scalar_field::Data::StringData(a)),
                })) => a.data.clone(),
                other => panic!("{other:?}"),
            };
            (data, f.valid_data.clone())
        };
        assert_eq!(text("g"), (vec!["POINT(1 2)".into()], vec![true, false]));
        assert_eq!(
            text("t"),
            (
                vec!["2024-01-02T03:04:05.123456Z".into()],
                vec![false, true]
            )
        );
    }

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

    #[test]
    fn a_missing_column_is_named() {
        let cols = columns(&schema()).unwrap();
        let err = page_to_batch(&cols, &[int64_column("pk", vec![1])], 1).unwrap_err();
        assert!(err.contains("`vec`"), "{err}");
    }
}
