//! The plan language through its public API: example plans, invalid plans (snapshots),
//! secrets, fingerprints, the DAG, a 2,000-step plan and the schema file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use planrun::plan::{self, Mode, Naming, OnConflict, StepKind};
use planrun::storage::StorageConfig;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn no_env() -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn load_text(
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<plan::Compiled, plan::PlanError> {
    plan::load_str(Path::new("/plans/test.toml"), text, env)
}

#[test]
fn migrate_plan_compiles_to_three_ordered_steps() {
    let c = plan::load(&root().join("plans/migrate.toml")).expect("migrate.toml is valid");
    assert_eq!(c.plan.name, "coll-to-milvus-b");
    assert_eq!(c.dag.order(), ["backup", "copy", "restore"]);
    assert_eq!(c.dag.dependencies("restore"), ["copy"]);
    assert_eq!(c.dag.dependencies("copy"), ["backup"]);
    let StepKind::Backup(b) = &c.plan.steps[0].kind else {
        panic!("first step is the backup")
    };
    assert_eq!(b.collections, ["coll"]);
    assert_eq!(b.to.to_string(), "bucket_a:backup/my_backup");
    assert_eq!(
        b.mode,
        Mode::Binlog,
        "milvus_a has `data`, so binlog is the default"
    );
    let StepKind::Restore(r) = &c.plan.steps[2].kind else {
        panic!("last step is the restore")
    };
    assert_eq!(r.naming, Naming::Suffix("_bak".into()));
    assert_eq!(r.on_conflict, OnConflict::Fail);
    assert!(r.indexes && r.load.is_none());
    let a = &c.plan.instances["milvus_a"];
    assert_eq!(a.management.as_deref(), Some("http://127.0.0.1:9091"));
    assert_eq!(a.data.as_ref().unwrap().to_string(), "bucket_a:files");
    assert_eq!(c.plan.settings.concurrency, 4);
    assert_eq!(c.plan.settings.retries, 5);
    assert_eq!(
        c.plan.settings.state_dir,
        root()
            .join("plans")
            .canonicalize()
            .unwrap()
            .join(".planrun")
    );
    match &c.plan.buckets["bucket_a"].config {
        StorageConfig::S3(s3) => {
            assert!(s3.path_style, "path style is on when an endpoint is set");
            assert_eq!(s3.bucket, "bucket-a");
        }
        other => panic!("bucket_a is S3, got {other:?}"),
    }
    assert!(c.dag.notes().is_empty(), "every read is written by a step");
}

#[test]
fn direct_plan_has_two_steps_and_one_location_edge() {
    let c = plan::load(&root().join("plans/migrate-direct.toml")).expect("valid");
    assert_eq!(c.dag.order(), ["backup", "restore"]);
    let e = c.dag.edge("backup", "restore").expect("inferred edge");
    assert!(!e.needs);
    assert_eq!(e.locations.len(), 1);
}

#[test]
fn env_values_are_used_but_never_shown() {
    let text = std::fs::read_to_string(root().join("plans/migrate.toml")).unwrap();
    let text = text.replace(
        "collections = [\"{{ vars.collection }}\"]",
        "collections = [\"{{ env.SECRET_COLL }}\"]",
    );
    let env = BTreeMap::from([
        ("MILVUS_A_PASSWORD".to_string(), "pw-one".to_string()),
        ("SECRET_COLL".to_string(), "hidden_coll".to_string()),
    ]);
    let c = load_text(&text, &env).unwrap();
    let a = &c.plan.instances["milvus_a"];
    assert_eq!(a.password.as_ref().unwrap().expose(), "pw-one");
    let StepKind::Backup(b) = &c.plan.steps[0].kind else {
        panic!()
    };
    assert_eq!(
        b.collections,
        ["hidden_coll"],
        "the engine gets the real value"
    );
    let shown = format!(
        "{} {} {} {:?}",
        c.plan.describe_step(&c.plan.steps[0]),
        c.plan.describe_json(),
        c.dag.to_dot(),
        c.plan
    );
    assert!(!shown.contains("hidden_coll"), "env value leaked: {shown}");
    assert!(!shown.contains("pw-one"), "password leaked: {shown}");
    assert!(shown.contains("***"));
}

#[test]
fn fingerprint_ignores_secrets_but_not_other_changes() {
    let text = std::fs::read_to_string(root().join("plans/migrate.toml")).unwrap();
    let env1 = BTreeMap::from([("MILVUS_A_PASSWORD".to_string(), "one".to_string())]);
    let env2 = BTreeMap::from([("MILVUS_A_PASSWORD".to_string(), "two".to_string())]);
    let f1 = load_text(&text, &env1).unwrap().plan.fingerprint();
    let f2 = load_text(&text, &env2).unwrap().plan.fingerprint();
    assert_eq!(f1, f2, "a changed password must not change the fingerprint");
    assert_eq!(f1.len(), 64);
    let changed = text.replace("suffix = \"_bak\"", "suffix = \"_copy\"");
    let c3 = load_text(&changed, &env1).unwrap();
    assert_ne!(f1, c3.plan.fingerprint());
    assert_eq!(
        c3.plan.describe_json()["steps"][2]["naming"]["suffix"],
        "_copy",
        "describe_json shows what changed"
    );
    assert_eq!(
        c3.plan.describe_json()["instances"]["milvus_a"]["password"],
        "set"
    );
}

#[test]
fn needs_and_locations_both_make_edges_and_order_keeps_file_order() {
    let text = r#"
version = 1
name = "t"
[instances.m]
type = "milvus"
uri = "http://localhost:19530"
[buckets.b]
type = "local"
path = "store"
[steps.z_first]
type = "backup"
instance = "m"
collections = ["a"]
to = "b:x/a"
[steps.a_second]
type = "backup"
instance = "m"
collections = ["b"]
to = "b:y"
needs = ["z_first"]
[steps.restore_all]
type = "restore"
instance = "m"
from = "b:x"
database = "other"
[steps.restore_old]
type = "restore"
instance = "m"
from = "b:old/backup"
suffix = "_old"
"#;
    let c = load_text(text, &no_env()).unwrap();
    assert_eq!(
        c.dag.order(),
        ["z_first", "a_second", "restore_all", "restore_old"]
    );
    assert!(c.dag.edge("z_first", "a_second").unwrap().needs);
    // restore_all reads b:x, which contains what z_first writes (b:x/a).
    assert_eq!(c.dag.dependencies("restore_all"), ["z_first"]);
    assert_eq!(c.dag.dependents("z_first"), ["a_second", "restore_all"]);
    assert_eq!(
        c.dag.notes(),
        ["step `restore_old` reads existing backup at b:old/backup"]
    );
    let StepKind::Backup(b) = &c.plan.steps[0].kind else {
        panic!()
    };
    assert_eq!(b.mode, Mode::Rows, "no `data`: rows mode");
    assert!(
        c.dag.to_mermaid().contains("-.->"),
        "needs edges are dashed"
    );
    match &c.plan.buckets["b"].config {
        StorageConfig::Local(l) => assert_eq!(l.path, Path::new("/plans/store")),
        other => panic!("local bucket expected, got {other:?}"),
    }
}

#[test]
fn every_invalid_plan_is_rejected_with_located_errors() {
    let dir = root().join("plans/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 15,
        "at least 15 kinds of mistakes, found {}",
        files.len()
    );
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        let rel = Path::new("plans/invalid").join(f.file_name().unwrap());
        let err = plan::load_str(&rel, &text, &no_env())
            .err()
            .unwrap_or_else(|| panic!("{name} should be invalid"));
        assert_eq!(err.exit_code(), 2, "{name}");
        assert!(!err.errors().is_empty(), "{name}");
        let rendered = err.render_plain(100);
        // Every error carries file:line:column.
        assert_eq!(
            rendered.matches("[plans/invalid/").count(),
            err.errors().len(),
            "{name}: every error is located\n{rendered}"
        );
        insta::assert_snapshot!(format!("invalid_{name}"), rendered);
    }
}

