//! Hostile plans fail fast and plainly in `validate`: a template that would loop for ever, a file
//! that is not UTF-8, a 50 MB string, names Milvus would refuse after the run started.

use std::path::Path;
use std::time::{Duration, Instant};

use assert_cmd::Command;

use crate::support::{self, S3, data, data_with_input, ok};

/// `planrun validate PLAN`, given a minute: (exit code, stdout and stderr).
fn validate(plan: &Path) -> (Option<i32>, String) {
    let out = Command::from_std(support::planrun())
        .args(["validate", plan.to_str().unwrap()])
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    (out.status.code(), support::text(&out))
}

fn plan(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/plans")
        .join(name)
}

#[test]
fn a_template_that_would_loop_for_ever_fails_within_seconds_at_its_string() {
    let started = Instant::now();
    let (code, text) = validate(&plan("template-loop.toml"));
    assert_eq!(code, Some(2), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(text.contains("takes too long to render"), "{text}");
    assert!(
        text.contains("template-loop.toml:11:"),
        "located at the string: {text}"
    );
}

#[test]
fn a_plan_that_is_not_utf8_names_the_byte() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("latin1.toml");
    std::fs::write(&p, b"version = 1\nname = \"caf\xe9\"\n").unwrap();
    let (code, text) = validate(&p);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("not UTF-8: byte 0xe9 at offset 23 (line 2, column 12)"),
        "{text}"
    );
}

#[test]
fn a_50_mb_string_is_not_echoed_back() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.toml");
    let huge = "x".repeat(50 << 20);
    std::fs::write(
        &p,
        format!("version = 1\nname = \"h\"\n[buckets.l]\ntype = \"local\"\npath = \"b\"\n[steps.c]\ntype = \"copy\"\nfrom = \"nowhere:{huge}\"\nto = \"l:b\"\n"),
    )
    .unwrap();
    let (code, text) = validate(&p);
    assert_eq!(code, Some(2), "{text:.2000}");
    assert!(text.contains("unknown bucket `nowhere`"), "{text:.2000}");
    assert!(text.len() < 20_000, "{} bytes of output", text.len());
    assert!(text.contains("bytes not shown"), "{text}");
}

#[test]
fn names_milvus_would_refuse_are_caught_by_validate() {
    let (code, text) = validate(&plan("bad-names.toml"));
    assert_eq!(code, Some(2), "{text}");
    assert!(text.contains("bad `suffix`: `-` cannot appear"), "{text}");
    assert!(text.contains("cannot start with a digit"), "{text}");
    assert!(text.contains("bad `database`: ` ` cannot appear"), "{text}");
}

/// An S3 backup holding a key with `..` (written by anyone with access to the bucket) must not
/// be copied into a local directory, where it would land outside the destination.
#[test]
fn a_key_a_local_directory_cannot_hold_is_refused_before_anything_is_copied() {
    S3.require();
    let prefix = support::unique("dots");
    for key in ["ok.bin", "../../escaped.bin"] {
        ok(data_with_input(
            &[
                "s3-put",
                "--bucket",
                "bucket-b",
                "--key",
                &format!("backup/{prefix}/{key}"),
            ],
            b"x",
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("local")).unwrap();
    let p = dir.path().join("copy.toml");
    std::fs::write(
        &p,
        format!(
            "{}\n[buckets.local]\ntype = \"local\"\npath = \"{}\"\n\n[steps.copy]\ntype = \"copy\"\n\
             from = \"bucket_b:backup/{prefix}\"\nto = \"local:in/here\"\n\n[settings]\nstate_dir = \"{}\"\n",
            support::PLAN_HEAD,
            dir.path().join("local").display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = support::planrun().args(args).arg(&p).output().unwrap();
        (out.status.code(), support::text(&out))
    };
    let (code, text) = run(&["plan"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("cannot be stored at `local:in/here`"),
        "{text}"
    );
    assert!(text.contains("`.` or `..`"), "{text}");
    let (code, text) = run(&["apply", "--yes"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        !dir.path().join("local/in/here/ok.bin").exists(),
        "nothing was copied"
    );
    assert!(!dir.path().join("local/escaped.bin").exists());
    data(&[
        "s3-clean",
        "--bucket",
        "bucket-b",
        "--prefix",
        &format!("backup/{prefix}/"),
    ]);
}
