//! End-to-end migrations through the `planrun` binary, on two real Milvus 2.3.5 instances and S3.
//!
//! Each test works on its own collections, backup paths and state dir, made from the example
//! plans by changing only their `[vars]` and adding `settings.state_dir`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::scenario::Scenario;
use crate::support::{self, MILVUS_A, MILVUS_B, data, ok};

/// Where the JSON event `event` of step `step` is in `err`.
fn event_at(err: &str, event: &str, step: &str) -> usize {
    let needle = format!("{{\"event\":\"{event}\",\"step\":\"{step}\"");
    err.find(&needle)
        .unwrap_or_else(|| panic!("no {needle} in {err}"))
}

#[test]
fn migrate_backup_copy_restore_end_to_end() {
    let s = Scenario::new("migrate.toml");
    let out = support::run(&["apply", "--yes", "--progress", "json", s.plan_path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("Apply complete: 3 of 3 steps done"), "{err}");
    // Pipelined (the default): the copy and the restore start while the backup still runs.
    assert!(
        event_at(&err, "step_started", "restore") < event_at(&err, "step_finished", "backup"),
        "{err}"
    );
    s.assert_restored();

    // A second apply of the finished plan does nothing and says so.
    let again = support::run(&["apply", "--yes", s.plan_path()]);
    let text = support::text(&again);
    assert!(again.status.success(), "{text}");
    assert!(text.contains("nothing to do"), "{text}");

    // The same migration again into a new backup: the targets exist now. The default
    // (on_conflict = "fail") stops before doing anything; "drop" replaces them.
    let plan = std::fs::read_to_string(&s.plan).unwrap();
    let second = format!("{}_2", s.backup);
    let plan = plan.replace(
        &format!("backup = \"{}\"", s.backup),
        &format!("backup = \"{second}\""),
    );
    std::fs::write(&s.plan, &plan).unwrap();
    let out = support::run(&["apply", "--yes", s.plan_path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("already exists on `milvus_b`"), "{err}");
    // Not pipelined this time: each step waits for the whole step before it.
    let plan = plan
        .replace(
            "suffix = \"_bak\"",
            "suffix = \"_bak\"\non_conflict = \"drop\"",
        )
        .replace("[settings]\n", "[settings]\npipeline = false\n");
    std::fs::write(&s.plan, &plan).unwrap();
    let out = support::run(&["apply", "--yes", "--progress", "json", s.plan_path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("dropping existing"), "{err}");
    assert!(
        event_at(&err, "step_started", "restore") > event_at(&err, "step_finished", "copy"),
        "{err}"
    );
    s.assert_restored();
    for b in ["bucket-a", "bucket-b"] {
        data(&[
            "s3-clean",
            "--bucket",
            b,
            "--prefix",
            &format!("backup/{second}/"),
        ]);
    }
    s.cleanup();
}

#[test]
fn migrate_direct_into_bucket_b() {
    let s = Scenario::new("migrate-direct.toml");
    ok(support::run(&["apply", "--yes", s.plan_path()]));
    s.assert_restored();
    s.cleanup();
}

/// Everything of this scenario that `planrun plan` could touch, as text: its collections (with
/// partitions and flushed row counts), its backup paths in both buckets, and the state dir.
/// Other tests run at the same time, so the rest of the servers is not compared.
fn world(s: &Scenario) -> String {
    let mut w = String::new();
    for (uri, token) in [(MILVUS_A.uri(), "root:Milvus"), (MILVUS_B.uri(), "")] {
        let out = ok(data(&["dump-names", "--uri", &uri, "--token", token]));
        w += &out
            .lines()
            .filter(|l| l.starts_with(&s.coll))
            .map(|l| format!("{uri} {l}\n"))
            .collect::<String>();
    }
    assert!(
        w.contains(&s.coll),
        "the seeded collections are listed: {w}"
    );
    for b in ["bucket-a", "bucket-b"] {
        w += &ok(data(&["s3-list", "--bucket", b]))
            .lines()
            .filter(|l| l.contains(&s.backup))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
    }
    if s.state.exists() {
        for e in walk(&s.state) {
            let meta = std::fs::metadata(&e).unwrap();
            w += &format!(
                "{} {} {:?}\n",
                e.display(),
                meta.len(),
                meta.modified().unwrap()
            );
        }
    }
    w
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out.sort();
    out
}

#[test]
fn dry_run_changes_nothing_and_reports_counts() {
    let s = Scenario::new("migrate.toml");
    let before = world(&s);
    let out = support::run(&["plan", "--json", "--detailed-exitcode", s.plan_path()]);
    assert_eq!(out.status.code(), Some(2), "changes pending: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    let backup = &v["steps"][0];
    assert_eq!(backup["id"], "backup");
    assert_eq!(backup["counts"]["collections"], 2);
    assert!(
        backup["counts"]["segments"].as_u64().unwrap() >= 6,
        "{backup}"
    );
    assert!(
        backup["counts"]["objects"].as_u64().unwrap() > 0,
        "{backup}"
    );
    assert_eq!(v["summary"]["conflicts"], 0, "{v}");
    let human = ok(support::run(&["plan", s.plan_path()]));
    assert!(human.contains(&format!("{}_bak", s.coll)), "{human}");
    assert_eq!(before, world(&s), "planrun plan changed something");
    s.cleanup();
}

#[test]
fn resume_after_kill_at_many_points_loses_nothing_and_duplicates_nothing() {
    let s = Scenario::new("migrate.toml");
    // Kill after the n-th checkpoint write, for growing n, until a run completes; then once more
    // right after Milvus accepted an import but before planrun recorded it.
    let mut kills = 0;
    let mut finished = false;
    for (point, n) in [
        ("checkpoint", 3),
        ("import-started", 1),
        ("checkpoint", 12),
        ("object-copied", 40),
        ("checkpoint", 25),
        ("import-started", 3),
        ("checkpoint", 40),
    ] {
        let out = support::planrun()
            .args(["apply", "--yes", s.plan_path()])
            .env("PLANRUN_CRASH", format!("{point}:{n}"))
            .output()
            .unwrap();
        if out.status.success() {
            finished = true;
            break;
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("PLANRUN_CRASH"),
            "died for another reason: {err}"
        );
        kills += 1;
    }
    if !finished {
        ok(support::run(&["apply", "--yes", s.plan_path()]));
    }
    assert!(kills >= 3, "the kill schedule hit only {kills} times");
    s.assert_restored();
    s.cleanup();
}

#[test]
fn restore_stages_a_backup_kept_outside_the_target_bucket() {
    // The backup stays in bucket A; Milvus B imports only from bucket B, so planrun stages it.
    let s = Scenario::edited("migrate-direct.toml", |t| {
        t.replace("bucket_b:backup/", "bucket_a:backup/")
    });
    let out = support::run(&["apply", "--yes", s.plan_path()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stage the backup into `bucket_b`"), "{err}");
    s.assert_restored();
    let left = ok(data(&["s3-list", "--bucket", "bucket-b"]));
    assert!(
        !left.lines().any(|l| l.contains("planrun-staging")),
        "staged files were not removed"
    );
    s.cleanup();
}
