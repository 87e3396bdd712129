//! Milvus Lite 2.5 (the C++ core of Milvus 2.5, what `MilvusClient("./milvus.db")` users have):
//! no GetVersion, no database RPCs, no partitions. planrun connects to it, migrates rows to and
//! from it (from and to Milvus 2.3.5 and Milvus Lite 3; float16/bfloat16 vectors too), and
//! refuses a database it cannot have before anything is made.

use crate::support::migrate::{
    Migration, Server, apply, dry_run, has_collection, lite, milvus_a, milvus_b, pymilvus,
};
use crate::support::{self, LITE25, data, ok};

fn lite25() -> Server {
    lite25_as("lite25")
}

/// Lite 2.5 under another instance id, for a migration within the one server.
fn lite25_as(id: &'static str) -> Server {
    Server {
        id,
        uri: LITE25.require().uri(),
        token: "",
        auth: "",
    }
}

/// `coll` and `coll_str` (int64 and varchar keys) on `s`, in one partition: Lite 2.5 has no
/// others, so a migration to it could not create them.
fn seed_one_partition(s: &Server, coll: &str) {
    for (c, pk) in [
        (coll.to_string(), "int64"),
        (format!("{coll}_str"), "varchar"),
    ] {
        ok(data(&[
            "seed",
            "--uri",
            &s.uri,
            "--token",
            s.token,
            "--collection",
            &c,
            "--pk",
            pk,
            "--rows",
            "800",
            "--partitions",
            "1",
            "--segments",
            "2",
            "--delete-every",
            "9",
        ]));
    }
}

