//! planrun: declarative migration plans for Milvus, compiled into a DAG, previewed, run and resumed.

pub mod checkpoint;
pub mod codec;
pub mod events;
pub mod exec;
pub mod fault;
pub mod format;
pub mod milvus;
pub mod net;
pub mod plan;
pub mod schema;
pub mod secret;
pub mod steps;
pub mod storage;
pub mod text;
pub mod throttle;
