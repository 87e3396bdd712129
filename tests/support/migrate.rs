//! Rows-mode migrations between two servers (`rows.rs`, `lite25.rs`, `modern.rs`): the plan, the
//! servers, the seeded collections, the runs of `planrun` and the row-by-row comparisons.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{BackupRestore, LITE, MILVUS_A, MILVUS_B, data, ok, planrun, python, text, unique};

/// `planrun apply --yes PLAN`, killed at `crash` (`PLANRUN_CRASH`) if given: (success, stdout
/// and stderr).
pub fn apply(plan: &Path, crash: Option<&str>) -> (bool, String) {
    let mut cmd = planrun();
    cmd.args(["apply", "--yes", plan.to_str().unwrap()]);
    if let Some(c) = crash {
        cmd.env("PLANRUN_CRASH", c);
    }
    let out = cmd.output().expect("run planrun");
    (out.status.success(), text(&out))
}

/// `planrun plan PLAN`: (exit code, stdout and stderr).
pub fn dry_run(plan: &Path) -> (i32, String) {
    let out = planrun()
        .args(["plan", plan.to_str().unwrap()])
        .output()
        .expect("run planrun");
    (out.status.code().unwrap_or(-1), text(&out))
}

/// Writes `dir/plan.toml`: a rows backup of `colls` on `from` into `local:backup/<backup>` (a
/// local bucket in `dir/backups`), restored on `to` with `_bak` (plus `restore_extra` lines),
/// then verified; state in `dir/state`.
pub fn rows_plan(
    dir: &Path,
    from: &Server,
    to: &Server,
    colls: &[String],
    backup: &str,
    restore_extra: &str,
) -> PathBuf {
    let steps = BackupRestore::of(colls, backup)
        .source(from.id)
        .target(to.id)
        .at(&format!("local:backup/{backup}"))
        .rows()
        .restore_with(restore_extra);
    let text = format!(
        r#"version = 1
name = "rows"

[instances.{fid}]
type = "milvus"
uri = "{furi}"
{fauth}
[instances.{tid}]
type = "milvus"
uri = "{turi}"
{tauth}
[buckets.local]
type = "local"
path = "{backups}"
{steps}
[steps.verify]
type = "verify"
restore = "restore"

[settings]
state_dir = "{state}"
"#,
        fid = from.id,
        furi = from.uri,
        fauth = from.auth,
        tid = to.id,
        turi = to.uri,
        tauth = to.auth,
        backups = dir.join("backups").display(),
        state = dir.join("state").display(),
    );
    std::fs::create_dir_all(dir.join("backups")).unwrap();
    let plan = dir.join("plan.toml");
    std::fs::write(&plan, text).unwrap();
    plan
}

/// A server of the test: id in the plan, uri, token for scripts/milvus_data.py, plan keys.
pub struct Server {
    pub id: &'static str,
    pub uri: String,
    pub token: &'static str,
    pub auth: &'static str,
}

pub fn milvus_a() -> Server {
    Server {
        id: "a",
        uri: MILVUS_A.require().uri(),
        token: "root:Milvus",
        auth: "user = \"root\"\npassword = \"Milvus\"\n",
    }
}

pub fn milvus_b() -> Server {
    Server {
        id: "b",
        uri: MILVUS_B.require().uri(),
        token: "",
        auth: "",
    }
}

pub fn lite() -> Server {
    Server {
        id: "lite",
        uri: LITE.require().uri(),
        token: "",
        auth: "",
    }
}

pub struct Migration {
    pub dir: tempfile::TempDir,
    pub plan: PathBuf,
    pub coll: String,
    pub from: Server,
    pub to: Server,
}

impl Migration {
    /// Seeds `coll` (int64 keys) and `coll_str` (varchar keys) on `from`; the plan backs both up
    /// in rows mode into a local directory, restores them on `to` with `_bak` and verifies.
    pub fn new(from: Server, to: Server) -> Migration {
        let coll = unique("rows");
        Migration::seeded(from, to, coll)
    }

    /// A migration of `coll` and `coll_str`; seeds them unless they exist on `from`.
    pub fn seeded(from: Server, to: Server, coll: String) -> Migration {
        for (c, pk) in [(coll.clone(), "int64"), (format!("{coll}_str"), "varchar")] {
            if has_collection(&from, &c) {
                continue;
            }
            ok(data(&[
                "seed",
                "--uri",
                &from.uri,
                "--token",
                from.token,
                "--collection",
                &c,
                "--pk",
                pk,
                "--rows",
                "800",
                "--partitions",
                "2",
                "--segments",
                "2",
                "--delete-every",
                "9",
            ]));
        }
        let dir = tempfile::tempdir().unwrap();
        let colls = [coll.clone(), format!("{coll}_str")];
        let plan = rows_plan(dir.path(), &from, &to, &colls, &coll, "");
        Migration {
            dir,
            plan,
            coll,
            from,
            to,
        }
    }

    /// Row by row with pymilvus, partitions and indexes too.
    pub fn assert_equal(&self) {
        for c in [self.coll.clone(), format!("{}_str", self.coll)] {
            self.assert_restored(&c);
        }
    }

    /// `{c}_bak` on `to` equals `c` on `from`, row by row.
    pub fn assert_restored(&self, c: &str) {
        let out = data(&[
            "compare",
            "--uri",
            &self.from.uri,
            "--token",
            self.from.token,
            "--collection",
            c,
            "--target-uri",
            &self.to.uri,
            "--target-token",
            self.to.token,
            "--target-collection",
            &format!("{c}_bak"),
        ]);
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "`{c}_bak` differs from `{c}`: {report}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
        assert!(v["source_rows"].as_u64().unwrap() >= 300, "{v}");
    }

    pub fn parquet_files(&self) -> usize {
        fn walk(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|d| {
                    d.map(|e| {
                        let e = e.unwrap().path();
                        if e.is_dir() {
                            walk(&e)
                        } else {
                            usize::from(e.extension().is_some_and(|x| x == "parquet"))
                        }
                    })
                    .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.path().join("backups"))
    }

    pub fn cleanup(&self) {
        for c in [self.coll.clone(), format!("{}_str", self.coll)] {
            data(&[
                "drop",
                "--uri",
                &self.from.uri,
                "--token",
                self.from.token,
                &c,
            ]);
            let bak = format!("{c}_bak");
            data(&[
                "drop",
                "--uri",
                &self.to.uri,
                "--token",
                self.to.token,
                &bak,
            ]);
        }
    }
}

pub fn has_collection(s: &Server, coll: &str) -> bool {
    let out = ok(data(&["dump-names", "--uri", &s.uri, "--token", s.token]));
    out.lines().any(|l| l.split(' ').next() == Some(coll))
}

/// Runs a pymilvus snippet with `c` connected to the server.
pub fn pymilvus(s: &Server, code: &str) -> String {
    let script = format!(
        "import random\nfrom pymilvus import MilvusClient, DataType\n\
         c = MilvusClient(uri={:?}, token={:?}, timeout=60)\n{code}\n",
        s.uri, s.token
    );
    ok(Command::new(python())
        .arg("-c")
        .arg(script)
        .output()
        .unwrap())
}
