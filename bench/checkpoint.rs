//! Checkpoint cost per task (benchmark 6): a timed loop over the real store, printed as JSON.
//!
//! Usage: `checkpoint [TASKS]` (default 100,000). Measures what a copy step pays per object
//! (a lazy write, one flush at the end), a durable write (flushed each time, as backup and restore
//! record their intents), and the lookup a resumed run does per task. A plain loop rather than
//! criterion: the question is "is this small next to an S3 request", not a 1% regression.

use std::time::Instant;

use planrun::checkpoint::{Store, TaskState};
use serde_json::json;

/// A task key and result shaped like the copy step's (`copy/obj/<binlog path>`, `"server_side"`).
fn key(i: usize) -> String {
    format!(
        "copy/obj/insert_log/4506/4507/{}/{}/{}",
        4600 + i / 20,
        100 + i % 20,
        470_000 + i
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("TASKS is a number"))
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Store::open(dir.path()).expect("a fresh store opens");
    let run = store.tasks("bench").expect("a task tree");
    let done = TaskState::Done(json!("server_side"));

    let t = Instant::now();
    for i in 0..tasks {
        run.set_lazy(&key(i), &done).expect("lazy write");
    }
    run.sync().await.expect("flush");
    let lazy = t.elapsed();

    let t = Instant::now();
    for i in 0..tasks {
        let v: Option<String> = run.done(&key(i)).expect("lookup");
        assert!(v.is_some(), "task {i} was recorded");
    }
    let lookup = t.elapsed();

    // Durable writes wait for the disk each time: fewer of them, or this would take minutes.
    let durable_n = (tasks / 100).max(10);
    let durable_run = store.tasks("bench-durable").expect("a task tree");
    let t = Instant::now();
    for i in 0..durable_n {
        durable_run
            .set(&key(i), &done)
            .await
            .expect("durable write");
    }
    let durable = t.elapsed();

    let per = |d: std::time::Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "{}",
        json!({
            "tasks": tasks,
            "lazy_us_per_task": per(lazy, tasks),
            "lookup_us_per_task": per(lookup, tasks),
            "durable_tasks": durable_n,
            "durable_us_per_task": per(durable, durable_n),
        })
    );
}
