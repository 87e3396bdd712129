//! Runs a compiled plan: the scheduler (`run`) and the DAG walk of the dry run (`preview`); both
//! emit `crate::events`.

pub mod preview;
pub mod run;
pub mod schedule;
