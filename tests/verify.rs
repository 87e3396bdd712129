//! The `verify` and `alias` steps against the real servers, through the `planrun` binary.
//!
//! Equal copies are made by seeding the same deterministic data (scripts/milvus_data.py seed)
//! into both instances; differences are then made with pymilvus (an upsert and a delete).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::scenario::Scenario;
use crate::support::{self, LITE, MILVUS_A, MILVUS_B, S3, data, ok, python};

/// Runs a pymilvus snippet with `c` connected to `uri` (`token` may be empty).
fn pymilvus(uri: &str, token: &str, code: &str) -> String {
    let script = format!(
        "import sys, json\nfrom pymilvus import MilvusClient\n\
         c = MilvusClient(uri={uri:?}, token={token:?}, timeout=60)\n{code}\n"
    );
    ok(Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap())
}

/// `planrun ARGS`: (success, stdout and stderr).
fn planrun(args: &[&str]) -> (bool, String) {
    let out = support::run(args);
    (out.status.success(), support::text(&out))
}

const A_TOKEN: &str = "root:Milvus";

fn seed(uri: &str, token: &str, coll: &str, rows: &str) {
    ok(data(&[
        "seed",
        "--uri",
        uri,
        "--token",
        token,
        "--collection",
        coll,
        "--rows",
        rows,
        "--partitions",
        "2",
        "--segments",
        "2",
        "--delete-every",
        "7",
    ]));
}

fn drop(uri: &str, token: &str, colls: &[&str]) {
    let mut args = vec!["drop", "--uri", uri, "--token", token];
    args.extend_from_slice(colls);
    data(&args);
}

const INSTANCES: &str = r#"
[instances.a]
type = "milvus"
uri = "http://127.0.0.1:19530"
user = "root"
password = "Milvus"

[instances.b]
type = "milvus"
uri = "http://127.0.0.1:19540"

[instances.lite]
type = "milvus"
uri = "http://127.0.0.1:19560"
"#;

struct PlanFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl PlanFile {
    fn new(steps: &str) -> PlanFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.toml");
        let text = format!(
            "version = 1\nname = \"verify-test\"\n{INSTANCES}\n{steps}\n[settings]\nstate_dir = \"{}\"\n",
            dir.path().join("state").display()
        );
        std::fs::write(&path, text).unwrap();
        PlanFile { _dir: dir, path }
    }

    fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

fn verify_steps(coll: &str) -> String {
    verify_between("b", coll)
}

fn verify_between(target: &str, coll: &str) -> String {
    format!(
        r#"
[steps.verify]
type = "verify"
source = {{ instance = "a", collection = "{coll}" }}
target = {{ instance = "{target}", collection = "{coll}" }}
"#
    )
}

/// Changes the `title` of row `changed` and deletes row `deleted` of `coll` on Milvus B.
fn tamper(coll: &str, changed: i64, deleted: i64) {
    pymilvus(
        &MILVUS_B.uri(),
        "",
        &format!(
            "rows = c.query({coll:?}, filter='pk == {changed}', output_fields=['*'])\n\
             assert len(rows) == 1, rows\n\
             row = dict(rows[0]); row['title'] = 'changed'\n\
             parts = [p for p in c.list_partitions({coll:?})\n\
                      if c.query({coll:?}, filter='pk == {changed}', partition_names=[p], output_fields=['pk'])]\n\
             c.delete({coll:?}, ids=[{changed}])\n\
             c.insert({coll:?}, [row], partition_name=parts[0])\n\
             c.delete({coll:?}, ids=[{deleted}])\n\
             print(c.query({coll:?}, filter='pk in [{changed}, {deleted}]', output_fields=['title']))"
        ),
    );
}

