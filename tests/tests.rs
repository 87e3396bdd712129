//! All integration tests compile into this one binary.

mod milvus;
mod support;
