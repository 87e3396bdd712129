//! `mode = "rows"` migrations between Milvus 2.3.5 and Milvus Lite, compared row by row, and
//! resumed after crashes in the middle of the backup and of the restore (the helpers are in
//! `support::migrate`).

use crate::support::migrate::{
    Migration, Server, apply, has_collection, lite, milvus_a, milvus_b, pymilvus, rows_plan,
};
use crate::support::{self, data, ok};

/// Seeds `coll` on `s` (scripts/milvus_data.py `seed`) with these options.
fn seed(s: &Server, coll: &str, options: &[&str]) {
    let mut args = vec![
        "seed",
        "--uri",
        &s.uri,
        "--token",
        s.token,
        "--collection",
        coll,
    ];
    args.extend_from_slice(options);
    ok(data(&args));
}

/// Binary vectors, int8/int16/float, arrays of int64 and varchar, nulls-free, on a collection
/// without a dynamic field; 2.3.5 allows one vector field per collection.
fn seed_types(s: &Server, coll: &str, binary: bool) {
    let (vec_field, index, value) = if binary {
        (
            "schema.add_field(\"v\", DataType.BINARY_VECTOR, dim=16)",
            "idx.add_index(\"v\", index_type=\"BIN_FLAT\", metric_type=\"HAMMING\")",
            "bytes([r.randrange(256), r.randrange(256)])",
        )
    } else {
        (
            "schema.add_field(\"v\", DataType.FLOAT_VECTOR, dim=4)",
            "idx.add_index(\"v\", index_type=\"FLAT\", metric_type=\"L2\")",
            "[r.random() for _ in range(4)]",
        )
    };
    pymilvus(
        s,
        &format!(
            r#"
schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
schema.add_field("id", DataType.INT64, is_primary=True)
{vec_field}
schema.add_field("i8", DataType.INT8)
schema.add_field("i16", DataType.INT16)
schema.add_field("f", DataType.FLOAT)
schema.add_field("ai", DataType.ARRAY, element_type=DataType.INT64, max_capacity=4)
# Milvus Lite forgets `max_length` of a varchar array: verify notes it, it is no difference.
schema.add_field("av", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=3, max_length=10)
idx = c.prepare_index_params()
{index}
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
r = random.Random(3)
rows = [dict(id=i, v={value}, i8=r.randint(-128, 127),
             i16=r.randint(-30000, 30000), f=r.random(), ai=[r.randint(-9, 9) for _ in range(i % 5)],
             av=["x" * (i % 4)] * (i % 4)) for i in range(300)]
c.insert({coll:?}, rows)
c.load_collection({coll:?})
print(len(rows))
"#
        ),
    );
}

/// Milvus Lite has no binary vectors: those go 2.3.5 → 2.3.5, the rest also 2.3.5 → Lite.
#[test]
fn rows_mode_keeps_binary_vectors_small_ints_floats_and_arrays() {
    for (binary, to) in [(false, lite()), (true, milvus_b())] {
        let coll = support::unique("rowty");
        let from = milvus_a();
        seed_types(&from, &coll, binary);
        seed_types(&from, &format!("{coll}_str"), binary);
        let m = Migration::seeded(from, to, coll);
        let (good, out) = apply(&m.plan, None);
        assert!(good, "{out}");
        assert!(out.contains("equals"), "{out}");
        if !binary {
            assert!(
                out.contains("max_length=10 not reported by the target"),
                "{out}"
            );
        }
        m.assert_equal();
        m.cleanup();
    }
}

#[test]
fn rows_mode_migrates_milvus_2_3_to_lite() {
    let m = Migration::new(milvus_a(), lite());
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("Parquet"), "{out}");
    assert!(out.contains("equals"), "{out}");
    assert!(m.parquet_files() >= 4, "one file per partition at least");
    m.assert_equal();
    m.cleanup();
}

#[test]
fn rows_mode_migrates_lite_to_milvus_2_3() {
    let m = Migration::new(lite(), milvus_b());
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    m.assert_equal();
    m.cleanup();
}

