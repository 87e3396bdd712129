//! Column helpers over `pb::schema::FieldData`: building columns, counting rows, reading keys.

use std::fmt;

use super::pb::schema::{
    BoolArray, DataType, DoubleArray, FieldData, FloatArray, GeometryWktArray, IntArray, JsonArray,
    LongArray, ScalarField, SparseFloatArray, StringArray, VectorField, field_data, scalar_field,
    vector_field,
};

/// A primary-key value: Milvus keys are Int64 or VarChar.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pk {
    Int(i64),
    Str(String),
}

impl Pk {
    /// The key as an expression literal: strings are quoted with `"` and `\` escaped.
    pub fn to_expr(&self) -> String {
        match self {
            Pk::Int(v) => v.to_string(),
            Pk::Str(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
                out
            }
        }
    }
}

impl fmt::Display for Pk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pk::Int(v) => write!(f, "{v}"),
            Pk::Str(s) => write!(f, "{s}"),
        }
    }
}

fn scalar(name: &str, ty: DataType, data: scalar_field::Data) -> FieldData {
    FieldData {
        r#type: ty as i32,
        field_name: name.to_string(),
        field: Some(field_data::Field::Scalars(ScalarField { data: Some(data) })),
        ..Default::default()
    }
}

pub fn bool_column(name: &str, data: Vec<bool>) -> FieldData {
    scalar(
        name,
        DataType::Bool,
        scalar_field::Data::BoolData(BoolArray { data }),
    )
}

/// Int8, Int16 and Int32 all travel as `int_data`; `ty` says which one the field is.
pub fn int_column(name: &str, ty: DataType, data: Vec<i32>) -> FieldData {
    scalar(name, ty, scalar_field::Data::IntData(IntArray { data }))
}

pub fn int64_column(name: &str, data: Vec<i64>) -> FieldData {
    scalar(
        name,
        DataType::Int64,
        scalar_field::Data::LongData(LongArray { data }),
    )
}

pub fn float_column(name: &str, data: Vec<f32>) -> FieldData {
    scalar(
        name,
        DataType::Float,
        scalar_field::Data::FloatData(FloatArray { data }),
    )
}

pub fn double_column(name: &str, data: Vec<f64>) -> FieldData {
    scalar(
        name,
        DataType::Double,
        scalar_field::Data::DoubleData(DoubleArray { data }),
    )
}

pub fn varchar_column(name: &str, data: Vec<String>) -> FieldData {
    scalar(
        name,
        DataType::VarChar,
        scalar_field::Data::StringData(StringArray { data }),
    )
}

/// A GEOMETRY column of WKT text, the form queries answer and inserts take.
pub fn geometry_column(name: &str, data: Vec<String>) -> FieldData {
    scalar(
        name,
        DataType::Geometry,
        scalar_field::Data::GeometryWktData(GeometryWktArray { data }),
    )
}

/// A TIMESTAMPTZ column of RFC 3339 text (`codec::timestamptz`), the form queries answer and
/// inserts take.
pub fn timestamptz_column(name: &str, data: Vec<String>) -> FieldData {
    scalar(
        name,
        DataType::Timestamptz,
        scalar_field::Data::StringData(StringArray { data }),
    )
}

/// A JSON column; each entry is one serialized JSON document.
pub fn json_column(name: &str, data: Vec<Vec<u8>>) -> FieldData {
    scalar(
        name,
        DataType::Json,
        scalar_field::Data::JsonData(JsonArray { data }),
    )
}

/// The dynamic-field column (`$meta`): JSON objects holding the keys the schema does not declare.
pub fn dynamic_column(data: Vec<Vec<u8>>) -> FieldData {
    FieldData {
        is_dynamic: true,
        ..json_column("$meta", data)
    }
}

/// A float vector column; `data` is all rows flattened, `dim` values per row.
pub fn float_vector_column(name: &str, dim: i64, data: Vec<f32>) -> FieldData {
    FieldData {
        r#type: DataType::FloatVector as i32,
        field_name: name.to_string(),
        field: Some(field_data::Field::Vectors(VectorField {
            dim,
            data: Some(vector_field::Data::FloatVector(FloatArray { data })),
        })),
        ..Default::default()
    }
}

/// A sparse vector column; each entry is one row in the wire encoding (`sparse_row`).
pub fn sparse_column(name: &str, rows: Vec<Vec<u8>>) -> FieldData {
    let dim = sparse_dim(&rows);
    FieldData {
        r#type: DataType::SparseFloatVector as i32,
        field_name: name.to_string(),
        field: Some(field_data::Field::Vectors(VectorField {
            dim,
            data: Some(vector_field::Data::SparseFloatVector(SparseFloatArray {
                contents: rows,
                dim,
            })),
        })),
        ..Default::default()
    }
}

