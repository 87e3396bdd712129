//! Size limits a schema should declare and some servers do not report, filled in from the data.
//!
//! Milvus Lite describes an ARRAY of VARCHAR without its `max_length`, and no Milvus server
//! creates a VARCHAR (or a VARCHAR array) without one. A rows backup measures the longest value
//! of every such field while it reads, and records a limit derived from it in the backup's
//! schema, so the restore can create the collection anywhere.

use std::collections::BTreeMap;

use crate::milvus::pb::schema::{DataType, FieldData, field_data, scalar_field};
use crate::schema::{CollectionSchema, FieldSchema, KeyValue};

/// The largest `max_length` Milvus accepts.
const MAX_LENGTH: u64 = 65_535;
/// The largest `max_capacity` Milvus accepts.
const MAX_CAPACITY: u64 = 4_096;

/// Type params a field lacks, by `field/param` (e.g. `tags/max_length`).
pub fn missing(schema: &CollectionSchema) -> Vec<String> {
    let mut out = Vec::new();
    for f in &schema.fields {
        let ty = DataType::try_from(f.data_type).unwrap_or(DataType::None);
        let element = DataType::try_from(f.element_type).unwrap_or(DataType::None);
        let strings = matches!(ty, DataType::VarChar)
            || (ty == DataType::Array && element == DataType::VarChar);
        if strings && param(f, "max_length").is_none() {
            out.push(format!("{}/max_length", f.name));
        }
        if ty == DataType::Array && param(f, "max_capacity").is_none() {
            out.push(format!("{}/max_capacity", f.name));
        }
    }
    out
}

/// The largest value seen in `fields` for each of `missing`: bytes of a string (or of an
/// array's longest string) for `max_length`, elements of an array for `max_capacity`.
pub fn observe(missing: &[String], fields: &[FieldData]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in missing {
        let Some((name, what)) = m.split_once('/') else {
            continue;
        };
        let Some(f) = fields.iter().find(|f| f.field_name == name) else {
            continue;
        };
        let Some(field_data::Field::Scalars(s)) = &f.field else {
            continue;
        };
        let longest = |sf: &scalar_field::Data| match sf {
            scalar_field::Data::StringData(v) => {
                v.data.iter().map(|s| s.len() as u64).max().unwrap_or(0)
            }
            _ => 0,
        };
        let seen = match (&s.data, what) {
            (Some(d @ scalar_field::Data::StringData(_)), "max_length") => longest(d),
            (Some(scalar_field::Data::ArrayData(a)), "max_length") => a
                .data
                .iter()
                .filter_map(|e| e.data.as_ref().map(longest))
                .max()
                .unwrap_or(0),
            (Some(scalar_field::Data::ArrayData(a)), "max_capacity") => a
                .data
                .iter()
                .map(|e| crate::milvus::data::scalar_len(e) as u64)
                .max()
                .unwrap_or(0),
            _ => 0,
        };
        out.insert(m.clone(), seen);
    }
    out
}

/// Folds `b` into `a`, keeping the larger of each.
pub fn merge(a: &mut BTreeMap<String, u64>, b: &BTreeMap<String, u64>) {
    for (k, v) in b {
        let e = a.entry(k.clone()).or_default();
        *e = (*e).max(*v);
    }
}

/// Writes a limit for every missing param into `schema`: the smallest power of two that holds
/// the longest value seen, at least 64 (16 elements), at most what Milvus accepts. Returns one
/// note per field for the user.
pub fn fill(schema: &mut CollectionSchema, seen: &BTreeMap<String, u64>) -> Vec<String> {
    let mut notes = Vec::new();
    for m in missing(schema) {
        let (name, what) = m.split_once('/').expect("field/param");
        let longest = seen.get(&m).copied().unwrap_or(0);
        let (floor, cap) = match what {
            "max_length" => (64, MAX_LENGTH),
            _ => (16, MAX_CAPACITY),
        };
        let limit = longest.max(floor).next_power_of_two().min(cap).max(longest);
        if let Some(f) = schema.fields.iter_mut().find(|f| f.name == name) {
            f.type_params.push(KeyValue {
                key: what.to_string(),
                value: limit.to_string(),
            });
            notes.push(format!(
                "field `{name}` had no {what} (the source server does not report it): \
                 recorded {what} = {limit}, from the longest value read ({longest})"
            ));
        }
    }
    notes
}

fn param<'a>(f: &'a FieldSchema, key: &str) -> Option<&'a str> {
    f.type_params
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| kv.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::milvus::pb::schema::{ArrayArray, ScalarField, StringArray};

    fn strings(v: &[&str]) -> ScalarField {
        ScalarField {
            data: Some(scalar_field::Data::StringData(StringArray {
                data: v.iter().map(|s| s.to_string()).collect(),
            })),
        }
    }

    fn schema() -> CollectionSchema {
        let field =
            |name: &str, ty: DataType, element: DataType, params: &[(&str, &str)]| FieldSchema {
                name: name.into(),
                data_type: ty as i32,
                element_type: element as i32,
                type_params: params
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.to_string(),
                        value: v.to_string(),
                    })
                    .collect(),
                ..Default::default()
            };
        CollectionSchema {
            fields: vec![
                field(
                    "title",
                    DataType::VarChar,
                    DataType::None,
                    &[("max_length", "10")],
                ),
                field(
                    "tags",
                    DataType::Array,
                    DataType::VarChar,
                    &[("max_capacity", "8")],
                ),
                field("nums", DataType::Array, DataType::Int64, &[]),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn limits_missing_from_the_schema_are_measured_and_filled() {
        let mut s = schema();
        assert_eq!(missing(&s), ["tags/max_length", "nums/max_capacity"]);
        let tags = FieldData {
            field_name: "tags".into(),
            field: Some(field_data::Field::Scalars(ScalarField {
                data: Some(scalar_field::Data::ArrayData(ArrayArray {
                    data: vec![strings(&["a", "abcdefghij"]), strings(&[&"x".repeat(300)])],
                    element_type: DataType::VarChar as i32,
                })),
            })),
            ..Default::default()
        };
        let mut seen = observe(&missing(&s), &[tags]);
        assert_eq!(seen["tags/max_length"], 300);
        merge(
            &mut seen,
            &BTreeMap::from([("tags/max_length".to_string(), 12)]),
        );
        assert_eq!(seen["tags/max_length"], 300);
        let notes = fill(&mut s, &seen);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert_eq!(param(&s.fields[1], "max_length"), Some("512"));
        // No data at all still gives a limit a server accepts.
        assert_eq!(param(&s.fields[2], "max_capacity"), Some("16"));
        assert!(missing(&s).is_empty());
    }
}