#[test]
fn unreadable_file_is_not_an_invalid_plan() {
    let err = plan::load(Path::new("/nonexistent/plan.toml")).unwrap_err();
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("/nonexistent/plan.toml"));
}

/// A plan of `n` steps: backups, each copied, each copied copy restored; plus `needs` chains.
fn big_plan(n: usize) -> String {
    let mut t = String::from(
        "version = 1\nname = \"big\"\n[vars]\nprefix = \"bk\"\n\
         [instances.a]\ntype = \"milvus\"\nuri = \"http://127.0.0.1:19530\"\ndata = \"ba:files\"\n\
         [instances.b]\ntype = \"milvus\"\nuri = \"http://127.0.0.1:19540\"\n\
         [buckets.ba]\ntype = \"s3\"\nbucket = \"bucket-a\"\n\
         [buckets.bb]\ntype = \"local\"\npath = \"/tmp/bb\"\n",
    );
    let groups = n / 3;
    for i in 0..groups {
        t += &format!(
            "[steps.backup_{i}]\ntype = \"backup\"\ninstance = \"a\"\ncollections = [\"c{i}\"]\n\
             to = \"ba:backup/{{{{ vars.prefix }}}}_{i}\"\n{}\
             [steps.copy_{i}]\ntype = \"copy\"\nfrom = \"ba:backup/{{{{ vars.prefix }}}}_{i}\"\n\
             to = \"bb:backup/{{{{ vars.prefix }}}}_{i}\"\n\
             [steps.restore_{i}]\ntype = \"restore\"\ninstance = \"b\"\n\
             from = \"bb:backup/bk_{i}\"\nsuffix = \"_bak\"\n",
            if i > 0 {
                format!("needs = [\"restore_{}\"]\n", i - 1)
            } else {
                String::new()
            }
        );
    }
    for i in groups * 3..n {
        t += &format!(
            "[steps.extra_{i}]\ntype = \"restore\"\ninstance = \"a\"\nfrom = \"bb:backup/bk_0\"\n\
             suffix = \"_x{i}\"\n"
        );
    }
    t
}