#[test]
fn rows_mode_resumes_after_crashes_in_backup_and_restore_without_duplicates() {
    let m = Migration::new(milvus_a(), milvus_b());
    let (good, out) = apply(&m.plan, Some("rows-file-written:2"));
    assert!(!good && out.contains("PLANRUN_CRASH"), "{out}");
    let (good, out) = apply(&m.plan, Some("rows-inserted:3"));
    assert!(!good && out.contains("PLANRUN_CRASH"), "{out}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    // The verify step of the plan proves counts and content; pymilvus compares again.
    assert!(out.contains("equals"), "{out}");
    m.assert_equal();
    m.cleanup();
}

/// Pipelined rows mode: the restore inserts each Parquet file as the backup writes it. The
/// backup waits 1.5 s after each file (`PLANRUN_PAUSE`), so the restore's first insert
/// (progress) comes before the backup's end; the rows still match one by one.
#[test]
fn a_rows_restore_inserts_each_file_while_the_backup_still_reads() {
    let from = milvus_a();
    let coll = support::unique("rowpipe");
    // 20,000 rows in one partition: several files (a page is bounded in bytes).
    seed(
        &from,
        &coll,
        &[
            "--rows",
            "20000",
            "--partitions",
            "1",
            "--delete-every",
            "0",
        ],
    );
    let m = Migration::seeded(from, milvus_b(), coll.clone());
    let dir = m.dir.path();
    let plan = rows_plan(dir, &m.from, &m.to, std::slice::from_ref(&coll), &coll, "");
    // Every page a file of its own.
    settings(&plan, "file_bytes = 1");
    let out = support::planrun()
        .args([
            "apply",
            "--yes",
            "--progress",
            "json",
            plan.to_str().unwrap(),
        ])
        .env("PLANRUN_PAUSE", "rows-file-written:1500")
        .output()
        .expect("run planrun");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(m.parquet_files() >= 3, "{err}");
    let inserted = err
        .find("{\"event\":\"progress\",\"step\":\"restore\"")
        .unwrap_or_else(|| panic!("no restore progress in {err}"));
    let backed_up = err
        .find("{\"event\":\"step_finished\",\"step\":\"backup\"")
        .unwrap_or_else(|| panic!("no backup end in {err}"));
    assert!(inserted < backed_up, "{err}");
    assert!(err.contains("20000 rows inserted from Parquet"), "{err}");
    m.assert_restored(&coll);
    m.cleanup();
}

/// Milvus refuses queries naming a partition of a partition-key collection: rows mode reads it
/// whole and lets the target route the rows by their key.
#[test]
fn rows_mode_migrates_a_partition_key_collection() {
    let from = milvus_a();
    let coll = support::unique("rowpk");
    seed(
        &from,
        &coll,
        &["--rows", "600", "--partition-key", "4", "--partitions", "1"],
    );
    let m = Migration::seeded(from, milvus_b(), coll);
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    assert!(
        out.contains("all-partitions") || m.parquet_files() >= 3,
        "{out}"
    );
    m.assert_equal();
    m.cleanup();
}

/// An auto_id collection shaped like Milvus Lite's: an ARRAY of VARCHAR (whose `max_length`
/// Lite does not report), a partition key asked for 8 partitions (Lite makes 16 and a
/// `_default`), an index, 300 rows.
fn seed_auto_id(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
schema = c.create_schema(auto_id=True, enable_dynamic_field=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("v", DataType.FLOAT_VECTOR, dim=4)
schema.add_field("tags", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4, max_length=40)
schema.add_field("tenant", DataType.INT64, is_partition_key=True)
idx = c.prepare_index_params()
idx.add_index("v", index_type="FLAT", metric_type="L2")
c.create_collection({coll:?}, schema=schema, index_params=idx, num_partitions=8,
                    consistency_level="Strong")
r = random.Random(5)
rows = [dict(v=[r.random() for _ in range(4)], tags=["t" * (i % 23)] * (i % 4), tenant=i % 7)
        for i in range(300)]
c.insert({coll:?}, rows)
c.load_collection({coll:?})
print(len(rows))
"#
        ),
    );
}

