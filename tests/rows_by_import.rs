//! Rows restores by Milvus's own bulk import: a rows migration 2.3.5 → 2.3.5 whose files are
//! staged into the target's bucket and imported, killed (like kill -9) once an import was
//! accepted, resumes without importing anything twice and matches row by row.

use crate::support::migrate::dry_run;
use crate::support::{self, MILVUS_A, MILVUS_B, S3, data, ok, unique};

#[test]
fn a_rows_migration_through_import_resumes_after_a_kill_and_matches_row_by_row() {
    for s in [&S3, &MILVUS_A, &MILVUS_B] {
        s.require();
    }
    let dir = tempfile::tempdir().unwrap();
    let coll = unique("rowimp");
    let bk = unique("rowimp_bk");
    support::seed_small(
        &MILVUS_A,
        "root:Milvus",
        &coll,
        &["--rows", "6000", "--partitions", "2", "--segments", "2"],
    );
    // The backup in bucket A: the restore stages each file into B's own bucket to import it.
    let steps = support::BackupRestore::of(&[&coll], &bk)
        .at(&format!("bucket_a:backup/{bk}"))
        .rows();
    let plan = format!(
        "{head}\n[settings]\nstate_dir = \"{state}\"\n{steps}\n[steps.verify]\ntype = \"verify\"\n\
         restore = \"restore\"\n",
        head = support::PLAN_HEAD,
        state = dir.path().join("state").display(),
    );
    let path = dir.path().join("plan.toml");
    std::fs::write(&path, &plan).unwrap();

    let (code, preview) = dry_run(&path);
    let by_import = format!(
        "`{coll}_bak`: the rows go in by `milvus_b`'s own bulk import of the backup's Parquet \
         files (staged into `bucket_b`, its own bucket)"
    );
    assert!(code == 0 && preview.contains(&by_import), "{preview}");

    let (good, first) = support::migrate::apply(&path, Some("import-started:2"));
    assert!(!good && first.contains("PLANRUN_CRASH"), "{first}");
    let (good, out) = support::migrate::apply(&path, None);

    let compared = data(&[
        "compare",
        "--uri",
        &MILVUS_A.uri(),
        "--token",
        "root:Milvus",
        "--collection",
        &coll,
        "--target-uri",
        &MILVUS_B.uri(),
        "--target-collection",
        &format!("{coll}_bak"),
    ]);
    data(&[
        "drop",
        "--uri",
        &MILVUS_A.uri(),
        "--token",
        "root:Milvus",
        &coll,
    ]);
    data(&[
        "s3-clean",
        "--bucket",
        "bucket-a",
        "--prefix",
        &format!("backup/{bk}/"),
    ]);
    support::forget_copy(&coll, &bk);

    assert!(good, "{first}\n{out}");
    assert!(
        out.contains("rows imported from Parquet, ")
            && out.contains("rows verified by count and key digest in each partition"),
        "{out}"
    );
    assert!(out.contains("equals"), "the plan's verify step: {out}");
    ok(compared);
}
