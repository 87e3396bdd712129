//! Real collections, many at once, through the `planrun` binary on real servers: one failing
//! collection does not sink the others and a resume redoes only it; damaged backups are refused
//! before anything is created; load state is mirrored and never changed on the source.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{self, BackupRestore, MILVUS_A, MILVUS_B, S3, data, migrate, ok, text};

/// A plan file of `steps` with a state dir of its own.
fn plan(dir: &Path, name: &str, steps: &str) -> PathBuf {
    for s in [&S3, &MILVUS_A, &MILVUS_B] {
        s.require();
    }
    let text = format!(
        "{}\n[settings]\nstate_dir = \"{}\"\n\n{steps}",
        support::PLAN_HEAD,
        dir.join(format!("{name}.state")).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn state(uri: &str, token: &str, coll: &str) -> Value {
    serde_json::from_str(ok(data(&["state", "--uri", uri, "--token", token, coll])).trim()).unwrap()
}

fn same_rows(coll: &str, target: &str) {
    let out = data(&[
        "compare",
        "--collection",
        coll,
        "--target-collection",
        target,
    ]);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`{target}` differs from `{coll}`: {report}"
    );
    let v: Value = serde_json::from_str(report.trim()).unwrap();
    assert_eq!(v["source_rows"], v["target_rows"], "{v}");
    assert!(v["source_rows"].as_u64().unwrap() > 0, "{v}");
}

fn drop_b(coll: &str) {
    data(&["drop", "--uri", &MILVUS_B.uri(), "--token", "", coll]);
}

fn clean_backup(bucket: &str, backup: &str) {
    data(&[
        "s3-clean",
        "--bucket",
        bucket,
        "--prefix",
        &format!("backup/{backup}/"),
    ]);
}

/// One binlog of the collection in Milvus A's bucket (its first field's first log).
fn one_binlog(coll: &str) -> String {
    let id = state(&MILVUS_A.uri(), "root:Milvus", coll)["id"]
        .as_i64()
        .unwrap();
    let prefix = format!("files/insert_log/{id}/");
    let listing = ok(data(&["s3-list", "--bucket", "bucket-a"]));
    listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|k| {
            k.starts_with(&prefix)
                && k.split('/').count() == 7
                && k.split('/').nth(5) == Some("101")
        })
        .unwrap_or_else(|| panic!("no binlog of field 101 under {prefix}"))
        .to_string()
}

