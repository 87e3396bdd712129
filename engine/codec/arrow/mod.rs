//! Field data ⇄ Arrow record batches ⇄ Parquet: how rows mode stores Milvus values in files.

mod insert;
mod page;
mod parquet;
mod schema;

pub use self::parquet::{PageFile, from_parquet, row_group, row_groups, to_parquet};
pub use insert::batch_to_fields;
pub use page::page_to_batch;
pub use schema::{Col, arrow_schema, columns, output_fields};

#[cfg(test)]
mod tests {
    use arrow_schema::{DataType as Arrow, TimeUnit};

    use super::*;
    use crate::milvus::data::{
        dynamic_column, float_vector_column, int64_column, json_column, varchar_column,
    };
    use crate::milvus::pb::schema::{
        DataType, FieldData, ScalarField, VectorField, field_data, scalar_field, vector_field,
    };
    use crate::schema::CollectionSchema;

    pub(super) fn schema() -> CollectionSchema {
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
}
