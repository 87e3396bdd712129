//! A collection's shape: its schema, fields, functions and key-value pairs, as planrun keeps them.
//!
//! Its own module, below both `format` (backups embed it) and `codec` (values are read and written
//! by it). The serde attributes are milvus-backup's JSON keys: every backup planrun writes embeds
//! these types, so changing a key or a `skip_serializing_if` changes the backups' JSON.

use serde::{Deserialize, Serialize};

use crate::milvus::pb;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CollectionSchema {
    pub name: String,
    pub description: String,
    #[serde(rename = "autoID")]
    pub auto_id: bool,
    pub fields: Vec<FieldSchema>,
    pub enable_dynamic_field: bool,
    pub properties: Vec<KeyValue>,
    /// Server-side functions (BM25): recreated on restore, their output fields never copied.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub functions: Vec<FunctionSchema>,
}

/// A function of the schema, with the keys of the protobuf message milvus-backup serialises.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionSchema {
    pub name: String,
    pub id: i64,
    pub description: String,
    /// `FunctionType` as a number (BM25 = 1).
    #[serde(rename = "type")]
    pub kind: i32,
    pub input_field_names: Vec<String>,
    pub input_field_ids: Vec<i64>,
    pub output_field_names: Vec<String>,
    pub output_field_ids: Vec<i64>,
    pub params: Vec<KeyValue>,
}

