//! Planted secrets never show: not in any command's output, in any log or progress mode, at any
//! verbosity, nor anywhere in the state dir. A literal password, an S3 key pair (one half through
//! `env['NAME']`) and a collection name taken from `env` are planted and grepped for.

use std::path::Path;
use std::process::Output;

use crate::support::{self, BackupRestore, LITE, MILVUS_B, S3, data, ok};

const PASSWORD: &str = "pw-PLANTED-7f1";
/// The `planted` key of the first Garage server (scripts/services.sh): Garage enforces keys, so
/// the planted pair must be a real one that may write bucket-b.
const KEY_ID: &str = "GK706c616e7465642d6b65792d";
const SECRET_KEY: &str = "706c616e7465642d7365637265742d6e657665722d746f2d62652d73686f776e";

fn plan_text(state: &Path) -> String {
    let coll = "{{ env.PLANRUN_T_COLL }}";
    format!(
        r#"version = 1
name = "secrets"

[instances.b]
type = "milvus"
uri = "{b}"
user = "root"
password = "{PASSWORD}"

[instances.lite]
type = "milvus"
uri = "{lite}"

[buckets.s3]
type = "s3"
endpoint = "http://127.0.0.1:9000"
bucket = "bucket-b"
region = "us-east-1"
access_key_id = "{KEY_ID}"
secret_access_key = "{{{{ env['PLANRUN_T_SECRET'] }}}}"
{steps}
[settings]
state_dir = "{state}"
"#,
        b = MILVUS_B.uri(),
        lite = LITE.uri(),
        state = state.display(),
        steps = BackupRestore::of(&[coll], "")
            .source("b")
            .target("lite")
            .at(&format!("s3:backup/{coll}"))
            .rows(),
    )
}

/// `planrun ARGS` with the planted secret and collection in its env (`PLANRUN_LOG`, `RUST_LOG`
/// and `PLANRUN_CRASH` only as the test sets them): its output and what it printed.
fn run(coll: &str, args: &[&str], crash: Option<&str>) -> (Output, String) {
    let mut cmd = support::planrun();
    cmd.args(args)
        .env("PLANRUN_T_SECRET", SECRET_KEY)
        .env("PLANRUN_T_COLL", coll);
    if let Some(c) = crash {
        cmd.env("PLANRUN_CRASH", c);
    }
    let out = cmd.output().expect("run planrun");
    let text = support::text(&out);
    (out, text)
}

fn assert_clean(what: &str, text: &str, planted: &[&str]) {
    for p in planted {
        assert!(
            !text.contains(p),
            "`{p}` shows in {what}:\n{}",
            text.lines()
                .filter(|l| l.contains(p))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Every file under `dir`, byte for byte, as lossy text.
fn files_under(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
    out
}

#[test]
fn planted_secrets_never_reach_output_logs_or_the_state_dir() {
    S3.require();
    LITE.require();
    let coll = support::unique("secretcoll");
    support::seed_small(&MILVUS_B, "", &coll, &[]);
    let planted = [PASSWORD, KEY_ID, SECRET_KEY, coll.as_str()];
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let plan = dir.path().join("secrets.toml");
    std::fs::write(&plan, plan_text(&state)).unwrap();
    let p = plan.to_str().unwrap();
    let s = state.to_str().unwrap();

    // The run: crashed once in the middle of the restore, resumed; every progress and log
    // mode, up to trace level (the AWS SDK's and HTTP/2's own debug lines).
    let (out, text) = run(
        &coll,
        &[
            "apply",
            "--yes",
            "--progress",
            "json",
            "--log-format",
            "json",
            "-vv",
            p,
        ],
        Some("rows-inserted:1"),
    );
    assert!(
        !out.status.success() && text.contains("PLANRUN_CRASH"),
        "{text}"
    );
    assert_clean(
        "apply --progress json --log-format json -vv",
        &text,
        &planted,
    );
    let (out, text) = run(
        &coll,
        &["apply", "--yes", "--progress", "plain", "-vvv", p],
        None,
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("***"), "masked values show as ***: {text}");
    assert_clean("apply --progress plain -vvv", &text, &planted);

    for args in [
        vec!["validate", p],
        vec!["plan", p],
        vec!["plan", "--json", p],
        vec!["-vv", "plan", p],
        vec!["graph", p],
        vec!["runs", "--state-dir", s],
        vec!["status", "--state-dir", s],
        vec!["status", "--plan", p],
        vec!["apply", "--yes", "--progress", "auto", p],
    ] {
        let (_, text) = run(&coll, &args, None);
        assert_clean(&args.join(" "), &text, &planted);
    }
    for (path, content) in files_under(&state) {
        assert_clean(&format!("state file {path}"), &content, &planted);
    }

    // A mistake next to the credentials: the error snippet shows the lines around it.
    let broken = plan_text(&state).replace("user = \"root\"", "user = \"root\"\nusr = 1");
    std::fs::write(&plan, broken).unwrap();
    let (out, text) = run(&coll, &["validate", p], None);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("usr"), "{text}");
    assert!(
        text.contains("password = \""),
        "the neighbouring line is shown: {text}"
    );
    assert_clean("a diagnostic snippet", &text, &planted);

    data(&["drop", "--uri", &MILVUS_B.uri(), "--token", "", &coll]);
    data(&[
        "drop",
        "--uri",
        &LITE.uri(),
        "--token",
        "",
        &format!("{coll}_bak"),
    ]);
    ok(data(&[
        "s3-clean",
        "--bucket",
        "bucket-b",
        "--prefix",
        &format!("backup/{coll}/"),
    ]));
}
