//! All integration tests compile into this one binary.

mod storage;
mod support;
