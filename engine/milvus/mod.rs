//! Milvus connector: our own protocol subset compiled by tonic, and a client over it.

mod client;
pub mod data;
mod error;
mod gc;
pub mod version;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::secret::Secret;
use crate::throttle::Throttle;

pub use client::{
    CollectionInfo, FlushResult, Fresh, ImportTask, IndexInfo, InsertResult, MAX_QUERY_LIMIT,
    MilvusClient, POLL_MAX, PartitionInfo, QueryPage, SegmentInfo,
};
pub use data::Pk;
pub use error::MilvusError;
pub use gc::{pause_gc, probe_gc, resume_gc};

/// The generated protocol types, one module per proto package (siblings, as prost expects).
pub mod pb {
    #![allow(clippy::all, missing_docs, rustdoc::all)]
    pub mod common {
        tonic::include_proto!("milvus.proto.common");
    }
    pub mod schema {
        tonic::include_proto!("milvus.proto.schema");
    }
    pub mod msg {
        tonic::include_proto!("milvus.proto.msg");
    }
    pub mod milvus {
        tonic::include_proto!("milvus.proto.milvus");
    }
}

/// How to reach one Milvus instance. `name` is the plan's instance id, used in every message.
#[derive(Clone, Debug)]
pub struct MilvusConfig {
    pub name: String,
    /// `http://host:port` or `https://host:port` (TLS).
    pub uri: String,
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// An API key or `user:password`; sent instead of `user`/`password` when set.
    pub token: Option<Secret>,
    pub database: Option<String>,
    /// CA bundle (PEM) that signs the server's certificate; system roots when unset.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name to verify the server certificate against, when it differs from the uri's host.
    pub server_name: Option<String>,
    /// Limit for each single call (and for establishing the connection).
    pub timeout: Duration,
    /// How many times a call that failed transiently is repeated.
    pub retries: u32,
    /// What every call waits for; a rate-limit answer slows it down and the call is repeated
    /// (not counted against `retries`). Shared by every client of the instance.
    pub throttle: Arc<Throttle>,
    /// Once connected, how long a server that cannot be reached (a restart) is waited for.
    pub outage: Duration,
}

impl MilvusConfig {
    /// No credentials, default database, 30 s per call, 3 retries, no cap on requests.
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        let name = name.into();
        MilvusConfig {
            throttle: Throttle::new(format!("`{name}`"), "requests", None),
            name,
            uri: uri.into(),
            user: None,
            password: None,
            token: None,
            database: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            server_name: None,
            timeout: Duration::from_secs(30),
            retries: 3,
            outage: Duration::from_secs(300),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_debug_hides_password_and_token() {
        let mut cfg = MilvusConfig::new("milvus_a", "http://127.0.0.1:19530");
        cfg.user = Some("root".into());
        cfg.password = Some(Secret::new("hunter2"));
        cfg.token = Some(Secret::new("tok-abc"));
        let dbg = format!("{cfg:?}");
        assert!(dbg.contains("root") && dbg.contains("***"), "{dbg}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("tok-abc"),
            "{dbg}"
        );
        assert_eq!(cfg.retries, 3);
        assert_eq!(cfg.timeout, Duration::from_secs(30));
    }
}