impl FunctionSchema {
    /// The function type's name (`BM25`), or its number when this build does not know it.
    pub fn kind_name(&self) -> String {
        pb::schema::FunctionType::try_from(self.kind)
            .map(|t| t.as_str_name().to_string())
            .unwrap_or_else(|_| format!("type {}", self.kind))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldSchema {
    #[serde(rename = "fieldID")]
    pub field_id: i64,
    pub name: String,
    pub is_primary_key: bool,
    pub description: String,
    pub data_type: i32,
    pub type_params: Vec<KeyValue>,
    pub index_params: Vec<KeyValue>,
    #[serde(rename = "autoID")]
    pub auto_id: bool,
    pub element_type: i32,
    pub is_dynamic: bool,
    pub is_partition_key: bool,
    pub nullable: bool,
    /// Computed by a function of the schema (a BM25 output): not read into files, not inserted.
    pub is_function_output: bool,
    /// The field's default value: a protobuf `ValueField`, base64 (milvus-backup's key).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub default_value_base64: String,
}

impl FieldSchema {
    /// The default value, when the field has one that decodes.
    pub fn default_value(&self) -> Option<pb::schema::ValueField> {
        use base64::Engine as _;
        use prost::Message as _;
        if self.default_value_base64.is_empty() {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&self.default_value_base64)
            .ok()?;
        pb::schema::ValueField::decode(raw.as_slice()).ok()
    }
}

fn default_value_base64(v: Option<&pb::schema::ValueField>) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    // A ValueField with no value set is how a server says "no default".
    v.filter(|v| v.data.is_some())
        .map(|v| base64::engine::general_purpose::STANDARD.encode(v.encode_to_vec()))
        .unwrap_or_default()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

pub fn kv_from_pb(kvs: &[pb::common::KeyValuePair]) -> Vec<KeyValue> {
    kvs.iter()
        .map(|kv| KeyValue {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

pub fn kv_from_pairs(kvs: &[(String, String)]) -> Vec<KeyValue> {
    kvs.iter()
        .map(|(key, value)| KeyValue {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

pub fn kv_to_pairs(kvs: &[KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect()
}

pub fn kv_to_pb(kvs: &[KeyValue]) -> Vec<pb::common::KeyValuePair> {
    kvs.iter()
        .map(|kv| pb::common::KeyValuePair {
            key: kv.key.clone(),
            value: kv.value.clone(),
        })
        .collect()
}

/// Why neither mode can carry a collection, if its schema has parts planrun does not model: a
/// copy made without them would lose their data, so the collection is refused instead.
pub fn uncarried(db: &str, name: &str, schema: &pb::schema::CollectionSchema) -> Option<String> {
    let n = schema.struct_array_fields.len();
    (n > 0).then(|| {
        format!(
            "`{db}.{name}` has {n} struct array field(s) (Milvus 2.6 and later), which planrun \
             does not carry in either mode yet; a copy without them would lose their data"
        )
    })
}

impl From<&pb::schema::CollectionSchema> for CollectionSchema {
    fn from(s: &pb::schema::CollectionSchema) -> Self {
        CollectionSchema {
            name: s.name.clone(),
            description: s.description.clone(),
            auto_id: s.auto_id,
            fields: s
                .fields
                .iter()
                .map(|f| FieldSchema {
                    field_id: f.field_id,
                    name: f.name.clone(),
                    is_primary_key: f.is_primary_key,
                    description: f.description.clone(),
                    data_type: f.data_type,
                    type_params: kv_from_pb(&f.type_params),
                    index_params: kv_from_pb(&f.index_params),
                    auto_id: f.auto_id,
                    element_type: f.element_type,
                    is_dynamic: f.is_dynamic,
                    is_partition_key: f.is_partition_key,
                    nullable: f.nullable,
                    is_function_output: f.is_function_output,
                    default_value_base64: default_value_base64(f.default_value.as_ref()),
                })
                .collect(),
            enable_dynamic_field: s.enable_dynamic_field,
            properties: kv_from_pb(&s.properties),
            functions: s
                .functions
                .iter()
                .map(|f| FunctionSchema {
                    name: f.name.clone(),
                    id: f.id,
                    description: f.description.clone(),
                    kind: f.r#type,
                    input_field_names: f.input_field_names.clone(),
                    input_field_ids: f.input_field_ids.clone(),
                    output_field_names: f.output_field_names.clone(),
                    output_field_ids: f.output_field_ids.clone(),
                    params: kv_from_pb(&f.params),
                })
                .collect(),
        }
    }
}

impl CollectionSchema {
    /// Whether the server assigns the primary keys.
    pub fn auto_id(&self) -> bool {
        self.auto_id || self.fields.iter().any(|f| f.is_primary_key && f.auto_id)
    }

    /// The vector fields: a collection loads only with an index on each of them.
    pub fn vector_fields(&self) -> impl Iterator<Item = &FieldSchema> {
        use pb::schema::DataType as T;
        self.fields.iter().filter(|f| {
            matches!(
                T::try_from(f.data_type),
                Ok(T::FloatVector
                    | T::BinaryVector
                    | T::Float16Vector
                    | T::BFloat16Vector
                    | T::SparseFloatVector
                    | T::Int8Vector)
            )
        })
    }

    /// The function that computes `field`, when it is a function's output.
    pub fn producer(&self, field: &str) -> Option<&FunctionSchema> {
        self.functions
            .iter()
            .find(|f| f.output_field_names.iter().any(|o| o == field))
    }

    /// The schema to create a copy named `name`: system fields (ids < 100) and the dynamic
    /// `$meta` field are left out, as Milvus adds those itself; field order is kept so that
    /// Milvus assigns the same field ids, which binlog import relies on.
    pub fn to_pb(&self, name: &str) -> pb::schema::CollectionSchema {
        pb::schema::CollectionSchema {
            name: name.to_string(),
            description: self.description.clone(),
            auto_id: self.auto_id,
            fields: self
                .fields
                .iter()
                .filter(|f| !f.is_dynamic && (f.field_id >= 100 || f.field_id == 0))
                .map(|f| pb::schema::FieldSchema {
                    field_id: 0,
                    name: f.name.clone(),
                    is_primary_key: f.is_primary_key,
                    description: f.description.clone(),
                    data_type: f.data_type,
                    type_params: kv_to_pb(&f.type_params),
                    index_params: kv_to_pb(&f.index_params),
                    auto_id: f.auto_id,
                    element_type: f.element_type,
                    is_partition_key: f.is_partition_key,
                    nullable: f.nullable,
                    is_function_output: f.is_function_output,
                    default_value: f.default_value(),
                    ..Default::default()
                })
                .collect(),
            enable_dynamic_field: self.enable_dynamic_field,
            properties: kv_to_pb(&self.properties),
            // The target assigns field and function ids; functions name their fields.
            functions: self
                .functions
                .iter()
                .map(|f| pb::schema::FunctionSchema {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    r#type: f.kind,
                    input_field_names: f.input_field_names.clone(),
                    output_field_names: f.output_field_names.clone(),
                    params: kv_to_pb(&f.params),
                    ..Default::default()
                })
                .collect(),
            struct_array_fields: Vec::new(),
        }
    }

    /// The user-visible shape of a schema, to compare a target with its source: names, types,
    /// params and flags in order, without server-assigned ids.
    pub fn shape(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .fields
            .iter()
            .filter(|f| !f.is_dynamic && (f.field_id >= 100 || f.field_id == 0))
            .map(|f| {
                let mut params: Vec<String> = f
                    .type_params
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, kv.value))
                    .collect();
                params.sort();
                // Newer flags only when set, so schemas without them keep their old shape.
                let mut flags = String::new();
                if f.nullable {
                    flags.push_str(":nullable");
                }
                if let Some(v) = f.default_value().and_then(|v| v.data) {
                    flags.push_str(&format!(":default={v:?}"));
                }
                if f.is_function_output {
                    flags.push_str(":function output");
                }
                format!(
                    "{}:{}:{}:{}:{}:{}:{}{flags}",
                    f.name,
                    f.data_type,
                    f.element_type,
                    params.join(","),
                    f.is_primary_key,
                    f.auto_id,
                    f.is_partition_key
                )
            })
            .collect();
        out.push(format!("dynamic={}", self.enable_dynamic_field));
        for f in &self.functions {
            let mut params: Vec<String> = f
                .params
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            params.sort();
            out.push(format!(
                "function {}:{}:{}->{}:{}",
                f.name,
                f.kind_name(),
                f.input_field_names.join(","),
                f.output_field_names.join(","),
                params.join(",")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_array_fields_are_refused_not_dropped() {
        let mut pb = pb::schema::CollectionSchema::default();
        assert_eq!(uncarried("default", "c", &pb), None);
        pb.struct_array_fields.push(vec![10, 1, b's']);
        let why = uncarried("default", "c", &pb).expect("refused");
        assert!(
            why.contains("`default.c`") && why.contains("1 struct array field"),
            "{why}"
        );
    }

    /// Milvus Lite 3 describes a TIMESTAMPTZ default as microseconds in a `ValueField` variant
    /// of its own; a build without it would decode no default at all and silently drop it.
    #[test]
    fn a_timestamptz_default_survives_the_json_and_the_create_schema() {
        use pb::schema::{self as s, value_field};
        let dflt = s::ValueField {
            data: Some(value_field::Data::TimestamptzData(1_704_164_645_000_000)),
        };
        let from_server = s::CollectionSchema {
            fields: vec![s::FieldSchema {
                name: "t".into(),
                data_type: s::DataType::Timestamptz as i32,
                default_value: Some(dflt.clone()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_value(CollectionSchema::from(&from_server)).unwrap();
        let back: CollectionSchema = serde_json::from_value(json).unwrap();
        assert_eq!(back.to_pb("c").fields[0].default_value, Some(dflt));
    }

    #[test]
    fn functions_defaults_and_nulls_survive_the_json_and_the_create_schema() {
        use pb::schema::{self as s, value_field};
        let from_server = s::CollectionSchema {
            name: "c".into(),
            fields: vec![
                s::FieldSchema {
                    name: "d".into(),
                    data_type: s::DataType::VarChar as i32,
                    default_value: Some(s::ValueField {
                        data: Some(value_field::Data::StringData("dflt".into())),
                    }),
                    nullable: true,
                    ..Default::default()
                },
                s::FieldSchema {
                    name: "bm".into(),
                    data_type: s::DataType::SparseFloatVector as i32,
                    is_function_output: true,
                    // What a server sends for a field without a default.
                    default_value: Some(s::ValueField::default()),
                    ..Default::default()
                },
            ],
            functions: vec![s::FunctionSchema {
                name: "bm25".into(),
                id: 7,
                r#type: s::FunctionType::Bm25 as i32,
                input_field_names: vec!["d".into()],
                input_field_ids: vec![101],
                output_field_names: vec!["bm".into()],
                output_field_ids: vec![102],
                ..Default::default()
            }],
            ..Default::default()
        };
        let ours = CollectionSchema::from(&from_server);
        let json = serde_json::to_value(&ours).unwrap();
        assert_eq!(json["functions"][0]["type"], 1);
        assert_eq!(json["fields"][1]["is_function_output"], true);
        assert!(json["fields"][0]["default_value_base64"].is_string());
        assert!(json["fields"][1].get("default_value_base64").is_none());
        let back: CollectionSchema = serde_json::from_value(json).unwrap();
        assert_eq!(back, ours);
        assert_eq!(back.producer("bm").unwrap().kind_name(), "BM25");
        let create = back.to_pb("c2");
        assert_eq!(
            create.fields[0].default_value,
            from_server.fields[0].default_value
        );
        assert!(create.fields[0].nullable && create.fields[1].is_function_output);
        assert_eq!(create.fields[1].default_value, None);
        // Ids are the target's to assign.
        assert_eq!(create.functions[0].input_field_ids, Vec::<i64>::new());
        assert_eq!(create.functions[0].output_field_names, ["bm"]);
        assert!(
            back.shape()
                .iter()
                .any(|l| l.starts_with("function bm25:BM25:d->bm"))
        );
    }
}
