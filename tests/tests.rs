//! All integration tests compile into this one binary.

mod cli;
mod plan_load;
mod storage;
mod support;
