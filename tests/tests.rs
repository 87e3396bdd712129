//! All integration tests compile into this one binary.

mod apply_local;
mod bench_smoke;
mod cli;
mod e2e;
mod errors;
mod hostile;
mod isolation;
mod lite25;
mod milvus;
mod milvus_connect;
mod modern;
mod plan_load;
mod preview_apply;
mod restart;
mod reviewed;
mod rows;
mod rows_by_import;
mod rows_import;
mod secrets;
mod stall;
mod state_dir;
mod storage;
mod storage_copy;
mod support;
mod throttle;
mod verify;