#[test]
fn verify_passes_on_an_equal_copy_and_names_a_changed_and_a_deleted_row() {
    MILVUS_A.require();
    MILVUS_B.require();
    let coll = support::unique("vf");
    seed(&MILVUS_A.uri(), A_TOKEN, &coll, "600");
    seed(&MILVUS_B.uri(), "", &coll, "600");
    let plan = PlanFile::new(&verify_steps(&coll));

    let (good, out) = planrun(&["apply", "--yes", plan.path()]);
    assert!(good, "an equal copy must verify: {out}");
    assert!(out.contains("equals"), "{out}");
    assert!(out.contains("rows in 2 partitions"), "{out}");

    // Row 3 changed, row 10 deleted (seed deletes every 7th key: 0, 7, 14, ...).
    tamper(&coll, 3, 10);
    let (good, out) = planrun(&["apply", "--yes", "--restart", plan.path()]);
    assert!(!good, "a changed copy must fail verification: {out}");
    assert!(out.contains("verification failed"), "{out}");
    assert!(out.contains("missing in target: `10`"), "{out}");
    assert!(out.contains("different content: `3`"), "{out}");
    assert!(out.contains("rows in source"), "{out}");
    drop(&MILVUS_A.uri(), A_TOKEN, &[&coll]);
    drop(&MILVUS_B.uri(), "", &[&coll]);
}

#[test]
fn verify_names_schema_partition_and_index_differences() {
    MILVUS_A.require();
    MILVUS_B.require();
    let coll = support::unique("vfs");
    seed(&MILVUS_A.uri(), A_TOKEN, &coll, "200");
    // The copy has smaller vectors, one partition fewer and no index.
    ok(data(&[
        "seed",
        "--uri",
        &MILVUS_B.uri(),
        "--token",
        "",
        "--collection",
        &coll,
        "--rows",
        "200",
        "--partitions",
        "1",
        "--dim",
        "4",
    ]));
    pymilvus(
        &MILVUS_B.uri(),
        "",
        &format!("c.release_collection({coll:?}); c.drop_index({coll:?}, 'vec')"),
    );
    let plan = PlanFile::new(&verify_steps(&coll));
    let (good, out) = planrun(&["apply", "--yes", plan.path()]);
    assert!(!good, "{out}");
    assert!(
        out.contains("partitions: only in source [\"part_1\"]"),
        "{out}"
    );
    assert!(
        out.contains("indexes: fields indexed only in source [\"vec\"]"),
        "{out}"
    );
    assert!(
        out.contains("schema: source has [\"vec:101:0:dim=8"),
        "{out}"
    );
    assert!(out.contains("target has [\"vec:101:0:dim=4"), "{out}");
    assert!(out.contains("rows not compared"), "{out}");
    drop(&MILVUS_A.uri(), A_TOKEN, &[&coll]);
    drop(&MILVUS_B.uri(), "", &[&coll]);
}

fn describe_alias(alias: &str) -> String {
    pymilvus(
        &MILVUS_B.uri(),
        "",
        &format!("print(c.describe_alias({alias:?})['collection_name'])"),
    )
    .trim()
    .to_string()
}

#[test]
fn alias_moves_only_after_verify_succeeded() {
    MILVUS_A.require();
    MILVUS_B.require();
    let coll = support::unique("al");
    let old = format!("{coll}_old");
    let alias = format!("{coll}_app");
    seed(&MILVUS_A.uri(), A_TOKEN, &coll, "300");
    seed(&MILVUS_B.uri(), "", &coll, "300");
    seed(&MILVUS_B.uri(), "", &old, "30");
    pymilvus(
        &MILVUS_B.uri(),
        "",
        &format!("c.create_alias({old:?}, {alias:?})"),
    );
    tamper(&coll, 3, 10);
    let steps = format!(
        "{}\n[steps.cutover]\ntype = \"alias\"\ninstance = \"b\"\nalias = \"{alias}\"\n\
         collection = \"{coll}\"\nneeds = [\"verify\"]\n",
        verify_steps(&coll)
    );
    let plan = PlanFile::new(&steps);

    let (good, out) = planrun(&["plan", plan.path()]);
    assert!(good, "{out}");
    assert!(
        out.contains(&format!("~ alias `{alias}`: `{old}` → `{coll}`")),
        "{out}"
    );

    let (good, out) = planrun(&["apply", "--yes", plan.path()]);
    assert!(!good, "{out}");
    assert!(out.contains("verification failed"), "{out}");
    assert_eq!(describe_alias(&alias), old, "moved despite a failed verify");

    // A good copy: the resumed run verifies again and then moves the alias.
    seed(&MILVUS_B.uri(), "", &coll, "300");
    let (good, out) = planrun(&["apply", "--yes", plan.path()]);
    assert!(good, "{out}");
    assert!(out.contains(&format!("`{old}` → `{coll}`")), "{out}");
    assert_eq!(describe_alias(&alias), coll);

    pymilvus(&MILVUS_B.uri(), "", &format!("c.drop_alias({alias:?})"));
    drop(&MILVUS_A.uri(), A_TOKEN, &[&coll]);
    drop(&MILVUS_B.uri(), "", &[&coll, &old]);
}

