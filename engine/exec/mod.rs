//! Runs a compiled plan: the scheduler (`run`) and the DAG walk of the dry run (`preview`); both
//! emit `crate::events`. `saved` keeps a reviewed preview and tells what changed since.

pub mod preview;
pub mod run;
pub mod saved;
pub mod schedule;
