//! The step graph's public path: it lives in [`crate::plan::dag`], beside the plan it is built from.

pub use crate::plan::dag::{Cycle, Dag, Edge};
