//! Clients of the test servers for the connector tests: Milvus A as root, and a small schema.

use planrun::milvus::pb::common::KeyValuePair;
use planrun::milvus::pb::schema::{CollectionSchema, DataType, FieldSchema};
use planrun::milvus::{MilvusClient, MilvusConfig};
use planrun::secret::Secret;

use super::MILVUS_A;

/// The vector size of the connector tests' collections.
pub const DIM: i64 = 4;

pub fn kv(k: &str, v: &str) -> KeyValuePair {
    KeyValuePair {
        key: k.into(),
        value: v.into(),
    }
}

pub fn field(name: &str, ty: DataType) -> FieldSchema {
    FieldSchema {
        name: name.into(),
        data_type: ty as i32,
        ..Default::default()
    }
}

pub fn config_a() -> MilvusConfig {
    let mut cfg = MilvusConfig::new("milvus_a", MILVUS_A.require().uri());
    cfg.user = Some("root".into());
    cfg.password = Some(Secret::new("Milvus"));
    cfg
}

pub async fn client_a() -> MilvusClient {
    MilvusClient::connect(&config_a())
        .await
        .expect("connect to Milvus A")
}

pub fn small_schema() -> CollectionSchema {
    CollectionSchema {
        fields: vec![
            FieldSchema {
                is_primary_key: true,
                ..field("id", DataType::Int64)
            },
            FieldSchema {
                type_params: vec![kv("max_length", "64")],
                ..field("title", DataType::VarChar)
            },
            FieldSchema {
                type_params: vec![kv("dim", &DIM.to_string())],
                ..field("vec", DataType::FloatVector)
            },
        ],
        ..Default::default()
    }
}