#[test]
fn two_thousand_steps_validate_and_order_correctly() {
    let text = big_plan(2000);
    let start = std::time::Instant::now();
    let c = load_text(&text, &no_env()).expect("the generated plan is valid");
    let order = c.dag.order();
    let dot = c.dag.to_dot();
    eprintln!("2,000-step plan: load + graph in {:?}", start.elapsed());
    assert_eq!(c.plan.steps.len(), 2000);
    assert_eq!(order.len(), 2000);
    let pos: BTreeMap<&str, usize> = order.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    for (from, to, _) in c.dag.edges() {
        assert!(pos[from] < pos[to], "{from} must come before {to}");
    }
    assert_eq!(c.dag.dependencies("restore_5"), ["copy_5"]);
    assert_eq!(c.dag.dependencies("backup_5"), ["restore_4"]);
    assert_eq!(c.dag.dependencies("extra_1999"), ["copy_0"]);
    assert_eq!(order[0], "backup_0");
    assert_eq!(dot.matches(" -> ").count(), c.dag.edges().len());
}

#[test]
fn a_cycle_in_a_big_plan_names_every_step_of_it() {
    let text = big_plan(300).replace(
        "[steps.backup_0]\n",
        "[steps.backup_0]\nneeds = [\"restore_2\"]\n",
    );
    let err = load_text(&text, &no_env()).unwrap_err();
    let msg = err.errors()[0].message.clone();
    assert_eq!(
        msg,
        "dependency cycle: backup_0 → copy_0 → restore_0 → backup_1 → copy_1 → restore_1 → \
         backup_2 → copy_2 → restore_2 → backup_0"
    );
}

#[test]
fn schema_file_is_current() {
    let path = root().join("schemas/plan.schema.json");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == plan::schema_json(),
        "schemas/plan.schema.json is stale: regenerate it with \
         `cargo run -q -- schema > schemas/plan.schema.json`"
    );
}

#[test]
fn example_plans_point_at_the_schema() {
    for p in ["plans/migrate.toml", "plans/migrate-direct.toml"] {
        let text = std::fs::read_to_string(root().join(p)).unwrap();
        assert!(
            text.starts_with("#:schema ../schemas/plan.schema.json\n"),
            "{p}"
        );
    }
}

