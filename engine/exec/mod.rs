//! Runs a compiled plan: the scheduler (`run`), the DAG walk of the dry run (`preview`), and the
//! events both emit.

pub mod events;
pub mod preview;
pub mod run;
