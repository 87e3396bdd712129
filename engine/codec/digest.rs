//! The canonical digest of a row: the same value hashes the same whatever the server, the column
//! order or the JSON key order, so `verify` can compare collections row by row.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::milvus::Pk;
use crate::milvus::pb::schema::{
    DataType, FieldData, ScalarField, field_data, scalar_field, vector_field,
};

/// The key and canonical hash of every row of a page. Columns are taken by field name, so the
/// order the server returns them in does not matter. Without `with_key` the key column is left
/// out of the hash: rows whose keys were reassigned still hash as their source.
pub fn hash_rows(
    fields: &[FieldData],
    pk: &str,
    n: usize,
    with_key: bool,
) -> std::result::Result<Vec<(Pk, u128)>, String> {
    let pk_col = fields
        .iter()
        .find(|f| f.field_name == pk)
        .ok_or_else(|| format!("the page has no primary-key column `{pk}`"))?;
    let keys = crate::milvus::data::pks(pk_col)
        .ok_or_else(|| format!("primary-key column `{pk}` is neither Int64 nor VarChar"))?;
    if keys.len() != n {
        return Err(format!("the page has {} keys for {n} rows", keys.len()));
    }
    let mut cols: BTreeMap<&str, &FieldData> = BTreeMap::new();
    for f in fields.iter().filter(|f| with_key || f.field_name != pk) {
        let name = if f.is_dynamic {
            "$meta"
        } else {
            f.field_name.as_str()
        };
        cols.insert(name, f);
    }
    let cols: Vec<(&str, &FieldData, Vec<Option<usize>>)> = cols
        .into_iter()
        .map(|(name, f)| (name, f, super::value_index(f, n)))
        .collect();
    let mut out = Vec::with_capacity(n);
    for (i, key) in keys.into_iter().enumerate() {
        let mut h = Sha256::new();
        for (name, f, idx) in &cols {
            h.update((name.len() as u32).to_le_bytes());
            h.update(name.as_bytes());
            match idx[i] {
                None => h.update([0u8]),
                Some(j) => {
                    h.update([1u8]);
                    cell(&mut h, f, j, *name == "$meta")?;
                }
            }
        }
        let d = h.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&d[..16]);
        out.push((key, u128::from_le_bytes(first)));
    }
    Ok(out)
}

fn bytes(h: &mut Sha256, b: &[u8]) {
    h.update((b.len() as u64).to_le_bytes());
    h.update(b);
}

/// JSON with sorted keys, so two servers that order an object's keys differently agree.
fn json(h: &mut Sha256, raw: &[u8]) {
    match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(v) => bytes(h, &serde_json::to_vec(&v).expect("values serialise")),
        Err(_) => bytes(h, raw),
    }
}

fn cell(h: &mut Sha256, f: &FieldData, i: usize, dynamic: bool) -> std::result::Result<(), String> {
    let short = || format!("column `{}` is shorter than the page", f.field_name);
    match &f.field {
        // A timestamptz is the instant its text names: two servers may write one instant in
        // different zones or precisions.
        Some(field_data::Field::Scalars(ScalarField {
            data: Some(scalar_field::Data::StringData(a)),
        })) if f.r#type == DataType::Timestamptz as i32 => {
            let text = a.data.get(i).ok_or_else(short)?;
            match super::timestamptz::parse(text) {
                Some(micros) => h.update(micros.to_le_bytes()),
                None => bytes(h, text.as_bytes()),
            }
            Ok(())
        }
        Some(field_data::Field::Scalars(s)) => scalar(h, s, i, dynamic).ok_or_else(short),
        Some(field_data::Field::Vectors(v)) => {
            let dim = v.dim.max(0) as usize;
            let slice = |b: &[u8], width: usize| -> Option<Vec<u8>> {
                b.get(i * width..(i + 1) * width).map(<[u8]>::to_vec)
            };
            let raw = match &v.data {
                Some(vector_field::Data::FloatVector(a)) => a
                    .data
                    .get(i * dim..(i + 1) * dim)
                    .map(|s| s.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()),
                Some(vector_field::Data::BinaryVector(b)) => slice(b, dim.div_ceil(8)),
                Some(vector_field::Data::Float16Vector(b))
                | Some(vector_field::Data::Bfloat16Vector(b)) => slice(b, dim * 2),
                Some(vector_field::Data::Int8Vector(b)) => slice(b, dim),
                // Sorted by index, so a server that orders a row's pairs otherwise agrees.
                Some(vector_field::Data::SparseFloatVector(s)) => s.contents.get(i).map(|row| {
                    crate::milvus::data::sparse_pairs(row)
                        .map(|pairs| crate::milvus::data::sparse_row(&pairs))
                        .unwrap_or_else(|| row.clone())
                }),
                None => Some(Vec::new()),
            };
            let raw = raw.ok_or_else(short)?;
            bytes(h, &raw);
            Ok(())
        }
        None => Ok(()),
    }
}