/// `field: value` of the restored collection as pymilvus describes it, one per line.
fn described(s: &Server, coll: &str) -> String {
    pymilvus(
        s,
        &format!(
            r#"
d = c.describe_collection({coll:?})
tags = [f for f in d["fields"] if f["name"] == "tags"][0]
ids = c.query({coll:?}, filter="id >= 0", output_fields=["id"], limit=16384)
print("max_length:", tags["params"].get("max_length"))
print("auto_id:", d["auto_id"])
print("partitions:", len(c.list_partitions({coll:?})))
print("ids:", sorted(x["id"] for x in ids))
"#
        ),
    )
}

fn field<'a>(described: &'a str, name: &str) -> &'a str {
    described
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no `{name}` in {described}"))
}

/// Lite → 2.3.5 in rows mode: the backup fills in the `max_length` Lite does not report (from
/// the longest value), the target gets the 16 key partitions Lite made, keys are kept with
/// auto_id off (the default), and verify says what differs by design.
#[test]
fn lite_quirks_are_filled_in_and_said_on_the_way_to_milvus_2_3() {
    let coll = support::unique("litq");
    let from = lite();
    seed_auto_id(&from, &coll);
    seed_auto_id(&from, &format!("{coll}_str"));
    let m = Migration::seeded(from, milvus_b(), coll.clone());
    let shown = support::planrun()
        .args(["plan", m.plan.to_str().unwrap()])
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{t}");
    assert!(t.contains("field `tags` has no max_length"), "{t}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("recorded max_length = 64"), "{out}");
    assert!(out.contains("equals"), "{out}");
    assert!(out.contains("tags` has max_length=64 (filled in)"), "{out}");
    assert!(out.contains("kept its keys (auto_id off)"), "{out}");
    let source = described(&m.from, &coll);
    let target = described(&m.to, &format!("{coll}_bak"));
    assert_eq!(field(&target, "max_length"), "64", "{target}");
    assert_eq!(field(&target, "auto_id"), "False", "{target}");
    assert_eq!(field(&target, "partitions"), "16", "{target}");
    assert_eq!(field(&source, "ids"), field(&target, "ids"));
    m.cleanup();
}

/// `auto_id = "new_keys"`: the copy keeps auto_id and gets keys of its own; a crash in the middle
/// of the inserts restores that collection again from the start (rows with new keys cannot be
/// found again), and verify compares the rows by content.
#[test]
fn new_keys_keep_auto_id_and_survive_a_crash_mid_insert() {
    let coll = support::unique("newk");
    let from = milvus_a();
    seed_auto_id(&from, &coll);
    seed_auto_id(&from, &format!("{coll}_str"));
    let m = Migration::seeded(from, milvus_b(), coll.clone());
    let text = std::fs::read_to_string(&m.plan).unwrap();
    std::fs::write(
        &m.plan,
        text.replace(
            "suffix = \"_bak\"",
            "suffix = \"_bak\"\nauto_id = \"new_keys\"",
        ),
    )
    .unwrap();
    let (good, out) = apply(&m.plan, Some("rows-inserted:1"));
    assert!(!good && out.contains("PLANRUN_CRASH"), "{out}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("is dropped and restored again"), "{out}");
    assert!(out.contains("new keys: rows compared by content"), "{out}");
    assert!(out.contains("equals"), "{out}");
    let source = described(&m.from, &coll);
    let target = described(&m.to, &format!("{coll}_bak"));
    assert_eq!(field(&target, "auto_id"), "True", "{target}");
    let ids =
        |d: &str| -> Vec<i64> { serde_json::from_str(field(d, "ids")).expect("a list of ids") };
    let (s, t) = (ids(&source), ids(&target));
    assert_eq!((s.len(), t.len()), (300, 300));
    assert!(
        s.iter().all(|k| !t.contains(k)),
        "the target assigned keys of its own"
    );
    m.cleanup();
}

/// A restore whose rows do not add up to its backup's leaves nothing half-made: the collection
/// is dropped (the others are restored), and once the backup is right the next apply restores it.
#[test]
fn a_count_that_does_not_add_up_drops_what_the_restore_made() {
    let m = Migration::new(milvus_a(), milvus_b());
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    let (bak, bak_str) = (format!("{}_bak", m.coll), format!("{}_str_bak", m.coll));
    for c in [&bak, &bak_str] {
        data(&["drop", "--uri", &m.to.uri, "--token", "", c]);
    }
    // The same restore again, on a state of its own, from a meta claiming one row more.
    let text = std::fs::read_to_string(&m.plan).unwrap();
    let head = &text[..text.find("[steps.backup]").unwrap()];
    let step = &text[text.find("[steps.restore]").unwrap()..text.find("[steps.verify]").unwrap()];
    let again = m.dir.path().join("again.toml");
    let state = m.dir.path().join("state-again");
    std::fs::write(
        &again,
        format!(
            "{head}{step}[settings]\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let meta_path = m
        .dir
        .path()
        .join(format!("backups/backup/{}/meta/rows_meta.json", m.coll));
    let good_meta = std::fs::read_to_string(&meta_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&good_meta).unwrap();
    let coll = meta["collections"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["collection_name"] == m.coll.as_str())
        .unwrap();
    let first = &mut coll["partitions"][0]["files"][0]["rows"];
    *first = (first.as_u64().unwrap() + 1).into();
    std::fs::write(&meta_path, meta.to_string()).unwrap();

    let (good, out) = apply(&again, None);
    assert!(!good, "{out}");
    assert!(
        out.contains(&format!(
            "`{bak}` was dropped, so the next apply restores it again"
        )),
        "{out}"
    );
    assert!(!has_collection(&m.to, &bak), "nothing half-made is left");
    assert!(
        has_collection(&m.to, &bak_str),
        "the other collection is restored"
    );

    std::fs::write(&meta_path, good_meta).unwrap();
    let (good, out) = apply(&again, None);
    assert!(good, "{out}");
    assert!(out.contains("rows verified by count"), "{out}");
    m.assert_equal();
    m.cleanup();
}

/// Appends `lines` to the plan's `[settings]` (its last table).
fn settings(plan: &std::path::Path, lines: &str) {
    let text = std::fs::read_to_string(plan).unwrap();
    assert!(
        text.trim_end()
            .rsplit("\n[")
            .next()
            .unwrap()
            .starts_with("settings]")
    );
    std::fs::write(plan, format!("{text}{lines}\n")).unwrap();
}

/// The names of the Parquet files of collection `coll` in the migration's backup.
fn parquet_names(m: &Migration, coll: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![m.dir.path().join("backups")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet")
                && p.components().any(|c| c.as_os_str() == coll)
            {
                out.push(p.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Two readers per collection, each over its own key range, killed twice in the middle of the
/// read: each range resumes after its own last recorded file, and the copy is exact.
#[test]
fn two_readers_killed_mid_read_resume_each_range_exactly() {
    let from = milvus_a();
    let coll = support::unique("rowrd");
    seed(
        &from,
        &coll,
        &[
            "--rows",
            "20000",
            "--partitions",
            "1",
            "--delete-every",
            "11",
        ],
    );
    let m = Migration::seeded(from, milvus_b(), coll.clone());
    settings(&m.plan, "readers = 2\nfile_bytes = 1");
    let (good, out) = apply(&m.plan, Some("rows-file-written:3"));
    assert!(!good && out.contains("PLANRUN_CRASH"), "{out}");
    let (good, out) = apply(&m.plan, Some("rows-file-written:2"));
    assert!(!good && out.contains("PLANRUN_CRASH"), "{out}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    let names = parquet_names(&m, &coll);
    for range in ["r0-", "r1-"] {
        assert!(
            names.iter().filter(|n| n.starts_with(range)).count() >= 2,
            "several files in each range: {names:?}"
        );
    }
    m.assert_equal();
    m.cleanup();
}

/// VARCHAR keys are cut by their bytes: two readers over a varchar-keyed collection, exact.
#[test]
fn two_readers_split_varchar_keys_exactly() {
    let from = milvus_a();
    let coll = support::unique("rowvc");
    let m = Migration::seeded(from, milvus_b(), coll.clone());
    let varchar = format!("{coll}_str");
    seed(
        &m.from,
        &varchar,
        &["--pk", "varchar", "--rows", "12000", "--partitions", "2"],
    );
    settings(&m.plan, "readers = 2\nfile_bytes = 1");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    let names = parquet_names(&m, &varchar);
    assert!(names.iter().any(|n| n.starts_with("r0-")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("r1-")), "{names:?}");
    m.assert_equal();
    m.cleanup();
}
