//! Runs a compiled plan: schedules steps along the DAG, checkpoints every task, emits events.

pub mod events;
pub mod preview;
pub mod report;
pub mod run;