/// One sparse row in Milvus's wire encoding: (u32 index, f32 value) pairs, little-endian,
/// sorted by index.
pub fn sparse_row(pairs: &[(u32, f32)]) -> Vec<u8> {
    let mut pairs = pairs.to_vec();
    pairs.sort_by_key(|p| p.0);
    pairs
        .iter()
        .flat_map(|(i, v)| i.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect()
}

/// The (index, value) pairs of one sparse row; `None` when its length is not a whole number
/// of pairs.
pub fn sparse_pairs(row: &[u8]) -> Option<Vec<(u32, f32)>> {
    if !row.len().is_multiple_of(8) {
        return None;
    }
    Some(
        row.chunks_exact(8)
            .map(|p| {
                let (i, v) = p.split_at(4);
                (
                    u32::from_le_bytes(i.try_into().expect("4 bytes")),
                    f32::from_le_bytes(v.try_into().expect("4 bytes")),
                )
            })
            .collect(),
    )
}

/// The `dim` of a batch of sparse rows: one more than the largest index (as clients send it).
pub fn sparse_dim(rows: &[Vec<u8>]) -> i64 {
    rows.iter()
        .filter_map(|r| sparse_pairs(r))
        .flat_map(|p| p.into_iter().map(|(i, _)| i as i64 + 1))
        .max()
        .unwrap_or(0)
}

/// How many rows a column holds.
pub fn column_len(f: &FieldData) -> usize {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => scalar_len(s),
        Some(field_data::Field::Vectors(v)) => {
            let dim = v.dim.max(1) as usize;
            match &v.data {
                Some(vector_field::Data::FloatVector(a)) => a.data.len() / dim,
                // Binary vectors pack 8 dimensions per byte.
                Some(vector_field::Data::BinaryVector(b)) => b.len() / dim.div_ceil(8),
                // Half-precision vectors are 2 bytes per dimension.
                Some(vector_field::Data::Float16Vector(b))
                | Some(vector_field::Data::Bfloat16Vector(b)) => b.len() / (dim * 2),
                Some(vector_field::Data::SparseFloatVector(s)) => s.contents.len(),
                // Int8 vectors are 1 byte per dimension.
                Some(vector_field::Data::Int8Vector(b)) => b.len() / dim,
                None => 0,
            }
        }
        None => 0,
    }
}

/// How many values a scalar column (or one array value) holds.
pub fn scalar_len(s: &ScalarField) -> usize {
    match &s.data {
        Some(scalar_field::Data::BoolData(a)) => a.data.len(),
        Some(scalar_field::Data::IntData(a)) => a.data.len(),
        Some(scalar_field::Data::LongData(a)) => a.data.len(),
        Some(scalar_field::Data::FloatData(a)) => a.data.len(),
        Some(scalar_field::Data::DoubleData(a)) => a.data.len(),
        Some(scalar_field::Data::StringData(a)) => a.data.len(),
        Some(scalar_field::Data::BytesData(a)) => a.data.len(),
        Some(scalar_field::Data::ArrayData(a)) => a.data.len(),
        Some(scalar_field::Data::JsonData(a)) => a.data.len(),
        Some(scalar_field::Data::GeometryWktData(a)) => a.data.len(),
        None => 0,
    }
}

/// The primary keys held by a column, when it is an Int64 or VarChar column.
pub fn pks(f: &FieldData) -> Option<Vec<Pk>> {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => match &s.data {
            Some(scalar_field::Data::LongData(a)) => {
                Some(a.data.iter().copied().map(Pk::Int).collect())
            }
            Some(scalar_field::Data::StringData(a)) => {
                Some(a.data.iter().cloned().map(Pk::Str).collect())
            }
            _ => None,
        },
        _ => None,
    }
}

/// The last key of a primary-key column, without copying the whole column.
pub fn last_pk(f: &FieldData) -> Option<Pk> {
    match &f.field {
        Some(field_data::Field::Scalars(s)) => match &s.data {
            Some(scalar_field::Data::LongData(a)) => a.data.last().copied().map(Pk::Int),
            Some(scalar_field::Data::StringData(a)) => a.data.last().cloned().map(Pk::Str),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_keys_are_quoted_and_escaped() {
        assert_eq!(Pk::Int(-7).to_expr(), "-7");
        assert_eq!(Pk::Str(r#"a"b\c"#.into()).to_expr(), r#""a\"b\\c""#);
    }

    #[test]
    fn column_lengths() {
        assert_eq!(column_len(&int64_column("id", vec![1, 2, 3])), 3);
        assert_eq!(column_len(&float_vector_column("v", 4, vec![0.0; 8])), 2);
        assert_eq!(column_len(&dynamic_column(vec![b"{}".to_vec()])), 1);
        assert_eq!(
            column_len(&geometry_column("g", vec!["POINT (1 2)".into()])),
            1
        );
        let col = varchar_column("k", vec!["a".into(), "b".into()]);
        assert_eq!(last_pk(&col), Some(Pk::Str("b".into())));
        assert_eq!(pks(&col).unwrap().len(), 2);
    }

    #[test]
    fn sparse_rows_are_index_value_pairs_sorted_little_endian() {
        let row = sparse_row(&[(7, 1.25), (1, 0.5)]);
        assert_eq!(&row[..8], &[1, 0, 0, 0, 0, 0, 0, 0x3f]);
        assert_eq!(sparse_pairs(&row), Some(vec![(1, 0.5), (7, 1.25)]));
        assert_eq!(sparse_pairs(&row[..5]), None);
        let col = sparse_column("s", vec![row, Vec::new(), sparse_row(&[(99, 2.0)])]);
        assert_eq!(column_len(&col), 3);
        let Some(field_data::Field::Vectors(v)) = &col.field else {
            unreachable!()
        };
        assert_eq!(v.dim, 100);
    }
}