fn scalar(h: &mut Sha256, s: &ScalarField, i: usize, dynamic: bool) -> Option<()> {
    use scalar_field::Data;
    match &s.data {
        Some(Data::BoolData(a)) => h.update([*a.data.get(i)? as u8]),
        Some(Data::IntData(a)) => h.update(a.data.get(i)?.to_le_bytes()),
        Some(Data::LongData(a)) => h.update(a.data.get(i)?.to_le_bytes()),
        Some(Data::FloatData(a)) => h.update(a.data.get(i)?.to_bits().to_le_bytes()),
        Some(Data::DoubleData(a)) => h.update(a.data.get(i)?.to_bits().to_le_bytes()),
        Some(Data::StringData(a)) => bytes(h, a.data.get(i)?.as_bytes()),
        Some(Data::GeometryWktData(a)) => bytes(h, a.data.get(i)?.as_bytes()),
        Some(Data::BytesData(a)) => bytes(h, a.data.get(i)?),
        Some(Data::JsonData(a)) => {
            let raw = a.data.get(i)?;
            // An empty dynamic object and no dynamic value at all mean the same row.
            if dynamic && (raw.is_empty() || raw.as_slice() == b"{}") {
                bytes(h, b"{}");
            } else {
                json(h, raw);
            }
        }
        Some(Data::ArrayData(a)) => {
            let elem = a.data.get(i)?;
            let n = crate::milvus::data::column_len(&FieldData {
                field: Some(field_data::Field::Scalars(elem.clone())),
                ..Default::default()
            });
            h.update((n as u64).to_le_bytes());
            for j in 0..n {
                scalar(h, elem, j, false)?;
            }
        }
        None => {}
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::data::{
        double_column, dynamic_column, float_vector_column, int64_column, json_column,
        varchar_column,
    };

    fn page(scores: Vec<f64>, json: Vec<&str>) -> Vec<FieldData> {
        let n = scores.len();
        vec![
            int64_column("id", (0..n as i64).collect()),
            double_column("score", scores),
            float_vector_column("v", 2, (0..n * 2).map(|x| x as f32).collect()),
            json_column("j", json.iter().map(|s| s.as_bytes().to_vec()).collect()),
            dynamic_column(vec![b"{}".to_vec(); n]),
        ]
    }

    #[test]
    fn hashes_ignore_column_order_and_json_key_order() {
        let a = hash_rows(
            &page(vec![1.0, 2.0], vec![r#"{"a":1,"b":2}"#, "[]"]),
            "id",
            2,
            true,
        )
        .unwrap();
        let mut cols = page(vec![1.0, 2.0], vec![r#"{"b":2,"a":1}"#, "[]"]);
        cols.reverse();
        let b = hash_rows(&cols, "id", 2, true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn a_changed_value_changes_only_its_row() {
        let a = hash_rows(&page(vec![1.0, 2.0], vec!["1", "2"]), "id", 2, true).unwrap();
        let b = hash_rows(&page(vec![1.0, 2.5], vec!["1", "2"]), "id", 2, true).unwrap();
        assert_eq!(a[0], b[0]);
        assert_ne!(a[1].1, b[1].1);
        assert_eq!(a[1].0, Pk::Int(1));
    }

    #[test]
    fn same_rows_swapped_between_keys_differ() {
        // Row content moved to another key must not look equal.
        let a = hash_rows(
            &[
                int64_column("id", vec![1, 2]),
                varchar_column("t", vec!["x".into(), "y".into()]),
            ],
            "id",
            2,
            true,
        )
        .unwrap();
        let b = hash_rows(
            &[
                int64_column("id", vec![1, 2]),
                varchar_column("t", vec!["y".into(), "x".into()]),
            ],
            "id",
            2,
            true,
        )
        .unwrap();
        let sum = |v: &[(Pk, u128)]| v.iter().fold(0u128, |s, r| s.wrapping_add(r.1));
        assert_ne!(sum(&a), sum(&b));
    }

    #[test]
    fn without_the_key_rows_with_new_keys_hash_as_their_source() {
        let row = |id: i64| {
            vec![
                int64_column("id", vec![id]),
                varchar_column("t", vec!["x".into()]),
            ]
        };
        let (a, b) = (row(1), row(1_000_001));
        assert_ne!(
            hash_rows(&a, "id", 1, true).unwrap()[0].1,
            hash_rows(&b, "id", 1, true).unwrap()[0].1
        );
        assert_eq!(
            hash_rows(&a, "id", 1, false).unwrap()[0].1,
            hash_rows(&b, "id", 1, false).unwrap()[0].1
        );
    }

    #[test]
    fn nulls_differ_from_values_in_both_layouts() {
        let mut full = int64_column("x", vec![5, 0]);
        full.valid_data = vec![true, false];
        let mut compact = int64_column("x", vec![5]);
        compact.valid_data = vec![true, false];
        let ids = int64_column("id", vec![1, 2]);
        let a = hash_rows(&[ids.clone(), full], "id", 2, true).unwrap();
        let b = hash_rows(&[ids.clone(), compact], "id", 2, true).unwrap();
        assert_eq!(a, b);
        let c = hash_rows(&[ids, int64_column("x", vec![5, 0])], "id", 2, true).unwrap();
        assert_eq!(a[0], c[0]);
        assert_ne!(a[1], c[1]);
    }

    #[test]
    fn sparse_rows_hash_the_same_whatever_the_pair_order() {
        let row = |pairs: &[u8]| {
            pairs
                .chunks(2)
                .flat_map(|p| {
                    (p[0] as u32)
                        .to_le_bytes()
                        .into_iter()
                        .chain((p[1] as f32).to_le_bytes())
                })
                .collect::<Vec<u8>>()
        };
        let page = |r: Vec<u8>| {
            vec![
                int64_column("id", vec![1]),
                crate::milvus::data::sparse_column("s", vec![r]),
            ]
        };
        let a = hash_rows(&page(row(&[1, 5, 9, 2])), "id", 1, true).unwrap();
        let b = hash_rows(&page(row(&[9, 2, 1, 5])), "id", 1, true).unwrap();
        let c = hash_rows(&page(row(&[9, 2, 1, 6])), "id", 1, true).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn timestamptz_hash_by_instant_and_geometries_by_text() {
        use crate::milvus::data::{geometry_column, timestamptz_column};
        let page = |t: &str, g: &str| {
            let cols = [
                int64_column("id", vec![1]),
                timestamptz_column("t", vec![t.into()]),
                geometry_column("g", vec![g.into()]),
            ];
            hash_rows(&cols, "id", 1, true).unwrap()
        };
        let a = page("2024-01-02T03:04:05Z", "POINT (1 2)");
        assert_eq!(a, page("2024-01-02T11:04:05.000000+08:00", "POINT (1 2)"));
        assert_ne!(a, page("2024-01-02T03:04:06Z", "POINT (1 2)"));
        assert_ne!(a, page("2024-01-02T03:04:05Z", "POINT (1 3)"));
    }

    #[test]
    fn short_columns_are_an_error() {
        let err = hash_rows(
            &[
                int64_column("id", vec![1, 2]),
                double_column("s", vec![1.0]),
            ],
            "id",
            2,
            true,
        )
        .unwrap_err();
        assert!(err.contains("`s`"), "{err}");
    }
}
