//! Crash injection for the resume tests: `PLANRUN_CRASH=<point>:<n>` kills the process (like
//! `kill -9`: no destructors, no flushes) the n-th time execution passes `<point>`.
//!
//! Points: `checkpoint` (right after a task state is written), `import-started` (after Milvus
//! accepted an import, before its task id is recorded), `object-copied` (after an object copy,
//! before it is recorded). Unset in normal use, where every call is one relaxed atomic load.
//! `PLANRUN_PAUSE=<point>:<ms>` instead waits that long at each pass of a point, for the tests
//! that show one step working while another still runs.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

struct Crash {
    point: String,
    at: u64,
    seen: AtomicU64,
}

fn config() -> Option<&'static Crash> {
    static CONFIG: OnceLock<Option<Crash>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let v = std::env::var("PLANRUN_CRASH").ok()?;
            let (point, at) = v.rsplit_once(':')?;
            Some(Crash {
                point: point.to_string(),
                at: at.parse().ok()?,
                seen: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Marks a crash point; aborts the process when `PLANRUN_CRASH` names it and its count is reached.
pub fn point(name: &str) {
    if let Some(c) = config()
        && c.point == name
        && c.seen.fetch_add(1, Ordering::Relaxed) + 1 == c.at
    {
        eprintln!(
            "planrun: PLANRUN_CRASH={name}:{}: killing the process",
            c.at
        );
        // SIGKILL ourselves: the closest thing to a power cut that a test can arrange.
        let _ = std::process::Command::new("kill")
            .args(["-9", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}

/// Marks a point where `PLANRUN_PAUSE` may slow the run down (see the module docs).
pub async fn pause(name: &str) {
    static PAUSE: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        let v = std::env::var("PLANRUN_PAUSE").ok()?;
        let (point, ms) = v.rsplit_once(':')?;
        Some((point.to_string(), ms.parse().ok()?))
    });
    if let Some((point, ms)) = pause
        && point == name
    {
        tokio::time::sleep(std::time::Duration::from_millis(*ms)).await;
    }
}