/// Previews (which must connect and find nothing in the way), applies, and compares row by row.
fn migrate(m: &Migration) {
    let (code, shown) = dry_run(&m.plan);
    assert_eq!(code, 0, "{shown}");
    assert!(!shown.contains("UNIMPLEMENTED"), "{shown}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    m.assert_equal();
    m.cleanup();
}

#[test]
fn rows_mode_migrates_lite_2_5_to_lite_2_5() {
    let coll = support::unique("l25");
    let from = lite25();
    seed_one_partition(&from, &coll);
    migrate(&Migration::seeded(from, lite25_as("lite25_to"), coll));
}

#[test]
fn rows_mode_migrates_milvus_2_3_to_lite_2_5() {
    let coll = support::unique("l25a");
    let from = milvus_a();
    seed_one_partition(&from, &coll);
    migrate(&Migration::seeded(from, lite25(), coll));
}

#[test]
fn rows_mode_migrates_lite_2_5_to_milvus_2_3() {
    let coll = support::unique("l25b");
    let from = lite25();
    seed_one_partition(&from, &coll);
    migrate(&Migration::seeded(from, milvus_b(), coll));
}

#[test]
fn rows_mode_migrates_lite_3_to_lite_2_5() {
    let coll = support::unique("l3to25");
    let from = lite();
    seed_one_partition(&from, &coll);
    migrate(&Migration::seeded(from, lite25(), coll));
}

/// Float16 and bfloat16 vectors (Milvus 2.3.5 has neither), written as their raw bytes.
fn seed_half_vectors(s: &Server, coll: &str) {
    pymilvus(
        s,
        &format!(
            r#"
import struct
schema = c.create_schema(auto_id=False, enable_dynamic_field=False)
schema.add_field("id", DataType.INT64, is_primary=True)
schema.add_field("h", DataType.FLOAT16_VECTOR, dim=4)
schema.add_field("b", DataType.BFLOAT16_VECTOR, dim=4)
schema.add_field("f", DataType.FLOAT)
idx = c.prepare_index_params()
idx.add_index("h", index_type="FLAT", metric_type="L2")
idx.add_index("b", index_type="FLAT", metric_type="L2")
c.create_collection({coll:?}, schema=schema, index_params=idx, consistency_level="Strong")
r = random.Random(7)
half = lambda: struct.pack("<4e", *[r.random() for _ in range(4)])
# bfloat16: the high half of each float32
bf16 = lambda: b"".join(struct.pack("<f", r.random())[2:] for _ in range(4))
rows = [dict(id=i, h=half(), b=bf16(), f=r.random()) for i in range(300)]
c.insert({coll:?}, rows)
c.load_collection({coll:?})
print(len(rows))
"#
        ),
    );
}

#[test]
fn rows_mode_keeps_float16_and_bfloat16_vectors_on_lite_2_5() {
    let coll = support::unique("l25h");
    let from = lite25();
    seed_half_vectors(&from, &coll);
    seed_half_vectors(&from, &format!("{coll}_str"));
    migrate(&Migration::seeded(from, lite25_as("lite25_to"), coll));
}

/// A restore into database `x` and a backup of `x.*` on Lite 2.5 are refused by `plan` (with
/// exit code 1) and by apply, in the same words, naming the instance and what it lacks; nothing
/// is made.
/// An instance whose `database` is another than the default cannot be used at all.
#[test]
fn a_database_lite_2_5_does_not_have_is_refused_before_anything_is_made() {
    let s = lite25();
    let coll = support::unique("l25d");
    seed_one_partition(&s, &coll);
    let dir = tempfile::tempdir().unwrap();
    let backups = dir.path().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    let write = |name: &str, backup: &str, restore: &str, instance: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!(
                r#"version = 1
name = "lite25-db"

[instances.lite25]
type = "milvus"
uri = "{uri}"
{instance}
[buckets.local]
type = "local"
path = "{backups}"

[steps.backup]
type = "backup"
instance = "lite25"
collections = [{backup}]
to = "local:backup/{coll}"
mode = "rows"
{restore}
[settings]
state_dir = "{state}"
"#,
                uri = s.uri,
                backups = backups.display(),
                state = dir.path().join(format!("state-{name}")).display(),
            ),
        )
        .unwrap();
        p
    };
    let restore = format!(
        "\n[steps.restore]\ntype = \"restore\"\ninstance = \"lite25\"\nfrom = \
         \"local:backup/{coll}\"\nsuffix = \"_bak\"\ndatabase = \"x\"\n"
    );
    let no_db = "`lite25` has no databases (it answers UNIMPLEMENTED for ListDatabases; \
                 milvus_lite 2.x (no GetVersion)), so database `x` cannot be used there";

    // Restoring into database `x`.
    let p = write("restore.toml", &format!("\"{coll}\""), &restore, "");
    let (code, shown) = dry_run(&p);
    assert_eq!(code, 1, "{shown}");
    let refusal = format!(
        "`{coll}` cannot be restored into database `x`: {no_db}: only the default database; \
         leave out `database` in step `restore`"
    );
    assert!(shown.contains(&refusal), "{shown}");
    let (good, out) = apply(&p, None);
    assert!(!good, "{out}");
    assert!(out.contains(&refusal), "{out}");

    // Backing up `x.*`.
    let p = write("backup.toml", "\"x.*\"", "", "");
    let (code, shown) = dry_run(&p);
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains(&format!("`collections` has `x.*`: {no_db}")),
        "{shown}"
    );

    // An instance in database `x`.
    let p = write(
        "instance.toml",
        &format!("\"{coll}\""),
        "",
        "database = \"x\"\n",
    );
    let (code, shown) = dry_run(&p);
    assert_eq!(code, 1, "{shown}");
    assert!(shown.contains(no_db), "{shown}");

    assert!(
        !has_collection(&s, &format!("{coll}_bak")),
        "no collection was made"
    );
    assert!(
        std::fs::read_dir(&backups).unwrap().next().is_none(),
        "no backup was written"
    );
    for c in [coll.clone(), format!("{coll}_str")] {
        data(&["drop", "--uri", &s.uri, "--token", "", &c]);
    }
}

/// Lite 2.5 has no aliases: a backup that carries one is refused in the preview (not an
/// UNIMPLEMENTED error), and `aliases = false` restores the collection without it.
#[test]
fn aliases_lite_2_5_cannot_hold_are_refused_until_left_out() {
    let coll = support::unique("l25al");
    let from = milvus_a();
    seed_one_partition(&from, &coll);
    let alias = format!("{coll}_alias");
    ok(data(&["alias", &coll, &alias]));
    let m = Migration::seeded(from, lite25(), coll.clone());
    let (code, shown) = dry_run(&m.plan);
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains(&format!(
            "`{coll}` has aliases `{alias}_bak` in the backup, which `lite25` cannot hold"
        )),
        "{shown}"
    );
    assert!(shown.contains("set aliases = false"), "{shown}");
    let text = std::fs::read_to_string(&m.plan).unwrap();
    std::fs::write(
        &m.plan,
        text.replace("suffix = \"_bak\"", "suffix = \"_bak\"\naliases = false"),
    )
    .unwrap();
    let (code, shown) = dry_run(&m.plan);
    assert_eq!(code, 0, "{shown}");
    let (good, out) = apply(&m.plan, None);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    m.assert_equal();
    data(&["drop-alias", &alias]);
    m.cleanup();
}
