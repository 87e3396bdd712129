//! All integration tests compile into this one binary.

mod cli;
mod milvus;
mod plan_load;
mod storage;
mod support;
