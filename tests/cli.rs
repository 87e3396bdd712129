//! The `planrun` binary: every command and exit code.

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn planrun() -> Command {
    let mut c = Command::from_std(crate::support::planrun());
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

#[test]
fn validate_prints_a_summary_and_exits_0() {
    planrun()
        .args(["validate", "plans/migrate.toml"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "plan `coll-to-milvus-b` is valid: 3 steps, 2 edges",
        ))
        .stdout(predicate::str::contains(
            "after copy (bucket_b:backup/my_backup)",
        ));
}

#[test]
fn validate_notes_existing_backups() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plans/migrate.toml"),
    )
    .unwrap();
    // Drop the backup and the copy: the restore reads a backup made earlier.
    let cut = text.find("[steps.backup]").unwrap();
    let restore = text.find("[steps.restore]").unwrap();
    let text = format!("{}{}", &text[..cut], &text[restore..]);
    let path = dir.path().join("restore-only.toml");
    std::fs::write(&path, text).unwrap();
    planrun()
        .arg("validate")
        .arg(&path)
        .assert()
        .code(0)
        .stdout(predicate::str::contains(
            "note: step `restore` reads existing backup at bucket_b:backup/my_backup",
        ));
}

#[test]
fn validate_invalid_plan_exits_2_with_every_error_located() {
    planrun()
        .args(["validate", "plans/invalid/unknown-keys.toml"])
        .assert()
        .code(2)
        .stdout("")
        .stderr(predicate::str::contains("is invalid: 3 errors"))
        .stderr(predicate::str::contains(
            "[plans/invalid/unknown-keys.toml:26:2]",
        ))
        .stderr(predicate::str::contains(
            "[plans/invalid/unknown-keys.toml:31:1]",
        ))
        .stderr(predicate::str::contains("did you mean `instance`?"))
        .stderr(predicate::str::contains("\u{1b}[").not());
}

#[test]
fn validate_missing_file_exits_1_naming_the_path() {
    planrun()
        .args(["validate", "plans/nope.toml"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "cannot read plan file `plans/nope.toml`",
        ));
}

#[test]
fn validate_never_prints_env_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.toml");
    std::fs::write(
        &path,
        r#"version = 1
name = "secretive"
[instances.m]
type = "milvus"
uri = "http://127.0.0.1:19530"
[buckets.b]
type = "local"
path = "store"
[steps.backup]
type = "backup"
instance = "m"
collections = ["{{ env.PLANRUN_TEST_COLL }}"]
to = "b:backup/{{ env.PLANRUN_TEST_DIR }}"
"#,
    )
    .unwrap();
    for args in [
        vec!["validate"],
        vec!["graph"],
        vec!["graph", "--format", "mermaid"],
    ] {
        planrun()
            .args(&args)
            .arg(&path)
            .env("PLANRUN_TEST_COLL", "topsecretcoll")
            .env("PLANRUN_TEST_DIR", "topsecretdir")
            .assert()
            .code(0)
            .stdout(predicate::str::contains("topsecret").not())
            .stderr(predicate::str::contains("topsecret").not());
    }
    planrun()
        .arg("validate")
        .arg(&path)
        .env("PLANRUN_TEST_COLL", "topsecretcoll")
        .env("PLANRUN_TEST_DIR", "topsecretdir")
        .assert()
        .stdout(predicate::str::contains("[***] → b:*** (rows)"));
}

#[test]
fn graph_prints_dot_by_default() {
    planrun()
        .args(["graph", "plans/migrate.toml"])
        .assert()
        .code(0)
        .stdout(predicate::str::starts_with("digraph plan {"))
        .stdout(predicate::str::contains(
            "\"backup\" -> \"copy\" [label=\"bucket_a:backup/my_backup\"];",
        ));
}

#[test]
fn graph_prints_mermaid() {
    planrun()
        .args(["graph", "plans/migrate-direct.toml", "--format", "mermaid"])
        .assert()
        .code(0)
        .stdout(
            "flowchart LR\n  s0[\"backup (backup)\"]\n  s1[\"restore (restore)\"]\n  \
             s0 -->|\"bucket_b:backup/my_backup\"| s1\n",
        );
}

#[test]
fn graph_of_invalid_plan_exits_2() {
    planrun()
        .args(["graph", "plans/invalid/cycle.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "dependency cycle: one → two → three → one",
        ));
}

#[test]
fn schema_prints_the_committed_schema() {
    let file = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schemas/plan.schema.json"),
    )
    .unwrap();
    planrun().arg("schema").assert().code(0).stdout(file);
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        planrun()
            .args(["completions", shell])
            .assert()
            .code(0)
            .stdout(predicate::str::contains("validate"));
    }
    planrun().args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn help_has_examples_for_every_command() {
    planrun()
        .arg("--help")
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Examples:"))
        .stdout(predicate::str::contains("Exit codes: 0 ok"));
    for cmd in ["validate", "graph", "schema", "completions"] {
        planrun()
            .args([cmd, "--help"])
            .assert()
            .code(0)
            .stdout(predicate::str::contains("Examples:\n  planrun "));
    }
}

#[test]
fn global_flags_are_accepted() {
    planrun()
        .args([
            "-vv",
            "--log-format",
            "json",
            "validate",
            "plans/migrate.toml",
        ])
        .assert()
        .code(0);
    planrun()
        .args(["--log-format", "xml", "validate", "plans/migrate.toml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'xml'"));
}

#[test]
fn generated_2000_step_plan_validates_and_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    let mut t = String::from(
        "version = 1\nname = \"big\"\n[instances.a]\ntype = \"milvus\"\n\
         uri = \"http://127.0.0.1:19530\"\n[buckets.b]\ntype = \"local\"\npath = \"store\"\n",
    );
    for i in 0..1000 {
        t += &format!(
            "[steps.backup_{i}]\ntype = \"backup\"\ninstance = \"a\"\ncollections = [\"c{i}\"]\n\
             to = \"b:backup/{i}\"\n[steps.restore_{i}]\ntype = \"restore\"\ninstance = \"a\"\n\
             from = \"b:backup/{i}\"\nsuffix = \"_r\"\n"
        );
    }
    std::fs::write(&path, t).unwrap();
    let start = std::time::Instant::now();
    planrun()
        .arg("validate")
        .arg(&path)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("is valid: 2000 steps, 1000 edges"));
    let out = planrun()
        .arg("graph")
        .arg(&path)
        .assert()
        .code(0)
        .get_output()
        .stdout
        .clone();
    eprintln!("validate + graph of 2,000 steps: {:?}", start.elapsed());
    let dot = String::from_utf8(out).unwrap();
    assert_eq!(dot.matches(" -> ").count(), 1000);
    assert!(dot.contains("\"backup_999\" -> \"restore_999\""));
}
