//! The benchmark suite still runs: `bench/run.sh --smoke` on tiny sizes prints its result table
//! (benchmark 7: 3 collections x 200 rows, each restored row count checked; benchmark 8: every
//! side of a rows migration by import, once).
//! No timing is asserted; the numbers of a smoke run mean nothing.

use std::process::Command;

use crate::support;

#[test]
fn bench_smoke_run_prints_a_result_table() {
    for service in [
        support::S3,
        support::MILVUS_A,
        support::MILVUS_B,
        support::LITE,
    ] {
        service.require();
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/bench/run.sh"))
        .arg("--smoke")
        // The binary cargo built for these tests: no release build inside a test.
        .env("PLANRUN", env!("CARGO_BIN_EXE_planrun"))
        .output()
        .expect("bash runs bench/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/run.sh --smoke failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("## planrun benchmark results"),
        "no result table:\n{stdout}\n{stderr}"
    );
    for row in [
        "1 server-side copy, 40 objects",
        "2 streaming copy, 40 objects",
        "2 one 16.0 MiB object, streamed",
        "5 kill -9 at half, resume: total time",
        "6 `validate` of 200 collections / 40 steps",
        "3 binlog migration, 3,000 rows x 8 dims, A -> B",
        "3 phases, planrun",
        "4 rows mode 2.3.5 -> 2.3.5, 2,000 rows",
        "4 rows mode 2.3.5 -> Lite, 2,000 rows",
        "7 3 collections x 200 rows, A -> B, seed's 3 steps",
        "7 the same, planrun with `pipeline = false`",
        "8 3,000 rows x 8 dims, A -> B: planrun rows, import",
        "8 3,000 rows x 8 dims, A -> B: planrun rows, method = insert",
        "8 3,000 rows x 8 dims, A -> B: read alone, 4 iterators",
        "8 vectors: script time / rows import time",
        "8 2,000 rows x 8 dims + JSON, INT64 array, dynamic field, A -> B: planrun rows, import",
        "8 mixed: rows import time / best read alone",
    ] {
        assert!(stdout.contains(row), "no `{row}` row:\n{stdout}");
    }
    // Benchmark 7 counts (count(*)) every restored collection of each side against its source.
    let checked = stdout
        .lines()
        .find(|l| l.starts_with("| 7 restored rows checked"))
        .unwrap_or_else(|| panic!("no benchmark 7 row check:\n{stdout}"));
    for side in [
        "| 3 / 3 collections, 600 rows ",
        "| script 3 / 3 collections, 600 rows ",
        "| pipeline = false: 3 / 3 collections, 600 rows ",
    ] {
        assert!(checked.contains(side), "no `{side}` in `{checked}`");
    }
}