#[test]
fn every_toml_example_in_the_reference_is_valid_toml_and_the_first_is_a_valid_plan() {
    let doc = std::fs::read_to_string(root().join("docs/plan-reference.md")).unwrap();
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert!(
        blocks.len() >= 8,
        "the reference has examples for each section"
    );
    for b in &blocks {
        b.parse::<toml::Table>()
            .unwrap_or_else(|e| panic!("example is not TOML: {e}\n{b}"));
    }
    let env = BTreeMap::from([("MILVUS_A_PASSWORD".to_string(), "x".to_string())]);
    let c = load_text(blocks[0], &env).expect("the 'Writing a plan' example is valid");
    assert_eq!(c.dag.order(), ["backup", "restore"]);
}

#[test]
fn error_messages_never_carry_env_values() {
    let text = r#"
version = 1
name = "t"
[instances.m]
type = "milvus"
uri = "http://localhost:19530"
[buckets.b]
type = "local"
path = "store"
[steps.restore]
type = "restore"
instance = "m"
from = "b:backup/{{ env.RUN_ID }}"
rename = { coll = "{{ env.NEW_NAME }}" }
"#;
    let env = BTreeMap::from([
        ("RUN_ID".to_string(), "run-77431".to_string()),
        ("NEW_NAME".to_string(), "not valid!".to_string()),
    ]);
    let err = load_text(text, &env).unwrap_err();
    let rendered = err.render_plain(100);
    assert!(
        rendered.contains("bad new name `***` for `coll`"),
        "{rendered}"
    );
    assert!(!rendered.contains("not valid!"), "{rendered}");
    let ok = text.replace("{{ env.NEW_NAME }}", "coll_new");
    let c = load_text(&ok, &env).unwrap();
    let notes = c.dag.notes().join("\n");
    assert_eq!(notes, "step `restore` reads existing backup at b:***");
    assert_eq!(c.plan.redact("id run-77431 here"), "id *** here");
}

/// A backup of `collections` (a TOML list) and a restore of the same patterns.
fn pattern_plan(collections: &str) -> String {
    format!(
        "version = 1\nname = \"t\"\n\
         [instances.m]\ntype = \"milvus\"\nuri = \"http://localhost:19530\"\n\
         [buckets.b]\ntype = \"local\"\npath = \"store\"\n\
         [steps.backup]\ntype = \"backup\"\ninstance = \"m\"\ncollections = {collections}\n\
         to = \"b:backup/x\"\n\
         [steps.restore]\ntype = \"restore\"\ninstance = \"m\"\nfrom = \"b:backup/x\"\n\
         collections = {collections}\nsuffix = \"_bak\"\n"
    )
}

#[test]
fn collection_patterns_are_checked_with_the_grammar_the_steps_match_with() {
    let globs = r#"["logs_[0-9]*", "db?.c[!x]", "*", "analytics.*"]"#;
    let c = load_text(&pattern_plan(globs), &no_env()).expect("every pattern is valid");
    let StepKind::Backup(b) = &c.plan.steps[0].kind else {
        panic!("first step is the backup")
    };
    let p: Vec<plan::Pattern> = b
        .collections
        .iter()
        .map(|c| plan::Pattern::parse(c))
        .collect();
    assert!(p[0].matches("default", "logs_7_old") && !p[0].matches("default", "logs_x"));
    assert!(p[1].matches("db1", "cy") && !p[1].matches("db1", "cx"));
    assert!(p[2].matches("default", "anything") && !p[2].matches("other", "anything"));

    for (bad, why) in [
        ("logs_[0-9", "`[` without a closing `]`"),
        ("!logs", "`!` only negates a class"),
        ("c[z-a]", "`z-a` is not a range"),
        ("c]", "`]` without an opening `[`"),
    ] {
        let err = load_text(&pattern_plan(&format!("[\"{bad}\"]")), &no_env()).unwrap_err();
        let msgs: Vec<&str> = err.errors().iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            msgs.len(),
            2,
            "backup and restore each report `{bad}`: {msgs:?}"
        );
        for m in msgs {
            assert!(
                m.starts_with(&format!("bad collection `{bad}` in `steps.")),
                "{m}"
            );
            assert!(m.contains(why), "{m}");
        }
    }
}
