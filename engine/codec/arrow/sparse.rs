//! Sparse vector rows between Milvus's wire encoding and the JSON text its import reads.

use std::fmt::Write;

use serde::Deserialize;

use crate::milvus::data::{sparse_pairs, sparse_row};

/// `{"indices":[..],"values":[..]}`, the form Milvus's Parquet import reads since 2.4. Values
/// are written in the shortest form that reads back as the same `f32`. `None` when `row` is not
/// a whole number of (index, value) pairs.
pub(super) fn to_json(row: &[u8]) -> Option<String> {
    let pairs = sparse_pairs(row)?;
    let mut s = String::with_capacity(24 + pairs.len() * 16);
    s.push_str(r#"{"indices":["#);
    for (k, (i, _)) in pairs.iter().enumerate() {
        let _ = write!(s, "{}{i}", if k > 0 { "," } else { "" });
    }
    s.push_str(r#"],"values":["#);
    for (k, (_, v)) in pairs.iter().enumerate() {
        let _ = write!(s, "{}{v}", if k > 0 { "," } else { "" });
    }
    s.push_str("]}");
    Some(s)
}

#[derive(Deserialize)]
struct Row {
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// A row written by `to_json` back in the wire encoding.
pub(super) fn from_json(text: &str) -> Result<Vec<u8>, String> {
    let r: Row = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if r.indices.len() != r.values.len() {
        return Err(format!(
            "{} indices and {} values",
            r.indices.len(),
            r.values.len()
        ));
    }
    let pairs: Vec<(u32, f32)> = r.indices.into_iter().zip(r.values).collect();
    Ok(sparse_row(&pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_json_exactly() {
        let row = sparse_row(&[
            (3, 0.1),
            (1, -2.0),
            (u32::MAX - 1, f32::MIN_POSITIVE),
            (7, 1e30),
        ]);
        let text = to_json(&row).unwrap();
        assert!(
            text.starts_with(r#"{"indices":[1,3,7,4294967294],"values":[-2,"#),
            "{text}"
        );
        assert_eq!(from_json(&text).unwrap(), row);
        assert_eq!(to_json(&[]).unwrap(), r#"{"indices":[],"values":[]}"#);
        assert_eq!(
            from_json(r#"{"indices":[],"values":[]}"#).unwrap(),
            Vec::<u8>::new()
        );
        assert!(from_json(r#"{"indices":[1],"values":[]}"#).is_err());
        assert!(to_json(&[1, 2, 3]).is_none());
    }
}
