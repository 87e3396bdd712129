//! Round trips of every Milvus type through both layouts of the rows format.

use std::sync::Arc;

use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType as Arrow, Field};

use super::*;
use crate::milvus::data::{
    dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
};
use crate::milvus::pb::schema::{
    ArrayArray, BoolArray, DataType, DoubleArray, FieldData, FloatArray, IntArray, LongArray,
    ScalarField, StringArray, VectorField, field_data, scalar_field, vector_field,
};
use crate::schema::CollectionSchema;

pub(super) fn schema() -> CollectionSchema {
    let f =
        |name: &str, ty: DataType, params: &[(&str, &str)], pk: bool| crate::schema::FieldSchema {
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

/// A vector column of one of the byte-encoded types.
pub(super) fn bytes_vector(
    name: &str,
    ty: DataType,
    dim: i64,
    data: vector_field::Data,
) -> FieldData {
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
        Arrow::Utf8,
        "RFC 3339 text, as Milvus 2.6 imports it"
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

/// A field of `ty` named `name`, with `dim` (vectors) or `element` (arrays).
pub(super) fn field(
    name: &str,
    ty: DataType,
    dim: usize,
    element: DataType,
) -> crate::schema::FieldSchema {
    crate::schema::FieldSchema {
        name: name.into(),
        data_type: ty as i32,
        element_type: element as i32,
        type_params: vec![crate::schema::KeyValue {
            key: "dim".into(),
            value: dim.to_string(),
        }],
        ..Default::default()
    }
}

/// An ARRAY column: one element list per row.
pub(super) fn array_column(
    name: &str,
    element: DataType,
    rows: Vec<scalar_field::Data>,
) -> FieldData {
    FieldData {
        r#type: DataType::Array as i32,
        field_name: name.into(),
        field: Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::ArrayData(ArrayArray {
                data: rows
                    .into_iter()
                    .map(|d| ScalarField { data: Some(d) })
                    .collect(),
                element_type: element as i32,
            })),
        })),
        ..Default::default()
    }
}

/// The batch read back from the Parquet file `batch` is written to, and its insert columns.
pub(super) fn through_parquet(cols: &[Col], batch: &RecordBatch) -> (RecordBatch, Vec<FieldData>) {
    let back = from_parquet(to_parquet(batch).unwrap().into()).unwrap();
    assert_eq!(back.len(), 1);
    let fields = batch_to_fields(cols, &back[0]).unwrap();
    (back[0].clone(), fields)
}

pub(super) fn same_rows(a: &[FieldData], b: &[FieldData], n: usize) {
    let a = crate::codec::digest::hash_rows(a, "pk", n, true).unwrap();
    let b = crate::codec::digest::hash_rows(b, "pk", n, true).unwrap();
    assert_eq!(a, b, "every value survives the round trip");
}