fn load(text: &str) -> Result<planrun::plan::Compiled, String> {
    let env = BTreeMap::new();
    planrun::plan::load_str(Path::new("plan.toml"), text, &env).map_err(|e| e.render_plain(200))
}

#[test]
fn an_alias_step_must_need_a_verify_step() {
    let text = format!(
        "version = 1\nname = \"x\"\n{INSTANCES}\n[steps.cutover]\ntype = \"alias\"\n\
         instance = \"b\"\nalias = \"app\"\ncollection = \"c\"\n"
    );
    let err = load(&text).unwrap_err();
    assert!(
        err.contains("alias step `cutover` does not need a verify step"),
        "{err}"
    );

    let ok = load(&format!(
        "{text}needs = [\"check\"]\n{}",
        "[steps.check]\ntype = \"verify\"\nsource = { instance = \"a\", collection = \"c\" }\n\
         target = { instance = \"b\", collection = \"c\" }\n"
    ))
    .unwrap();
    assert_eq!(ok.dag.order(), ["check", "cutover"]);
}

#[test]
fn a_verify_step_names_a_pair_or_a_restore() {
    let head = format!("version = 1\nname = \"x\"\n{INSTANCES}\n");
    let err = load(&format!(
        "{head}[steps.v]\ntype = \"verify\"\nsource = {{ instance = \"a\", collection = \"c\" }}\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("needs either `source` and `target`, or `restore`"),
        "{err}"
    );

    let err = load(&format!(
        "{head}[steps.v]\ntype = \"verify\"\nrestore = \"nope\"\n"
    ))
    .unwrap_err();
    assert!(
        err.contains("`nope` in `steps.v.restore` is not a restore step"),
        "{err}"
    );

    let err = load(&format!(
        "{head}[steps.v]\ntype = \"verify\"\nsource = {{ instance = \"a\", collection = \"c\" }}\n\
         target = {{ instance = \"z\", collection = \"c\" }}\n"
    ))
    .unwrap_err();
    assert!(err.contains("unknown instance `z`"), "{err}");
}

/// A binlog migration (backup → copy → restore) followed by `verify` with `restore = "restore"`:
/// the pairs come from the backup's meta and the backup step's instance.
#[test]
fn verify_derives_its_pairs_from_a_restore_step() {
    S3.require();
    let s = Scenario::new("migrate.toml");
    let mut text = std::fs::read_to_string(&s.plan).unwrap();
    text = text.replace(
        "[settings]",
        "[steps.verify]\ntype = \"verify\"\nrestore = \"restore\"\n\n[settings]",
    );
    std::fs::write(&s.plan, text).unwrap();
    let (good, out) = planrun(&["apply", "--yes", s.plan_path()]);
    assert!(good, "{out}");
    for c in [s.coll.clone(), format!("{}_str", s.coll)] {
        assert!(
            out.contains(&format!(
                "`milvus_b:default.{c}_bak` equals `milvus_a:default.{c}`"
            )),
            "{out}"
        );
    }
    s.cleanup();
}

/// The same rows on Milvus 2.3.5 and on Milvus Lite digest the same: nothing in the row hash
/// depends on the server (column order, JSON key order, dynamic-field encoding).
#[test]
fn verify_compares_milvus_2_3_with_milvus_lite() {
    MILVUS_A.require();
    LITE.require();
    let coll = support::unique("vfl");
    seed(&MILVUS_A.uri(), A_TOKEN, &coll, "500");
    seed(&LITE.uri(), "", &coll, "500");
    let plan = PlanFile::new(&verify_between("lite", &coll));
    let (good, out) = planrun(&["apply", "--yes", plan.path()]);
    assert!(good, "{out}");
    assert!(out.contains("equals"), "{out}");
    drop(&MILVUS_A.uri(), A_TOKEN, &[&coll]);
    drop(&LITE.uri(), "", &[&coll]);
}