#[test]
fn one_failing_collection_does_not_stop_the_others_and_a_resume_redoes_only_it() {
    let prefix = support::unique("iso");
    let colls: Vec<String> = (1..=3).map(|i| format!("{prefix}_{i}")).collect();
    for c in &colls {
        support::seed_small(&MILVUS_A, "root:Milvus", c, &[]);
    }
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "many",
        &BackupRestore::of(&[&format!("{prefix}_*")], &bk).to_string(),
    );
    let p = p.to_str().unwrap();
    // A binlog of the second collection goes missing after the dry run, before apply.
    let plan_out = support::run(&["plan", p]);
    assert!(plan_out.status.success(), "{}", text(&plan_out));
    let key = one_binlog(&colls[1]);
    let saved = std::process::Command::new(support::python())
        .arg(support::root().join("scripts/milvus_data.py"))
        .args(["s3-get", "--bucket", "bucket-a", "--key", &key])
        .output()
        .unwrap()
        .stdout;
    assert!(!saved.is_empty());
    ok(data(&[
        "s3-clean", "--bucket", "bucket-a", "--prefix", &key,
    ]));

    let out = support::run(&["apply", "--yes", "--progress", "plain", p]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "the run fails: {t}");
    assert!(t.contains("Collections:"), "a per-collection table: {t}");
    assert!(
        t.contains(&format!("default.{} ", colls[1])) && t.contains("has no binlog"),
        "{t}"
    );
    for c in [&colls[0], &colls[2]] {
        same_rows(c, &format!("{c}_bak"));
    }
    let failed_target = format!("{}_bak", colls[1]);
    assert!(
        !support::exists_on(&MILVUS_B, "", &failed_target),
        "nothing of the failed collection was created"
    );
    // `status` lists collections × steps: restores on their source's line, the failure with why.
    let status = text(&support::run(&["status", "--plan", p]));
    let line = |c: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("default.{c} ")))
            .unwrap_or_else(|| panic!("no line for {c}: {status}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(status.contains("collection"), "{status}");
    assert_eq!(
        line(&colls[0]),
        format!("default.{0} done done → default.{0}_bak", colls[0]),
        "{status}"
    );
    assert_eq!(
        line(&colls[1]),
        format!("default.{} FAILED -", colls[1]),
        "{status}"
    );
    assert!(
        status.contains(&format!("backup default.{}: ", colls[1]))
            && status.contains("has no binlog"),
        "{status}"
    );

    // The object is back: the next apply redoes only the failed collection.
    ok(support::data_with_input(
        &["s3-put", "--bucket", "bucket-a", "--key", &key],
        &saved,
    ));
    let out = support::run(&["apply", "--yes", "--progress", "plain", p]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("resuming"), "{t}");
    for c in [&colls[0], &colls[2]] {
        assert!(
            !t.contains(&format!("`{c}_bak` import")),
            "`{c}` is not restored twice: {t}"
        );
    }
    for c in &colls {
        same_rows(c, &format!("{c}_bak"));
    }
    let status = text(&support::run(&["status", "--plan", p]));
    assert!(
        !status.contains("FAILED"),
        "the redone collection is done now: {status}"
    );
    for c in &colls {
        drop_b(&format!("{c}_bak"));
        data(&["drop", c]);
    }
    clean_backup("bucket-b", &bk);
}

#[test]
fn a_damaged_backup_is_refused_before_anything_is_created() {
    let prefix = support::unique("dmg");
    let colls = [format!("{prefix}_ok"), format!("{prefix}_bad")];
    for c in &colls {
        support::seed_small(&MILVUS_A, "root:Milvus", c, &[]);
    }
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let backup = plan(
        dir.path(),
        "backup",
        &format!(
            r#"
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{prefix}_*"]
to = "bucket_b:backup/{bk}"
"#
        ),
    );
    let out = support::run(&["apply", "--yes", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Remove one binlog of `_bad` from the backup (what a lost object looks like).
    let meta = std::process::Command::new(support::python())
        .arg(support::root().join("scripts/milvus_data.py"))
        .args([
            "s3-get",
            "--bucket",
            "bucket-b",
            "--key",
            &format!("backup/{bk}/meta/full_meta.json"),
        ])
        .output()
        .unwrap()
        .stdout;
    let meta: Value = serde_json::from_slice(&meta).unwrap();
    let bad = meta["collection_backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["collection_name"] == colls[1].as_str())
        .unwrap();
    let id = bad["collection_id"].as_i64().unwrap();
    let listing = ok(data(&["s3-list", "--bucket", "bucket-b"]));
    let victim = listing
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|k| k.starts_with(&format!("backup/{bk}/binlogs/insert_log/{id}/")))
        .unwrap()
        .to_string();
    ok(data(&[
        "s3-clean", "--bucket", "bucket-b", "--prefix", &victim,
    ]));

    let restore = plan(
        dir.path(),
        "restore",
        &format!(
            r#"
[steps.restore]
type = "restore"
instance = "milvus_b"
from = "bucket_b:backup/{bk}"
suffix = "_bak"

[steps.copy]
type = "copy"
from = "bucket_b:backup/{bk}"
to = "bucket_a:backup/{bk}_copy"
"#
        ),
    );
    let restore = restore.to_str().unwrap();
    let shown = support::run(&["plan", restore]);
    let t = text(&shown);
    assert_eq!(
        shown.status.code(),
        Some(1),
        "conflicts make `plan` fail: {t}"
    );
    assert!(t.contains("is missing from the backup"), "{t}");
    assert!(
        t.contains("does not match its meta, so it is not copied"),
        "{t}"
    );
    let out = support::run(&["apply", "--yes", restore]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    for c in &colls {
        let target = format!("{c}_bak");
        assert!(
            !support::exists_on(&MILVUS_B, "", &target),
            "nothing was created: `{target}` exists"
        );
        data(&["drop", c]);
    }
    clean_backup("bucket-b", &bk);
}

#[test]
fn load_state_is_mirrored_and_the_source_is_left_as_it_was() {
    let prefix = support::unique("lst");
    let (unindexed, released) = (format!("{prefix}_noidx"), format!("{prefix}_rel"));
    support::seed_small(&MILVUS_A, "root:Milvus", &unindexed, &["--no-index"]);
    support::seed_small(&MILVUS_A, "root:Milvus", &released, &[]);
    ok(data(&["release", &released]));
    let (bk, bk_rows) = (support::unique("bk"), support::unique("bk"));
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "mirror",
        &format!(
            r#"{}
[steps.rows_backup]
type = "backup"
instance = "milvus_a"
needs = ["restore"]  # not while the binlog backup records the source's load state
mode = "rows"
collections = ["{released}"]
to = "bucket_b:backup/{bk_rows}"

[steps.rows_restore]
type = "restore"
instance = "milvus_b"
from = "bucket_b:backup/{bk_rows}"
suffix = "_rows"
"#,
            BackupRestore::of(&[&unindexed, &released], &bk)
        ),
    );
    let p = p.to_str().unwrap();
    let shown = support::run(&["plan", p]);
    let t = text(&shown);
    assert!(shown.status.success(), "{t}");
    assert!(t.contains("left released (as its source)"), "{t}");
    let out = support::run(&["apply", "--yes", "--progress", "plain", p]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("200 rows checked against the backup"), "{t}");
    // The rows restore of the released source cannot count by query: flushed segments instead.
    assert!(
        t.contains("200 rows checked against flushed segments"),
        "{t}"
    );
    for (target, source) in [
        (format!("{unindexed}_bak"), &unindexed),
        (format!("{released}_bak"), &released),
        (format!("{released}_rows"), &released),
    ] {
        let s = state(&MILVUS_B.uri(), "", &target);
        assert_eq!(
            s["loaded"], false,
            "`{target}` mirrors its released source: {s}"
        );
        assert_eq!(s["flushed_rows"].as_i64().unwrap_or(-1), 200, "{s}");
        let src = state(&MILVUS_A.uri(), "root:Milvus", source);
        assert_eq!(src["loaded"], false, "the source stays released: {src}");
        drop_b(&target);
    }
    data(&["drop", &unindexed, &released]);
    clean_backup("bucket-b", &bk);
    clean_backup("bucket-b", &bk_rows);
}

#[test]
fn a_rename_typo_and_dropping_the_source_are_refused() {
    let coll = support::unique("nm");
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "names",
        &format!(
            r#"
[steps.backup]
type = "backup"
instance = "milvus_a"
collections = ["{coll}"]
to = "bucket_a:backup/{bk}"

[steps.typo]
type = "restore"
instance = "milvus_b"
from = "bucket_a:backup/{bk}"
rename = {{ "{coll}x" = "renamed" }}

[steps.back_into_source]
type = "restore"
instance = "milvus_a"
from = "bucket_a:backup/{bk}"
on_conflict = "drop"
"#
        ),
    );
    let shown = support::run(&["plan", p.to_str().unwrap()]);
    let t = text(&shown);
    assert_eq!(shown.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("names `{coll}x`, which the backup")),
        "{t}"
    );
    assert!(
        t.contains("the collection its backup was taken from"),
        "{t}"
    );
    let out = support::run(&["apply", "--yes", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let src = state(&MILVUS_A.uri(), "root:Milvus", &coll);
    assert_eq!(
        src["flushed_rows"].as_i64().unwrap_or(-1),
        200,
        "the source is untouched: {src}"
    );
    data(&["drop", &coll]);
    clean_backup("bucket-a", &bk);
}

/// Renames of several collections, restored each as the backup finishes it: a collection
/// arriving alone is not taken for a backup without the others the map names.
#[test]
fn several_collections_renamed_are_restored_as_each_arrives() {
    let prefix = support::unique("rn");
    let colls: Vec<String> = (1..=2).map(|i| format!("{prefix}_{i}")).collect();
    for c in &colls {
        support::seed_small(&MILVUS_A, "root:Milvus", c, &[]);
    }
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let renames: Vec<String> = colls
        .iter()
        .map(|c| format!("\"{c}\" = \"{c}_moved\""))
        .collect();
    let steps = BackupRestore::of(&[format!("{prefix}_*")], &bk)
        .suffix(None)
        .restore_with(&format!("rename = {{ {} }}\n", renames.join(", ")));
    let p = plan(dir.path(), "renames", &steps.to_string());
    let out = support::run(&["apply", "--yes", p.to_str().unwrap()]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("does not hold"), "{t}");
    for c in &colls {
        let s = state(&MILVUS_B.uri(), "", &format!("{c}_moved"));
        assert_eq!(s["flushed_rows"].as_i64().unwrap_or(-1), 200, "{c}: {s}");
        drop_b(&format!("{c}_moved"));
        data(&["drop", c]);
    }
    clean_backup("bucket-b", &bk);
}

#[test]
fn aliases_are_carried_renamed_like_their_collections() {
    let coll = support::unique("al");
    support::seed_small(&MILVUS_A, "root:Milvus", &coll, &[]);
    let alias = format!("{coll}_app");
    ok(data(&["alias", &coll, &alias]));
    // An alias on B that already points elsewhere is a conflict, seen before anything runs.
    let other = format!("{coll}_other");
    support::seed_small(&MILVUS_B, "", &other, &["--rows", "10"]);
    ok(data(&[
        "alias",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        &other,
        &format!("{alias}_bak"),
    ]));
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "aliases",
        &support::backup_and_restore(&coll, &bk),
    );
    let p = p.to_str().unwrap();
    let shown = support::run(&["plan", p]);
    let t = text(&shown);
    assert_eq!(shown.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!(
            "alias `{alias}_bak` for `{coll}_bak` already points at `{other}`"
        )),
        "{t}"
    );
    ok(data(&[
        "drop-alias",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        &format!("{alias}_bak"),
    ]));
    drop_b(&other);
    let out = support::run(&["apply", "--yes", p]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let s = state(&MILVUS_B.uri(), "", &format!("{coll}_bak"));
    assert!(
        s["aliases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &format!("{alias}_bak")),
        "{s}"
    );
    data(&[
        "drop-alias",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        &format!("{alias}_bak"),
    ]);
    drop_b(&format!("{coll}_bak"));
    data(&["drop-alias", &alias]);
    data(&["drop", &coll]);
    clean_backup("bucket-b", &bk);
}

/// A rows backup killed (like `kill -9`) twice while it reads, then resumed: every source ends
/// released as it was before the run (planrun loaded them to read them), the copies are left
/// released like their sources, and the resumed preview says so instead of echoing the loads
/// the killed runs left behind. Six collections, as in the report, read one at a time and
/// restored after the backup, so that each kill lands at a known record (below).
#[test]
fn a_rows_backup_killed_while_reading_leaves_every_source_released_as_it_was() {
    let prefix = support::unique("kill");
    let colls: Vec<String> = (1..=6).map(|i| format!("{prefix}_{i}")).collect();
    for c in &colls {
        support::seed_small(&MILVUS_A, "root:Milvus", c, &[]);
        ok(data(&["release", c]));
    }
    let loaded = |c: &str| state(&MILVUS_A.uri(), "root:Milvus", c)["loaded"] == true;
    let bk = support::unique("bk");
    let dir = tempfile::tempdir().unwrap();
    let p = plan(
        dir.path(),
        "killed",
        // The first lines still belong to `[settings]`.
        &format!(
            "collections = 1\npipeline = false\nreaders = 1\n{}\n[steps.verify]\n\
             type = \"verify\"\nrestore = \"restore\"\n",
            BackupRestore::of(&[&format!("{prefix}_*")], &bk).rows()
        ),
    );
    let p = p.to_str().unwrap();
    // Each collection is one file, read one collection at a time. Killed once the first file
    // is written: the first collection is loaded and read. Resumed (the first read again) and
    // killed at the third file: the first two are read and released, the third is loaded and
    // read; a resume must neither load the first two again nor forget that the third was
    // released before the run.
    for at in ["rows-file-written:1", "rows-file-written:3"] {
        let out = support::planrun()
            .args(["apply", "--yes", "--progress", "plain", p])
            .env("PLANRUN_CRASH", at)
            .output()
            .unwrap();
        let t = text(&out);
        assert!(!out.status.success() && t.contains("PLANRUN_CRASH"), "{t}");
    }
    let held: Vec<bool> = colls.iter().map(|c| loaded(c)).collect();
    assert_eq!(
        held,
        [false, false, true, false, false, false],
        "the kills landed where said above"
    );
    let shown = support::run(&["plan", p]);
    let t = text(&shown);
    assert!(shown.status.success(), "{t}");
    for c in &colls {
        let line = t
            .lines()
            .find(|l| l.contains(&format!("default.{c}_bak from")))
            .unwrap_or_else(|| panic!("no restore line for `{c}`: {t}"));
        assert!(
            line.contains("left released (as its source)") && !line.contains(", load"),
            "the resumed preview loads no copy of a released source: {line}\n{t}"
        );
    }
    let out = support::run(&["apply", "--yes", "--progress", "plain", p]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert_eq!(t.matches("equals").count(), colls.len(), "verified: {t}");
    // Verify loaded both sides to read them, and released them again too.
    for c in &colls {
        assert!(!loaded(c), "`{c}` is released again, as before the run");
        let target = format!("{c}_bak");
        let s = state(&MILVUS_B.uri(), "", &target);
        assert_eq!(
            s["loaded"], false,
            "`{target}` is released like its source: {s}"
        );
    }
    // Compared again apart from planrun, which needs both sides loaded to query them.
    for c in &colls {
        let target = format!("{c}_bak");
        migrate::pymilvus(&migrate::milvus_a(), &format!("c.load_collection({c:?})"));
        migrate::pymilvus(
            &migrate::milvus_b(),
            &format!("c.load_collection({target:?})"),
        );
        same_rows(c, &target);
        drop_b(&target);
    }
    let names: Vec<&str> = colls.iter().map(String::as_str).collect();
    data(&[&["drop"], names.as_slice()].concat());
    clean_backup("bucket-b", &bk);
}
