//! All integration tests compile into this one binary.

mod plan_load;
mod support;