/// Every type Milvus stores, with nulls, written in the import layout (the column types
/// `schema.rs` names, from Milvus's own import reader) and inserted back unchanged.
#[test]
fn every_type_is_written_as_milvus_imports_it_and_inserts_back() {
    use crate::milvus::data::{
        bool_column, double_column, float_column, geometry_column, int_column, sparse_column,
        sparse_row, timestamptz_column,
    };
    use scalar_field::Data as D;
    let mut s = schema();
    let elements = [
        ("a_bool", DataType::Bool),
        ("a_i8", DataType::Int8),
        ("a_i16", DataType::Int16),
        ("a_i32", DataType::Int32),
        ("a_i64", DataType::Int64),
        ("a_f", DataType::Float),
        ("a_d", DataType::Double),
        ("a_s", DataType::VarChar),
    ];
    for (name, e) in elements {
        s.fields.push(field(name, DataType::Array, 0, e));
    }
    for (name, ty, dim) in [
        ("b", DataType::Bool, 0),
        ("i8", DataType::Int8, 0),
        ("i16", DataType::Int16, 0),
        ("i32", DataType::Int32, 0),
        ("f", DataType::Float, 0),
        ("d", DataType::Double, 0),
        ("bin", DataType::BinaryVector, 16),
        ("f16", DataType::Float16Vector, 2),
        ("bf16", DataType::BFloat16Vector, 2),
        ("i8v", DataType::Int8Vector, 3),
        ("sp", DataType::SparseFloatVector, 0),
        ("g", DataType::Geometry, 0),
        ("t", DataType::Timestamptz, 0),
    ] {
        s.fields.push(field(name, ty, dim, DataType::None));
    }
    // Nullable columns as a server sends them: compacted to their values.
    for (name, ty, e) in [
        ("n_j", DataType::Json, DataType::None),
        ("n_a", DataType::Array, DataType::Int64),
        ("n_v", DataType::FloatVector, DataType::None),
    ] {
        s.fields.push(crate::schema::FieldSchema {
            nullable: true,
            ..field(name, ty, 2, e)
        });
    }
    let cols = columns(&s).unwrap();
    let compact = |mut f: FieldData, valid: [bool; 3]| {
        f.valid_data = valid.to_vec();
        f
    };
    let page = vec![
        int64_column("pk", vec![1, 2, 3]),
        float_vector_column("vec", 2, vec![0.5, 1.5, -2.0, 3.25, f32::MIN, f32::MAX]),
        varchar_column("title", vec!["a".into(), "".into(), "ü".into()]),
        json_column(
            "meta",
            vec![br#"{"x":1}"#.to_vec(), b"[1,2]".to_vec(), b"null".to_vec()],
        ),
        dynamic_column(vec![
            b"{}".to_vec(),
            br#"{"extra":"y"}"#.to_vec(),
            b"{}".to_vec(),
        ]),
        array_column(
            "a_bool",
            DataType::Bool,
            vec![
                D::BoolData(BoolArray { data: vec![true] }),
                D::BoolData(BoolArray::default()),
                D::BoolData(BoolArray {
                    data: vec![false, true],
                }),
            ],
        ),
        array_column(
            "a_i8",
            DataType::Int8,
            vec![
                D::IntData(IntArray {
                    data: vec![-128, 127],
                }),
                D::IntData(IntArray::default()),
                D::IntData(IntArray { data: vec![0] }),
            ],
        ),
        array_column(
            "a_i16",
            DataType::Int16,
            vec![
                D::IntData(IntArray { data: vec![-300] }),
                D::IntData(IntArray {
                    data: vec![1, 2, 3],
                }),
                D::IntData(IntArray::default()),
            ],
        ),
        array_column(
            "a_i32",
            DataType::Int32,
            vec![
                D::IntData(IntArray {
                    data: vec![i32::MIN],
                }),
                D::IntData(IntArray {
                    data: vec![i32::MAX],
                }),
                D::IntData(IntArray::default()),
            ],
        ),
        array_column(
            "a_i64",
            DataType::Int64,
            vec![
                D::LongData(LongArray {
                    data: vec![i64::MIN, 0],
                }),
                D::LongData(LongArray::default()),
                D::LongData(LongArray {
                    data: vec![i64::MAX],
                }),
            ],
        ),
        array_column(
            "a_f",
            DataType::Float,
            vec![
                D::FloatData(FloatArray { data: vec![0.1] }),
                D::FloatData(FloatArray { data: vec![-1e30] }),
                D::FloatData(FloatArray::default()),
            ],
        ),
        array_column(
            "a_d",
            DataType::Double,
            vec![
                D::DoubleData(DoubleArray {
                    data: vec![0.1, 0.2],
                }),
                D::DoubleData(DoubleArray::default()),
                D::DoubleData(DoubleArray { data: vec![1e300] }),
            ],
        ),
        array_column(
            "a_s",
            DataType::VarChar,
            vec![
                D::StringData(StringArray {
                    data: vec!["x".into(), "".into()],
                }),
                D::StringData(StringArray::default()),
                D::StringData(StringArray {
                    data: vec!["z".into()],
                }),
            ],
        ),
        bool_column("b", vec![true, false, true]),
        int_column("i8", DataType::Int8, vec![-128, 0, 127]),
        int_column("i16", DataType::Int16, vec![-32768, 0, 32767]),
        int_column("i32", DataType::Int32, vec![i32::MIN, 0, i32::MAX]),
        float_column("f", vec![0.1, -0.0, 3.5]),
        double_column("d", vec![0.1, 1e-300, -2.5]),
        bytes_vector(
            "bin",
            DataType::BinaryVector,
            16,
            vector_field::Data::BinaryVector(vec![1, 2, 3, 4, 255, 0]),
        ),
        bytes_vector(
            "f16",
            DataType::Float16Vector,
            2,
            vector_field::Data::Float16Vector((0..12).collect()),
        ),
        bytes_vector(
            "bf16",
            DataType::BFloat16Vector,
            2,
            vector_field::Data::Bfloat16Vector((100..112).collect()),
        ),
        bytes_vector(
            "i8v",
            DataType::Int8Vector,
            3,
            vector_field::Data::Int8Vector(vec![1, 255, 3, 4, 5, 128, 0, 127, 129]),
        ),
        sparse_column(
            "sp",
            vec![
                sparse_row(&[(3, 0.1), (1, 2.0)]),
                sparse_row(&[(4_294_967_294, 1e-30)]),
                sparse_row(&[]),
            ],
        ),
        geometry_column(
            "g",
            vec!["POINT(1 2)".into(), "POINT (0 0)".into(), "".into()],
        ),
        timestamptz_column(
            "t",
            vec![
                "2024-01-02T03:04:05.123456Z".into(),
                "2024-01-02T03:04:05+05:30".into(),
                "1970-01-01T00:00:00Z".into(),
            ],
        ),
        compact(
            json_column("n_j", vec![b"{}".to_vec()]),
            [false, true, false],
        ),
        compact(
            array_column(
                "n_a",
                DataType::Int64,
                vec![D::LongData(LongArray { data: vec![7] })],
            ),
            [false, false, true],
        ),
        compact(
            float_vector_column("n_v", 2, vec![1.0, 2.0, 3.0, 4.0]),
            [true, false, true],
        ),
    ];
    let batch = page_to_batch(&cols, &page, 3).unwrap();
    let (back, out) = through_parquet(&cols, &batch);
    same_rows(&page, &out, 3);
    let dynamic = out.iter().find(|f| f.is_dynamic).unwrap();
    assert_eq!(dynamic.field_name, "$meta");
    let list = |t: Arrow| Arrow::List(Arc::new(Field::new("item", t, true)));
    let want = [
        ("pk", Arrow::Int64),
        ("vec", list(Arrow::Float32)),
        ("title", Arrow::Utf8),
        ("meta", Arrow::Utf8),
        ("a_bool", list(Arrow::Boolean)),
        ("a_i8", list(Arrow::Int8)),
        ("a_i16", list(Arrow::Int16)),
        ("a_i32", list(Arrow::Int32)),
        ("a_i64", list(Arrow::Int64)),
        ("a_f", list(Arrow::Float32)),
        ("a_d", list(Arrow::Float64)),
        ("a_s", list(Arrow::Utf8)),
        ("b", Arrow::Boolean),
        ("i8", Arrow::Int8),
        ("i16", Arrow::Int16),
        ("i32", Arrow::Int32),
        ("f", Arrow::Float32),
        ("d", Arrow::Float64),
        ("bin", list(Arrow::UInt8)),
        ("f16", list(Arrow::UInt8)),
        ("bf16", list(Arrow::UInt8)),
        ("i8v", list(Arrow::Int8)),
        ("sp", Arrow::Utf8),
        ("g", Arrow::Utf8),
        ("t", Arrow::Utf8),
        ("n_j", Arrow::Utf8),
        ("n_a", list(Arrow::Int64)),
        ("n_v", list(Arrow::Float32)),
        ("$meta", Arrow::Utf8),
    ];
    let got: Vec<(String, Arrow)> = back
        .schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let want: Vec<(String, Arrow)> = want.into_iter().map(|(n, t)| (n.into(), t)).collect();
    assert_eq!(got, want);
    // Values as a reader of the file sees them: text, numbers and nulls.
    let text = |name: &str, i: usize| {
        let a = back.column_by_name(name).unwrap();
        let a = a
            .as_any()
            .downcast_ref::<arrow_array::StringArray>()
            .unwrap();
        a.is_valid(i).then(|| a.value(i).to_string())
    };
    assert_eq!(text("meta", 0).as_deref(), Some(r#"{"x":1}"#));
    assert_eq!(text("$meta", 1).as_deref(), Some(r#"{"extra":"y"}"#));
    assert_eq!(
        text("sp", 0).as_deref(),
        Some(r#"{"indices":[1,3],"values":[2,0.1]}"#)
    );
    assert_eq!(text("t", 1).as_deref(), Some("2024-01-01T21:34:05Z"));
    assert_eq!(
        (text("n_j", 0), text("n_j", 1).as_deref()),
        (None, Some("{}"))
    );
    let n_v = back.column_by_name("n_v").unwrap();
    assert_eq!((n_v.is_null(0), n_v.is_null(1)), (false, true));
    // Inserts carry nullable columns compacted, with their validity.
    let n_v = out.iter().find(|f| f.field_name == "n_v").unwrap();
    assert_eq!(n_v.valid_data, [true, false, true]);
    assert_eq!(crate::milvus::data::column_len(n_v), 2);
}
